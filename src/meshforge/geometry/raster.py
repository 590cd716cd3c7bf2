"""Vectorised triangle rasterisation in numpy (used for UV-space baking and for preview renders).

Pixel (row r, column c) has its centre at (c + 0.5, r + 0.5) in pixel coordinates; a pixel belongs to a
triangle when its centre lies inside it (edge functions, Pineda 1988), with a small tolerance so pixels on
shared edges are never missed. All candidate pixels of a batch of triangles (their bounding boxes) are
generated at once with ``np.repeat``; batches are sized to bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        A :class:`Raster`. Degenerate (zero-area) triangles cover nothing.
    """
    tri = np.asarray(tri, dtype=np.float64)
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
    cum = np.cumsum(counts[faces_all])
    start = 0
    while start < faces_all.size:
        base = cum[start - 1] if start > 0 else 0
        stop = int(np.searchsorted(cum, base + max_candidates, side="right"))
        stop = max(stop, start + 1)
        fids = faces_all[start:stop]
        start = stop
        c = counts[fids]
        fi = np.repeat(fids, c)
        offsets = np.arange(fi.size) - np.repeat(np.cumsum(c) - c, c)
        w = bw[fi]
        px = x0[fi] + offsets % w
        py = y0[fi] + offsets // w
        cx = px + 0.5
        cy = py + 0.5
        t = tri[fi]
        a2 = area2[fi]
        # barycentric of vertex 0, 1, 2 via edge functions, normalised by the signed area
        l0 = ((t[:, 1, 0] - cx) * (t[:, 2, 1] - cy) - (t[:, 2, 0] - cx) * (t[:, 1, 1] - cy)) / a2
        l1 = ((t[:, 2, 0] - cx) * (t[:, 0, 1] - cy) - (t[:, 0, 0] - cx) * (t[:, 2, 1] - cy)) / a2
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


#: UV rasterisation is done at the texture's resolution, at most this many texels per side
MAX_UV_RASTER = 1024
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


def uv_utilisation(uv: np.ndarray, faces: np.ndarray, width: int, height: int) -> float:
    """Atlas utilisation: the fraction of texels covered by UV triangles (:func:`uv_coverage`), in [0, 1].

    The one definition of utilisation: the unwrap stage reports it for its atlas and ``meshforge inspect``
    for each texture atlas of a file. The raster is ``width × height`` scaled down to at most
    :data:`MAX_UV_RASTER` texels per side.

    Args:
        uv: ``[V, 2]`` float UVs (glTF convention). faces: ``[F, 3]`` int. width, height: texture size.
    """
    scale = min(1.0, MAX_UV_RASTER / max(width, height, 1))
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    covered, _ = uv_coverage(uv, faces, w, h)
    return float(covered.mean())
