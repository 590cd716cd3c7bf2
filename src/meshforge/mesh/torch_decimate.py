"""QEM decimation in PyTorch by parallel rounds of independent edge collapses, on the surface's device.

The quadric error metric of Garland & Heckbert ("Surface Simplification Using Quadric Error Metrics",
SIGGRAPH 1997): every vertex carries the sum of the squared-distance quadrics of its faces' planes (weighted
by area) plus, on the border, penalty planes through each boundary edge perpendicular to its face (their §6
"preserving boundaries"); collapsing an edge ``(a, b)`` puts the merged vertex at the position minimising
``xᵀ(Q_a + Q_b)x`` (a 3×3 solve; the best of the endpoints and the midpoint when that system is singular or
its solution worse), and the merged vertex keeps ``Q_a + Q_b``.

Instead of one priority queue, collapses run in parallel rounds of independent sets (as in Papageorgiou &
Platis, "Triangular mesh simplification on the GPU", The Visual Computer 2015): each round computes every
edge's cost, keeps the cheapest edges that pass the topological guards below as candidates, gives them
priorities — cost bucket (:data:`BUCKETS` quantiles) first, then a hash of the edge, Luby's random priorities
("A simple parallel algorithm for the maximal independent set problem", SIAM J. Comput. 1986), since a smooth
cost field has few strict local minima — and collapses at once every candidate whose priority is the smallest
among all candidates with an endpoint on a face around either of its endpoints (``scatter_reduce`` amin over
vertices, then faces, then vertices). Two chosen edges then never share a face or a face's vertex, so their
collapses are independent and their checks can run together. The rounds repeat until the face budget is met.

Guards, as the CPU path's (:mod:`meshforge.mesh.decimate`) results must satisfy them:

* **no non-manifold result**: the link condition of Dey et al. (1999) — the endpoints' common neighbours are
  exactly the vertices opposite the edge — checked by hashing each neighbour pair against the sorted edge
  keys; no collapse leaves a vertex of degree below 3; a non-manifold edge never collapses, nor an edge joining
  two vertices of non-manifold edges;
* **no face flips**: every face around the edge must keep its normal within 60° (``dot ≥ 0.5``; Forstmann's
  fast quadric simplification, the CPU engine, allows ``0.2``);
* **boundary preservation**: an interior edge joining two border vertices never collapses (it would pinch
  the border); an edge from the border inwards moves the inner vertex onto the border vertex; boundary edges
  collapse along the border, held by the penalty planes;
* **slivers**: no collapse makes a face of (nearly) zero area, or a face with aspect ratio (longest edge² /
  twice the area) over 100 that is worse than the worst face it replaces. Once the budget is met, up to
  :data:`SLIVER_ROUNDS` rounds remove slivers (aspect over :data:`~meshforge.mesh.decimate.MAX_ASPECT`) as the
  CPU path's :func:`~meshforge.mesh.decimate.repair` does, but in parallel: a round collapses the short edges of
  needles (a :func:`_round` restricted to them, each moving the surface by at most the repair's tolerance) and
  flips the long edges of caps (:func:`_flip_caps`). The small
  result is then handed to that repair, for what is left — unless :func:`repair_checks` find nothing it would
  change.

A chosen edge takes the cheapest of its candidate positions (optimum, endpoints, midpoint) that passes the
geometric guards. A round selects in up to :data:`PASSES` passes, each adding local minima away from the edges
already accepted or chosen. The guards test the first pass's collapses at once, so a refused one blocks none of
its neighbours in the later passes, and the later passes' (few) collapses together at the end (chosen collapses
are independent, so each sees the round's starting mesh). A refused collapse drops out; it is not a candidate
in the next round (its neighbours go first), and may be again after that. A round that collapses nothing
widens the candidates (:data:`CANDIDATE_FRACTION`), then loosens the geometric guards (:data:`GUARDS`); the
decimation stops at the budget or when even that collapses nothing (then
:func:`~meshforge.mesh.decimate.budget_shortfall` says so). Vertices keep their numbers until the end (a
collapse merges one into the other).

On a CUDA device with Triton a whole round runs in fused kernels (:func:`~meshforge.mesh.qem_triton.fused_round`:
the edges, flags, costs, priorities, selection passes, guards and collapses, with the chosen collapses kept as
per-edge masks; :data:`FUSED`): about 25 kernel launches and 40 other operations a round instead of about 350
torch operations, which on a GPU cost the host more than the device. :func:`_round`, with the torch functions
here, is its reference: the same collapses on the same input (tests compare whole decimations).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..config import DecimateConfig
from ..errors import one_line
from ..geometry.topology import topology
from ..types import Mesh
from . import qem_triton
from .decimate import DEGENERATE_AREA, MAX_ASPECT, NEEDLE_RATIO, REPAIR_TOLERANCE, _aspect, decimate, repair
from .qem_triton import (
    block_around_triton,
    collapse_faults_triton,
    common_neighbours_triton,
    edge_costs_triton,
    edge_flags_triton,
    local_minima_triton,
)
from .torch_clean import check_surface, union_find

__all__ = [
    "BOUNDARY_WEIGHT",
    "FUSED",
    "MAX_NEW_ASPECT",
    "MIN_NORMAL_DOT",
    "collapse_faults_torch",
    "common_neighbours_torch",
    "decimate_torch",
    "edge_costs_torch",
    "fewest_faces_torch",
]

#: weight of a boundary edge's penalty plane, times the edge's squared length (the faces' planes weigh by area)
BOUNDARY_WEIGHT = 1000.0
#: a collapse may not turn a face's unit normal further than this dot product (60°; Forstmann's engine allows
#: 0.2, ≈ 78°, which over many parallel rounds let a face of spot.glb end up facing away from the source)
MIN_NORMAL_DOT = 0.5
#: a collapse may not make a face with a larger aspect ratio than this, unless it improves on the worst it replaces
MAX_NEW_ASPECT = 100.0
#: the geometric guards (normal dot, aspect ratio), strict first; when every valid edge is refused under one
#: level the decimation goes on under the next: Forstmann's ``dot ≥ 0.2`` and no aspect limit (repair() then
#: removes the slivers over 20)
GUARDS: tuple[tuple[float, float], ...] = ((MIN_NORMAL_DOT, MAX_NEW_ASPECT), (0.2, float("inf")))
#: more rounds than this stop the decimation (a safety net; real meshes need tens)
MAX_ROUNDS = 1000
#: selection passes per round (each adds independent collapses away from those already accepted)
PASSES = 4
#: cost buckets of the candidates: collapses in a bucket go before those of the next, in hashed order within it
BUCKETS = 8
#: each round collapses only edges among the cheapest max(needed, this fraction of the valid edges); a round that
#: collapses nothing doubles the fraction for the next, up to all valid edges
CANDIDATE_FRACTION = 0.25

#: on a CUDA device with Triton, whole rounds run in the fused kernels of :mod:`~meshforge.mesh.qem_triton`
#: (:func:`~meshforge.mesh.qem_triton.fused_round`); False: always the torch reference (:func:`_round`)
FUSED = True

_BIG = torch.iinfo(torch.int64).max
_log = logging.getLogger(__name__)
_NONE = torch.zeros(0, dtype=torch.int64)
#: the geometric guards test (faces around the collapses) × (target positions) at once up to this many pairs
_GEOMETRY_ELEMENTS = 1 << 22


def _packed_quadric(n: torch.Tensor, d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``[N, 10]`` packed symmetric quadrics ``w·ppᵀ`` of the planes ``p = (n, d)`` (``n·x + d = 0``):
    ``(aa, ab, ac, ad, bb, bc, bd, cc, cd, dd)``."""
    a, b, c = n.unbind(1)
    return w[:, None] * torch.stack([a * a, a * b, a * c, a * d, b * b, b * c, b * d, c * c, c * d, d * d], 1)


