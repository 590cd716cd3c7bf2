"""Multi-head attention for the TRELLIS.2 flow transformers: dense, sparse (variable length), RoPE.

Everything goes through :func:`torch.nn.functional.scaled_dot_product_attention` (SDPA), with its
default softmax scale ``1 / sqrt(head_dim)`` (the scale flash-attention and xformers use in the
reference).

Variable-length attention (the structured latent of each batch item has its own number of
voxels) is computed **per batch item**: each item's queries attend only to that item's keys, one
SDPA call per item, no padding and no mask. When every item has the same query length and the same
key length (always true for image-token cross-attention and for a batch of one), the items are
stacked into one batched SDPA call instead, which is the same computation. Per-item calls were chosen
over padding + boolean mask because they keep SDPA on its mask-free fused kernels (flash /
memory-efficient on CUDA), never materialise an ``[B, H, Lmax, Lmax]`` mask, cannot produce NaN rows
for padded queries, and inference batches are tiny (one item, or two with classifier-free guidance).

Rotary position embedding (RoPE, Su et al. 2021, "RoFormer") in 3D as TRELLIS.2 applies it: the
``head_dim / 2`` complex channel pairs ``(x[2i], x[2i+1])`` are split into three equal groups of
``f = head_dim // 2 // 3`` frequencies, group ``a`` rotated by ``coord[a] * freq[j]`` with
``freq[j] = rope_freq[0] / rope_freq[1] ** (j / f)``; pairs left over when ``head_dim / 2`` is not
divisible by 3 are not rotated (phase 0).

Sources: TRELLIS (Xiang et al. 2024) and TRELLIS.2 (2025) flow transformers; QK RMS-norm after
"Scaling Vision Transformers to 22 Billion Parameters" (Dehghani et al. 2023).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .sparse import SparseTensor

__all__ = [
    "MultiHeadAttention",
    "MultiHeadRMSNorm",
    "SparseMultiHeadAttention",
    "apply_rope",
    "dense_attention",
    "rope_frequencies",
    "rope_phases",
    "varlen_attention",
]

Context = torch.Tensor | Sequence[torch.Tensor]
"""Cross-attention context: a dense ``[B, L, D]`` tensor or one ``[L_i, D]`` tensor per batch item."""


# -- RoPE ---------------------------------------------------------------------------------------
def rope_frequencies(head_dim: int, dim: int = 3, rope_freq: tuple[float, float] = (1.0, 10000.0)) -> torch.Tensor:
    """The ``head_dim // 2 // dim`` angular frequencies of one coordinate axis, ``float32``.

    ``freq[j] = rope_freq[0] / rope_freq[1] ** (j / f)`` for ``j = 0 … f-1``, ``f = head_dim // 2 // dim``.

    Raises:
        ValueError: odd ``head_dim``.
    """
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    n = head_dim // 2 // dim
    exponent = torch.arange(n, dtype=torch.float32) / n
    return rope_freq[0] / (rope_freq[1] ** exponent)


def rope_phases(coords: torch.Tensor, head_dim: int, rope_freq: tuple[float, float] = (1.0, 10000.0)) -> torch.Tensor:
    """Unit complex rotations for integer positions, ``complex64 [..., head_dim // 2]``.

    Args:
        coords: ``[..., dim]`` positions (voxel indices; any integer or float dtype). Axis ``a``
            drives the ``a``-th block of ``head_dim // 2 // dim`` channel pairs.
        head_dim: channels per attention head (even).
        rope_freq: ``(scale, base)`` of the frequency ladder.

    Returns:
        ``exp(i * coord[a] * freq[j])`` laid out axis-major ``[a0 f0..fF, a1 f0..fF, …]``, padded
        with ``1 + 0i`` (no rotation) up to ``head_dim // 2`` pairs.
    """
    dim = coords.shape[-1]
    freqs = rope_frequencies(head_dim, dim, rope_freq).to(coords.device)
    angles = torch.outer(coords.reshape(-1).to(torch.float32), freqs)
    rot = torch.polar(torch.ones_like(angles), angles).reshape(*coords.shape[:-1], -1)
    missing = head_dim // 2 - rot.shape[-1]
    if missing > 0:
        pad_shape = (*rot.shape[:-1], missing)
        identity = torch.polar(torch.ones(pad_shape, device=rot.device), torch.zeros(pad_shape, device=rot.device))
        rot = torch.cat([rot, identity], dim=-1)
    return rot


def apply_rope(x: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    """Rotate the channel pairs of ``x [..., L, H, D]`` by ``phases complex64 [..., L, D/2]``.

    The pair ``(x[2i], x[2i+1])`` is read as the complex number ``x[2i] + i x[2i+1]`` and multiplied
    by ``phases[i]`` (the same rotation for every head), in ``float32``/``complex64``; the result is
    cast back to ``x.dtype``.
    """
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    turned = pairs * phases.unsqueeze(-2)
    return torch.view_as_real(turned).reshape(*turned.shape[:-1], -1).to(x.dtype)


# -- attention kernels --------------------------------------------------------------------------
def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention over dense sequences through SDPA.

    Args:
        q: ``[B, Lq, H, C]``; k: ``[B, Lk, H, C]``; v: ``[B, Lk, H, Cv]``.

    Returns:
        ``[B, Lq, H, Cv]`` in the dtype of the inputs.
    """
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_seqlens: Sequence[int],
    kv_seqlens: Sequence[int],
) -> torch.Tensor:
    """Block-diagonal attention over packed variable-length sequences.

    Item ``b``'s queries (rows ``sum(q_seqlens[:b]) …`` of ``q``) attend only to item ``b``'s keys and
    values. One SDPA call per item, or one batched call when all lengths agree (see module doc).

    Args:
        q: ``[Tq, H, C]`` packed queries, ``Tq = sum(q_seqlens)``.
        k: ``[Tk, H, C]`` packed keys; v: ``[Tk, H, Cv]`` packed values, ``Tk = sum(kv_seqlens)``.
        q_seqlens, kv_seqlens: rows per batch item (same number of items).

    Returns:
        ``[Tq, H, Cv]``.

    Raises:
        ValueError: item counts or totals that do not match, or an item with queries but no keys.
    """
    if len(q_seqlens) != len(kv_seqlens):
        raise ValueError(f"{len(q_seqlens)} query items but {len(kv_seqlens)} key items")
    if sum(q_seqlens) != q.shape[0] or sum(kv_seqlens) != k.shape[0] or k.shape[0] != v.shape[0]:
        raise ValueError("sequence lengths do not add up to the packed row counts")
    n = len(q_seqlens)
    if n and len(set(q_seqlens)) == 1 and len(set(kv_seqlens)) == 1 and kv_seqlens[0] > 0:
        lq, lk = q_seqlens[0], kv_seqlens[0]
        out = dense_attention(
            q.reshape(n, lq, *q.shape[1:]),
            k.reshape(n, lk, *k.shape[1:]),
            v.reshape(n, lk, *v.shape[1:]),
        )
        return out.reshape(n * lq, *out.shape[2:])
    pieces = []
    q_start = k_start = 0
    for lq, lk in zip(q_seqlens, kv_seqlens, strict=True):
        if lq and not lk:
            raise ValueError("a batch item has queries but no keys")
        if lq:
            qi = q[q_start : q_start + lq].unsqueeze(0)
            ki = k[k_start : k_start + lk].unsqueeze(0)
            vi = v[k_start : k_start + lk].unsqueeze(0)
            pieces.append(dense_attention(qi, ki, vi)[0])
        q_start += lq
        k_start += lk
    if not pieces:
        return q.new_zeros((0, q.shape[1], v.shape[-1]))
    return torch.cat(pieces, dim=0)


