"""Configuration: one frozen dataclass per stage, nested in :class:`PipelineConfig`.

Each stage reads only its own section. Configurations round-trip through plain dicts, JSON and TOML,
and unknown keys or wrongly-typed values raise :class:`~meshforge.errors.InputError` naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from .errors import InputError

T = TypeVar("T")
C = TypeVar("C")

#: named budgets (``--preset``): faces of the low-poly mesh and side of its textures
PRESETS: dict[str, dict[str, int]] = {
    "mobile": {"faces": 5_000, "texture_size": 512},
    "prop": {"faces": 20_000, "texture_size": 1024},
    "hero": {"faces": 100_000, "texture_size": 2048},
}


def preset_budget(preset: str | None, faces: int | None, texture_size: int | None) -> tuple[int | None, int | None]:
    """``(faces, texture_size)`` with a named preset filling in what is not given explicitly.

    Raises:
        InputError: unknown preset.
    """
    if preset is None:
        return faces, texture_size
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r} (choices: {', '.join(PRESETS)})")
    budget = PRESETS[preset]
    return (
        faces if faces is not None else budget["faces"],
        texture_size if texture_size is not None else budget["texture_size"],
    )


@dataclass(frozen=True)
class InputConfig:
    """Image decoding limits.

    Attributes:
        max_pixels: refuse images with more pixels than this (decompression-bomb guard).
        max_bytes: refuse encoded files larger than this many bytes.
    """

    max_pixels: int = 40_000_000
    max_bytes: int = 100 * 1024 * 1024


@dataclass(frozen=True)
class PreprocessConfig:
    """Background handling and framing.

    Attributes:
        background: ``"auto"`` keeps a meaningful alpha channel and removes the background otherwise;
            ``"keep"`` uses the picture as it is (the whole frame is the object unless it has alpha);
            ``"remove"`` always removes the background, ignoring any alpha.
        engine: background-removal engine: ``"grabcut"`` (OpenCV, no weights) or ``"rembg"``
            (optional package, needs ``rembg_model``).
        rembg_model: the rembg model name; only models with a commercial-use licence are accepted.
        foreground_ratio: the object's longer side as a fraction of the square output frame.
        min_object_fraction: refuse a mask covering less than this fraction of the picture.
    """

    background: str = "auto"
    engine: str = "grabcut"
    rembg_model: str | None = None
    foreground_ratio: float = 0.85
    min_object_fraction: float = 0.001


@dataclass(frozen=True)
class ExtractConfig:
    """Isosurface extraction.

    Attributes:
        resolution: grid points per axis of the marching-cubes grid (``resolution³`` samples).
        engine: ``"auto"`` (our PyTorch marching cubes when the field's grid lives on a CUDA device, else
            scikit-image's), ``"skimage"`` (scikit-image's Lewiner marching cubes, CPU) or ``"torch"``
            (:mod:`meshforge.fields.mc_torch` on the grid's device).
        chunk_points: points per batch when a field has no fast grid path.
    """

    resolution: int = 256
    engine: str = "auto"
    chunk_points: int = 1 << 20


@dataclass(frozen=True)
class CleanConfig:
    """Mesh cleanup.

    Attributes:
        min_component_fraction: drop connected components whose area is below this fraction of the
            largest component's area.
        orient: make the winding consistent and outward per component (an isosurface); False keeps the
            input's winding, which defines a modelled asset's front faces (``optimize``).
    """

    min_component_fraction: float = 0.002
    orient: bool = True


@dataclass(frozen=True)
class DecimateConfig:
    """QEM decimation.

    Attributes:
        faces: target face budget; the output has at most this many faces.
        engine: ``"fast-simplification"`` (Forstmann's fast quadric simplification).
        aggressiveness: the engine's collapse schedule (lower keeps quality, higher is faster).
    """

    faces: int = 20_000
    engine: str = "fast-simplification"
    aggressiveness: float = 4.0


@dataclass(frozen=True)
class UnwrapConfig:
    """UV atlas generation.

    The atlas is packed for the texture size, :attr:`BakeConfig.texture_size` (one texture size for the
    whole run), which :func:`~meshforge.mesh.uv.unwrap` takes as an argument.

    Attributes:
        padding: empty texels between charts, matched to the mip levels a baked map is read at. The bake
            fills every gutter with the nearest chart's colour, so two charts' colours meet halfway across
            the gap: 2 texels keep mip levels 0 and 1 (with bilinear filtering) free of a neighbour's
            colour, and at a coarser level k the bleed stays within one level-k texel of a seam — about
            one screen pixel, since a renderer picks level k where a texel maps to about a pixel. Every
            padding texel around each of hundreds of charts is atlas area no triangle uses.
        max_chart_fraction: largest chart area as a fraction of the mesh area (xatlas
            ``max_chart_area``); smaller is faster with more seams.
        time_limit: seconds allowed for xatlas before falling back to the per-face atlas; 0 runs
            xatlas in-process without a limit.
        engine: ``"xatlas"`` or ``"faces"`` (per-face-pair grid atlas, always works).
        repack: re-pack xatlas's charts with :func:`meshforge.mesh.pack.pack_charts` (bottom-left fill on
            a texel bitmap, quarter turns, one common scale, so stretch is unchanged; the denser layout is
            kept): one layout aimed 15 % denser than xatlas's, a second when it misses, none when the
            charts' padded rasters leave no room for 3 % more; about 0.25 s per 20k-face unwrap on 2 cores
            (``benchmarks/results/atlas_quality.md``). False keeps xatlas's own packing.
        piece_faces: faces in a piece, at most, where a mesh is cut into pieces that xatlas segments and
            parameterises each in its own worker process, all in parallel, and whose charts are then packed
            together by meshforge's packer (whatever ``repack`` says). Cut are meshes of over 24k faces
            (xatlas's time grows faster than its face count: a 200k-face surface ran past the 60 s limit on
            an H200's 16 cores), in pieces of ``max(piece_faces, min(faces / 64, 1600))``, and meshes of over three
            pieces' worth whose parts average over two (small pieces make compact charts that pack
            densely; :func:`meshforge.mesh.uv.piece_size`). 0 never cuts.
    """

    padding: int = 2
    max_chart_fraction: float = 1.0 / 48.0
    time_limit: float = 60.0
    engine: str = "xatlas"
    repack: bool = True
    piece_faces: int = 600


@dataclass(frozen=True)
class BakeConfig:
    """Texture baking.

    Attributes:
        texture_size: width and height of every baked map, in texels.
        textures: False bakes vertex colours instead of texture maps (fast screening mode).
        normal_map: bake a tangent-space normal map when the field knows a dense surface's normals.
        cage_fraction: ray length both ways from the low-poly surface when projecting onto a dense
            surface, as a fraction of the dense surface's bounding-box diagonal.
    """

    texture_size: int = 1024
    textures: bool = True
    normal_map: bool = True
    cage_fraction: float = 0.03


#: the finishing engines (:class:`FinishingConfig`)
FINISH_ENGINES: tuple[str, ...] = ("auto", "cpu", "torch")


@dataclass(frozen=True)
class FinishingConfig:
    """Which engine runs the finishing stages (clean, decimate, bake; the unwrap is xatlas on the host for both).

    Attributes:
        engine: ``"cpu"``: numpy and the CPU libraries (:mod:`meshforge.mesh.clean`,
            :mod:`meshforge.mesh.decimate`, :mod:`meshforge.mesh.bake`), the reference path; ``"torch"``: the
            PyTorch engine (:mod:`meshforge.mesh.torch_clean`, :mod:`meshforge.mesh.torch_decimate`,
            :mod:`meshforge.gpu.bake`) on the device holding the dense surface (a host surface: CUDA when
            there is one, else CPU tensors); ``"auto"``: ``"torch"`` when the dense surface lives on a CUDA
            device (:func:`meshforge.mesh.finish_engine.finish_engine`), else ``"cpu"``.
    """

    engine: str = "auto"


@dataclass(frozen=True)
class PipelineConfig:
    """The whole run's configuration; each stage receives its own section.

    Attributes:
        seed: random seed.
        save_intermediates: the ``generate`` command also writes ``<stem>.cutout.png``, the prepared
            RGBA picture the backend saw (alpha = the object mask), beside the outputs.
    """

    input: InputConfig = field(default_factory=InputConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    decimate: DecimateConfig = field(default_factory=DecimateConfig)
    unwrap: UnwrapConfig = field(default_factory=UnwrapConfig)
    bake: BakeConfig = field(default_factory=BakeConfig)
    finish: FinishingConfig = field(default_factory=FinishingConfig)
    seed: int = 0
    save_intermediates: bool = False

    # -- convenience -------------------------------------------------------------------------------
    def with_options(
        self,
        *,
        resolution: int | None = None,
        faces: int | None = None,
        texture_size: int | None = None,
        textures: bool | None = None,
        foreground_ratio: float | None = None,
        background: str | None = None,
        seed: int | None = None,
        save_intermediates: bool | None = None,
        preset: str | None = None,
        bg_engine: str | None = None,
        finish_engine: str | None = None,
    ) -> PipelineConfig:
        """Return a copy with the user-facing options set in every section that uses them (a ``preset``,
        :data:`PRESETS`, first, explicit ``faces``/``texture_size`` on top).

        Raises:
            InputError: unknown preset or out-of-range values.
        """
        faces, texture_size = preset_budget(preset, faces, texture_size)
        given = {
            "resolution": resolution,
            "faces": faces,
            "texture_size": texture_size,
            "textures": textures,
            "foreground_ratio": foreground_ratio,
            "background": background,
            "bg_engine": bg_engine,
            "seed": seed,
            "finish_engine": finish_engine,
        }
        cfg = self
        for name, value in given.items():
            if value is not None:
                cfg = OPTIONS[name].set(cfg, value)
        if save_intermediates is not None:
            cfg = dataclasses.replace(cfg, save_intermediates=save_intermediates)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check value ranges; raise :class:`InputError` naming the first bad option."""
        for option in OPTIONS.values():
            problem = option.problem(option.get(self))
            if problem is not None:
                raise InputError(problem)
        checks: list[tuple[bool, str]] = [
            (self.unwrap.padding >= 0, f"padding must be >= 0, got {self.unwrap.padding}"),
            (
                self.extract.engine in ("auto", "skimage", "torch"),
                f"isosurface engine must be auto, skimage or torch, got {self.extract.engine!r}",
            ),
            (
                self.unwrap.engine in ("xatlas", "faces"),
                f"unwrap engine must be xatlas or faces, got {self.unwrap.engine!r}",
            ),
            (self.input.max_pixels > 0, "max_pixels must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    # -- serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        """Build from a (possibly partial) dict, e.g. :meth:`to_dict`'s; missing keys keep their defaults.

        Raises:
            InputError: an unknown key, a wrongly-typed or out-of-range value (the message names it).
        """
        cfg = from_dict_over(cls(), data)
        cfg.validate()
        return cfg

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_toml(self) -> str:
        lines: list[str] = []
        top = {k: v for k, v in self.to_dict().items() if not isinstance(v, dict)}
        for key, value in top.items():
            lines.append(f"{key} = {_toml_value(value)}")
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                lines.append(f"\n[{key}]")
                for k, v in value.items():
                    if v is not None:
                        lines.append(f"{k} = {_toml_value(v)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> PipelineConfig:
        """Load a ``.json`` or ``.toml`` file; raise :class:`InputError` if it cannot be read."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
            data = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
        except (OSError, ValueError) as exc:
            raise InputError(f"{p}: cannot read configuration ({exc})") from None
        if not isinstance(data, dict):
            raise InputError(f"{p}: configuration must be a table/object")
        return cls.from_dict(data)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def from_dict_over(base: T, data: dict[str, Any], prefix: str = "") -> T:
    """A copy of the configuration dataclass ``base`` with the keys of ``data`` (nested dicts for nested
    sections) replaced; what ``data`` does not name keeps ``base``'s value (so a configuration whose sections
    have other defaults, such as ``OptimizeConfig``, keeps them). No range check.

    Raises:
        InputError: an unknown key or a wrongly-typed value, named with its dotted path.
    """
    if not isinstance(data, dict):
        raise InputError(f"configuration section {prefix or 'root'} must be a table")
    if isinstance(base, UnwrapConfig) and "resolution" in data:
        raise InputError(
            "unknown configuration key 'unwrap.resolution': the atlas is packed for bake.texture_size "
            "(one texture size for the run); set that instead"
        )
    known = {f.name for f in fields(base)}  # type: ignore[arg-type]
    template = type(base)()  # the field types, read from the class defaults
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise InputError(f"unknown configuration key {prefix}{key!r}")
        default = getattr(template, key)
        if dataclasses.is_dataclass(default):
            kwargs[key] = from_dict_over(getattr(base, key), value, f"{prefix}{key}.")
            continue
        if default is not None and not isinstance(default, bool) and isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(f"configuration key {prefix}{key} must be a number, got {value!r}")
            value = type(default)(value) if not (isinstance(default, int) and isinstance(value, float)) else value
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise InputError(f"configuration key {prefix}{key} must be true or false, got {value!r}")
        elif isinstance(default, str) and not isinstance(value, str):
            raise InputError(f"configuration key {prefix}{key} must be a string, got {value!r}")
        kwargs[key] = value
    return dataclasses.replace(base, **kwargs)  # type: ignore[type-var]


# -- the user-facing options: one carrier each ------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One user-facing option: its name everywhere (``--texture-size`` on the command line,
    ``texture_size`` in :meth:`PipelineConfig.with_options` and the HTTP form), where its value lives in
    :class:`PipelineConfig`, its type, range or choices and its help text. The default is the dataclass
    field's (never written again); :meth:`PipelineConfig.validate` checks the range; the CLI builds its
    arguments from :data:`OPTIONS`.

    Attributes:
        name: the option's name (snake case).
        path: the field's path in :class:`PipelineConfig`, e.g. ``("bake", "texture_size")``.
        kind: ``int``, ``float``, ``str`` or ``bool``.
        help: one line, without the default.
        minimum: smallest allowed value (numbers), or None.
        maximum: largest allowed value (numbers), or None.
        choices: the allowed values (strings), or None.
        label: how error messages name it (defaults to the name with spaces).
    """

    name: str
    path: tuple[str, ...]
    kind: type
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    label: str | None = None

    def get(self, cfg: Any) -> Any:
        """The option's value in ``cfg`` (a :class:`PipelineConfig` or any configuration with its section)."""
        value: Any = cfg
        for key in self.path:
            value = getattr(value, key)
        return value

    def set(self, cfg: C, value: Any) -> C:
        """A copy of ``cfg`` (a :class:`PipelineConfig`, or any configuration with the same sections, such as
        ``OptimizeConfig``) with the option set; no check (:meth:`PipelineConfig.validate` checks)."""

        def put(obj: Any, path: tuple[str, ...]) -> Any:
            if len(path) == 1:
                return dataclasses.replace(obj, **{path[0]: value})
            return dataclasses.replace(obj, **{path[0]: put(getattr(obj, path[0]), path[1:])})

        return put(cfg, self.path)

    def applies_to(self, cfg: object) -> bool:
        """Whether ``cfg`` has the option's field (``OptimizeConfig`` has no ``extract`` section, for one)."""
        value: Any = cfg
        for key in self.path:
            if not hasattr(value, key):
                return False
            value = getattr(value, key)
        return True

    @property
    def default(self) -> Any:
        """The default, read from the dataclasses."""
        return self.get(PipelineConfig())

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed (one line), or None."""
        label = self.label or self.name.replace("_", " ")
        if self.choices is not None and value not in self.choices:
            return f"{label} must be {_one_of(self.choices)}, got {value!r}"
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None and not lo <= value <= hi:
            return f"{label} must be in [{self._num(lo)}, {self._num(hi)}], got {value}"
        if lo is not None and hi is None and value < lo:
            return f"{label} must be at least {self._num(lo)}, got {value}"
        return None

    def _num(self, x: float) -> str:
        return str(float(x)) if self.kind is float else str(int(x))

    def describe(self, default: object = None) -> str:
        """The help line with its range or choices and its default (for ``--help`` and the OpenAPI);
        ``default`` names another default than the dataclass's (e.g. ``"the job's"``)."""
        extra = ""
        if self.choices is not None:
            extra = f" ({', '.join(self.choices)})"
        elif self.minimum is not None and self.maximum is not None:
            extra = f" ({self._num(self.minimum)}–{self._num(self.maximum)})"
        elif self.minimum is not None:
            extra = f" (at least {self._num(self.minimum)})"
        return f"{self.help}{extra} (default: {self.default if default is None else default})"


def _one_of(choices: tuple[str, ...]) -> str:
    return ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]


#: every user-facing option of generate, optimize and export, in ``--help`` order
OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        Option("resolution", ("extract", "resolution"), int, "isosurface grid points per axis", 16, 1024),
        Option("faces", ("decimate", "faces"), int, "face budget of the decimated mesh", 4, None),
        Option(
            "texture_size",
            ("bake", "texture_size"),
            int,
            "side of the baked maps in texels",
            16,
            8192,
            label="texture size",
        ),
        Option("textures", ("bake", "textures"), bool, "bake textures (false: vertex colours, fast screening)"),
        Option(
            "foreground_ratio",
            ("preprocess", "foreground_ratio"),
            float,
            "the object's longer side as a fraction of the square frame",
            0.1,
            1.0,
        ),
        Option(
            "background",
            ("preprocess", "background"),
            str,
            "auto keeps a meaningful alpha and removes the background otherwise",
            choices=("auto", "keep", "remove"),
        ),
        Option(
            "bg_engine",
            ("preprocess", "engine"),
            str,
            "background removal engine",
            choices=("grabcut", "rembg"),
            label="background engine",
        ),
        Option("seed", ("seed",), int, "random seed"),
        Option(
            "finish_engine",
            ("finish", "engine"),
            str,
            "engine of the clean, decimate and bake stages: cpu (numpy, the reference), torch (PyTorch on the "
            "dense surface's device, CUDA if any), auto (torch when the dense surface is on a CUDA device)",
            choices=FINISH_ENGINES,
            label="finish engine",
        ),
    )
}
