import numpy as np
import pytest

from meshforge.config import BakeConfig, DecimateConfig, ExtractConfig, UnwrapConfig
from meshforge.fields.isosurface import extract
from meshforge.geometry.raster import rasterize
from meshforge.geometry.texture import CLAMP_TO_EDGE, sample_texture
from meshforge.geometry.topology import topology
from meshforge.mesh.bake import bake
from meshforge.mesh.decimate import decimate
from meshforge.mesh.uv import unwrap

from ..fields.test_isosurface import Sphere


class Constant(Sphere):
    def color(self, p):
        return np.tile(np.array([[0.2, 0.6, 0.9]], np.float32), (len(p), 1))


@pytest.fixture(scope="module")
def low_sphere():
    mesh = extract(Sphere(0.3), ExtractConfig(resolution=64))
    return decimate(mesh, DecimateConfig(faces=3000))[0]


@pytest.fixture(scope="module")
def unwrapped(low_sphere):
    return unwrap(low_sphere, UnwrapConfig(padding=3), 256)


def uv_overlap_ratio(mesh, res=2048):
    t = mesh.uv[mesh.faces].astype(np.float64) * res
    area = 0.5 * np.abs(
        (t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 2, 0] - t[:, 0, 0]) * (t[:, 1, 1] - t[:, 0, 1])
    )
    covered = rasterize(t, res, res).covered.sum()
    return covered / area.sum()


def test_xatlas_atlas_is_valid(low_sphere, unwrapped):
    mesh, counts = unwrapped
    assert counts["engine"] == "xatlas" and "fallback" not in counts
    assert mesh.uv.min() >= 0 and mesh.uv.max() <= 1
    assert mesh.n_faces == low_sphere.n_faces
    assert topology(mesh.vertices, mesh.faces, weld_positions=True).watertight  # seams split vertices only
    assert np.allclose(np.linalg.norm(mesh.normals, axis=1), 1, atol=1e-5)
    # union of UV triangles ≈ sum of their areas: charts do not overlap
    assert uv_overlap_ratio(mesh) == pytest.approx(1.0, abs=0.03)


def test_time_limit_falls_back_to_face_atlas(low_sphere):
    mesh, counts = unwrap(low_sphere, UnwrapConfig(time_limit=1e-4), 256)
    assert counts["engine"] == "faces" and "time limit" in counts["fallback"]
    assert uv_overlap_ratio(mesh) == pytest.approx(1.0, abs=0.03)
    assert topology(mesh.vertices, mesh.faces, weld_positions=True).watertight


def test_constant_field_bakes_a_constant_texture_without_seam_texels(unwrapped):
    mesh, _ = unwrapped
    tex, counts = bake(mesh, Constant(), BakeConfig(texture_size=256))
    expected = np.rint(np.array([0.2, 0.6, 0.9]) * 255).astype(np.uint8)
    assert (tex.base_color[..., :3] == expected).all()  # every texel, gutters included
    assert (tex.base_color[..., 3] == 255).all()
    assert (tex.metallic_roughness[..., 1] == 128).all() and (tex.metallic_roughness[..., 2] == 0).all()
    assert 0.2 < counts["coverage"] <= 1


def test_baked_texture_reproduces_field_color_on_the_surface(unwrapped):
    mesh, _ = unwrapped
    field = Sphere(0.3)
    tex, _ = bake(mesh, field, BakeConfig(texture_size=256))
    # sample the texture the way a renderer would (bilinear at the vertex UVs) and compare with the field
    got = sample_texture(tex.base_color[..., :3], mesh.uv, wrap=(CLAMP_TO_EDGE, CLAMP_TO_EDGE)) / 255.0
    want = field.color(mesh.vertices)
    err = np.abs(got - want).max(axis=1)
    assert np.median(err) < 0.01
    assert np.percentile(err, 99) < 0.05  # seam vertices included: gutters carry chart colours


