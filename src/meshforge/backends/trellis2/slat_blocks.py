"""Residual blocks of the TRELLIS.2 sparse-convolutional structured-latent (SLat) decoders.

The decoder (TRELLIS.2, "Native and Compact Structured Latents for 3D Generation", 2025) is a
sparse U-Net half: ConvNeXt-style blocks (Liu et al., "A ConvNet for the 2020s", 2022) at each
resolution, and between resolutions an upsampling residual block that *predicts its own
subdivision* — 8 logits per voxel, one per child octant, the children with logit ``> 0`` are
created. Names, parameter attributes and ``nn.Sequential`` indices follow the reference modules
(``SparseResBlock3d``, ``SparseResBlockUpsample3d``, ``SparseResBlockC2S3d``,
``SparseConvNeXtBlock3d``) so the official checkpoints load with strict keys.

Mixed precision: with ``use_fp16`` the decoders cast conv / linear weights to float16; the
norms (:class:`~.sparse_nn.LayerNorm32`) keep float32 weights and compute in float32. Each block
runs in the dtype of its input features.

``use_checkpoint`` is accepted for signature parity; activation checkpointing is a training
device and is not used here (inference only).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import nn

from .sparse import SparseTensor
from .sparse_conv import SparseConv3d
from .sparse_nn import (
    LayerNorm32,
    SparseChannel2Spatial,
    SparseDownsample,
    SparseLinear,
    SparseSpatial2Channel,
    SparseUpsample,
    zero_module,
)

Subdivision = SparseTensor


def _norm_act(norm: nn.Module, x: SparseTensor) -> SparseTensor:
    """``silu(norm(feats))`` with the same coordinates."""
    return x.replace(F.silu(norm(x.feats)))


def _binarised(subdiv: SparseTensor | None) -> SparseTensor | None:
    return None if subdiv is None else subdiv.replace(subdiv.feats > 0)


class SparseConvNeXtBlock3d(nn.Module):
    """``x + MLP(LayerNorm(SubMConv3x3x3(x)))`` on a sparse tensor (same coordinates).

    Args:
        channels: ``C`` (input = output).
        mlp_ratio: hidden width of the MLP as a multiple of ``C``.
        use_checkpoint: unused (training only).

    Parameters: ``norm`` (LayerNorm, eps 1e-6), ``conv`` (3³ submanifold), ``mlp.0`` (C→rC),
    ``mlp.2`` (rC→C, zero-initialised).
    """

    def __init__(self, channels: int, mlp_ratio: float = 4.0, use_checkpoint: bool = False) -> None:
        super().__init__()
        self.channels = channels
        self.use_checkpoint = use_checkpoint
        hidden = int(channels * mlp_ratio)
        self.norm = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.conv = SparseConv3d(channels, channels, 3)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), zero_module(nn.Linear(hidden, channels)))

    def forward(self, x: SparseTensor) -> SparseTensor:
        h = self.conv(x)
        h = h.replace(self.mlp(self.norm(h.feats)))
        return h + x


class SparseResBlock3d(nn.Module):
    """Pre-norm residual block with two 3³ submanifold convolutions, optionally resampling by 2.

    ``out = conv2(silu(norm2(conv1(resample(silu(norm1(x))))))) + skip(resample(x))``; in
    ``"spatial2channel"`` mode ``conv1`` runs before the resampling (it produces the channels
    that are moved to / from space). When upsampling, the block predicts its subdivision
    (``to_subdiv``, 8 logits per voxel) and returns ``(out, logits)``.

    Args:
        channels: input channels ``C``.
        out_channels: output channels (default ``C``).
        downsample: halve the resolution.
        upsample: double the resolution (with a predicted subdivision).
        resample_mode: ``"nearest"`` (pool / copy) or ``"spatial2channel"``.
        use_checkpoint: unused (training only).

    Raises:
        ValueError: both ``downsample`` and ``upsample``, or an unknown mode.
    """

    def __init__(
        self,
        channels: int,
        out_channels: int | None = None,
        downsample: bool = False,
        upsample: bool = False,
        resample_mode: str = "nearest",
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if downsample and upsample:
            raise ValueError("a block cannot downsample and upsample at the same time")
        if resample_mode not in ("nearest", "spatial2channel"):
            raise ValueError(f"unknown resample_mode {resample_mode!r}")
        self.channels = channels
        self.out_channels = out_channels or channels
        self.downsample = downsample
        self.upsample = upsample
        self.resample_mode = resample_mode
        self.use_checkpoint = use_checkpoint
        out = self.out_channels

        self.norm1 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm2 = LayerNorm32(out, elementwise_affine=False, eps=1e-6)
        if resample_mode == "nearest":
            self.conv1 = SparseConv3d(channels, out, 3)
        elif downsample:
            self.conv1 = SparseConv3d(channels, out // 8, 3)
        else:
            self.conv1 = SparseConv3d(channels, out * 8, 3)
        self.conv2 = zero_module(SparseConv3d(out, out, 3))
        self.skip_connection: Callable[[SparseTensor], SparseTensor]
        if resample_mode == "nearest":
            self.skip_connection = SparseLinear(channels, out) if channels != out else nn.Identity()
        elif downsample:
            self.skip_connection = self._skip_group_mean
        else:
            self.skip_connection = self._skip_repeat
        self.updown: nn.Module | None = None
        self.to_subdiv: SparseLinear | None = None
        if downsample:
            self.updown = SparseDownsample(2) if resample_mode == "nearest" else SparseSpatial2Channel(2)
        elif upsample:
            self.to_subdiv = SparseLinear(channels, 8)
            self.updown = SparseUpsample(2) if resample_mode == "nearest" else SparseChannel2Spatial(2)

    def _skip_group_mean(self, x: SparseTensor) -> SparseTensor:
        group = self.channels * 8 // self.out_channels
        return x.replace(x.feats.reshape(x.feats.shape[0], self.out_channels, group).mean(dim=-1))

    def _skip_repeat(self, x: SparseTensor) -> SparseTensor:
        return x.replace(x.feats.repeat_interleave(self.out_channels // (self.channels // 8), dim=1))

    def _resample(self, x: SparseTensor, subdiv: SparseTensor | None) -> SparseTensor:
        if self.updown is None:
            return x
        if self.downsample:
            return self.updown(x)
        return self.updown(x, _binarised(subdiv))

    def forward(self, x: SparseTensor) -> SparseTensor | tuple[SparseTensor, Subdivision]:
        subdiv = self.to_subdiv(x) if self.to_subdiv is not None else None
        h = _norm_act(self.norm1, x)
        if self.resample_mode == "spatial2channel":
            h = self.conv1(h)
        h = self._resample(h, subdiv)
        x = self._resample(x, subdiv)
        if self.resample_mode == "nearest":
            h = self.conv1(h)
        h = self.conv2(_norm_act(self.norm2, h))
        h = h + self.skip_connection(x)
        if subdiv is not None:
            return h, subdiv
        return h


class _UpsampleResBlock(nn.Module):
    """Shared body of the two upsampling residual blocks (predicted or guided subdivision)."""

    conv1: SparseConv3d
    conv2: SparseConv3d
    to_subdiv: SparseLinear
    updown: nn.Module
    channels: int
    out_channels: int
    pred_subdiv: bool
    conv_before_resample: bool

    def _init_common(self, channels: int, out_channels: int | None, use_checkpoint: bool, pred_subdiv: bool) -> None:
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_checkpoint = use_checkpoint
        self.pred_subdiv = pred_subdiv
        self.norm1 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm2 = LayerNorm32(self.out_channels, elementwise_affine=False, eps=1e-6)

    def _skip(self, x: SparseTensor) -> SparseTensor:
        raise NotImplementedError

    def forward(
        self, x: SparseTensor, subdiv: SparseTensor | None = None, force: SparseTensor | None = None
    ) -> SparseTensor | tuple[SparseTensor, Subdivision]:
        """Upsample ``x`` by 2.

        Args:
            x: feats ``[N, C]``.
            subdiv: guide subdivision (``[N, 8]`` logits, ``> 0`` = keep) for blocks built with
                ``pred_subdiv=False``; ignored when the block predicts its own.
            force: a predicting block's *teacher forcing*: resample with this subdivision
                (``[N, 8]`` logits or booleans, row-aligned with ``x``) instead of the predicted one,
                which is still returned — to compare a decoder stage by stage with a reference whose
                near-zero logits came out with the other sign.

        Returns:
            the upsampled tensor (children in parent order, then sub-index), plus the predicted
            logits ``SparseTensor [N, 8]`` on ``x``'s coordinates when ``pred_subdiv``.
        """
        predicted = None
        if self.pred_subdiv:
            predicted = subdiv = self.to_subdiv(x)
            if force is not None:
                subdiv = force
        h = _norm_act(self.norm1, x)
        if self.conv_before_resample:
            h = self.conv1(h)
        mask = _binarised(subdiv)
        h = self.updown(h, mask)
        x = self.updown(x, mask)
        if not self.conv_before_resample:
            h = self.conv1(h)
        h = self.conv2(_norm_act(self.norm2, h))
        h = h + self._skip(x)
        if predicted is not None:
            return h, predicted
        return h


class SparseResBlockUpsample3d(_UpsampleResBlock):
    """Residual block upsampling by 2 with nearest-neighbour copies to the kept children.

    Args:
        channels: input channels ``C``.
        out_channels: output channels (default ``C``).
        use_checkpoint: unused (training only).
        pred_subdiv: predict the subdivision (``to_subdiv``, C→8) instead of being guided.
    """

    conv_before_resample = False

    def __init__(
        self, channels: int, out_channels: int | None = None, use_checkpoint: bool = False, pred_subdiv: bool = True
    ) -> None:
        super().__init__()
        self._init_common(channels, out_channels, use_checkpoint, pred_subdiv)
        out = self.out_channels
        self.conv1 = SparseConv3d(channels, out, 3)
        self.conv2 = zero_module(SparseConv3d(out, out, 3))
        self.skip_connection = SparseLinear(channels, out) if channels != out else nn.Identity()
        if pred_subdiv:
            self.to_subdiv = SparseLinear(channels, 8)
        self.updown = SparseUpsample(2)

    def _skip(self, x: SparseTensor) -> SparseTensor:
        return self.skip_connection(x)


class SparseResBlockC2S3d(_UpsampleResBlock):
    """Residual block upsampling by 2 through channel-to-space (depth-to-space) rearrangement.

    ``conv1`` produces ``8·C_out`` channels, which :class:`~.sparse_nn.SparseChannel2Spatial`
    distributes over the kept children; the skip path moves ``C/8`` channels per child and
    repeats each ``C_out / (C/8)`` times.

    Args:
        channels: input channels ``C`` (a multiple of 8).
        out_channels: output channels (default ``C``).
        use_checkpoint: unused (training only).
        pred_subdiv: predict the subdivision (``to_subdiv``, C→8) instead of being guided.
    """

    conv_before_resample = True

    def __init__(
        self, channels: int, out_channels: int | None = None, use_checkpoint: bool = False, pred_subdiv: bool = True
    ) -> None:
        super().__init__()
        self._init_common(channels, out_channels, use_checkpoint, pred_subdiv)
        out = self.out_channels
        self.conv1 = SparseConv3d(channels, out * 8, 3)
        self.conv2 = zero_module(SparseConv3d(out, out, 3))
        if pred_subdiv:
            self.to_subdiv = SparseLinear(channels, 8)
        self.updown = SparseChannel2Spatial(2)

    def _skip(self, x: SparseTensor) -> SparseTensor:
        return x.replace(x.feats.repeat_interleave(self.out_channels // (self.channels // 8), dim=1))


BLOCK_TYPES: dict[str, type[nn.Module]] = {
    "SparseConvNeXtBlock3d": SparseConvNeXtBlock3d,
    "SparseResBlock3d": SparseResBlock3d,
}
UP_BLOCK_TYPES: dict[str, type[nn.Module]] = {
    "SparseResBlockUpsample3d": SparseResBlockUpsample3d,
    "SparseResBlockC2S3d": SparseResBlockC2S3d,
}
