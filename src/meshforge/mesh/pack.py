"""Chart packing for UV atlases: xatlas's charts, re-placed densely on the texel grid (numpy only).

xatlas (Jonathan Young, MIT) segments and parameterises well, but its packer places each chart's raster at
the best of a random sample of positions, which leaves wide gaps between the crescent-shaped charts of
generated surfaces. :func:`pack_charts` keeps every chart's shape (a similarity transform per chart: one
scale common to all charts, a rotation, a translation — so stretch does not change) and packs them again:

1. charts are the connected components of the UV mesh (faces sharing UV vertices);
2. each chart is turned to its minimum-area bounding rectangle (angles sampled every 2°), then rasterised
   *conservatively* (every texel a triangle touches, by the separating-axis test of Akenine-Möller 2001,
   "Fast 3D triangle-box overlap testing", in 2D) at the final texel size, and its raster dilated by the
   padding (a square of ``2·padding + 1`` texels);
3. charts are placed largest first (longest bounding-box perimeter) by *bottom-left fill* on an occupancy
   bitmap (Chazelle 1983, "The Bottom-Left Bin-Packing Heuristic"; on rasters as in Jylänki 2010, "A
   Thousand Ways to Pack the Bin", and xatlas's own packer): for each of the four quarter-turns, every
   offset is tested at once on a grid of texel blocks (``resolution / 256`` texels a side; a block is taken
   when any texel in it is) — small charts by AND-ing shifted copies of the free cells, larger ones by FFT
   correlation of chart and occupancy — and the lowest, then leftmost, free offset is taken; of the four
   turns, the one whose chart centre of area sits lowest wins; the chart then slides down and left texel
   by texel on the exact bitmap while its dilated raster stays clear of every placed chart's raster;
4. the common scale is searched (a few packings: steps of 5 %, then bisection) for the largest one whose
   layout fits the ``resolution``² square; the padding is in texels of that square.

Because each chart's dilated raster is placed only where it overlaps no placed chart's (undilated)
conservative raster, no two charts' rasters come closer than ``padding`` empty texels, and no two overlap.
"""

from __future__ import annotations

import math

import numpy as np

#: the placement search runs on a bitmap of at most this many blocks per side (blocks of whole texels)
_GRID = 256
#: charts covering at most this many blocks are tested by shifted bitmaps, larger ones by FFT correlation
_DIRECT_CELLS = 128
#: angles (radians) tried for each chart's minimum-area bounding rectangle, in [0°, 90°)
_ANGLES = np.deg2rad(np.arange(0.0, 90.0, 2.0))


def uv_charts(faces: np.ndarray, n_uv: int) -> np.ndarray:
    """Chart id of each face: connected components of faces through shared UV vertices.

    Args:
        faces: ``[F, 3]`` integer UV-vertex indices.
        n_uv: number of UV vertices.

    Returns:
        ``[F]`` int64 chart ids, numbered 0..C-1 in order of first appearance of each chart's smallest vertex.
    """
    f = np.asarray(faces, dtype=np.int64)
    label = np.arange(n_uv, dtype=np.int64)
    while True:  # min-label propagation with pointer jumping
        face_min = label[f].min(axis=1)
        new = label.copy()
        np.minimum.at(new, f.ravel(), np.repeat(face_min, 3))
        new = new[new]
        if np.array_equal(new, label):
            break
        label = new
    _, chart = np.unique(label[f[:, 0]], return_inverse=True)
    return chart.astype(np.int64).reshape(-1)