def _quadric_error(q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[...]`` ``xᵀQx`` for packed quadrics ``[..., 10]`` at points ``[..., 3]`` (homogeneous ``(x, 1)``;
    leading dimensions broadcast)."""
    px, py, pz = x.unbind(-1)
    aa, ab, ac, ad, bb, bc, bd, cc, cd, dd = q.unbind(-1)
    return (
        aa * px * px
        + bb * py * py
        + cc * pz * pz
        + 2.0 * (ab * px * py + ac * px * pz + bc * py * pz)
        + 2.0 * (ad * px + bd * py + cd * pz)
        + dd
    ).clamp_min(0.0)


def _optimal_point(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimiser of ``xᵀQx``: solve ``A x = −b`` (``A`` the upper-left 3×3 block) by the adjugate.

    Returns:
        ``(x [N, 3], ok [N] bool)``; ``ok`` is False where ``A`` is (nearly) singular.
    """
    aa, ab, ac, ad, bb, bc, bd, cc, cd, _ = q.unbind(1)
    c00 = bb * cc - bc * bc
    c01 = ac * bc - ab * cc
    c02 = ab * bc - ac * bb
    c11 = aa * cc - ac * ac
    c12 = ab * ac - aa * bc
    c22 = aa * bb - ab * ab
    det = aa * c00 + ab * c01 + ac * c02
    scale = (aa + bb + cc) / 3.0
    ok = det.abs() > 1e-9 * scale.pow(3).clamp_min(1e-300)
    inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
    x = -(c00 * ad + c01 * bd + c02 * cd) * inv
    y = -(c01 * ad + c11 * bd + c12 * cd) * inv
    z = -(c02 * ad + c12 * bd + c22 * cd) * inv
    return torch.stack([x, y, z], 1), ok


def _face_geometry(pos: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per face: cross product (length 2·area), area, and aspect ratio (longest edge² / (2·area))."""
    return _triangle_geometry(pos[faces])


def _triangle_geometry(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_face_geometry` of triangles given by their corners ``[..., 3, 3]`` (any leading dimensions)."""
    p0, p1, p2 = t[..., 0, :], t[..., 1, :], t[..., 2, :]
    e0, e1, e2 = p1 - p0, p2 - p1, p0 - p2
    cross = torch.linalg.cross(e0, -e2, dim=-1)
    twice = torch.linalg.vector_norm(cross, dim=-1)
    longest = torch.maximum(torch.maximum((e0 * e0).sum(-1), (e1 * e1).sum(-1)), (e2 * e2).sum(-1))
    return cross, 0.5 * twice, longest / twice.clamp_min(1e-300)


def edge_costs_torch(
    q: torch.Tensor, pos: torch.Tensor, a: torch.Tensor, b: torch.Tensor, fixed_a: torch.Tensor, fixed_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Collapse positions and costs of edges ``(a, b)`` under the summed quadric ``Q_a + Q_b`` (Garland & Heckbert
    1997): the candidates are ``a``, ``b``, the midpoint and the quadric's minimiser (:func:`_optimal_point`; ``a``
    again where it is singular or lies more than twice the edge's length from the midpoint); an edge that must
    keep ``a`` (``fixed_a``: from the border inwards) may only take ``a``, one that must keep ``b`` only ``b``.
    The reference of :func:`~meshforge.mesh.qem_triton.edge_costs_triton`.

    Args:
        q: ``[V, 10]`` float64 packed quadrics (:func:`_packed_quadric`); pos: ``[V, 3]`` float64 positions.
        a, b: ``[E]`` int64 endpoints; fixed_a, fixed_b: ``[E]`` bool.

    Returns:
        ``(cands [E, 4, 3], costs [E, 4], cost [E], target [E, 3])`` float64: the candidates, their errors
        ``xᵀQx`` (``inf`` where barred), the least error and its candidate (the first of equal ones).
    """
    device = pos.device
    qe = q[a] + q[b]
    pa, pb = pos[a], pos[b]
    opt, solvable = _optimal_point(qe)
    # an optimum far from the edge (nearly flat quadrics) is no better than the candidates below
    length = torch.linalg.vector_norm(pb - pa, dim=1)
    solvable &= torch.linalg.vector_norm(opt - 0.5 * (pa + pb), dim=1) <= 2.0 * length
    cands = torch.stack([pa, pb, 0.5 * (pa + pb), torch.where(solvable[:, None], opt, pa)], 1)
    costs = _quadric_error(qe[:, None], cands)
    barred = torch.tensor([[False, True, True, True]], device=device) & fixed_a[:, None]
    barred |= torch.tensor([[True, False, True, True]], device=device) & fixed_b[:, None]
    costs = costs.masked_fill(barred, torch.inf)
    cost, which = costs.min(1)
    target = cands[torch.arange(a.shape[0], device=device), which]
    return cands, costs, cost, target


def _edges(faces: torch.Tensor, nv: int) -> dict[str, torch.Tensor]:
    """Undirected edges of a face list and, per edge, its face count and the vertices opposite it.

    Returns a dict of ``key`` ``[E]`` (sorted ``lo·nv + hi``), ``a``/``b`` ``[E]`` (lo, hi), ``count`` ``[E]``,
    ``opp0``/``opp1`` ``[E]`` (the vertex opposite the edge in its first and second face; ``opp1`` is −1 on a
    boundary edge).
    """
    e0 = faces.reshape(-1)
    e1 = faces[:, [1, 2, 0]].reshape(-1)
    opp = faces[:, [2, 0, 1]].reshape(-1)
    key = torch.minimum(e0, e1) * nv + torch.maximum(e0, e1)
    ks, order = torch.sort(key)
    uniq, count = torch.unique_consecutive(ks, return_counts=True)
    start = torch.cumsum(count, 0) - count
    opp0 = opp[order[start]]
    second = torch.where(count > 1, start + 1, start)
    opp1 = torch.where(count > 1, opp[order[second]], torch.full_like(opp0, -1))
    return {"key": uniq, "a": uniq // nv, "b": uniq % nv, "count": count, "opp0": opp0, "opp1": opp1}


def _member(keys: torch.Tensor, sorted_keys: torch.Tensor) -> torch.Tensor:
    """``[N]`` bool: which keys occur in the sorted ``sorted_keys``."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    i = torch.searchsorted(sorted_keys, keys).clamp_max(sorted_keys.numel() - 1)
    return sorted_keys[i] == keys


def fewest_faces_torch(faces: torch.Tensor, nv: int) -> int:
    """:func:`meshforge.mesh.decimate.fewest_faces` on the faces' device: 4 faces per closed part, 1 per open one."""
    f = faces.long()
    if f.numel() == 0:
        return 0
    root, _ = union_find(nv, f.reshape(-1), f[:, [1, 2, 0]].reshape(-1))
    e = _edges(f, nv)
    parts = torch.zeros(nv, dtype=torch.bool, device=f.device)
    parts[root[f[:, 0]]] = True
    open_parts = torch.zeros_like(parts)
    open_parts[root[e["a"][e["count"] == 1]]] = True
    n_parts, n_open = int(parts.sum().item()), int(open_parts.sum().item())
    return 4 * (n_parts - n_open) + n_open


def _vertex_sums(
    index: torch.Tensor, values: torch.Tensor, nv: int, source: torch.Tensor | None = None
) -> torch.Tensor:
    """``[nv, C]``: per vertex the sum of the rows ``values[source[i]]`` (``[C]`` each; ``source`` None: row ``i``)
    whose ``index[i]`` (``[N]``) is that vertex, added in the order of ``i`` — the same bits on every run
    (``index_add_`` on a GPU adds floats with atomics, in whatever order the threads come: the quadrics, and with
    them near-tied collapse choices, changed run to run).

    The rows are ranked within their vertex (a stable sort), then added rank by rank — one ``index_add_`` per rank,
    whose vertices are all different, so no two additions meet. As many steps as the most rows of one vertex (a
    vertex's faces: about 6 on a mesh, more at a fan's centre); memory O(N); one wait for the device.
    """
    out = torch.zeros((nv, values.shape[1]), dtype=values.dtype, device=values.device)
    n = index.numel()
    if n == 0:
        return out
    order = torch.argsort(index, stable=True)  # rows by vertex, in row order within one
    counts = torch.bincount(index, minlength=nv)
    sorted_index = index[order]
    rank = torch.arange(n, device=index.device) - (torch.cumsum(counts, 0) - counts)[sorted_index]
    by_rank = torch.argsort(rank, stable=True)
    rows, vertices = order[by_rank], sorted_index[by_rank]
    if source is not None:
        rows = source[rows]
    at = 0
    for count in torch.bincount(rank).tolist():
        out.index_add_(0, vertices[at : at + count], values[rows[at : at + count]])
        at += count
    return out


def _quadrics(pos: torch.Tensor, faces: torch.Tensor, e: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[V, 10]`` per-vertex quadrics: area-weighted face planes plus boundary penalty planes, summed in a fixed
    order (:func:`_vertex_sums`)."""
    nv = pos.shape[0]
    cross, area, _ = _face_geometry(pos, faces)
    n = cross / (2.0 * area).clamp_min(1e-300)[:, None]
    d = -(n * pos[faces[:, 0]]).sum(1)
    kq = _packed_quadric(n, d, area)
    nf = faces.shape[0]
    index = faces.reshape(-1)  # each face's quadric at its 3 corners (not copied three times: 2.4 GB at 10M faces)
    source = torch.arange(nf, device=faces.device).repeat_interleave(3)
    values = kq
    border = e["count"] == 1
    if bool(border.any()):
        a, b, c = e["a"][border], e["b"][border], e["opp0"][border]
        edge = pos[b] - pos[a]
        face_n = torch.linalg.cross(edge, pos[c] - pos[a])
        m = torch.linalg.cross(edge, face_n)
        m = m / torch.linalg.vector_norm(m, dim=1, keepdim=True).clamp_min(1e-300)
        kb = _packed_quadric(m, -(m * pos[a]).sum(1), BOUNDARY_WEIGHT * (edge * edge).sum(1))
        rows = torch.arange(nf, nf + a.numel(), device=faces.device)
        index, source, values = torch.cat([index, a, b]), torch.cat([source, rows, rows]), torch.cat([kq, kb])
    return _vertex_sums(index, values, nv, source)


def _hash(x: torch.Tensor) -> torch.Tensor:
    """A deterministic int64 mix of int64 keys (splitmix64's finaliser, wrapping arithmetic; the same on every
    device), non-negative."""
    x = x * -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64
    x = x ^ ((x >> 31) & ((1 << 33) - 1))
    x = x * -4658895280553007687  # 0xBF58476D1CE4E5B9
    x = x ^ ((x >> 29) & ((1 << 35) - 1))
    return x & ((1 << 62) - 1)


def local_minima_torch(
    prio: torch.Tensor, free: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor, faces: torch.Tensor, nv: int
) -> torch.Tensor:
    """``[E]`` bool: the edges whose priority is the smallest of every taking-part edge with an endpoint on a face
    around either of their endpoints — no face holds endpoints of two of them (a Luby-style independent set).
    An edge takes part when its priority is below :data:`_BIG` and both its endpoints are ``free`` (``[nv]`` bool;
    None: all are). The reference of :func:`~meshforge.mesh.qem_triton.local_minima_triton`."""
    device = prio.device
    if free is not None:
        prio = torch.where(free[a] & free[b], prio, _BIG)
    vmin = torch.full((nv,), _BIG, dtype=torch.long, device=device)
    vmin.scatter_reduce_(0, a, prio, "amin")
    vmin.scatter_reduce_(0, b, prio, "amin")
    fmin = vmin[faces].amin(1)
    rmin = torch.full((nv,), _BIG, dtype=torch.long, device=device)
    rmin.scatter_reduce_(0, faces.reshape(-1), fmin[:, None].expand(-1, 3).reshape(-1), "amin")
    return (prio < _BIG) & (prio == rmin[a]) & (prio == rmin[b])


def block_around_torch(
    free: torch.Tensor, a: torch.Tensor, b: torch.Tensor, faces: torch.Tensor, flag: torch.Tensor
) -> torch.Tensor:
    """Clear, in the ``[nv]`` bool ``free`` (in place), every corner of a face that touches an endpoint of a
    flagged edge (``a``, ``b``, ``flag`` ``[N]``): no later collapse of the round may touch a face around a
    collapse already taken. The reference of :func:`~meshforge.mesh.qem_triton.block_around_triton`.

    Returns:
        ``free``.
    """
    nv = free.shape[0]
    ring = _mark(nv, (a, b), flag)
    free &= ~_mark(nv, faces.unbind(1), ring[faces].any(1))
    return free


def _mark(nv: int, ends: tuple[torch.Tensor, ...], flag: torch.Tensor) -> torch.Tensor:
    """``[nv]`` bool: the vertices that are, in any of the index tensors ``ends`` ``[N]``, at a True ``flag`` ``[N]``
    (a scatter-add, so no boolean indexing and no wait for the device)."""
    hits = torch.zeros(nv, dtype=torch.int32, device=flag.device)
    f = flag.to(torch.int32)
    for idx in ends:
        hits.index_add_(0, idx, f)
    return hits > 0


def edge_flags_torch(
    a: torch.Tensor,
    b: torch.Tensor,
    count: torch.Tensor,
    opp0: torch.Tensor,
    opp1: torch.Tensor,
    deg: torch.Tensor,
    nv: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which edges (:func:`_edges`: endpoints ``a``, ``b``, face ``count``, opposite vertices ``opp0``, ``opp1``,
    all ``[E]`` int64; ``deg`` ``[nv]`` the vertex degrees) a round may collapse, and which keep an endpoint.

    An edge may collapse when it is manifold (one or two faces) and does not join two vertices of non-manifold
    edges (one such vertex is left to the link condition), an interior edge does not join two border vertices
    (that would pinch the border), the endpoints keep enough neighbours (degree sum over 6 inside, over 4 on the
    border) and so do the opposite vertices (degree over 3, over 2 for a border edge's). An interior edge from a
    border vertex inwards keeps the border vertex where it is. The reference of
    :func:`~meshforge.mesh.qem_triton.edge_flags_triton`.

    Returns:
        ``(ok, fixed_a, fixed_b)`` ``[E]`` bool.
    """
    # (vertex flags by scatter-adds of the edge flags: no boolean indexing, so no wait for the device)
    on_border = _mark(nv, (a, b), count == 1)
    near_nm = _mark(nv, (a, b), count > 2)
    interior = count == 2
    border_edge = count == 1
    ok = (interior | border_edge) & ~(near_nm[a] & near_nm[b])
    ok &= ~(interior & on_border[a] & on_border[b])
    ok &= torch.where(interior, deg[a] + deg[b] - 4 >= 3, deg[a] + deg[b] - 3 >= 2)
    ok &= torch.where(interior, (deg[opp0] > 3) & (deg[opp1.clamp_min(0)] > 3), deg[opp0] > 2)
    fixed_a = interior & on_border[a] & ~on_border[b]
    fixed_b = interior & on_border[b] & ~on_border[a]
    return ok, fixed_a, fixed_b


def _adjacency(e: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The vertex adjacency in CSR order: ``(src, dst)`` ``[2E]``, both directions of every edge, sorted by src."""
    src = torch.cat([e["a"], e["b"]])
    dst = torch.cat([e["b"], e["a"]])
    by_src = torch.argsort(src)
    return src[by_src], dst[by_src]


def common_neighbours_torch(
    ca: torch.Tensor,
    cb: torch.Tensor,
    first: torch.Tensor,
    count: torch.Tensor,
    dst_sorted: torch.Tensor,
    edge_keys: torch.Tensor,
    nv: int,
) -> torch.Tensor:
    """How many neighbours the endpoints of each edge ``(ca, cb)`` ``[N]`` share: each neighbour ``x`` of ``ca``
    (``dst_sorted[first[i] : first[i] + count[i]]``, the CSR rows of :func:`_adjacency`) other than ``cb`` counts when
    ``(cb, x)`` is an edge (its key ``min·nv + max`` in the sorted ``edge_keys``). The reference of
    :func:`~meshforge.mesh.qem_triton.common_neighbours_triton`.

    Returns:
        ``[N]`` int64 counts.
    """
    device = ca.device
    n = ca.numel()
    total = int(count.sum().item())  # the one wait for the device here (the output sizes below)
    owner = torch.repeat_interleave(torch.arange(n, device=device), count, output_size=total)
    offset = torch.arange(total, device=device) - torch.repeat_interleave(
        torch.cumsum(count, 0) - count, count, output_size=total
    )
    x = dst_sorted[first[owner] + offset]
    cbo = cb[owner]
    pair = torch.minimum(cbo, x) * nv + torch.maximum(cbo, x)
    common = torch.zeros(n, dtype=torch.long, device=device)
    common.index_add_(0, owner, ((x != cbo) & _member(pair, edge_keys)).long())
    return common


def _link_ok(
    ca: torch.Tensor,
    cb: torch.Tensor,
    expected: torch.Tensor,
    adjacency: tuple[torch.Tensor, torch.Tensor],
    edge_keys: torch.Tensor,
    deg: torch.Tensor,
    nv: int,
) -> torch.Tensor:
    """Link condition (Dey et al. 1999) for edges ``(ca, cb)``: their endpoints have exactly ``expected`` common
    neighbours (the vertices opposite the edge: 2 inside, 1 on the border). Each neighbour ``x`` of ``ca`` (from
    :func:`_adjacency`) is looked up as the edge key ``(cb, x)`` in the sorted ``edge_keys``
    (:func:`common_neighbours_torch`, or its Triton twin on a GPU)."""
    src_sorted, dst_sorted = adjacency
    first = torch.searchsorted(src_sorted, ca)
    count = deg[ca]
    common = _kernel_or_torch(
        common_neighbours_triton, common_neighbours_torch, ca.device, ca, cb, first, count, dst_sorted, edge_keys, nv
    )
    return common == expected


def collapse_faults_torch(
    pos: torch.Tensor,
    f_t: torch.Tensor,
    c_t: torch.Tensor,
    ca: torch.Tensor,
    cb: torch.Tensor,
    targets: torch.Tensor,
    limits: tuple[float, float, float, float],
) -> torch.Tensor:
    """For independent collapses ``(ca, cb)`` ``[N]``, each tried at ``T`` positions ``targets`` ``[N, T, 3]``
    (float64), and the faces ``f_t`` ``[M, 3]`` around them (``c_t`` ``[M]``: the collapse of each): how many
    of a collapse's surviving faces (those not holding both endpoints) break a guard at each position — turn
    their normal's dot with the old one below ``limits[0]``, shrink to at most ``limits[2]`` area (and below
    their old area), or get an aspect ratio (longest edge² / twice the area) over ``limits[1]`` that is also
    worse than the worst surviving face of the collapse had, or (``limits[3]`` finite) the target lies farther
    than ``limits[3]`` from the face's plane (the CPU repair's bound on how far a sliver collapse may move the
    surface). The reference of :func:`~meshforge.mesh.qem_triton.collapse_faults_triton`.

    Returns:
        ``[N, T]`` int32 counts.
    """
    device = pos.device
    n, n_targets = targets.shape[0], targets.shape[1]
    on_edge = (f_t == ca[c_t, None]) | (f_t == cb[c_t, None])  # [M, 3]: corners that move
    kept = on_edge.sum(1) < 2  # faces with both endpoints are the ones the collapse removes: not tested
    old_cross, old_area, old_aspect = _face_geometry(pos, f_t)
    worst_old = torch.zeros(n, dtype=pos.dtype, device=device)
    worst_old.scatter_reduce_(0, c_t, torch.where(kept, old_aspect, 0.0), "amax")
    corners = pos[f_t]  # [M, 3, 3]
    old_norm = torch.linalg.vector_norm(old_cross, dim=1)
    bad = torch.zeros((n, n_targets), dtype=torch.int32, device=device)
    min_dot, max_aspect, min_area, tol = limits
    # every target position at once ([M, T, 3, 3] corners), in groups that bound the memory on a huge first round
    group = max(1, min(n_targets, _GEOMETRY_ELEMENTS // max(1, f_t.shape[0])))
    for i in range(0, n_targets, group):
        tgt = targets[c_t, i : i + group]  # [M, t, 3]
        moved = torch.where(on_edge[:, None, :, None], tgt[:, :, None, :], corners[:, None])
        new_cross, new_area, new_aspect = _triangle_geometry(moved)
        dot = (old_cross[:, None] * new_cross).sum(-1)
        flips = dot < min_dot * (old_norm[:, None] * torch.linalg.vector_norm(new_cross, dim=-1))
        tiny = (new_area <= min_area) & (new_area < old_area[:, None])
        sliver = tiny | ((new_aspect > max_aspect) & (new_aspect > worst_old[c_t, None]))
        wrong = flips | sliver
        if tol < float("inf"):
            height = ((tgt - corners[:, None, 0]) * old_cross[:, None]).sum(-1).abs()
            wrong |= height > tol * old_norm[:, None]
        bad[:, i : i + group].index_add_(0, c_t, (wrong & kept[:, None]).to(torch.int32))
    return bad


#: why the fused kernels could not run in this process (Triton failed to compile or launch them, e.g. no C compiler
#: for its launcher); None while they work. Once set, every decimation here takes the torch path.
FUSED_FAILURE: str | None = None


def _fused(device: torch.device) -> bool:
    """Whether the round's arithmetic runs in the Triton kernels (:mod:`~meshforge.mesh.qem_triton`): on a CUDA
    device with Triton, unless :data:`FUSED` is off or they already failed here (:data:`FUSED_FAILURE`)."""
    return FUSED and FUSED_FAILURE is None and device.type == "cuda" and qem_triton.AVAILABLE


def _kernel_or_torch(fused: Any, reference: Any, device: torch.device, *args: Any) -> Any:
    """``fused(*args)`` where :func:`_fused` allows it, else ``reference(*args)``; a fused kernel that raises (Triton
    could not compile or launch it) sets :data:`FUSED_FAILURE`, logs it once, and the torch reference answers — the
    same result up to rounding. Running out of device memory is not such a failure: it propagates."""
    global FUSED_FAILURE
    if _fused(device):
        try:
            return fused(*args)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # a compile or launch failure of Triton (its errors have no common base class)
            FUSED_FAILURE = one_line(exc)
            _log.warning("fused decimation kernels unavailable, using the torch path: %s", FUSED_FAILURE)
    return reference(*args)


def _geometry_ok(
    pos: torch.Tensor,
    faces: torch.Tensor,
    ca: torch.Tensor,
    cb: torch.Tensor,
    targets: torch.Tensor,
    min_area: float,
    guards: tuple[float, float],
    tol: float = float("inf"),
) -> torch.Tensor:
    """For independent collapses ``(ca, cb)``, each tried at ``T`` positions ``targets`` ``[N, T, 3]``: does no face
    around it flip (normal dot below ``guards[0]``), shrink to (nearly) zero area, or become a sliver (aspect ratio
    over ``guards[1]``) worse than the worst it replaces, and does the target lie within ``tol`` of the plane of
    every face that moves (:func:`collapse_faults_torch`, or its Triton twin on a GPU)?

    Returns:
        ``[N, T]`` bool.
    """
    device = pos.device
    n = targets.shape[0]
    nv = pos.shape[0]
    cid = torch.full((nv,), -1, dtype=torch.long, device=device)
    cid[ca] = torch.arange(n, device=device)
    cid[cb] = torch.arange(n, device=device)
    face_c = cid[faces].amax(1)
    touched = torch.nonzero(face_c >= 0).squeeze(1)  # one wait for the device (a boolean index per tensor: two)
    f_t = faces[touched]
    c_t = face_c[touched]
    limits = (float(guards[0]), float(guards[1]), float(min_area), float(tol))
    faults = _kernel_or_torch(
        collapse_faults_triton, collapse_faults_torch, device, pos, f_t, c_t, ca, cb, targets, limits
    )
    return faults == 0


def _round(
    pos: torch.Tensor,
    faces: torch.Tensor,
    q: torch.Tensor,
    goal: int,
    min_area: float,
    fraction: float,
    guards: tuple[float, float],
    skip: torch.Tensor | None = None,
    only: torch.Tensor | None = None,
    tol: float = float("inf"),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int, torch.Tensor]:
    """One round: cost every edge, collapse a maximal-ish independent set of the cheapest valid ones.

    Up to :data:`PASSES` selection passes (Luby-style): each picks the local minima among the remaining candidate
    edges away from the collapses accepted (first pass) or chosen (later passes) so far. The first pass's
    collapses are checked (link condition, geometry) right after it, the later passes' together after the last;
    those that pass are applied at once (cheapest first, stopping at the budget).

    Args:
        skip: sorted edge keys that are no candidates this round (the previous round's refusals).
        only: sorted edge keys: the only edges that may collapse (e.g. the short edges of needles).
        tol: the farthest a target may lie from the plane of a face that moves (:func:`_geometry_ok`).

    Returns:
        ``(pos, faces, q, collapsed, rejected, refused keys)``; the refused keys sorted, for the next ``skip``.
    """
    device = pos.device
    nv = pos.shape[0]
    nf = faces.shape[0]
    e = _edges(faces, nv)
    a, b, count, opp0, opp1 = e["a"], e["b"], e["count"], e["opp0"], e["opp1"]
    n_edges = a.shape[0]
    deg = torch.bincount(torch.cat([a, b]), minlength=nv)
    # which edges may collapse, and which keep an endpoint where it is
    ok, fixed_a, fixed_b = _kernel_or_torch(
        edge_flags_triton, edge_flags_torch, device, a, b, count, opp0, opp1, deg, nv
    )
    # position and cost: optimal point, else the best of the endpoints and the midpoint
    cands, costs, cost, target = _kernel_or_torch(
        edge_costs_triton, edge_costs_torch, device, q, pos, a, b, fixed_a, fixed_b
    )
    keep = torch.where(fixed_b, b, a)
    drop = torch.where(fixed_b, a, b)

    # candidates: the cheapest valid edges, enough for the faces still to go
    valid = ok & torch.isfinite(cost)
    if skip is not None and skip.numel():
        valid &= ~_member(e["key"], skip)
    if only is not None:
        valid &= _member(e["key"], only)
    n_valid = int(valid.sum().item())
    if n_valid == 0:
        return pos, faces, q, 0, 0, _NONE
    needed = (nf - goal + 1) // 2
    k = min(n_valid, max(needed, int(fraction * n_valid)))
    order = torch.argsort(torch.where(valid, cost, torch.inf))[:k]
    # priority: cost bucket first, then a hash of the edge (Luby's random priorities): a smooth cost field has few
    # local minima, random priorities within a bucket have many
    bucket = torch.arange(k, device=device) * BUCKETS // k
    mixed = _hash(e["key"][order]) & ((1 << 40) - 1)
    prio = torch.full((n_edges,), _BIG, dtype=torch.long, device=device)
    prio[order[torch.argsort((bucket << 40) | mixed)]] = torch.arange(k, device=device)

    adjacency = _adjacency(e)

    def check(chosen: torch.Tensor) -> torch.Tensor:
        """The guards for independent chosen collapses (each sees the round's starting mesh): link condition,
        and the cheapest candidate position that passes the geometric guards (where the quadric is flat, e.g. a
        planar region, the positions cost the same and only some keep every face the right way up)."""
        good = _link_ok(a[chosen], b[chosen], count[chosen], adjacency, e["key"], deg, nv)
        geo = _geometry_ok(pos, faces, a[chosen], b[chosen], cands[chosen], min_area, guards, tol)
        best_cost, best = torch.where(geo, costs[chosen], torch.inf).min(1)
        good &= torch.isfinite(best_cost)
        cost[chosen] = best_cost
        target[chosen] = cands[chosen, best]
        return good

    free = torch.ones(nv, dtype=torch.bool, device=device)  # vertices on no face around a collapse in the round
    decided: list[tuple[torch.Tensor, torch.Tensor]] = []
    later = torch.zeros(n_edges, dtype=torch.int8, device=device)  # the pass (1, 2, ...) that chose an edge
    for p in range(PASSES):
        picked = _kernel_or_torch(local_minima_triton, local_minima_torch, device, prio, free, a, b, faces, nv)
        prio.masked_fill_(picked, _BIG)
        if p == 0:  # most of a round's collapses: checked now, so that the refused ones block nothing
            chosen = torch.nonzero(picked).squeeze(1)  # the round's one wait for the passes
            if chosen.numel() == 0:
                break
            good = check(chosen)
            decided.append((chosen, good))
            _kernel_or_torch(block_around_triton, block_around_torch, device, free, a[chosen], b[chosen], faces, good)
        else:  # the later passes' few: checked together at the end (a refused one blocked its neighbours); a pass
            # that picks none leaves the next the same choice (none), so no pass waits for the device
            later.masked_fill_(picked, p)
            _kernel_or_torch(block_around_triton, block_around_torch, device, free, a, b, faces, picked)
    if decided:
        unchecked = torch.nonzero(later).squeeze(1)
        if unchecked.numel():
            unchecked = unchecked[torch.argsort(later[unchecked], stable=True)]  # pass by pass, as they were picked
            decided.append((unchecked, check(unchecked)))
    if not decided:
        return pos, faces, q, 0, 0, _NONE
    chosen = torch.cat([c for c, _ in decided])
    good = torch.cat([g for _, g in decided])
    win = chosen[good]
    refused_keys = torch.sort(e["key"][chosen[~good]])[0]
    rejected = int(refused_keys.numel())
    if win.numel() == 0:
        return pos, faces, q, 0, rejected, refused_keys
    # do not overshoot the budget by more than one face: cheapest first
    win = win[torch.argsort(cost[win])]
    removes = count[win]
    win = win[torch.cumsum(removes, 0) - removes < nf - goal]
    kk, dd = keep[win], drop[win]
    pos = pos.clone()
    pos[kk] = target[win]
    q = q.clone()
    q[kk] += q[dd]
    remap = torch.arange(nv, device=device)
    remap[dd] = kk
    faces = remap[faces]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])]
    return pos, faces, q, int(win.numel()), rejected, refused_keys


def _next_round(
    pos: torch.Tensor,
    faces: torch.Tensor,
    q: torch.Tensor,
    goal: int,
    min_area: float,
    fraction: float,
    guards: tuple[float, float],
    skip: torch.Tensor | None = None,
    only: torch.Tensor | None = None,
    tol: float = float("inf"),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int, torch.Tensor]:
    """A round (:func:`_round`'s arguments and result): on a CUDA device with Triton the whole round in the fused
    kernels (:func:`~meshforge.mesh.qem_triton.fused_round`, which updates ``pos`` and ``q`` in place), else
    :func:`_round`. A Triton failure sets :data:`FUSED_FAILURE` (logged once) and the torch round answers."""
    global FUSED_FAILURE
    if _fused(pos.device):
        keys, mode = (only, 2) if only is not None else (skip, 1)
        try:
            return qem_triton.fused_round(
                pos, faces, q, goal, min_area, fraction, guards, keys, mode, tol, PASSES, BUCKETS
            )
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # a compile or launch failure of Triton (its errors have no common base class)
            FUSED_FAILURE = one_line(exc)
            _log.warning("fused decimation kernels unavailable, using the torch path: %s", FUSED_FAILURE)
    return _round(pos, faces, q, goal, min_area, fraction, guards, skip, only, tol)


#: rounds of sliver removal on the device after the budget is met (needle collapses and cap flips, as the CPU
#: path's :func:`~meshforge.mesh.decimate.repair` does one by one; what is left goes to that repair)
SLIVER_ROUNDS = 3


def _sliver_faces(pos: torch.Tensor, faces: torch.Tensor, min_area: float) -> tuple[torch.Tensor, ...]:
    """Per face: (needle ``[F]`` bool, cap ``[F]`` bool, aspect, area, index of the shortest and the longest
    edge ``[F]``; edge ``k`` runs from corner ``k`` to ``k + 1``), with :func:`~meshforge.mesh.decimate.repair`'s
    classes: a sliver has an aspect ratio over :data:`~meshforge.mesh.decimate.MAX_ASPECT` or (nearly) no area;
    a needle is a tiny face or a sliver whose shortest edge is under :data:`~meshforge.mesh.decimate.NEEDLE_RATIO` ×
    its longest, a cap is any other sliver."""
    t = pos[faces]
    length2 = torch.stack([((t[:, (k + 1) % 3] - t[:, k]) ** 2).sum(1) for k in range(3)], 1)
    _, area, aspect = _triangle_geometry(t)
    shortest, longest = length2.argmin(1), length2.argmax(1)
    tiny = area < min_area
    sliver = (aspect > MAX_ASPECT) | tiny
    thin = length2.gather(1, shortest[:, None])[:, 0] < NEEDLE_RATIO**2 * length2.gather(1, longest[:, None])[:, 0]
    return sliver & (tiny | thin), sliver & ~tiny & ~thin, aspect, area, shortest, longest


def _needle_edges(pos: torch.Tensor, faces: torch.Tensor, min_area: float) -> torch.Tensor:
    """Sorted keys (``lo·V + hi``) of the shortest edges of the needles (:func:`_sliver_faces`)."""
    nv = pos.shape[0]
    needle, _, _, _, shortest, _ = _sliver_faces(pos, faces, min_area)
    f = faces[needle]
    k = shortest[needle]
    u = f.gather(1, k[:, None])[:, 0]
    w = f.gather(1, ((k + 1) % 3)[:, None])[:, 0]
    return torch.unique(torch.minimum(u, w) * nv + torch.maximum(u, w))


def _flip_caps(pos: torch.Tensor, faces: torch.Tensor, min_area: float, tol: float) -> tuple[torch.Tensor, int]:
    """Flip the longest edge of every cap (:func:`_sliver_faces`) where :func:`~meshforge.mesh.decimate.repair`'s
    ``_flip`` would, all at once: the edge ``(a, b)`` of cap ``(a, b, c)`` and its neighbour ``(b, a, d)`` become
    ``(a, d, c)`` and ``(d, b, c)`` when ``c–d`` is no edge yet, neither new face turns against the pair's normal,
    the pair is planar within ``tol`` (the tetrahedron's height over the pair's area) and the worse new aspect
    ratio is below the worse old one. Flips that share a vertex are not made together (the worst cap first).

    Returns:
        ``(faces, flips)``.
    """
    nv = pos.shape[0]
    _, cap, aspect, _, _, longest = _sliver_faces(pos, faces, min_area)
    fi = torch.nonzero(cap).squeeze(1)
    if fi.numel() == 0:
        return faces, 0
    k = longest[fi]
    a = faces[fi].gather(1, k[:, None])[:, 0]
    b = faces[fi].gather(1, ((k + 1) % 3)[:, None])[:, 0]
    c = faces[fi].gather(1, ((k + 2) % 3)[:, None])[:, 0]
    # the neighbour across (a, b) holds the directed edge (b, a)
    directed = (faces * nv + faces[:, [1, 2, 0]]).reshape(-1)
    dkeys, dorder = torch.sort(directed)
    pos_in = torch.searchsorted(dkeys, b * nv + a).clamp_max(dkeys.numel() - 1)
    found = dkeys[pos_in] == b * nv + a
    g = dorder[pos_in] // 3
    d = faces[g].sum(1) - a - b
    # c–d is an edge when some face holds it in either direction (the directed keys at hand: no edge list needed)
    ok = found & (c != d) & ~(_member(c * nv + d, dkeys) | _member(d * nv + c, dkeys))
    cross_f, _, _ = _triangle_geometry(pos[faces[fi]])
    cross_g, _, _ = _triangle_geometry(pos[faces[g]])
    norm_f = torch.linalg.vector_norm(cross_f, dim=1)
    norm_g = torch.linalg.vector_norm(cross_g, dim=1)
    volume = ((cross_f * (pos[d] - pos[a])).sum(1)).abs() / 6.0
    ok &= 3.0 * volume <= tol * 0.5 * (norm_f + norm_g)
    old_n = cross_f / norm_f.clamp_min(1e-300)[:, None] + cross_g / norm_g.clamp_min(1e-300)[:, None]
    new = torch.stack([torch.stack([a, d, c], 1), torch.stack([d, b, c], 1)], 1)  # [N, 2, 3]
    new_cross, _, new_aspect = _triangle_geometry(pos[new])
    ok &= ((new_cross * old_n[:, None]).sum(-1) > 0).all(1)
    ok &= new_aspect.amax(1) < torch.maximum(aspect[fi], aspect[g])
    ok &= g != fi
    # one flip per vertex neighbourhood: the worst cap wins each of its four vertices
    rank = torch.empty_like(fi)
    rank[torch.argsort(-aspect[fi], stable=True)] = torch.arange(fi.numel(), device=fi.device)
    prio = torch.where(ok, rank, _BIG)
    quad = torch.stack([a, b, c, d], 1)
    vmin = torch.full((nv,), _BIG, dtype=torch.long, device=pos.device)
    vmin.scatter_reduce_(0, quad.reshape(-1), prio[:, None].expand(-1, 4).reshape(-1), "amin")
    win = ok & (vmin[quad] == prio[:, None]).all(1)
    # a face may be the cap of one flip and the neighbour of another: both share its vertices, so one wins
    w = torch.nonzero(win).squeeze(1)
    faces = faces.clone()
    faces[fi[w]] = new[w, 0]
    faces[g[w]] = new[w, 1]
    return faces, int(w.numel())


#: :func:`repair_is_noop` tests the aspect ratio and area limits this much inside :func:`~.decimate.repair`'s
#: (float64 on both sides, rounded differently)
_NOOP_MARGIN = 1e-9


def repair_is_noop(vertices: torch.Tensor, faces: torch.Tensor) -> bool:
    """Whether :func:`~meshforge.mesh.decimate.repair` would return this mesh as it is (:func:`repair_checks`)."""
    clean, suspects = repair_checks(vertices, faces)
    return clean and suspects.size == 0


def repair_checks(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[bool, np.ndarray]:
    """What :func:`~meshforge.mesh.decimate.repair` would find in a mesh, tested where it lies (one wait for the
    device instead of copying it to the host first: the repair's whole-mesh checks take 12–21 ms at 20k faces).

    Args:
        vertices: ``[V, 3]`` float32 positions; faces: ``[F, 3]`` int64 indices; on any device. Every vertex must
            be referenced (the caller's compaction makes it so).

    Returns:
        ``(topology clean, suspects)``: the first True when no face repeats a vertex, no two faces share their
        vertex set and no edge has more than two faces (``repair(clean_topology=True)`` may skip those checks);
        ``suspects`` (int64 ``[S]``, host) the faces that may be slivers by the repair's measures — aspect ratio
        (longest edge² over twice the area, float64 from the float32 positions) over
        :data:`~meshforge.mesh.decimate.MAX_ASPECT`, or area under :data:`~meshforge.mesh.decimate.DEGENERATE_AREA` ×
        the squared bounding-box diagonal — with a relative margin of :data:`_NOOP_MARGIN` towards "sliver"
        (``repair(suspects=...)`` measures only those). In doubt (also for ``V ≥ 2²¹``, where a face's sorted
        indices no longer fit one int64 key): not clean, every face a suspect.
    """
    nv, nf = vertices.shape[0], faces.shape[0]
    if nf == 0 or nv >= 1 << 21:
        return nf == 0, np.arange(nf)
    f = faces.long()
    s = torch.sort(f, dim=1)[0]
    face_keys = torch.sort((s[:, 0] * nv + s[:, 1]) * nv + s[:, 2])[0]
    e = torch.stack([f, f[:, [1, 2, 0]]], 2).reshape(-1, 2)
    edge_keys = torch.sort(e.amin(1) * nv + e.amax(1))[0]
    diag2 = (vertices.amax(0) - vertices.amin(0)).double().pow(2).sum()
    t = vertices[f].double()
    edges = torch.stack([t[:, 1] - t[:, 0], t[:, 2] - t[:, 1], t[:, 0] - t[:, 2]], 1)
    length = torch.linalg.vector_norm(edges, dim=-1)
    area = 0.5 * torch.linalg.vector_norm(torch.linalg.cross(edges[:, 0], -edges[:, 2], dim=-1), dim=-1)
    aspect = length.amax(1).pow(2) / (2.0 * area).clamp_min(1e-300)
    topology_bad = ((s[:, 0] == s[:, 1]) | (s[:, 1] == s[:, 2])).any()
    topology_bad |= (face_keys[1:] == face_keys[:-1]).any() | (edge_keys[2:] == edge_keys[:-2]).any()
    sliver = (aspect > MAX_ASPECT * (1.0 - _NOOP_MARGIN)) | (area < DEGENERATE_AREA * diag2 * (1.0 + _NOOP_MARGIN))
    suspects = torch.nonzero(sliver).squeeze(1).cpu().numpy()  # the one wait for the device
    return not bool(topology_bad.item()), suspects


def _clock(device: torch.device) -> float:
    """Wall time after the device's queued work is done (CUDA kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def decimate_torch(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    cfg: DecimateConfig,
    *,
    timings: dict[str, float] | None = None,
    deferred: list[Callable[[], dict[str, Any]]] | None = None,
) -> tuple[Mesh, dict[str, Any]]:
    """Reduce a mesh held in tensors to at most ``cfg.faces`` faces on its device; return the small result on
    the host.

    The torch counterpart of :func:`meshforge.mesh.decimate.decimate` (same budget semantics, same report
    keys): works at unit scale (centred, divided by the bounding-box diagonal) in float64, runs parallel
    rounds of independent collapses (module docstring) down to ``max(cfg.faces, fewest_faces)`` (collapses
    never remove a part; a closed part keeps at least a tetrahedron), copies the result to the host and gives
    it to the CPU path's :func:`~meshforge.mesh.decimate.repair` (unless :func:`repair_checks`, on the device,
    find nothing it would change; with the whole-mesh topology checks skipped when they find those clean). A mesh
    already within budget goes straight to the CPU path (it is small). Every face keeps the winding of the faces it
    stands for.

    Args:
        vertices: ``[V, 3]`` float positions (metres) of a cleaned mesh (:func:`~.torch_clean.clean_torch`), on
            any device.
        faces: ``[F, 3]`` integer indices on the same device.
        cfg: ``faces`` (the budget); ``engine`` and ``aggressiveness`` belong to the CPU engine and are ignored.
        timings: if given, receives seconds per stage: ``quadrics``, ``rounds``, ``to_host``, ``repair``.
        deferred: if given, the result's topology check and sliver counts (host work, 15-25 ms at 20k faces) are
            not computed here: a function computing them (:func:`decimation_facts`) is appended instead, for the
            caller to run beside the next stage and add to the counts.

    Returns:
        ``(mesh, counts)``: a host :class:`~meshforge.types.Mesh` (float32 vertices, int32 faces, positions
        only) and counts holding ``attempts`` (1), ``rounds``, ``rejected`` (collapses refused by the guards),
        the topology check of the result and ``slivers_over_20``/``slivers_over_100`` — the CPU path's keys; on
        CUDA also ``kernels`` (``"fused"``: :mod:`~meshforge.mesh.qem_triton`'s, or ``"torch"``) and, where the fused
        kernels failed in this process, ``kernels_failure`` (why).
        :func:`~meshforge.mesh.decimate.budget_shortfall` says why a result stayed above the budget.

    Raises:
        InputError: a malformed surface (:func:`~.torch_clean.check_surface`).
    """
    check_surface(vertices, faces)
    if faces.shape[0] <= cfg.faces:
        host = Mesh(vertices.detach().to(torch.float32).cpu().numpy(), faces.detach().to(torch.int32).cpu().numpy())
        return decimate(host, dataclasses.replace(cfg, engine="fast-simplification"))  # repairs only: no engine
    device = vertices.device
    t0 = _clock(device)
    f = faces.detach().long()
    v = vertices.detach().to(torch.float64)
    lo, hi = v.amin(0), v.amax(0)
    centre = 0.5 * (lo + hi)
    scale = float(torch.linalg.vector_norm(hi - lo).item()) or 1.0
    pos = (v - centre) / scale
    nv = pos.shape[0]
    goal = max(cfg.faces, fewest_faces_torch(f, nv))
    min_area = DEGENERATE_AREA  # relative to the squared diagonal, which is 1 here
    q = _quadrics(pos, f, _edges(f, nv))
    t1 = _clock(device)
    rounds = rejected = 0
    fraction = CANDIDATE_FRACTION
    level = 0
    skip = _NONE
    while f.shape[0] > goal and rounds < MAX_ROUNDS:
        pos, f, q, collapsed, refused, skip = _next_round(pos, f, q, goal, min_area, fraction, GUARDS[level], skip)
        rounds += 1
        rejected += refused
        if collapsed == 0:
            if fraction < 1.0:
                fraction = min(1.0, 2.0 * fraction)  # the cheapest edges were all refused: look further
            elif level + 1 < len(GUARDS):
                level += 1  # every valid edge was refused: the CPU engine's looser guards from here on
                fraction = CANDIDATE_FRACTION
                skip = _NONE  # what the strict guards refused may pass the loose ones
            else:
                break
        else:
            fraction = CANDIDATE_FRACTION
    # slivers: collapse the short edges of needles and flip the long edges of caps, in parallel, a few rounds
    for _ in range(SLIVER_ROUNDS):
        needles = _needle_edges(pos, f, min_area)
        collapsed = 0
        if needles.numel():
            pos, f, q, collapsed, _, _ = _next_round(
                pos, f, q, 0, min_area, 1.0, GUARDS[0], only=needles, tol=REPAIR_TOLERANCE
            )
        f, flipped = _flip_caps(pos, f, min_area, REPAIR_TOLERANCE)
        if collapsed + flipped == 0:
            break
    t2 = _clock(device)
    used = torch.zeros(nv, dtype=torch.bool, device=device)
    used[f.reshape(-1)] = True
    remap = torch.cumsum(used.long(), 0) - 1
    out_v = (pos[used] * scale + centre).to(torch.float32)
    out_f = remap[f]
    clean_topology, suspects = repair_checks(out_v, out_f)
    small = Mesh(out_v.cpu().numpy(), out_f.to(torch.int32).cpu().numpy())
    t3 = time.perf_counter()
    if clean_topology and suspects.size == 0:
        result = small
    else:
        result = repair(small, clean_topology=clean_topology, suspects=suspects if clean_topology else None)
    if timings is not None:
        timings.update(quadrics=t1 - t0, rounds=t2 - t1, to_host=t3 - t2, repair=time.perf_counter() - t3)
    facts: dict[str, Any] = {}
    if deferred is None:
        facts = decimation_facts(result, scale)
    else:
        deferred.append(functools.partial(decimation_facts, result, scale))
    kernels: dict[str, str] = {}
    if device.type == "cuda":
        kernels["kernels"] = "fused" if _fused(device) else "torch"
        if FUSED_FAILURE is not None:
            kernels["kernels_failure"] = FUSED_FAILURE
    return result, {"attempts": 1, "rounds": rounds, "rejected": rejected, **kernels, **facts}


def decimation_facts(mesh: Mesh, diagonal: float) -> dict[str, Any]:
    """The decimate stage's checks of a result: :func:`~meshforge.geometry.topology.topology` (faces of less than
    :data:`~meshforge.mesh.decimate.DEGENERATE_AREA` × ``diagonal``² counted degenerate; ``diagonal``: the source's
    bounding-box diagonal, metres) and ``slivers_over_20`` / ``slivers_over_100`` (aspect ratio, longest edge² over
    twice the area, :func:`~meshforge.mesh.decimate._aspect`) — the CPU path's keys."""
    topo = topology(mesh.vertices, mesh.faces, area_eps=DEGENERATE_AREA * diagonal**2)
    aspect, _, _ = _aspect(mesh.vertices, mesh.faces)
    slivers = {"slivers_over_20": int((aspect > 20).sum()), "slivers_over_100": int((aspect > 100).sum())}
    return {**topo.to_dict(), **slivers}
