"""The PyTorch QEM decimation (mesh/torch_decimate.py) and the engine choice (mesh/finish_engine.py).

CPU tensors here; the ``gpu`` tests (skipped without CUDA) run the same on a CUDA device and compare the result
with the CPU tensors' and with the CPU path's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meshforge.config import CleanConfig, DecimateConfig, ExtractConfig
from meshforge.eval.metrics import chamfer_distance, orientation
from meshforge.fields.isosurface import extract
from meshforge.geometry.normals import face_normals
from meshforge.geometry.topology import topology
from meshforge.io.meshes import load_mesh
from meshforge.mesh.clean import clean
from meshforge.mesh.decimate import decimate
from meshforge.mesh.finish_engine import clean_and_decimate, finish_engine
from meshforge.mesh.torch_decimate import decimate_torch
from meshforge.optimize import flatten
from meshforge.types import Mesh

from ..fields.test_isosurface import Sphere, signed_volume
from .test_clean_decimate import _disc

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
OPTIMIZE = CleanConfig(min_component_fraction=0.0, orient=False)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine torch's thread pool spends more time waiting than working
    on these small tensors (results do not depend on it)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def run(mesh: Mesh, budget: int, device: str = "cpu") -> tuple[Mesh, dict]:
    v = torch.from_numpy(mesh.vertices).to(device)
    f = torch.from_numpy(mesh.faces).to(device)
    return decimate_torch(v, f, DecimateConfig(faces=budget))


@pytest.fixture(scope="module")
def spot(shared_assets) -> Mesh:
    return clean(flatten(load_mesh(shared_assets / "spot.glb")), OPTIMIZE)[0]


@pytest.fixture(scope="module")
def sphere() -> Mesh:
    return extract(Sphere(0.3), ExtractConfig(resolution=96))  # scikit-image marching cubes, 54k faces


def test_spot_to_2000_faces_is_closed_faithful_and_keeps_its_winding(spot):
    low, counts = run(spot, 2_000)
    assert 1_900 <= low.n_faces <= 2_000
    topo = topology(low.vertices, low.faces)
    assert topo.watertight and topo.nonmanifold_edges == 0 and topo.inconsistent_edges == 0
    assert counts["watertight"] and counts["degenerate_faces"] == 0 and counts["slivers_over_100"] == 0
    winding = orientation(low, spot, n_samples=30_000)
    assert winding["facing_away_faces"] == 0, winding
    ours = chamfer_distance(low, spot, n_samples=30_000)
    ref, _ = decimate(spot, DecimateConfig(faces=2_000))
    cpu = chamfer_distance(ref, spot, n_samples=30_000)
    assert ours <= 0.01 and ours <= 1.5 * cpu, (ours, cpu)


def test_the_result_checks_can_be_left_to_the_caller(sphere):
    """``deferred``: the topology check and sliver counts are not computed by the decimation but appended as a
    function (the pipeline runs it beside the unwrap): the same mesh, and the function gives the same facts."""
    from meshforge.mesh import torch_decimate as td

    v, f = torch.from_numpy(sphere.vertices), torch.from_numpy(sphere.faces.astype(np.int64))
    want_mesh, want = td.decimate_torch(v, f, DecimateConfig(faces=2_000))
    later: list = []
    got_mesh, got = td.decimate_torch(v, f, DecimateConfig(faces=2_000), deferred=later)
    assert np.array_equal(got_mesh.faces, want_mesh.faces) and np.array_equal(got_mesh.vertices, want_mesh.vertices)
    assert len(later) == 1 and "watertight" not in got and "slivers_over_100" not in got
    facts = later[0]()
    assert facts["watertight"] and {**got, **facts} == want


def test_isosurface_decimates_closed_with_its_volume(sphere):
    low, counts = run(sphere, 2_000)
    assert 1_800 < low.n_faces <= 2_000
    topo = topology(low.vertices, low.faces, area_eps=1e-14)
    assert topo.watertight and topo.degenerate_faces == 0 and topo.inconsistent_edges == 0
    assert counts["slivers_over_100"] == 0 and counts["rounds"] > 1
    assert signed_volume(low.vertices, low.faces) == pytest.approx(4 / 3 * np.pi * 0.3**3, rel=0.03)
    # no face turned over: every face normal points away from the centre, as on the dense sphere
    _, n = face_normals(low.vertices, low.faces)
    centroids = low.vertices[low.faces].mean(1)
    assert ((n * centroids).sum(1) > 0).all()


def test_open_disc_keeps_its_border_and_winding():
    disc = _disc(rings=16, around=64)
    rim = np.isclose(np.hypot(disc.vertices[:, 0], disc.vertices[:, 1]), 0.9, atol=1e-6)
    low, counts = run(disc, 300)
    assert low.n_faces <= 300 and counts["inconsistent_edges"] == 0 and counts["nonmanifold_edges"] == 0
    assert (face_normals(low.vertices, low.faces)[1][:, 2] > 0.99).all()
    # the border stays on the rim: every border vertex is one of the rim's, the border still one loop around it
    topo = topology(low.vertices, low.faces)
    assert topo.boundary_edges >= 8 and topo.components == 1
    r = np.hypot(low.vertices[:, 0], low.vertices[:, 1])
    on_border = np.unique(_border_vertices(low))
    assert np.allclose(r[on_border], 0.9, atol=1e-5) and rim.sum() >= len(on_border)
    area = (
        0.5
        * np.linalg.norm(
            np.cross(*(low.vertices[low.faces][:, 1:] - low.vertices[low.faces][:, :1]).transpose(1, 0, 2)), axis=1
        ).sum()
    )
    assert area == pytest.approx(0.5 * 64 * 0.9**2 * np.sin(2 * np.pi / 64), rel=0.1)


def _border_vertices(mesh: Mesh) -> np.ndarray:
    f = mesh.faces.astype(np.int64)
    e = np.sort(np.stack([f, np.roll(f, -1, axis=1)], 2).reshape(-1, 2), axis=1)
    uniq, counts = np.unique(e, axis=0, return_counts=True)
    return uniq[counts == 1].ravel()


def test_non_manifold_source_gets_no_new_non_manifold_edges(shared_assets):
    cake = clean(flatten(load_mesh(shared_assets / "kenney_cakeBirthday.glb")), OPTIMIZE)[0]
    before = topology(cake.vertices, cake.faces)
    low, _ = run(cake, 500)
    after = topology(low.vertices, low.faces)
    assert low.n_faces <= 500
    assert after.nonmanifold_edges <= before.nonmanifold_edges and after.boundary_edges <= before.boundary_edges
    assert after.components == before.components


def test_a_budget_below_the_parts_floor_keeps_every_part():
    """42 closed parts, budget 100: collapses stop at a tetrahedron per part (168 faces), none flattened."""
    import trimesh

    parts = []
    for i in range(42):
        s = trimesh.creation.icosphere(subdivisions=2, radius=0.1)
        s.apply_translation([1.0 * (i % 7), 1.0 * (i // 7), 0.0])
        parts.append(s)
    m = trimesh.util.concatenate(parts)
    low, _ = run(Mesh(m.vertices.astype(np.float32), m.faces.astype(np.int32)), 100)
    topo = topology(low.vertices, low.faces)
    assert topo.watertight and topo.components == 42 and low.n_faces == 168


def test_within_budget_is_the_cpu_path(sphere):
    low, counts = run(sphere, sphere.n_faces)
    ref, ref_counts = decimate(sphere, DecimateConfig(faces=sphere.n_faces))
    assert counts == ref_counts and np.array_equal(low.faces, ref.faces)


def test_engine_choice_and_the_shared_entry_point(spot):
    assert finish_engine(spot) == "cpu"
    assert finish_engine((torch.from_numpy(spot.vertices), torch.from_numpy(spot.faces))) == "cpu"
    pair = (torch.from_numpy(spot.vertices), torch.from_numpy(spot.faces))
    cleaned, low, clean_counts, counts = clean_and_decimate(pair, OPTIMIZE, DecimateConfig(faces=1_000), engine="torch")
    assert isinstance(cleaned[0], torch.Tensor) and cleaned[1].shape[0] == spot.n_faces
    assert isinstance(low, Mesh) and low.n_faces <= 1_000 and counts["watertight"]
    cpu_cleaned, cpu_low, cpu_clean_counts, _ = clean_and_decimate(spot, OPTIMIZE, DecimateConfig(faces=1_000))
    assert isinstance(cpu_cleaned, Mesh) and cpu_low.n_faces <= 1_000 and cpu_clean_counts == clean_counts
    with pytest.raises(ValueError, match="unknown finishing engine"):
        clean_and_decimate(spot, OPTIMIZE, DecimateConfig(faces=1_000), engine="cuda")


@pytest.mark.gpu
@needs_cuda
def test_cuda_decimates_like_cpu_tensors_and_the_cpu_path(spot, sphere):
    assert finish_engine(torch.from_numpy(spot.vertices).cuda()) == "torch"
    for mesh, budget in [(spot, 2_000), (sphere, 2_000)]:
        on_gpu, gpu_counts = run(mesh, budget, "cuda")
        on_cpu, _ = run(mesh, budget, "cpu")
        ref, _ = decimate(mesh, DecimateConfig(faces=budget))
        assert on_gpu.n_faces <= budget and gpu_counts["watertight"] and gpu_counts["slivers_over_100"] == 0
        assert orientation(on_gpu, mesh, n_samples=30_000)["facing_away_faces"] == 0
        # the bar: within 0.05 % of the diagonal of the CPU result
        assert chamfer_distance(on_gpu, on_cpu, n_samples=30_000) <= 5e-4
        assert chamfer_distance(on_gpu, ref, n_samples=30_000) <= 5e-4
        assert chamfer_distance(on_gpu, mesh, n_samples=30_000) <= 1.5 * chamfer_distance(ref, mesh, n_samples=30_000)


def test_a_stall_above_the_budget_is_reported_not_forced(shared_assets):
    """The birthday cake's parts meet at non-manifold edges: below ~470 faces every remaining collapse would
    break the link condition or a part. The engine stops there, with every part and no new defect, and
    budget_shortfall says why the budget was missed (the CPU engine reaches it by deleting parts)."""
    from meshforge.mesh.decimate import budget_shortfall

    cake = clean(flatten(load_mesh(shared_assets / "kenney_cakeBirthday.glb")), OPTIMIZE)[0]
    before = topology(cake.vertices, cake.faces)
    low, counts = run(cake, 250)
    after = topology(low.vertices, low.faces)
    assert low.n_faces > 250 and counts["faces"] == low.n_faces
    assert after.components == before.components and after.nonmanifold_edges <= before.nonmanifold_edges
    assert after.boundary_edges == 0
    note = budget_shortfall(250, low)
    assert note is not None and f"{low.n_faces} faces" in note


def _pair(lift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A cap (a, b, c) — c 0.02 from the edge a–b — and its neighbour (b, a, d) across that edge, in the z = 0
    plane (d lifted by ``lift``), both wound counter-clockwise seen from +z."""
    pos = torch.tensor(
        [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.02, 0.0], [0.5, -0.8, lift], [0.5, 3.0, 0.0]], dtype=torch.float64
    )
    return pos, torch.tensor([[0, 1, 2], [1, 0, 3]])


