"""Edge topology checks shared by cleanup, decimation, reports and tests (vectorised numpy)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components


def directed_edges(faces: np.ndarray) -> np.ndarray:
    """``[F, 3]`` faces → ``[3F, 2]`` int64 directed edges (v0→v1, v1→v2, v2→v0 per face, face-major)."""
    f = np.asarray(faces, dtype=np.int64)
    return np.stack([f, np.roll(f, -1, axis=1)], axis=2).reshape(-1, 2)


def face_sets(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group faces that use the same three vertices (in any order or winding).

    What ``np.unique(np.sort(faces, axis=1), axis=0, return_index=True, return_inverse=True,
    return_counts=True)`` gives, without its row-wise (structured) sort: each sorted triple is packed into
    one int64 key ``(a·V + b)·V + c`` (``V`` = largest index + 1) when that fits, so one scalar sort does it;
    larger index ranges fall back to the row-wise unique.

    Args:
        faces: ``[F, 3]`` int vertex indices.

    Returns:
        ``(first [S] int64, inverse [F] int64, counts [S] int64)``: the first face of each vertex set, each
        face's set, and the faces per set (sets in an unspecified order).
    """
    f = np.sort(np.asarray(faces, dtype=np.int64), axis=1)
    if f.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    nv = int(f.max()) + 1
    if nv <= 2_000_000:  # nv³ < 2⁶³
        key = (f[:, 0] * nv + f[:, 1]) * nv + f[:, 2]
        _, first, inverse, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
    else:
        _, first, inverse, counts = np.unique(f, axis=0, return_index=True, return_inverse=True, return_counts=True)
    return first.astype(np.int64), inverse.reshape(-1).astype(np.int64), counts.astype(np.int64)


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``[F]`` float64 triangle areas (units², same units as the vertices)."""
    t = np.asarray(vertices, dtype=np.float64)[faces]
    return 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)


def weld(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices with identical float32 positions (e.g. split at UV seams; -0.0 equals 0.0) for topology
    checks.

    Returns:
        ``([V', 3] vertices, [F, 3] faces)`` re-indexed onto the unique positions.
    """
    v = np.ascontiguousarray(np.asarray(vertices, dtype=np.float32) + np.float32(0.0))  # -0.0 → 0.0
    _, first, inverse = np.unique(v.view(np.dtype((np.void, 12))).ravel(), return_index=True, return_inverse=True)
    return v[first], inverse.reshape(-1)[faces].astype(np.int32)


@dataclass
class TopologyReport:
    """Edge-based facts about a triangle mesh."""

    faces: int
    vertices: int
    boundary_edges: int
    nonmanifold_edges: int
    inconsistent_edges: int
    degenerate_faces: int
    components: int

    @property
    def watertight(self) -> bool:
        """Closed two-manifold: every edge shared by exactly two faces."""
        return self.boundary_edges == 0 and self.nonmanifold_edges == 0 and self.faces > 0

    def to_dict(self) -> dict[str, int | bool]:
        d: dict[str, int | bool] = dict(asdict(self))
        d["watertight"] = self.watertight
        return d


def topology(
    vertices: np.ndarray, faces: np.ndarray, *, weld_positions: bool = False, area_eps: float = 0.0
) -> TopologyReport:
    """Count boundary, non-manifold and inconsistently wound edges, degenerate faces and components.

    Args:
        vertices: ``[V, 3]`` positions.
        faces: ``[F, 3]`` indices.
        weld_positions: merge identical positions first (for meshes split at UV seams).
        area_eps: faces with area ≤ this (or with a repeated index) count as degenerate.
    """
    if weld_positions:
        vertices, faces = weld(vertices, faces)
    f = np.asarray(faces, dtype=np.int64)
    nv = int(len(vertices))
    if f.size == 0:
        return TopologyReport(0, nv, 0, 0, 0, 0, 0)
    boundary, nonmanifold, inconsistent = edge_counts(f, nv)
    repeated = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 2] == f[:, 0])
    degenerate = repeated | (face_areas(vertices, f) <= area_eps)
    return TopologyReport(
        faces=int(len(f)),
        vertices=nv,
        boundary_edges=boundary,
        nonmanifold_edges=nonmanifold,
        inconsistent_edges=inconsistent,
        degenerate_faces=int(degenerate.sum()),
        components=vertex_components(nv, f)[0],
    )


def edge_counts(faces: np.ndarray, n_vertices: int) -> tuple[int, int, int]:
    """Boundary edges (used by one face), non-manifold edges (more than two) and inconsistently wound edges
    (a directed edge used more than once), from one sort: each directed edge's key is its undirected key
    ``min·V + max`` times two, plus one when it runs from the larger index to the smaller.

    Args:
        faces: ``[F, 3]`` int vertex indices. n_vertices: ``V``, above every index.

    Returns:
        ``(boundary, nonmanifold, inconsistent)`` edge counts.
    """
    e = directed_edges(faces)
    if e.size == 0:
        return 0, 0, 0
    lo, hi = np.minimum(e[:, 0], e[:, 1]), np.maximum(e[:, 0], e[:, 1])
    key = np.sort((lo * n_vertices + hi) * 2 + (e[:, 0] > e[:, 1]))
    n = key.size

    def group_sizes(k: np.ndarray) -> np.ndarray:
        starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
        return np.diff(np.append(starts, n))

    counts = group_sizes(key >> 1)
    dcounts = group_sizes(key)
    return int((counts == 1).sum()), int((counts > 2).sum()), int((dcounts > 1).sum())


def vertex_components(n_vertices: int, faces: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of the vertex graph.

    Returns:
        ``(count, labels)`` with ``labels`` ``[V]`` int32; unreferenced vertices get their own labels.
    """
    e = directed_edges(faces)
    adj = sp.coo_matrix((np.ones(len(e), dtype=np.int8), (e[:, 0], e[:, 1])), shape=(n_vertices, n_vertices))
    count, labels = connected_components(adj, directed=False)
    return int(count), labels.astype(np.int32)
