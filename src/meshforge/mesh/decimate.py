"""QEM decimation to a face budget.

Quadric error metric edge collapse (Garland & Heckbert, SIGGRAPH 1997) in Sven Forstmann's "Fast
Quadric Mesh Simplification" variant, as packaged by ``fast-simplification`` (MIT, pyvista).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ..config import DecimateConfig
from ..errors import InputError, MissingDependency
from ..geometry.normals import cross3, face_normals
from ..geometry.topology import (
    TopologyReport,
    directed_edges,
    face_areas,
    face_sets,
    topology,
    vertex_components,
)
from ..types import Mesh
from .clean import remove_degenerate_faces

#: faces with less area than this (m²) count as degenerate after decimation
DEGENERATE_AREA = 1e-12  # relative to the squared bounding-box diagonal (1e-12 m² for a 1 m model)
#: faces with a larger aspect ratio (longest edge / height) count as slivers and are repaired
MAX_ASPECT = 20.0
#: the largest move of the surface by one sliver-repair operation, relative to the bounding diagonal
REPAIR_TOLERANCE = 3e-3
#: a sliver whose shortest edge is under this fraction of its longest is a needle (its short edge is collapsed);
#: any other sliver is a cap (its long edge is flipped)
NEEDLE_RATIO = 0.3


def decimate(mesh: Mesh, cfg: DecimateConfig) -> tuple[Mesh, dict[str, object]]:
    """Reduce a mesh to at most ``cfg.faces`` faces, then check it is still a closed two-manifold.

    Per-vertex attributes are dropped (they are rebuilt after unwrapping). Every face keeps the winding of
    the source faces it stands for (the engine's collapses and :func:`repair` preserve orientation; nothing
    is re-oriented afterwards). A mesh already within budget is returned with only its tiny faces repaired.
    If the input was watertight and a collapse made it non-manifold or opened it, the decimation is retried
    with a gentler schedule (lower aggressiveness), and finally with the budget ×1.25 smaller steps; the
    report records what happened. When the engine stops above the budget (its error threshold grows with
    each iteration up to a cap), it is rerun with a higher aggressiveness.

    Args:
        mesh: a cleaned mesh (``[V, 3]`` float32 vertices, ``[F, 3]`` int32 faces).
        cfg: ``faces`` budget, ``engine``, ``aggressiveness``.

    Returns:
        ``(mesh, counts)`` with ``counts`` holding the topology check of the result and the attempts made.

    When no attempt reaches the budget (more separate parts than it can hold: collapses never remove a
    part), the result is the fewest faces reached and :func:`budget_shortfall` says why.

    Raises:
        InputError: unknown engine.
        MissingDependency: fast-simplification is not installed.
    """
    if cfg.engine != "fast-simplification":
        raise InputError(f"unknown decimation engine {cfg.engine!r} (choices: fast-simplification)")
    try:
        import fast_simplification
    except ImportError:  # pragma: no cover
        raise MissingDependency("decimation needs 'fast-simplification': pip install fast-simplification") from None

    base = Mesh(vertices=mesh.vertices, faces=mesh.faces)
    scale = float(np.linalg.norm(base.vertices.max(0) - base.vertices.min(0))) if base.n_vertices else 0.0
    scale = scale or 1.0
    if mesh.n_faces <= cfg.faces:
        # tiny faces only: the source is within budget, its own edges (parts touching) stay as they are
        result = repair(base, max_aspect=np.inf, pinches=False)
        topo = topology(result.vertices, result.faces, area_eps=DEGENERATE_AREA * scale**2)
        return result, {"attempts": 0, **topo.to_dict()}
    before = topology(base.vertices, base.faces)
    attempts: list[dict[str, object]] = []
    best: tuple[int, Mesh, TopologyReport, np.ndarray] | None = None  # (defects, mesh, its topology, aspects)
    schedule = [(cfg.aggressiveness, 1.0), (max(2.0, cfg.aggressiveness - 2.0), 1.0), (2.0, 0.995), (2.0, 0.98)]
    if not before.watertight:
        # an open or non-manifold source (a multi-part model): its defects are its own, retrying rarely helps
        schedule = schedule[:1]
    elif base.n_faces > 2_000_000:
        # each retry of a multi-million-face mesh costs tens of seconds: one gentler retry at most
        schedule = schedule[:2]
    # the engine's collapse thresholds are absolute quadric errors: work at unit scale so a model in
    # centimetres decimates like the same model in metres
    centre = 0.5 * (base.vertices.min(0) + base.vertices.max(0)).astype(np.float64)
    unit = ((base.vertices - centre) / scale).astype(np.float32)
    # collapses never remove a part, and a closed part cannot go below a tetrahedron: aim no lower than
    # that (a lower target makes the engine flatten whole parts, which repair then has to delete)
    parts, reachable = _parts_and_fewest(base.faces)
    goal = max(cfg.faces, reachable)
    over: list[Mesh] = []  # results the engine could not bring within budget (kept in case none is)
    for aggressiveness, shrink in schedule:
        v, f = _simplify(fast_simplification, unit, base.faces, goal, int(goal * shrink), aggressiveness)
        v = (np.asarray(v, dtype=np.float64) * scale + centre).astype(np.float32)
        candidate = repair(Mesh(vertices=v, faces=np.asarray(f, dtype=np.int32)))
        if candidate.n_faces > goal:
            attempts.append({"aggressiveness": aggressiveness, "faces": candidate.n_faces, "over_budget": True})
            over.append(candidate)
            continue
        defects, topo, aspect = _defects(candidate, before, parts, scale)
        attempts.append({"aggressiveness": aggressiveness, "faces": candidate.n_faces, "defects": defects})
        if best is None or defects < best[0]:
            best = (defects, candidate, topo, aspect)
        if defects == 0:
            break
    if best is None:
        # the budget is below what collapses can reach (more separate parts than it can hold): the fewest
        # faces among the cleanest results; budget_shortfall() says why in the report
        fewest = min(c.n_faces for c in over)
        scored = [(*_defects(c, before, parts, scale), c) for c in over if c.n_faces == fewest]
        d, topo, aspect, c = min(scored, key=lambda x: x[0])
        best = (d, c, topo, aspect)
    _, result, topo, aspect = best
    slivers = {"slivers_over_20": int((aspect > 20).sum()), "slivers_over_100": int((aspect > 100).sum())}
    return result, {"attempts": len(attempts), **topo.to_dict(), **slivers}


def _defects(
    candidate: Mesh, before: TopologyReport, before_parts: int, scale: float
) -> tuple[int, TopologyReport, np.ndarray]:
    """Defects a decimation introduced: degenerate faces, slivers over aspect 100, and the non-manifold
    edges, parts and (for a closed source) boundary edges the source did not have.

    Returns:
        ``(defects, the candidate's topology, its per-face aspect ratios)``.
    """
    topo = topology(candidate.vertices, candidate.faces, area_eps=DEGENERATE_AREA * scale**2)
    aspect = _aspect(candidate.vertices, candidate.faces)[0]
    defects = topo.degenerate_faces + int((aspect > 100.0).sum())
    defects += max(0, topo.nonmanifold_edges - before.nonmanifold_edges)
    defects += max(0, topo.components - before.components)
    defects += 4 * max(0, before_parts - _parts(candidate.faces))  # parts flattened away and deleted
    if before.watertight:
        defects += topo.boundary_edges
    return defects, topo, aspect


def _parts(faces: np.ndarray) -> int:
    """Connected parts of a face set (vertices no face uses are not parts)."""
    f = np.asarray(faces, dtype=np.int64)
    if f.size == 0:
        return 0
    _, labels = vertex_components(int(f.max()) + 1, f)
    return int(np.unique(labels[f[:, 0]]).size)


def fewest_faces(faces: np.ndarray) -> int:
    """The fewest faces edge collapses can leave of a mesh: 4 for each closed part (a tetrahedron) and 1
    for each open one, since a collapse never removes or merges a part.

    Args:
        faces: ``[F, 3]`` vertex indices.

    Returns:
        The lower bound (0 for no faces).
    """
    return _parts_and_fewest(faces)[1]


def _parts_and_fewest(faces: np.ndarray) -> tuple[int, int]:
    """``(connected parts, fewest faces)`` of a face set: :func:`_parts` and :func:`fewest_faces` from one
    labelling."""
    f = np.asarray(faces, dtype=np.int64)
    if f.size == 0:
        return 0, 0
    nv = int(f.max()) + 1
    _, labels = vertex_components(nv, f)
    e = directed_edges(f)
    lo, hi = np.minimum(e[:, 0], e[:, 1]), np.maximum(e[:, 0], e[:, 1])
    _, first, counts = np.unique(lo * nv + hi, return_index=True, return_counts=True)
    parts = np.unique(labels[f[:, 0]])
    open_parts = np.unique(labels[lo[first[counts == 1]]])
    return int(parts.size), int(4 * (parts.size - open_parts.size) + open_parts.size)


def _simplify(engine: Any, unit: np.ndarray, faces: np.ndarray, budget: int, target: int, agg: float) -> tuple:
    """Run the engine until it returns at most ``budget`` faces: first lower its target by the excess, then
    (it stops after 100 iterations of a growing error threshold) raise the aggressiveness to 7 and 10.

    Returns:
        ``(vertices, faces)`` of the run with the fewest faces (over budget only if every run was).
    """
    best: tuple[Any, Any] | None = None
    for a in dict.fromkeys([agg, max(agg, 7.0), max(agg, 10.0)]):
        t = max(4, target)
        for _ in range(4):
            v, f = engine.simplify(unit, faces, target_count=int(t), agg=float(a))
            if best is None or len(f) < len(best[1]):
                best = (v, f)
            if len(f) <= budget:
                return v, f
            t = max(4, int(t - (len(f) - budget) - 2))
    assert best is not None
    return best


def _drop_duplicate_faces(faces: np.ndarray) -> np.ndarray:
    """Remove every copy of faces that share their vertex set (folded "sandwich" pairs left by collapses)."""
    _, inverse, counts = face_sets(faces)
    return faces[counts[inverse] == 1]


def _aspect(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per face: (aspect = longest edge / height, [3] edge lengths, area)."""
    t = v[f].astype(np.float64)
    edges = np.stack([t[..., 1, :] - t[..., 0, :], t[..., 2, :] - t[..., 1, :], t[..., 0, :] - t[..., 2, :]], axis=-2)
    length = np.linalg.norm(edges, axis=-1)
    area = 0.5 * np.linalg.norm(cross3(edges[..., 0, :], -edges[..., 2, :]), axis=-1)
    longest = length.max(axis=-1)
    aspect = longest**2 / np.maximum(2.0 * area, 1e-300)
    return aspect, length, area


def repair(
    mesh: Mesh,
    *,
    max_aspect: float = MAX_ASPECT,
    max_passes: int = 8,
    pinches: bool = True,
    tolerance: float = REPAIR_TOLERANCE,
    clean_topology: bool = False,
    suspects: np.ndarray | None = None,
) -> Mesh:
    """Fix the local defects fast QEM collapses leave behind, keeping the surface closed and manifold.

    * duplicate faces (a thin part collapsed and folded onto itself) are removed together;
    * flat pockets are removed (:func:`_drop_pockets`): the engine does not test the link condition, so a
      thin sheet (a leaf) can collapse into a closed zero-volume patch glued to the rest along edges that
      become non-manifold;
    * pinched edges are collapsed (:func:`_collapse_pinched_edges`): where a thin wall collapsed to zero
      thickness along an edge, that edge is shared by both sides (four faces); collapsing it leaves the two
      sides touching at one vertex, every edge shared by two faces;
    * slivers — faces whose aspect ratio (longest edge / height) exceeds ``max_aspect`` or whose area is
      below :data:`DEGENERATE_AREA` × (bounding diagonal)² — are removed by the classic local operations (Botsch et al.,
      *Polygon Mesh Processing*, 2010, ch. 6): a *needle* (one edge much shorter than the longest) has
      that short edge collapsed when the link condition holds, and so does a tiny face (the shortest of
      its edges the link condition allows); a *cap* (a vertex close to the opposite
      edge) has its longest edge flipped. An operation is applied only if no face normal around it turns
      by more than 90°, the surface moves by at most ``tolerance`` × the bounding diagonal (a collapse: the
      kept vertex's distance to the planes of the moved vertex's faces; a flip: the pair's distance from
      planarity) and, for flips, the worst aspect ratio of the pair improves. The bound keeps intended
      slivers along a low-poly model's creases (a bevelled box's thin strips) where they are: collapsing
      one moves a corner across the crease — by centimetres on FlightHelmet's plinth.

    Faces are only ever removed in closed sets (a folded pair, a pocket, the two faces of a collapsed
    edge), so no hole opens; a sliver no operation can fix is kept. Every face keeps its winding. Unreferenced
    vertices are dropped.

    Args:
        mesh: ``[V, 3]`` float32 vertices, ``[F, 3]`` int faces.
        max_aspect: aspect ratio above which a face is a sliver (``np.inf``: tiny faces only).
        max_passes: passes over the defects at most.
        pinches: also remove flat pockets and collapse pinched edges (False: folded pairs and slivers only).
        tolerance: the largest move of the surface by one sliver operation, relative to the bounding
            diagonal (0.3 %: the slivers of a decimated isosurface move it less — the chair's are all
            fixed — while collapsing a bevel strip of FlightHelmet's plinth moved a corner by 3.6 %;
            ``np.inf``: no bound).
        clean_topology: the caller vouches that no face repeats a vertex, no two faces share their vertex set, no
            edge has more than two faces and every vertex is referenced (the GPU decimation tests this on the
            device, :func:`~meshforge.mesh.torch_decimate.repair_checks`): the whole-mesh checks for those are
            skipped, and a mesh no sliver operation changes is returned as it is — the same result, sooner.
        suspects: with ``clean_topology``, the caller also vouches that no face outside these indices is a sliver
            by the measures above (the device tested every face with a margin): the first pass measures only them.

    Returns:
        The repaired :class:`Mesh` (positions only).
    """
    v = mesh.vertices.copy()  # the pinched-edge collapses move vertices: never the caller's array
    f = mesh.faces.astype(np.int64)
    nv = len(v)
    diag2 = float(np.sum((v.max(0) - v.min(0)).astype(np.float64) ** 2)) if nv else 0.0
    min_area = DEGENERATE_AREA * diag2
    tol = tolerance * diag2**0.5
    # After a pass whose only changes were sliver collapses (link condition checked) and flips (new edge checked
    # absent), no edge is non-manifold that was not before, and a face can only duplicate another if both were
    # touched (the copy holds the collapse's kept vertex, or the flip's new edge). So the next pass looks for
    # duplicates among the touched faces only, re-measures only those, and skips the whole-mesh checks for pockets
    # and pinched edges unless some edge is non-manifold: the same result as checking everything every pass.
    full = True  # every face may have changed (the first pass; after pockets or pinched edges were dealt with)
    vouched = clean_topology  # the first pass's duplicate, repeated-vertex and non-manifold checks are known to fail
    changed_any = False
    touched = np.zeros(len(f), dtype=bool)
    aspect = length = area = np.zeros(0)
    for _ in range(max_passes):
        count = len(f)
        if full:
            if not vouched:
                f = _drop_duplicate_faces(f)
                f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
        else:
            dup = np.flatnonzero(touched)
            _, inverse, counts = face_sets(f[dup])
            keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])
            keep[dup[counts[inverse] > 1]] = False
            f, touched = f[keep], touched[keep]
            aspect, length, area = aspect[keep], length[keep], area[keep]
        nonmanifold = full and pinches and not vouched and _has_nonmanifold_edge(f, nv)
        vouched = False
        if nonmanifold:  # (pockets and pinches both sit on such edges)
            f = _collapse_pinched_edges(v, _drop_pockets(v, f))
        pinched = len(f) != count  # a collapse can fold faces into pairs the next pass removes
        if full and suspects is not None and clean_topology and len(f) == mesh.n_faces and not nonmanifold:
            aspect, length, area = np.zeros(len(f)), np.zeros((len(f), 3)), np.full(len(f), np.inf)
            aspect[suspects], length[suspects], area[suspects] = _aspect(v, f[suspects])
            suspects = None
        elif full:
            aspect, length, area = _aspect(v, f)
        else:
            redo = np.flatnonzero(touched)
            aspect, length, area = aspect.copy(), length.copy(), area.copy()
            aspect[redo], length[redo], area[redo] = _aspect(v, f[redo])
        bad = np.flatnonzero((aspect > max_aspect) | (area < min_area))
        full = nonmanifold
        touched = np.zeros(len(f), dtype=bool)
        if bad.size == 0:
            if pinched:
                continue
            break
        bad = bad[np.argsort(-aspect[bad])]
        flat = f.ravel()
        order = np.argsort(flat, kind="stable")
        starts = np.searchsorted(flat[order], np.arange(nv + 1))

        def faces_of(x: int, order: np.ndarray = order, starts: np.ndarray = starts) -> np.ndarray:
            return order[starts[x] : starts[x + 1]] // 3

        changed = False
        for fi in bad.tolist():
            if touched[fi]:
                continue
            k_long = int(np.argmax(length[fi]))
            k_short = int(np.argmin(length[fi]))
            if area[fi] < min_area:
                # a tiny face (all three edges tiny, e.g. where an isosurface grazes a grid corner): no flip
                # makes it larger, so collapse one of its edges, the shortest that the link condition allows
                for k in np.argsort(length[fi]).tolist():
                    if _collapse(v, f, fi, int(k), faces_of, touched, tol):
                        changed = True
                        break
            elif length[fi, k_short] < NEEDLE_RATIO * length[fi, k_long]:
                changed |= _collapse(v, f, fi, k_short, faces_of, touched, tol)
            else:
                changed |= _flip(v, f, fi, k_long, faces_of, touched, aspect[fi], tol)
        changed_any |= changed or pinched
        if not changed and not pinched:
            break
    if clean_topology and not changed_any and len(f) == mesh.n_faces:
        return Mesh(vertices=v, faces=f.astype(np.int32))
    return remove_degenerate_faces(Mesh(vertices=v, faces=f.astype(np.int32)))


