"""Chart packing for UV atlases: xatlas's charts, re-placed densely on the texel grid (numpy; torch optional).

xatlas (Jonathan Young, MIT) segments and parameterises well, but its packer places each chart's raster at
the best of a random sample of positions, which leaves wide gaps between the crescent-shaped charts of
generated surfaces. :func:`pack_charts` keeps every chart's shape (a similarity transform per chart: one
scale common to all charts, a rotation, a translation — so stretch does not change) and packs them again:

1. charts are the connected components of the UV mesh (faces sharing UV vertices);
2. each chart is turned to its minimum-area bounding rectangle (angles sampled every 2°), then rasterised
   *conservatively* (every texel a triangle touches: per texel row, the extent of the triangle clipped to
   the row) at the final texel size, and its raster dilated by the padding (a square of ``2·padding + 1``
   texels);
3. charts are placed largest first (longest bounding-box perimeter) by *bottom-left fill* on an occupancy
   bitmap of a strip ``resolution`` wide and twice as tall (Chazelle 1983, "The Bottom-Left Bin-Packing
   Heuristic"; on rasters as in Jylänki 2010, "A Thousand Ways to Pack the Bin", and xatlas's own packer):
   for each of the four quarter-turns, every offset is tested at once on a grid of texel blocks
   (``resolution / 256`` texels a side; a block is taken when any texel in it is; only the rows from the
   lowest one with a free block up to the top of the placed charts, skipping rows whose free runs are too
   short for the chart's) — small charts (at most 128 blocks) by testing each run of their rows against the
   length of the free run at every block (on the host, also when a device is given), larger ones by FFT
   correlation of chart and occupancy (on a torch device, all the turns in one batched FFT: the same
   offsets) — and the lowest, then leftmost, free offset is taken; of the four turns, one that stays inside
   the square and whose chart centre of area sits lowest wins; the chart then slides down and left texel by
   texel on the exact bitmap while its dilated raster stays clear of every placed chart's raster. A small
   chart (padded raster at most ``EXACT_ROWS`` texels a side) is instead placed at its first free offset on
   the texels themselves, in two quarter-turns (:class:`_ExactSearch`): the blocks would round its few
   texels up by as much as a block a side (FlightHelmet, 2,191 charts at 20k faces: 0.626 on the blocks after
   four layouts, 0.621 by xatlas's own packer, 0.683 texel-exactly in one layout);
4. the common scale is searched for the largest one whose layout fits the ``resolution``² square, from a
   given starting utilisation: a layout's height ``h`` in the strip gives the next scale, ``·√(resolution
   / h)`` (the caller bounds the number of layouts, and the utilisation not worth a layout); the padding is
   in texels of that square.

Because each chart's dilated raster is placed only where it overlaps no placed chart's (undilated)
conservative raster, no two charts' rasters come closer than ``padding`` empty texels, and no two overlap.
"""

from __future__ import annotations

import math
import sys
from fractions import Fraction
from typing import Any

import numpy as np

#: the placement search runs on a bitmap of at most this many blocks per side (blocks of whole texels)
_GRID = 256
#: charts covering at most this many blocks are tested by shifted bitmaps, larger ones by FFT correlation
_DIRECT_CELLS = 128
#: the block grid's free-offset search on the host tests a chart's row runs against the occupancy's free runs,
#: candidate row by candidate row from the lowest (:func:`_first_by_runs`); False: the whole window at once
RUN_SEARCH = True
#: with a device search, charts covering more than this many blocks (in every turn tried) are searched on the device,
#: smaller ones on the host (a device round trip per small chart cost more)
DEVICE_CELLS = _DIRECT_CELLS
#: a scale whose charts' footprints (rasters dilated by half the padding: they never overlap in a layout) cover
#: more than this fraction of the square is not laid out (the bottom-left fill's layouts that fit the square,
#: on the shared assets: footprints over 0.71-0.86 of it)
DENSEST = 0.9
#: charts whose padded raster is at most this many texels in both directions are placed texel-exactly
#: (:class:`_ExactSearch`), larger ones on the block grid (where the search of a large chart is cheaper)
EXACT_ROWS = 64
#: quarter-turns tried for a chart placed texel-exactly: the other two, on FlightHelmet's 2,191 charts, lowered
#: the layout by 4 texels in 1,000 and cost 0.8 s
EXACT_TURNS = 2
#: rows of a chart whose longest runs screen the rows of the strip before :meth:`_ExactSearch.first` tests them
_FILTER_ROWS = 6
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
    csgraph = sys.modules.get("scipy.sparse.csgraph")
    if csgraph is not None:  # already loaded (the pipeline's process; not the lean unwrap worker): 4× faster
        from scipy.sparse import coo_matrix

        edges = (np.concatenate([f[:, 0], f[:, 1]]), np.concatenate([f[:, 1], f[:, 2]]))
        graph = coo_matrix((np.ones(2 * len(f), dtype=np.int8), edges), shape=(n_uv, n_uv)).tocsr()
        # components are numbered in the order of their smallest vertex, as the propagation's minima sort
        _, label = csgraph.connected_components(graph, directed=False)
        _, chart = np.unique(label[f[:, 0]], return_inverse=True)
        return chart.astype(np.int64).reshape(-1)
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


