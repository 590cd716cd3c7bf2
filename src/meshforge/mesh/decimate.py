"""QEM decimation to a face budget.

Quadric error metric edge collapse (Garland & Heckbert, SIGGRAPH 1997) in Sven Forstmann's "Fast
Quadric Mesh Simplification" variant, as packaged by ``fast-simplification`` (MIT, pyvista).
"""

from __future__ import annotations

import numpy as np

from ..config import DecimateConfig
from ..errors import InputError, MissingDependency
from ..types import Mesh
from .clean import orient_faces, remove_degenerate_faces
from .topology import topology


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
    schedule = [(cfg.aggressiveness, 1.0), (max(2.0, cfg.aggressiveness - 3.0), 1.0), (2.0, 0.995), (2.0, 0.98)]
    for aggressiveness, shrink in schedule:
        target = max(4, int(cfg.faces * shrink))
        for _ in range(4):
            v, f = fast_simplification.simplify(
                base.vertices, base.faces, target_count=int(target), agg=float(aggressiveness)
            )
            if len(f) <= cfg.faces:
                break
            target = max(4, int(target - (len(f) - cfg.faces) - 2))
        candidate = repair(Mesh(vertices=np.asarray(v, dtype=np.float32), faces=np.asarray(f, dtype=np.int32)))
        topo = topology(candidate.vertices, candidate.faces, area_eps=DEGENERATE_AREA)
        defects = topo.boundary_edges + topo.nonmanifold_edges + topo.degenerate_faces
        defects += max(0, topo.components - before.components)
        if not before.watertight:  # an open input cannot come out closed; judge the rest only
            defects -= topo.boundary_edges
        attempts.append({"aggressiveness": aggressiveness, "faces": candidate.n_faces, "defects": defects})
        if best is None or defects < best[0]:
            best = (defects, candidate)
        if defects == 0:
            break
    assert best is not None
    result = best[1]
    topo = topology(result.vertices, result.faces, area_eps=DEGENERATE_AREA)
    return result, {"attempts": len(attempts), **topo.to_dict()}


#: faces with less area than this (m²) count as degenerate after decimation
DEGENERATE_AREA = 1e-12


def _drop_duplicate_faces(faces: np.ndarray) -> np.ndarray:
    """Remove every copy of faces that share their vertex set (folded "sandwich" pairs left by collapses)."""
    key = np.sort(faces, axis=1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    return faces[counts[inverse.reshape(-1)] == 1]


def repair(mesh: Mesh, max_passes: int = 4) -> Mesh:
    """Fix the local defects fast QEM collapses leave behind, keeping the surface closed.

    * duplicate faces (a collapsed thin part folded onto itself) are removed together;
    * caps (a vertex lying on the opposite edge) get that longest edge flipped with its neighbour;
    * needles (one edge much shorter than the others) get the short edge collapsed.

    Faces count as degenerate when their area is below :data:`DEGENERATE_AREA` or their height is below
    1e-6 of their longest edge. Unreferenced vertices are dropped and faces re-oriented outward.
    """
    v = mesh.vertices
    f = mesh.faces.astype(np.int64)
    for _ in range(max_passes):
        f = _drop_duplicate_faces(f)
        f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
        t = v[f].astype(np.float64)
        edges = np.stack([t[:, 1] - t[:, 0], t[:, 2] - t[:, 1], t[:, 0] - t[:, 2]], axis=1)
        length = np.linalg.norm(edges, axis=2)
        area = 0.5 * np.linalg.norm(np.cross(edges[:, 0], -edges[:, 2]), axis=1)
        longest = length.max(axis=1)
        bad = np.flatnonzero((area < DEGENERATE_AREA) | (2.0 * area < 1e-6 * longest**2))
        if bad.size == 0:
            break
        edge_faces = _edge_map(f)
        touched: set[int] = set()
        for fi in bad.tolist():
            if fi in touched:
                continue
            k_long = int(np.argmax(length[fi]))
            k_short = int(np.argmin(length[fi]))
            a, b = int(f[fi, k_long]), int(f[fi, (k_long + 1) % 3])
            if length[fi, k_short] < 0.05 * length[fi, k_long]:
                # needle: collapse the short edge onto its first vertex
                p, q = int(f[fi, k_short]), int(f[fi, (k_short + 1) % 3])
                around = np.flatnonzero((f == q).any(axis=1) | (f == p).any(axis=1))
                if touched.intersection(around.tolist()):
                    continue
                f[f == q] = p
                touched.update(around.tolist())
                continue
            nb = [g for g in edge_faces.get((min(a, b), max(a, b)), []) if g != fi]
            if len(nb) != 1 or nb[0] in touched:
                continue
            g = nb[0]
            c = int(f[fi, (k_long + 2) % 3])
            d = int(next(x for x in f[g].tolist() if x not in (a, b)))
            if (min(c, d), max(c, d)) in edge_faces or c == d:
                continue
            # faces (a, b, c) and (b, a, d) → (a, d, c) and (d, b, c)
            f[fi] = (a, d, c)
            f[g] = (d, b, c)
            touched.update((fi, g))
    out = remove_degenerate_faces(Mesh(vertices=v, faces=f.astype(np.int32)), area_eps=0.0)
    out, _ = orient_faces(out)
    return out


def _edge_map(faces: np.ndarray) -> dict[tuple[int, int], list[int]]:
    out: dict[tuple[int, int], list[int]] = {}
    for fi, (x, y, z) in enumerate(faces.tolist()):
        for p, q in ((x, y), (y, z), (z, x)):
            out.setdefault((min(p, q), max(p, q)), []).append(fi)
    return out
