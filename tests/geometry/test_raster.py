import numpy as np

from meshforge.geometry.raster import coverage, rasterize


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


def test_coverage_is_the_rasters_covered_pixels():
    """The scanline coverage (the atlas figures' raster) marks exactly the pixels rasterize covers, on random
    triangles, on ones with corners and edges on pixel-centre lines, and on ones partly off the raster."""
    rng = np.random.default_rng(3)
    tri = rng.random((4000, 3, 2)) * np.array([70.0, 50.0]) - 3.0
    tri[:800] = np.round(tri[:800] * 2) / 2  # corners on pixel corners and centres
    tri[800:900, :, 1] = tri[800:900, :1, 1]  # flat: no area
    for width, height in ((64, 48), (17, 5)):
        expected = rasterize(tri, width, height).covered
        got = coverage(tri, width, height)
        assert got.shape == (height, width) and got.dtype == bool
        assert np.array_equal(got, expected), int((got != expected).sum())
    assert not coverage(np.zeros((0, 3, 2)), 8, 8).any()
