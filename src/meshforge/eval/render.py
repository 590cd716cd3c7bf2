"""Cameras for the software renderer: view rotations, projection, and silhouettes (numpy, no GPU).

Triangles are projected with an orthographic or perspective camera and rasterised with a z-buffer by
:func:`meshforge.geometry.raster.rasterize`. The shaded preview sheets built on this live in
:func:`meshforge.eval.diagnostics.preview_sheet`.
"""

from __future__ import annotations

import math

import numpy as np

from ..geometry.raster import rasterize
from ..types import Camera, Mesh

#: (azimuth, elevation) in degrees of the default preview views: front, right, back, left, top, 3/4
DEFAULT_VIEWS: tuple[tuple[float, float], ...] = ((0, 0), (90, 0), (180, 0), (270, 0), (0, 89.9), (35, 25))
#: names of :data:`DEFAULT_VIEWS` (the camera on +Z sees the front, on +X the right side, as in Blender)
DEFAULT_VIEW_NAMES: tuple[str, ...] = ("front", "right", "back", "left", "top", "3/4")


def view_rotation(azimuth: float, elevation: float) -> np.ndarray:
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
