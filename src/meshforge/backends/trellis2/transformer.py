"""AdaLN-modulated transformer blocks of the TRELLIS.2 flows (dense and sparse).

One block is ``self-attention → cross-attention to the image tokens → MLP``, each a residual
branch. Self-attention and MLP are modulated by the timestep (DiT's adaLN: ``norm(x) * (1 + scale)
+ shift`` before, ``* gate`` after); cross-attention uses an affine LayerNorm and no modulation.
With ``share_mod`` the six modulation vectors come from one model-level projection of the timestep
embedding plus a learned per-block offset ``modulation``; otherwise each block has its own
``adaLN_modulation = Sequential(SiLU, Linear(C, 6C))``.

Precision: LayerNorms and the q/k RMS norms compute in ``float32`` and cast back; the linear layers
run in whatever dtype their weights were converted to (see ``flows.py``).

Sources: DiT (Peebles & Xie 2023), TRELLIS (Xiang et al. 2024), TRELLIS.2 (2025).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import Context, MultiHeadAttention, SparseMultiHeadAttention
from .sparse import SparseTensor

__all__ = [
    "FeedForwardNet",
    "LayerNorm32",
    "ModulatedSparseTransformerCrossBlock",
    "ModulatedTransformerCrossBlock",
    "cast_unless_autocast",
]


def cast_unless_autocast(x: Any, dtype: torch.dtype) -> Any:
    """``x.type(dtype)`` unless autocast is on (then autocast decides); ``x`` a tensor or SparseTensor."""
    if torch.is_autocast_enabled():
        return x
    return x.type(dtype)


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in ``float32`` and cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(cast_unless_autocast(x, torch.float32))
        return cast_unless_autocast(out, x.dtype)


class FeedForwardNet(nn.Module):
    """``Linear(C, int(C * mlp_ratio)) → GELU(tanh) → Linear(…, C)``; state dict ``mlp.0``, ``mlp.2``."""

    def __init__(self, channels: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.GELU(approximate="tanh"),
            nn.Linear(hidden, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., C]`` → ``[..., C]``."""
        return self.mlp(x)


class _ModulatedCrossBlockBase(nn.Module):
    """Norms, MLP and modulation parameters shared by the dense and sparse blocks."""

    def __init__(self, channels: int, mlp_ratio: float, use_checkpoint: bool, share_mod: bool) -> None:
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.share_mod = share_mod
        self.norm1 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.norm2 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm3 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)

    def _init_modulation(self, channels: int) -> None:
        if self.share_mod:
            self.modulation = nn.Parameter(torch.randn(6 * channels) / channels**0.5)
        else:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 6 * channels, bias=True))

    def _modulation_terms(self, mod: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp)``, each ``[B, C]``.

        With ``share_mod``, ``mod`` is already the model-level ``[B, 6C]`` projection; the block adds
        its ``float32`` offset and casts the sum back to ``mod.dtype``.
        """
        if self.share_mod:
            terms = (self.modulation + mod).type(mod.dtype)
        else:
            terms = self.adaLN_modulation(mod)
        return tuple(terms.chunk(6, dim=1))


class ModulatedTransformerCrossBlock(_ModulatedCrossBlockBase):
    """Dense adaLN block over ``[B, L, C]`` tokens (sparse-structure flow).

    Args:
        channels: model width ``C``. ctx_channels: image-token width. num_heads: heads.
        mlp_ratio: MLP hidden width factor. use_checkpoint: gradient checkpointing (training only).
        use_rope: 3D RoPE in self-attention (phases passed to :meth:`forward`).
        rope_freq: accepted for signature parity; the dense flow builds its phases itself.
        qk_rms_norm / qk_rms_norm_cross: q/k RMS norm in self- / cross-attention.
        qkv_bias: bias on q/k/v projections. share_mod: see module doc.
    """

    def __init__(
        self,
        channels: int,
        ctx_channels: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        use_checkpoint: bool = False,
        use_rope: bool = False,
        rope_freq: tuple[float, float] = (1.0, 10000.0),
        qk_rms_norm: bool = False,
        qk_rms_norm_cross: bool = False,
        qkv_bias: bool = True,
        share_mod: bool = False,
    ) -> None:
        super().__init__(channels, mlp_ratio, use_checkpoint, share_mod)
        self.self_attn = MultiHeadAttention(
            channels, num_heads, type="self", qkv_bias=qkv_bias, use_rope=use_rope, qk_rms_norm=qk_rms_norm
        )
        self.cross_attn = MultiHeadAttention(
            channels,
            num_heads,
            ctx_channels=ctx_channels,
            type="cross",
            qkv_bias=qkv_bias,
            qk_rms_norm=qk_rms_norm_cross,
        )
        self.mlp = FeedForwardNet(channels, mlp_ratio=mlp_ratio)
        self._init_modulation(channels)

    def _forward(
        self, x: torch.Tensor, mod: torch.Tensor, context: torch.Tensor, phases: torch.Tensor | None
    ) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self._modulation_terms(mod)
        h = self.norm1(x) * (1 + scale_a.unsqueeze(1)) + shift_a.unsqueeze(1)
        x = x + self.self_attn(h, phases=phases) * gate_a.unsqueeze(1)
        x = x + self.cross_attn(self.norm2(x), context)
        h = self.norm3(x) * (1 + scale_m.unsqueeze(1)) + shift_m.unsqueeze(1)
        return x + self.mlp(h) * gate_m.unsqueeze(1)

    def forward(
        self, x: torch.Tensor, mod: torch.Tensor, context: torch.Tensor, phases: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x [B, L, C]``, ``mod [B, C]`` (or ``[B, 6C]`` with share_mod), ``context [B, Lc, Dc]``,
        ``phases complex64 [L, head_dim/2]`` → ``[B, L, C]``."""
        if self.use_checkpoint:
            return checkpoint(self._forward, x, mod, context, phases, use_reentrant=False)
        return self._forward(x, mod, context, phases)


