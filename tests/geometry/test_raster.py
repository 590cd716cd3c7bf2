import numpy as np

from meshforge.geometry.raster import coverage, never_written, rasterize


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


def _reference(tri, width, height, depth=None, eps=1e-7):
    """Every pixel centre against every triangle (the definition, no scanline), last or nearest face wins."""
    face = np.full((height, width), -1)
    bary = np.zeros((height, width, 3), np.float32)
    zbuf = np.full((height, width), np.inf)
    cy, cx = np.mgrid[0:height, 0:width] + 0.5
    for f, t in enumerate(tri):
        a2 = (t[1, 0] - t[0, 0]) * (t[2, 1] - t[0, 1]) - (t[2, 0] - t[0, 0]) * (t[1, 1] - t[0, 1])
        if abs(a2) < 1e-12:
            continue
        l0 = ((t[1, 0] - cx) * (t[2, 1] - cy) - (t[2, 0] - cx) * (t[1, 1] - cy)) / a2
        l1 = ((t[2, 0] - cx) * (t[0, 1] - cy) - (t[0, 0] - cx) * (t[2, 1] - cy)) / a2
        l2 = 1.0 - l0 - l1
        inside = (l0 >= -eps) & (l1 >= -eps) & (l2 >= -eps)
        if depth is not None:
            z = l0 * depth[f, 0] + l1 * depth[f, 1] + l2 * depth[f, 2]
            inside &= z < zbuf
            zbuf[inside] = z[inside]
        face[inside] = f
        bary[inside] = np.clip(np.stack([l0, l1, l2], -1)[inside], 0.0, 1.0)
    return face, bary


def test_the_scanline_finds_every_pixel_the_definition_does():
    """Random triangles, corners on pixel corners and centres, near-horizontal edges on centre lines, parts
    off the raster: the same face and barycentrics as testing every pixel against every triangle."""
    rng = np.random.default_rng(5)
    tri = rng.random((300, 3, 2)) * np.array([40.0, 30.0]) - 3.0
    tri[:80] = np.round(tri[:80] * 2) / 2
    tri[80:120, :, 1] = np.round(tri[80:120, :1, 1]) + 0.5 + rng.random((40, 3)) * 1e-5
    depth = rng.random((300, 3))
    for d in (None, depth):
        face, bary = _reference(tri, 36, 28, d)
        r = rasterize(tri, 36, 28, d, max_candidates=500)
        assert np.array_equal(r.face, face)
        assert np.allclose(r.bary, bary, atol=1e-6)


def test_never_written_is_farther_than_the_dilation_from_every_covered_texel():
    """The disk of shifts gives what the Euclidean distance transform gives (the definition)."""
    from scipy import ndimage

    rng = np.random.default_rng(7)
    covered = rng.random((60, 45)) > 0.97
    covered[:, :3] = False
    for dilation in (0.0, 1.0, 1.5, 2.0, 2.9, 3.0, 12.5):
        expected = ndimage.distance_transform_edt(~covered) > dilation
        assert np.array_equal(never_written(covered, dilation), expected), dilation
    assert never_written(np.zeros((4, 5), bool), 2.0).all()


def test_matches_the_per_pixel_edge_test_on_an_atlas():
    # an atlas-like set: a jittered, triangulated grid (shared edges, both windings, edges through texel
    # centres), slivers, triangles hanging over the border, and one large triangle over the others
    rng = np.random.default_rng(3)
    n = 9
    g = np.stack(np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="xy"), -1).astype(float) * 7.0 - 3.0
    g[1:-1, 1:-1] += rng.uniform(-2.0, 2.0, (n - 1, n - 1, 2))
    g[::3, ::3] = np.rint(g[::3, ::3]) + 0.5  # vertices on texel centres
    quads = [(g[i, j], g[i, j + 1], g[i + 1, j + 1], g[i + 1, j]) for i in range(n) for j in range(n)]
    tris = [t for a, b, c, d in quads for t in ([a, b, c], [a, d, c])]  # [a, d, c] winds the other way
    tris += [
        [[5.0, 5.0], [40.0, 5.2], [5.0, 5.4]],
        [[0.2, 20.5], [59.7, 20.5 + 1e-9], [30.0, 20.5 - 1e-9]],  # nearly horizontal edges on a centre row
        [[-6.0, 30.0], [70.0, 33.0], [20.0, 75.0]],
    ]
    tri = np.asarray(tris, dtype=np.float64)
    for width, height in ((60, 60), (48, 64)):
        face, bary = _reference(tri, width, height)
        for batch in (1 << 22, 50):
            r = rasterize(tri, width, height, max_candidates=batch)
            assert (r.face == face).all()
            assert np.array_equal(r.bary, bary)


def test_an_atlas_is_rasterised_once_and_a_changed_atlas_again():
    # the unwrap's atlas check and the bake rasterise the same atlas: the second call reuses the first's
    # raster (read-only), and any change to the triangles gives a fresh one
    rng = np.random.default_rng(2)
    tri = rng.uniform(0, 64, (200, 3, 2))
    first = rasterize(tri, 64, 64)
    again = rasterize(tri.copy(), 64, 64)
    assert again.face is first.face and again.bary is first.bary
    assert not again.face.flags.writeable and not again.bary.flags.writeable
    third = rasterize(tri, 64, 64)  # handed on once, then forgotten: nothing outlives the job
    assert third.face is not first.face and (third.face == first.face).all()
    tri[0, 0, 0] += 3.0
    changed = rasterize(tri, 64, 64)
    face, bary = _reference(tri, 64, 64)
    assert (changed.face == face).all() and np.array_equal(changed.bary, bary)
    assert rasterize(tri, 32, 64).face.shape == (64, 32)


def test_gutter_transform_is_computed_once_per_coverage():
    from meshforge.geometry.raster import nearest_covered, never_written

    covered = np.zeros((40, 50), bool)
    covered[10:20, 5:30] = True
    dist, (ri, ci) = nearest_covered(covered)
    assert nearest_covered(covered.copy())[0] is dist
    assert covered[ri, ci].all() and dist[covered].max() == 0.0
    assert np.allclose(dist, np.hypot(ri - np.arange(40)[:, None], ci - np.arange(50)[None, :]))
    assert (never_written(covered, 2.0) == (dist > 2.0)).all()
