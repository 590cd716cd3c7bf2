"""Exact closest points on triangles (Ericson, *Real-Time Collision Detection*, 2005, §5.1.5), vectorised;
shared by the dense-surface baker and the evaluation metrics."""

from __future__ import annotations

import numpy as np


def closest_point_on_triangles(
    p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Closest points on triangles ``(a, b, c)`` to points ``p`` (Ericson 2005, §5.1.5), vectorised.

    Args:
        p, a, b, c: ``[N, 3]`` float arrays (one query point per triangle).

    Returns:
        ``(closest [N, 3], bary [N, 3])`` float64; ``closest = bary[:, 0]·a + bary[:, 1]·b + bary[:, 2]·c``.
        Degenerate triangles give their closest vertex or edge point.
    """
    p, a, b, c = (np.asarray(x, dtype=np.float64) for x in (p, a, b, c))
    ab, ac, ap = b - a, c - a, p - a
    bp, cp = p - b, p - c

    def dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", x, y)

    d1, d2 = dot(ab, ap), dot(ac, ap)
    d3, d4 = dot(ab, bp), dot(ac, bp)
    d5, d6 = dot(ab, cp), dot(ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    n = len(p)
    bary = np.empty((n, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        # Interior (face region), then the regions in reverse order of Ericson's early returns, so that
        # the first matching test wins where conditions overlap (degenerate triangles).
        denom = va + vb + vc
        v = vb / denom
        w = vc / denom
        bary[:] = np.stack([1.0 - v - w, v, w], axis=1)
        m = (va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0)  # edge BC
        t = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        bary[m] = np.stack([np.zeros(n), 1.0 - t, t], axis=1)[m]
        m = (vb <= 0) & (d2 >= 0) & (d6 <= 0)  # edge AC
        t = d2 / (d2 - d6)
        bary[m] = np.stack([1.0 - t, np.zeros(n), t], axis=1)[m]
        m = (d6 >= 0) & (d5 <= d6)  # vertex C
        bary[m] = (0.0, 0.0, 1.0)
        m = (vc <= 0) & (d1 >= 0) & (d3 <= 0)  # edge AB
        t = d1 / (d1 - d3)
        bary[m] = np.stack([1.0 - t, t, np.zeros(n)], axis=1)[m]
        m = (d3 >= 0) & (d4 <= d3)  # vertex B
        bary[m] = (0.0, 1.0, 0.0)
        m = (d1 <= 0) & (d2 <= 0)  # vertex A
        bary[m] = (1.0, 0.0, 0.0)
    bad = ~np.all(np.isfinite(bary), axis=1)
    if np.any(bad):  # fully degenerate leftovers: the nearest vertex
        dist = np.stack([np.linalg.norm(x[bad] - p[bad], axis=1) for x in (a, b, c)], axis=1)
        bary[bad] = np.eye(3)[np.argmin(dist, axis=1)]
    bary = np.clip(bary, 0.0, 1.0)
    closest = bary[:, 0:1] * a + bary[:, 1:2] * b + bary[:, 2:3] * c
    return closest, bary