class ModulatedSparseTransformerCrossBlock(_ModulatedCrossBlockBase):
    """Sparse adaLN block over a :class:`SparseTensor` (structured-latent flows).

    The per-item modulation vectors ``[B, C]`` are broadcast to the voxels of each batch item.
    Same arguments as :class:`ModulatedTransformerCrossBlock`; ``rope_freq`` sets the RoPE ladder.
    """

    def __init__(
        self,
        channels: int,
        ctx_channels: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        use_checkpoint: bool = False,
        use_rope: bool = False,
        rope_freq: tuple[float, float] = (1.0, 10000.0),
        qk_rms_norm: bool = False,
        qk_rms_norm_cross: bool = False,
        qkv_bias: bool = True,
        share_mod: bool = False,
    ) -> None:
        super().__init__(channels, mlp_ratio, use_checkpoint, share_mod)
        self.self_attn = SparseMultiHeadAttention(
            channels,
            num_heads,
            type="self",
            qkv_bias=qkv_bias,
            use_rope=use_rope,
            rope_freq=rope_freq,
            qk_rms_norm=qk_rms_norm,
        )
        self.cross_attn = SparseMultiHeadAttention(
            channels,
            num_heads,
            ctx_channels=ctx_channels,
            type="cross",
            qkv_bias=qkv_bias,
            qk_rms_norm=qk_rms_norm_cross,
        )
        self.mlp = FeedForwardNet(channels, mlp_ratio=mlp_ratio)
        self._init_modulation(channels)

    def _forward(self, x: SparseTensor, mod: torch.Tensor, context: Context) -> SparseTensor:
        terms = self._modulation_terms(mod)
        if x.batch_size > 1:  # one row per voxel: its batch item's modulation
            rows = x.batch_index
            terms = tuple(t[rows] for t in terms)
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = terms
        h = x.replace(self.norm1(x.feats) * (1 + scale_a) + shift_a)
        feats = x.feats + self.self_attn(h).feats * gate_a
        feats = feats + self.cross_attn(x.replace(self.norm2(feats)), context).feats
        h_feats = self.mlp(self.norm3(feats) * (1 + scale_m) + shift_m)
        return x.replace(feats + h_feats * gate_m)

    def forward(self, x: SparseTensor, mod: torch.Tensor, context: Context) -> SparseTensor:
        """``x`` with ``feats [N, C]``, ``mod [B, C]`` (or ``[B, 6C]`` with share_mod), ``context``
        dense ``[B, Lc, Dc]`` or a list of ``[L_b, Dc]`` → SparseTensor ``feats [N, C]``."""
        if self.use_checkpoint:
            return checkpoint(self._forward, x, mod, context, use_reentrant=False)
        return self._forward(x, mod, context)
