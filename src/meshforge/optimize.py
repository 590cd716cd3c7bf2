"""The dense mesh → game-ready asset job (``meshforge optimize``).

::

    file ─load_mesh─▶ SourceScene ─flatten─▶ Mesh ─clean─▶ Mesh ─decimate─▶ Mesh ─unwrap─▶ Mesh(+uv)
    (Mesh(+uv), SurfaceField(SourceScene)) ─bake─▶ Textures ─▶ Asset

It enters the generate pipeline at ``clean``, with a :class:`~meshforge.fields.surface.SurfaceField` made
from the source itself, so the same bake code serves both jobs: every texel of the low-poly atlas is
projected onto the dense source along the low-poly normal and takes the source's base colour (texture ×
factor × vertex colour), metallic, roughness, shading normal (with the source's own normal maps) and
occlusion there. Multi-part, multi-material scenes come out as one mesh with one material.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _profiling
from ._version import __version__
from .config import BakeConfig, CleanConfig, DecimateConfig, UnwrapConfig
from .errors import InputError
from .eval.metrics import orientation
from .fields.surface import SurfaceField
from .io.meshes import Z_UP_TO_Y_UP, SourceScene, load_mesh
from .mesh.bake import bake, baked_metallic_factor
from .mesh.clean import clean
from .mesh.decimate import budget_shortfall, decimate
from .mesh.normals import vertex_normals
from .mesh.topology import topology
from .mesh.uv import unwrap
from .pipeline import ProgressCallback
from .types import Asset, Material, Mesh, Report, Textures

#: named budgets: faces of the low-poly mesh and side of its textures
PRESETS: dict[str, dict[str, int]] = {
    "mobile": {"faces": 5_000, "texture_size": 512},
    "prop": {"faces": 20_000, "texture_size": 1024},
    "hero": {"faces": 100_000, "texture_size": 2048},
}

#: accepted source up axes (see :class:`OptimizeConfig`)
UP_AXES: tuple[str, ...] = ("y", "z")

STAGES: tuple[str, ...] = ("load", "flatten", "clean", "decimate", "unwrap", "bake")

#: warn when more than this fraction of the low-poly area faces away from the source
#: (:func:`~meshforge.eval.metrics.orientation`). Decimation keeps every face's winding; what still faces
#: away are folds where collapses squeezed a thin part (FlightHelmet at 5k–20k faces: 0.3 %).
FACING_AWAY_WARNING = 0.01


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
    max_bytes: int = 512 * 1024 * 1024
    up_axis: str = "y"

    def with_options(
        self,
        *,
        preset: str | None = None,
        faces: int | None = None,
        texture_size: int | None = None,
        up_axis: str | None = None,
    ) -> OptimizeConfig:
        """A copy with a preset applied, then explicit ``faces``/``texture_size`` (and ``up_axis``) on top.

        Raises:
            InputError: unknown preset or out-of-range values.
        """
        cfg = self
        if preset is not None:
            if preset not in PRESETS:
                raise InputError(f"unknown preset {preset!r} (choices: {', '.join(PRESETS)})")
            faces = faces if faces is not None else PRESETS[preset]["faces"]
            texture_size = texture_size if texture_size is not None else PRESETS[preset]["texture_size"]
        if faces is not None:
            if faces < 4:
                raise InputError(f"faces must be at least 4, got {faces}")
            cfg = dataclasses.replace(cfg, decimate=dataclasses.replace(cfg.decimate, faces=faces))
        if texture_size is not None:
            if not 16 <= texture_size <= 8192:
                raise InputError(f"texture size must be in [16, 8192], got {texture_size}")
            cfg = dataclasses.replace(
                cfg,
                unwrap=dataclasses.replace(cfg.unwrap, resolution=texture_size),
                bake=dataclasses.replace(cfg.bake, texture_size=texture_size),
            )
        if up_axis is not None:
            if up_axis not in UP_AXES:
                raise InputError(f"up axis must be {' or '.join(UP_AXES)}, got {up_axis!r}")
            cfg = dataclasses.replace(cfg, up_axis=up_axis)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class OptimizeResult:
    """What :func:`optimize` returns: the asset, its report, and the source and field it was baked from."""

    asset: Asset
    report: Report
    source: SourceScene
    field: SurfaceField


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


def _material(scene: SourceScene, name: str, textures: Textures) -> Material:
    """One material standing for all of the source's: the baked textures carry the values.

    The roughness factor is 1, the metallic factor :func:`~meshforge.mesh.bake.baked_metallic_factor`.
    """
    modes = {p.material.alpha_mode for p in scene.parts}
    alpha_mode = "BLEND" if "BLEND" in modes else ("MASK" if "MASK" in modes else "OPAQUE")
    cutoff = min((p.material.alpha_cutoff for p in scene.parts if p.material.alpha_mode == "MASK"), default=0.5)
    double_sided = any(p.material.double_sided for p in scene.parts)
    return Material(
        name=f"{name}_material",
        metallic_factor=baked_metallic_factor(textures),
        roughness_factor=1.0,
        alpha_mode=alpha_mode,
        alpha_cutoff=cutoff,
        double_sided=double_sided,
    )


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
    step(2)
    with _profiling.stage(report, "clean") as c:
        cleaned, counts = clean(dense, cfg.clean)
        c.update(faces_in=dense.n_faces, faces=cleaned.n_faces, vertices=cleaned.n_vertices, **counts)
    step(3)
    with _profiling.stage(report, "decimate") as c:
        low, dcounts = decimate(cleaned, cfg.decimate)
        # the one orientation check (inspect --reference reports the same): winding kept from the source
        winding = orientation(low, scene)
        c.update(faces_in=cleaned.n_faces, budget=cfg.decimate.faces, **{**dcounts, **winding})
        shortfall = budget_shortfall(cfg.decimate.faces, low)
        if shortfall:
            report.warn(shortfall)
        source_inconsistent = topology(cleaned.vertices, cleaned.faces).inconsistent_edges
        if winding["facing_away_area"] > FACING_AWAY_WARNING or winding["inconsistent_edges"] > source_inconsistent:
            report.warn(
                f"{winding['facing_away_faces']:,} faces ({100 * winding['facing_away_area']:.2f} % of the area) "
                f"face away from the source and {winding['inconsistent_edges']:,} edges are wound "
                f"inconsistently (the source has {source_inconsistent:,}); thin parts folded: try a larger "
                "--faces budget"
            )
    step(4)
    with _profiling.stage(report, "unwrap") as c:
        low = low.replace(normals=vertex_normals(low.vertices, low.faces))
        mesh, ucounts = unwrap(low, cfg.unwrap)
        c.update(vertices=mesh.n_vertices, faces=mesh.n_faces, **ucounts)
        if "fallback" in ucounts:
            report.warn(f"UV unwrap fell back to the per-face atlas: {ucounts['fallback']}")
    step(5)
    with _profiling.stage(report, "bake") as c:
        textures, bcounts = bake(mesh, field_, cfg.bake)
        c.update(**bcounts)
    report.textures = textures.sizes()
    report.info["mesh"] = topology(mesh.vertices, mesh.faces, weld_positions=True).to_dict()
    extras = {
        "meshforge": {
            "version": __version__,
            "job": "optimize",
            "input_sha256": scene.sha256,
            "input_name": scene.name,
            "parameters": {"faces": cfg.decimate.faces, "texture_size": cfg.bake.texture_size},
        }
    }
    material = _material(scene, scene.name, textures)
    asset = Asset(mesh=mesh, material=material, textures=textures, name=scene.name, extras=extras)
    return OptimizeResult(asset=asset, report=report, source=scene, field=field_)
