import numpy as np

from meshforge.geometry.raster import rasterize


def test_square_covers_exact_pixels_and_barycentrics_interpolate():
    # two triangles covering the square [2, 6] x [1, 5] in pixels: pixel centres 2.5..5.5 → 4x4 pixels
    tri = np.array([[[2, 1], [6, 1], [2, 5]], [[6, 1], [6, 5], [2, 5]]], dtype=np.float64)
    r = rasterize(tri, 8, 8)
    expected = np.zeros((8, 8), bool)
    expected[1:5, 2:6] = True
    assert (r.covered == expected).all()
    # interpolating x through the barycentrics gives the pixel centre x
    f = r.face
    ys, xs = np.nonzero(expected)
    x_interp = (r.bary[ys, xs] * tri[f[ys, xs]][:, :, 0]).sum(1)
    assert np.allclose(x_interp, xs + 0.5)


def test_zbuffer_keeps_nearest_and_batches_agree():
    big = np.array([[[0, 0], [16, 0], [0, 16]]], float)
    tri = np.concatenate([big, big])
    depth = np.array([[2.0, 2.0, 2.0], [1.0, 1.0, 1.0]])
    r = rasterize(tri, 16, 16, depth)
    assert set(np.unique(r.face[r.covered])) == {1}
    r2 = rasterize(tri, 16, 16, depth, max_candidates=7)
    assert (r2.face == r.face).all()


def test_degenerate_triangle_covers_nothing():
    r = rasterize(np.array([[[0, 0], [4, 4], [8, 8]]], float), 8, 8)
    assert not r.covered.any()
