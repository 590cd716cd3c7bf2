"""Chart re-packing (meshforge.mesh.pack): denser than xatlas's packing, no overlap, the padding kept, and
each chart moved by a similarity (one common scale) so stretch does not change."""

import numpy as np
import pytest
import torch

from meshforge.config import DecimateConfig, ExtractConfig, UnwrapConfig
from meshforge.fields.isosurface import extract
from meshforge.geometry.raster import rasterize, uv_stretch, uv_utilisation
from meshforge.mesh import _unwrap_worker
from meshforge.mesh.decimate import decimate
from meshforge.mesh.pack import pack_charts, uv_charts
from meshforge.mesh.uv import _xatlas_options, unwrap

from ..fields.test_isosurface import Sphere
from .test_uv_bake import chart_gap, uv_overlap_ratio

#: the torch paths run on CPU tensors everywhere and on CUDA on a GPU machine (``-m gpu``)
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
    ),
]


class Lumpy(Sphere):
    """A sphere with bumps: xatlas cuts it into irregular, curved charts (like a generated surface's)."""

    def density(self, p):
        bumps = 0.04 * np.sin(19 * p[:, 0]) * np.sin(17 * p[:, 1]) * np.sin(18 * p[:, 2])
        return (self.r + bumps - np.linalg.norm(p - self.c, axis=1)).astype(np.float32)


@pytest.fixture(scope="module")
def lumpy():
    mesh = extract(Lumpy(0.3), ExtractConfig(resolution=64))
    return decimate(mesh, DecimateConfig(faces=9000))[0]


@pytest.fixture(scope="module")
def xatlas_only(lumpy):
    """xatlas's own atlas (segmentation, LSCM and packing) with the unwrap's options, in the unit square."""
    options = _xatlas_options(lumpy.vertices, lumpy.faces, UnwrapConfig(padding=2), 512)
    options.pop("gap")  # no re-packing
    r = _unwrap_worker.xatlas_atlas(lumpy.vertices, lumpy.faces, **options)
    assert r["packer"] == "xatlas"
    uv = r["uv"] * np.array([r["width"], r["height"]]) / max(r["width"], r["height"])
    return lumpy.vertices[r["vmapping"]], r["faces"], uv


def test_unwrap_repacks_denser_than_xatlas_with_the_same_charts(lumpy, xatlas_only):
    vertices, faces, uv = xatlas_only
    # whole (piece_faces=0), as xatlas_only: the same charts, re-packed
    out, counts = unwrap(lumpy, UnwrapConfig(padding=2, time_limit=0, repack=True, piece_faces=0), 512)
    assert counts["engine"] == "xatlas" and counts["packer"] == "meshforge"
    assert counts["utilisation"] > uv_utilisation(uv, faces)
    assert counts["charts"] == len(np.unique(uv_charts(out.faces, len(out.uv))))
    assert uv_overlap_ratio(out) < 1.002  # no texel of the 2048² raster is covered twice
    assert 2.0 <= chart_gap(out, 512) <= 4.0  # the padding, in texels of the map, and not much more
    assert out.uv.min() >= 0 and out.uv.max() <= 1
    assert counts["stretch"] == pytest.approx(uv_stretch(vertices, uv, faces), abs=1e-4)


def test_packing_is_a_similarity_per_chart_with_one_scale(xatlas_only):
    vertices, faces, uv = xatlas_only
    packed, utilisation = pack_charts(uv, faces, 512, 2)
    assert utilisation == pytest.approx(uv_utilisation(packed, faces), rel=1e-6)

    def signed(u):
        t = u[faces]
        e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
        return e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]

    a0, a1 = signed(uv), signed(packed)
    big = np.abs(a0) > 1e-4 * np.abs(a0).max()
    ratio = a1[big] / a0[big]
    assert np.all(ratio > 0)  # no chart mirrored (the winding of every UV triangle is kept)
    assert ratio.std() < 1e-6 * ratio.mean()  # one scale for every triangle of every chart
    # edge lengths scale alike: angles and shapes are kept (a rotation, not a shear)
    e0 = np.linalg.norm(uv[faces[:, 1]] - uv[faces[:, 0]], axis=1)
    e1 = np.linalg.norm(packed[faces[:, 1]] - packed[faces[:, 0]], axis=1)
    keep = e0 > 1e-4
    assert np.allclose(e1[keep] / e0[keep], np.sqrt(ratio.mean()), rtol=1e-6)
    assert uv_stretch(vertices, packed, faces) == pytest.approx(uv_stretch(vertices, uv, faces), rel=1e-6)


