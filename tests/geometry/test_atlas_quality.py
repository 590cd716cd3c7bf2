"""Atlas utilisation (UV triangle area over the unit square) and L2 stretch (Sander et al. 2001)."""

import math

import numpy as np
import pytest

from meshforge.geometry.raster import uv_stretch, uv_utilisation


def test_utilisation_is_uv_triangle_area_over_the_unit_square():
    # a unit quad mapped to the left half of the square → 0.5
    uv = np.array([[0, 0], [0.5, 0], [0.5, 1], [0, 1]], dtype=np.float64)
    quad = np.array([[0, 1, 2], [0, 2, 3]])
    assert uv_utilisation(uv, quad) == pytest.approx(0.5, abs=1e-12)
    # 4,096 slivers of 1/4 texel width on a 64² map: area 0.25 though almost no texel centre is inside them
    n = 4096
    x0 = np.arange(n) / n
    w = 0.25 / n
    zero, one = np.zeros(n), np.ones(n)
    lower = np.stack([np.stack([x0, zero], 1), np.stack([x0 + w, zero], 1), np.stack([x0, one], 1)], 1)
    upper = np.stack([np.stack([x0 + w, zero], 1), np.stack([x0 + w, one], 1), np.stack([x0, one], 1)], 1)
    tris = np.concatenate([lower, upper])  # n strips of width w and height 1
    uv2 = tris.reshape(-1, 2)
    faces = np.arange(len(uv2)).reshape(-1, 3)
    assert uv_utilisation(uv2, faces) == pytest.approx(0.25, rel=1e-9)
    assert uv_utilisation(uv2[:0], faces[:0]) == 0.0


def _grid_patch(n: int = 8):
    """An n×n grid of a 3D plane, rotated and bent slightly out of no plane: its (x, y) as isometric UVs."""
    g = np.linspace(0.0, 1.0, n + 1)
    x, y = np.meshgrid(g, g)
    flat = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], 1)
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return flat @ q.T + 3.0, flat[:, :2], faces


def test_stretch_of_an_isometric_map_is_one_and_of_a_2_to_1_scale_is_sqrt_5_4():
    verts, uv, faces = _grid_patch()
    assert uv_stretch(verts, uv, faces) == pytest.approx(1.0, abs=1e-9)
    # a global scale and a rotation of the UVs change nothing (the measure is normalised)
    rot = np.array([[math.cos(0.7), -math.sin(0.7)], [math.sin(0.7), math.cos(0.7)]])
    assert uv_stretch(verts, 0.05 * uv @ rot.T + 0.3, faces) == pytest.approx(1.0, abs=1e-9)
    # a 2:1 anisotropic scale: singular values 1/2 and 1, L2 = sqrt(5/8), times sqrt(A'/A) = sqrt(2)
    assert uv_stretch(verts, uv * np.array([2.0, 1.0]), faces) == pytest.approx(math.sqrt(5 / 4), rel=1e-9)
    # a non-uniform, non-affine warp is worse than isometric
    warped = np.stack([uv[:, 0] ** 2, uv[:, 1]], 1)
    assert uv_stretch(verts, warped, faces) > 1.05


def test_seam_length_counts_the_edges_the_atlas_cuts_once_and_not_the_border():
    from meshforge.geometry.raster import uv_seam_length

    vertices, uv, faces = _grid_patch(8)  # one chart: the border is no seam
    assert uv_seam_length(vertices, uv, faces) == 0.0
    # cut the patch along its middle column line x = 0.5: the faces right of it get their own copies of the
    # line's vertices (moved in UV, so the chart is split): 8 edges of length 1/8 = a seam of length 1
    n = 8
    centroid_x = uv[faces].mean(axis=1)[:, 0]
    on_line = np.flatnonzero(np.isclose(uv[:, 0], 0.5))
    copy = {int(i): len(vertices) + k for k, i in enumerate(on_line)}
    v2 = np.concatenate([vertices, vertices[on_line]])
    uv2 = np.concatenate([uv, uv[on_line] + [0.1, 0.0]])
    f2 = faces.copy()
    right = centroid_x > 0.5
    for i, j in copy.items():
        f2[right] = np.where(f2[right] == i, j, f2[right])
    assert uv_seam_length(v2, uv2, f2) == pytest.approx(1.0, rel=1e-6)
    assert len(on_line) == n + 1
