"""The sparse-structure decoder: a dense 3D conv net from the 16³ structure latent to occupancy.

TRELLIS (Xiang et al., "Structured 3D Latents for Scalable and Versatile 3D Generation", 2024,
Sec. 3.3, decoder 𝒟_S) compresses the occupancy of a 64³ grid into a ``[8, 16, 16, 16]`` latent;
TRELLIS.2 reuses TRELLIS's decoder (checkpoint ``ss_dec_conv3d_16l8_fp16``, args
``{"out_channels": 1, "latent_channels": 8, "num_res_blocks": 2, "num_res_blocks_middle": 2,
"channels": [512, 128, 32], "use_fp16": true}``). Occupied voxels are where the output logit is
``> 0``.

Layout: ``[B, C, X, Y, Z]`` (``nn.Conv3d``'s ``[B, C, D, H, W]`` with D=x, H=y, W=z). Parameter
names follow the reference (``input_layer``, ``middle_block.{i}``, ``blocks.{i}``,
``out_layer.{0,2}``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .sparse_nn import LayerNorm32, convert_module_to_f16, manual_cast, zero_module


class GroupNorm32(nn.GroupNorm):
    """``nn.GroupNorm`` computed in float32, cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        return manual_cast(super().forward(manual_cast(x, torch.float32)), dtype)


class ChannelLayerNorm32(LayerNorm32):
    """LayerNorm over the channel axis of ``[B, C, *spatial]`` (float32 compute)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ndim = x.dim()
        channels_last = x.permute(0, *range(2, ndim), 1).contiguous()
        out = super().forward(channels_last)
        return out.permute(0, ndim - 1, *range(1, ndim - 1)).contiguous()


def _norm(norm_type: str, channels: int) -> nn.Module:
    if norm_type == "group":
        return GroupNorm32(32, channels)
    if norm_type == "layer":
        return ChannelLayerNorm32(channels)
    raise ValueError(f"unknown norm_type {norm_type!r} (expected 'group' or 'layer')")


def pixel_shuffle_3d(x: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """Depth-to-space in 3D: ``[B, C·s³, X, Y, Z]`` → ``[B, C, s·X, s·Y, s·Z]``.

    Input channel ``c·s³ + i·s² + j·s + k`` becomes output ``(c, s·x + i, s·y + j, s·z + k)``.
    """
    b, c, sx, sy, sz = x.shape
    s = scale_factor
    out_c = c // s**3
    x = x.reshape(b, out_c, s, s, s, sx, sy, sz).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, out_c, sx * s, sy * s, sz * s)


class ResBlock3d(nn.Module):
    """Dense pre-norm residual block: ``conv2(silu(norm2(conv1(silu(norm1(x)))))) + skip(x)``."""

    def __init__(self, channels: int, out_channels: int | None = None, norm_type: str = "layer") -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.norm1 = _norm(norm_type, channels)
        self.norm2 = _norm(norm_type, self.out_channels)
        self.conv1 = nn.Conv3d(channels, self.out_channels, 3, padding=1)
        self.conv2 = zero_module(nn.Conv3d(self.out_channels, self.out_channels, 3, padding=1))
        self.skip_connection: nn.Module = (
            nn.Conv3d(channels, self.out_channels, 1) if channels != self.out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip_connection(x)


class UpsampleBlock3d(nn.Module):
    """2× upsampling: a 3³ conv to ``8·C_out`` channels + :func:`pixel_shuffle_3d` (``"conv"``),
    or nearest-neighbour interpolation (``"nearest"``, needs ``C_in == C_out``)."""

    def __init__(self, in_channels: int, out_channels: int, mode: str = "conv") -> None:
        super().__init__()
        if mode not in ("conv", "nearest"):
            raise ValueError(f"unknown upsample mode {mode!r}")
        if mode == "nearest" and in_channels != out_channels:
            raise ValueError("nearest upsampling needs in_channels == out_channels")
        self.in_channels = in_channels
        self.out_channels = out_channels
        if mode == "conv":
            self.conv = nn.Conv3d(in_channels, out_channels * 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "conv"):
            return pixel_shuffle_3d(self.conv(x), 2)
        return F.interpolate(x, scale_factor=2, mode="nearest")


class SparseStructureDecoder(nn.Module):
    """Dense decoder of the sparse-structure latent (reference: ``SparseStructureDecoder``).

    Args:
        out_channels: output channels (1: the occupancy logit).
        latent_channels: latent channels (8).
        num_res_blocks: residual blocks per resolution.
        channels: channels per resolution, coarse to fine (each step doubles the resolution).
        num_res_blocks_middle: residual blocks at the latent resolution before upsampling.
        norm_type: norm of ``out_layer``: ``"layer"`` (channel LayerNorm, eps 1e-5) or ``"group"``
            (32 groups). The residual blocks always use the channel LayerNorm, as in the reference.
        use_fp16: run ``middle_block`` and ``blocks`` in float16 (their conv weights in float16).

    Forward: ``[B, latent_channels, R, R, R]`` → ``[B, out_channels, R·2^(len(channels)-1), …]``
    in the input's dtype (the official decoder: ``[B, 8, 16³]`` → ``[B, 1, 64³]``).
    """

    def __init__(
        self,
        out_channels: int,
        latent_channels: int,
        num_res_blocks: int,
        channels: list[int],
        num_res_blocks_middle: int = 2,
        norm_type: str = "layer",
        use_fp16: bool = False,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.latent_channels = latent_channels
        self.num_res_blocks = num_res_blocks
        self.channels = channels
        self.num_res_blocks_middle = num_res_blocks_middle
        self.norm_type = norm_type
        self.use_fp16 = use_fp16
        self.dtype = torch.float16 if use_fp16 else torch.float32

        self.input_layer = nn.Conv3d(latent_channels, channels[0], 3, padding=1)
        self.middle_block = nn.Sequential(*[ResBlock3d(channels[0], channels[0]) for _ in range(num_res_blocks_middle)])
        self.blocks = nn.ModuleList()
        for level, ch in enumerate(channels):
            self.blocks.extend(ResBlock3d(ch, ch) for _ in range(num_res_blocks))
            if level < len(channels) - 1:
                self.blocks.append(UpsampleBlock3d(ch, channels[level + 1]))
        self.out_layer = nn.Sequential(
            _norm(norm_type, channels[-1]), nn.SiLU(), nn.Conv3d(channels[-1], out_channels, 3, padding=1)
        )
        if use_fp16:
            self.blocks.apply(convert_module_to_f16)
            self.middle_block.apply(convert_module_to_f16)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_layer(x).type(self.dtype)
        h = self.middle_block(h)
        for block in self.blocks:
            h = block(h)
        return self.out_layer(h.type(x.dtype))