def test_caps_flip_their_longest_edge_as_the_cpu_repair_would():
    from meshforge.mesh.decimate import REPAIR_TOLERANCE
    from meshforge.mesh.torch_decimate import _flip_caps, _sliver_faces

    pos, faces = _pair()
    needle, cap, aspect, *_ = _sliver_faces(pos, faces, 1e-12)
    assert cap.tolist() == [True, False] and not needle.any() and float(aspect[0]) == pytest.approx(50.0)
    flipped, n = _flip_caps(pos, faces, 1e-12, REPAIR_TOLERANCE)
    assert n == 1 and flipped.tolist() == [[0, 3, 2], [3, 1, 2]]
    _, units = face_normals(pos.numpy(), flipped.numpy())
    assert (units[:, 2] > 0.99).all()  # the same side up
    assert float(_sliver_faces(pos, flipped, 1e-12)[2].max()) < 5.0
    # not planar within the tolerance: kept (the flip would move the surface)
    _, n = _flip_caps(*_pair(lift=0.5), 1e-12, REPAIR_TOLERANCE)
    assert n == 0
    # the edge c–d exists already (a third face holds it): kept, or it would be shared by three faces
    pos, faces = _pair()
    with_cd = torch.cat([faces, torch.tensor([[2, 3, 4]])])
    _, n = _flip_caps(pos, with_cd, 1e-12, REPAIR_TOLERANCE)
    assert n == 0