def _conservative_texels(tri: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Texels (x, y) each triangle of ``tri`` ``[T, 3, 2]`` (texel units) touches, with the triangle index."""
    lo = np.floor(tri.min(axis=1)).astype(np.int64)
    hi = np.floor(tri.max(axis=1)).astype(np.int64)
    nx = hi[:, 0] - lo[:, 0] + 1
    ny = hi[:, 1] - lo[:, 1] + 1
    n = nx * ny
    t = np.repeat(np.arange(len(tri)), n)
    k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    x = lo[t, 0] + k % nx[t]
    y = lo[t, 1] + k // nx[t]
    keep = np.ones(len(t), dtype=bool)
    cx = x + 0.5
    cy = y + 0.5
    for i in range(3):  # separating axes: the three edge normals (the box axes hold by the bounding box)
        a = tri[:, i]
        b = tri[:, (i + 1) % 3]
        c = tri[:, (i + 2) % 3]
        nxv = b[:, 1] - a[:, 1]
        nyv = a[:, 0] - b[:, 0]
        edge = nxv * a[:, 0] + nyv * a[:, 1]
        other = nxv * c[:, 0] + nyv * c[:, 1]
        r = 0.5 * (np.abs(nxv) + np.abs(nyv)) * (1 + 1e-9) + 1e-12
        tlo = np.minimum(edge, other) - r
        thi = np.maximum(edge, other) + r
        centre = nxv[t] * cx + nyv[t] * cy
        keep &= (centre >= tlo[t]) & (centre <= thi[t])
    return x[keep], y[keep], t[keep]


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Dilation of a boolean ``[H, W]`` mask by a ``(2r+1)²`` square; the mask must have an ``r`` margin."""
    out = mask.copy()
    for _ in range(r):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        out = grown
        grown = out.copy()
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def _rotate(p: np.ndarray, k: int, w: float, h: float) -> np.ndarray:
    """Points ``[N, 2]`` of a ``w``×``h`` box (x along columns, y along rows) after ``np.rot90(·, k)``."""
    for _ in range(k % 4):
        p = np.stack([p[:, 1], w - p[:, 0]], axis=1)
        w, h = h, w
    return p


def _fft_size(n: int) -> int:
    """The smallest 2^a·3^b·5^c at least ``n`` (a size numpy's FFT handles fast)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p3 = p5
        while p3 < best:
            p2 = p3
            while p2 < n:
                p2 *= 2
            best = min(best, p2)
            p3 *= 3
        p5 *= 5
    return best


def _blocks(mask: np.ndarray, b: int) -> np.ndarray:
    """Block-OR of a boolean mask over ``b``×``b`` blocks (the mask is zero-padded to whole blocks)."""
    h, w = mask.shape
    hb, wb = -(-h // b), -(-w // b)
    pad = np.zeros((hb * b, wb * b), dtype=bool)
    pad[:h, :w] = mask
    return np.asarray(pad.reshape(hb, b, wb, b).any(axis=(1, 3)))


def _free_positions(occ: np.ndarray, mask: np.ndarray, cache: dict[str, np.ndarray]) -> np.ndarray:
    """``[H-h+1, W-w+1]`` bool: offsets where ``mask`` ``[h, w]`` overlaps no set cell of ``occ`` ``[H, W]``.

    Small masks AND shifted copies of the free cells; larger ones use FFT correlation (the occupancy's
    transform is computed once per ``cache``, i.e. per chart and occupancy state).
    """
    gh, gw = occ.shape
    h, w = mask.shape
    cells = np.flatnonzero(mask)
    if len(cells) <= _DIRECT_CELLS:
        if "vacant" not in cache:
            cache["vacant"] = ~occ
        vacant = cache["vacant"]
        free = np.ones((gh - h + 1, gw - w + 1), dtype=bool)
        for i, j in zip(*np.divmod(cells, w), strict=True):
            free &= vacant[i : i + gh - h + 1, j : j + gw - w + 1]
        return free
    m = max(h, w)
    nh, nw = _fft_size(gh + m), _fft_size(gw + m)
    if "fft" not in cache:
        big = np.zeros((nh, nw), dtype=np.float64)
        big[:gh, :gw] = occ
        cache["fft"] = np.fft.rfft2(big)
    pad = np.zeros((nh, nw), dtype=np.float64)
    pad[:h, :w] = mask
    corr = np.fft.irfft2(cache["fft"] * np.conj(np.fft.rfft2(pad)), s=(nh, nw))
    return corr[: gh - h + 1, : gw - w + 1] < 0.5


def _key(yi: int, xi: int, coarse: np.ndarray, g: int) -> float:
    """Bottom-left order of a placement: the height of the chart's centre of area, then the column."""
    return (yi + float(np.nonzero(coarse)[0].mean())) * (2 * g) + xi


def _layout(
    local: list[np.ndarray],
    tris: np.ndarray,
    tri_chart: np.ndarray,
    scale: float,
    resolution: int,
    padding: int,
) -> tuple[bool, list[tuple[int, int, int, float, float]]]:
    """Pack the charts at ``scale`` into the ``resolution``² square (bottom-left fill on a block bitmap).

    Returns:
        ``(fits, placements)``: whether every chart found a place and, per chart, ``(quarter turns, x, y,
        x offset, y offset)`` (texels).
    """
    n = len(local)
    mins = np.array([c.min(axis=0) for c in local]) * scale
    maxs = np.array([c.max(axis=0) for c in local]) * scale
    widths = np.floor(maxs[:, 0] - mins[:, 0]).astype(np.int64) + 1 + 2 * padding
    heights = np.floor(maxs[:, 1] - mins[:, 1]).astype(np.int64) + 1 + 2 * padding
    place: list[tuple[int, int, int, float, float]] = [(0, 0, 0, 0.0, 0.0)] * n
    if np.any(np.minimum(widths, heights) > resolution):
        return False, place
    t = tris * scale - mins[tri_chart][:, None, :] + padding
    x, y, ti = _conservative_texels(t)
    ch = tri_chart[ti]
    size = widths * heights
    offset = np.cumsum(size) - size
    flat = np.zeros(int(size.sum()), dtype=bool)
    flat[offset[ch] + y * widths[ch] + x] = True

    b = max(1, resolution // _GRID)
    g = -(-resolution // b)
    fine = np.zeros((g * b, g * b), dtype=bool)
    fine[resolution:] = True
    fine[:, resolution:] = True
    occ = _blocks(fine, b)
    order = np.argsort(-(heights + widths), kind="stable")  # longest bounding-box perimeter first
    for c in order:
        real0 = flat[offset[c] : offset[c] + size[c]].reshape(heights[c], widths[c])
        dil0 = _dilate(real0, padding)
        r0 = int(occ.all(axis=1).argmin())  # rows below r0 are full: no offset starts there
        sub = occ[r0:]
        cache: dict[str, np.ndarray] = {}
        best = None
        for k in range(4):
            dil = np.rot90(dil0, k)
            coarse = _blocks(dil, b)
            hc, wc = coarse.shape
            if hc > sub.shape[0] or wc > g:
                continue
            free = _free_positions(sub, coarse, cache)
            i = int(free.argmax())  # the first free offset in row-major order: lowest, then leftmost
            yi, xi = divmod(i, free.shape[1])
            if not free[yi, xi]:
                continue
            yi += r0
            cand = (_key(yi, xi, coarse, g), k, xi * b, yi * b)
            if best is None or cand[0] < best[0]:
                best = cand
        if best is None:
            return False, place
        _, k, px, py = best
        dil = np.rot90(dil0, k)
        real = np.rot90(real0, k)
        h, w = dil.shape
        # gravity: slide down, then left, texel by texel, while the dilated raster stays clear
        for _ in range(4 * b):
            moved = False
            if py > 0 and not (fine[py - 1 : py - 1 + h, px : px + w] & dil).any():
                py -= 1
                moved = True
            elif px > 0 and not (fine[py : py + h, px - 1 : px - 1 + w] & dil).any():
                px -= 1
                moved = True
            if not moved:
                break
        fine[py : py + h, px : px + w] |= real
        y0, x0 = py // b, px // b
        y1, x1 = -(-(py + h) // b), -(-(px + w) // b)
        occ[y0:y1, x0:x1] = _blocks(fine[y0 * b : y1 * b, x0 * b : x1 * b], b)
        place[c] = (k, px, py, float(mins[c, 0]), float(mins[c, 1]))
    return True, place


def pack_charts(
    uv: np.ndarray,
    faces: np.ndarray,
    resolution: int,
    padding: int,
    *,
    attempts: int = 4,
    start: float = 0.6,
) -> tuple[np.ndarray, float]:
    """Re-pack the charts of a UV atlas into the unit square (see the module docstring for the algorithm).

    Args:
        uv: ``[V, 2]`` float UV coordinates of the atlas's vertices (any common scale; charts must not share
            vertices — a chart is a connected component of the UV mesh).
        faces: ``[F, 3]`` integer indices into ``uv``.
        resolution: side of the square texture, in texels, that the padding is measured in.
        padding: the least number of empty texels between the conservative rasters of two charts (>= 0).
        attempts: packings tried while searching the largest common scale that fits.
        start: the utilisation the search starts from (e.g. that of the atlas being re-packed).

    Returns:
        ``(uv, utilisation)``: ``[V, 2]`` float64 UVs in [0, 1] (vertices no face uses are set to 0) and the
        layout's UV triangle area over the unit square.

    Raises:
        ValueError: empty input, non-finite UVs, or a resolution too small for the padding.
    """
    uv = np.asarray(uv, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if len(f) == 0 or uv.ndim != 2 or uv.shape[1] != 2:
        raise ValueError("pack_charts needs [V, 2] UVs and at least one [3] face")
    if not np.isfinite(uv).all():
        raise ValueError("pack_charts: UVs must be finite")
    if resolution <= 2 * padding + 1 or padding < 0:
        raise ValueError(f"pack_charts: resolution {resolution} too small for padding {padding}")
    chart = uv_charts(f, len(uv))
    n = int(chart.max()) + 1
    # each chart, rotated to its minimum-area bounding rectangle
    vchart = np.full(len(uv), -1, dtype=np.int64)
    vchart[f.ravel()] = np.repeat(chart, 3)
    rot_uv = np.zeros_like(uv)
    local: list[np.ndarray] = []
    members: list[np.ndarray] = []
    order = np.argsort(vchart, kind="stable")
    bounds = np.searchsorted(vchart[order], np.arange(n + 1))
    dirs = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=1)
    for c in range(n):
        idx = order[bounds[c] : bounds[c + 1]]
        p = uv[idx] - uv[idx].mean(axis=0)
        u = p @ dirs.T
        v = p @ np.stack([-dirs[:, 1], dirs[:, 0]], axis=0)
        area = np.ptp(u, axis=0) * np.ptp(v, axis=0)
        a = int(np.argmin(area))
        q = np.stack([u[:, a], v[:, a]], axis=1)
        rot_uv[idx] = q
        local.append(q)
        members.append(idx)
    tris = rot_uv[f]
    e1 = tris[:, 1] - tris[:, 0]
    e2 = tris[:, 2] - tris[:, 0]
    total = float(0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum())
    if total <= 0:
        raise ValueError("pack_charts: the UV triangles have no area")

    # largest common scale whose layout fits: from ``start``, step up (down) until a miss (a fit), then bisect
    scale = math.sqrt(min(max(start, 0.05), 0.9) * resolution**2 / total)
    lo, hi = 0.0, math.inf
    best: tuple[float, list[tuple[int, int, int, float, float]]] | None = None
    for i in range(attempts + 40):
        fits, place = _layout(local, tris, chart, scale, resolution, padding)
        if fits:
            lo = scale
            best = (scale, place)
        else:
            hi = scale
        if best is not None and i + 1 >= attempts:
            break
        if hi == math.inf:
            scale *= 1.05
        elif lo == 0.0:
            scale *= 0.95
        else:
            scale = math.sqrt(lo * hi)
    if best is None:
        raise RuntimeError("pack_charts: no scale fits the charts in the square")
    scale, place = best
    out = _transform(local, members, len(uv), scale, place, padding, resolution)
    extent = float(out[np.unique(f)].max())
    if extent < 0.99:  # a free margin is left: one more packing, at the scale that would fill it
        fits, place = _layout(local, tris, chart, scale / extent, resolution, padding)
        if fits:
            scale /= extent
            out = _transform(local, members, len(uv), scale, place, padding, resolution)
    return out, total * scale**2 / resolution**2


def _transform(
    local: list[np.ndarray],
    members: list[np.ndarray],
    n_uv: int,
    scale: float,
    place: list[tuple[int, int, int, float, float]],
    padding: int,
    resolution: int,
) -> np.ndarray:
    """``[V, 2]`` UVs in [0, 1] of the charts laid out by :func:`_layout`."""
    out = np.zeros((n_uv, 2), dtype=np.float64)
    for c, (k, xi, yi, mx, my) in enumerate(place):
        q = local[c] * scale - np.array([mx, my]) + padding
        w = math.floor(local[c][:, 0].max() * scale - mx) + 1 + 2 * padding
        h = math.floor(local[c][:, 1].max() * scale - my) + 1 + 2 * padding
        out[members[c]] = (_rotate(q, k, float(w), float(h)) + np.array([xi, yi])) / resolution
    return out
