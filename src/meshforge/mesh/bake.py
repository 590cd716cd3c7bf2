"""Texture baking: sample a field over a mesh's UV atlas into PBR texture maps.

The atlas is rasterised in UV space (vectorised, :mod:`meshforge.mesh.raster`); each covered texel's
barycentric weights give its 3D position on the low-poly surface, where the field is queried for base
colour, metallic and roughness. Texels no triangle covers (gutters between charts and the unused atlas)
are then filled with the value of the nearest covered texel (exact Euclidean distance transform,
``scipy.ndimage.distance_transform_edt``), so bilinear filtering and every mip level sample chart colours,
never background — the "edge padding"/dilation step of every texture baker.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ..config import BakeConfig
from ..errors import StageError
from ..fields.base import Field
from ..types import Mesh, Textures
from .raster import Raster, rasterize


def rasterize_atlas(mesh: Mesh, size: int) -> Raster:
    """Rasterise a mesh's UV triangles into a ``size × size`` atlas (texel centres at (i + 0.5)/size)."""
    if mesh.uv is None:
        raise StageError("baking needs a UV-unwrapped mesh")
    tri = mesh.uv[mesh.faces].astype(np.float64) * size
    return rasterize(tri, size, size)


def fill_gutters(values: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Give every uncovered texel the value of the nearest covered texel.

    Args:
        values: ``[H, W, C]`` texel values.
        covered: ``[H, W]`` bool, texels holding baked data.

    Returns:
        ``[H, W, C]`` array of the same dtype, equal to ``values`` where covered.
    """
    if covered.all() or not covered.any():
        return values
    _, (ri, ci) = ndimage.distance_transform_edt(~covered, return_indices=True)
    return values[ri, ci]


def surface_points(mesh: Mesh, raster: Raster) -> tuple[np.ndarray, np.ndarray]:
    """3D positions of covered texels.

    Returns:
        ``(points [N, 3] float32, flat texel indices [N] int64)``.
    """
    flat = np.flatnonzero(raster.face.ravel() >= 0)
    face = raster.face.ravel()[flat]
    bary = raster.bary.reshape(-1, 3)[flat]
    tri = mesh.vertices[mesh.faces[face]]
    points = np.einsum("nk,nkd->nd", bary, tri).astype(np.float32)
    return points, flat


def bake(mesh: Mesh, field: Field, cfg: BakeConfig, *, chunk: int = 1 << 20) -> tuple[Textures, dict[str, Any]]:
    """Bake base colour and metallic-roughness maps from a field onto a UV-unwrapped mesh.

    Args:
        mesh: mesh with ``uv`` (glTF convention, v down) in the canonical frame.
        field: the field to sample (its ``colour`` and ``material``).
        cfg: ``texture_size`` (texels per side).
        chunk: field queries per batch.

    Returns:
        ``(textures, counts)``: ``base_color`` ``[S, S, 4]`` uint8 sRGB (alpha 255),
        ``metallic_roughness`` ``[S, S, 3]`` uint8 (R 0, G roughness, B metallic), and counts with the
        number of covered texels.

    Raises:
        StageError: the mesh has no UVs or covers no texel.
    """
    size = int(cfg.texture_size)
    raster = rasterize_atlas(mesh, size)
    points, flat = surface_points(mesh, raster)
    if points.size == 0:
        raise StageError("the UV atlas covers no texel")
    colour = np.empty((len(points), 3), dtype=np.float32)
    metallic = np.empty(len(points), dtype=np.float32)
    roughness = np.empty(len(points), dtype=np.float32)
    for s in range(0, len(points), chunk):
        p = points[s : s + chunk]
        colour[s : s + chunk] = field.colour(p)
        metallic[s : s + chunk], roughness[s : s + chunk] = field.material(p)
    base = np.zeros((size * size, 4), dtype=np.uint8)
    base[flat, :3] = np.clip(np.rint(colour * 255.0), 0, 255).astype(np.uint8)
    base[:, 3] = 255
    mr = np.zeros((size * size, 3), dtype=np.uint8)
    mr[flat, 1] = np.clip(np.rint(roughness * 255.0), 0, 255).astype(np.uint8)
    mr[flat, 2] = np.clip(np.rint(metallic * 255.0), 0, 255).astype(np.uint8)
    covered = raster.covered
    stacked = np.concatenate([base.reshape(size, size, 4), mr.reshape(size, size, 3)], axis=2)
    stacked = fill_gutters(stacked, covered)
    textures = Textures(
        base_color=np.ascontiguousarray(stacked[..., :4]),
        metallic_roughness=np.ascontiguousarray(stacked[..., 4:]),
    )
    return textures, {"texels_baked": int(len(flat)), "coverage": round(len(flat) / size**2, 4)}


def bake_vertex_colours(mesh: Mesh, field: Field) -> tuple[Mesh, float]:
    """Sample the field's colour at every vertex (the fast, texture-less mode).

    Returns:
        ``(mesh with [V, 4] sRGB colours, mean roughness over the vertices)``.
    """
    colour = field.colour(mesh.vertices)
    _, roughness = field.material(mesh.vertices)
    rgba = np.concatenate([colour, np.ones((mesh.n_vertices, 1), dtype=np.float32)], axis=1)
    return mesh.replace(colors=rgba), float(np.mean(roughness)) if len(roughness) else 1.0