def _has_nonmanifold_edge(f: np.ndarray, nv: int) -> bool:
    """Whether some undirected edge of the ``[F, 3]`` int64 faces is used by more than two faces."""
    e = directed_edges(f)
    key = np.sort(np.minimum(e[:, 0], e[:, 1]) * nv + np.maximum(e[:, 0], e[:, 1]))
    return bool(len(key) > 2 and (key[2:] == key[:-2]).any())


#: a closed patch is a flat pocket when its enclosed volume is at most this × area^1.5 (a ball has 0.094)
POCKET_FLATNESS = 1e-3


def _drop_pockets(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Remove flat pockets: closed patches of zero volume that share non-manifold edges with the rest.

    The faces are grouped into patches connected across manifold edges (two faces) only; a patch that
    touches a non-manifold edge, is closed by itself (each of its edges used by exactly two of its faces,
    in opposite directions) and encloses at most :data:`POCKET_FLATNESS` × area^1.5 is a collapsed thin
    sheet: removing it lowers each of its non-manifold edges by two faces and opens nothing.

    Args:
        v: ``[V, 3]`` positions. f: ``[F, 3]`` int64 faces.

    Returns:
        ``[F', 3]`` faces, pockets removed.
    """
    if len(f) == 0:
        return f
    nv = len(v)
    e = directed_edges(f)
    key = np.minimum(e[:, 0], e[:, 1]) * nv + np.maximum(e[:, 0], e[:, 1])
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    per_edge = counts[inverse.reshape(-1)]
    if not (per_edge > 2).any():
        return f
    face_of = np.repeat(np.arange(len(f)), 3)
    manifold = np.flatnonzero(per_edge == 2)
    order = manifold[np.argsort(key[manifold], kind="stable")]
    a, b = face_of[order[0::2]], face_of[order[1::2]]
    graph = sp.coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(len(f), len(f)))
    _, label = connected_components(graph, directed=False)
    keep = np.ones(len(f), dtype=bool)
    by_label = np.argsort(label, kind="stable")
    bounds = np.searchsorted(label[by_label], np.arange(label.max() + 2))
    for patch in np.unique(label[face_of[per_edge > 2]]).tolist():
        sel = by_label[bounds[patch] : bounds[patch + 1]]
        sub = f[sel]
        if 2 * len(sel) > len(f):
            continue  # the main body, never a pocket
        se = directed_edges(sub)
        skey = np.minimum(se[:, 0], se[:, 1]) * nv + np.maximum(se[:, 0], se[:, 1])
        _, scounts = np.unique(skey, return_counts=True)
        _, dcounts = np.unique(se[:, 0] * nv + se[:, 1], return_counts=True)
        if (scounts != 2).any() or (dcounts != 1).any():
            continue  # not closed by itself
        t = v[sub].astype(np.float64)
        volume = abs(float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum()) / 6.0)
        area = float(face_areas(v, sub).sum())
        if volume <= POCKET_FLATNESS * area**1.5:
            keep[sel] = False
    return f[keep]


def _collapse_pinched_edges(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Collapse non-manifold edges shared by two sides of a wall collapsed to zero thickness.

    Fast QEM does not test the link condition, so a thin wall can collapse until both of its sides use
    the same edge ``(a, b)`` (four or more faces). Merging ``b`` into ``a`` (at the edge's midpoint) removes
    the faces on that edge and joins each remaining edge ``b–x`` with ``a–x``, which the removed face on
    ``(a, b, x)`` had shared; the result is manifold along every edge when the only vertices adjacent to
    both ``a`` and ``b`` are those opposite the edge (the link condition of Dey et al., 1999, for this
    edge). One more common neighbour ``y`` (a pinched cluster of vertices) is allowed: the faces on ``a–y``
    and ``b–y`` fold into pairs that :func:`repair`'s next pass removes, or leave ``a–y`` pinched for the
    next collapse. No face may turn over. ``v`` is updated in place.

    Args:
        v: ``[V, 3]`` positions. f: ``[F, 3]`` int64 faces.

    Returns:
        ``[F', 3]`` faces.
    """
    nv = len(v)
    e = directed_edges(f)
    key = np.minimum(e[:, 0], e[:, 1]) * nv + np.maximum(e[:, 0], e[:, 1])
    uniq, counts = np.unique(key, return_counts=True)
    pinched = uniq[counts > 2]
    if pinched.size == 0:
        return f
    f = f.copy()
    dead = np.zeros(len(f), dtype=bool)
    # faces around each vertex: the input's (sorted once) plus the faces a collapse moved onto it, so each
    # edge is looked at locally (a scan of every face per edge took minutes on a decimated sponge)
    flat = f.ravel()
    order = np.argsort(flat, kind="stable")
    starts = np.searchsorted(flat[order], np.arange(nv + 1))
    gained: dict[int, np.ndarray] = {}

    def around(x: int) -> np.ndarray:
        near = order[starts[x] : starts[x + 1]] // 3
        if x in gained:
            near = np.unique(np.concatenate([near, gained[x]]))
        return near[(f[near] == x).any(axis=1) & ~dead[near]]

    for k in pinched.tolist():
        a, b = divmod(int(k), nv)
        around_a = around(a)
        around_b = around(b)
        on_edge = np.intersect1d(around_a, around_b)
        if len(on_edge) < 4:
            continue
        opposite = set(f[on_edge].ravel().tolist()) - {a, b}
        na = set(f[around_a].ravel().tolist()) - {a}
        nb = set(f[around_b].ravel().tolist()) - {b}
        if len((na & nb) - opposite) > 1:
            continue
        moved = np.setdiff1d(around_b, on_edge)
        new = f[moved].copy()
        new[new == b] = a
        old_n = face_normals(v, f[moved])[1]
        saved = v[a].copy()
        v[a] = 0.5 * (v[a].astype(np.float64) + v[b])
        if ((face_normals(v, new)[1] * old_n).sum(1) < 0.0).any():
            v[a] = saved
            continue
        f[moved] = new
        dead[on_edge] = True
        gained[a] = np.concatenate([gained.get(a, moved[:0]), moved])
    return f[~dead]


def _collapse(v: np.ndarray, f: np.ndarray, fi: int, k: int, faces_of: Any, touched: np.ndarray, tol: float) -> bool:
    """Collapse edge k of face fi (q merges into p) if the link condition holds, nothing folds over and p lies
    within ``tol`` of the plane of every face of q that moves."""
    p, q = int(f[fi, k]), int(f[fi, (k + 1) % 3])
    fp = set(faces_of(p).tolist())
    fq = set(faces_of(q).tolist())
    ring = list(fp | fq)
    if touched[ring].any():
        return False
    shared = fp & fq
    if len(shared) != 2:
        return False
    opposite = {x for g in shared for x in f[g].tolist()} - {p, q}
    np_ = {x for g in fp for x in f[g].tolist()} - {p}
    nq = {x for g in fq for x in f[g].tolist()} - {q}
    if (np_ & nq) != opposite:
        return False
    moved = np.fromiter(fq - shared, dtype=np.int64)
    new = f[moved].copy()
    new[new == q] = p
    # no face may turn over; q may lie on the two collapsed faces only (a border vertex): nothing moves then
    old_unit = face_normals(v, f[moved])[1]
    if ((face_normals(v, new)[1] * old_unit).sum(1) < 0.0).any():
        return False
    if np.isfinite(tol) and len(moved):
        step = v[p].astype(np.float64) - v[q].astype(np.float64)
        if float(np.abs(old_unit @ step).max()) > tol:
            return False
    f[moved] = new
    f[list(shared)] = p  # both faces of the collapsed edge become degenerate and are dropped
    touched[ring] = True
    return True


def _flip(
    v: np.ndarray,
    f: np.ndarray,
    fi: int,
    k: int,
    faces_of: Any,
    touched: np.ndarray,
    worst: float,
    tol: float,
) -> bool:
    """Flip edge k of face fi with the neighbouring face if that improves both faces and the pair is planar
    within ``tol`` (the tetrahedron of its four vertices no taller than ``tol`` over the pair's area)."""
    a, b, c = int(f[fi, k]), int(f[fi, (k + 1) % 3]), int(f[fi, (k + 2) % 3])
    pair = np.intersect1d(faces_of(a), faces_of(b))
    if len(pair) != 2:
        return False
    g = int(pair[0] if pair[1] == fi else pair[1])
    if touched[fi] or touched[g]:
        return False
    d = int(next(x for x in f[g].tolist() if x not in (a, b)))
    if c == d or len(np.intersect1d(faces_of(c), faces_of(d))) > 0:
        return False  # edge c-d exists already: flipping would make it non-manifold
    new = np.array([[a, d, c], [d, b, c]])
    cross, units = face_normals(v, f[[fi, g]])
    if np.isfinite(tol):
        # how far the pair is from planar: the tetrahedron (a, b, c, d)'s height over the pair's area
        # (3·volume / area), well defined for a cap, whose own plane is not
        va = v[a].astype(np.float64)
        volume = abs(float(np.dot(cross[0], v[d].astype(np.float64) - va))) / 6.0
        area = 0.5 * float(np.linalg.norm(cross, axis=1).sum())
        if 3.0 * volume > tol * area:
            return False
    old_n = units.sum(0)
    if (face_normals(v, new)[1] @ old_n).min() <= 0.0:
        return False
    new_aspect, _, _ = _aspect(v, new)
    if new_aspect.max() >= max(worst, _aspect(v, f[[g]])[0].max()):
        return False
    f[fi], f[g] = new
    touched[[fi, g]] = True
    return True


def budget_shortfall(budget: int, mesh: Mesh) -> str | None:
    """Say why a decimated mesh stayed above the face budget, or None when the budget was met.

    A closed two-manifold part cannot have fewer than 4 faces (a tetrahedron), so ``k`` separate closed
    parts need at least ``4k``; otherwise :func:`decimate` found no further collapse that kept the surface
    intact (see its retries).

    Args:
        budget: the face budget asked for.
        mesh: :func:`decimate`'s result.

    Returns:
        One sentence for the report's warnings, e.g. ``"face budget 100 not reachable: the closest closed
        result has 168 faces (42 separate closed parts need at least 4 faces each)"``, or, where the parts'
        count does not explain it, ``"… (no further edge collapse keeps its 23 separate parts intact)"``.
    """
    if mesh.n_faces <= budget:
        return None
    topo = topology(mesh.vertices, mesh.faces)
    if topo.watertight and 4 * topo.components > budget:
        why = f"{topo.components} separate closed parts need at least 4 faces each"
    elif topo.components > 1:  # the guards refused every remaining collapse; parts are never removed or merged
        why = f"no further edge collapse keeps its {topo.components} separate parts intact"
    else:
        why = "no further edge collapse keeps the surface intact"
    closest = "closest closed result" if topo.watertight else "closest result"
    return f"face budget {budget} not reachable: the {closest} has {mesh.n_faces} faces ({why})"
