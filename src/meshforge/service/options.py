"""The user-facing options of a job and the keys built from them, shared by the submitting side
(:mod:`meshforge.service.manager`) and the executing side (:mod:`meshforge.service.jobs`).

- :func:`normalize_generate_options`, :func:`normalize_optimize_options`, :func:`normalize_export_options`:
  the complete, canonical options of a job (defaults filled in, presets applied, backend resolved, the
  server's limits checked), as stored in the ledger;
- :func:`fingerprint`: the cache key (input bytes, options, backend, weights, meshforge version);
- :func:`request_hash`: the identity of a request for ``Idempotency-Key`` matching;
- :func:`degrade`: the reduced options of the retry after running out of memory.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from .._version import __version__
from ..backends import backend_class, resolve_name
from ..config import PipelineConfig
from ..errors import BackendError, InputError, MeshforgeError
from .backends import check_available
from .settings import Settings


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
    """The complete, canonical options of a generate job (defaults filled in, backend resolved).

    Returns:
        ``{"resolution", "faces", "texture_size" (None without textures), "textures", "foreground_ratio",
        "background", "backend" (a concrete name), "backend_requested"}``.

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
    cfg = PipelineConfig().with_options(
        resolution=resolution,
        faces=faces,
        texture_size=texture_size,
        textures=False if no_texture else None,
        foreground_ratio=foreground_ratio,
        background=background,
    )
    _cap("resolution", cfg.extract.resolution, settings.max_resolution)
    _cap("faces", cfg.decimate.faces, settings.max_faces)
    if cfg.bake.textures:
        _cap("texture_size", cfg.bake.texture_size, settings.max_texture_size)
    try:
        resolved, _note = resolve_name(requested, settings.weights)
    except BackendError as exc:
        raise InputError(str(exc)) from None
    check_available(resolved, settings)
    return {
        "resolution": cfg.extract.resolution,
        "faces": cfg.decimate.faces,
        "texture_size": cfg.bake.texture_size if cfg.bake.textures else None,
        "textures": cfg.bake.textures,
        "foreground_ratio": cfg.preprocess.foreground_ratio,
        "background": cfg.preprocess.background,
        "backend": resolved,
        "backend_requested": requested,
    }


def normalize_optimize_options(
    settings: Settings, *, faces: int | None = None, texture_size: int | None = None, preset: str | None = None
) -> dict[str, Any]:
    """The complete, canonical options of an optimize job (preset applied, defaults filled in).

    Returns:
        ``{"faces", "texture_size", "preset"}``.

    Raises:
        InputError: unknown preset, or a value out of range or above the server's limits.
    """
    from ..optimize import OptimizeConfig

    cfg = OptimizeConfig().with_options(preset=preset, faces=faces, texture_size=texture_size)
    _cap("faces", cfg.decimate.faces, settings.max_faces)
    _cap("texture_size", cfg.bake.texture_size, settings.max_texture_size)
    return {"faces": cfg.decimate.faces, "texture_size": cfg.bake.texture_size, "preset": preset}


def normalize_export_options(
    settings: Settings,
    parent: dict[str, Any],
    *,
    faces: int | None = None,
    texture_size: int | None = None,
    preset: str | None = None,
    no_texture: bool = False,
) -> dict[str, Any]:
    """The complete, canonical options of an export job (a generate job's raw finished again).

    What is not given is the parent's (``parent``: the generate job's options); a ``preset``
    (:data:`~meshforge.config.PRESETS`) fills in what is not given explicitly, as for optimize. A texture
    size or a preset asked for bakes textures even when the parent had ``no_texture`` (as ``meshforge
    export`` does). The ranges and the server's limits are the generate options' ones
    (:meth:`~meshforge.config.PipelineConfig.with_options`, ``settings.max_faces``/``max_texture_size``).

    Returns:
        ``{"faces", "texture_size" (None without textures), "textures", "preset"}``.

    Raises:
        InputError: unknown preset, or a value out of range or above the server's limits.
    """
    base = PipelineConfig().with_options(
        faces=parent.get("faces"), texture_size=parent.get("texture_size"), textures=bool(parent.get("textures", True))
    )
    textures = False if no_texture else (True if texture_size or preset else None)
    cfg = base.with_options(preset=preset, faces=faces, texture_size=texture_size, textures=textures)
    _cap("faces", cfg.decimate.faces, settings.max_faces)
    if cfg.bake.textures:
        _cap("texture_size", cfg.bake.texture_size, settings.max_texture_size)
    return {
        "faces": cfg.decimate.faces,
        "texture_size": cfg.bake.texture_size if cfg.bake.textures else None,
        "textures": cfg.bake.textures,
        "preset": preset,
    }


def _cap(name: str, value: int, limit: int) -> None:
    if value > limit:
        raise InputError(f"{name} must be at most {limit} on this server, got {value}")


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


_NOTES: dict[str | None, str | None] = {}


def _auto_note(weights: str | None) -> str | None:
    """Why ``auto`` chose the backend it chose (memoised per process)."""
    if weights not in _NOTES:
        _NOTES[weights] = resolve_name("auto", weights)[1]
    return _NOTES[weights]


def fingerprint(kind: str, input_sha256: str, options: dict[str, Any], settings: Settings) -> str:
    """The cache key: same input bytes, options, backend, weights and meshforge version → same key."""
    opts = {k: v for k, v in options.items() if k not in ("backend_requested", "preset")}
    backend = options.get("backend")
    doc = {
        "v": 1,
        "kind": kind,
        "input": input_sha256,
        "options": opts,
        "backend": backend,
        "weights": backend_identity(str(backend), settings) if backend else None,
        "meshforge": __version__,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def request_hash(kind: str, input_sha256: str, options: dict[str, Any]) -> str:
    """Identity of a request for Idempotency-Key matching (the options as normalised, backend as asked)."""
    doc = {"kind": kind, "input": input_sha256, "options": options}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def degrade(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """Reduced settings for the retry after running out of memory: half the grid resolution and half the
    texture size (generate), half the texture size (optimize), never below the allowed minimum of 16."""
    out = dict(options)
    if kind == "generate":
        out["resolution"] = max(16, int(out["resolution"]) // 2)
    if out.get("texture_size"):
        out["texture_size"] = max(16, int(out["texture_size"]) // 2)
    return out
