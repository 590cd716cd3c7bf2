"""The chart packing's layout on the GPU: :func:`meshforge.mesh.pack._layout`'s bottom-left fill as one Triton kernel.

The layout places the charts one after another (largest first), each where the charts placed before it leave room,
so it cannot run in parallel over charts; on the host each chart costs a few dozen small numpy operations (0.5-1 ms
a chart on an H200's host: 0.1-0.2 s for the 190 charts of a 20k-face atlas). Here one Triton program (one block
of threads on one streaming multiprocessor) runs the whole loop with the occupancy in device memory, the threads
working on each chart's search, slide and update side by side; the host prepares the charts' turned rasters and
block masks and reads the placements back once.

Per chart, exactly as :func:`~meshforge.mesh.pack._layout` on the block grid (``exact_rows=0``):

1. for each quarter turn tried, the first free offset on the block grid — lowest row, then leftmost column — among
   rows ``low … end - h`` (``low``: the lowest row with a free block; ``end``: the top of the placed charts plus the
   chart's tallest turn) and columns ``0 … g - w``: the offset is free when every run ``(i, j, L)`` of the chart's
   block mask lies on free blocks, ``reach[y + i, x + j] ≥ L`` (``reach``: per block, the free run starting there),
   tested for ``YB`` rows of offsets at a time from the bottom up, on the rows where each run's row has a free run
   that long at all (``rowrun``, the necessary condition of :func:`~meshforge.mesh.pack._first_free`);
2. of the turns, one inside the square first, then the lowest centre of area (:func:`~meshforge.mesh.pack._key`,
   compared as exact fractions), then the first turn;
3. the slide down, then left, texel by texel on the texel bitmap while the dilated raster stays clear
   (at most ``4·b`` steps);
4. the raster marked taken in the texel bitmap, the blocks it touches, the free runs of their rows (and each row's
   longest) updated, and ``low`` moved up past rows that are now full.

:func:`layout_triton` returns the same layout as ``_layout(..., exact_rows=0)`` (the tests compare them on the same
charts); it needs Triton and a CUDA device (or ``TRITON_INTERPRET=1``, Triton's interpreter, on CPU tensors).
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import torch

from .pack import _GRID, _blocks, _reach, _runs

__all__ = ["AVAILABLE", "layout_triton"]

#: Triton importable (CUDA builds of PyTorch ship it)
AVAILABLE = importlib.util.find_spec("triton") is not None

#: per chart and turn, the int64 fields of the kernel's table
_TRIED, _HC, _WC, _HD, _WD, _RUN0, _RUN1, _DIL, _REAL, _REACH, _NUM, _DEN = range(12)
_FIELDS = 12

if AVAILABLE:
    import triton
    import triton.language as tl

    @triton.jit
    def _min_combine(a, b):
        return tl.minimum(a, b)

    @triton.jit
    def _clear(fine_ptr, fw, rast_ptr, off, h, w, yy, xx, TH: tl.constexpr, TW: tl.constexpr):
        """Whether the ``[h, w]`` raster at ``rast_ptr + off`` placed at texel ``(yy, xx)`` meets no taken texel."""
        hit = tl.full([], 0, tl.int32)
        for i0 in range(0, h, TH):
            for j0 in range(0, w, TW):
                ii = i0 + tl.arange(0, TH)[:, None]
                jj = j0 + tl.arange(0, TW)[None, :]
                inside = (ii < h) & (jj < w)
                d = tl.load(rast_ptr + off + ii * w + jj, mask=inside, other=0)
                f = tl.load(fine_ptr + (yy + ii) * fw + xx + jj, mask=inside & (d != 0), other=0)
                hit = hit | tl.max((d & f).to(tl.int32))
        return hit == 0

    @triton.jit
    def _layout_kernel(
        fine_ptr,
        occ_ptr,
        reach_ptr,
        rowrun_ptr,
        info_ptr,
        runs_ptr,
        rast_ptr,
        out_ptr,
        n,
        rows,
        g,
        fw,
        b,
        TURNS: tl.constexpr,
        NF: tl.constexpr,
        YB: tl.constexpr,
        GP: tl.constexpr,
        TH: tl.constexpr,
        TW: tl.constexpr,
        BB: tl.constexpr,
        RB: tl.constexpr,
        STEPS: tl.constexpr,
    ):
        top = tl.full([], 0, tl.int32)
        height = tl.full([], 0, tl.int32)
        failed = tl.full([], 0, tl.int32)
        low = tl.full([], 0, tl.int32)  # the lowest row with a free block: no offset starts below it
        xs1 = tl.arange(0, GP)
        for ci in range(0, n):
            reach_c = tl.load(info_ptr + (ci * TURNS) * NF + 9).to(tl.int32)
            end = tl.minimum(rows, top + reach_c)
            best_found = tl.full([], 0, tl.int32)
            best_flag = tl.full([], 0, tl.int32)
            best_num = tl.full([], 0, tl.int64)
            best_den = tl.full([], 1, tl.int64)
            best_t = tl.full([], 0, tl.int32)
            best_x = tl.full([], 0, tl.int32)
            best_y = tl.full([], 0, tl.int32)
            for t in tl.static_range(TURNS):
                base = (ci * TURNS + t) * NF
                tried = tl.load(info_ptr + base + 0).to(tl.int32)
                hc = tl.load(info_ptr + base + 1).to(tl.int32)
                wc = tl.load(info_ptr + base + 2).to(tl.int32)
                r0 = tl.load(info_ptr + base + 5).to(tl.int32)
                r1 = tl.load(info_ptr + base + 6).to(tl.int32)
                ymax = end - hc
                found = tl.full([], 0, tl.int32)
                fy = tl.full([], 0, tl.int32)
                fx = tl.full([], 0, tl.int32)
                y0 = low
                go = (tried != 0) & (ymax >= low) & (failed == 0)
                while go:
                    # rows whose every run has a free run that long in its row (a necessary condition, per row)
                    ys1 = y0 + tl.arange(0, YB)
                    rows_ok = ys1 <= ymax
                    for r in range(r0, r1):
                        ri = tl.load(runs_ptr + 3 * r + 0)
                        rl = tl.load(runs_ptr + 3 * r + 2)
                        rows_ok = rows_ok & (tl.load(rowrun_ptr + ys1 + ri, mask=rows_ok, other=0) >= rl)
                    ys = y0 + tl.arange(0, YB)[:, None]
                    xs = tl.arange(0, GP)[None, :]
                    valid = rows_ok[:, None] & (xs <= g - wc)
                    for r in range(r0, r1):
                        ri = tl.load(runs_ptr + 3 * r + 0)
                        rj = tl.load(runs_ptr + 3 * r + 1)
                        rl = tl.load(runs_ptr + 3 * r + 2)
                        rr = tl.load(reach_ptr + (ys + ri) * g + xs + rj, mask=valid, other=0)
                        valid = valid & (rr >= rl)
                    idx = tl.where(valid, (ys - y0) * GP + xs, YB * GP)
                    m = tl.min(idx)
                    hit = m < YB * GP
                    fy = tl.where(hit, y0 + m // GP, fy)
                    fx = tl.where(hit, m % GP, fx)
                    found = tl.where(hit, 1, found)
                    y0 = y0 + YB
                    go = (found == 0) & (y0 <= ymax)
                num_c = tl.load(info_ptr + base + 10)
                den_c = tl.load(info_ptr + base + 11)
                flag = (fy + hc > g).to(tl.int32)
                knum = ((fy.to(tl.int64) * den_c + num_c) * 2 * g + fx.to(tl.int64) * den_c).to(tl.int64)
                less = (flag < best_flag) | ((flag == best_flag) & (knum * best_den < best_num * den_c))
                take = (found != 0) & ((best_found == 0) | less)
                best_found = tl.where(take, 1, best_found)
                best_flag = tl.where(take, flag, best_flag)
                best_num = tl.where(take, knum, best_num)
                best_den = tl.where(take, den_c, best_den)
                best_t = tl.where(take, t, best_t)
                best_x = tl.where(take, fx, best_x)
                best_y = tl.where(take, fy, best_y)
            ok = (best_found != 0) & (failed == 0)
            failed = tl.where((best_found == 0) & (failed == 0), 1, failed)
            chosen = (ci * TURNS + best_t) * NF
            hd = tl.load(info_ptr + chosen + 3).to(tl.int32)
            wd = tl.load(info_ptr + chosen + 4).to(tl.int32)
            dil = tl.load(info_ptr + chosen + 7)
            real = tl.load(info_ptr + chosen + 8)
            hd = tl.where(ok, hd, 0)
            wd = tl.where(ok, wd, 0)
            px = best_x * b
            py = best_y * b
            # gravity: down, else left, a texel at a time while the dilated raster stays clear
            # (a test that is not needed gets an empty raster: its loops do not run)
            moving = ok
            for _ in range(STEPS):
                down = moving & (py > 0)
                hd_down = tl.where(down, hd, 0)
                down = down & _clear(fine_ptr, fw, rast_ptr, dil, hd_down, wd, tl.maximum(py - 1, 0), px, TH, TW)
                left = moving & (down == 0) & (px > 0)
                hd_left = tl.where(left, hd, 0)
                left = left & _clear(fine_ptr, fw, rast_ptr, dil, hd_left, wd, py, tl.maximum(px - 1, 0), TH, TW)
                py = py - down.to(tl.int32)
                px = px - left.to(tl.int32)
                moving = down | left
            # the raster taken in the texels
            for i0 in range(0, hd, TH):
                for j0 in range(0, wd, TW):
                    ii = i0 + tl.arange(0, TH)[:, None]
                    jj = j0 + tl.arange(0, TW)[None, :]
                    inside = (ii < hd) & (jj < wd)
                    v = tl.load(rast_ptr + real + ii * wd + jj, mask=inside, other=0)
                    one = tl.full([TH, TW], 1, tl.uint8)
                    tl.store(fine_ptr + (py + ii) * fw + px + jj, one, mask=inside & (v != 0))
            tl.debug_barrier()
            # ... in the blocks it touches
            y0b = py // b
            y1b = tl.where(ok, (py + hd + b - 1) // b, y0b)
            x0b = px // b
            x1b = (px + wd + b - 1) // b
            for by0 in range(y0b, y1b, BB):
                for bx0 in range(x0b, x1b, BB):
                    byy = by0 + tl.arange(0, BB)[:, None]
                    bxx = bx0 + tl.arange(0, BB)[None, :]
                    inb = (byy < y1b) & (bxx < x1b)
                    acc = tl.zeros([BB, BB], dtype=tl.int32)
                    for ii in range(0, b):
                        for jj in range(0, b):
                            acc = acc | tl.load(fine_ptr + (byy * b + ii) * fw + bxx * b + jj, mask=inb, other=0).to(
                                tl.int32
                            )
                    tl.store(occ_ptr + byy * g + bxx, (acc != 0).to(tl.uint8), mask=inb)
            tl.debug_barrier()
            # ... and the free runs of their rows, RB rows at a time (a suffix minimum along each row)
            for yr0 in range(y0b, y1b, RB):
                yr = yr0 + tl.arange(0, RB)
                ys2 = yr[:, None]
                xs2 = xs1[None, :]
                inb = (ys2 < y1b) & (xs2 < g)
                taken = tl.load(occ_ptr + ys2 * g + xs2, mask=inb, other=1)
                nxt = tl.where(taken != 0, xs2, g)
                nxt = tl.associative_scan(nxt, 1, _min_combine, reverse=True)
                run = tl.where(inb, nxt - xs2, 0).to(tl.int32)
                tl.store(reach_ptr + ys2 * g + xs2, run, mask=inb)
                tl.store(rowrun_ptr + yr, tl.max(run, axis=1), mask=yr < y1b)
            tl.debug_barrier()
            full = low < rows
            while full:
                full = tl.load(rowrun_ptr + low) == 0
                low = tl.where(full, low + 1, low)
                full = full & (low < rows)
            top = tl.where(ok, tl.maximum(top, y1b), top)
            height = tl.where(ok, tl.maximum(height, py + hd), height)
            tl.store(out_ptr + 3 * ci + 0, best_t, mask=ok)
            tl.store(out_ptr + 3 * ci + 1, px, mask=ok)
            tl.store(out_ptr + 3 * ci + 2, py, mask=ok)
        tl.store(out_ptr + 3 * n + 0, height)
        tl.store(out_ptr + 3 * n + 1, failed)


def layout_triton(
    real: list[np.ndarray],
    dilated: list[np.ndarray],
    resolution: int,
    padding: int,
    device: str | torch.device,
    turns: int = 4,
) -> tuple[float, list[tuple[int, int, int]]]:
    """:func:`meshforge.mesh.pack._layout` with ``exact_rows=0`` (every chart on the block grid), as one Triton
    program on ``device`` (module docstring): the same ``(height, placements)``.

    Args:
        real, dilated: each chart's ``[h, w]`` bool raster and its dilation by the padding
            (:func:`~meshforge.mesh.pack._rasters`).
        resolution: the square's side, in texels.
        padding: the padding the rasters were dilated by, in texels (not used: the rasters carry it).
        device: a CUDA device (or a CPU one under ``TRITON_INTERPRET=1``).
        turns: quarter turns tried per chart (1-4).

    Returns:
        ``(height, placements)``: the layout's height in texels (``inf`` when some chart found no place) and, per
        chart, ``(quarter turns, x, y)`` (texels) of its box.

    Raises:
        RuntimeError: Triton is not installed.
    """
    del padding
    if not AVAILABLE:
        raise RuntimeError("the GPU layout needs Triton")
    n = len(real)
    heights = np.array([r.shape[0] for r in real])
    widths = np.array([r.shape[1] for r in real])
    place: list[tuple[int, int, int]] = [(0, 0, 0)] * n
    if n == 0:
        return 0.0, place
    if np.any(np.minimum(widths, heights) > resolution):
        return math.inf, place
    b = max(1, resolution // _GRID)
    g = -(-resolution // b)
    rows = 2 * g
    fine = np.zeros((rows * b, g * b), dtype=bool)
    fine[:, resolution:] = True
    occ = _blocks(fine, b)
    reach = _reach(~occ)
    rowrun = reach.max(axis=1)  # each row's longest free run
    order = np.argsort(-(heights + widths), kind="stable")
    info = np.zeros((n, turns, _FIELDS), dtype=np.int64)
    runs: list[np.ndarray] = []
    rasters: list[np.ndarray] = []
    n_runs = 0
    n_texels = 0
    for pos, c in enumerate(order):
        coarse_k = [_blocks(np.rot90(dilated[c], k), b) for k in range(turns)]
        tallest = max(m.shape[0] for m in coarse_k)
        for k, coarse in enumerate(coarse_k):
            row = info[pos, k]
            row[_TRIED] = int(coarse.shape[1] <= g and not any(np.array_equal(coarse, m) for m in coarse_k[:k]))
            row[_HC], row[_WC] = coarse.shape
            dil = np.ascontiguousarray(np.rot90(dilated[c], k), dtype=np.uint8)
            turned = np.ascontiguousarray(np.rot90(real[c], k), dtype=np.uint8)
            row[_HD], row[_WD] = dil.shape
            r, s, length = _runs(coarse)
            runs.append(np.stack([r, s, length], axis=1))
            row[_RUN0], row[_RUN1] = n_runs, n_runs + len(r)
            n_runs += len(r)
            row[_DIL], row[_REAL] = n_texels, n_texels + dil.size
            rasters += [dil.reshape(-1), turned.reshape(-1)]
            n_texels += 2 * dil.size
            row[_REACH] = tallest
            per_row = np.count_nonzero(coarse, axis=1)
            row[_NUM], row[_DEN] = int(per_row @ np.arange(len(per_row))), max(1, int(per_row.sum()))
    dev = torch.device(device)
    fine_d = torch.from_numpy(fine.astype(np.uint8).reshape(-1)).to(dev)
    occ_d = torch.from_numpy(occ.astype(np.uint8).reshape(-1)).to(dev)
    reach_d = torch.from_numpy(reach.astype(np.int32).reshape(-1)).to(dev)
    rowrun_d = torch.from_numpy(rowrun.astype(np.int32)).to(dev)
    info_d = torch.from_numpy(info.reshape(-1)).to(dev)
    runs_d = torch.from_numpy(np.concatenate(runs).astype(np.int32).reshape(-1)).to(dev)
    rast_d = torch.from_numpy(np.concatenate(rasters)).to(dev)
    out = torch.zeros(3 * n + 2, dtype=torch.int32, device=dev)
    gp = triton.next_power_of_2(g)
    _layout_kernel[(1,)](
        fine_d,
        occ_d,
        reach_d,
        rowrun_d,
        info_d,
        runs_d,
        rast_d,
        out,
        n,
        rows,
        g,
        g * b,
        b,
        TURNS=turns,
        NF=_FIELDS,
        YB=max(1, 2048 // gp),
        GP=gp,
        TH=64,
        TW=64,
        BB=16,
        RB=max(1, 2048 // gp),
        STEPS=4 * b,
        num_warps=8,
    )
    got = out.cpu().numpy()
    if got[3 * n + 1]:
        return math.inf, place
    for pos, c in enumerate(order):
        place[int(c)] = (int(got[3 * pos]), int(got[3 * pos + 1]), int(got[3 * pos + 2]))
    return float(got[3 * n]), place