def assert_charts_apart(lab: np.ndarray, padding: int) -> None:
    """No two different charts' texels of a square ``[S, S]`` chart-label raster (-1: empty) lie within
    ``padding`` texels of each other (Chebyshev)."""
    size = len(lab)
    for dy in range(-padding, padding + 1):
        for dx in range(-padding, padding + 1):
            a = lab[max(0, dy) : size + min(0, dy), max(0, dx) : size + min(0, dx)]
            b = lab[max(0, -dy) : size + min(0, -dy), max(0, -dx) : size + min(0, -dx)]
            assert not np.any((a >= 0) & (b >= 0) & (a != b)), (dx, dy)


@pytest.mark.parametrize("padding", [0, 1, 3])
def test_charts_keep_the_padding_on_the_texel_grid(xatlas_only, padding):
    """The conservative rasters (every texel a triangle touches) of two charts are ``padding`` texels apart."""
    _, faces, uv = xatlas_only
    size = 256
    packed, _ = pack_charts(uv, faces, size, padding)
    chart = uv_charts(faces, len(uv))
    sub = 8  # texels a triangle touches ⊂ texels holding one of its points on an 8× finer raster, grown by 1
    face = rasterize(packed[faces] * size * sub, size * sub, size * sub).face
    lab = np.full((size, size), -1)
    fine = np.where(face >= 0, chart[np.maximum(face, 0)], -1)
    cells = fine.reshape(size, sub, size, sub).transpose(0, 2, 1, 3).reshape(size, size, -1)
    many = np.array([len(set(c[c >= 0].tolist())) for c in cells.reshape(-1, sub * sub)]).reshape(size, size)
    assert many.max() <= 1  # no texel is shared by two charts
    lab = cells.max(axis=-1)
    assert_charts_apart(lab, padding)


def test_bad_input_is_refused_in_one_line(xatlas_only):
    _, faces, uv = xatlas_only
    with pytest.raises(ValueError, match="too small for padding"):
        pack_charts(uv, faces, 4, 2)
    with pytest.raises(ValueError, match="finite"):
        pack_charts(np.full_like(uv, np.nan), faces, 256, 2)


def test_the_worker_process_repacks_too(lumpy):
    out, counts = unwrap(lumpy, UnwrapConfig(padding=2, time_limit=60, repack=True), 512)
    assert counts["engine"] == "xatlas" and counts["packer"] == "meshforge"
    assert uv_overlap_ratio(out) < 1.002


def test_the_default_unwrap_repacks_a_generated_like_surface_above_the_floor(lumpy, xatlas_only):
    """Default options on the whole mesh (no pieces): a marching-cubes surface's atlas covers at least 0.55
    of the square (xatlas's own packing: 0.495; re-packed: 0.569, measured), with the same charts and
    stretch as xatlas's."""
    vertices, faces, uv = xatlas_only
    out, counts = unwrap(lumpy, UnwrapConfig(piece_faces=0), 512)
    assert counts["engine"] == "xatlas" and counts["packer"] == "meshforge"
    assert counts["utilisation"] >= 0.55 > uv_utilisation(uv, faces)
    assert counts["charts"] == len(np.unique(uv_charts(faces, len(uv))))
    assert counts["stretch"] == pytest.approx(uv_stretch(vertices, uv, faces), abs=1e-4)
    assert uv_overlap_ratio(out) < 1.002
    assert 2.0 <= chart_gap(out, 512) <= 4.0


