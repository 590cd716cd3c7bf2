"""The fused Triton kernels of the GPU decimation (mesh/qem_triton.py) against their torch references.

Marked ``gpu`` (Triton compiles for CUDA devices only): run on the device. The inputs are a real round's: the
edges, quadrics and candidate collapses of a marching-cubes sphere and of spot.glb."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from meshforge.config import CleanConfig, DecimateConfig, ExtractConfig
from meshforge.eval.metrics import chamfer_distance
from meshforge.fields.isosurface import extract
from meshforge.io.meshes import load_mesh
from meshforge.mesh import qem_triton
from meshforge.mesh import torch_decimate as td
from meshforge.mesh.clean import clean
from meshforge.optimize import flatten

from ..fields.test_isosurface import Sphere

#: TRITON_INTERPRET=1 runs the kernels on CPU tensors (Triton's interpreter), for a check without a GPU
DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
needs_triton = pytest.mark.skipif(
    not qem_triton.AVAILABLE or (DEVICE == "cuda" and not torch.cuda.is_available()),
    reason="needs Triton and a CUDA device (or TRITON_INTERPRET=1)",
)
pytestmark = [pytest.mark.gpu, needs_triton]


def _round_inputs(mesh):
    """Unit-scale positions, quadrics and edges of a mesh, as a first round sees them, on DEVICE."""
    v = torch.from_numpy(mesh.vertices).to(DEVICE, torch.float64)
    f = torch.from_numpy(mesh.faces).to(DEVICE).long()
    lo, hi = v.amin(0), v.amax(0)
    pos = (v - 0.5 * (lo + hi)) / torch.linalg.vector_norm(hi - lo)
    e = td._edges(f, pos.shape[0])
    q = td._quadrics(pos, f, e)
    border = td._mark(pos.shape[0], (e["a"], e["b"]), e["count"] == 1)
    interior = e["count"] == 2
    fixed_a = interior & border[e["a"]] & ~border[e["b"]]
    fixed_b = interior & border[e["b"]] & ~border[e["a"]]
    return pos, f, q, e, fixed_a, fixed_b


@pytest.fixture(scope="module")
def meshes(shared_assets):
    spot = clean(flatten(load_mesh(shared_assets / "spot.glb")), CleanConfig(min_component_fraction=0.0))[0]
    sphere = extract(Sphere(0.3), ExtractConfig(resolution=64))
    # an open disc: border edges, and edges from the border inwards (fixed endpoints)
    from .test_clean_decimate import _disc

    return [spot, sphere, _disc()]


def test_edge_costs_match_the_torch_reference(meshes):
    for mesh in meshes:
        pos, _, q, e, fixed_a, fixed_b = _round_inputs(mesh)
        want = td.edge_costs_torch(q, pos, e["a"], e["b"], fixed_a, fixed_b)
        got = qem_triton.edge_costs_triton(q, pos, e["a"], e["b"], fixed_a, fixed_b)
        cands, costs, cost, target = got
        # the endpoints and the midpoint are exact; the quadric's minimiser solves a 3×3 system that may be badly
        # conditioned, where fused multiply-adds move it (and may flip its "solvable" test): most agree closely
        assert torch.allclose(cands[:, :3], want[0][:, :3], rtol=1e-12, atol=1e-15)
        near = (cands[:, 3] - want[0][:, 3]).abs().amax(1) <= 1e-9
        assert float(near.double().mean()) > 0.99
        assert torch.equal(torch.isinf(costs), torch.isinf(want[1]))  # the same positions barred
        finite = torch.isfinite(want[1])
        finite[:, 3] &= near
        # xᵀQx cancels to nearly 0 on flat regions: rounding is relative to the terms, i.e. to the largest costs
        atol = 1e-10 * float(want[1][finite].max())
        assert torch.allclose(costs[finite], want[1][finite], rtol=1e-9, atol=atol)
        agree = near & torch.isfinite(want[2])
        assert torch.allclose(cost[agree], want[2][agree], rtol=1e-9, atol=atol)
        # the cheapest position: the same one, except between positions that cost the same within rounding
        same = (target - want[3]).abs().amax(1) <= 1e-9
        assert float(same.double().mean()) > 0.99
        assert torch.allclose(cost[agree & ~same], want[2][agree & ~same], rtol=1e-6, atol=atol)
        if fixed_a.any():
            assert torch.equal(target[fixed_a], pos[e["a"][fixed_a]])


def test_collapse_faults_match_the_torch_reference(meshes):
    for mesh in meshes:
        pos, f, q, e, fixed_a, fixed_b = _round_inputs(mesh)
        cands, _, _, _ = td.edge_costs_torch(q, pos, e["a"], e["b"], fixed_a, fixed_b)
        nv = pos.shape[0]
        prio = td._hash(e["key"])
        # independent collapses, as a round picks them
        chosen = torch.nonzero(td.local_minima_torch(prio, None, e["a"], e["b"], f, nv)).squeeze(1)
        ca, cb = e["a"][chosen], e["b"][chosen]
        # the real candidates, and the same pushed off the surface by up to three edge lengths (many flips)
        length = torch.linalg.vector_norm(pos[cb] - pos[ca], dim=1)[:, None, None]
        g = torch.Generator(device="cpu").manual_seed(0)
        push = torch.randn(cands[chosen].shape, generator=g, dtype=torch.float64).to(pos.device) * length
        cid = torch.full((nv,), -1, dtype=torch.long, device=pos.device)
        cid[ca] = torch.arange(ca.numel(), device=pos.device)
        cid[cb] = torch.arange(ca.numel(), device=pos.device)
        face_c = cid[f].amax(1)
        touched = torch.nonzero(face_c >= 0).squeeze(1)
        f_t, c_t = f[touched], face_c[touched]
        refused = 0
        for targets in (cands[chosen], cands[chosen] + push):
            for limits in [(0.5, 100.0, 1e-12, float("inf")), (0.2, float("inf"), 1e-12, 1e-3)]:
                want = td.collapse_faults_torch(pos, f_t, c_t, ca, cb, targets, limits)
                got = qem_triton.collapse_faults_triton(pos, f_t, c_t, ca, cb, targets, limits)
                assert got.dtype == want.dtype == torch.int32
                assert torch.equal(got, want)
                refused += int((want > 0).sum())
        assert refused > 100  # many positions of many collapses are refused: the comparison can fail


def test_common_neighbours_match_the_torch_reference(meshes):
    for mesh in meshes:
        pos, _, _, e, _, _ = _round_inputs(mesh)
        nv = pos.shape[0]
        deg = torch.bincount(torch.cat([e["a"], e["b"]]), minlength=nv)
        src, dst = td._adjacency(e)
        # every edge, both ways round (the link condition looks from ``ca``'s side)
        for ca, cb in ((e["a"], e["b"]), (e["b"], e["a"])):
            first, count = torch.searchsorted(src, ca), deg[ca]
            want = td.common_neighbours_torch(ca, cb, first, count, dst, e["key"], nv)
            got = qem_triton.common_neighbours_triton(ca, cb, first, count, dst, e["key"], nv)
            assert got.dtype == torch.int64 and torch.equal(got, want)
            # a closed manifold's interior edge has its two opposite vertices in common; the disc's border edges one
            assert set(want.unique().tolist()) <= {1, 2, 3, 4} and int((want == 2).sum()) > 0.5 * want.numel()
        # vertex pairs that are no edge (two apart along a face's diagonal of a neighbour): counts too
        far = torch.roll(e["b"], 7)
        first, count = torch.searchsorted(src, e["a"]), deg[e["a"]]
        want = td.common_neighbours_torch(e["a"], far, first, count, dst, e["key"], nv)
        assert torch.equal(qem_triton.common_neighbours_triton(e["a"], far, first, count, dst, e["key"], nv), want)


def test_edge_flags_match_the_torch_reference(meshes):
    """Which edges may collapse and which keep an endpoint: the same flags both ways, on closed surfaces, an open
    disc (border edges, edges from the border inwards) and the disc with a fin (edges of three faces)."""
    fin = meshes[2]
    extra = np.array([[fin.faces[0, 0], fin.faces[0, 1], fin.n_vertices]])  # a third face on the first face's edge
    fin_v = np.concatenate([fin.vertices, fin.vertices[fin.faces[0]].mean(0, keepdims=True) + [0, 0, 0.1]])
    cases = [(m.vertices, m.faces) for m in meshes] + [(fin_v, np.concatenate([fin.faces, extra]))]
    for vertices, faces in cases:
        f = torch.from_numpy(np.asarray(faces)).to(DEVICE).long()
        nv = len(vertices)
        e = td._edges(f, nv)
        deg = torch.bincount(torch.cat([e["a"], e["b"]]), minlength=nv)
        args = (e["a"], e["b"], e["count"], e["opp0"], e["opp1"], deg, nv)
        want = td.edge_flags_torch(*args)
        got = qem_triton.edge_flags_triton(*args)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == torch.bool and torch.equal(g, w)
        assert int(want[0].sum()) > 0.5 * e["a"].numel()  # most edges may collapse
    # the fin's edge may not collapse
    assert int((e["count"] > 2).sum()) == 1 and int(want[0][e["count"] > 2].sum()) == 0
    assert int(want[1].sum()) + int(want[2].sum()) > 0  # the disc's edges from the border inwards keep it


def test_local_minima_and_blocking_match_the_torch_reference(meshes):
    """A round's selection passes, both ways: the local minima of the priorities among the free vertices' edges,
    then the faces around the taken ones blocked; the same edges and the same free vertices after every pass."""
    for mesh in meshes:
        pos, f, _, e, _, _ = _round_inputs(mesh)
        nv = pos.shape[0]
        a, b = e["a"], e["b"]
        prio = td._hash(e["key"])
        prio[::5] = td._BIG  # some edges take no part
        free_t = torch.ones(nv, dtype=torch.bool, device=pos.device)
        free_k = free_t.clone()
        prio_t, prio_k = prio.clone(), prio.clone()
        picked_total = 0
        for p in range(4):
            want = td.local_minima_torch(prio_t, free_t, a, b, f, nv)
            got = qem_triton.local_minima_triton(prio_k, free_k, a, b, f, nv)
            assert got.dtype == torch.bool and torch.equal(got, want)
            picked_total += int(want.sum())
            # independent: no face holds endpoints of two picked edges
            owner = torch.full((nv,), -1, dtype=torch.long, device=pos.device)
            idx = torch.nonzero(want).squeeze(1)
            owner[a[idx]] = idx
            owner[b[idx]] = idx
            o = owner[f]
            assert not bool(((o[:, 0] >= 0) & (o[:, 1] >= 0) & (o[:, 0] != o[:, 1])).any())
            prio_t.masked_fill_(want, td._BIG)
            prio_k.masked_fill_(got, td._BIG)
            if p == 0:  # the first pass blocks around the collapses that passed their checks: here every other one
                keep = torch.arange(idx.numel(), device=pos.device) % 2 == 0
                td.block_around_torch(free_t, a[idx], b[idx], f, keep)
                out = qem_triton.block_around_triton(free_k, a[idx], b[idx], f, keep)
            else:
                td.block_around_torch(free_t, a, b, f, want)
                out = qem_triton.block_around_triton(free_k, a, b, f, got)
            assert out is free_k and torch.equal(free_k, free_t)
            assert 0 < int(free_t.sum()) < nv or p > 0
        assert picked_total > 0.05 * a.numel()  # the passes pick many edges: the comparison can fail
        # all vertices free (None) is the reference of the round's first selection
        assert torch.equal(
            qem_triton.local_minima_triton(prio, None, a, b, f, nv), td.local_minima_torch(prio, None, a, b, f, nv)
        )


@pytest.mark.skipif(DEVICE != "cuda", reason="a whole decimation: on the GPU")
def test_fused_decimation_matches_the_torch_rounds(meshes, monkeypatch):
    spot = meshes[0]
    v = torch.from_numpy(spot.vertices).cuda()
    f = torch.from_numpy(spot.faces).cuda()
    fused, fused_counts = td.decimate_torch(v, f, DecimateConfig(faces=2_000))
    again, _ = td.decimate_torch(v, f, DecimateConfig(faces=2_000))  # the same bits every run (no float atomics)
    assert np.array_equal(again.faces, fused.faces) and np.array_equal(again.vertices, fused.vertices)
    monkeypatch.setattr(td, "FUSED", False)
    plain, _ = td.decimate_torch(v, f, DecimateConfig(faces=2_000))
    assert 1_900 <= fused.n_faces <= 2_000 and fused_counts["watertight"] and fused_counts["slivers_over_100"] == 0
    assert abs(fused.n_faces - plain.n_faces) <= 20
    assert chamfer_distance(fused, plain, n_samples=30_000) <= 5e-4

    # the surfaces' area-weighted centroids (the vertices' mean follows the tessellation: 0.3 % apart here)
    def centroid(mesh):
        t = mesh.vertices[mesh.faces].astype(np.float64)
        area = np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)
        return (area[:, None] * t.mean(1)).sum(0) / area.sum()

    diagonal = float(np.linalg.norm(np.ptp(spot.vertices, axis=0)))
    np.testing.assert_allclose(centroid(fused), centroid(plain), atol=5e-4 * diagonal)


def test_round_edges_match_the_torch_edges(meshes):
    for mesh in meshes:
        pos, f, _, e, _, _ = _round_inputs(mesh)
        nv = pos.shape[0]
        edges, deg, marks = qem_triton.round_edges(f.contiguous(), nv)
        assert edges.shape == (6, e["a"].numel())
        for row, name in enumerate(("a", "b")):
            assert torch.equal(edges[row], e[name])
        assert torch.equal(edges[2], e["count"].clamp_max(3))
        assert torch.equal(edges[3], e["opp0"]) and torch.equal(edges[4], e["opp1"])
        assert torch.equal(edges[5], e["key"])
        assert torch.equal(deg, torch.bincount(torch.cat([e["a"], e["b"]]), minlength=nv))
        border = td._mark(nv, (e["a"], e["b"]), e["count"] == 1)
        assert torch.equal(marks[0] != 0, border) and bool(border.any()) == (mesh is meshes[2])
        assert not marks[1].any()


def _rounds(mesh, n_rounds):
    """``n_rounds`` rounds towards half the faces, each from the torch round's result, and the fused round's results
    beside (the same inputs), with the refused keys of each round the next one's skip list."""
    pos, f, q, _, _, _ = _round_inputs(mesh)
    goal = f.shape[0] // 2
    skip = None
    out = []
    for _ in range(n_rounds):
        args = (pos, f, q, goal, td.DEGENERATE_AREA, td.CANDIDATE_FRACTION, td.GUARDS[0])
        want = td._round(pos.clone(), f, q.clone(), *args[3:], skip)
        got = qem_triton.fused_round(pos.clone(), f, q.clone(), *args[3:], skip, 1, float("inf"), td.PASSES, 8)
        out.append((want, got))
        pos, f, q, _, _, skip = want
    return out


