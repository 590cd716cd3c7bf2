"""The dense mesh → game-ready asset job (``meshforge optimize``).

::

    file ─load_mesh─▶ SourceScene ─flatten─▶ Raw(Mesh, SurfaceField(SourceScene)) ─finish─▶ Asset

It enters the generate pipeline at :func:`~meshforge.pipeline.finish` (clean → decimate → unwrap → bake),
with a :class:`~meshforge.fields.surface.SurfaceField` made from the source itself as the attribute source,
so the same bake code serves both jobs: every texel of the low-poly atlas is projected onto the dense source
along the low-poly normal and takes the source's base colour (texture × factor × vertex colour), metallic,
roughness, shading normal (with the source's own normal maps) and occlusion there. Multi-part,
multi-material scenes come out as one mesh with one material.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _profiling
from .config import (
    OPTIONS,
    BakeConfig,
    CleanConfig,
    DecimateConfig,
    FinishingConfig,
    UnwrapConfig,
    from_dict_over,
    preset_budget,
)
from .config import PRESETS as PRESETS  # re-exported: the presets optimize documents
from .errors import InputError
from .fields.surface import SurfaceField
from .io.meshes import Z_UP_TO_Y_UP, load_mesh
from .io.scene import SourceScene
from .pipeline import ProgressCallback, Result, finish
from .raw import Raw
from .types import Material, Mesh, Report

#: accepted source up axes (see :class:`OptimizeConfig`)
UP_AXES: tuple[str, ...] = ("y", "z")

STAGES: tuple[str, ...] = ("load", "flatten", "clean", "decimate", "unwrap", "bake")


@dataclass(frozen=True)
class OptimizeConfig:
    """Configuration of the optimize job; each stage reads its own section.

    ``clean.min_component_fraction`` is 0 by default: small separate parts of a model (rivets, eyes) are
    content, unlike the floating specks of an isosurface; ``clean.orient`` is False: the source's winding
    defines each part's front faces and is kept (decimation preserves it).

    ``up_axis`` is the source's up axis: ``"y"`` (glTF, OBJ and most game assets) leaves it as it is;
    ``"z"`` (many scans, CAD and STL files) rotates it to glTF's +Y up by :data:`~meshforge.io.meshes.Z_UP_TO_Y_UP`,
    (x, y, z) → (x, z, −y), so a Z-up model's front (−Y) faces glTF's front (+Z).
    """

    clean: CleanConfig = field(default_factory=lambda: CleanConfig(min_component_fraction=0.0, orient=False))
    decimate: DecimateConfig = field(default_factory=DecimateConfig)
    unwrap: UnwrapConfig = field(default_factory=UnwrapConfig)
    bake: BakeConfig = field(default_factory=BakeConfig)
    finish: FinishingConfig = field(default_factory=FinishingConfig)
    max_bytes: int = 512 * 1024 * 1024
    up_axis: str = "y"

    def with_options(
        self,
        *,
        preset: str | None = None,
        faces: int | None = None,
        texture_size: int | None = None,
        up_axis: str | None = None,
        finish_engine: str | None = None,
    ) -> OptimizeConfig:
        """A copy with a preset applied, then explicit ``faces``/``texture_size`` (and ``up_axis``,
        ``finish_engine``) on top.

        Raises:
            InputError: unknown preset or out-of-range values.
        """
        cfg = self
        faces, texture_size = preset_budget(preset, faces, texture_size)
        for name, value in (("faces", faces), ("texture_size", texture_size), ("finish_engine", finish_engine)):
            if value is not None:
                cfg = OPTIONS[name].set(cfg, value)
        if up_axis is not None:
            cfg = dataclasses.replace(cfg, up_axis=up_axis)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check the options optimize takes (``faces``, ``texture_size``, ``finish_engine``: the same ranges,
        choices and messages as generate's, :data:`~meshforge.config.OPTIONS`) and the up axis; raise
        :class:`InputError` naming the first bad one."""
        for name in ("faces", "texture_size", "finish_engine"):
            problem = OPTIONS[name].problem(OPTIONS[name].get(self))
            if problem is not None:
                raise InputError(problem)
        if self.up_axis not in UP_AXES:
            raise InputError(f"up axis must be {' or '.join(UP_AXES)}, got {self.up_axis!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OptimizeConfig:
        """Build from a (possibly partial) dict, e.g. :meth:`to_dict`'s; missing keys keep the defaults of
        :class:`OptimizeConfig` (whose ``clean`` section differs from generate's).

        Raises:
            InputError: an unknown key, a wrongly-typed or out-of-range value (the message names it).
        """
        cfg = from_dict_over(cls(), data)
        cfg.validate()
        return cfg


@dataclass
class OptimizeResult(Result):
    """What :func:`optimize` returns: a :class:`~meshforge.pipeline.Result` (asset, report, and the raw it
    was finished from, whose ``attributes`` is the source's :class:`SurfaceField`) plus the loaded source."""

    source: SourceScene


def flatten(scene: SourceScene) -> Mesh:
    """Concatenate a scene's parts (already in world space) into one position-only mesh.

    Returns:
        A :class:`Mesh` with ``[V, 3]`` vertices and ``[F, 3]`` faces, parts in scene order.
    """
    verts, faces, offset = [], [], 0
    for part in scene.parts:
        verts.append(part.mesh.vertices)
        faces.append(part.mesh.faces.astype(np.int64) + offset)
        offset += part.mesh.n_vertices
    return Mesh(vertices=np.concatenate(verts), faces=np.concatenate(faces))


def _material(scene: SourceScene, name: str) -> Material:
    """The material template standing for all of the source's: the baked textures carry the values, so only
    the alpha mode (the most transparent part's), cutoff and double-sidedness come from the source;
    :func:`~meshforge.pipeline.finish` sets the factors."""
    modes = {p.material.alpha_mode for p in scene.parts}
    alpha_mode = "BLEND" if "BLEND" in modes else ("MASK" if "MASK" in modes else "OPAQUE")
    cutoff = min((p.material.alpha_cutoff for p in scene.parts if p.material.alpha_mode == "MASK"), default=0.5)
    double_sided = any(p.material.double_sided for p in scene.parts)
    return Material(name=f"{name}_material", alpha_mode=alpha_mode, alpha_cutoff=cutoff, double_sided=double_sided)


def optimize(
    source: SourceScene | str | os.PathLike[str] | bytes,
    config: OptimizeConfig | None = None,
    *,
    on_progress: ProgressCallback | None = None,
) -> OptimizeResult:
    """Turn a dense mesh (any number of parts and materials) into one low-poly mesh with baked maps.

    Args:
        source: a loaded :class:`SourceScene`, or a GLB/glTF/OBJ/PLY/STL path or its bytes.
        config: budgets and stage options (:class:`OptimizeConfig`, see :data:`PRESETS`).
        on_progress: called as ``on_progress(stage, index, total)`` before each stage.

    The source is flattened into a :class:`~meshforge.raw.Raw` (its dense surface, and a
    :class:`SurfaceField` over its parts as the attribute source) and finished by
    :func:`~meshforge.pipeline.finish`, the tail ``generate`` uses too.

    Returns:
        An :class:`OptimizeResult`; ``result.asset`` has at most ``config.decimate.faces`` faces (or the
        source's count when smaller), UVs, normals and baseColor, metallicRoughness and normal maps
        (occlusion too when the source has it).

    Raises:
        InputError: the file cannot be used (the message names it and says why).
        StageError: a stage could not produce a valid result.
    """
    cfg = config or OptimizeConfig()
    report = Report()
    report.config = cfg.to_dict()

    def step(i: int) -> None:
        if on_progress is not None:
            on_progress(STAGES[i], i, len(STAGES))

    step(0)
    with _profiling.stage(report, "load") as c:
        scene = source if isinstance(source, SourceScene) else load_mesh(source, max_bytes=cfg.max_bytes)
        if cfg.up_axis == "z":
            scene = scene.transformed(Z_UP_TO_Y_UP)
        c.update(parts=len(scene.parts), faces=scene.n_faces(), vertices=scene.n_vertices())
    for warning in scene.warnings:
        report.warn(warning)
    report.info["input"] = {"name": scene.name, "sha256": scene.sha256, "format": scene.meta.get("format")}
    step(1)
    with _profiling.stage(report, "flatten") as c:
        dense = flatten(scene)
        field_ = SurfaceField(scene.parts, cage=cfg.bake.cage_fraction * max(scene.diagonal(), 1e-9))
        c.update(faces=dense.n_faces, vertices=dense.n_vertices)
    raw = Raw(
        surface=dense,
        attributes=field_,
        provenance={"job": "optimize", "input_sha256": scene.sha256, "input_name": scene.name},
        name=scene.name,
        material=_material(scene, scene.name),
    )

    def tail(stage: str, index: int, total: int) -> None:
        if on_progress is not None:
            on_progress(stage, STAGES.index(stage), len(STAGES))

    result = finish(raw, cfg, on_progress=tail, report=report)
    return OptimizeResult(asset=result.asset, report=result.report, raw=raw, source=scene)
