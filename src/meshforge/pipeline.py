"""The image → asset pipeline: a straight line of stage calls.

::

    Image ─prepare─▶ Image ─backend─▶ Field ─extract─▶ Mesh ─clean─▶ Mesh ─decimate─▶ Mesh
    ─unwrap─▶ Mesh(+uv) ─bake(Field)─▶ Textures ─▶ Asset

:func:`run` never loads a backend: it is built once (:func:`meshforge.backends.load_backend`) and passed
in. Writing files is the caller's job (:func:`meshforge.export.export` returns bytes).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import _profiling
from ._version import __version__
from .backends import Backend, load_backend, resolve_name
from .config import PipelineConfig
from .fields.base import Field
from .fields.isosurface import extract
from .fields.surface import FieldSurfacePart, SurfaceField
from .io.images import load_image
from .mesh.bake import bake, bake_vertex_colours, baked_metallic_factor
from .mesh.clean import clean
from .mesh.decimate import budget_shortfall, decimate
from .mesh.normals import vertex_normals
from .mesh.topology import topology
from .mesh.uv import unwrap
from .preprocess import prepare
from .preprocess.background import cutout_warning
from .types import Asset, Image, Material, Report

#: the stages of :func:`run`, in order (for progress reporting)
STAGES: tuple[str, ...] = ("prepare", "reconstruct", "extract", "clean", "decimate", "unwrap", "bake")

ProgressCallback = Callable[[str, int, int], None]


@dataclass
class Result:
    """What :func:`run` returns.

    Attributes:
        asset: the game-ready asset (export it with :func:`meshforge.export.export`).
        report: per-stage times, peak memory, counts, warnings and the resolved configuration.
        field: the backend's field, kept so the asset can be re-made with other budgets without running
            the backend again.
        prepared: the prepared input picture (square, alpha = object mask).
    """

    asset: Asset
    report: Report
    field: Field
    prepared: Image


def run(
    image: Image,
    backend: Backend,
    cfg: PipelineConfig | None = None,
    *,
    on_progress: ProgressCallback | None = None,
    report: Report | None = None,
) -> Result:
    """Turn a decoded picture into an asset with an already-built backend.

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
    with _profiling.stage(report, "reconstruct"):
        field = backend(prepared)
    step(2)
    with _profiling.stage(report, "extract") as c:
        dense = extract(field, cfg.extract)
        c.update(resolution=cfg.extract.resolution, vertices=dense.n_vertices, faces=dense.n_faces)
    step(3)
    with _profiling.stage(report, "clean") as c:
        cleaned, clean_counts = clean(dense, cfg.clean)
        c.update(faces_in=dense.n_faces, faces=cleaned.n_faces, vertices=cleaned.n_vertices, **clean_counts)
    step(4)
    with _profiling.stage(report, "decimate") as c:
        low, counts = decimate(cleaned, cfg.decimate)
        c.update(faces_in=cleaned.n_faces, budget=cfg.decimate.faces, **counts)
        shortfall = budget_shortfall(cfg.decimate.faces, low)
        if shortfall:
            report.warn(shortfall)
        if not counts.get("watertight", False):
            report.warn("the decimated mesh is not watertight")
    textures = None
    material = Material(name=f"{image.name}_material", metallic_factor=1.0, roughness_factor=1.0)
    if cfg.bake.textures:
        step(5)
        with _profiling.stage(report, "unwrap") as c:
            mesh, counts = unwrap(low, cfg.unwrap)
            c.update(vertices=mesh.n_vertices, faces=mesh.n_faces, **counts)
            if "fallback" in counts:
                report.warn(f"UV unwrap fell back to the per-face atlas: {counts['fallback']}")
        step(6)
        with _profiling.stage(report, "bake") as c:
            source: Field = field
            if cfg.bake.normal_map:
                # bake through the dense isosurface: colours on the true surface, its detail in a normal map
                part = FieldSurfacePart(cleaned, field)
                diag = float(np.linalg.norm(cleaned.vertices.max(0) - cleaned.vertices.min(0)))
                source = SurfaceField([part], cage=cfg.bake.cage_fraction * diag)
            textures, counts = bake(mesh, source, cfg.bake)
            c.update(**counts)
        report.textures = textures.sizes()
        material = dataclasses.replace(material, metallic_factor=baked_metallic_factor(textures))
    else:
        step(6)
        with _profiling.stage(report, "bake") as c:
            mesh = low.replace(normals=vertex_normals(low.vertices, low.faces))
            mesh, roughness = bake_vertex_colours(mesh, field)
            material = Material(name=f"{image.name}_material", metallic_factor=0.0, roughness_factor=roughness)
            c.update(mode="vertex_colors", vertices=mesh.n_vertices)
    final = topology(mesh.vertices, mesh.faces, weld_positions=True)
    report.info["mesh"] = final.to_dict()
    extras = {
        "meshforge": {
            "version": __version__,
            "backend": info,
            "input_sha256": image.sha256,
            "input_name": image.name,
            "parameters": {
                "resolution": cfg.extract.resolution,
                "faces": cfg.decimate.faces,
                "texture_size": cfg.bake.texture_size if cfg.bake.textures else None,
                "foreground_ratio": cfg.preprocess.foreground_ratio,
                "background": cfg.preprocess.background,
                "seed": cfg.seed,
            },
        }
    }
    asset = Asset(mesh=mesh, material=material, textures=textures, name=image.name, extras=extras)
    return Result(asset=asset, report=report, field=field, prepared=prepared)


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
