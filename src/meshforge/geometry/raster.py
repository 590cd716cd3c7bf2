"""Vectorised triangle rasterisation in numpy (used for UV-space baking and for preview renders).

Pixel (row r, column c) has its centre at (c + 0.5, r + 0.5) in pixel coordinates; a pixel belongs to a
triangle when its centre lies inside it (edge functions, Pineda 1988), with a small tolerance so pixels on
shared edges are never missed. Candidate pixels are generated per (triangle, row) span — along a row each
edge function is linear, so the inside pixels form one interval — at once for a batch of triangles with
``np.repeat``, then tested exactly; batches are sized to bound memory.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Raster:
    """Result of :func:`rasterize`.

    Attributes:
        face: ``[H, W]`` int32, index of the triangle covering each pixel, −1 where none.
        bary: ``[H, W, 3]`` float32 barycentric weights of the pixel centre in that triangle (0 where none).
    """

    face: np.ndarray
    bary: np.ndarray

    @property
    def covered(self) -> np.ndarray:
        """``[H, W]`` bool, pixels covered by some triangle."""
        return self.face >= 0


#: results :func:`_memo` keeps for their next use at most (an atlas raster and its gutter transform, for two
#: jobs at once)
_MEMO_SIZE = 4
_memo_lock = threading.Lock()
_memo_store: OrderedDict[tuple[Any, ...], Any] = OrderedDict()


def _digest(a: np.ndarray) -> str:
    """A content key for an array (BLAKE2b of its bytes, dtype and shape)."""
    h = hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    return h.hexdigest()


def _memo(key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
    """The value for ``key``: computed, or the one computed last time, which is handed on once and forgotten
    (the unwrap's atlas check computes, the bake reuses; nothing stays alive after the job). At most
    :data:`_MEMO_SIZE` values wait for their reuse, the oldest dropped first (thread-safe)."""
    with _memo_lock:
        if key in _memo_store:
            return _memo_store.pop(key)
    value = compute()
    with _memo_lock:
        _memo_store[key] = value
        while len(_memo_store) > _MEMO_SIZE:
            _memo_store.popitem(last=False)
    return value


def _read_only(r: Raster) -> Raster:
    r.face.setflags(write=False)
    r.bary.setflags(write=False)
    return r


def rasterize(
    tri: np.ndarray,
    width: int,
    height: int,
    depth: np.ndarray | None = None,
    *,
    max_candidates: int = 1 << 22,
    eps: float = 1e-7,
) -> Raster:
    """Rasterise triangles given in pixel coordinates.

    Args:
        tri: ``[F, 3, 2]`` float vertex positions in pixels (x to the right, y down).
        width, height: raster size in pixels.
        depth: optional ``[F, 3]`` per-vertex depth; where triangles overlap the smallest interpolated depth
            wins (a z-buffer). Without depth, overlapping triangles resolve in an unspecified order.
        max_candidates: pixels tested per batch (bounds memory: ~40 bytes each).
        eps: inside tolerance on normalised barycentrics.

    Returns:
        A :class:`Raster`. Degenerate (zero-area) triangles cover nothing. Without ``depth`` the result is
        kept for one reuse (:func:`_memo`, keyed by the triangles' bytes and the size) and its arrays are
        read-only: the unwrap's atlas check and the bake rasterise the same atlas.
    """
    tri = np.ascontiguousarray(tri, dtype=np.float64)
    if depth is not None:
        return _rasterize(tri, width, height, depth, max_candidates, eps)
    key = ("raster", _digest(tri), tri.shape, width, height, eps)
    return _memo(key, lambda: _read_only(_rasterize(tri, width, height, None, max_candidates, eps)))


def _rasterize(
    tri: np.ndarray, width: int, height: int, depth: np.ndarray | None, max_candidates: int, eps: float
) -> Raster:
    """:func:`rasterize` without the memo."""
    n = tri.shape[0]
    face_img = np.full(height * width, -1, dtype=np.int32)
    bary_img = np.zeros((height * width, 3), dtype=np.float32)
    zbuf = np.full(height * width, np.inf) if depth is not None else None
    if n == 0:
        return Raster(face_img.reshape(height, width), bary_img.reshape(height, width, 3))
    x0 = np.clip(np.ceil(tri[:, :, 0].min(1) - 0.5), 0, width).astype(np.int64)
    x1 = np.clip(np.floor(tri[:, :, 0].max(1) - 0.5), -1, width - 1).astype(np.int64)
    y0 = np.clip(np.ceil(tri[:, :, 1].min(1) - 0.5), 0, height).astype(np.int64)
    y1 = np.clip(np.floor(tri[:, :, 1].max(1) - 0.5), -1, height - 1).astype(np.int64)
    bw = np.maximum(x1 - x0 + 1, 0)
    bh = np.maximum(y1 - y0 + 1, 0)
    counts = bw * bh
    area2 = (tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1]) - (tri[:, 2, 0] - tri[:, 0, 0]) * (
        tri[:, 1, 1] - tri[:, 0, 1]
    )
    counts[np.abs(area2) < 1e-12] = 0
    faces_all = np.flatnonzero(counts > 0)
    if faces_all.size == 0:
        return Raster(face_img.reshape(height, width), bary_img.reshape(height, width, 3))
    # candidates are generated per (triangle, row) span, not per bounding-box pixel: along a row each edge
    # function is linear in x, so the pixels inside form one interval (widened by _SPAN_SLACK pixels and
    # then tested exactly, so the set is that of the per-pixel test; a thin triangle's box is mostly empty)
    rows = bh[faces_all]
    xs = [np.ascontiguousarray(tri[:, k, 0]) for k in range(3)]
    cum = np.cumsum(counts[faces_all])
    start = 0
    while start < faces_all.size:
        base = cum[start - 1] if start > 0 else 0
        stop = int(np.searchsorted(cum, base + max_candidates, side="right"))
        stop = max(stop, start + 1)
        fids = faces_all[start:stop]
        h = rows[start:stop]
        start = stop
        fr = np.repeat(fids, h)  # one entry per (triangle, row), triangle-major as the writes must be
        py_row = y0[fr] + np.arange(fr.size) - np.repeat(np.cumsum(h) - h, h)
        lo, hi = _row_spans(tri[fr], area2[fr], py_row + 0.5, x0[fr] + 0.5, x1[fr] + 0.5, eps)
        c = np.maximum(hi - lo + 1, 0)
        fi = np.repeat(fr, c)
        px = np.repeat(lo, c) + np.arange(fi.size) - np.repeat(np.cumsum(c) - c, c)
        py = np.repeat(py_row, c)
        cx = px + 0.5
        # the row's terms once per (triangle, row), then the same expressions per pixel
        cy = py_row + 0.5
        dy0, dy1, dy2 = (np.repeat(tri[fr, k, 1] - cy, c) for k in range(3))
        a2 = area2[fi]
        # barycentric of vertex 0, 1, 2 via edge functions, normalised by the signed area
        l0 = ((xs[1][fi] - cx) * dy2 - (xs[2][fi] - cx) * dy1) / a2
        l1 = ((xs[2][fi] - cx) * dy0 - (xs[0][fi] - cx) * dy2) / a2
        l2 = 1.0 - l0 - l1
        inside = (l0 >= -eps) & (l1 >= -eps) & (l2 >= -eps)
        if not inside.any():
            continue
        fi, px, py = fi[inside], px[inside], py[inside]
        lam = np.stack([l0[inside], l1[inside], l2[inside]], axis=1)
        pix = py * width + px
        if depth is not None and zbuf is not None:
            z = (lam * depth[fi]).sum(1)
            order = np.lexsort((z, pix))
            pix, fi, lam, z = pix[order], fi[order], lam[order], z[order]
            first = np.ones(pix.size, dtype=bool)
            first[1:] = pix[1:] != pix[:-1]
            pix, fi, lam, z = pix[first], fi[first], lam[first], z[first]
            closer = z < zbuf[pix]
            pix, fi, lam, z = pix[closer], fi[closer], lam[closer], z[closer]
            zbuf[pix] = z
        face_img[pix] = fi
        bary_img[pix] = np.clip(lam, 0.0, 1.0)
    return Raster(face_img.reshape(height, width), bary_img.reshape(height, width, 3))


#: pixels added on each side of a row's computed span before the exact per-pixel test, beyond the bound's
#: own rounding error (see :func:`_row_spans`)
_SPAN_SLACK = 1e-3


def _row_spans(
    t: np.ndarray, area2: np.ndarray, cy: np.ndarray, left: np.ndarray, right: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """The columns of a row whose pixel centres may lie inside a triangle: ``[first, last]`` per row.

    Edge ``(a, b)``'s function ``E(x) = (a_x − x)(b_y − cy) − (b_x − x)(a_y − cy)`` is linear in ``x`` on the
    row at height ``cy``; ``E / area2 ≥ −eps`` bounds ``x`` from one side (or holds along the whole row for a
    horizontal edge). ``left``/``right`` are the bounding box's first/last pixel centres. Each bound is widened
    by its rounding error (a few ulps of the products, over the slope: large for a nearly horizontal edge)
    and :data:`_SPAN_SLACK`, so the span holds every pixel the exact per-pixel test accepts.

    Args:
        t: ``[R, 3, 2]`` triangles (pixels). area2: ``[R]`` twice their signed areas (non-zero).
        cy: ``[R]`` the rows' pixel-centre heights. left, right: ``[R]`` bounding-box pixel centres.
        eps: inside tolerance on normalised barycentrics.

    Returns:
        ``(first, last)`` ``[R]`` int64 pixel columns (``last < first`` for an empty span).
    """
    s = np.sign(area2)
    tol = eps * np.abs(area2)
    lo, hi = left.astype(np.float64), right.astype(np.float64)
    for a, b in ((1, 2), (2, 0), (0, 1)):
        slope = s * (t[:, a, 1] - t[:, b, 1])
        p, q = t[:, a, 0] * (t[:, b, 1] - cy), t[:, b, 0] * (t[:, a, 1] - cy)
        offset = s * (p - q)
        err = 8.0 * np.finfo(np.float64).eps * (np.abs(p) + np.abs(q) + tol + np.abs(slope) * np.abs(left))
        with np.errstate(divide="ignore", invalid="ignore"):  # slope 0: a horizontal edge bounds nothing
            bound = (-tol - offset) / slope
            widen = err / np.abs(slope) + _SPAN_SLACK
            lo = np.where(slope > 0, np.maximum(lo, bound - widen), lo)
            hi = np.where(slope < 0, np.minimum(hi, bound + widen), hi)
    first = np.ceil(lo - 0.5)
    last = np.floor(hi - 0.5)
    first = np.maximum(first, left - 0.5).astype(np.int64)
    last = np.minimum(last, right - 0.5).astype(np.int64)
    return first, last


def coverage(tri: np.ndarray, width: int, height: int) -> np.ndarray:
    """The pixels :func:`rasterize` covers (centre inside a triangle), without its face index and barycentrics.

    Each triangle is scanned row by row (a scanline fill): the row's centre line ``y = r + 0.5`` crosses the
    triangle's edges at ``x_left ≤ x_right``, and the pixels whose centres lie in between, with the same
    ~10⁻⁷ tolerance, are covered; runs are summed into a difference array, so the cost grows with the rows
    the triangles span, not with their area. A centre exactly on an edge may differ from :func:`rasterize`
    (its tolerance is on barycentrics).

    Args:
        tri: ``[F, 3, 2]`` float vertex positions in pixels (x to the right, y down).
        width, height: raster size in pixels.

    Returns:
        ``[H, W]`` bool. Degenerate (zero-area) triangles cover nothing.
    """
    t = np.asarray(tri, dtype=np.float64)
    area2 = (t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 2, 0] - t[:, 0, 0]) * (
        t[:, 1, 1] - t[:, 0, 1]
    )
    t = t[np.abs(area2) >= 1e-12]
    tol = 1e-7
    r0 = np.clip(np.ceil(t[:, :, 1].min(1) - 0.5 - tol), 0, height).astype(np.int64)
    r1 = np.clip(np.floor(t[:, :, 1].max(1) - 0.5 + tol), -1, height - 1).astype(np.int64)
    n = np.maximum(r1 - r0 + 1, 0)
    f = np.repeat(np.arange(len(t)), n)
    row = r0[f] + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    cy = row + 0.5
    left = np.full(len(f), np.inf)
    right = np.full(len(f), -np.inf)
    for i in range(3):
        a, b = t[f, i], t[f, (i + 1) % 3]
        lo, hi = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
        ok = (cy >= lo - tol) & (cy <= hi + tol) & (hi > lo)
        s = np.clip((cy - a[:, 1]) / np.where(ok, b[:, 1] - a[:, 1], 1.0), 0.0, 1.0)
        x = a[:, 0] + s * (b[:, 0] - a[:, 0])
        left = np.where(ok, np.minimum(left, x), left)
        right = np.where(ok, np.maximum(right, x), right)
    c0 = np.clip(np.ceil(left - 0.5 - tol), 0, width).astype(np.int64)
    c1 = np.clip(np.floor(right - 0.5 + tol), -1, width - 1).astype(np.int64)
    keep = c1 >= c0
    start = row[keep] * width + c0[keep]
    stop = row[keep] * width + c1[keep] + 1
    size = width * height
    delta = np.bincount(start, minlength=size + 1) - np.bincount(stop, minlength=size + 1)
    return np.asarray(np.cumsum(delta[:size]) > 0).reshape(height, width)


#: UV rasterisation is done at the texture's resolution, at most this many texels per side
MAX_UV_RASTER = 1024
#: a texel farther than this (Euclidean, in texels) from every texel covered by a UV triangle is "never
#: written": no bake with the usual gutter padding reaches it, and bilinear/mip filtering never reads it
DILATION_TEXELS = 2.0
# Sub-texel offset of the UV raster: keeps texel centres off UV edges that lie on exact texel-centre lines
# (e.g. grid-aligned atlases), where both neighbouring triangles would claim the texel (a false overlap).
_UV_JITTER = (0.00127, 0.00071)


def uv_coverage(uv: np.ndarray, faces: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise UV triangles into a ``width × height`` grid and find texels covered more than once.

    A texel is covered when its centre lies inside a UV triangle (:func:`meshforge.geometry.raster.rasterize`,
    UVs as given, glTF convention). Multiplicity comes from two z-buffered passes with the face index as
    depth: the first keeps the smallest covering face index, the second the largest; a texel where they
    differ is covered by at least two faces.

    Args:
        uv: ``[V, 2]`` float UVs. faces: ``[F, 3]`` int. width, height: grid size in texels.

    Returns:
        ``(covered [H, W] bool, overlapped [H, W] bool)``.
    """
    f = np.asarray(faces, dtype=np.int64)
    tri = np.asarray(uv, dtype=np.float64)[f] * np.array([width, height], dtype=np.float64) + np.array(_UV_JITTER)
    order = np.arange(len(f), dtype=np.float64)
    low = rasterize(tri, width, height, np.repeat(order[:, None], 3, axis=1)).face
    high = rasterize(tri, width, height, np.repeat(-order[:, None], 3, axis=1)).face
    covered = low >= 0
    return covered, covered & (low != high)


def uv_triangle_areas(uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unsigned area of each face's UV triangle, in units of the UV square.

    Args:
        uv: ``[V, 2]`` float UVs. faces: ``[F, 3]`` int vertex indices.

    Returns:
        ``[F]`` float64.
    """
    t = np.asarray(uv, dtype=np.float64)[np.asarray(faces, dtype=np.int64)]
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    return np.asarray(0.5 * np.abs(e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]), dtype=np.float64)


def uv_utilisation(uv: np.ndarray, faces: np.ndarray) -> float:
    """Atlas utilisation: the total area of the UV triangles over the atlas area (the unit UV square).

    The one definition of utilisation: the unwrap stage reports it for its atlas and ``meshforge inspect``
    for each texture atlas of a file. It is exact (no raster), independent of the texture size, and counts
    each triangle as given: triangles stacked on one another (see ``overlap``) or outside the unit square
    (see ``faces_outside_unit_square``) add their area again, so it can exceed 1 only for such atlases.
    A 1024² map at utilisation *u* holds the detail of a √u·1024-texel square.

    Args:
        uv: ``[V, 2]`` float UVs (glTF convention). faces: ``[F, 3]`` int vertex indices.

    Returns:
        Utilisation, a float ≥ 0 (0 for no faces).
    """
    return float(uv_triangle_areas(uv, faces).sum())


def uv_stretch(vertices: np.ndarray, uv: np.ndarray, faces: np.ndarray) -> float:
    """Area-weighted L2 stretch of a parametrisation, normalised so that 1 is the best possible value.

    Sander, Snyder, Gortler & Hoppe 2001, "Texture mapping progressive meshes" (SIGGRAPH), §3: for a
    triangle, with ``S_s``, ``S_t`` the partial derivatives of the map from UV (s, t) to the surface,
    ``L2(T) = sqrt((|S_s|² + |S_t|²) / 2)`` (the root mean square of the Jacobian's singular values Γ, γ);
    over the mesh ``L2(M) = sqrt(Σ L2(T)² A(T) / Σ A(T))`` with ``A`` the 3D area, and, since the atlas
    scale is arbitrary, multiplied by ``sqrt(Σ A'(T) / Σ A(T))`` (``A'``: UV area), which makes it scale
    invariant and ≥ 1, with 1 exactly when every triangle is mapped isometrically up to one global scale.
    A uniform 2:1 anisotropic scale gives √(5/4) ≈ 1.118. Faces whose UV triangle has zero area (their
    stretch is infinite) are left out; the unwrap stage counts them as ``uv_degenerate_faces``.

    Args:
        vertices: ``[V, 3]`` float positions. uv: ``[V, 2]`` float UVs. faces: ``[F, 3]`` int indices.

    Returns:
        The normalised L2 stretch (≥ 1), or NaN when no face has both a 3D and a UV area.
    """
    ss2, st2, area, uv_area = uv_stretch_terms(vertices, uv, faces)
    l2_sq = 0.5 * (ss2 + st2)
    ok = np.isfinite(l2_sq)
    if not ok.any():
        return float("nan")
    total = float(area[ok].sum())
    return float(np.sqrt((l2_sq[ok] * area[ok]).sum() / total) * np.sqrt(uv_area[ok].sum() / total))


def uv_stretch_terms(vertices: np.ndarray, uv: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per face, the terms of :func:`uv_stretch` (Sander et al. 2001): ``|S_s|²`` and ``|S_t|²``, the squared
    lengths of the partial derivatives of the map from UV to the surface (``L2(T)² = (|S_s|² + |S_t|²) / 2``; NaN
    where the UV or the 3D triangle has no area), the 3D area and the UV area.

    Args:
        vertices: ``[V, 3]`` float positions. uv: ``[V, 2]`` float UVs. faces: ``[F, 3]`` int indices.

    Returns:
        ``(ss2, st2, area, uv_area)``, ``[F]`` float64 each (areas in the units² of ``vertices`` and of ``uv``).
    """
    f = np.asarray(faces, dtype=np.int64)
    q = np.asarray(vertices, dtype=np.float64)[f]
    t = np.asarray(uv, dtype=np.float64)[f]
    s1, s2, s3 = t[:, 0, 0], t[:, 1, 0], t[:, 2, 0]
    t1, t2, t3 = t[:, 0, 1], t[:, 1, 1], t[:, 2, 1]
    uv_area2 = (s2 - s1) * (t3 - t1) - (s3 - s1) * (t2 - t1)  # twice the signed UV area
    area = 0.5 * np.linalg.norm(np.cross(q[:, 1] - q[:, 0], q[:, 2] - q[:, 0]), axis=1)
    ok = (np.abs(uv_area2) > 1e-14) & (area > 0.0)
    ss2 = np.full(len(f), np.nan)
    st2 = np.full(len(f), np.nan)
    if ok.any():
        a2 = uv_area2[ok][:, None]
        qk = q[ok]
        s1, s2, s3, t1, t2, t3 = (x[ok][:, None] for x in (s1, s2, s3, t1, t2, t3))
        ss = (qk[:, 0] * (t2 - t3) + qk[:, 1] * (t3 - t1) + qk[:, 2] * (t1 - t2)) / a2
        st = (qk[:, 0] * (s3 - s2) + qk[:, 1] * (s1 - s3) + qk[:, 2] * (s2 - s1)) / a2
        ss2[ok] = (ss * ss).sum(1)
        st2[ok] = (st * st).sum(1)
    return ss2, st2, area, 0.5 * np.abs(uv_area2)


def never_written(covered: np.ndarray, dilation: float) -> np.ndarray:
    """Texels no bake reaches: farther than ``dilation`` texels (Euclidean, centre to centre) from every
    covered texel (all of them when none is covered).

    Args:
        covered: ``[H, W]`` bool, texels covered by a UV triangle (:func:`uv_coverage`, :func:`rasterize`).
        dilation: the gutter width in texels that bakes and bilinear/mip filtering fill or read.

    Returns:
        ``[H, W]`` bool.
    """
    covered = np.asarray(covered, dtype=bool)
    if not covered.any():
        return np.ones_like(covered)
    r = math.floor(max(dilation, 0.0))
    if r > 8:
        from scipy import ndimage

        return np.asarray(ndimage.distance_transform_edt(~covered) > dilation)
    # within the distance of a covered texel: OR of the covered mask shifted by every offset of the disk
    h, w = covered.shape
    near = np.zeros((h + 2 * r, w + 2 * r), dtype=bool)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dx * dx + dy * dy <= dilation * dilation:
                near[r + dy : r + dy + h, r + dx : r + dx + w] |= covered
    return ~near[r : r + h, r : r + w]


def nearest_covered(covered: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The exact Euclidean distance transform of the uncovered texels (``scipy.ndimage.distance_transform_edt``,
    Maurer et al. 2003): for every texel, the distance to the nearest covered texel centre and that texel.

    Kept for one reuse, keyed by the mask's bytes (:func:`_memo`; arrays read-only): the unwrap's atlas check
    (:func:`never_written`) and the bake's gutter fill use the same coverage.

    Args:
        covered: ``[H, W]`` bool, with at least one covered texel.

    Returns:
        ``(distance [H, W] float64 in texels, (rows [H, W], cols [H, W]) int of the nearest covered texel)``.
    """
    covered = np.ascontiguousarray(covered, dtype=bool)

    def compute() -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        from scipy import ndimage

        dist, (ri, ci) = ndimage.distance_transform_edt(~covered, return_distances=True, return_indices=True)
        for a in (dist, ri, ci):
            a.setflags(write=False)
        return dist, (ri, ci)

    return _memo(("edt", _digest(covered)), compute)


def uv_seam_length(vertices: np.ndarray, uv: np.ndarray, faces: np.ndarray) -> float:
    """Total 3D length of a UV atlas's seams: the edges of the surface that the atlas cuts.

    A seam edge is an edge of the surface (vertices welded by position, :func:`~meshforge.geometry.topology.weld`)
    shared by two faces whose UV triangles do not share it (the atlas splits its vertices there); the surface's
    own borders are not seams. Each seam edge counts once. :func:`uv_seam_ratio` makes it scale-free.

    Args:
        vertices: ``[V, 3]`` float positions (split at the seams, as stored). uv: ``[V, 2]`` UVs.
        faces: ``[F, 3]`` int indices into both.

    Returns:
        The seam length in the vertices' units (0.0 for no faces).
    """
    from .topology import weld

    f = np.asarray(faces, dtype=np.int64)
    if len(f) == 0:
        return 0.0
    v = np.asarray(vertices, dtype=np.float64)
    _, welded = weld(v, f)
    w = welded.astype(np.int64)
    n = int(max(w.max(), f.max())) + 1
    a3, b3 = w.reshape(-1), w[:, [1, 2, 0]].reshape(-1)
    au, bu = f.reshape(-1), f[:, [1, 2, 0]].reshape(-1)
    key3 = np.minimum(a3, b3) * n + np.maximum(a3, b3)  # the surface's edge
    # the edge as the atlas stores it: its two UV vertices, whichever face it comes from
    key_uv = np.minimum(au, bu) * n + np.maximum(au, bu)
    _, inv3, count3 = np.unique(key3, return_inverse=True, return_counts=True)
    _, inv_uv, count_uv = np.unique(key_uv, return_inverse=True, return_counts=True)
    seam = (count3[inv3] == 2) & (count_uv[inv_uv] == 1)  # interior on the surface, split in the atlas
    length = np.linalg.norm(v[au[seam]] - v[bu[seam]], axis=1)
    return float(length.sum() / 2.0)  # each seam edge is seen from both of its faces


def uv_seam_ratio(vertices: np.ndarray, uv: np.ndarray, faces: np.ndarray) -> float:
    """:func:`uv_seam_length` over the square root of the surface area: the seam length in units of the side of
    a square of the surface's area, so scale-free (``seam_ratio`` in the unwrap stage's report and in
    ``meshforge inspect``). More seam means more filtering artefacts and more split vertices.

    Args:
        vertices, uv, faces: as :func:`uv_seam_length`.

    Returns:
        The ratio, rounded to 3 decimals (0.0 for a surface of no area).
    """
    from .topology import face_areas

    side = math.sqrt(float(face_areas(vertices, faces).sum())) if len(faces) else 0.0
    return round(uv_seam_length(vertices, uv, faces) / side, 3) if side > 0 else 0.0
