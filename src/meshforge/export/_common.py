"""Helpers shared by the exporters: input checks, sampling, normals."""

from __future__ import annotations

import math
import re

import numpy as np

from meshforge.errors import InputError
from meshforge.geometry.color import linear_to_srgb, srgb_to_linear
from meshforge.geometry.normals import unit_normals as unit_normals  # (the exporters import it from here)
from meshforge.geometry.texture import CLAMP_TO_EDGE, sample_texture
from meshforge.gltf import ALPHA_MODES
from meshforge.types import Asset, Material, Textures


def safe_stem(name: str, default: str = "asset") -> str:
    """A file-name-safe stem from an asset name: letters, digits, ``-``, ``_`` and ``.``; others become ``_``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip()).strip("._")
    return stem or default


def check_material(material: Material) -> None:
    """Raise :class:`InputError` when a material factor is outside the range glTF 2.0 §5.19–5.22 allows."""
    bcf = tuple(material.base_color_factor)
    if len(bcf) != 4 or not all(math.isfinite(float(x)) and 0.0 <= float(x) <= 1.0 for x in bcf):
        raise InputError(f"material.base_color_factor must be 4 values in [0, 1], got {bcf}")
    for name in ("metallic_factor", "roughness_factor"):
        value = float(getattr(material, name))
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise InputError(f"material.{name} must be in [0, 1], got {value}")
    if material.alpha_mode not in ALPHA_MODES:
        raise InputError(f"material.alpha_mode must be one of {', '.join(ALPHA_MODES)}, got {material.alpha_mode!r}")
    cutoff = float(material.alpha_cutoff)
    if not (math.isfinite(cutoff) and cutoff >= 0.0):
        raise InputError(f"material.alpha_cutoff must be a finite value >= 0, got {cutoff}")


def _check_texture(name: str, arr: np.ndarray | None, channels: tuple[int, ...]) -> None:
    if arr is None:
        return
    ok_shape = (arr.ndim == 2 and 1 in channels) or (arr.ndim == 3 and arr.shape[2] in channels)
    if arr.dtype != np.uint8 or not ok_shape or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"textures.{name} has shape {arr.shape} {arr.dtype}; expected uint8 with {channels} channels")


def check_textures(textures: Textures) -> None:
    """Raise :class:`InputError` when a texture map has the wrong dtype or channel count."""
    _check_texture("base_color", textures.base_color, (4,))
    _check_texture("metallic_roughness", textures.metallic_roughness, (3,))
    _check_texture("normal", textures.normal, (3,))
    _check_texture("occlusion", textures.occlusion, (1,))


def check_asset(asset: Asset) -> None:
    """Check what every exporter relies on, raising :class:`InputError` with the reason.

    Checks: at least one vertex and one face; finite positions; face indices in ``[0, V)``; finite
    normals / UVs / colours; textures need UVs; material factors in range; texture dtypes/shapes.
    """
    mesh = asset.mesh
    if mesh.n_vertices == 0 or mesh.n_faces == 0:
        raise InputError(
            f"asset {asset.name!r}: cannot export an empty mesh ({mesh.n_vertices} vertices, {mesh.n_faces} faces)"
        )
    if not np.all(np.isfinite(mesh.vertices)):
        raise InputError(f"asset {asset.name!r}: mesh.vertices contain NaN or infinite values")
    fmin, fmax = int(mesh.faces.min()), int(mesh.faces.max())
    if fmin < 0 or fmax >= mesh.n_vertices:
        raise InputError(
            f"asset {asset.name!r}: face indices must be in [0, {mesh.n_vertices}), got range [{fmin}, {fmax}]"
        )
    for name in ("normals", "uv", "colors"):
        arr = getattr(mesh, name)
        if arr is not None and not np.all(np.isfinite(arr)):
            raise InputError(f"asset {asset.name!r}: mesh.{name} contain NaN or infinite values")
    if asset.textures is not None:
        if mesh.uv is None:
            raise InputError(f"asset {asset.name!r}: has textures but the mesh has no UVs")
        check_textures(asset.textures)
    check_material(asset.material)


def vertex_colors_srgb(asset: Asset) -> np.ndarray:
    """Per-vertex sRGB-encoded RGBA colours for formats that only carry vertex colours (PLY).

    The source is, in order: the base-colour texture sampled bilinearly at each vertex's UV; the mesh's
    vertex colours; or a uniform white. The material's ``base_color_factor`` (linear, glTF 2.0 §3.9.2)
    then multiplies the colour in linear space (alpha directly).

    Returns:
        ``[V, 4]`` uint8 sRGB RGBA (straight alpha).
    """
    mesh = asset.mesh
    if asset.textures is not None and mesh.uv is not None:
        rgba = sample_texture(asset.textures.base_color, mesh.uv, (CLAMP_TO_EDGE, CLAMP_TO_EDGE)) / 255.0
    elif mesh.colors is not None:
        rgba = np.clip(mesh.colors.astype(np.float64), 0.0, 1.0)
    else:
        rgba = np.ones((mesh.n_vertices, 4), dtype=np.float64)
    factor = np.asarray(asset.material.base_color_factor, dtype=np.float64)
    if np.any(factor != 1.0):
        rgb = linear_to_srgb(srgb_to_linear(rgba[:, :3]) * factor[:3]).astype(np.float64)
        rgba = np.concatenate([rgb, rgba[:, 3:4] * factor[3]], axis=1)
    return np.asarray(np.clip(np.rint(rgba * 255.0), 0, 255).astype(np.uint8))
