"""The options of a job as the ledger stores them, the configuration rebuilt from them, and the keys built
from them, shared by the submitting side (:mod:`meshforge.service.manager`) and the executing side
(:mod:`meshforge.service.jobs`).

A job's stored options (the ledger row's ``options`` JSON, :data:`FORMAT` 2) are its whole configuration,
``cfg.to_dict()`` of a :class:`~meshforge.config.PipelineConfig` (generate, export) or an
:class:`~meshforge.optimize.OptimizeConfig` (optimize), plus the few fields only the service knows::

    {"format": 2, "config": {...}, "backend": "inflate", "backend_requested": "auto",
     "backend_note": "no model weights found ...; using the weightless 'inflate' backend", "preset": null}

A worker rebuilds the configuration with ``from_dict`` (:func:`job_config`). Rows written by earlier
versions (format 1: a flat dict of the user-facing options, e.g. ``{"resolution": 256, "faces": 20000,
"texture_size": 1024, "textures": true, ..., "backend": "inflate"}``) are still read by :func:`job_config`.

- :func:`normalize_generate_options`, :func:`normalize_optimize_options`, :func:`normalize_export_options`:
  the stored options of a new job (``with_options`` on the server's base configuration, the server's limits
  checked, the backend resolved);
- :func:`public_options`: the API's view of them (the user-facing options by their form-field names);
- :func:`fingerprint`: the cache key (input bytes, configuration, backend, weights, meshforge version);
- :func:`request_hash`: the identity of a request for ``Idempotency-Key`` matching;
- :func:`degrade`: the reduced configuration of the retry after running out of memory.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from .._version import __version__
from ..backends import backend_class, resolve_name
from ..config import OPTIONS, PRESETS, InputConfig, PipelineConfig
from ..errors import BackendError, InputError, MeshforgeError
from .backends import check_available
from .settings import Settings

if TYPE_CHECKING:
    from ..optimize import OptimizeConfig

C = TypeVar("C", "PipelineConfig", "OptimizeConfig")

#: the version of the stored options' shape (format 1, the flat dict of earlier versions, has no key)
FORMAT = 2
#: what the stored options hold besides the configuration
SERVICE_FIELDS: tuple[str, ...] = ("backend", "backend_requested", "backend_note", "preset", "prompt", "t2i")
#: the service fields of prompt jobs only (shown when present): ``prompt`` True and ``t2i`` (the text-to-image
#: model and seed, part of the cache key)
PROMPT_FIELDS: tuple[str, ...] = ("prompt", "t2i")

#: the server's caps on user-facing options: option name → :class:`Settings` field
LIMITS: dict[str, str] = {"resolution": "max_resolution", "faces": "max_faces", "texture_size": "max_texture_size"}
#: per job kind, the user-facing options (:data:`~meshforge.config.OPTIONS`) and service fields the API shows
SHOWN: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "generate": (
        ("resolution", "faces", "texture_size", "textures", "foreground_ratio", "background"),
        ("backend", "backend_requested", "prompt", "t2i"),
    ),
    "optimize": (("faces", "texture_size"), ("preset",)),
    "export": (("faces", "texture_size", "textures"), ("preset",)),
}
#: per job kind, what the retry after running out of memory halves (an export extracts no isosurface)
DEGRADED: dict[str, tuple[str, ...]] = {
    "generate": ("resolution", "texture_size"),
    "optimize": ("texture_size",),
    "export": ("texture_size",),
}
#: the keys of format-1 rows (the reader refuses others)
_FORMAT1_KEYS = frozenset(
    ("resolution", "faces", "texture_size", "textures", "foreground_ratio", "background", "preset")
    + ("backend", "backend_requested")
)


def pipeline_base(settings: Settings) -> PipelineConfig:
    """What generate and export options apply to: the defaults with the server's picture limits
    (``max_pixels``, ``max_image_bytes``)."""
    return PipelineConfig(input=InputConfig(max_pixels=settings.max_pixels, max_bytes=settings.max_image_bytes))


def optimize_base(settings: Settings) -> OptimizeConfig:
    """What optimize options apply to: the defaults with the server's mesh limit (``max_mesh_bytes``)."""
    from ..optimize import OptimizeConfig

    return OptimizeConfig(max_bytes=settings.max_mesh_bytes)