def test_needles_give_their_shortest_edge():
    from meshforge.mesh.torch_decimate import _needle_edges

    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.01, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])  # a needle (short edge 2–0), a fat triangle
    assert _needle_edges(pos, faces, 1e-12).tolist() == [0 * 4 + 2]


class Lumps(Sphere):
    """Three overlapping balls (the union of their signed distances): creases where they meet, where the
    decimation leaves slivers."""

    def density(self, p):
        centres = ((0.12, 0, 0), (-0.12, 0.05, 0), (0, -0.1, 0.12))
        balls = [0.22 - np.linalg.norm(p - np.array(c), axis=1) for c in centres]
        return np.maximum(np.maximum(balls[0], balls[1]), balls[2]).astype(np.float32)


def test_the_device_sliver_rounds_leave_the_cpu_repair_fewer_slivers(monkeypatch):
    """Needle collapses and cap flips on the device after the budget is met: the host repair gets fewer slivers,
    the result stays closed and right side out."""
    from meshforge.mesh import torch_decimate as td
    from meshforge.mesh.decimate import MAX_ASPECT, _aspect

    lumps = extract(Lumps(), ExtractConfig(resolution=128))  # 54k faces
    handed: list[int] = []
    original = td.repair

    def spy(mesh, **kw):
        handed.append(int((_aspect(mesh.vertices, mesh.faces.astype(np.int64))[0] > MAX_ASPECT).sum()))
        return original(mesh, **kw)

    monkeypatch.setattr(td, "repair", spy)
    results = []
    for rounds in (0, td.SLIVER_ROUNDS):
        monkeypatch.setattr(td, "SLIVER_ROUNDS", rounds)
        handed.clear()
        results.append((*run(lumps, 6_000), sum(handed)))  # (no call: repair_checks found nothing to repair)
    assert results[0][2] >= 5 and results[1][2] <= results[0][2] // 2
    for low, counts, _ in results:
        assert counts["watertight"] and counts["slivers_over_100"] == 0 and low.n_faces <= 6_000
        assert orientation(low, lumps, n_samples=20_000)["facing_away_faces"] == 0


