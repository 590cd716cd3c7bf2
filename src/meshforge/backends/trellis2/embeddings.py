"""Timestep and absolute-position embeddings of the TRELLIS.2 flow transformers.

Sources: sinusoidal timestep embedding of DiT (Peebles & Xie 2023, after GLIDE / "Attention Is All
You Need"); TRELLIS (Xiang et al. 2024) and TRELLIS.2 (2025) use them unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TimestepEmbedder", "sincos_position_embedding", "timestep_frequency_embedding"]


def timestep_frequency_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) timesteps, ``float32 [B, dim]``.

    ``[cos(t * w_0) … cos(t * w_{h-1}), sin(t * w_0) … sin(t * w_{h-1})]`` with ``h = dim // 2`` and
    ``w_j = exp(-ln(max_period) * j / h)``; a zero column is appended when ``dim`` is odd.

    Args:
        t: ``[B]`` timesteps (TRELLIS.2 feeds ``1000 * t`` for flow time ``t`` in ``[0, 1]``).
        dim: output width.
        max_period: the longest period.
    """
    half = dim // 2
    w = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half).to(t.device)
    angles = t[:, None].float() * w[None]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Timestep → ``hidden_size`` vector: sinusoidal features then ``Linear → SiLU → Linear``.

    State dict: ``mlp.0.{weight,bias}``, ``mlp.2.{weight,bias}``. Runs in the dtype of its weights
    (``float32`` in the flows; it is outside the blocks that ``dtype`` converts).
    """

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t [B]`` → ``[B, hidden_size]``."""
        return self.mlp(timestep_frequency_embedding(t, self.frequency_embedding_size))


def sincos_position_embedding(coords: torch.Tensor, channels: int) -> torch.Tensor:
    """Absolute sinusoidal embedding of integer positions, ``float32 [N, channels]`` ("ape").

    Per axis ``a`` of ``coords [N, D]``: ``[sin(c_a * w_0) … sin(c_a * w_{f-1}), cos(c_a * w_0) …]``
    with ``f = channels // D // 2`` and ``w_j = 1 / 10000 ** (j / f)``; the axes are concatenated in
    order and zero-padded to ``channels``.
    """
    n, d = coords.shape
    f = channels // d // 2
    w = (1.0 / (10000 ** (torch.arange(f, dtype=torch.float32) / f))).to(coords.device)
    angles = torch.outer(coords.reshape(-1).to(torch.float32), w)
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(n, -1)
    if emb.shape[1] < channels:
        emb = torch.cat([emb, torch.zeros(n, channels - emb.shape[1], device=emb.device)], dim=-1)
    return emb