def server_limits(settings: Settings) -> dict[str, int]:
    """The server's caps on user-facing options, by option name (see :data:`LIMITS`)."""
    return {name: int(getattr(settings, field)) for name, field in LIMITS.items()}


def check_limits(cfg: PipelineConfig | OptimizeConfig, settings: Settings) -> None:
    """Refuse a configuration above the server's caps (:func:`server_limits`); a texture size is not
    checked when no textures are baked.

    Raises:
        InputError: ``"<option> must be at most <cap> on this server, got <value>"``.
    """
    for name, cap in server_limits(settings).items():
        option = OPTIONS[name]
        if not option.applies_to(cfg) or (name == "texture_size" and not cfg.bake.textures):
            continue
        value = option.get(cfg)
        if value > cap:
            raise InputError(f"{name} must be at most {cap} on this server, got {value}")


def stored_options(cfg: PipelineConfig | OptimizeConfig, **service: Any) -> dict[str, Any]:
    """The stored options of a job: ``{"format": 2, "config": cfg.to_dict(), **service}``; without textures
    the unused texture size is the default, so that equal requests store equal options (one cache key)."""
    unused = OPTIONS["texture_size"]
    if not cfg.bake.textures and unused.get(cfg) != unused.default:
        cfg = unused.set(cfg, unused.default)
    return {"format": FORMAT, "config": cfg.to_dict(), **service}


def with_config(options: dict[str, Any], cfg: PipelineConfig | OptimizeConfig) -> dict[str, Any]:
    """``options`` (stored, any format) with another configuration and the same service fields."""
    return stored_options(cfg, **{k: options[k] for k in SERVICE_FIELDS if k in options})


def job_config(kind: str, options: dict[str, Any], base: C) -> C:
    """The configuration a job runs with, rebuilt from its stored options.

    Args:
        kind: ``generate``, ``optimize`` or ``export``.
        options: the ledger row's options: format 2 (``config`` is rebuilt with ``from_dict`` of
            ``type(base)``), or a format-1 row of an earlier version (its flat options are applied to
            ``base`` with ``with_options``).
        base: what a format-1 row's options apply to: :func:`pipeline_base` for generate,
            :func:`optimize_base` for optimize, the raw's configuration for export (what earlier versions
            did); its type is the configuration's.

    Raises:
        InputError: options in a newer or unknown format, or values this version refuses; one line that
            says to submit the job again.
    """
    fmt = options.get("format", 1)
    try:
        if fmt == FORMAT and isinstance(options.get("config"), dict):
            return type(base).from_dict(options["config"])
        if fmt == 1 and not set(options) - _FORMAT1_KEYS:
            return _format1_config(kind, options, base)
    except InputError as exc:
        raise InputError(f"the {kind} job's stored options cannot be used ({exc}): submit it again") from None
    what = f"format {fmt!r}" if fmt != 1 else f"an unknown shape (keys: {', '.join(sorted(options)) or 'none'})"
    raise InputError(
        f"the {kind} job's stored options are in {what}, which meshforge {__version__} cannot read "
        f"(it reads formats 1 and {FORMAT}): run it on a server of the version that queued it, or submit it again"
    )


def _format1_config(kind: str, options: dict[str, Any], base: C) -> C:
    """A format-1 row's configuration: its flat options applied to ``base`` (missing ones keep ``base``'s)."""
    budget = {"faces": options.get("faces"), "texture_size": options.get("texture_size")}
    if isinstance(base, PipelineConfig):
        return base.with_options(
            resolution=options.get("resolution"),
            textures=options.get("textures"),
            foreground_ratio=options.get("foreground_ratio"),
            background=options.get("background"),
            **budget,
        )
    return base.with_options(**budget)