def test_the_default_unwrap_cuts_a_surface_of_one_part_into_pieces_that_pack_denser(lumpy, xatlas_only):
    """At defaults the same one-part surface is unwrapped in pieces: compact charts, packed about as densely as
    the whole mesh's re-packed atlas (0.5869 against 0.5826 at 512², 0.6178 against 0.6172 at 1024²; the pieces
    get the first layout that fits, the whole mesh the best of up to eight, so which is denser varies by ±0.01
    with the charts' scales: 0.5782 and 0.6127 in another version of the pieces' layouts), no overlap, stretch no
    worse than xatlas's on the whole mesh."""
    vertices, faces, uv = xatlas_only
    whole, _ = unwrap(lumpy, UnwrapConfig(piece_faces=0), 512)
    out, counts = unwrap(lumpy, UnwrapConfig(), 512)
    assert counts["engine"] == "xatlas" and counts["pieces"] >= 8
    assert counts["utilisation"] >= uv_utilisation(whole.uv, whole.faces) - 0.01
    whole_1k, _ = unwrap(lumpy, UnwrapConfig(piece_faces=0), 1024)
    _, counts_1k = unwrap(lumpy, UnwrapConfig(), 1024)
    assert counts_1k["utilisation"] >= uv_utilisation(whole_1k.uv, whole_1k.faces) - 0.01
    assert counts["stretch"] <= uv_stretch(vertices, uv, faces) + 1e-3
    assert uv_overlap_ratio(out) < 1.002
    assert 2.0 <= chart_gap(out, 512) <= 4.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pack_charts_on_a_gpu_lays_out_every_chart_on_the_blocks_as_the_host(xatlas_only):
    """With a CUDA device and every chart on the blocks (``exact_rows=0``, the pieces' packing) the layout runs as
    one Triton program (:mod:`meshforge.mesh.pack_triton`): the same UVs to the bit as the host's, at two
    resolutions and in two and four quarter turns."""
    from meshforge.mesh import pack

    _, faces, uv = xatlas_only
    for resolution, turns in ((512, 2), (1024, 4)):
        kw = {"attempts": 1, "exact_rows": 0, "turns": turns}
        ref, u_ref = pack_charts(uv, faces, resolution, 2, **kw)
        got, u_got = pack_charts(uv, faces, resolution, 2, device="cuda", **kw)
        assert pack.TRITON_FAILURE is None
        assert u_got == u_ref > 0.5
        assert np.array_equal(got, ref)


@pytest.mark.parametrize("device", DEVICES)
def test_the_torch_offset_search_lays_out_the_same_atlas_as_numpy(xatlas_only, device):
    """The layout's free-offset search by one batched float64 FFT per chart on a torch device (the GPU path)
    places every chart where numpy's windowed search does: the same UVs to the bit, at two resolutions."""
    _, faces, uv = xatlas_only
    for resolution in (512, 1024):
        ref, u_ref = pack_charts(uv, faces, resolution, 2, attempts=1)
        got, u_got = pack_charts(uv, faces, resolution, 2, attempts=1, device=device)
        assert u_got == u_ref > 0.5
        assert np.array_equal(got, ref)


@pytest.mark.parametrize("device", DEVICES)
def test_the_chart_rasters_summed_on_a_device_are_numpys(xatlas_only, device):
    """The charts' conservative rasters, their runs found and summed into the boxes on a torch device, are
    numpy's texel for texel (and so are their dilations and footprint)."""
    from meshforge.mesh import pack

    _, faces, uv = xatlas_only
    chart = uv_charts(faces, len(uv))
    local = [uv[np.unique(faces[chart == c])] for c in range(int(chart.max()) + 1)]
    for scale in (300.0, 1100.0):
        ref = pack._rasters(local, uv[faces], chart, scale, 2)
        got = pack._rasters(local, uv[faces], chart, scale, 2, device)
        assert all(np.array_equal(a, b) for a, b in zip(ref[0], got[0], strict=True))
        assert all(np.array_equal(a, b) for a, b in zip(ref[1], got[1], strict=True))
        assert np.array_equal(ref[2], got[2]) and ref[3] == got[3] > 0


