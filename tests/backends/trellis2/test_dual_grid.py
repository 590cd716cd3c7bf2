"""Flexible dual grid → mesh (:mod:`meshforge.backends.trellis2.dual_grid`).

The dual grids are made here from a signed distance field by plain dual contouring (intersection flags from
sign changes along the grid edges, dual vertices at the mean of the edge crossings in each voxel), so the
surface the mesh must reproduce is known. The reference rule is re-stated once as a per-quad Python loop
over a dictionary (:func:`loop_reference`) and the vectorised function must give exactly its faces.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meshforge.backends.trellis2.dual_grid import (
    QUAD_NEIGHBOURS,
    CoordinateIndex,
    flexible_dual_grid_to_mesh,
)
from meshforge.geometry.topology import topology

AABB = ((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))


def sdf_dual_grid(
    sdf: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dual contouring of a signed distance sampled at the ``(R+1)³`` corners of an ``R³`` voxel grid.

    Returns:
        ``coords [M, 3]`` int32 (voxels with a sign change on any of their 12 edges), ``dual [M, 3]`` float32
        (mean crossing point, voxel units from the voxel's minimum corner), ``flags [M, 3]`` bool (the edge the
        voxel owns along each axis: through its corner maximal in the two other axes).
    """
    r = sdf.shape[0] - 1
    total = np.zeros((r, r, r, 3))
    count = np.zeros((r, r, r))
    owned = np.zeros((r, r, r, 3), dtype=bool)
    for a in range(3):
        lo = np.take(sdf, np.arange(r), axis=a)
        hi = np.take(sdf, np.arange(1, r + 1), axis=a)
        cross = (lo < 0) != (hi < 0)  # edges along a, indexed by their lower corner
        t = np.where(cross, lo / np.where(cross, lo - hi, 1.0), 0.0)
        corner = np.stack(np.meshgrid(*[np.arange(s) for s in cross.shape], indexing="ij"), -1).astype(np.float64)
        point = corner.copy()
        point[..., a] += t
        others = [b for b in range(3) if b != a]
        for d0 in (0, 1):
            for d1 in (0, 1):
                # the voxel whose edge this is, seen from the voxel at offset (d0, d1) below in the other axes
                sl = [slice(None)] * 3
                sl[others[0]] = slice(d0, d0 + r)
                sl[others[1]] = slice(d1, d1 + r)
                c, p = cross[tuple(sl)], point[tuple(sl)]
                total += np.where(c[..., None], p, 0.0)
                count += c
        sl = [slice(None)] * 3
        sl[others[0]] = slice(1, r + 1)
        sl[others[1]] = slice(1, r + 1)
        owned[..., a] = cross[tuple(sl)]
    active = count > 0
    coords = np.argwhere(active).astype(np.int32)
    mean = total[active] / count[active][:, None]
    return coords, (mean - coords).astype(np.float32), owned[active]


def sphere_grid(res: int = 32, radius: float = 0.35, center=(0.013, -0.021, 0.007)):
    axis = -0.5 + np.arange(res + 1) / res
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    sdf = np.sqrt((x - center[0]) ** 2 + (y - center[1]) ** 2 + (z - center[2]) ** 2) - radius
    return sdf_dual_grid(sdf), np.asarray(center), radius


def loop_reference(coords, dual, flags, lerp, res):
    """The reference's rule, one quad at a time over a dictionary."""
    table = {tuple(int(v) for v in c): i for i, c in enumerate(coords)}
    vertices = (coords.astype(np.float32) + dual.astype(np.float32)) * np.float32(1.0 / res) - np.float32(0.5)
    faces = []
    for i, c in enumerate(coords):
        for a in range(3):
            if not flags[i, a]:
                continue
            q = [table.get(tuple(int(v) for v in c + np.asarray(o))) for o in QUAD_NEIGHBOURS[a]]
            if any(v is None for v in q):
                continue
            if lerp[q[0]] * lerp[q[2]] > lerp[q[1]] * lerp[q[3]]:
                faces += [(q[0], q[1], q[2]), (q[0], q[2], q[3])]
            else:
                faces += [(q[0], q[1], q[3]), (q[3], q[1], q[2])]
    return vertices, np.asarray(faces, dtype=np.int64).reshape(-1, 3)


def signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    t = v.astype(np.float64)[f]
    return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6.0)


@pytest.fixture(scope="module")
def sphere():
    return sphere_grid()


def test_sphere_mesh_is_closed_outward_and_on_the_sphere(sphere):
    (coords, dual, flags), center, radius = sphere
    lerp = torch.ones(len(coords), 1)
    args = (torch.from_numpy(coords), torch.from_numpy(dual), torch.from_numpy(flags), lerp, AABB, 32)
    v, f = flexible_dual_grid_to_mesh(*args, orient=True)
    assert v.dtype == torch.float32 and f.dtype == torch.int64 and v.shape == (len(coords), 3)
    vn, fn = v.numpy(), f.numpy()
    report = topology(vn, fn)
    assert report.watertight and report.inconsistent_edges == 0 and report.degenerate_faces == 0
    assert report.components == 1
    volume = signed_volume(vn, fn)
    assert abs(volume / (4 / 3 * np.pi * radius**3) - 1) < 0.03
    used = np.unique(fn)
    assert len(used) == len(coords)  # every active voxel of a closed sphere is a quad corner
    r = np.linalg.norm(vn[used] - center, axis=1)
    assert np.abs(r - radius).mean() < 0.5 / 32

    # the reference winding: the same triangles, x-quads facing −x, etc. — half of the sphere inwards
    v0, f0 = flexible_dual_grid_to_mesh(*args)
    assert torch.equal(v0, v)
    assert {tuple(sorted(t)) for t in f0.tolist()} == {tuple(sorted(t)) for t in fn.tolist()}
    assert abs(signed_volume(vn, f0.numpy())) < 0.2 * volume
    assert topology(vn, f0.numpy()).inconsistent_edges > 0


def test_faces_and_vertices_equal_the_loop_reference(sphere):
    (coords, dual, flags), _, _ = sphere
    rng = np.random.default_rng(3)
    lerp = rng.uniform(0.1, 2.0, len(coords)).astype(np.float32)
    drop = rng.random(len(coords)) < 0.05  # missing voxels: their quads are skipped
    keep = ~drop
    c, d, fl, w = coords[keep], dual[keep], flags[keep], lerp[keep]
    ref_v, ref_f = loop_reference(c, d, fl, w, 32)
    v, f = flexible_dual_grid_to_mesh(
        torch.from_numpy(c), torch.from_numpy(d), torch.from_numpy(fl), torch.from_numpy(w)[:, None], AABB, 32
    )
    np.testing.assert_array_equal(v.numpy(), ref_v)
    np.testing.assert_array_equal(f.numpy(), ref_f)
    assert 0 < len(ref_f) < 2 * fl.sum()


def test_quad_split_follows_the_weights():
    # one x-edge owned by voxel (1, 1, 1): its four voxels, weights favouring the 1–3 diagonal, then the 0–2
    coords = torch.tensor([[1, 1, 1], [1, 1, 2], [1, 2, 2], [1, 2, 1]])
    dual = torch.full((4, 3), 0.5)
    flags = torch.zeros(4, 3, dtype=torch.bool)
    flags[0, 0] = True
    w = torch.tensor([[1.0], [2.0], [1.0], [2.0]])
    _, f = flexible_dual_grid_to_mesh(coords, dual, flags, w, AABB, 4)
    assert f.tolist() == [[0, 1, 3], [3, 1, 2]]
    _, f = flexible_dual_grid_to_mesh(coords, dual, flags, w.flip(0) * torch.tensor([[3.0], [1], [1], [1]]), AABB, 4)
    assert f.tolist() == [[0, 1, 2], [0, 2, 3]]
    # the quad faces −x (the reference's fixed winding for x-edges)
    v, f = flexible_dual_grid_to_mesh(coords, dual, flags, w, AABB, 4)
    t = v[f]
    normal = torch.linalg.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0], dim=-1)
    assert (normal[:, 0] < 0).all() and (normal[:, 1:].abs() < 1e-7).all()
    # the angle rule (no weights) as the reference writes it picks the 0–2 cut
    _, f = flexible_dual_grid_to_mesh(coords, dual, flags, None, AABB, 4)
    assert f.tolist() == [[0, 1, 2], [0, 2, 3]]