def chart_gap(mesh, size: int, sub: int = 4) -> float:
    """The smallest distance, in texels of a ``size``² map (Chebyshev, in steps of 1/``sub``), between points
    of two different charts (charts: faces connected through shared UV vertices)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = mesh.faces.astype(np.int64)
    inc = coo_matrix((np.ones(f.size), (np.repeat(np.arange(len(f)), 3), f.ravel())), shape=(len(f), len(mesh.uv)))
    _, chart = connected_components((inc @ inc.T).tocsr(), directed=False)
    res = size * sub
    face = rasterize(mesh.uv[f].astype(np.float64) * res, res, res).face
    lab = np.where(face >= 0, chart[np.maximum(face, 0)], -1)
    for r in range(1, 8 * sub):
        for dx in range(-r, r + 1):
            for dy in range(-r, r + 1):
                if max(abs(dx), abs(dy)) != r:
                    continue
                a = lab[max(0, dy) : res + min(0, dy), max(0, dx) : res + min(0, dx)]
                b = lab[max(0, -dy) : res + min(0, -dy), max(0, -dx) : res + min(0, -dx)]
                if np.any((a >= 0) & (b >= 0) & (a != b)):
                    return r / sub
    return float("inf")


@pytest.mark.parametrize("faces", [3000, 9000])  # xatlas's brute-force packing, and its random search
def test_charts_are_padding_texels_apart_and_not_much_more(faces):
    """The padding is the gap between charts in the final atlas: at least ``padding`` texels (so bilinear
    and mip filtering stay clean), and not a wide margin of area no triangle uses."""
    mesh = decimate(extract(Sphere(0.3), ExtractConfig(resolution=64)), DecimateConfig(faces=faces))[0]
    out, counts = unwrap(mesh, UnwrapConfig(padding=2), 256)
    assert counts["engine"] == "xatlas"
    assert 2.0 <= chart_gap(out, 256) <= 4.0


def test_split_pieces_is_a_partition_into_compact_pieces_of_bounded_size():
    from meshforge.mesh.uv import split_pieces

    mesh = extract(Sphere(0.3), ExtractConfig(resolution=48))
    pieces = split_pieces(mesh.vertices, mesh.faces, 1000)
    sizes = np.array([len(p) for p in pieces])
    assert len(pieces) >= mesh.n_faces // 1000 and sizes.max() <= 1000 and sizes.min() >= 500
    assert np.array_equal(np.sort(np.concatenate(pieces)), np.arange(mesh.n_faces))  # each face once
    # median cuts: a piece's faces lie in a box much smaller than the sphere's
    centroids = mesh.vertices[mesh.faces].mean(axis=1)
    extent = np.array([np.ptp(centroids[p], axis=0).max() for p in pieces])
    assert extent.max() < 0.6 * np.ptp(centroids, axis=0).max()


def test_large_mesh_is_unwrapped_in_pieces_with_one_texel_density():
    """Above three pieces' worth of faces, xatlas runs on pieces in parallel workers and the pieces' charts
    are packed together: same faces in the same order at the same corners, no overlap, one texel density
    over the whole atlas (a piece's UV area over its surface area is the same for every piece)."""
    from meshforge.geometry.raster import uv_triangle_areas
    from meshforge.geometry.topology import face_areas
    from meshforge.mesh.uv import split_pieces

    mesh = decimate(extract(Sphere(0.3), ExtractConfig(resolution=64)), DecimateConfig(faces=6000))[0]
    cfg = UnwrapConfig(padding=2, piece_faces=1000)
    out, counts = unwrap(mesh, cfg, 512)
    assert counts["engine"] == "xatlas" and "fallback" not in counts and counts["pieces"] >= 6
    assert out.n_faces == mesh.n_faces
    assert np.array_equal(out.vertices[out.faces], mesh.vertices[mesh.faces])  # corner by corner
    assert out.uv.min() >= 0 and out.uv.max() <= 1
    assert uv_overlap_ratio(out) == pytest.approx(1.0, abs=0.03)
    assert counts["stretch"] < 1.05 and counts["utilisation"] > 0.5
    density = [
        uv_triangle_areas(out.uv, out.faces[p]).sum() / face_areas(mesh.vertices, mesh.faces[p]).sum()
        for p in split_pieces(mesh.vertices, mesh.faces, cfg.piece_faces)
    ]
    assert max(density) / min(density) == pytest.approx(1.0, abs=0.05)
    assert 2.0 <= chart_gap(out, 512) <= 4.0


def test_pieces_past_the_time_limit_fall_back_to_the_face_atlas(low_sphere):
    mesh, counts = unwrap(low_sphere, UnwrapConfig(time_limit=1e-4, piece_faces=500), 256)
    assert counts["engine"] == "faces" and "time limit" in counts["fallback"] and "pieces" not in counts
    assert uv_overlap_ratio(mesh) == pytest.approx(1.0, abs=0.03)


def test_piece_size_cuts_large_meshes_and_meshes_of_few_large_parts_only(monkeypatch):
    import trimesh

    from meshforge.mesh import uv as uv_module
    from meshforge.mesh.uv import LARGE_MESH_FACES, MAX_PIECES, piece_size

    ball = trimesh.creation.icosphere(subdivisions=4)  # one part of 5,120 faces
    v, f = np.asarray(ball.vertices, np.float32), np.asarray(ball.faces, np.int64)
    assert piece_size(v, f, 600) == 600
    assert piece_size(v, f, 2000) is None  # not over three pieces' worth
    assert piece_size(v, f, 0) is None
    # twenty small parts of 320 faces: small charts already, cutting only adds seams
    small = trimesh.creation.icosphere(subdivisions=2)
    sv, sf = np.asarray(small.vertices, np.float32), np.asarray(small.faces, np.int64)
    many_v = np.concatenate([sv + 3.0 * i for i in range(20)])
    many_f = np.concatenate([sf + len(sv) * i for i in range(20)])
    assert piece_size(many_v, many_f, 600) is None
    # past LARGE_MESH_FACES every mesh is cut, into at most MAX_PIECES pieces
    many_v = np.concatenate([sv + 3.0 * i for i in range(100)])
    many_f = np.concatenate([sf + len(sv) * i for i in range(100)])
    assert len(many_f) > LARGE_MESH_FACES
    assert piece_size(many_v, many_f, 300) == int(np.ceil(len(many_f) / MAX_PIECES))  # 500 faces a piece
    assert piece_size(many_v, many_f, 600) == 600
    # a much larger mesh: MAX_PIECES pieces would exceed MAX_PIECE_FACES, so there are more pieces
    monkeypatch.setattr(uv_module, "MAX_PIECE_FACES", 400)
    assert piece_size(many_v, many_f, 300) == 400
    assert piece_size(many_v, many_f, 600) == 600  # piece_faces stays the floor


@pytest.mark.parametrize("time_limit", [60.0, 0.0])  # worker processes (one queue), and in this process
def test_a_distorted_piece_is_redone_in_halves(monkeypatch, time_limit):
    """A piece whose charts' stretch passes PIECE_STRETCH is unwrapped again in two halves, and a half still over
    it again, up to _REDO_LEVELS times (here every piece, with the threshold below any stretch): twice the
    pieces per level while the halves come out less stretched, the same valid atlas guarantees; halves more
    stretched than their piece are thrown away and the piece stays."""
    from meshforge.geometry.raster import uv_stretch
    from meshforge.mesh import uv as uv_module

    mesh = decimate(extract(Sphere(0.3), ExtractConfig(resolution=64)), DecimateConfig(faces=6000))[0]
    cfg = UnwrapConfig(padding=2, piece_faces=1000, time_limit=time_limit)
    _, first = unwrap(mesh, cfg, 512)
    assert first["pieces_redone"] == 0
    monkeypatch.setattr(uv_module, "PIECE_STRETCH", 0.5)
    monkeypatch.setattr(uv_module, "STRETCH_IN_WORKER", False)  # measured here, by the patched uv_stretch
    # the pieces' stretch as the redo sees it: larger pieces more stretched (halving pays) ...
    monkeypatch.setattr(uv_module, "uv_stretch", lambda v, uv, f: 1.0 + len(f) / 1e4)
    for levels in (1, 2):
        monkeypatch.setattr(uv_module, "_REDO_LEVELS", levels)
        out, again = unwrap(mesh, cfg, 512)
        assert again["pieces"] == 2**levels * first["pieces"]
        assert again["pieces_redone"] == sum(2**k * first["pieces"] for k in range(1, levels + 1))
        assert np.array_equal(out.vertices[out.faces], mesh.vertices[mesh.faces])
        assert uv_overlap_ratio(out) == pytest.approx(1.0, abs=0.03)
        assert uv_stretch(out.vertices, out.uv, out.faces) < 1.05
    # ... or smaller pieces more stretched: every piece's halves are tried once, and thrown away
    monkeypatch.setattr(uv_module, "uv_stretch", lambda v, uv, f: 1.0 + 100.0 / len(f))
    out, kept = unwrap(mesh, cfg, 512)
    assert kept["pieces"] == first["pieces"] and kept["pieces_redone"] == 2 * first["pieces"]
    assert kept["charts"] == first["charts"]
    assert np.array_equal(out.vertices[out.faces], mesh.vertices[mesh.faces])


def test_a_dust_of_fragments_falls_back_to_the_face_atlas_without_packing(monkeypatch):
    """Separate triangles (a random decoder's dust) make one chart each: past MAX_PACK_CHARTS the unwrap
    says so and uses the per-face atlas instead of packing them one by one."""
    from meshforge.mesh import uv as uv_module

    monkeypatch.setattr(uv_module, "MAX_PACK_CHARTS", 1000)
    monkeypatch.setattr(uv_module, "LARGE_MESH_FACES", 1000)  # cut into pieces, as a 949k-face dust is
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 1, (1500, 1, 3)) + rng.normal(0, 0.01, (1500, 3, 3))
    dust = uv_module.Mesh(corners.reshape(-1, 3).astype(np.float32), np.arange(4500, dtype=np.int32).reshape(-1, 3))
    out, counts = unwrap(dust, UnwrapConfig(piece_faces=200), 256)
    assert counts["engine"] == "faces" and "1500 charts" in counts["fallback"], counts
    assert out.n_faces == 1500 and uv_overlap_ratio(out) == pytest.approx(1.0, abs=0.03)