@pytest.mark.parametrize("device", DEVICES)
def test_the_torch_triangle_runs_are_numpys(device):
    """The conservative raster's runs (triangle, row, first and last column) found on a torch device are
    numpy's, for random triangles, slivers, degenerate ones, edges along texel rows and corners on texel
    corners."""
    from meshforge.mesh.pack import _conservative_spans, _conservative_spans_torch

    rng = np.random.default_rng(0)
    tri = rng.uniform(0, 60, (4000, 3, 2))
    tri[:100, 1] = tri[:100, 0]  # two corners in one point
    tri[100:200, :, 1] = 7.0  # flat along a row line
    tri[200:400] = np.floor(tri[200:400])  # corners on texel corners
    tri[400:500, 2] = tri[400:500, 0] + 1e-7 * (tri[400:500, 1] - tri[400:500, 0])  # slivers
    ref = _conservative_spans(tri)
    got = [x.cpu().numpy() for x in _conservative_spans_torch(tri, device)]
    assert len(ref[0]) > 4000
    for a, b in zip(ref, got, strict=True):
        assert np.array_equal(a, b)


def test_the_unwrap_reports_where_its_time_went(lumpy):
    _, counts = unwrap(lumpy, UnwrapConfig(padding=2), 512)
    assert counts["pieces"] >= 8
    assert counts["seconds_charts"] > 0 and counts["seconds_pack"] > 0
    _, whole = unwrap(lumpy, UnwrapConfig(padding=2, piece_faces=0), 512)
    assert 0 < whole["seam_ratio"] < counts["seam_ratio"]  # the cuts between pieces are seams too


def test_many_small_charts_pack_past_what_their_dilated_rasters_cover():
    """The scale search skips scales whose charts cannot fit by their footprints (rasters dilated by half the
    padding, which never overlap): 300 small square charts, padding 3, reach a layout whose rasters dilated by
    the whole padding cover more than the square (so a bound on those would have stopped the search short), and
    every two charts' conservative rasters are still at least 3 texels apart."""
    from meshforge.mesh import pack

    rng = np.random.default_rng(3)
    n, size, padding = 300, 256, 3
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    uv = (corners[None] * rng.uniform(0.8, 1.2, (n, 1, 1)) + rng.uniform(0, 50, (n, 1, 2))).reshape(-1, 2)
    quads = np.arange(4 * n).reshape(n, 4)
    faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    packed, utilisation = pack_charts(uv, faces, size, padding, start=0.3, attempts=4, max_layouts=10)
    assert utilisation == pytest.approx(uv_utilisation(packed, faces))
    chart = uv_charts(faces, len(packed))
    t, y, x0, x1 = pack._conservative_spans(packed[faces] * size)
    lab = np.full((size, size), -1)
    for ti, yy, a, b in zip(t, y, x0, x1, strict=True):
        assert 0 <= yy < size and 0 <= a <= b < size
        lab[yy, a : b + 1] = chart[ti]
    dilated = sum(pack._dilate(np.pad(lab == c, padding), padding).sum() for c in range(n))
    assert dilated > 1.0 * size**2  # the old bound (0.95 of the square on these) would not have laid this out
    assert_charts_apart(lab, padding)


def test_chart_ids_are_the_same_with_and_without_scipy(xatlas_only, monkeypatch):
    """``uv_charts`` numbers the UV mesh's components the same way by SciPy's connected components (where SciPy
    is loaded) and by the numpy label propagation (the unwrap worker, which does not load SciPy)."""
    import sys

    import scipy.sparse.csgraph  # noqa: F401

    _, faces, uv = xatlas_only
    rng = np.random.default_rng(0)
    # a vertex no face uses, and the faces in a random order: the ids follow the charts' smallest vertices
    faces = faces[rng.permutation(len(faces))] + 1
    with_scipy = uv_charts(faces, len(uv) + 1)
    monkeypatch.delitem(sys.modules, "scipy.sparse.csgraph")
    without = uv_charts(faces, len(uv) + 1)
    assert np.array_equal(with_scipy, without) and with_scipy.max() + 1 >= 10