def test_edges_at_the_grid_border_have_no_quad():
    # voxel (3, 3, 3) of a 4³ grid owns x-edge neighbours at y = 4 and z = 4: outside, so no quad
    coords = torch.tensor([[3, 3, 3], [3, 3, 0], [3, 0, 0], [3, 0, 3]])
    flags = torch.tensor([[True, True, True]] + [[False] * 3] * 3)
    v, f = flexible_dual_grid_to_mesh(coords, torch.zeros(4, 3), flags, torch.ones(4, 1), AABB, 4)
    assert f.shape == (0, 3) and v.shape == (4, 3)


def test_empty_input_gives_an_empty_mesh():
    v, f = flexible_dual_grid_to_mesh(
        torch.zeros(0, 3, dtype=torch.int32),
        torch.zeros(0, 3),
        torch.zeros(0, 3, dtype=torch.bool),
        torch.zeros(0, 1),
        AABB,
        64,
        orient=True,
    )
    assert v.shape == (0, 3) and v.dtype == torch.float32
    assert f.shape == (0, 3) and f.dtype == torch.int64


def test_input_dtypes_and_grid_size_forms_agree(sphere):
    (coords, dual, flags), _, _ = sphere
    lerp = np.random.default_rng(5).uniform(0.5, 1.5, (len(coords), 1))
    base_v, base_f = flexible_dual_grid_to_mesh(
        torch.from_numpy(coords),
        torch.from_numpy(dual),
        torch.from_numpy(flags),
        torch.from_numpy(lerp.astype(np.float32)),
        AABB,
        32,
    )
    # int64 coords, float64 dual vertices and weights, a 3-vector grid size, an ndarray box
    v, f = flexible_dual_grid_to_mesh(
        torch.from_numpy(coords.astype(np.int64)),
        torch.from_numpy(dual.astype(np.float64)),
        torch.from_numpy(flags).to(torch.uint8),
        torch.from_numpy(lerp),
        np.asarray(AABB),
        torch.tensor([32, 32, 32]),
    )
    assert v.dtype == torch.float32
    torch.testing.assert_close(v, base_v, rtol=0, atol=0)
    assert torch.equal(f, base_f)
    # a non-cubic grid scales each axis by its own voxel size
    v2, _ = flexible_dual_grid_to_mesh(
        torch.from_numpy(coords), torch.from_numpy(dual), torch.from_numpy(flags), None, AABB, (32, 64, 48)
    )
    expected = (torch.from_numpy(coords).float() + torch.from_numpy(dual)) * torch.tensor(
        [1 / 32, 1 / 64, 1 / 48]
    ) - 0.5
    torch.testing.assert_close(v2, expected, rtol=0, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(sphere):
    (coords, dual, flags), _, _ = sphere
    args = [torch.from_numpy(a) for a in (coords, dual, flags)] + [torch.ones(len(coords), 1)]
    v, f = flexible_dual_grid_to_mesh(*args, AABB, 32)
    vc, fc = flexible_dual_grid_to_mesh(*[a.cuda() for a in args], AABB, 32)
    assert vc.is_cuda and fc.is_cuda
    torch.testing.assert_close(vc.cpu(), v)
    assert torch.equal(fc.cpu(), f)


def test_coordinate_index_matches_a_dictionary():
    rng = np.random.default_rng(0)
    coords = np.unique(rng.integers(0, 9, (300, 3)), axis=0)
    coords = coords[rng.permutation(len(coords))]
    index = CoordinateIndex(torch.from_numpy(coords), (9, 9, 9))
    table = {tuple(c): i for i, c in enumerate(coords.tolist())}
    query = rng.integers(-2, 11, (2000, 3))
    got = index.lookup(torch.from_numpy(query)).tolist()
    assert got == [table.get(tuple(q), -1) for q in query.tolist()]
    with pytest.raises(ValueError, match="outside"):
        CoordinateIndex(torch.tensor([[0, 0, 9]]), (9, 9, 9))
    assert (
        CoordinateIndex(torch.zeros(0, 3, dtype=torch.int64), (2, 2, 2)).lookup(torch.zeros(5, 3)).tolist() == [-1] * 5
    )
