"""Jump flooding (the GPU bake's seam dilation) with one Triton kernel launch per step.

:func:`meshforge.gpu.bake.jump_flood` is the torch reference: per step it compares every texel's seed with
the seeds of its 8 neighbours at the step's distance, in about 75 elementwise torch operations (shifted views,
squared distances, selects) — some 900 kernel launches for a 1024² atlas, which on a GPU cost the host far more
than the device. :func:`jump_flood_triton` does a step in one launch (the 8 neighbours in the same order, the
same strict comparisons, float32 as the reference), ping-ponging between two sets of seed buffers: the same
seeds and distances (``tests/gpu/test_gpu_bake.py`` compares them; the squared distances of real seeds are
integers below 2²⁴, exact either way).

Rong & Tan, "Jump flooding in GPU with applications to Voronoi diagram and distance transform", I3D 2006
(with the two extra passes of "JFA+2").
"""

from __future__ import annotations

import importlib.util

import torch

__all__ = ["AVAILABLE", "flood_start", "flood_steps", "jump_flood_triton"]

#: Triton importable (CUDA builds of PyTorch ship it)
AVAILABLE = importlib.util.find_spec("triton") is not None
#: texels per Triton program
BLOCK = 1024


def flood_start(covered: torch.Tensor, dtype: torch.dtype) -> tuple[float, tuple[torch.Tensor, ...]]:
    """The jump flooding's start (both :func:`jump_flood_triton` and :func:`meshforge.gpu.bake.jump_flood`): every
    covered texel its own seed, the others a far-away sentinel.

    Args:
        covered: ``[H, W]`` bool tensor; dtype: the seeds' float type (float32 holds the squared distances exactly up
            to 2048² atlases).

    Returns:
        ``(far, (ys, xs, sy, sx, best))``: the sentinel coordinate; ``[H, W]`` each texel's row and column, its seed's
        row and column, and the squared distance to it.
    """
    h, w = covered.shape
    dev = covered.device
    far = float(4 * (h + w) + 16)  # sentinel coordinate: farther than any real seed
    ys = torch.arange(h, device=dev, dtype=dtype).view(h, 1).expand(h, w)
    xs = torch.arange(w, device=dev, dtype=dtype).view(1, w).expand(h, w)
    sy = torch.where(covered, ys, torch.full((h, w), far, device=dev, dtype=dtype))
    sx = torch.where(covered, xs, torch.full((h, w), far, device=dev, dtype=dtype))
    return far, (ys, xs, sy, sx, (sy - ys) ** 2 + (sx - xs) ** 2)


def flood_steps(h: int, w: int) -> list[int]:
    """The step distances of JFA+2 on an ``h`` × ``w`` atlas: the largest power of two below the longer side, halved
    down to 1, then 2 and 1 again."""
    steps = []
    k = 1 << max(0, (max(h, w) - 1).bit_length() - 1)
    while k >= 1:
        steps.append(k)
        k //= 2
    return steps + [2, 1]


if AVAILABLE:
    import triton
    import triton.language as tl

    @triton.jit(do_not_specialize=["h", "w", "k", "far"])
    def _step_kernel(sy_ptr, sx_ptr, best_ptr, oy_ptr, ox_ptr, ob_ptr, h, w, k, far, BLOCK: tl.constexpr):
        """One jump-flooding step at distance ``k``: each texel keeps the nearest of its seed and its 8 neighbours'
        seeds (neighbours in the reference's order, ``dy`` then ``dx`` in −k, 0, k; strictly nearer wins)."""
        i = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        m = i < h * w
        y = i // w
        x = i - y * w
        yf = y.to(tl.float32)
        xf = x.to(tl.float32)
        sy = tl.load(sy_ptr + i, mask=m, other=0.0)
        sx = tl.load(sx_ptr + i, mask=m, other=0.0)
        best = tl.load(best_ptr + i, mask=m, other=0.0)
        for a in tl.static_range(3):
            for b in tl.static_range(3):
                if a != 1 or b != 1:
                    ny = y + (a - 1) * k
                    nx = x + (b - 1) * k
                    inside = m & (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
                    cy = tl.load(sy_ptr + ny * w + nx, mask=inside, other=far)
                    cx = tl.load(sx_ptr + ny * w + nx, mask=inside, other=far)
                    ey = cy - yf
                    ex = cx - xf
                    d2 = ey * ey + ex * ex
                    closer = d2 < best
                    sy = tl.where(closer, cy, sy)
                    sx = tl.where(closer, cx, sx)
                    best = tl.where(closer, d2, best)
        tl.store(oy_ptr + i, sy, mask=m)
        tl.store(ox_ptr + i, sx, mask=m)
        tl.store(ob_ptr + i, best, mask=m)


def jump_flood_triton(covered: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`meshforge.gpu.bake.jump_flood` with one Triton launch per step (same arguments, same results).

    Args:
        covered: ``[H, W]`` bool tensor on a CUDA device (a CPU one under ``TRITON_INTERPRET=1``), at least one
            texel true, ``max(H, W) ≤ 2048`` (float32 seeds, as the reference uses there).

    Returns:
        ``(nearest [H, W] int64 flat index of the seed texel, distance [H, W] float32 in texels)``.

    Raises:
        ValueError: an atlas over 2048 texels a side (the reference switches to float64 there).
        RuntimeError: Triton is not installed.
    """
    if not AVAILABLE:
        raise RuntimeError("Triton is not installed")
    h, w = covered.shape
    if max(h, w) > 2048:
        raise ValueError(f"jump_flood_triton: a {h}×{w} atlas is over 2048 texels a side (float32 seeds)")
    far, (_, _, sy, sx, best) = flood_start(covered, torch.float32)
    src = [sy.contiguous(), sx.contiguous(), best.contiguous()]
    dst = [torch.empty_like(t) for t in src]
    grid = (triton.cdiv(h * w, BLOCK),)
    for k in flood_steps(h, w):
        _step_kernel[grid](*src, *dst, h, w, k, far, BLOCK=BLOCK)
        src, dst = dst, src
    sy, sx, best = src
    seed = sy.long() * w + sx.long()
    return seed, torch.sqrt(best)