def public_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """The API's view of a job's stored options: the user-facing options of its kind by their form-field
    names (:data:`SHOWN`; ``texture_size`` is null without textures) and the service fields it shows.

    A format-1 row is shown as stored (it has that shape); a row in an unknown format too.
    """
    config = options.get("config")
    if options.get("format") != FORMAT or not isinstance(config, dict):
        return dict(options)
    names, service = SHOWN[kind]
    out: dict[str, Any] = {}
    for name in names:
        value: Any = config
        for key in OPTIONS[name].path:
            value = value[key]
        out[name] = value
    if "texture_size" in out and not config["bake"]["textures"]:
        out["texture_size"] = None
    out.update({k: options.get(k) for k in service if k in options or k not in PROMPT_FIELDS})
    return out


def option_table(settings: Settings) -> dict[str, Any]:
    """What ``GET /v1/options`` serves (:class:`~meshforge.service.schemas.OptionTable`): the generate
    options of :data:`SHOWN` from :data:`~meshforge.config.OPTIONS` (type, default, range, choices, help),
    each maximum lowered to the server's cap (:func:`server_limits`), and the presets."""
    caps = server_limits(settings)
    types = {int: "integer", float: "number", str: "string", bool: "boolean"}
    options: dict[str, Any] = {}
    for name in SHOWN["generate"][0]:
        option = OPTIONS[name]
        highest = [x for x in (option.maximum, caps.get(name)) if x is not None]
        options[name] = {
            "type": types[option.kind],
            "default": option.default,
            "minimum": option.minimum,
            "maximum": min(highest) if highest else None,
            "choices": list(option.choices) if option.choices is not None else None,
            "help": option.describe(),
        }
    return {"options": options, "presets": PRESETS}


def normalize_generate_options(
    settings: Settings,
    *,
    resolution: int | None = None,
    faces: int | None = None,
    texture_size: int | None = None,
    no_texture: bool = False,
    foreground_ratio: float | None = None,
    background: str | None = None,
    backend: str | None = None,
) -> dict[str, Any]:
    """The stored options of a new generate job: :meth:`PipelineConfig.with_options` on the server's base
    configuration (:func:`pipeline_base`), the server's caps (:func:`check_limits`), and the backend resolved
    by :func:`meshforge.backends.resolve_name` (whose "fell back" note is kept for the job's warnings).

    Returns:
        :func:`stored_options` with ``backend`` (a concrete name), ``backend_requested`` and ``backend_note``.

    Raises:
        InputError: an option is out of range or above the server's limits, or the backend is unknown or
            not enabled; the message names the option.
        BackendUnavailable: the backend (an InputError) cannot run on this server: its weights are missing.
    """
    requested = (backend or settings.backend).strip().lower()
    if requested not in settings.backends:
        raise InputError(
            f"backend {requested!r} is not enabled on this server (choices: {', '.join(settings.backends)})"
        )
    cfg = pipeline_base(settings).with_options(
        resolution=resolution,
        faces=faces,
        texture_size=texture_size,
        textures=False if no_texture else None,
        foreground_ratio=foreground_ratio,
        background=background,
    )
    check_limits(cfg, settings)
    try:
        resolved, note = resolve_name(requested, settings.weights)
    except BackendError as exc:
        raise InputError(str(exc)) from None
    check_available(resolved, settings)
    return stored_options(cfg, backend=resolved, backend_requested=requested, backend_note=note)


def normalize_optimize_options(
    settings: Settings, *, faces: int | None = None, texture_size: int | None = None, preset: str | None = None
) -> dict[str, Any]:
    """The stored options of a new optimize job: ``OptimizeConfig.with_options`` (preset first, explicit
    budgets on top) on the server's base configuration, and the server's caps.

    Returns:
        :func:`stored_options` with ``preset``.

    Raises:
        InputError: unknown preset, or a value out of range or above the server's limits.
    """
    cfg = optimize_base(settings).with_options(preset=preset, faces=faces, texture_size=texture_size)
    check_limits(cfg, settings)
    return stored_options(cfg, preset=preset)


