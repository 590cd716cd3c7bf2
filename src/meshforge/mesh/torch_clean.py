"""Mesh cleanup in PyTorch, on the device that holds the surface (a CUDA GPU, or the CPU).

The same steps, options and results as :func:`meshforge.mesh.clean.clean` (the CPU reference path), with
tensor operations only (sorts, scatters, gathers; no per-face Python and no host round trip of the mesh):

1. **weld**: vertices with identical float32 positions (``-0.0`` equals ``0.0``) become one, by a
   lexicographic sort of their int64 bit-pattern keys; unreferenced vertices are dropped;
2. **degenerate and duplicate faces**: faces with a repeated vertex index go, and of faces with the same
   vertex set (either winding) the first is kept (sort of the sorted index triples);
3. **small components**: connected components of the vertex graph by parallel hooking and pointer jumping
   (the Shiloach–Vishkin scheme, "An O(log n) parallel connectivity algorithm", J. Algorithms 1982) over the
   edges; components whose area is below ``min_component_fraction`` of the largest one's are dropped;
4. **orientation**: faces are made consistent across shared edges by the same hooking and pointer jumping
   over the face-adjacency graph, carrying a flip parity along each pointer (a union–find with parity), then
   each face-connected component is flipped so that its signed volume is positive (outward normals).

The face-adjacency graph is the CPU path's (:func:`meshforge.mesh.clean._face_adjacency`): the faces on an
undirected edge, sorted by their directed-edge index, are paired consecutively. On an orientable component the
consistent orientation is unique up to the final outward flip, so the result equals the CPU path's; where a
component cannot be oriented consistently (a Möbius strip, some non-manifold fans) both paths keep a spanning
tree of constraints, which may be a different tree.

Vertices come out in the order of their first use by the input's vertex numbering (the CPU path orders them by
position bytes); faces keep their input order, so ``vertices[faces]`` equals the CPU path's.
"""

from __future__ import annotations

import torch

from ..config import CleanConfig
from ..errors import InputError

__all__ = [
    "check_surface",
    "clean_torch",
    "merge_vertices_torch",
    "orient_faces_torch",
    "remove_degenerate_faces_torch",
    "remove_small_components_torch",
    "union_find",
]


