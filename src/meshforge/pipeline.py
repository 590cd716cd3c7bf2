"""The image → asset pipeline: a straight line of stage calls.

::

    reconstruct:  Image ─prepare─▶ Image ─backend─▶ Field ─extract─▶ Raw(Mesh | DeviceMesh, Field)
    finish:       Raw ─clean─▶ Mesh ─decimate─▶ Mesh ─unwrap─▶ Mesh(+uv) ─bake(Field)─▶ Textures ─▶ Asset

:func:`run` is :func:`reconstruct` then :func:`finish`; ``optimize`` and ``meshforge export`` (a saved
:class:`~meshforge.raw.Raw`) call :func:`finish` alone. :func:`run` never loads a backend: it is built once
(:func:`meshforge.backends.load_backend`) and passed in. Writing files is the caller's job
(:func:`meshforge.export.export` returns bytes).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import _profiling
from ._version import __version__
from .backends import Backend, Seeded, load_backend, resolve_name
from .config import BakeConfig, CleanConfig, DecimateConfig, FinishingConfig, PipelineConfig, UnwrapConfig
from .eval.metrics import orientation
from .fields.base import DenseSurface, Field, Opacity, SurfaceAttributes
from .fields.isosurface import extract
from .fields.surface import FieldSurfacePart, SurfaceField
from .geometry.normals import vertex_normals
from .geometry.raster import MAX_UV_RASTER
from .geometry.topology import topology
from .io.images import load_image
from .mesh.bake import bake, bake_vertex_colors, baked_metallic_factor
from .mesh.decimate import budget_shortfall
from .mesh.finish_engine import clean_surface, decimate_surface, edge_topology, resolve_engine
from .mesh.uv import MAX_PIECES, atlas_quality, start_worker, unwrap
from .preprocess import prepare
from .preprocess.background import cutout_warning
from .raw import Raw, SparseVoxelField, VoxelField
from .threads import SMALL_POOL_THREADS, LazyThreadPool
from .types import Asset, DeviceMesh, Image, Material, Mesh, Report, host_mesh

#: warn when more than this fraction of the low-poly area faces away from the dense surface it stands for
#: (:func:`~meshforge.eval.metrics.orientation`; checked where the dense surface's winding is kept). Decimation
#: keeps every face's winding; what still faces away are folds where collapses squeezed a thin part
#: (FlightHelmet at 5k–20k faces: 0.3 %).
FACING_AWAY_WARNING = 0.01

#: the stages of :func:`run`, in order (for progress reporting)
STAGES: tuple[str, ...] = ("prepare", "reconstruct", "extract", "clean", "decimate", "unwrap", "bake")

ProgressCallback = Callable[[str, int, int], None]


#: the stages of :func:`finish`, in order
FINISH_STAGES: tuple[str, ...] = ("clean", "decimate", "unwrap", "bake")


class FinishConfig(Protocol):
    """The sections :func:`finish` reads (:class:`PipelineConfig` and ``OptimizeConfig`` both have them)."""

    @property
    def finish(self) -> FinishingConfig: ...
    @property
    def clean(self) -> CleanConfig: ...
    @property
    def decimate(self) -> DecimateConfig: ...
    @property
    def unwrap(self) -> UnwrapConfig: ...
    @property
    def bake(self) -> BakeConfig: ...


@dataclass
class Result:
    """What :func:`run`, :func:`generate` and :func:`finish` return.

    Attributes:
        asset: the game-ready asset (export it with :func:`meshforge.export.export`).
        report: per-stage times, peak memory, counts, warnings and the resolved configuration.
        raw: the raw reconstruction the asset was finished from (:class:`meshforge.raw.Raw`): finish it
            again with other budgets (:func:`finish`) or save it (:func:`meshforge.raw.save_raw`) without
            running the backend again.
    """

    asset: Asset
    report: Report
    raw: Raw

    @property
    def field(self) -> Field:
        """The attribute source the asset was baked from (``raw.attributes``)."""
        return self.raw.attributes

    @property
    def prepared(self) -> Image:
        """The prepared input picture (square, alpha = object mask); ``generate`` results only.

        Raises:
            AttributeError: the raw has no prepared picture (an ``optimize`` result).
        """
        if self.raw.prepared is None:
            raise AttributeError("this result has no prepared picture")
        return self.raw.prepared


def run(
    image: Image,
    backend: Backend,
    cfg: PipelineConfig | None = None,
    *,
    on_progress: ProgressCallback | None = None,
    report: Report | None = None,
) -> Result:
    """Turn a decoded picture into an asset with an already-built backend: :func:`reconstruct`, then
    :func:`finish`.

    Args:
        image: the decoded input (:func:`meshforge.io.images.load_image`).
        backend: a built backend (:func:`meshforge.backends.load_backend`).
        cfg: the pipeline configuration (defaults when None).
        on_progress: called as ``on_progress(stage, index, total)`` before each stage.
        report: a report to append to (e.g. one holding a ``load`` stage already).

    Returns:
        A :class:`Result`.

    Raises:
        InputError: the picture cannot be used (no object found, ...).
        StageError: a stage could not produce a valid result.
    """
    cfg = cfg or PipelineConfig()
    cfg.validate()
    report = report or Report()
    raw = reconstruct(image, backend, cfg, on_progress=on_progress, report=report)

    def step(stage: str, index: int, total: int) -> None:
        if on_progress is not None:
            on_progress(stage, STAGES.index(stage), len(STAGES))

    return finish(raw, cfg, on_progress=step, report=report)


def reconstruct(
    image: Image,
    backend: Backend,
    cfg: PipelineConfig,
    *,
    on_progress: ProgressCallback | None = None,
    report: Report | None = None,
) -> Raw:
    """The network half of :func:`run`: prepare → backend → extract, into a :class:`~meshforge.raw.Raw`.

    The raw's attributes are the backend's live field; :func:`meshforge.raw.portable` samples it into a
    form that needs no backend.

    Args:
        image, backend, cfg, on_progress: see :func:`run` (progress over :data:`STAGES`).
        report: the report the ``prepare``, ``reconstruct`` and ``extract`` stages are recorded in.

    Raises:
        InputError, StageError: see :func:`run`.
    """
    report = report if report is not None else Report()
    report.config = cfg.to_dict()
    info = backend.info()
    report.info.update(backend=info, input={"name": image.name, "sha256": image.sha256, **_jsonable(image.meta)})
    total = len(STAGES)

    def step(i: int) -> None:
        if on_progress is not None:
            on_progress(STAGES[i], i, total)

    step(0)
    with _profiling.stage(report, "prepare") as c:
        prepared = prepare(image, cfg.preprocess, backend.input_size)
        cut = prepared.meta.get("background", "alpha")
        c.update(size=prepared.width, background=cut)
        quality = cut.get("quality") if isinstance(cut, dict) else None
        if quality and quality["verdict"] != "ok":
            report.warn(cutout_warning(quality["reasons"]))
    step(1)
    if isinstance(backend, Seeded):
        backend.seed = int(cfg.seed)
    with _profiling.stage(report, "reconstruct"):
        field = backend(prepared)
    info = backend.info()  # after the run: a backend may add what it chose (pipeline type, resolution)
    report.info["backend"] = info
    for warning in info.get("warnings") or ():  # e.g. TRELLIS.2's out-of-memory step-down or token cap
        report.warn(f"{info.get('name', 'backend')}: {warning}")
    step(2)
    with _profiling.stage(report, "extract") as c:
        if isinstance(field, DenseSurface):
            # the backend decoded its own dense mesh (TRELLIS.2's flexible dual grid): no isosurface
            dense = field.dense_surface()
            c.update(source="backend mesh", vertices=dense.n_vertices, faces=dense.n_faces)
        else:
            # a CUDA grid's isosurface stays on the device (a DeviceMesh) for the finishing engine
            dense = extract(field, cfg.extract, on_device=True)
            c.update(resolution=cfg.extract.resolution, vertices=dense.n_vertices, faces=dense.n_faces)
        c.update(on_device=isinstance(dense, DeviceMesh))
    provenance = {
        "job": "generate",
        "version": __version__,
        "backend": info,
        "input_sha256": image.sha256,
        "input_name": image.name,
        "parameters": {
            "resolution": cfg.extract.resolution,
            "foreground_ratio": cfg.preprocess.foreground_ratio,
            "background": cfg.preprocess.background,
            "seed": cfg.seed,
        },
        "warnings": list(report.warnings),
    }
    return Raw(
        surface=dense,
        attributes=field,
        prepared=prepared,
        provenance=provenance,
        name=image.name,
        material=Material(
            name=f"{image.name}_material",
            alpha_mode=field.alpha_mode if isinstance(field, Opacity) else "OPAQUE",
        ),
        config=cfg.to_dict(),
    )


def finish(
    raw: Raw,
    cfg: FinishConfig | None = None,
    *,
    on_progress: ProgressCallback | None = None,
    report: Report | None = None,
) -> Result:
    """The tail both jobs share: clean → decimate → unwrap → bake, into an asset and its report.

    Reads only ``cfg.finish``, ``cfg.clean``, ``cfg.decimate``, ``cfg.unwrap`` and ``cfg.bake``; never loads a
    backend.

    **Engines** (``cfg.finish.engine``, :func:`~meshforge.mesh.finish_engine.resolve_engine`): ``"cpu"`` is the
    reference path (numpy clean and decimate, the numpy/Embree bake); ``"torch"`` cleans and decimates with
    PyTorch on the dense surface's device (:func:`~meshforge.mesh.finish_engine.clean_surface`,
    :func:`~meshforge.mesh.finish_engine.decimate_surface`), keeps the cleaned dense surface there as the bake's
    projection target (:meth:`meshforge.gpu.bake.DenseSurface.from_isosurface`) and bakes with
    :func:`meshforge.gpu.bake.bake` on that device; only the decimated mesh comes to the host, for the unwrap
    (xatlas, both engines). ``"auto"`` is ``"torch"`` for a dense surface on a CUDA device (a
    :class:`~meshforge.types.DeviceMesh`), else ``"cpu"``. The clean, decimate and bake stages of the report
    say which engine ran and on which device (``engine``, ``device``).

    The bake samples ``raw.attributes``: a dense-surface field (``bake_attributes``, ``optimize``'s source)
    directly; a point field (a backend's live field or a :class:`~meshforge.raw.VoxelField`) through the
    cleaned dense surface when ``cfg.bake.normal_map`` (colours read on the dense surface, its detail in the
    normal map), else at the low-poly surface. With ``cfg.bake.textures`` False it bakes vertex colours.

    With texture maps and a time-limited xatlas unwrap, the unwrap worker processes (one per CPU, for the
    unwrap in pieces) are started first (:func:`~meshforge.mesh.uv.start_worker`), so their start-up overlaps
    clean and decimate.

    The report's ``info["source"]`` says what was baked from (:func:`_source_info`): ``backend_loaded`` is
    False when no backend took part (a raw file's voxel volume, an optimize source).

    Checks, as report warnings: the face budget not reached (:func:`~meshforge.mesh.decimate.budget_shortfall`);
    a watertight dense surface made open by decimation; and, where the dense surface's winding is kept
    (``cfg.clean.orient`` False: an authored mesh), faces turned away from it
    (:func:`~meshforge.eval.metrics.orientation`, more than :data:`FACING_AWAY_WARNING` of the area).

    Args:
        raw: the raw reconstruction (:func:`reconstruct`, :func:`meshforge.raw.load_raw`, or ``optimize``'s).
        cfg: the configuration (default: the one the raw was made with, ``raw.config``, else
            :class:`PipelineConfig`'s defaults).
        on_progress: called as ``on_progress(stage, index, total)`` over :data:`FINISH_STAGES`.
        report: a report to append to (the reconstruction's); a new one when None.

    Returns:
        A :class:`Result` holding ``raw``; its asset has at most ``cfg.decimate.faces`` faces where that is
        reachable, and ``extras["meshforge"]`` = the raw's provenance with the finishing parameters.

    Raises:
        InputError: ``cfg`` is None and the raw's configuration is not a valid one.
        StageError: a stage could not produce a valid result.
    """
    cfg = cfg or (PipelineConfig.from_dict(raw.config) if raw.config else PipelineConfig())
    report = report if report is not None else Report()
    total = len(FINISH_STAGES)

    def step(i: int) -> None:
        if on_progress is not None:
            on_progress(FINISH_STAGES[i], i, total)

    report.info["source"] = {**report.info.get("source", {}), **_source_info(raw)}
    for warning in raw.provenance.get("warnings", ()):  # the reconstruction's (a doubtful cut-out) still hold
        report.warn(warning)
    dense = raw.surface
    engine, device = resolve_engine(cfg.finish.engine, dense)
    on = {"engine": engine, "device": device}
    if cfg.bake.textures and cfg.unwrap.engine == "xatlas" and cfg.unwrap.time_limit > 0:
        # their start-up (interpreters importing numpy and xatlas) overlaps clean and decimate; one per CPU:
        # the pieces of a large mesh, or of one of few parts, are unwrapped on all of them
        start_worker(min(os.cpu_count() or 1, MAX_PIECES))
    step(0)
    with _profiling.stage(report, "clean") as c:
        cleaned, clean_counts = clean_surface(dense, cfg.clean, engine=engine, device=device)
        n_clean = _counts(cleaned)
        c.update(**on, faces_in=dense.n_faces, faces=n_clean[1], vertices=n_clean[0], **clean_counts)
    step(1)
    later: list[Callable[[], dict[str, Any]]] = []
    with _profiling.stage(report, "decimate") as c:
        # the torch engine leaves the result's checks (host work) to run beside the unwrap
        low, counts = decimate_surface(cleaned, cfg.decimate, engine=engine, deferred=later)
        before = edge_topology(cleaned)
        winding: dict[str, Any] = {}
        if not cfg.clean.orient:  # the one orientation check (inspect --reference reports the same)
            winding = orientation(low, host_mesh(dense))
        c.update(**on, faces_in=n_clean[1], budget=cfg.decimate.faces, **{**counts, **winding})
        shortfall = budget_shortfall(cfg.decimate.faces, low)
        if shortfall:
            report.warn(shortfall)
        decimate_counts = c
        decimate_facts = _BAKE_TARGET_POOL.get().submit(later[0]) if later else None
        if decimate_facts is None and before["watertight"] and not counts.get("watertight", False):
            report.warn("the decimated mesh is not watertight")
        if winding and (
            winding["facing_away_area"] > FACING_AWAY_WARNING
            or winding["inconsistent_edges"] > before["inconsistent_edges"]
        ):
            report.warn(
                f"{winding['facing_away_faces']:,} faces ({100 * winding['facing_away_area']:.2f} % of the area) "
                f"face away from the source and {winding['inconsistent_edges']:,} edges are wound "
                f"inconsistently (the source has {before['inconsistent_edges']:,}); thin parts folded: try a larger "
                "--faces budget"
            )
    field = raw.attributes
    textures = None
    mesh_facts: Future[Any] | None = None
    through_dense = cfg.bake.normal_map and not isinstance(field, SurfaceAttributes)
    dense_source: Future[SurfaceField] | None = None
    device_target: Future[Any] | None = None
    if cfg.bake.textures and through_dense and engine != "torch":
        # the bake's projection target needs only the cleaned dense surface: build it (normals, Embree's BVH)
        # while the unwrap runs in its worker process, instead of after it
        dense_source = _BAKE_TARGET_POOL.get().submit(_dense_surface_field, cleaned, field, cfg.bake.cage_fraction)
    elif cfg.bake.textures and through_dense:
        # the same on the device: its triangle grid is built by the GPU while the host unwraps
        from .gpu.bake import DenseSurface as DeviceDenseSurface

        cv, cf = cleaned
        device_target = _BAKE_TARGET_POOL.get().submit(
            DeviceDenseSurface.from_isosurface, cv, cf, field, cage_fraction=cfg.bake.cage_fraction
        )
    if cfg.bake.textures:
        step(2)
        with _profiling.stage(report, "unwrap") as c:
            mesh, counts = unwrap(
                low.replace(normals=vertex_normals(low.vertices, low.faces)),
                cfg.unwrap,
                cfg.bake.texture_size,
                # the packing's free-offset search on the GPU the surface is on (the same layout as on the host)
                device=device if engine == "torch" and device.startswith("cuda") else None,
                quality=False,
            )
            c.update(vertices=mesh.n_vertices, faces=mesh.n_faces, **counts)
            if "fallback" in counts:
                report.warn(f"UV unwrap fell back to the per-face atlas: {counts['fallback']}")
            # the atlas's figures for the report are computed on the host while the bake runs; the GPU bake
            # counts the texels never written on its own raster (where it has the figure's size), so the host
            # does not rasterise the atlas again (0.04 s at 1024², competing with the bake for the GIL)
            unwrap_counts = c
            bake_figure = engine == "torch" and cfg.bake.texture_size <= MAX_UV_RASTER
            atlas_figures = _BAKE_TARGET_POOL.get().submit(
                atlas_quality, mesh, cfg.bake.texture_size, coverage_figure=not bake_figure
            )
            # so are the final mesh's topology facts (the bake changes no geometry)
            mesh_facts = _BAKE_TARGET_POOL.get().submit(topology, mesh.vertices, mesh.faces, weld_positions=True)
        step(3)
        with _profiling.stage(report, "bake") as c:
            if engine == "torch":
                from .gpu.bake import bake as bake_torch

                # the cleaned dense surface, still on the device, is the projection target (built meanwhile)
                surface = device_target.result() if device_target is not None else None
                textures, counts = bake_torch(
                    mesh, field, cfg.bake, device=device, surface=surface, never_written_figure=bake_figure
                )
            else:
                # through the dense isosurface: colours on the true surface, its detail in a normal map
                source: Field = dense_source.result() if dense_source is not None else field
                textures, counts = bake(mesh, source, cfg.bake)
            unwritten = counts.pop("texels_never_written", None)  # the unwrap's figure (bake_figure)
            c.update(**on, **counts)
        figures = atlas_figures.result()
        if figures["texels_never_written"] is None:
            figures["texels_never_written"] = unwritten
        unwrap_counts.update(figures)
        report.textures = textures.sizes()
        material = dataclasses.replace(
            raw.material, metallic_factor=baked_metallic_factor(textures), roughness_factor=1.0
        )
    else:
        step(3)
        with _profiling.stage(report, "bake") as c:
            mesh = low.replace(normals=vertex_normals(low.vertices, low.faces))
            mesh, roughness = bake_vertex_colors(mesh, field)
            material = dataclasses.replace(raw.material, metallic_factor=0.0, roughness_factor=roughness)
            # vertex colours are sampled by the field's numpy methods on the host, whatever the engine
            c.update(mode="vertex_colors", engine="cpu", device="cpu", vertices=mesh.n_vertices)
    if decimate_facts is not None:  # the decimated mesh's checks, computed meanwhile
        decimate_counts.update(decimate_facts.result())
        if before["watertight"] and not decimate_counts.get("watertight", False):
            report.warn("the decimated mesh is not watertight")
    report.info["mesh"] = (
        mesh_facts.result() if mesh_facts is not None else topology(mesh.vertices, mesh.faces, weld_positions=True)
    ).to_dict()
    provenance = {k: v for k, v in raw.provenance.items() if k not in ("warnings",)}
    parameters = dict(provenance.get("parameters", {}))
    parameters.update(faces=cfg.decimate.faces, texture_size=cfg.bake.texture_size if cfg.bake.textures else None)
    extras = {"meshforge": {**provenance, "version": __version__, "parameters": parameters}}
    asset = Asset(mesh=mesh, material=material, textures=textures, name=raw.name, extras=extras)
    return Result(asset=asset, report=report, raw=raw)


#: the process's threads that build bake targets; several jobs at once build theirs side by side
_BAKE_TARGET_POOL = LazyThreadPool(SMALL_POOL_THREADS, "meshforge-bake-target")


def _dense_surface_field(cleaned: Mesh, field: Field, cage_fraction: float) -> SurfaceField:
    """The CPU bake's projection target: the cleaned dense surface sampling ``field``, its cage
    ``cage_fraction`` × the bounding diagonal, with its ray-tracing index built
    (:meth:`~meshforge.fields.surface.SurfaceField.prepare`)."""
    diag = float(np.linalg.norm(cleaned.vertices.max(0) - cleaned.vertices.min(0)))
    source = SurfaceField([FieldSurfacePart(cleaned, field)], cage=cage_fraction * diag)
    source.prepare()
    return source


def _counts(surface: Any) -> tuple[int, int]:
    """``(vertices, faces)`` of a host :class:`Mesh` or a ``(vertices, faces)`` tensor pair."""
    if isinstance(surface, Mesh | DeviceMesh):
        return surface.n_vertices, surface.n_faces
    return int(surface[0].shape[0]), int(surface[1].shape[0])


def _source_info(raw: Raw) -> dict[str, Any]:
    """What :func:`finish` baked from, for the report: the raw's job and backend, whether that backend's
    live field was used (``backend_loaded``) or a form that needs none, and the attribute source's kind."""
    field = raw.attributes
    if isinstance(field, VoxelField):
        kind = f"voxels {field.resolution}^3 ({len(field.coords)} stored)"
    elif isinstance(field, SparseVoxelField):
        kind = f"sparse PBR voxels ({len(field.coords)} stored)"
    elif isinstance(field, SurfaceAttributes):
        kind = "source surface"
    else:
        kind = "backend field"
    backend = raw.provenance.get("backend")
    return {
        "job": raw.provenance.get("job"),
        "backend": backend,
        "backend_loaded": kind == "backend field",
        "attributes": kind,
    }


def generate(
    image: Image | str | os.PathLike[str] | bytes | np.ndarray,
    backend: Backend | str = "auto",
    config: PipelineConfig | None = None,
    *,
    weights: str | None = None,
    device: str = "auto",
    on_progress: ProgressCallback | None = None,
    decode_guard: AbstractContextManager[Any] | None = None,
) -> Result:
    """One picture → one asset: decode (if needed), build the backend (if given by name) and :func:`run`.

    Args:
        image: a decoded :class:`Image`, a path, encoded bytes, or an ``[H, W, 3|4]`` uint8 array.
        backend: a built backend or a registry name (``"auto"``: the best backend whose weights are
            present, else ``inflate``; the choice is noted in the report's warnings).
        config: pipeline configuration.
        weights: weights location for backends that need them.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        on_progress: see :func:`run`.
        decode_guard: held while the picture is decoded (the ``load`` stage), e.g. a semaphore that
            bounds how many pictures a server decodes at once; waiting for it is not part of the stage.

    Returns:
        A :class:`Result` (``result.asset``, ``result.report``).

    Raises:
        InputError, BackendError, StageError: see :func:`run` and :func:`meshforge.io.images.load_image`.
    """
    cfg = config or PipelineConfig()
    report = Report()
    if isinstance(backend, str):
        name, note = resolve_name(backend, weights)
        if note:
            report.warn(note)
        backend = load_backend(name, weights=weights, device=device)
    with decode_guard or nullcontext(), _profiling.stage(report, "load") as c:
        img = as_image(image, cfg)
        c.update(width=img.width, height=img.height)
    return run(img, backend, cfg, on_progress=on_progress, report=report)


def as_image(image: Image | str | os.PathLike[str] | bytes | np.ndarray, cfg: PipelineConfig) -> Image:
    """Coerce the accepted input kinds of :func:`generate` into an :class:`Image`."""
    if isinstance(image, Image):
        return image
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
            from .errors import InputError

            raise InputError(f"array input must be [H, W, 3|4] uint8, got {arr.shape} {arr.dtype}")
        if arr.shape[2] == 3:
            arr = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 255, np.uint8)], axis=2)
        return Image(rgba=np.ascontiguousarray(arr), name="array", has_alpha=bool((arr[..., 3] < 255).any()))
    if isinstance(image, (str, Path, os.PathLike)):
        return load_image(Path(image), cfg.input)
    return load_image(bytes(image), cfg.input)


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)):
            out[k] = [x if isinstance(x, (str, int, float, bool)) else str(x) for x in v]
        elif isinstance(v, dict):
            out[k] = _jsonable(v)
        elif isinstance(v, np.generic):
            out[k] = v.item()
        else:
            out[k] = str(v)
    return out
