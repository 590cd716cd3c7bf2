"""Texture baking: sample a field over a mesh's UV atlas into PBR texture maps.

The atlas is rasterised in UV space (vectorised, :mod:`meshforge.geometry.raster`); each covered texel's
barycentric weights give its 3D position on the low-poly surface, where the field is queried for base
colour, metallic and roughness. Texels no triangle covers (gutters between charts and the unused atlas)
are then filled with the value of the nearest covered texel (exact Euclidean distance transform,
``scipy.ndimage.distance_transform_edt``), so bilinear filtering and every mip level sample chart colours,
never background — the "edge padding"/dilation step of every texture baker.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import BakeConfig
from ..errors import StageError
from ..fields.base import Field, SurfaceAttributes, has_real_alpha, sample_pbr
from ..geometry.raster import Raster, nearest_covered, rasterize
from ..types import Mesh, Textures


def baked_metallic_factor(textures: Textures) -> float:
    """The ``metallicFactor`` to write beside baked maps, whose texels carry the values (glTF 2.0 §3.9.2:
    metallic = factor × B channel): 1, or 0 when no texel is metallic — the same product, and what a
    reader that ignores the map (an OBJ importer reading only ``Pm``) sees."""
    return 1.0 if int(textures.metallic_roughness[..., 2].max(initial=0)) > 0 else 0.0


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
    _, (ri, ci) = nearest_covered(covered)
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


def _texel_normals(mesh: Mesh, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """``[N, 3]`` float64 unit low-poly normals at texels: the face's vertex normals interpolated."""
    assert mesh.normals is not None
    return _unit(np.einsum("nk,nkd->nd", bary, mesh.normals[mesh.faces[face]].astype(np.float64)))


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(x, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-20)


def encode_tangent_normals(
    mesh: Mesh,
    face: np.ndarray,
    bary: np.ndarray,
    world_normals: np.ndarray,
    surface_normals: np.ndarray | None = None,
) -> np.ndarray:
    """Express world-space normals in the low-poly mesh's tangent frames (glTF normal-map encoding).

    The frame at a texel interpolates the vertex normals and the tangents of
    :func:`meshforge.geometry.tangents.asset_tangents` (the ones the GLB writer stores as ``TANGENT``),
    re-orthogonalised (Gram-Schmidt); bitangent = cross(normal, tangent)·w (glTF 2.0 §3.7.2.1).

    Args:
        mesh: low-poly mesh with ``normals`` and ``uv``.
        face: ``[N]`` low-poly face of each texel; bary: ``[N, 3]`` barycentrics there.
        world_normals: ``[N, 3]`` unit normals to encode.
        surface_normals: ``[N, 3]`` float64 unit low-poly normals at the texels (the interpolated vertex normals,
            normalised), when the caller has them already; computed here otherwise.

    Returns:
        ``[N, 3]`` float32 tangent-space unit normals (x along +u, y up the texture, z out of the surface).
    """
    from ..geometry.tangents import asset_tangents

    assert mesh.normals is not None and mesh.uv is not None
    tangents = asset_tangents(mesh.vertices, mesh.normals, mesh.uv, mesh.faces)
    idx = mesh.faces[face]
    n = surface_normals if surface_normals is not None else _texel_normals(mesh, face, bary)
    t = np.einsum("nk,nkd->nd", bary, tangents[idx, :3].astype(np.float64))
    t = _unit(t - n * np.einsum("ij,ij->i", t, n)[:, None])
    w = np.where(np.einsum("nk,nk->n", bary, tangents[idx, 3]) < 0, -1.0, 1.0)
    b = np.cross(n, t) * w[:, None]
    m = _unit(np.asarray(world_normals, dtype=np.float64))
    ts = np.stack([np.einsum("ij,ij->i", m, t), np.einsum("ij,ij->i", m, b), np.einsum("ij,ij->i", m, n)], 1)
    # a dense normal facing away from the low-poly surface cannot be encoded: clamp to the hemisphere
    ts[:, 2] = np.maximum(ts[:, 2], 0.05)
    return _unit(ts).astype(np.float32)