def _conservative_spans(tri: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The texels each triangle of ``tri`` ``[T, 3, 2]`` (texel units) touches, as runs along texel rows.

    A triangle meets the slab of texel row ``y`` (``y ≤ v ≤ y + 1``) in a convex polygon whose corners are
    the triangle's corners inside the slab and the points where its edges cross the slab's two lines; the
    polygon's extent ``[x_min, x_max]`` gives the texels ``floor(x_min) … floor(x_max)`` of that row (closed
    texels: one touched at a corner or an edge counts).

    Returns:
        ``(t, y, x0, x1)`` int64: triangle index, texel row, first and last texel column of each run.
    """
    xs, ys = tri[:, :, 0], tri[:, :, 1]
    # minima and maxima over the three corners, written out (a reduction along an axis of 3 is slow)
    xlo = np.minimum(np.minimum(xs[:, 0], xs[:, 1]), xs[:, 2])
    xhi = np.maximum(np.maximum(xs[:, 0], xs[:, 1]), xs[:, 2])
    lo = np.floor(np.minimum(np.minimum(ys[:, 0], ys[:, 1]), ys[:, 2])).astype(np.int64)
    hi = np.floor(np.maximum(np.maximum(ys[:, 0], ys[:, 1]), ys[:, 2])).astype(np.int64)
    n = hi - lo + 1
    t = np.repeat(np.arange(len(tri)), n)
    y = lo[t] + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    y0 = y.astype(np.float64)
    y1 = y0 + 1.0
    xmin = np.full(len(t), np.inf)
    xmax = np.full(len(t), -np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(3):
            px, py = xs[t, i], ys[t, i]
            inside = (py >= y0) & (py <= y1)  # the corner lies in the slab
            xmin = np.where(inside, np.minimum(xmin, px), xmin)
            xmax = np.where(inside, np.maximum(xmax, px), xmax)
            qx, qy = xs[t, (i + 1) % 3], ys[t, (i + 1) % 3]  # the edge to the next corner
            for line in (y0, y1):
                s = (line - py) / (qy - py)  # nan or ±inf for an edge along the line: not a crossing
                ok = (s >= 0) & (s <= 1)
                x = px + s * (qx - px)
                xmin = np.where(ok, np.minimum(xmin, x), xmin)
                xmax = np.where(ok, np.maximum(xmax, x), xmax)
    # a hair wider (rounding), but never past the triangle's own bounding box
    x0 = np.maximum(np.floor(xmin - 1e-9), np.floor(xlo[t])).astype(np.int64)
    x1 = np.minimum(np.floor(xmax + 1e-9), np.floor(xhi[t])).astype(np.int64)
    return t, y, x0, x1


def _conservative_spans_torch(tri: np.ndarray, device: str) -> tuple[Any, Any, Any, Any]:
    """:func:`_conservative_spans` on a torch device: the same float64 operations in the same order (IEEE
    arithmetic rounds alike on every device), so the same runs, as int64 tensors on that device."""
    import torch

    t3 = torch.from_numpy(np.ascontiguousarray(tri, dtype=np.float64)).to(device)
    xs, ys = t3[:, :, 0], t3[:, :, 1]
    xlo = torch.minimum(torch.minimum(xs[:, 0], xs[:, 1]), xs[:, 2])
    xhi = torch.maximum(torch.maximum(xs[:, 0], xs[:, 1]), xs[:, 2])
    lo = torch.floor(torch.minimum(torch.minimum(ys[:, 0], ys[:, 1]), ys[:, 2])).long()
    hi = torch.floor(torch.maximum(torch.maximum(ys[:, 0], ys[:, 1]), ys[:, 2])).long()
    n = hi - lo + 1
    total = int(n.sum())
    t = torch.repeat_interleave(torch.arange(len(t3), device=t3.device), n, output_size=total)
    y = (
        lo[t]
        + torch.arange(total, device=t3.device)
        - torch.repeat_interleave(torch.cumsum(n, 0) - n, n, output_size=total)
    )
    y0 = y.to(torch.float64)
    y1 = y0 + 1.0
    xmin = torch.full((total,), torch.inf, dtype=torch.float64, device=t3.device)
    xmax = torch.full((total,), -torch.inf, dtype=torch.float64, device=t3.device)
    for i in range(3):
        px, py = xs[t, i], ys[t, i]
        inside = (py >= y0) & (py <= y1)
        xmin = torch.where(inside, torch.minimum(xmin, px), xmin)
        xmax = torch.where(inside, torch.maximum(xmax, px), xmax)
        qx, qy = xs[t, (i + 1) % 3], ys[t, (i + 1) % 3]
        for line in (y0, y1):
            s = (line - py) / (qy - py)
            ok = (s >= 0) & (s <= 1)
            x = px + s * (qx - px)
            xmin = torch.where(ok, torch.minimum(xmin, x), xmin)
            xmax = torch.where(ok, torch.maximum(xmax, x), xmax)
    x0 = torch.maximum(torch.floor(xmin - 1e-9), torch.floor(xlo[t])).long()
    x1 = torch.minimum(torch.floor(xmax + 1e-9), torch.floor(xhi[t])).long()
    return t, y, x0, x1


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
    if b not in (2, 4, 8):
        return np.asarray(pad.reshape(hb, b, wb, b).any(axis=(1, 3)))
    # the b bytes of a block's row read as one b-byte word: OR the b rows of words (far faster than any())
    rows = pad.view(f"u{b}").reshape(hb, b, wb)
    out = rows[:, 0].copy()
    for i in range(1, b):
        out |= rows[:, i]
    return out != 0


def _reach(free: np.ndarray) -> np.ndarray:
    """``[R, W]`` int32: per cell of a bool ``[R, W]`` array, how many free (True) cells start there going right
    (0 on a taken cell) — a run of ``L`` cells fits at ``(y, x)`` exactly when ``reach[y, x] >= L``."""
    w = free.shape[1]
    idx = np.arange(w)
    nxt = np.where(free, w, idx)  # the first taken cell at or right of each cell (w: none)
    nxt = np.minimum.accumulate(nxt[:, ::-1], axis=1)[:, ::-1]
    return (nxt - idx).astype(np.int32)


def _runs(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The horizontal runs of a bool ``[R, W]`` array's True cells, in row-major order: ``(rows, first columns,
    lengths)``, int64 arrays of one entry per run."""
    r, w = cells.shape
    edged = np.zeros((r, w + 2), dtype=np.int8)
    edged[:, 1:-1] = cells
    step = np.diff(edged, axis=1)
    rows, starts = np.nonzero(step == 1)  # runs start and end in the same (row-major) order
    _, ends = np.nonzero(step == -1)
    return rows, starts, ends - starts


def _mask_runs(mask: np.ndarray) -> list[tuple[int, int, int]]:
    """The horizontal runs of a bool mask's True cells: ``(row, first column, length)`` each (:func:`_runs`)."""
    rows, starts, lengths = _runs(mask)
    return list(zip(rows.tolist(), starts.tolist(), lengths.tolist(), strict=True))