def normalize_export_options(
    settings: Settings,
    parent: dict[str, Any],
    *,
    faces: int | None = None,
    texture_size: int | None = None,
    preset: str | None = None,
    no_texture: bool = False,
) -> dict[str, Any]:
    """The stored options of a new export job (a generate job's raw finished again).

    The configuration is the parent's (``parent``: the generate job's stored options, any format) with
    the given options on top; a ``preset`` (:data:`~meshforge.config.PRESETS`) fills in what is not given
    explicitly, as for optimize. A texture size or a preset asked for bakes textures even when the parent
    had ``no_texture`` (as ``meshforge export`` does). The ranges and the server's caps are the generate
    options' ones.

    Returns:
        :func:`stored_options` with ``preset``.

    Raises:
        InputError: unknown preset, or a value out of range or above the server's limits.
    """
    base = job_config("generate", parent, pipeline_base(settings))
    textures = False if no_texture else (True if texture_size or preset else None)
    cfg = base.with_options(preset=preset, faces=faces, texture_size=texture_size, textures=textures)
    check_limits(cfg, settings)
    return stored_options(cfg, preset=preset)


_IDENTITIES: dict[tuple[str, str | None], str] = {}
_IDENTITIES_LOCK = threading.Lock()


def backend_identity(name: str, settings: Settings) -> str:
    """A short string that changes when the backend's weights change (part of the cache key).

    ``settings.weights_version`` when set; otherwise, for backends with weights, the checkpoint's file
    name, size and modification time; ``"builtin"`` for weightless backends. Memoised per process.
    """
    if settings.weights_version:
        return settings.weights_version
    key = (name, settings.weights)
    with _IDENTITIES_LOCK:
        if key in _IDENTITIES:
            return _IDENTITIES[key]
    ident = "builtin"
    cls = backend_class(name)
    locate = getattr(cls, "weights_location", None)
    if locate is not None:
        try:
            files = locate(settings.weights)
            if files is None:
                ident = "absent"
            else:
                st = files.checkpoint.stat()
                ident = f"{files.source}:{files.location}:{files.checkpoint.name}:{st.st_size}:{int(st.st_mtime)}"
        except (OSError, MeshforgeError):
            ident = "unknown"
    with _IDENTITIES_LOCK:
        _IDENTITIES[key] = ident
    return ident


def fingerprint(kind: str, input_sha256: str, options: dict[str, Any], settings: Settings) -> str:
    """The cache key: same input bytes, configuration, backend, weights and meshforge version → same key
    (``options``: the stored options; how they were asked for — a preset, ``auto`` — does not count)."""
    opts = {k: v for k, v in options.items() if k not in ("backend_requested", "backend_note", "preset")}
    backend = options.get("backend")
    doc = {
        "v": 2,
        "kind": kind,
        "input": input_sha256,
        "options": opts,
        "backend": backend,
        "weights": backend_identity(str(backend), settings) if backend else None,
        "meshforge": __version__,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def request_hash(kind: str, input_sha256: str, options: dict[str, Any]) -> str:
    """Identity of a request for Idempotency-Key matching (the stored options, backend as asked)."""
    opts = {k: v for k, v in options.items() if k != "backend_note"}
    doc = {"kind": kind, "input": input_sha256, "options": opts}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def degrade(kind: str, cfg: C) -> tuple[C, list[str]]:
    """The reduced configuration of the retry after running out of memory: half of each option of
    :data:`DEGRADED` (generate: the isosurface grid resolution and the texture size; optimize and export: the
    texture size, when textures are baked), through :meth:`~meshforge.config.Option.set`, never below the
    option's minimum (:data:`~meshforge.config.OPTIONS`).

    Returns:
        ``(reduced configuration, what changed)``, e.g. ``["resolution 64 → 32", "texture_size 128 → 64"]``.
    """
    out, changes = cfg, []
    for name in DEGRADED[kind]:
        option = OPTIONS[name]
        if not option.applies_to(cfg) or (name == "texture_size" and not cfg.bake.textures):
            continue
        old = int(option.get(cfg))
        new = max(int(option.minimum or 1), old // 2)
        if new != old:
            out = option.set(out, new)
            changes.append(f"{name} {old} → {new}")
    return out, changes