def test_worker_requests_take_follow_ups_and_a_failing_follow_up_ends_the_run():
    """``_run_requests``' follow-ups join the queue and come back after the first requests, in order; a follow-up
    that raises ends the run with a one-line reason instead of leaving the other workers waiting."""
    from meshforge.mesh import uv as uv_module

    mesh = decimate(extract(Sphere(0.3), ExtractConfig(resolution=32)), DecimateConfig(faces=400))[0]
    options = {"resolution": 256, "padding": 0, "max_chart_area": None, "brute_force": False}
    req = (mesh.vertices.astype(np.float64), mesh.faces.astype(np.int32), options, 0.0)
    seen: list[int] = []

    def follow(i, result):  # type: ignore[no-untyped-def]
        seen.append(i)
        assert result["atlas_count"] == 1
        return [req] if i < 2 else []  # each of the first two asks for one more

    out = uv_module._run_requests([req, req], 60.0, follow)
    assert isinstance(out, list) and len(out) == 4 and sorted(seen) == [0, 1, 2, 3]
    assert all(r["charts"] == out[0]["charts"] for r in out)

    def broken(i, result):  # type: ignore[no-untyped-def]
        raise ValueError("no good")

    failed = uv_module._run_requests([req, req, req], 60.0, broken)
    assert isinstance(failed, str) and "follow-up" in failed and "no good" in failed