def _free_positions(occ: np.ndarray, mask: np.ndarray, cache: dict[str, np.ndarray]) -> np.ndarray:
    """``[H-h+1, W-w+1]`` bool: offsets where ``mask`` ``[h, w]`` overlaps no set cell of ``occ`` ``[H, W]``.

    Small masks test their rows' runs against the free runs of the occupancy (:func:`_reach`, kept in
    ``cache["reach"]``: one comparison per run of the mask, not per cell); larger ones use FFT correlation (the
    occupancy's transform is computed once per ``cache``, i.e. per chart and occupancy state).
    """
    gh, gw = occ.shape
    h, w = mask.shape
    cells = np.flatnonzero(mask)
    if len(cells) <= _DIRECT_CELLS:
        if "reach" not in cache:
            cache["reach"] = _reach(~occ)
        reach = cache["reach"]
        free = np.ones((gh - h + 1, gw - w + 1), dtype=bool)
        for i, j, length in _mask_runs(mask):
            free &= reach[i : i + gh - h + 1, j : j + gw - w + 1] >= length
        return free
    # circular correlation needs no margin: the offsets kept (y ≤ H-h, x ≤ W-w) never wrap around
    nh, nw = _fft_size(gh), _fft_size(gw)
    if "fft" not in cache:
        cache["fft"] = np.fft.rfft2(occ.astype(np.float64), s=(nh, nw))
    # the mask's transform from its h rows (the rest are zeros); the correlation's rows only as far as needed
    spec = np.fft.fft(np.fft.rfft(mask.astype(np.float64), n=nw, axis=1), n=nh, axis=0)
    rows = np.fft.ifft(cache["fft"] * np.conj(spec), axis=0)[: gh - h + 1]
    corr = np.fft.irfft(rows, n=nw, axis=1)
    return corr[:, : gw - w + 1] < 0.5