def test_a_fused_round_collapses_what_the_torch_round_does(meshes):
    """The whole round in Triton kernels (fused_round) against _round — on a GPU with its per-step kernels (the
    same arithmetic: the torch references may round the costs differently in the last bits), in Triton's
    interpreter with the torch references: the same collapses (faces, positions, quadrics), counts and refused
    keys, round after round; and restricted to given edges (the sliver rounds: only those keys, a plane
    tolerance) the same again."""
    collapsed = 0
    for mesh in meshes[1:]:
        for want, got in _rounds(mesh, 3):
            assert got[3] == want[3] and got[4] == want[4]
            assert torch.equal(got[1], want[1]) and torch.equal(got[5], want[5])
            assert torch.allclose(got[0], want[0], rtol=0, atol=1e-12)
            assert torch.allclose(got[2], want[2], rtol=1e-9, atol=1e-18)
            collapsed += want[3]
    assert collapsed > 300  # the rounds collapse many edges: the comparison can fail
    # only the short edges of some faces may collapse, each moving the surface by at most 1e-3
    pos, f, q, e, _, _ = _round_inputs(meshes[1])
    only = torch.sort(e["key"][::7])[0]
    args = (0, td.DEGENERATE_AREA, 1.0, td.GUARDS[0])
    want = td._round(pos.clone(), f, q.clone(), *args, only=only, tol=1e-3)
    got = qem_triton.fused_round(pos.clone(), f, q.clone(), *args, only, 2, 1e-3, td.PASSES, 8)
    assert want[3] > 10 and got[3] == want[3] and torch.equal(got[1], want[1])
    assert torch.allclose(got[0], want[0], rtol=0, atol=1e-12)