def _first_free_by_brute_force(taken: np.ndarray, mask: np.ndarray, last_row: int) -> tuple[int, int] | None:
    """The lowest, then leftmost offset where ``mask`` covers no taken texel, by trying every offset."""
    rows, width = taken.shape
    h, w = mask.shape
    for y in range(min(last_row, rows - h) + 1):
        for x in range(width - w + 1):
            if not (taken[y : y + h, x : x + w] & mask).any():
                return y, x
    return None


@pytest.mark.parametrize("padding", [0, 1, 2, 3])
def test_the_exact_search_finds_the_first_free_offset(padding):
    """The texel-exact search (bit rows of the free squares' corners, tested a run at a time) returns the same
    offset as trying every offset of the padded raster, over random occupancies, raster shapes, row limits and
    widths of one to four 64-bit words, and after rows of the occupancy change."""
    from meshforge.mesh import pack

    rng = np.random.default_rng(padding)
    found = 0
    for _ in range(60):
        shape = (int(rng.integers(8, 48)), int(rng.integers(8, 200)))
        taken = rng.random(shape) < rng.uniform(0.0, 0.3) / (1 + padding) ** 2
        search = pack._ExactSearch(taken, padding, 40)
        for _ in range(3):
            core = rng.random((int(rng.integers(1, 10)), int(rng.integers(1, 40)))) < 0.8
            core[0, 0] = core[-1, -1] = True  # the conservative raster spans its box
            padded = pack._dilate(np.pad(core, padding), padding)
            last_row = int(rng.integers(0, len(taken)))
            got = search.first(core, padding, padded.shape, last_row)
            assert got == _first_free_by_brute_force(taken, padded, last_row)
            found += got is not None
            row = int(rng.integers(0, len(taken)))
            taken[row] |= rng.random(taken.shape[1]) < 0.3
            search.update(taken, row, row + 1)
    assert 20 < found < 180  # both outcomes were tested


def test_small_charts_are_placed_texel_exactly():
    """Small charts are placed on the texels, not on the search grid's blocks: 600 triangles of 5-18 texels
    (padding 2) at one scale lay out 15 % lower than when every chart is searched on 4-texel blocks (rounded up
    to whole blocks, then slid down and left), and still keep 2 empty texels between any two rasters."""
    from meshforge.mesh import pack

    rng = np.random.default_rng(5)
    n, size, padding = 600, 1024, 2
    angles = np.sort(rng.uniform(0, 2 * np.pi, (n, 3)), axis=1)
    radii = rng.uniform(0.5, 1.0, (n, 3))
    corners = np.stack([np.cos(angles), np.sin(angles)], -1) * radii[..., None]
    uv = (corners + rng.uniform(0, 80, (n, 1, 2))).reshape(-1, 2)
    faces = np.arange(3 * n).reshape(n, 3)
    chart = uv_charts(faces, len(uv))
    assert np.array_equal(chart, np.arange(n))
    real, dilated, _, _ = pack._rasters(list(uv[faces]), uv[faces], chart, 9.0, padding)
    assert max(max(r.shape) for r in real) <= pack.EXACT_ROWS
    exact_height, place = pack._layout(real, dilated, size, padding)
    block_height, _ = pack._layout(real, dilated, size, padding, exact_rows=0)
    assert exact_height < 0.9 * block_height  # 61 against 72 texels
    lab = np.full((size, size), -1)
    for c, (k, x, y) in enumerate(place):
        r = np.rot90(real[c], k)
        region = lab[y : y + r.shape[0], x : x + r.shape[1]]
        assert not (region[r] >= 0).any()
        region[r] = c
    assert_charts_apart(lab, padding)