def _free_positions_by_cells(occ: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """:func:`_free_positions` by AND-ing a shifted copy of the free cells per cell of the mask (the reference of
    its run-based test)."""
    gh, gw = occ.shape
    h, w = mask.shape
    vacant = ~occ
    free = np.ones((gh - h + 1, gw - w + 1), dtype=bool)
    for i, j in zip(*np.nonzero(mask), strict=True):
        free &= vacant[i : i + gh - h + 1, j : j + gw - w + 1]
    return free


def _row_runs(cells: np.ndarray) -> np.ndarray:
    """``[R]`` int64: the longest run of consecutive True cells in each row of a bool ``[R, W]`` array."""
    rows, _, lengths = _runs(cells)
    out = np.zeros(cells.shape[0], dtype=np.int64)
    np.maximum.at(out, rows, lengths)
    return out


def _first_by_runs(
    reach: np.ndarray, runs: list[tuple[int, int, int]], rows: np.ndarray, width: int
) -> tuple[int, int] | None:
    """The first offset (lowest row, then leftmost column) among the candidate ``rows`` (ascending) and columns
    ``0 … width - 1`` where a mask given by its ``runs`` (:func:`_mask_runs`) overlaps no taken cell: each run of
    ``length`` cells from ``(i, j)`` needs ``reach[y + i, x + j] >= length`` (:func:`_reach`). The candidate rows
    are tested a few at a time, from the lowest up, and the test stops at the first batch with a free offset:
    in a bottom-left fill it is usually one of the first."""
    runs = sorted(runs, key=lambda r: -r[2])  # the longest runs first: they rule out the most offsets
    batch = 4
    start = 0
    while start < len(rows):
        ys = rows[start : start + batch]
        free = np.ones((len(ys), width), dtype=bool)
        for t, (i, j, length) in enumerate(runs):
            free &= reach[ys + i, j : j + width] >= length
            if (t < 4 or t % 4 == 3) and not free.any():
                break  # (every offset of these rows is ruled out)
        if free.any():
            k = int(free.argmax())
            return int(ys[k // width]), k % width
        start += len(ys)
        batch *= 2
    return None


def _first_free(
    occ: np.ndarray, run: np.ndarray, masks: list[np.ndarray], r0: int, reach: np.ndarray | None = None
) -> list[tuple[int, int] | None]:
    """Per mask (a chart's turns), the first offset (lowest row, then leftmost column) where it overlaps no set
    block of ``occ``, among the offsets of rows ``r0 … len(occ) - h``.

    A row is a candidate only when, for every row ``i`` of the chart, the occupancy's row ``y + i`` has a
    free run (``run``: :func:`_row_runs` of the free blocks) at least as long as the chart's longest run in
    its row ``i`` — a necessary condition, so skipping the other rows loses no offset. The exact test
    (:func:`_free_positions`) then runs on the rows from the lowest candidate of any turn up, the occupancy's
    transform shared by the turns. Rows low in a strip are mostly full of small holes that a large chart
    cannot use: it skips them.

    ``reach``: :func:`_reach` of ``~occ`` where the caller keeps it up to date (else computed when a small mask
    needs it).

    Returns:
        Per mask, ``(row, column)`` in blocks, or None when no offset in those rows is free.
    """
    oks: list[np.ndarray | None] = []
    for m in masks:
        hc = m.shape[0]
        n = occ.shape[0] - hc - r0 + 1
        if n <= 0:
            oks.append(None)
            continue
        need = _row_runs(m)
        ok = np.ones(n, dtype=bool)
        for i in range(hc):
            ok &= run[r0 + i : r0 + i + n] >= need[i]
        oks.append(ok if ok.any() else None)
    out: list[tuple[int, int] | None] = [None] * len(masks)
    firsts = [int(ok.argmax()) for ok in oks if ok is not None]
    if not firsts:
        return out
    if reach is not None and RUN_SEARCH:
        for j, (m, rows_ok) in enumerate(zip(masks, oks, strict=True)):
            if rows_ok is not None:
                out[j] = _first_by_runs(
                    reach, _mask_runs(m), r0 + np.flatnonzero(rows_ok), occ.shape[1] - m.shape[1] + 1
                )
        return out
    y0 = min(firsts)
    sub = occ[r0 + y0 :]
    cache: dict[str, np.ndarray] = {} if reach is None else {"reach": reach[r0 + y0 :]}
    for j, (m, rows_ok) in enumerate(zip(masks, oks, strict=True)):
        if rows_ok is None:
            continue
        free = _free_positions(sub, m, cache)  # offsets of rows y0 … (as many as rows_ok has from y0)
        free &= rows_ok[y0:, None]
        i = int(free.argmax())
        fy, fx = divmod(i, free.shape[1])
        if free[fy, fx]:
            out[j] = (r0 + y0 + fy, fx)
    return out


class _DeviceSearch:
    """:func:`_first_free` for all turns of a chart at once, by FFT correlation on a torch device.

    The occupancy ``[rows, g]`` lives on the device as float64 (exact 0/1 sums: the correlation of a chart
    with the occupancy is a count of overlapping blocks, so ``< 0.5`` is the same test as the CPU path's);
    its transform is kept until a placement changes it. The turns' block masks are correlated with it in one
    batched FFT, and the first free offset of each (lowest row, then leftmost column, among rows ``r0 …
    end - h``) comes back in one transfer. Same offsets as :func:`_first_free`, so the same layout.
    """

    def __init__(self, occ: np.ndarray, device: str) -> None:
        """``occ``: the host occupancy, updated in place by the caller (who says where: :meth:`update`)."""
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.host = occ
        self.rows, self.g = occ.shape
        self.nh, self.nw = _fft_size(self.rows), _fft_size(self.g)
        self.occ = torch.from_numpy(occ.astype(np.float64)).to(self.device)
        self.spec: Any = None
        self.dirty: tuple[int, int] | None = None  # host rows changed since the last copy to the device
        self.xs = torch.arange(self.nw, device=self.device).view(1, 1, -1)

    def update(self, y0: int, y1: int) -> None:
        """Note that block rows ``y0 … y1 - 1`` of the host occupancy changed: they are copied to the device before
        the next search (all changes since the last one in one copy)."""
        self.dirty = (y0, y1) if self.dirty is None else (min(self.dirty[0], y0), max(self.dirty[1], y1))
        self.spec = None

    def first(self, masks: list[np.ndarray], r0: int, end: int) -> list[tuple[int, int] | None]:
        """Per mask, the first free offset ``(row, column)`` in rows ``r0 … end - h`` (None: none is free)."""
        torch = self.torch
        if self.dirty is not None:
            lo, hi = self.dirty
            self.occ[lo:hi] = torch.from_numpy(self.host[lo:hi].astype(np.float64)).to(self.device)
            self.dirty = None
        if self.spec is None:
            self.spec = torch.fft.rfft2(self.occ, s=(self.nh, self.nw))
        hm, wm = max(m.shape[0] for m in masks), max(m.shape[1] for m in masks)
        stack = np.zeros((len(masks), hm, wm), dtype=np.float64)
        for i, m in enumerate(masks):
            stack[i, : m.shape[0], : m.shape[1]] = m
        mk = torch.from_numpy(stack).to(self.device)
        corr = torch.fft.irfft2(
            self.spec[None] * torch.fft.rfft2(mk, s=(self.nh, self.nw)).conj(), s=(self.nh, self.nw)
        )
        # offsets from row r0 on (a view); a mask's columns stay inside the strip (x ≤ g - w: the correlation is
        # circular). Rows past end - h are ruled out below, on the host: they come after every row before them
        ws = torch.tensor([m.shape[1] for m in masks], device=self.device).view(-1, 1, 1)
        flat = ((corr[:, r0:] < 0.5) & (self.xs <= self.g - ws)).reshape(len(masks), -1)
        first = torch.stack([flat.to(torch.uint8).argmax(1), flat.any(1).long()]).cpu().numpy()
        out: list[tuple[int, int] | None] = []
        for m, i, hit in zip(masks, first[0].tolist(), first[1].tolist(), strict=True):
            y, x = r0 + i // self.nw, i % self.nw
            out.append((y, x) if hit and y <= end - m.shape[0] else None)
        return out


def _shr(x: np.ndarray, s: int) -> np.ndarray:
    """Multi-word right shift along the last axis of ``uint64`` bit rows: bit ``j`` of the result is bit ``j + s``
    of ``x`` (bit ``j`` of a row lies in word ``j // 64`` at position ``j % 64``); bits past the row's end read 0."""
    if s <= 0:
        return x
    ws, bs = divmod(s, 64)
    n = x.shape[-1]
    out = np.zeros_like(x)
    if ws >= n:
        return out
    src = x[..., ws:]
    if bs == 0:
        out[..., : n - ws] = src
    else:
        out[..., : n - ws] = src >> np.uint64(bs)
        out[..., : n - ws - 1] |= src[..., 1:] << np.uint64(64 - bs)
    return out


class _ExactSearch:
    """The first free offset of a small chart on the texel bitmap itself (no blocks): exact bottom-left fill.

    A chart's padded raster fits at an offset when no taken texel lies within ``padding`` texels (a square) of
    its conservative raster — when every texel of that raster is a corner of a free ``(2·padding + 1)²``
    square (the dilation turned around: an erosion, Serra 1982, "Image Analysis and Mathematical Morphology").
    Each row of corners is kept as one Python int (bit ``x``: the square from column ``x`` is free), made from
    the free texels' runs of ``2·padding + 1`` (``uint64`` word rows, numpy) AND-ed over as many rows. Low in a
    strip, where charts are packed close, almost no corner is left, so most rows fail their first test.

    A raster row's run of ``L`` texels from column ``a`` fits at offset ``x`` when bit ``x + a`` of the corner
    row's ``L``-runs is set; the runs of ``2^k`` corners are level ``k`` (level ``k - 1`` AND itself shifted by
    ``2^(k-1)``, the doubling of a sparse table), those of ``L`` two overlapping runs of the largest ``2^k ≤ L``.
    Levels and runs are made per row when first asked for and forgotten when the row changes. A row of the strip
    is screened by its longest run of corners (rounded down to a power of two) against the raster's first rows,
    then tested a raster run at a time, rows far apart first, until one fails.
    """

    def __init__(self, fine: np.ndarray, padding: int, longest: int) -> None:
        """``fine``: the occupancy (True: taken); ``longest``: the longest raster row :meth:`first` will test."""
        self.rows, self.width = fine.shape
        self.side = 2 * padding + 1
        self.cap = longest  # runs of corners are measured up to this length (longer ones screen the same)
        self.words = self.width // 64 + 1  # a spare word: texels past the row's end read as taken
        self.free = np.zeros((self.rows, self.words), dtype=np.uint64)  # runs of `side` free texels
        self.longest = np.zeros(self.rows, dtype=np.int64)  # each row's longest run of corners (to `cap`), at least
        # level k of each corner row as one Python int (bit x: the corners x … x + 2^k - 1 are all set; None:
        # not computed since the row last changed): a row is tested with a handful of big-int operations
        self.bits: list[list[int | None]] = [[0] * self.rows]
        self.spans: dict[int, list[int | None]] = {}  # per run length, :meth:`_run` of each row (None: not yet)
        self.update(fine, 0, self.rows)

    def update(self, fine: np.ndarray, y0: int, y1: int) -> None:
        """Re-read texel rows ``y0 … y1 - 1`` of the occupancy ``fine`` (True: taken)."""
        packed = np.zeros((y1 - y0, self.words * 8), dtype=np.uint8)
        packed[:, : -(-self.width // 8)] = np.packbits(~fine[y0:y1], axis=1, bitorder="little")
        self.free[y0:y1] = _span_of(packed.view("<u8").astype(np.uint64), self.side)
        # the corner rows that read these rows: y0 - side + 1 … y1 - 1 (rows past the strip read as taken)
        c0, c1 = max(0, y0 - self.side + 1), min(y1, self.rows - self.side + 1)
        if c1 <= c0:
            return
        corners = self.free[c0:c1].copy()
        for t in range(1, self.side):
            corners &= self.free[c0 + t : c1 + t]
        raw = corners.astype("<u8").tobytes()
        # the longest run of corners, rounded down to a power of two (0: none): level k of a row is set somewhere
        # while the row has a run of 2^k corners
        longest = np.zeros(c1 - c0, dtype=np.int64)
        level, k = corners, 0
        while True:
            alive = level.any(axis=1)
            if not alive.any() or 1 << k > min(self.cap, self.width):
                break
            longest[alive] = 1 << k
            level = level & _shr(level, 1 << k)
            k += 1
        self.longest[c0:c1] = longest
        size = self.words * 8
        self.bits[0][c0:c1] = [int.from_bytes(raw[j * size : (j + 1) * size], "little") for j in range(c1 - c0)]
        for cached in [*self.bits[1:], *self.spans.values()]:
            cached[c0:c1] = [None] * (c1 - c0)

    def _level(self, k: int, y: int) -> int:
        """Level ``k`` of corner row ``y``: bit ``x`` set when the corners ``x … x + 2^k - 1`` are all set."""
        while len(self.bits) <= k:
            self.bits.append([None] * self.rows)
        value = self.bits[k][y]
        if value is None:
            half = self._level(k - 1, y)
            value = half & (half >> (1 << (k - 1)))
            self.bits[k][y] = value
        return value

    def _runs_of(self, length: int) -> list[int | None]:
        """The kept runs of ``length`` corners, per row (None: not made since the row last changed)."""
        row = self.spans.get(length)
        if row is None:
            row = self.spans[length] = [None] * self.rows
        return row

    def _run(self, length: int, y: int) -> int:
        """Corner row ``y``'s runs of ``length``: bit ``x`` set when the corners ``x … x + length - 1`` are all set
        (two overlapping runs of the largest power of two at most ``length``)."""
        row = self._runs_of(length)
        value = row[y]
        if value is None:
            k = length.bit_length() - 1
            value = self._level(k, y)
            if length > 1 << k:
                value &= value >> (length - (1 << k))
            row[y] = value
        return value

    def first(self, core: np.ndarray, margin: int, box: tuple[int, int], last_row: int) -> tuple[int, int] | None:
        """The first offset ``(row, column)`` in texels — lowest row, then leftmost column, rows at most
        ``last_row`` — of a chart's ``box`` ``(h, w)`` whose conservative raster ``core`` (bool, at ``margin``
        texels inside the box) keeps ``padding`` texels from every taken texel, the box inside the strip; None
        when there is none."""
        h, w = box
        n = min(last_row, self.rows - h) + 1
        if n <= 0 or w > self.width:
            return None
        hc = core.shape[0]
        rows, starts, lengths = _runs(core)  # the runs of the raster's rows
        # the corner of the free square around the raster's texel (i, j), for the box at (y, x)
        shift = margin - (self.side - 1) // 2
        need = np.zeros(hc, dtype=np.int64)
        np.maximum.at(need, rows, 1 << (np.frexp(lengths)[1] - 1))  # (rounded down as `longest` is)
        order = _spread(rows, hc)  # rows far apart first: together they rule out the most offsets
        ok = np.ones(n, dtype=bool)
        for i in dict.fromkeys(int(rows[j]) for j in order[:_FILTER_ROWS]):
            ok &= self.longest[i + shift : i + shift + n] >= need[i]  # a necessary condition: a run that long
        tests = [
            (self._runs_of(int(lengths[j])), int(rows[j]) + shift, int(lengths[j]), int(starts[j]) + shift)
            for j in order
        ]
        keep = (1 << (self.width - w + 1)) - 1  # offsets x ≤ width - w keep the box inside the rows
        for y in np.flatnonzero(ok).tolist():  # from the lowest row up: the first that passes is the answer
            acc = keep
            for runs, i, length, a in tests:
                x = runs[y + i]
                if x is None:
                    x = self._run(length, y + i)
                acc &= x >> a
                if not acc:
                    break
            else:
                return y, (acc & -acc).bit_length() - 1
        return None


def _span_of(x: np.ndarray, length: int) -> np.ndarray:
    """Bit rows ``[N, words]``: bit ``j`` set when bits ``j … j + length - 1`` of the row in ``x`` are all set."""
    out, span = x, 1
    while 2 * span <= length:
        out = out & _shr(out, span)
        span *= 2
    rest = length - span
    return out & _shr(out, rest) if rest else out


def _spread(rows: np.ndarray, h: int) -> list[int]:
    """Indices of ``rows`` (row numbers in ``0 … h - 1``) ordered so that rows far apart come first: the first
    and last rows, then the middle, then the quarters, and so on."""
    rank = np.full(h, h, dtype=np.int64)
    order: list[int] = [0, h - 1]
    spans = [(0, h - 1)]
    while spans:
        nxt = []
        for a, b in spans:
            if b - a >= 2:
                m = (a + b) // 2
                order.append(m)
                nxt += [(a, m), (m, b)]
        spans = nxt
    for r, i in enumerate(order):
        rank[i] = min(rank[i], r)
    return [int(j) for j in np.lexsort((np.arange(len(rows)), rank[rows]))]


def _key(yi: int, xi: int, coarse: np.ndarray, g: int) -> Fraction:
    """Bottom-left order of a placement: the height of the chart's centre of area, then the column (an exact
    fraction: the GPU layout, :mod:`~meshforge.mesh.pack_triton`, compares the same numbers as integers)."""
    per_row = np.count_nonzero(coarse, axis=1)
    num, den = int(per_row @ np.arange(len(per_row))), int(per_row.sum())  # the mean row of the cells: num / den
    return Fraction((yi * den + num) * 2 * g + xi * den, den)


def _rasters(
    local: list[np.ndarray],
    tris: np.ndarray,
    tri_chart: np.ndarray,
    scale: float,
    padding: int,
    device: str | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, int]:
    """Each chart's conservative raster at ``scale`` (texels), in its box with a ``padding`` margin; the
    triangles' runs are found on ``device`` when given (:func:`_conservative_spans_torch`, the same runs).

    Returns:
        ``(real, dilated, mins, footprint)``: per chart the ``[h, w]`` bool raster, the same dilated by
        ``padding``, ``[C, 2]`` the box corners (texels) the rasters start at, and the texels the rasters cover
        once each is dilated by ``padding // 2`` (on the way to ``padding``): two charts at least ``padding``
        empty texels apart have disjoint footprints, so a layout that fits covers at most the square.
    """
    mins = np.array([c.min(axis=0) for c in local]) * scale
    maxs = np.array([c.max(axis=0) for c in local]) * scale
    widths = np.floor(maxs[:, 0] - mins[:, 0]).astype(np.int64) + 1 + 2 * padding
    heights = np.floor(maxs[:, 1] - mins[:, 1]).astype(np.int64) + 1 + 2 * padding
    t = tris * scale - mins[tri_chart][:, None, :] + padding
    size = widths * heights
    offset = np.cumsum(size) - size
    total = int(size.sum())
    # every run adds +1 at its first texel and -1 after its last (in the same row of the chart's box):
    # a running sum over all the boxes is then > 0 exactly on the texels some run covers
    if device is None:
        ti, y, x0, x1 = _conservative_spans(t)
        ch = tri_chart[ti]
        start = offset[ch] + y * widths[ch]
        delta = np.bincount(start + x0, minlength=total + 1) - np.bincount(start + x1 + 1, minlength=total + 1)
        flat = np.cumsum(delta[:total]) > 0
    else:  # the same integer sums on the device (the boxes' texels: millions at 2048²); the mask comes back
        import torch

        ti_d, y_d, x0_d, x1_d = _conservative_spans_torch(t, device)
        ch_d = torch.from_numpy(tri_chart).to(ti_d.device)[ti_d]
        start_d = torch.from_numpy(offset).to(ti_d.device)[ch_d] + y_d * torch.from_numpy(widths).to(ti_d.device)[ch_d]
        delta_d = torch.bincount(start_d + x0_d, minlength=total + 1) - torch.bincount(
            start_d + x1_d + 1, minlength=total + 1
        )
        flat = (torch.cumsum(delta_d[:total], 0) > 0).cpu().numpy()
    real = [flat[offset[c] : offset[c] + size[c]].reshape(heights[c], widths[c]) for c in range(len(local))]
    half = [_dilate(r, padding // 2) for r in real]
    footprint = sum(int(h.sum()) for h in half)
    return real, [_dilate(h, padding - padding // 2) for h in half], mins, footprint


def _layout(
    real: list[np.ndarray],
    dilated: list[np.ndarray],
    resolution: int,
    padding: int,
    device: str | None = None,
    exact_rows: int = EXACT_ROWS,
    turns: int = 4,
) -> tuple[float, list[tuple[int, int, int]]]:
    """Pack the charts' rasters into a strip ``resolution`` texels wide (bottom-left fill on a block bitmap).

    The strip is ``2 · resolution`` texels tall, so a layout that does not fit the square still says how tall
    it is (the next scale of the search is derived from that height).

    Args:
        real, dilated: each chart's raster and its dilation by the padding (:func:`_rasters`).
        resolution: the square's side, in texels.
        padding: the padding the rasters were dilated by, in texels.
        device: a torch device for the free-offset search (:class:`_DeviceSearch`, all turns of a chart in one
            batched FFT); None: numpy (:func:`_first_free`). Both give the same layout.
        exact_rows: charts whose padded raster is at most this many texels a side are placed texel-exactly
            (:class:`_ExactSearch`, on the host either way); 0: every chart on the block grid.
        turns: quarter turns tried for a chart on the block grid (1–4; 2: upright and turned once).

    Returns:
        ``(height, placements)``: the height of the layout in texels (``inf`` when some chart found no place)
        and, per chart, ``(quarter turns, x, y)`` (texels) of its box.
    """
    n = len(real)
    heights = np.array([r.shape[0] for r in real])
    widths = np.array([r.shape[1] for r in real])
    place: list[tuple[int, int, int]] = [(0, 0, 0)] * n
    if np.any(np.minimum(widths, heights) > resolution):
        return math.inf, place
    b = max(1, resolution // _GRID)
    g = -(-resolution // b)  # blocks per row
    rows = 2 * g  # blocks per column: the strip is twice as tall as the square
    fine = np.zeros((rows * b, g * b), dtype=bool)
    fine[:, resolution:] = True
    occ = _blocks(fine, b)
    run = _row_runs(~occ)
    free_reach = _reach(~occ)  # per block, the free run starting there (small charts' search)
    search = _DeviceSearch(occ, device) if device is not None else None
    stale = np.zeros(rows, dtype=bool)  # with a device search: block rows whose run and reach wait for a host search
    exact = _ExactSearch(fine, padding, exact_rows) if exact_rows > 0 else None
    top = 0  # block rows [top, rows) are empty: no placed chart reaches them
    height = 0  # texel rows [height, ...) are empty (the dilated rasters included)

    def _commit(turned: np.ndarray, px: int, py: int) -> None:
        """Mark a placed chart's raster taken, in the texels, the blocks and the searches' copies."""
        nonlocal top, height
        h, w = turned.shape
        fine[py : py + h, px : px + w] |= turned
        if exact is not None:
            exact.update(fine, py, py + h)
        y0, x0 = py // b, px // b
        y1, x1 = -(-(py + h) // b), -(-(px + w) // b)
        occ[y0:y1, x0:x1] = _blocks(fine[y0 * b : y1 * b, x0 * b : x1 * b], b)
        if search is not None:
            search.update(y0, y1)
            stale[y0:y1] = True
        else:
            run[y0:y1] = _row_runs(~occ[y0:y1])
            free_reach[y0:y1] = _reach(~occ[y0:y1])
        top = max(top, y1)
        height = max(height, py + h)

    order = np.argsort(-(heights + widths), kind="stable")  # longest bounding-box perimeter first
    for c in order:
        real0, dil0 = real[c], dilated[c]
        if exact is not None and dil0.shape[0] <= exact_rows and dil0.shape[1] <= exact_rows:
            # a small chart: every turn at its first free texel offset (lowest row, then leftmost column)
            best_exact = None
            seen: list[np.ndarray] = []
            for k in range(EXACT_TURNS):
                mask = np.rot90(dil0, k)
                if any(m.shape == mask.shape and np.array_equal(m, mask) for m in seen):
                    continue
                seen.append(mask)
                core = np.rot90(real0, k)[padding : mask.shape[0] - padding, padding : mask.shape[1] - padding]
                found = exact.first(core, padding, mask.shape, height)
                if found is None:
                    continue
                yi, xi = found
                # as on the blocks: a turn that stays inside the square first, then the lowest centre of area
                cand_e = ((yi + mask.shape[0] > resolution, _key(yi, xi, mask, fine.shape[1])), k, xi, yi)
                if best_exact is None or cand_e[0] < best_exact[0]:
                    best_exact = cand_e
            if best_exact is None:
                return math.inf, place
            _, k, px, py = best_exact
            _commit(np.rot90(real0, k), px, py)
            place[c] = (k, px, py)
            continue
        full = occ[:top].all(axis=1)  # block rows with no free block: no offset starts there
        r0 = top if full.all() else int(full.argmin())
        coarse_k = [_blocks(np.rot90(dil0, k), b) for k in range(turns)]
        reach = max(m.shape[0] for m in coarse_k)
        # the lowest free offset is at most at row ``top`` (above every placed chart): search rows below
        end = min(rows, top + reach)
        best = None
        tried = [
            k
            for k, coarse in enumerate(coarse_k)
            # (a turn with an earlier turn's blocks finds its offset, and loses the tie)
            if coarse.shape[0] <= end - r0
            and coarse.shape[1] <= g
            and not any(np.array_equal(coarse, m) for m in coarse_k[:k])
        ]
        # small masks run-test on the host (a few comparisons each: faster than a device round trip); the same
        # offsets either way
        small = all(int(np.count_nonzero(coarse_k[k])) <= DEVICE_CELLS for k in tried)
        if search is not None and tried and not small:
            offsets = search.first([coarse_k[k] for k in tried], r0, end)
        else:
            if stale.any():  # brought up to date only when a host search needs them
                redo = np.flatnonzero(stale)
                run[redo] = _row_runs(~occ[redo])
                free_reach[redo] = _reach(~occ[redo])
                stale[:] = False
            offsets = _first_free(occ[:end], run, [coarse_k[k] for k in tried], r0, free_reach[:end])
        for k, found in zip(tried, offsets, strict=True):
            coarse = coarse_k[k]
            hc = coarse.shape[0]
            if found is None:
                continue
            yi, xi = found
            # a turn that stays inside the square comes first; then the lowest centre of area
            cand = ((yi + hc > g, _key(yi, xi, coarse, g)), k, xi * b, yi * b)
            if best is None or cand[0] < best[0]:
                best = cand
        if best is None:
            return math.inf, place
        _, k, px, py = best
        dil = np.rot90(dil0, k)
        turned = np.rot90(real0, k)
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
        _commit(turned, px, py)
        place[c] = (k, px, py)
    return float(height), place


#: with a CUDA device and every chart on the block grid (``exact_rows=0``), the layout runs as one Triton program
#: (:func:`meshforge.mesh.pack_triton.layout_triton`: the same layout, without the host's per-chart work); False: the
#: host loop, its larger charts' offset search on the device (:class:`_DeviceSearch`)
TRITON_LAYOUT = True
#: why the Triton layout could not run in this process (Triton failed to compile or launch it); None while it works.
#: Once set, layouts run on the host
TRITON_FAILURE: str | None = None


def _layout_on(
    real: list[np.ndarray],
    dilated: list[np.ndarray],
    resolution: int,
    padding: int,
    device: str | None,
    exact_rows: int,
    turns: int,
) -> tuple[float, list[tuple[int, int, int]]]:
    """:func:`_layout`, as one Triton program where :data:`TRITON_LAYOUT` allows it (a CUDA ``device``,
    ``exact_rows=0``, Triton importable, no earlier failure here); a Triton failure is noted in
    :data:`TRITON_FAILURE`, logged once, and the host loop lays out instead (the same layout). Running out of device
    memory propagates."""
    global TRITON_FAILURE
    if TRITON_LAYOUT and TRITON_FAILURE is None and exact_rows == 0 and str(device or "").startswith("cuda"):
        import logging

        import torch

        from ..errors import one_line
        from . import pack_triton

        if pack_triton.AVAILABLE:
            try:
                return pack_triton.layout_triton(real, dilated, resolution, padding, str(device), turns)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:  # a compile or launch failure of Triton (no common base class)
                TRITON_FAILURE = one_line(exc)
                logging.getLogger(__name__).warning(
                    "Triton chart layout unavailable, using the host: %s", TRITON_FAILURE
                )
    return _layout(real, dilated, resolution, padding, device, exact_rows, turns)


def pack_charts(
    uv: np.ndarray,
    faces: np.ndarray,
    resolution: int,
    padding: int,
    *,
    attempts: int = 2,
    start: float = 0.6,
    floor: float = 0.0,
    max_layouts: int = 40,
    device: str | None = None,
    exact_rows: int = EXACT_ROWS,
    turns: int = 4,
) -> tuple[np.ndarray, float]:
    """Re-pack the charts of a UV atlas into the unit square (see the module docstring for the algorithm).

    Args:
        uv: ``[V, 2]`` float UV coordinates of the atlas's vertices (any common scale; charts must not share
            vertices — a chart is a connected component of the UV mesh).
        faces: ``[F, 3]`` integer indices into ``uv``.
        resolution: side of the square texture, in texels, that the padding is measured in.
        padding: the least number of empty texels between the conservative rasters of two charts (>= 0).
        attempts: packings tried while searching the largest common scale that fits (the search goes on
            past them until one fits, up to ``max_layouts``).
        start: the utilisation the search starts from (e.g. a little above that of the atlas being re-packed).
        floor: no layout covering this utilisation or less is tried (e.g. that of the atlas being re-packed:
            a layout no denser is not worth its time).
        max_layouts: packings tried at most.
        device: a torch device (``"cuda"``) for the layouts' free-offset search (one batched FFT per chart
            there, instead of numpy's per turn); None: numpy only. The layout is the same either way.
        exact_rows: charts whose padded raster is at most this many texels a side are placed on the texels
            themselves (:data:`EXACT_ROWS`); 0: all on the search grid's blocks (faster on a GPU's host when the
            layout is not searched for density: a fixed utilisation that fits anyway).
        turns: quarter turns a chart on the block grid is tried in (4: all; 2: upright and turned once, which
            halves the search and, for a layout that fits anyway, often finds one as good).

    Returns:
        ``(uv, utilisation)``: ``[V, 2]`` float64 UVs in [0, 1] (vertices no face uses are set to 0) and the
        layout's UV triangle area over the unit square.

    Raises:
        ValueError: empty input, non-finite UVs, or a resolution too small for the padding.
        RuntimeError: no layout tried (at most ``max_layouts``, all above ``floor``) fits the square.
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
    order = np.argsort(vchart, kind="stable")
    bounds = np.searchsorted(vchart[order], np.arange(n + 1))
    dirs = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=1)
    # all charts at once: each centred, its extents along every angle (reduceat over the charts' vertex ranges)
    ov = order[bounds[0] :]  # the vertices of some face, chart by chart
    cv = vchart[ov]
    starts = bounds[:-1] - bounds[0]
    mean = np.stack([np.bincount(cv, uv[ov, k], minlength=n) for k in range(2)], 1) / np.diff(bounds)[:, None]
    p = uv[ov] - mean[cv]
    u = dirs @ p.T  # [angles, vertices]: the reductions run along contiguous rows
    v = np.stack([-dirs[:, 1], dirs[:, 0]], axis=1) @ p.T
    area = (np.maximum.reduceat(u, starts, axis=1) - np.minimum.reduceat(u, starts, axis=1)) * (
        np.maximum.reduceat(v, starts, axis=1) - np.minimum.reduceat(v, starts, axis=1)
    )
    angle = np.argmin(area, axis=0)[cv]  # per vertex, its chart's angle
    rows = np.arange(len(ov))
    q_all = np.stack([u[angle, rows], v[angle, rows]], axis=1)
    rot_uv[ov] = q_all
    local: list[np.ndarray] = np.split(q_all, starts[1:])
    members: list[np.ndarray] = np.split(ov, starts[1:])
    tris = rot_uv[f]
    e1 = tris[:, 1] - tris[:, 0]
    e2 = tris[:, 2] - tris[:, 0]
    total = float(0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum())
    if total <= 0:
        raise ValueError("pack_charts: the UV triangles have no area")

    # largest common scale whose layout fits: a layout's height h (texels) says how much the scale may change
    # (the strip has a fixed width, so h grows about as the area, scale²): next try scale·√(resolution/h),
    # kept inside the bracket of the largest fit and the smallest miss (bisection when it falls outside).
    # Rasters are cheap and layouts are not: a scale whose charts' footprints alone cover more than
    # DENSEST of the square is stepped down before it is laid out.
    to_scale = resolution / math.sqrt(total)  # utilisation u ↔ scale √u · to_scale
    scale = math.sqrt(min(max(start, 0.05), 0.9)) * to_scale
    least = math.sqrt(max(floor, 0.0)) * to_scale
    lo, hi = least, math.inf
    best: tuple[float, list[tuple[int, int, int]], np.ndarray] | None = None
    for i in range(max(1, max_layouts)):
        real, dilated, mins, covered = _rasters(local, tris, chart, scale, padding, device)
        # the footprints' area grows more slowly than scale² (the padding is in texels): step by the growth
        # exponent seen between the last two rasters (secant in log-log), a hair under the target
        seen: tuple[float, int] | None = None
        while covered > DENSEST * resolution**2 and scale > lo:
            power = 2.0
            if seen is not None and seen[0] != scale and seen[1] != covered:
                power = min(3.0, max(1.0, math.log(covered / seen[1]) / math.log(scale / seen[0])))
            seen = (scale, covered)
            scale = max(scale * (DENSEST * resolution**2 / covered) ** (1.0 / power) * 0.999, lo)
            real, dilated, mins, covered = _rasters(local, tris, chart, scale, padding, device)
        if scale <= lo:
            break  # no denser than ``floor`` or than the best fit so far
        height, place = _layout_on(real, dilated, resolution, padding, device, exact_rows, turns)
        if height <= resolution:
            lo = scale
            best = (scale, place, mins)
        else:
            hi = scale
        if best is not None and i + 1 >= attempts:
            break
        guess = scale * math.sqrt(resolution / height) * 0.995 if math.isfinite(height) else scale * 0.9
        if not lo < guess < hi:
            if lo > 0 and hi < math.inf:
                guess = math.sqrt(lo * hi)
            else:
                guess = lo * 1.02 if lo > 0 else hi * 0.95
        scale = guess
    if best is None:
        raise RuntimeError("pack_charts: no layout tried fits the charts in the square")
    scale, place, mins = best
    out = _transform(local, members, len(uv), scale, place, mins, padding, resolution)
    return out, total * scale**2 / resolution**2


def _transform(
    local: list[np.ndarray],
    members: list[np.ndarray],
    n_uv: int,
    scale: float,
    place: list[tuple[int, int, int]],
    mins: np.ndarray,
    padding: int,
    resolution: int,
) -> np.ndarray:
    """``[V, 2]`` UVs in [0, 1] of the charts laid out by :func:`_layout` (``mins``: :func:`_rasters`'s)."""
    out = np.zeros((n_uv, 2), dtype=np.float64)
    for c, (k, xi, yi) in enumerate(place):
        mx, my = float(mins[c, 0]), float(mins[c, 1])
        q = local[c] * scale - np.array([mx, my]) + padding
        w = math.floor(local[c][:, 0].max() * scale - mx) + 1 + 2 * padding
        h = math.floor(local[c][:, 1].max() * scale - my) + 1 + 2 * padding
        out[members[c]] = (_rotate(q, k, float(w), float(h)) + np.array([xi, yi])) / resolution
    return out
