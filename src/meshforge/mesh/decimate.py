"""QEM decimation to a face budget.

Quadric error metric edge collapse (Garland & Heckbert, SIGGRAPH 1997) in Sven Forstmann's "Fast
Quadric Mesh Simplification" variant, as packaged by ``fast-simplification`` (MIT, pyvista).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import DecimateConfig
from ..errors import InputError, MissingDependency
from ..types import Mesh
from .clean import orient_faces, remove_degenerate_faces
from .normals import face_normals
from .topology import topology

#: faces with less area than this (m²) count as degenerate after decimation
DEGENERATE_AREA = 1e-12  # relative to the squared bounding-box diagonal (1e-12 m² for a 1 m model)
#: faces with a larger aspect ratio (longest edge / height) count as slivers and are repaired
MAX_ASPECT = 20.0


def decimate(mesh: Mesh, cfg: DecimateConfig) -> tuple[Mesh, dict[str, object]]:
    """Reduce a mesh to at most ``cfg.faces`` faces, then check it is still a closed two-manifold.

    Per-vertex attributes are dropped (they are rebuilt after unwrapping). A mesh already within budget
    is returned unchanged. If the input was watertight and a collapse made it non-manifold or opened
    it, the decimation is retried with a gentler schedule (lower aggressiveness), and finally with the
    budget ×1.25 smaller steps; the report records what happened.

    Args:
        mesh: a cleaned mesh (``[V, 3]`` float32 vertices, ``[F, 3]`` int32 faces).
        cfg: ``faces`` budget, ``engine``, ``aggressiveness``.

    Returns:
        ``(mesh, counts)`` with ``counts`` holding the topology check of the result and the attempts made.

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
    if mesh.n_faces <= cfg.faces:
        topo = topology(base.vertices, base.faces)
        return base, {"attempts": 0, **topo.to_dict()}
    before = topology(base.vertices, base.faces)
    attempts: list[dict[str, object]] = []
    best: tuple[int, Mesh] | None = None
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
    scale = float(np.linalg.norm(base.vertices.max(0) - base.vertices.min(0))) or 1.0
    unit = ((base.vertices - centre) / scale).astype(np.float32)
    for aggressiveness, shrink in schedule:
        target = max(4, int(cfg.faces * shrink))
        for _ in range(4):
            v, f = fast_simplification.simplify(unit, base.faces, target_count=int(target), agg=float(aggressiveness))
            if len(f) <= cfg.faces:
                break
            target = max(4, int(target - (len(f) - cfg.faces) - 2))
        v = (np.asarray(v, dtype=np.float64) * scale + centre).astype(np.float32)
        candidate = repair(Mesh(vertices=v, faces=np.asarray(f, dtype=np.int32)))
        topo = topology(candidate.vertices, candidate.faces, area_eps=DEGENERATE_AREA * scale**2)
        # defects the decimation introduced (an open or non-manifold input keeps its own)
        defects = topo.degenerate_faces + int((_aspect(candidate.vertices, candidate.faces)[0] > 100.0).sum())
        defects += max(0, topo.nonmanifold_edges - before.nonmanifold_edges)
        defects += max(0, topo.components - before.components)
        if before.watertight:
            defects += topo.boundary_edges
        attempts.append({"aggressiveness": aggressiveness, "faces": candidate.n_faces, "defects": defects})
        if best is None or defects < best[0]:
            best = (defects, candidate)
        if defects == 0:
            break
    assert best is not None
    result = best[1]
    topo = topology(result.vertices, result.faces, area_eps=DEGENERATE_AREA * scale**2)
    aspect, _, _ = _aspect(result.vertices, result.faces)
    slivers = {"slivers_over_20": int((aspect > 20).sum()), "slivers_over_100": int((aspect > 100).sum())}
    return result, {"attempts": len(attempts), **topo.to_dict(), **slivers}