def test_chart_options_reach_xatlas(lumpy):
    """``chart_options`` are set on xatlas's ChartOptions (the unwrap passes CHART_OPTIONS): a heavier
    roundness weight segments the same surface differently, and an unknown option is an error."""
    v, f = lumpy.vertices, lumpy.faces
    kw = {"resolution": 512, "padding": 1, "max_chart_area": None}
    plain = _unwrap_worker.xatlas_atlas(v, f, **kw, chart_options={})
    round_ = _unwrap_worker.xatlas_atlas(v, f, **kw, chart_options={"roundness_weight": 5.0})
    assert plain["charts"] != round_["charts"] or not np.array_equal(plain["faces"], round_["faces"])
    with pytest.raises(AttributeError):
        _unwrap_worker.xatlas_atlas(v, f, **kw, chart_options={"no_such_option": 1.0})
    assert _xatlas_options(v, f, UnwrapConfig(), 512)["chart_options"] == {"roundness_weight": 2.0}


def test_an_atlas_of_very_many_charts_keeps_xatlas_packing(lumpy, monkeypatch):
    """Past MANY_CHARTS the re-packing is not tried (for time): xatlas's own packing comes back; under it the
    re-packing runs and wins on the same surface."""
    kw = {"resolution": 512, "padding": 1, "max_chart_area": None, "gap": 2}
    repacked = _unwrap_worker.xatlas_atlas(lumpy.vertices, lumpy.faces, **kw)
    assert repacked["packer"] == "meshforge"
    monkeypatch.setattr(_unwrap_worker, "MANY_CHARTS", repacked["charts"] - 1)
    kept = _unwrap_worker.xatlas_atlas(lumpy.vertices, lumpy.faces, **kw)
    assert kept["packer"] == "xatlas" and kept["charts"] == repacked["charts"]


def test_two_quarter_turns_lay_out_charts_apart_turned_at_most_once(xatlas_only, monkeypatch):
    from meshforge.mesh import pack

    _, faces, uv = xatlas_only
    seen: list[list[int]] = []
    real_layout = pack._layout

    def spy(*args, **kwargs):
        height, place = real_layout(*args, **kwargs)
        seen.append([k for k, _, _ in place])
        return height, place

    monkeypatch.setattr(pack, "_layout", spy)
    size = 512
    pack_charts(uv, faces, size, 2, attempts=1, exact_rows=0)
    turns4 = seen[-1]
    two, u2 = pack_charts(uv, faces, size, 2, attempts=1, exact_rows=0, turns=2)
    assert set(seen[-1]) <= {0, 1} and set(turns4) - {0, 1}  # the four-turn layout used the other two
    assert u2 > 0.5 and u2 == pytest.approx(uv_utilisation(two, faces), rel=1e-6)
    chart = uv_charts(faces, len(uv))
    face = rasterize(two[faces] * size, size, size).face
    lab = np.where(face >= 0, chart[np.maximum(face, 0)], -1)
    assert_charts_apart(lab, 2)


def test_the_pieces_layout_tries_two_turns_then_four(lumpy, monkeypatch):
    from meshforge.mesh import pack
    from meshforge.mesh import uv as uv_module

    calls: list[int] = []
    real = pack.pack_charts

    def spy(*args, **kwargs):
        calls.append(kwargs.get("turns", 4))
        return real(*args, **kwargs)

    monkeypatch.setattr(pack, "pack_charts", spy)
    monkeypatch.setattr(uv_module, "_PACK_START", 0.55)  # (this small sphere's pieces fit 0.58 at 512²)
    out, counts = unwrap(lumpy, UnwrapConfig(), 512)
    assert counts["pieces"] >= 8 and calls == [2]  # the quick layout fits: one layout
    assert counts["utilisation"] == pytest.approx(0.55, abs=1e-3)
    assert uv_overlap_ratio(out) < 1.002
    calls.clear()
    # a start just too dense: the first quick layout (521 texels tall) does not fit, the second (at the scale its
    # height suggests, above _PACK_QUICK_FLOOR × the start) does; no full search
    monkeypatch.setattr(uv_module, "_PACK_START", 0.587)
    out, counts = unwrap(lumpy, UnwrapConfig(), 512)
    assert calls == [2] and 0.587 * uv_module._PACK_QUICK_FLOOR < counts["utilisation"] < 0.587
    assert uv_overlap_ratio(out) < 1.002
    calls.clear()
    monkeypatch.setattr(uv_module, "_PACK_START", 0.9)  # no quick layout fits that: the full search follows
    out, counts = unwrap(lumpy, UnwrapConfig(), 512)
    assert calls == [2, 4] and counts["engine"] == "xatlas" and 0.5 < counts["utilisation"] < 0.9
    assert uv_overlap_ratio(out) < 1.002