def check_surface(vertices: torch.Tensor, faces: torch.Tensor) -> None:
    """Check a surface held in tensors before the torch engine works on it.

    Raises:
        InputError: vertices not ``[V, 3]`` floats, faces not ``[F, 3]`` integers, the two on different devices,
            or a face index outside ``[0, V)`` (one line naming what was wrong).
    """
    if vertices.ndim != 2 or vertices.shape[1] != 3 or not vertices.is_floating_point():
        raise InputError(f"vertices must be [V, 3] floats, got {list(vertices.shape)} {vertices.dtype}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise InputError(f"faces must be [F, 3] vertex indices, got {list(faces.shape)}")
    if faces.is_floating_point() or faces.is_complex() or faces.dtype == torch.bool:
        raise InputError(f"faces must hold integer indices, got {faces.dtype}")
    if faces.device != vertices.device:
        raise InputError(f"vertices are on {vertices.device} but faces on {faces.device}: move both to one device")
    if faces.numel():
        lo, hi = (int(x) for x in torch.stack([faces.min(), faces.max()]).tolist())
        n = int(vertices.shape[0])
        if lo < 0 or hi >= n:
            raise InputError(f"face index {lo if lo < 0 else hi} out of range for {n} vertices")


def _lexsort_unique(keys: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Group equal rows of int64 key columns (all ``[N]``): ``(order, group)`` where ``order`` sorts the rows
    lexicographically (stable: equal rows keep their input order) and ``group[i]`` is the 0-based group number of
    the ``i``-th sorted row."""
    n = keys[0].shape[0]
    order = torch.arange(n, device=keys[0].device)
    for k in reversed(keys):  # least significant first, each sort stable
        order = order[torch.sort(k[order], stable=True).indices]
    new = torch.zeros(n, dtype=torch.bool, device=order.device)
    if n:
        new[0] = True
        differs = torch.zeros(n - 1, dtype=torch.bool, device=order.device)
        for k in keys:
            ks = k[order]
            differs |= ks[1:] != ks[:-1]
        new[1:] = differs
    return order, torch.cumsum(new.long(), 0) - 1


def _first_of_groups(order: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Smallest original index in each group (``[n_groups]`` int64), for :func:`_lexsort_unique`'s output."""
    first = torch.full((n_groups,), order.shape[0], dtype=torch.long, device=order.device)
    return first.scatter_reduce_(0, group, order, "amin")


def _compact(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop vertices no face uses, keeping the vertex order; faces re-indexed (int64)."""
    used = torch.zeros(vertices.shape[0], dtype=torch.bool, device=vertices.device)
    used[faces.reshape(-1)] = True
    remap = torch.cumsum(used.long(), 0) - 1
    return vertices[used], remap[faces]


def merge_vertices_torch(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weld vertices with identical float32 positions (``-0.0`` equals ``0.0``) and drop unreferenced vertices.

    As :func:`meshforge.mesh.clean.merge_vertices`: exact equality of the float32 values, found by a
    lexicographic sort of int64 keys (the positions' bit patterns). The kept vertex of a group is its first.

    Args:
        vertices: ``[V, 3]`` float positions (welded as float32), on any device.
        faces: ``[F, 3]`` integer indices.

    Returns:
        ``([V', 3] float32 vertices, [F, 3] int64 faces)`` on the input's device; vertices in the order of each
        group's first member.
    """
    v = vertices.to(torch.float32) + 0.0  # + 0.0 turns -0.0 into 0.0: one bit pattern per position
    bits = v.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    order, group = _lexsort_unique([(bits[:, 0] << 32) | bits[:, 1], bits[:, 2]])
    n_groups = int(group[-1].item()) + 1 if group.numel() else 0
    first = _first_of_groups(order, group, n_groups)
    # number the groups by their first member so the output keeps the input's vertex order
    rank = torch.empty_like(first)
    rank[torch.argsort(first)] = torch.arange(n_groups, device=first.device)
    inverse = torch.empty(v.shape[0], dtype=torch.long, device=v.device)
    inverse[order] = rank[group]
    welded = torch.empty((n_groups, 3), dtype=torch.float32, device=v.device)
    welded[rank] = v[first]
    return _compact(welded, inverse[faces.long()])


def remove_degenerate_faces_torch(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop faces with a repeated vertex index and exact duplicate faces (same vertex set, either winding; the
    first is kept), then unreferenced vertices. As :func:`meshforge.mesh.clean.remove_degenerate_faces` with
    ``area_eps=None``: tiny faces with three distinct vertices are kept (the surface stays closed).

    Returns:
        ``(vertices, [F', 3] int64 faces)``, faces in input order.
    """
    f = faces.long()
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
    if f.shape[0]:
        s = torch.sort(f, dim=1).values
        nv = max(int(vertices.shape[0]), 1)
        order, group = _lexsort_unique([s[:, 0], s[:, 1] * nv + s[:, 2]])
        first = _first_of_groups(order, group, int(group[-1].item()) + 1)
        f = f[torch.sort(first).values]
    return _compact(vertices, f)


def union_find(
    n: int,
    a: torch.Tensor,
    b: torch.Tensor,
    parity: torch.Tensor | None = None,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Connected components of ``n`` nodes joined by the edges ``(a[i], b[i])``, optionally with a parity.

    Parallel hooking and pointer jumping (Shiloach & Vishkin, J. Algorithms 3(1), 1982): each round every
    edge between two different roots hooks the larger root under the smaller (``scatter_reduce`` amin, so the
    pointers only decrease and never cycle), then every node jumps to its root. With ``parity`` (``[E]`` bool:
    the two ends must differ), each node also carries the XOR of parities along its pointer path, so at the end
    ``flip[x]`` says whether node ``x`` differs from its component's root: a 2-colouring along a spanning tree.
    Among several edges hooking one root to the same smaller root, the one with parity 0 wins.

    Args:
        n: number of nodes.
        a, b: ``[E]`` int64 node indices, on any device.
        parity: optional ``[E]`` bool.
        start: ``(root, flip)`` of an earlier call to continue from (its edges are already joined).

    Returns:
        ``(root [n] int64, flip [n] bool)``: each node's root, the smallest node index of its component; and the
        parity relative to it (all False without ``parity``).
    """
    device = a.device
    if start is None:
        root = torch.arange(n, device=device)
        flip = torch.zeros(n, dtype=torch.bool, device=device)
    else:
        root, flip = start
    par = parity if parity is not None else torch.zeros(a.shape[0], dtype=torch.bool, device=device)
    while True:
        ra, rb = root[a], root[b]
        live = ra != rb
        if not bool(live.any()):
            break
        ra, rb = ra[live], rb[live]
        p = (flip[a[live]] ^ flip[b[live]] ^ par[live]).long()
        hi, lo = torch.maximum(ra, rb), torch.minimum(ra, rb)
        # a root may be hooked by several edges: the smallest (lo, parity) wins, in one scatter of 2·lo + parity
        best = torch.full((n,), 2 * n, dtype=torch.long, device=device)
        best.scatter_reduce_(0, hi, 2 * lo + p, "amin")
        hooked = best < 2 * n
        root = torch.where(hooked, best // 2, root)
        flip = torch.where(hooked, (best % 2).bool(), flip)
        # pointer jumping until every node points at a root
        while True:
            up = root[root]
            if bool((up == root).all()):
                break
            flip = flip ^ flip[root]
            root = up
    return root, flip


def remove_small_components_torch(
    vertices: torch.Tensor, faces: torch.Tensor, min_fraction: float
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Drop connected components (of the vertex graph) whose area is below ``min_fraction`` of the largest one's.

    As :func:`meshforge.mesh.clean.remove_small_components` (areas in float64).

    Returns:
        ``(vertices, faces, number of components dropped)``.
    """
    if faces.shape[0] == 0 or min_fraction <= 0:
        return vertices, faces, 0
    f = faces.long()
    nv = int(vertices.shape[0])
    root, _ = union_find(nv, torch.cat([f[:, 0], f[:, 1], f[:, 2]]), torch.cat([f[:, 1], f[:, 2], f[:, 0]]))
    label = root[f[:, 0]]
    area = torch.zeros(nv, dtype=torch.float64, device=f.device).index_add_(0, label, face_areas_torch(vertices, f))
    present = torch.zeros(nv, dtype=torch.bool, device=f.device)
    present[label] = True
    keep_label = present & (area >= min_fraction * area.max())
    dropped = int((present.sum() - keep_label.sum()).item())
    if dropped == 0:
        return vertices, f, 0
    v, f = _compact(vertices, f[keep_label[label]])
    return v, f, dropped


def face_areas_torch(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """``[F]`` float64 triangle areas (units²), as :func:`meshforge.geometry.topology.face_areas`."""
    t = vertices.to(torch.float64)[faces.long()]
    return 0.5 * torch.linalg.vector_norm(torch.linalg.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), dim=1)


def face_adjacency_torch(faces: torch.Tensor, nv: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs of faces sharing an undirected edge, whether they traverse it in the same direction, and whether
    the edge is manifold (exactly two faces).

    The faces on one edge, in the order of their directed-edge index (face-major, v0→v1, v1→v2, v2→v0), are
    paired consecutively, as :func:`meshforge.mesh.clean._face_adjacency`.

    Returns:
        ``(face_a [P], face_b [P], same_direction [P] bool, manifold [P] bool)``.
    """
    f = faces.long()
    e0 = f.reshape(-1)
    e1 = f[:, [1, 2, 0]].reshape(-1)
    key = torch.minimum(e0, e1) * nv + torch.maximum(e0, e1)
    ks, order = torch.sort(key, stable=True)
    same = ks[1:] == ks[:-1]
    # an edge is manifold when it pairs with neither its predecessor's nor its successor's neighbour
    before = torch.zeros_like(same)
    before[1:] = same[:-1]
    after = torch.zeros_like(same)
    after[:-1] = same[1:]
    manifold = (same & ~before & ~after)[same]
    a, b = order[:-1][same], order[1:][same]
    return a // 3, b // 3, e0[a] == e0[b], manifold


def orient_faces_torch(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Make face winding consistent within each component and outward (positive signed volume).

    As :func:`meshforge.mesh.clean.orient_faces`: consistency by :func:`union_find` with parity over the face
    adjacency (a pair traversing its edge in the same direction must differ) — over the manifold edges first,
    then over the pairs at non-manifold edges — then per face-connected component a flip when its signed volume
    (float64) is negative. Where a component cannot be wound consistently (pairs at non-manifold edges that
    contradict each other), the CPU path keeps its BFS tree's constraints and this one keeps every manifold
    edge's, so the two may differ there; elsewhere they agree face for face.

    Returns:
        ``(faces [F, 3] int64, number of faces flipped)``.
    """
    f = faces.long()
    nf = f.shape[0]
    if nf == 0:
        return f, 0
    nv = int(vertices.shape[0])
    fa, fb, same_dir, manifold = face_adjacency_torch(f, nv)
    # manifold edges first, so each patch of faces joined by manifold edges is wound consistently; then the
    # pairs at non-manifold edges orient those patches against each other
    first = union_find(nf, fa[manifold], fb[manifold], same_dir[manifold])
    _, flip = union_find(nf, fa, fb, same_dir, start=first)
    # the CPU path leaves a consistently wound mesh as it is; so does the union-find (all parities 0)
    f = torch.where(flip[:, None], f.flip(1), f)
    # the face-adjacency pairs are the same after flipping: components from the same union-find
    root, _ = union_find(nf, fa, fb)
    t = vertices.to(torch.float64)[f]
    vol = (t[:, 0] * torch.linalg.cross(t[:, 1], t[:, 2])).sum(1) / 6.0
    comp_vol = torch.zeros(nf, dtype=torch.float64, device=f.device).index_add_(0, root, vol)
    inward = comp_vol[root] < 0
    f = torch.where(inward[:, None], f.flip(1), f)
    return f, int((flip ^ inward).sum().item())


def clean_torch(
    vertices: torch.Tensor, faces: torch.Tensor, cfg: CleanConfig
) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    """:func:`meshforge.mesh.clean.clean` on tensors: weld, drop faces with a repeated vertex and duplicate faces,
    drop small floating components, orient faces — on the tensors' device.

    Args:
        vertices: ``[V, 3]`` float positions (metres), on any device (CUDA or CPU).
        faces: ``[F, 3]`` integer vertex indices, on the same device.
        cfg: ``min_component_fraction`` and ``orient``, as for the CPU path.

    Returns:
        ``(vertices [V', 3] float32, faces [F', 3] int64, counts)`` on the input's device; counts holds
        ``components_dropped`` and ``faces_flipped`` as the CPU path's.

    Raises:
        InputError: a malformed surface (:func:`check_surface`).
    """
    check_surface(vertices, faces)
    v, f = merge_vertices_torch(vertices, faces)
    v, f = remove_degenerate_faces_torch(v, f)
    v, f, dropped = remove_small_components_torch(v, f, cfg.min_component_fraction)
    flipped = 0
    if cfg.orient:
        f, flipped = orient_faces_torch(v, f)
    return v, f, {"components_dropped": dropped, "faces_flipped": flipped}
