"""Face and vertex normals, shared by every stage, exporter and loader."""

from __future__ import annotations

import numpy as np


def cross3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.cross`` of ``[..., 3]`` arrays (broadcast), bit for bit: the same products and differences in the
    same order, without ``np.cross``'s axis handling, which costs more than the arithmetic on the small arrays
    of decimation's repair passes (hundreds of calls on a few faces each).

    Args:
        a, b: ``[..., 3]`` float arrays.

    Returns:
        ``[..., 3]`` array of their result dtype.
    """
    a, b = np.asarray(a), np.asarray(b)
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype=np.result_type(a, b))
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    np.subtract(a1 * b2, a2 * b1, out=out[..., 0])
    np.subtract(a2 * b0, a0 * b2, out=out[..., 1])
    np.subtract(a0 * b1, a1 * b0, out=out[..., 2])
    return out


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unnormalised face normals (cross products, length = 2 × area) and their unit versions.

    Args:
        vertices: ``[V, 3]`` float positions.
        faces: ``[F, 3]`` int indices, counter-clockwise seen from outside.

    Returns:
        ``(cross, unit)``: ``[F, 3]`` float64 each; ``unit`` rows are zero for degenerate faces.
    """
    v = np.asarray(vertices, dtype=np.float64)
    tri = v[np.asarray(faces)]
    cross = cross3(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(cross, axis=1, keepdims=True)
    unit = np.divide(cross, length, out=np.zeros_like(cross), where=length > 0)
    return cross, unit


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals.

    Args:
        vertices: ``[V, 3]`` float positions.
        faces: ``[F, 3]`` int indices, counter-clockwise seen from outside.

    Returns:
        ``[V, 3]`` float64 unit normals; ``+Z`` for vertices on no face (or only on degenerate faces).
    """
    cross, _ = face_normals(vertices, faces)  # length = 2·area: area weighting
    n = np.zeros((len(vertices), 3), dtype=np.float64)
    idx = np.asarray(faces).reshape(-1)
    for c in range(3):  # bincount scatter-adds far faster than np.add.at
        n[:, c] = np.bincount(idx, weights=np.repeat(cross[:, c], 3), minlength=len(vertices))
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(length > 0, n / np.maximum(length, 1e-300), np.array([0.0, 0.0, 1.0]))


def unit_normals(normals: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Normalise vertex normals defensively (glTF 2.0 §3.7.2.1 requires unit NORMAL vectors).

    Zero-length or non-finite rows are replaced by the area-weighted normal from the faces, and, where
    that is zero too (isolated or degenerate vertices), by ``+Z``.

    Returns:
        ``[V, 3]`` float32 unit vectors.
    """
    n = np.asarray(normals, dtype=np.float64)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    good = np.isfinite(length[:, 0]) & (length[:, 0] > 1e-12)
    out = np.zeros_like(n)
    out[good] = n[good] / length[good]
    if not np.all(good):
        fallback = vertex_normals(vertices, faces)
        out[~good] = fallback[~good]
        still = np.linalg.norm(out, axis=1) < 0.5
        out[still] = (0.0, 0.0, 1.0)
    # Re-normalise in float32 so the stored values are unit to float32 precision.
    out32 = out.astype(np.float32)
    out32 /= np.linalg.norm(out32, axis=1, keepdims=True)
    return out32