def test_small_masks_run_tests_find_the_free_offsets_of_the_cell_by_cell_test():
    """A small chart's free offsets come from its rows' runs against the occupancy's free runs (one comparison per
    run): the same offsets as AND-ing a shifted copy of the free cells per cell of the mask."""
    from meshforge.mesh.pack import _free_positions, _free_positions_by_cells, _mask_runs, _reach

    rng = np.random.default_rng(11)
    free = rng.random((9, 13)) > 0.3
    reach = _reach(free)
    for y in range(9):
        for x in range(13):
            n = 0
            while x + n < 13 and free[y, x + n]:
                n += 1
            assert reach[y, x] == n
    mask = np.array([[0, 1, 1, 0, 1], [1, 1, 1, 1, 1], [0, 0, 1, 0, 0]], dtype=bool)
    assert _mask_runs(mask) == [(0, 1, 2), (0, 4, 1), (1, 0, 5), (2, 2, 1)]
    for density in (0.05, 0.2, 0.5):
        occ = rng.random((60, 48)) < density
        for shape in ((1, 1), (3, 7), (7, 3), (11, 11)):
            m = rng.random(shape) < 0.7
            m[0, 0] = True  # not empty
            want = _free_positions_by_cells(occ, m)
            assert np.array_equal(_free_positions(occ, m, {}), want)
            assert np.array_equal(_free_positions(occ, m, {"reach": _reach(~occ)}), want)
            assert want.any() or density > 0.1


def test_the_candidate_rows_run_search_finds_the_first_free_offset(monkeypatch):
    """The block grid's host search tests a chart's row runs against the occupancy's free runs on the candidate rows
    only, a few rows at a time from the lowest up: the same first offset (lowest row, then leftmost column) as the
    whole window's test, and as the cell-by-cell reference."""
    from meshforge.mesh import pack
    from meshforge.mesh.pack import _first_free, _free_positions_by_cells, _reach, _row_runs

    rng = np.random.default_rng(12)
    found = 0
    for density in (0.02, 0.1, 0.3, 0.6):
        occ = rng.random((80, 64)) < density
        occ[: int(80 * density)] |= rng.random((int(80 * density), 64)) < 0.8  # fuller at the bottom
        run, reach = _row_runs(~occ), _reach(~occ)
        for shape in ((1, 1), (2, 9), (9, 2), (6, 6), (15, 20), (40, 3)):
            masks = []
            for _ in range(2):
                m = rng.random(shape) < 0.75
                m[0, 0] = m[-1, -1] = True
                masks.append(m)
            for r0 in (0, 7):
                monkeypatch.setattr(pack, "RUN_SEARCH", True)
                got = _first_free(occ, run, masks, r0, reach)
                monkeypatch.setattr(pack, "RUN_SEARCH", False)
                assert got == _first_free(occ, run, masks, r0, reach)
                for m, g in zip(masks, got, strict=True):
                    free = _free_positions_by_cells(occ, m)
                    free[:r0] = False
                    ys, xs = np.nonzero(free)
                    assert g == ((int(ys[0]), int(xs[0])) if len(ys) else None)
                    found += g is not None
    assert found > 20  # most masks find a place: the comparison can fail