# -- modules ------------------------------------------------------------------------------------
class MultiHeadRMSNorm(nn.Module):
    """Per-head RMS normalisation of queries/keys: ``normalize(x) * gamma * sqrt(dim)``.

    Computed in ``float32`` (``gamma`` is never down-cast by the flows' dtype conversion) and cast back
    to the input dtype. ``F.normalize`` divides by ``max(||x||, 1e-12)``.

    Args:
        dim: channels per head. heads: number of heads (``gamma`` is ``[heads, dim]``).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(heads, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., heads, dim]`` → same shape and dtype."""
        return (F.normalize(x.float(), dim=-1) * self.gamma * self.scale).to(x.dtype)


class _AttentionProjections(nn.Module):
    """The projections shared by the dense and sparse attention modules (state_dict layout:
    ``to_qkv`` for self-attention, ``to_q``/``to_kv`` for cross-attention, optional
    ``q_rms_norm``/``k_rms_norm``, ``to_out``)."""

    def __init__(
        self,
        channels: int,
        num_heads: int,
        ctx_channels: int | None,
        type: Literal["self", "cross"],
        qkv_bias: bool,
        use_rope: bool,
        qk_rms_norm: bool,
    ) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
        if type not in ("self", "cross"):
            raise ValueError(f"attention type must be 'self' or 'cross', got {type!r}")
        if type == "cross" and use_rope:
            raise ValueError("RoPE is only used in self-attention")
        self.channels = channels
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.ctx_channels = ctx_channels if ctx_channels is not None else channels
        self._type = type
        self.use_rope = use_rope
        self.qk_rms_norm = qk_rms_norm
        if type == "self":
            self.to_qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        else:
            self.to_q = nn.Linear(channels, channels, bias=qkv_bias)
            self.to_kv = nn.Linear(self.ctx_channels, 2 * channels, bias=qkv_bias)
        if qk_rms_norm:
            self.q_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
            self.k_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
        self.to_out = nn.Linear(channels, channels)

    def _heads(self, x: torch.Tensor, groups: int | None = None) -> torch.Tensor:
        """``[..., groups * C]`` → ``[..., groups, H, head_dim]`` (or ``[..., H, head_dim]``)."""
        if groups is None:
            return x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)
        return x.reshape(*x.shape[:-1], groups, self.num_heads, self.head_dim)

    def _normed(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.qk_rms_norm:
            q = self.q_rms_norm(q)
            k = self.k_rms_norm(k)
        return q, k


class MultiHeadAttention(_AttentionProjections):
    """Dense multi-head self- or cross-attention (the sparse-structure flow's attention).

    Args:
        channels: model width ``C`` (``num_heads * head_dim``).
        num_heads: attention heads.
        ctx_channels: context width for cross-attention (default ``channels``).
        type: ``"self"`` or ``"cross"``.
        qkv_bias: bias on the q/k/v projections (the output projection always has one).
        use_rope: rotate q/k by the ``phases`` given to :meth:`forward` (self-attention only).
        qk_rms_norm: per-head RMS norm of q and k (before RoPE).

    Raises:
        ValueError: ``channels`` not divisible by ``num_heads``, unknown ``type``, RoPE on cross.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        ctx_channels: int | None = None,
        type: Literal["self", "cross"] = "self",
        qkv_bias: bool = True,
        use_rope: bool = False,
        qk_rms_norm: bool = False,
    ) -> None:
        super().__init__(channels, num_heads, ctx_channels, type, qkv_bias, use_rope, qk_rms_norm)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        phases: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend.

        Args:
            x: ``[B, L, C]`` tokens.
            context: ``[B, Lc, ctx_channels]`` (cross-attention only).
            phases: ``complex64 [L, head_dim // 2]`` RoPE rotations (see :func:`rope_phases`).

        Returns:
            ``[B, L, C]``.
        """
        b, length, _ = x.shape
        if self._type == "self":
            q, k, v = self._heads(self.to_qkv(x), 3).unbind(dim=2)
            q, k = self._normed(q, k)
            if self.use_rope:
                if phases is None:
                    raise ValueError("RoPE attention needs phases")
                q = apply_rope(q, phases)
                k = apply_rope(k, phases)
        else:
            if context is None:
                raise ValueError("cross-attention needs a context")
            q = self._heads(self.to_q(x))
            k, v = self._heads(self.to_kv(context), 2).unbind(dim=2)
            q, k = self._normed(q, k)
        out = dense_attention(q, k, v)
        return self.to_out(out.reshape(b, length, -1))


class SparseMultiHeadAttention(_AttentionProjections):
    """Multi-head attention over a :class:`SparseTensor` (the structured-latent flow's attention).

    Self-attention is full attention among the voxels of each batch item (variable length, see
    :func:`varlen_attention`); cross-attention lets every voxel attend to its item's context tokens.
    With ``use_rope`` the voxel coordinates ``coords[:, 1:]`` (x, y, z) drive 3D RoPE; the phases are
    cached in ``x.cache`` (shared by all blocks, since ``replace`` keeps the cache).

    Args: as :class:`MultiHeadAttention`, plus ``rope_freq`` ``(scale, base)`` of the RoPE frequencies.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        ctx_channels: int | None = None,
        type: Literal["self", "cross"] = "self",
        qkv_bias: bool = True,
        use_rope: bool = False,
        rope_freq: tuple[float, float] = (1.0, 10000.0),
        qk_rms_norm: bool = False,
    ) -> None:
        super().__init__(channels, num_heads, ctx_channels, type, qkv_bias, use_rope, qk_rms_norm)
        self.rope_freq = (float(rope_freq[0]), float(rope_freq[1]))

    def _phases(self, x: SparseTensor) -> torch.Tensor:
        key = ("rope_phases", 3, self.rope_freq, self.head_dim)
        cached = x.cache.get(key)
        if cached is None:
            cached = rope_phases(x.coords[:, 1:], self.head_dim, self.rope_freq)
            x.cache[key] = cached
        return cached

    def forward(self, x: SparseTensor, context: Context | None = None) -> SparseTensor:
        """Attend.

        Args:
            x: sparse tokens, ``feats [N, C]``.
            context: cross-attention only: dense ``[B, Lc, ctx_channels]`` or a list of
                ``[L_b, ctx_channels]`` (one per batch item, lengths may differ).

        Returns:
            a :class:`SparseTensor` on ``x``'s coordinates with ``feats [N, C]``.
        """
        seqlens = x.seqlens
        if self._type == "self":
            q, k, v = self._heads(self.to_qkv(x.feats), 3).unbind(dim=1)
            q, k = self._normed(q, k)
            if self.use_rope:
                phases = self._phases(x)
                q = apply_rope(q, phases)
                k = apply_rope(k, phases)
            out = varlen_attention(q, k, v, seqlens, seqlens)
        else:
            if context is None:
                raise ValueError("cross-attention needs a context")
            if isinstance(context, torch.Tensor):
                kv_seqlens = [context.shape[1]] * context.shape[0]
                ctx = context.reshape(-1, context.shape[-1])
            else:
                kv_seqlens = [c.shape[0] for c in context]
                ctx = torch.cat(list(context), dim=0)
            q = self._heads(self.to_q(x.feats))
            k, v = self._heads(self.to_kv(ctx), 2).unbind(dim=1)
            q, k = self._normed(q, k)
            out = varlen_attention(q, k, v, seqlens, kv_seqlens)
        return x.replace(self.to_out(out.reshape(out.shape[0], -1)))
