"""The fused Triton kernels of TripoSR's GPU paths, and their launch wrappers.

Two kernels evaluate the NeRF decoder (:class:`~.model.NeRFDecoder`) with everything per point kept in registers:

* the grid kernel (:func:`triton_density_grid`, called by :meth:`.model.TripoSRModel.density_grid_fast`): the
  raw density on a regular ``R³`` grid from the decoder's first layer split over the three planes
  (:meth:`.model.TripoSRModel.first_layer_planes`), then the hidden layers and the density output;
* the colour kernel (:func:`triton_color`, used for vertex colours): the three planes' bilinear samples
  (``grid_sample``'s arithmetic), the whole MLP and the colour activation at arbitrary points.

Matrix operands are 16-bit (``fp16``/``bf16``), TF32 or float32 (``precision``); accumulation, biases and
activations are float32. These paths are not part of the parity contract; their error against the float32 torch
path is measured by ``benchmarks/triposr_gpu.py`` and checked by ``tests/backends/test_triposr_kernels.py``.

Triton (Tillet et al. 2019, "Triton: An Intermediate Language and Compiler for Tiled Neural Network
Computations") ships with CUDA builds of PyTorch, not with CPU ones: without it this module still imports,
the kernels are None and :func:`triton_grid_supported` is False. :mod:`.model` imports this module only where a
GPU path may run.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...errors import one_line

if TYPE_CHECKING:
    from .model import TripoSRModel

__all__ = [
    "FAILURE",
    "attempt",
    "TRITON_COLOR_CONFIG",
    "TRITON_GRID_CONFIG",
    "triton_color",
    "triton_density_grid",
    "note_failure",
    "triton_grid_supported",
]


#: why the kernels could not run in this process (Triton failed to compile or launch one, e.g. no C compiler for its
#: launcher); None while they work. Once set, :func:`triton_grid_supported` is False: the torch paths answer.
FAILURE: str | None = None


def note_failure(exc: BaseException) -> None:
    """Record (and log once) that a kernel could not be compiled or launched here: :data:`FAILURE`."""
    global FAILURE
    if FAILURE is None:
        FAILURE = one_line(exc)
        logging.getLogger(__name__).warning("TripoSR's Triton kernels unavailable, using torch: %s", FAILURE)


def attempt(kernel: Callable[..., torch.Tensor], *args: Any, strict: bool = False) -> torch.Tensor | None:
    """``kernel(*args)``, or None where Triton could not compile or launch it here (no C compiler for its launcher, an
    unsupported GPU): :func:`note_failure` records why, and the caller's torch path answers, now and from then on.
    Running out of device memory is no such failure: it propagates; so does every failure with ``strict``."""
    try:
        return kernel(*args)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:  # Triton's compile and launch errors have no common base class
        if strict:
            raise
        note_failure(exc)
        return None


def triton_grid_supported(model: TripoSRModel) -> bool:
    """Whether :func:`triton_density_grid` can run this model's decoder: Triton importable and not failed here
    (:data:`FAILURE`), ``silu``/``relu``, ``n_neurons`` a power of two in [16, 128], at least one hidden layer."""
    n = model.cfg.decoder.n_neurons
    return (
        _grid_mlp_kernel is not None
        and FAILURE is None
        and model.cfg.decoder.activation in ("silu", "relu")
        and 16 <= n <= 128
        and n & (n - 1) == 0
        and model.cfg.decoder.n_hidden_layers >= 1
    )


#: Triton launch settings of the fused grid kernel: points per program along k, j rows per program, warps,
#: software-pipelining stages (measured on an H200, see ``benchmarks/results/triposr_gpu.md``).
TRITON_GRID_CONFIG = {"BLOCK": 128, "J_PER": 1, "num_warps": 8, "num_stages": 3}


if importlib.util.find_spec("triton") is not None:  # CUDA builds of PyTorch ship Triton; CPU builds do not
    import triton
    import triton.language as tl

    @triton.jit
    def _act(x, ACT: tl.constexpr, FAST: tl.constexpr):
        """ReLU (ACT 0) or SiLU (ACT 1); FAST: SiLU as x·(1 + tanh(x/2))/2 with the hardware tanh.approx."""
        if ACT == 0:
            return tl.maximum(x, 0.0)
        elif FAST:
            t = tl.inline_asm_elementwise(
                "tanh.approx.f32 $0, $1;", "=f,f", [x * 0.5], dtype=tl.float32, is_pure=True, pack=1
            )
            return x * (0.5 + 0.5 * t)
        else:
            return x / (1.0 + tl.exp(-x))

    @triton.jit
    def _grid_mlp_kernel(
        pxy_ptr,
        pxz_ptr,
        pyz_ptr,
        w_ptr,
        b_ptr,
        wout_ptr,
        bout_ptr,
        out_ptr,
        R,
        WIDTH: tl.constexpr,
        N_HIDDEN: tl.constexpr,
        BLOCK: tl.constexpr,
        J_PER: tl.constexpr,
        ACT: tl.constexpr,
        FAST: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """Program (kb, jb, i): raw density at grid points (i, j, k), k in one BLOCK, J_PER consecutive j.

        ``h = act(pxy[i, j] + pxz[i, k] + pyz[j, k])``, then N_HIDDEN × ``h = act(h @ W + b)`` (W ``[in, out]``
        in the operand dtype, float32 accumulation), then ``raw = h · w_out + b_out``; ``out[i, j, k] = raw``.
        """
        k = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        i = tl.program_id(2)
        c = tl.arange(0, WIDTH)
        kmask = k < R
        kc = tl.minimum(k, R - 1)
        pxz = tl.load(pxz_ptr + (i * R + kc)[:, None] * WIDTH + c[None, :])  # [BLOCK, WIDTH] float32
        w_out = tl.load(wout_ptr + c)
        b_out = tl.load(bout_ptr)
        for jj in range(J_PER):
            j = tl.program_id(1) * J_PER + jj
            jc = tl.minimum(j, R - 1)
            pxy = tl.load(pxy_ptr + (i * R + jc) * WIDTH + c)
            pyz = tl.load(pyz_ptr + (jc * R + kc)[:, None] * WIDTH + c[None, :])
            h = _act(pxz + pyz + pxy[None, :], ACT, FAST)
            for layer in tl.static_range(N_HIDDEN):
                w = tl.load(w_ptr + layer * WIDTH * WIDTH + c[:, None] * WIDTH + c[None, :])
                b = tl.load(b_ptr + layer * WIDTH + c)
                acc = tl.dot(h.to(w.dtype), w, input_precision=PRECISION, out_dtype=tl.float32)
                h = _act(acc + b[None, :], ACT, FAST)
            raw = tl.sum(h * w_out[None, :], axis=1) + b_out
            tl.store(out_ptr + (i * R + jc) * R + k, raw, mask=kmask & (j < R))

    @triton.jit
    def _plane_features(planes_ptr, plane, ua, ub, H, W, c, cmask, nmask, C: tl.constexpr):
        """``grid_sample`` (bilinear, align_corners=False, zero padding) of channels-last plane ``plane`` at
        normalised coordinates (ua → the W axis, ub → the H axis): ``[BLOCK, CP]`` float32."""
        fx = ((ua + 1.0) * W - 1.0) * 0.5
        fy = ((ub + 1.0) * H - 1.0) * 0.5
        x0f = tl.floor(fx)
        y0f = tl.floor(fy)
        wx1 = fx - x0f
        wy1 = fy - y0f
        x0 = x0f.to(tl.int32)
        y0 = y0f.to(tl.int32)
        feat = tl.zeros((fx.shape[0], c.shape[0]), dtype=tl.float32)
        for corner in tl.static_range(4):
            xi = x0 + (corner % 2)
            yi = y0 + (corner // 2)
            wx = wx1 if corner % 2 == 1 else 1.0 - wx1
            wy = wy1 if corner // 2 == 1 else 1.0 - wy1
            valid = nmask & (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
            row = (plane * H + tl.minimum(tl.maximum(yi, 0), H - 1)) * W + tl.minimum(tl.maximum(xi, 0), W - 1)
            v = tl.load(planes_ptr + row[:, None] * C + c[None, :], mask=valid[:, None] & cmask[None, :], other=0.0)
            feat += v * (wx * wy)[:, None]
        return feat

    @triton.jit
    def _point_color_kernel(
        pos_ptr,
        planes_ptr,
        w1_ptr,
        b1_ptr,
        w_ptr,
        b_ptr,
        wout_ptr,
        bout_ptr,
        out_ptr,
        N,
        H,
        W,
        radius,
        C: tl.constexpr,
        CP: tl.constexpr,
        WIDTH: tl.constexpr,
        N_HIDDEN: tl.constexpr,
        BLOCK: tl.constexpr,
        ACT: tl.constexpr,
        FAST: tl.constexpr,
        SIGMOID: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """Program: colours of BLOCK points: triplane sampling, the whole MLP, the colour activation."""
        n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        nmask = n < N
        u0 = (tl.load(pos_ptr + n * 3 + 0, mask=nmask, other=0.0) + radius) / (2.0 * radius) * 2.0 - 1.0
        u1 = (tl.load(pos_ptr + n * 3 + 1, mask=nmask, other=0.0) + radius) / (2.0 * radius) * 2.0 - 1.0
        u2 = (tl.load(pos_ptr + n * 3 + 2, mask=nmask, other=0.0) + radius) / (2.0 * radius) * 2.0 - 1.0
        c = tl.arange(0, CP)
        cmask = c < C
        o = tl.arange(0, WIDTH)
        w1 = tl.load(w1_ptr + c[:, None] * WIDTH + o[None, :])
        f = _plane_features(planes_ptr, 0, u0, u1, H, W, c, cmask, nmask, C)  # XY at (x, y)
        acc = tl.dot(f.to(w1.dtype), w1, input_precision=PRECISION, out_dtype=tl.float32)
        w1 = tl.load(w1_ptr + CP * WIDTH + c[:, None] * WIDTH + o[None, :])
        f = _plane_features(planes_ptr, 1, u0, u2, H, W, c, cmask, nmask, C)  # XZ at (x, z)
        acc = tl.dot(f.to(w1.dtype), w1, acc, input_precision=PRECISION, out_dtype=tl.float32)
        w1 = tl.load(w1_ptr + 2 * CP * WIDTH + c[:, None] * WIDTH + o[None, :])
        f = _plane_features(planes_ptr, 2, u1, u2, H, W, c, cmask, nmask, C)  # YZ at (y, z)
        acc = tl.dot(f.to(w1.dtype), w1, acc, input_precision=PRECISION, out_dtype=tl.float32)
        h = _act(acc + tl.load(b1_ptr + o)[None, :], ACT, FAST)
        for layer in tl.static_range(N_HIDDEN):
            w = tl.load(w_ptr + layer * WIDTH * WIDTH + o[:, None] * WIDTH + o[None, :])
            b = tl.load(b_ptr + layer * WIDTH + o)
            acc = tl.dot(h.to(w.dtype), w, input_precision=PRECISION, out_dtype=tl.float32)
            h = _act(acc + b[None, :], ACT, FAST)
        for j in tl.static_range(3):
            x = tl.sum(h * tl.load(wout_ptr + j * WIDTH + o)[None, :], axis=1) + tl.load(bout_ptr + j)
            if SIGMOID:
                x = 1.0 / (1.0 + tl.exp(-x))
            tl.store(out_ptr + n * 3 + j, x, mask=nmask)

else:  # pragma: no cover - exercised where Triton is installed
    _grid_mlp_kernel = None
    _point_color_kernel = None


#: Triton launch settings of the fused colour kernel.
TRITON_COLOR_CONFIG = {"BLOCK": 128, "num_warps": 4}


def triton_color(
    model: TripoSRModel,
    scene_code: torch.Tensor,
    positions: torch.Tensor,
    precision: str = "fp16",
    fast_act: bool = True,
) -> torch.Tensor:
    """Colours at points by one fused Triton kernel: the three planes' bilinear samples (``grid_sample``'s
    arithmetic: align_corners=False, zero padding), the whole decoder MLP (``precision`` matrix operands, float32
    accumulation and activations) and the colour activation; nothing per point but the colour touches memory.

    Args:
        model: a model for which :func:`triton_grid_supported` holds, with a ``sigmoid`` or ``none`` colour.
        scene_code: ``[3, Co, H, W]`` float32 (CUDA).
        positions: ``[N, 3]`` float32 native-frame points (same device).
        precision: ``"fp16"``, ``"bf16"``, ``"tf32"`` or ``"fp32"``.
        fast_act: SiLU by the hardware ``tanh.approx`` (see :meth:`.model.TripoSRModel.density_grid_fast`).

    Returns:
        ``[N, 3]`` float32 colours (after the activation).
    """
    layers = [m for m in model.decoder.layers if isinstance(m, nn.Linear)]
    first, hidden, last = layers[0], layers[1:-1], layers[-1]
    dev = scene_code.device
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    _, c, h, w = scene_code.shape
    width = first.weight.shape[0]
    cp = max(16, 1 << (c - 1).bit_length())
    planes = scene_code.permute(0, 2, 3, 1).contiguous().float()  # [3, H, W, C] channels last
    w1 = first.weight.float()
    parts = [w1[:, i * c : (i + 1) * c] for i in range(3)] if w1.shape[1] == 3 * c else [w1 / 3] * 3
    w1p = torch.zeros((3, cp, width), device=dev)
    for i, part in enumerate(parts):
        w1p[i, :c] = part.t()
    b1 = first.bias.float() if first.bias is not None else torch.zeros(width, device=dev)
    if hidden:
        wh = torch.stack([m.weight.t() for m in hidden]).to(dtype).contiguous()
        bh = torch.stack([m.bias if m.bias is not None else torch.zeros(width, device=dev) for m in hidden]).float()
    else:
        wh = torch.zeros((1, width, width), device=dev, dtype=dtype)
        bh = torch.zeros((1, width), device=dev)
    wout = last.weight[1:4].float().contiguous()
    bout = (last.bias[1:4] if last.bias is not None else torch.zeros(3, device=dev)).float().contiguous()
    pos = positions.float().contiguous()
    out = torch.empty((pos.shape[0], 3), dtype=torch.float32, device=dev)
    block = int(TRITON_COLOR_CONFIG["BLOCK"])
    _point_color_kernel[((pos.shape[0] + block - 1) // block,)](
        pos,
        planes,
        w1p.to(dtype).contiguous(),
        b1.contiguous(),
        wh,
        bh.contiguous(),
        wout,
        bout,
        out,
        pos.shape[0],
        h,
        w,
        float(model.renderer.radius),
        C=c,
        CP=cp,
        WIDTH=width,
        N_HIDDEN=len(hidden),
        BLOCK=block,
        ACT=1 if model.cfg.decoder.activation == "silu" else 0,
        FAST=bool(fast_act and model.cfg.decoder.activation == "silu"),
        SIGMOID=model.renderer.color_activation.lower() == "sigmoid",
        PRECISION="ieee" if precision == "fp32" else "tf32",
        num_warps=int(TRITON_COLOR_CONFIG["num_warps"]),
    )
    return out


def triton_density_grid(
    pxy: torch.Tensor,
    pxz: torch.Tensor,
    pyz: torch.Tensor,
    hidden: list[nn.Linear],
    last: nn.Linear,
    act_name: str,
    precision: str,
    fast_act: bool,
) -> torch.Tensor:
    """Raw density ``[R, R, R]`` float32 of the MLP after the first layer, by the fused kernel (see
    :meth:`.model.TripoSRModel.density_grid_fast`)."""
    r, width = pxy.shape[0], pxy.shape[-1]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    dev = pxy.device
    # weights transposed to [in, out] for h @ W; biases float32; a zero bias where a layer has none
    w = torch.stack([m.weight.t() for m in hidden]).to(dtype).contiguous()
    b = torch.stack([m.bias if m.bias is not None else torch.zeros(width, device=dev) for m in hidden]).float()
    w_out = last.weight[0].float().contiguous()
    b_out = (last.bias[:1] if last.bias is not None else torch.zeros(1, device=dev)).float().contiguous()
    out = torch.empty((r, r, r), dtype=torch.float32, device=dev)
    cfg = TRITON_GRID_CONFIG
    block, j_per = int(cfg["BLOCK"]), int(cfg["J_PER"])
    grid = ((r + block - 1) // block, (r + j_per - 1) // j_per, r)
    _grid_mlp_kernel[grid](
        pxy.contiguous(),
        pxz.contiguous(),
        pyz.contiguous(),
        w,
        b.contiguous(),
        w_out,
        b_out,
        out,
        r,
        WIDTH=width,
        N_HIDDEN=len(hidden),
        BLOCK=block,
        J_PER=j_per,
        ACT=1 if act_name == "silu" else 0,
        FAST=bool(fast_act and act_name == "silu"),
        PRECISION="ieee" if precision == "fp32" else "tf32",
        num_warps=int(cfg["num_warps"]),
        num_stages=int(cfg.get("num_stages", 3)),
    )
    return out