def test_worker_requests_fed_while_running_are_numbered_as_they_join():
    """Requests fed by the calling thread (the pieces as the split makes them) join the running queue: each is
    made under the queue's lock, numbered as it joins (follow-ups may come between them), and all come back;
    a feed that raises ends the run after the workers finish what they have, and the error propagates."""
    from meshforge.mesh import uv as uv_module

    mesh = decimate(extract(Sphere(0.3), ExtractConfig(resolution=32)), DecimateConfig(faces=400))[0]
    options = {"resolution": 256, "padding": 0, "max_chart_area": None, "brute_force": False}
    req = (mesh.vertices.astype(np.float64), mesh.faces.astype(np.int32), options, 0.0)
    made: list[str] = []

    def maker(name):  # type: ignore[no-untyped-def]
        def make():  # type: ignore[no-untyped-def]
            made.append(name)
            return req

        return make

    followed: list[int] = []

    def follow(i, result):  # type: ignore[no-untyped-def]
        followed.append(i)
        return [req] if i == 0 else []  # the first asks for one more

    out = uv_module._run_requests([], 60.0, follow, feed=(maker(n) for n in "abc"), fed=3)
    assert made == ["a", "b", "c"]
    assert isinstance(out, list) and len(out) == 4 and sorted(followed) == [0, 1, 2, 3]
    assert all(r["charts"] == out[0]["charts"] for r in out)

    def feed():  # type: ignore[no-untyped-def]
        yield maker("d")
        raise RuntimeError("the split failed")

    with pytest.raises(RuntimeError, match="the split failed"):
        uv_module._run_requests([], 60.0, None, feed=feed(), fed=2)
    assert made[-1] == "d"


def test_count_pieces_is_the_number_split_pieces_makes():
    from meshforge.mesh.uv import count_pieces, split_pieces

    rng = np.random.default_rng(3)
    for n, size in [(1, 5), (10, 10), (11, 10), (1000, 313), (20_000, 313), (777, 50)]:
        faces = rng.integers(0, 50, (n, 3))
        vertices = rng.normal(size=(50, 3))
        assert count_pieces(n, size) == len(split_pieces(vertices, faces, size))