def bake(mesh: Mesh, field: Field, cfg: BakeConfig, *, chunk: int = 1 << 20) -> tuple[Textures, dict[str, Any]]:
    """Bake PBR maps from a field onto a UV-unwrapped mesh.

    Two kinds of field are accepted. A plain :class:`Field` is sampled at each texel's point on the
    low-poly surface (``color``, ``material``, and ``alpha`` when the field's opacity is real:
    :func:`~meshforge.fields.base.has_real_alpha`). A field with ``bake_attributes(points, normals, faces)``
    (:class:`meshforge.fields.surface.SurfaceField`: a dense surface) first projects the texel onto the
    dense surface along the low-poly normal and returns that surface's attributes, including its shading
    normal — which is then written as a tangent-space normal map (``cfg.normal_map``) — and occlusion
    when the source has one.

    Args:
        mesh: mesh with ``uv`` (glTF convention, v down) and ``normals`` in the canonical frame.
        field: the field to sample.
        cfg: ``texture_size`` (texels per side), ``normal_map``.
        chunk: field queries per batch.

    Returns:
        ``(textures, counts)``: ``base_color`` ``[S, S, 4]`` uint8 sRGB (alpha from the field, else 255),
        ``metallic_roughness`` ``[S, S, 3]`` uint8 (R 0, G roughness, B metallic), optional ``normal``
        ``[S, S, 3]`` uint8 and ``occlusion`` ``[S, S]`` uint8; counts hold the covered texels.

    Raises:
        StageError: the mesh has no UVs or covers no texel.
    """
    size = int(cfg.texture_size)
    raster = rasterize_atlas(mesh, size)
    points, flat = surface_points(mesh, raster)
    if points.size == 0:
        raise StageError("the UV atlas covers no texel")
    n_tex = len(points)
    face = raster.face.ravel()[flat]
    bary = raster.bary.reshape(-1, 3)[flat].astype(np.float64)
    color = np.ones((n_tex, 4), dtype=np.float32)
    metallic = np.empty(n_tex, dtype=np.float32)
    roughness = np.empty(n_tex, dtype=np.float32)
    world_normal: np.ndarray | None = None
    low_normal: np.ndarray | None = None  # the texels' low-poly normals, kept for the tangent frames
    occlusion: np.ndarray | None = None
    surface = field.bake_attributes if isinstance(field, SurfaceAttributes) else None
    has_alpha = has_real_alpha(field)
    for s in range(0, n_tex, chunk):
        sl = slice(s, s + chunk)
        p = points[sl]
        if callable(surface):
            if mesh.normals is None:
                raise StageError("baking from a dense surface needs vertex normals on the low-poly mesh")
            nrm = _texel_normals(mesh, face[sl], bary[sl])
            if low_normal is None:
                low_normal = np.empty((n_tex, 3), dtype=np.float64)
            low_normal[sl] = nrm
            attrs = surface(p, nrm, face[sl])
            bc = attrs["base_color"]
            color[sl, : bc.shape[1]] = bc
            metallic[sl], roughness[sl] = attrs["metallic"], attrs["roughness"]
            if "normal" in attrs and cfg.normal_map:
                if world_normal is None:
                    world_normal = np.zeros((n_tex, 3), dtype=np.float32)
                world_normal[sl] = attrs["normal"]
            if "occlusion" in attrs:
                if occlusion is None:
                    occlusion = np.ones(n_tex, dtype=np.float32)
                occlusion[sl] = attrs["occlusion"]
        else:  # one lookup for every channel where the field offers it (sample_pbr)
            color[sl, :3], metallic[sl], roughness[sl], opacity = sample_pbr(field, p, has_alpha)
            if opacity is not None:
                color[sl, 3] = opacity
    channels = [_to_u8(color), np.zeros((n_tex, 1), np.uint8), _to_u8(roughness)[:, None], _to_u8(metallic)[:, None]]
    if world_normal is not None:
        ts = encode_tangent_normals(mesh, face, bary, world_normal, low_normal)
        channels.append(_to_u8(ts * 0.5 + 0.5))
    if occlusion is not None:
        channels.append(_to_u8(occlusion)[:, None])
    packed = np.concatenate(channels, axis=1)
    image = np.zeros((size * size, packed.shape[1]), dtype=np.uint8)
    if world_normal is not None:
        image[:, 7:10] = (128, 128, 255)  # flat normal wherever nothing is written
    image[flat] = packed
    image = fill_gutters(image.reshape(size, size, -1), raster.covered)
    textures = Textures(
        base_color=np.ascontiguousarray(image[..., :4]),
        metallic_roughness=np.ascontiguousarray(image[..., 4:7]),
        normal=np.ascontiguousarray(image[..., 7:10]) if world_normal is not None else None,
        occlusion=np.ascontiguousarray(image[..., -1]) if occlusion is not None else None,
    )
    return textures, {"texels_baked": int(n_tex), "coverage": round(n_tex / size**2, 4)}


def bake_vertex_colors(mesh: Mesh, field: Field) -> tuple[Mesh, float]:
    """Sample the field's colour at every vertex (the fast, texture-less mode).

    Returns:
        ``(mesh with [V, 4] sRGB colours, mean roughness over the vertices)``.
    """
    color, _, roughness, alpha = sample_pbr(field, mesh.vertices, has_real_alpha(field))
    if alpha is None:
        alpha = np.ones(mesh.n_vertices, dtype=np.float32)
    rgba = np.concatenate([color, alpha[:, None]], axis=1)
    return mesh.replace(colors=rgba), float(np.mean(roughness)) if len(roughness) else 1.0