def test_a_fused_kernel_that_cannot_compile_leaves_the_torch_path_to_answer(sphere, monkeypatch):
    """Triton needs a C compiler for its launcher and a supported GPU: where a fused kernel raises, the decimation
    logs why, takes the torch reference from then on and gives its result; running out of memory still raises."""
    from meshforge.mesh import torch_decimate as td

    want, _ = run(sphere, 2_000)
    monkeypatch.setattr(td, "FUSED_FAILURE", None)
    monkeypatch.setattr(td, "_fused", lambda device: td.FUSED_FAILURE is None)  # as on a CUDA device with Triton
    calls = []

    def broken(*args):
        calls.append(len(args))
        raise RuntimeError("Failed to find C compiler.\nPlease specify via CC environment variable.")

    monkeypatch.setattr(td.qem_triton, "fused_round", broken)  # a whole round in the fused kernels
    monkeypatch.setattr(td, "edge_flags_triton", broken)  # (and the kernels the torch round would call)
    got, _ = run(sphere, 2_000)
    assert calls == [12]  # tried once, then never again in this process
    assert td.FUSED_FAILURE == "Failed to find C compiler. Please specify via CC environment variable."
    assert np.array_equal(got.faces, want.faces) and np.array_equal(got.vertices, want.vertices)

    def out_of_memory(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(td, "FUSED_FAILURE", None)
    monkeypatch.setattr(td.qem_triton, "fused_round", out_of_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run(sphere, 2_000)


def test_the_host_repair_is_skipped_only_when_it_would_change_nothing(sphere):
    """repair_is_noop (on the device, one wait) against what repair() does: a decimated sphere it returns as is; a
    sliver, a repeated vertex or a duplicate face make it work, and the test says so; so does a non-manifold edge
    (which the repair may or may not be able to mend: here it cannot, and keeps it)."""
    from meshforge.mesh.decimate import MAX_ASPECT, _aspect, repair
    from meshforge.mesh.torch_decimate import repair_is_noop

    low, _ = decimate(sphere, DecimateConfig(faces=2_000))
    assert (_aspect(low.vertices, low.faces)[0] <= MAX_ASPECT).all()

    def noop(mesh: Mesh) -> bool:
        return repair_is_noop(torch.from_numpy(mesh.vertices), torch.from_numpy(mesh.faces.astype(np.int64)))

    def unchanged(mesh: Mesh) -> bool:
        fixed = repair(mesh)
        return np.array_equal(fixed.faces, mesh.faces) and np.array_equal(fixed.vertices, mesh.vertices)

    assert noop(low) and unchanged(low)
    f = low.faces
    # a cap: one vertex pulled onto the line through two others (a face with aspect ratio far over 20)
    v = low.vertices.copy()
    a, b, c = f[0]
    v[c] = v[a] + 0.5 * (v[b] - v[a]) + 1e-4 * (v[c] - v[a])
    sliver = low.replace(vertices=v)
    # the same mesh with a face repeating a vertex, a face twice, and two faces glued on an edge (non-manifold)
    repeated = low.replace(faces=np.concatenate([f, [[f[0, 0], f[0, 0], f[0, 1]]]]).astype(f.dtype))
    twice = low.replace(faces=np.concatenate([f, f[:1, ::-1]]).astype(f.dtype))
    other = int(np.setdiff1d(np.arange(low.n_vertices), f[0])[0])
    glued = low.replace(faces=np.concatenate([f, [[f[0, 1], f[0, 0], other]]]).astype(f.dtype))
    for broken in (sliver, repeated, twice):
        assert not noop(broken) and not unchanged(broken)
    assert not noop(glued)
    # the topology checks apart: a sliver on a clean mesh lets the repair skip its whole-mesh checks, same result
    from meshforge.mesh.torch_decimate import repair_checks

    def checks(mesh: Mesh) -> tuple[bool, np.ndarray]:
        return repair_checks(torch.from_numpy(mesh.vertices), torch.from_numpy(mesh.faces.astype(np.int64)))

    clean, suspects = checks(sliver)
    around = set(np.flatnonzero((f == c).any(1)).tolist())
    assert clean and 0 in suspects and set(suspects.tolist()) <= around  # the pulled face, others around its vertex
    assert checks(low)[0] and checks(low)[1].size == 0
    assert all(not checks(m)[0] for m in (repeated, twice, glued))
    # the repair told what the device found: the same result as the full repair's
    for mesh in (sliver, low):
        _, suspects = checks(mesh)
        full = repair(mesh)
        for fast in (repair(mesh, clean_topology=True), repair(mesh, clean_topology=True, suspects=suspects)):
            assert np.array_equal(fast.faces, full.faces) and np.array_equal(fast.vertices, full.vertices)
    assert noop(low.replace(vertices=low.vertices * 3.0))  # scale-free (the area limit follows the diagonal)


def test_vertex_sums_add_in_row_order_without_atomics():
    """The quadrics' per-vertex sums (_vertex_sums): the rows of each vertex added in their order — the bits a
    sequential index_add_ gives — with vertices that have no row left at 0."""
    from meshforge.mesh.torch_decimate import _vertex_sums

    g = torch.Generator().manual_seed(3)
    index = torch.randint(0, 50, (400,), generator=g)
    index[index == 7] = 8  # vertex 7: no rows
    values = torch.randn((400, 10), generator=g, dtype=torch.float64) * torch.logspace(-8, 8, 400)[:, None].double()
    want = torch.zeros((52, 10), dtype=torch.float64).index_add_(0, index, values)
    got = _vertex_sums(index, values, 52)
    assert torch.equal(got, want) and not got[7].any() and not got[50:].any()
    assert _vertex_sums(index[:0], values[:0], 5).shape == (5, 10)
    # rows taken through a source index (the quadrics' faces, each at its three corners)
    source = torch.randint(0, 30, (400,), generator=g)
    want = torch.zeros((52, 10), dtype=torch.float64).index_add_(0, index, values[source])
    assert torch.equal(_vertex_sums(index, values[:30], 52, source), want)
    # a fan's centre (2,000 rows on one vertex among a million): steps by rank, memory by rows
    fan = torch.cat([torch.zeros(2_000, dtype=torch.long), torch.arange(1, 1_000_001)])
    ones = torch.ones((1, 1), dtype=torch.float64)
    sums = _vertex_sums(fan, ones, 1_000_001, torch.zeros_like(fan))
    assert sums[0, 0] == 2_000 and bool((sums[1:, 0] == 1).all())
