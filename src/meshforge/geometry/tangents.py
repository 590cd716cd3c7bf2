"""Per-vertex tangent frames for tangent-space normal maps (shared by the baker and the GLB writer,
so a baked normal map and the ``TANGENT`` attribute written beside it always agree)."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from .normals import unit_normals


def compute_tangents(vertices: np.ndarray, normals: np.ndarray, uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per-vertex tangents for normal mapping (glTF 2.0 §3.7.2.1 ``TANGENT``).

    Accumulates per-face UV-space tangents/bitangents (Lengyel's method), Gram-Schmidt orthogonalises
    them against the vertex normal, and stores the handedness in ``w`` (±1), following the glTF
    convention bitangent = cross(normal, tangent.xyz) * w. UVs are glTF's (v down); the derivative is
    taken with respect to ``u`` and ``-v`` so ``+Y`` of the normal map points up the texture, as glTF's
    normal-texture convention requires (§3.9.3). Vertices with degenerate UV mapping get an arbitrary
    unit tangent perpendicular to their normal.

    Args:
        vertices: ``[V, 3]`` float positions; normals: ``[V, 3]`` unit float normals;
        uv: ``[V, 2]`` float glTF UVs; faces: ``[F, 3]`` int indices.

    Returns:
        ``[V, 4]`` float32: unit xyz tangent perpendicular to the normal, ``w`` in {-1, +1}.
    """
    v = np.asarray(vertices, dtype=np.float64)
    n = np.asarray(normals, dtype=np.float64)
    t = np.asarray(uv, dtype=np.float64) * np.array([1.0, -1.0])
    f = np.asarray(faces)
    p0, p1, p2 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    t0, t1, t2 = t[f[:, 0]], t[f[:, 1]], t[f[:, 2]]
    e1, e2 = p1 - p0, p2 - p0
    d1, d2 = t1 - t0, t2 - t0
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    r = np.divide(1.0, det, out=np.zeros_like(det), where=np.abs(det) > 1e-20)[:, None]
    sdir = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) * r
    tdir = (e2 * d1[:, 0:1] - e1 * d2[:, 0:1]) * r
    # per-vertex sums of the faces' directions: bincount adds in input order, as ``np.add.at`` over corners 0, 1, 2
    # would (the same float64 sums), and is several times faster
    idx = np.asarray(f, dtype=np.int64).T.reshape(-1)
    tan = np.stack([np.bincount(idx, weights=np.tile(sdir[:, c], 3), minlength=len(v)) for c in range(3)], 1)
    bit = np.stack([np.bincount(idx, weights=np.tile(tdir[:, c], 3), minlength=len(v)) for c in range(3)], 1)
    # Gram-Schmidt against the normal.
    tan = tan - n * np.sum(n * tan, axis=1, keepdims=True)
    length = np.linalg.norm(tan, axis=1)
    bad = ~np.isfinite(length) | (length < 1e-12)
    if np.any(bad):
        # Any vector perpendicular to the normal: cross with the axis least aligned with it.
        nb = n[bad]
        axis = np.zeros_like(nb)
        axis[np.arange(len(nb)), np.argmin(np.abs(nb), axis=1)] = 1.0
        tan[bad] = np.cross(nb, axis)
        length = np.linalg.norm(tan, axis=1)
    tan = tan / length[:, None]
    w = np.where(np.sum(np.cross(n, tan) * bit, axis=1) < 0.0, -1.0, 1.0)
    out = np.concatenate([tan, w[:, None]], axis=1).astype(np.float32)
    out[:, :3] /= np.linalg.norm(out[:, :3], axis=1, keepdims=True)
    return out


#: tangent frames kept by :func:`asset_tangents`, by their inputs' fingerprint (the last few meshes)
_FRAMES: OrderedDict[bytes, np.ndarray] = OrderedDict()
_FRAMES_LOCK = threading.Lock()
_FRAMES_KEPT = 4


def asset_tangents(vertices: np.ndarray, normals: np.ndarray, uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """The tangent frames an asset's GLB stores: :func:`compute_tangents` of the unit normals the writer stores
    (:func:`~meshforge.geometry.normals.unit_normals`), computed once per mesh.

    The bake encodes its tangent-space normal map in these frames and the GLB writer writes them as ``TANGENT``:
    both call this function, and the second call for the same mesh returns a copy of the first's result (the
    inputs' bytes are fingerprinted, BLAKE2b; the last few meshes are kept), so map and attribute agree to the bit
    and the frames are computed once (20 ms at 20k faces on one core).

    Args:
        vertices: ``[V, 3]`` float positions; normals: ``[V, 3]`` float normals (any length: normalised as the
            writer does); uv: ``[V, 2]`` float glTF UVs; faces: ``[F, 3]`` int indices.

    Returns:
        ``[V, 4]`` float32, as :func:`compute_tangents`.
    """
    unit = unit_normals(normals, vertices, faces)
    arrays = [np.ascontiguousarray(a) for a in (vertices, unit, uv, faces)]
    digest = hashlib.blake2b(digest_size=16)
    for a in arrays:
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    key = digest.digest()
    with _FRAMES_LOCK:
        kept = _FRAMES.get(key)
        if kept is not None:
            _FRAMES.move_to_end(key)
            return kept.copy()
    frames = compute_tangents(*arrays)
    with _FRAMES_LOCK:
        _FRAMES[key] = frames.copy()
        while len(_FRAMES) > _FRAMES_KEPT:
            _FRAMES.popitem(last=False)
    return frames