def _drop_duplicate_faces(faces: np.ndarray) -> np.ndarray:
    """Remove every copy of faces that share their vertex set (folded "sandwich" pairs left by collapses)."""
    key = np.sort(faces, axis=1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    return faces[counts[inverse.reshape(-1)] == 1]


def _aspect(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per face: (aspect = longest edge / height, [3] edge lengths, area)."""
    t = v[f].astype(np.float64)
    edges = np.stack([t[..., 1, :] - t[..., 0, :], t[..., 2, :] - t[..., 1, :], t[..., 0, :] - t[..., 2, :]], axis=-2)
    length = np.linalg.norm(edges, axis=-1)
    area = 0.5 * np.linalg.norm(np.cross(edges[..., 0, :], -edges[..., 2, :]), axis=-1)
    longest = length.max(axis=-1)
    aspect = longest**2 / np.maximum(2.0 * area, 1e-300)
    return aspect, length, area


def repair(mesh: Mesh, *, max_aspect: float = MAX_ASPECT, max_passes: int = 8) -> Mesh:
    """Fix the local defects fast QEM collapses leave behind, keeping the surface closed and manifold.

    * duplicate faces (a thin part collapsed and folded onto itself) are removed together;
    * slivers — faces whose aspect ratio (longest edge / height) exceeds ``max_aspect`` or whose area is
      below :data:`DEGENERATE_AREA` × (bounding diagonal)² — are removed by the classic local operations (Botsch et al.,
      *Polygon Mesh Processing*, 2010, ch. 6): a *needle* (one edge much shorter than the longest) has
      that short edge collapsed when the link condition holds; a *cap* (a vertex close to the opposite
      edge) has its longest edge flipped. An operation is applied only if no face normal around it turns
      by more than 90° and, for flips, the worst aspect ratio of the pair improves.

    Unreferenced vertices are dropped and faces re-oriented outward.
    """
    v = mesh.vertices
    f = mesh.faces.astype(np.int64)
    nv = len(v)
    min_area = DEGENERATE_AREA * float(np.sum((v.max(0) - v.min(0)).astype(np.float64) ** 2)) if nv else 0.0
    for _ in range(max_passes):
        f = _drop_duplicate_faces(f)
        f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
        aspect, length, area = _aspect(v, f)
        bad = np.flatnonzero((aspect > max_aspect) | (area < min_area))
        if bad.size == 0:
            break
        bad = bad[np.argsort(-aspect[bad])]
        flat = f.ravel()
        order = np.argsort(flat, kind="stable")
        starts = np.searchsorted(flat[order], np.arange(nv + 1))

        def faces_of(x: int, order: np.ndarray = order, starts: np.ndarray = starts) -> np.ndarray:
            return order[starts[x] : starts[x + 1]] // 3

        touched = np.zeros(len(f), dtype=bool)
        changed = False
        for fi in bad.tolist():
            if touched[fi]:
                continue
            k_long = int(np.argmax(length[fi]))
            k_short = int(np.argmin(length[fi]))
            if length[fi, k_short] < 0.3 * length[fi, k_long]:
                changed |= _collapse(v, f, fi, k_short, faces_of, touched)
            else:
                changed |= _flip(v, f, fi, k_long, faces_of, touched, aspect[fi])
        if not changed:
            break
    out = remove_degenerate_faces(Mesh(vertices=v, faces=f.astype(np.int32)), area_eps=0.0)
    out, _ = orient_faces(out)
    return out


def _collapse(v: np.ndarray, f: np.ndarray, fi: int, k: int, faces_of: Any, touched: np.ndarray) -> bool:
    """Collapse edge k of face fi (q merges into p) if the link condition holds and nothing folds over."""
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
    if (face_normals(v, new)[1] * face_normals(v, f[moved])[1]).sum(1).min() < 0.0:
        return False
    f[moved] = new
    f[list(shared)] = p  # both faces of the collapsed edge become degenerate and are dropped
    touched[ring] = True
    return True


def _flip(v: np.ndarray, f: np.ndarray, fi: int, k: int, faces_of: Any, touched: np.ndarray, worst: float) -> bool:
    """Flip edge k of face fi with the neighbouring face if that improves both faces."""
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
    old_n = face_normals(v, f[[fi, g]])[1].sum(0)
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
        result has 168 faces (42 separate closed parts need at least 4 faces each)"``.
    """
    if mesh.n_faces <= budget:
        return None
    topo = topology(mesh.vertices, mesh.faces)
    if topo.watertight and 4 * topo.components > budget:
        why = f"{topo.components} separate closed parts need at least 4 faces each"
    else:
        why = "no further edge collapse keeps the surface intact"
    closest = "closest closed result" if topo.watertight else "closest result"
    return f"face budget {budget} not reachable: the {closest} has {mesh.n_faces} faces ({why})"
