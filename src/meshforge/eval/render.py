"""A small software renderer for previews, silhouettes and comparisons (numpy, no GPU, no display).

Triangles are projected with an orthographic or perspective camera and rasterised with a z-buffer by
:func:`meshforge.mesh.raster.rasterize`. Shading modes: ``"unlit"`` (base colour from the texture or the
vertex colours) and ``"lit"`` (base colour × (ambient + Lambert diffuse from a light over the viewer's
shoulder), with interpolated vertex normals).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..mesh.raster import rasterize
from ..types import Asset, Camera, Mesh, Textures

#: (azimuth, elevation) in degrees of the default preview views: front, right, back, left, top, 3/4
DEFAULT_VIEWS: tuple[tuple[float, float], ...] = ((0, 0), (90, 0), (180, 0), (270, 0), (0, 89.9), (35, 25))


def _view_rotation(azimuth: float, elevation: float) -> np.ndarray:
    """World→camera rotation for a camera orbiting the origin (azimuth about +Y from +Z, elevation up).

    In camera space the camera looks down −Z with +Y up, as the canonical input camera does at (0, 0).
    """
    a, e = math.radians(azimuth), math.radians(elevation)
    # Ry(-a) brings the view direction (sin a cos e, sin e, cos a cos e) into the YZ plane, Rx(e) onto +Z
    ry = np.array([[math.cos(a), 0.0, -math.sin(a)], [0.0, 1.0, 0.0], [math.sin(a), 0.0, math.cos(a)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(e), -math.sin(e)], [0.0, math.sin(e), math.cos(e)]])
    return rx @ ry


def project(
    vertices: np.ndarray, size: int, camera: Camera, rotation: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Project ``[V, 3]`` world points to pixel coordinates of a ``size × size`` image.

    Returns:
        ``(xy [V, 2] float64 pixels (x right, y down), depth [V] float64, larger is farther)``.
    """
    p = np.asarray(vertices, dtype=np.float64)
    if rotation is not None:
        p = p @ rotation.T
    if camera.kind == "orthographic":
        scale = size / camera.extent
        x = (p[:, 0] + camera.extent / 2) * scale
        y = (camera.extent / 2 - p[:, 1]) * scale
        depth = -p[:, 2]
    else:
        zc = camera.distance - p[:, 2]
        f = 0.5 * size / math.tan(math.radians(camera.fov_deg) / 2)
        x = size / 2 + f * p[:, 0] / zc
        y = size / 2 - f * p[:, 1] / zc
        depth = zc
    return np.stack([x, y], axis=1), depth


def silhouette(mesh: Mesh, camera: Camera, size: int) -> np.ndarray:
    """The mesh's silhouette seen from a backend's input camera.

    Returns:
        ``[size, size]`` bool, True where some triangle covers the pixel centre.
    """
    xy, _ = project(mesh.vertices, size, camera)
    return rasterize(xy[mesh.faces], size, size).covered


def _sample_texture(tex: np.ndarray, uv: np.ndarray) -> np.ndarray:
    h, w = tex.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip(uv[:, 1] * h - 0.5, 0, h - 1)
    x0 = np.minimum(x.astype(np.int64), w - 2)
    y0 = np.minimum(y.astype(np.int64), h - 2)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    t = tex.astype(np.float32)
    top = t[y0, x0] * (1 - fx) + t[y0, x0 + 1] * fx
    bot = t[y0 + 1, x0] * (1 - fx) + t[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bot * fy


def render(
    mesh: Mesh,
    textures: Textures | None = None,
    *,
    size: int = 256,
    azimuth: float = 0.0,
    elevation: float = 0.0,
    mode: str = "lit",
    extent: float | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Render one orthographic view of a mesh.

    Args:
        mesh: the mesh (uses ``uv`` with ``textures``, else ``colors``, else grey).
        textures: optional baked textures (base colour is used).
        size: image side in pixels.
        azimuth, elevation: view direction in degrees (0, 0 = the input camera, looking down −Z).
        mode: ``"lit"`` or ``"unlit"``.
        extent: view width in metres (default: fits the mesh's bounding sphere).
        background: RGB of empty pixels.

    Returns:
        ``[size, size, 3]`` uint8 sRGB image.
    """
    rot = _view_rotation(azimuth, elevation)
    centre = 0.5 * (mesh.vertices.min(0) + mesh.vertices.max(0)) if mesh.n_vertices else np.zeros(3)
    v = mesh.vertices - centre
    if extent is None:
        extent = 2.05 * float(np.linalg.norm(v, axis=1).max()) if mesh.n_vertices else 1.0
    xy, depth = project(v, size, Camera(kind="orthographic", extent=extent), rot)
    r = rasterize(xy[mesh.faces], size, size, depth[mesh.faces])
    out = np.empty((size * size, 3), dtype=np.float32)
    out[:] = np.asarray(background, dtype=np.float32)
    flat = np.flatnonzero(r.face.ravel() >= 0)
    if flat.size == 0:
        return out.reshape(size, size, 3).astype(np.uint8)
    face = mesh.faces[r.face.ravel()[flat]]
    bary = r.bary.reshape(-1, 3)[flat]
    if textures is not None and mesh.uv is not None:
        uv = np.einsum("nk,nkd->nd", bary, mesh.uv[face])
        colour = _sample_texture(textures.base_color[..., :3], uv)
    elif mesh.colors is not None:
        colour = np.einsum("nk,nkd->nd", bary, mesh.colors[face][:, :, :3]) * 255.0
    else:
        colour = np.full((flat.size, 3), 200.0, dtype=np.float32)
    if mode == "lit":
        if mesh.normals is not None:
            n = np.einsum("nk,nkd->nd", bary, mesh.normals[face])
        else:
            t = mesh.vertices[face]
            n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
        n = n @ rot.T
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        light = np.array([-0.35, 0.5, 0.8])
        light /= np.linalg.norm(light)
        # shade in linear light, then back to sRGB
        lin = (colour / 255.0) ** 2.2
        lin = lin * (0.18 + 0.95 * np.clip(n @ light, 0.0, 1.0))[:, None]
        colour = 255.0 * np.clip(lin, 0, 1) ** (1 / 2.2)
    out[flat] = colour
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(size, size, 3)


def contact_sheet(
    asset: Asset,
    *,
    size: int = 256,
    views: Sequence[tuple[float, float]] = DEFAULT_VIEWS,
    modes: Sequence[str] = ("unlit", "lit"),
) -> np.ndarray:
    """A grid of renders: one row per shading mode, one column per view.

    Returns:
        ``[len(modes)·size, len(views)·size, 3]`` uint8 sRGB image.
    """
    mesh = asset.mesh
    centre = 0.5 * (mesh.vertices.min(0) + mesh.vertices.max(0))
    extent = 2.05 * float(np.linalg.norm(mesh.vertices - centre, axis=1).max())
    rows = []
    for mode in modes:
        tiles = [
            render(mesh, asset.textures, size=size, azimuth=a, elevation=e, mode=mode, extent=extent) for a, e in views
        ]
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)
