"""Sparse building blocks of the TRELLIS.2 decoders: norms, linear, activations, 2× resampling.

Everything works on :class:`~meshforge.backends.trellis2.sparse.SparseTensor` (``feats [N, C]``,
``coords int32 [N, 4]`` rows ``(b, x, y, z)``). Parameter names match the reference modules so
that the official checkpoints load with strict keys.

Resampling by 2 (TRELLIS.2, "Native and Compact Structured Latents for 3D Generation", 2025,
sparse-convolutional VAE with predicted subdivision):

- a parent voxel ``p`` owns the 8 children ``2p + (dx, dy, dz)``, ``dx, dy, dz ∈ {0, 1}``; the
  child's *sub-index* is ``dx + 2·dy + 4·dz`` (x fastest);
- a *subdivision mask* is ``bool [N, 8]`` per parent row (column = sub-index): the children
  that exist after upsampling;
- **row order produced by upsampling** (:class:`SparseChannel2Spatial`,
  :class:`SparseUpsample` with a mask): parents in their input row order, and within one parent
  its kept children by increasing sub-index. This is the order the reference produces
  (``repeat_interleave`` over parents + ``nonzero`` over the mask), so decoder outputs can be
  compared row by row with the reference;
- **row order produced by downsampling** (:class:`SparseSpatial2Channel`,
  :class:`SparseDownsample`): parents sorted by ``(b, x, y, z)`` (``torch.unique``), as the
  reference does.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

from .sparse import SparseTensor
from .sparse_conv import SparseConv3d

SUBDIVISION_CACHE_KEY = "channel2spatial"


# -- dtype helpers ---------------------------------------------------------------------------------
def manual_cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast to ``dtype`` unless autocast is active (the reference's mixed-precision rule)."""
    if not torch.is_autocast_enabled():
        return tensor.to(dtype)
    return tensor


MIXED_PRECISION_MODULES: tuple[type[nn.Module], ...] = (nn.Conv3d, nn.Linear, SparseConv3d)


def convert_module_to_f16(module: nn.Module) -> None:
    """Cast the parameters of convolution / linear layers to float16 (norms stay float32).

    Apply with ``model.blocks.apply(convert_module_to_f16)`` as the reference does for its
    ``use_fp16`` models; norm layers keep float32 weights and compute in float32.
    """
    if isinstance(module, MIXED_PRECISION_MODULES):
        for p in module.parameters():
            p.data = p.data.half()


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def zero_module(module: ModuleT) -> ModuleT:
    """Zero all parameters of ``module`` in place and return it (zero-initialised residuals)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


# -- norms -----------------------------------------------------------------------------------------
class LayerNorm32(nn.LayerNorm):
    """``nn.LayerNorm`` computed in float32, result cast back to the input dtype.

    Input ``[..., C]`` (the decoders apply it to ``SparseTensor.feats``, one row at a time).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        return manual_cast(super().forward(manual_cast(x, torch.float32)), dtype)


class SparseGroupNorm(nn.GroupNorm):
    """Group norm over the rows of each batch item separately (statistics per item and group).

    ``feats [N, C]`` → ``[N, C]``; each batch item is normalised as a ``[1, C, L_b]`` tensor.
    """

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        out = torch.zeros_like(x.feats)
        for rows in x.layout:
            item = x.feats[rows].t().unsqueeze(0)  # [1, C, L]
            out[rows] = super().forward(item).squeeze(0).t()
        return x.replace(out)


class SparseGroupNorm32(SparseGroupNorm):
    """:class:`SparseGroupNorm` computed in float32, cast back to the input dtype."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        dtype = x.dtype
        out = super().forward(x.replace(manual_cast(x.feats, torch.float32)))
        return out.replace(manual_cast(out.feats, dtype))


# -- pointwise layers ------------------------------------------------------------------------------
class SparseLinear(nn.Linear):
    """``nn.Linear`` on ``feats [N, C_in]`` → ``[N, C_out]`` (same coordinates and cache)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(super().forward(x.feats))


class SparseSiLU(nn.SiLU):
    """SiLU on the features."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(super().forward(x.feats))


class SparseGELU(nn.GELU):
    """GELU on the features (``approximate`` as for ``nn.GELU``: ``"none"`` exact, ``"tanh"``)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(super().forward(x.feats))


class SparseActivation(nn.Module):
    """Any feature-wise activation module applied to ``feats``."""

    def __init__(self, activation: nn.Module) -> None:
        super().__init__()
        self.activation = activation

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(self.activation(x.feats))


# -- 2x resampling ---------------------------------------------------------------------------------
def _layout_from(coords: torch.Tensor, batch_size: int) -> list[slice]:
    """Row slices of batch items ``0 … batch_size-1`` (empty items included) in grouped coords."""
    batch = coords[:, 0].contiguous()
    bounds = torch.searchsorted(batch, torch.arange(batch_size + 1, device=batch.device, dtype=batch.dtype))
    edges = bounds.tolist()
    return [slice(edges[i], edges[i + 1]) for i in range(batch_size)]


def _new_tensor(feats: torch.Tensor, coords: torch.Tensor, shape: tuple[int, ...], batch_size: int) -> SparseTensor:
    return SparseTensor(feats, coords, shape, _layout_from(coords, batch_size))  # type: ignore[arg-type]


def _children_of(
    coords: torch.Tensor, mask: torch.Tensor, factor: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Children coordinates of masked parents; parent order, then increasing sub-index.

    Returns ``(child_coords int32 [M, 4], parent_row int64 [M], sub_index int64 [M])``.
    """
    dims = coords.shape[1] - 1
    if mask.shape != (coords.shape[0], factor**dims):
        raise ValueError(f"subdivision mask must be [{coords.shape[0]}, {factor**dims}], got {tuple(mask.shape)}")
    parent_row, sub_index = mask.nonzero(as_tuple=True)  # row-major: parent order, then sub-index
    child = coords[parent_row].clone()
    child[:, 1:] *= factor
    for axis in range(dims):
        child[:, axis + 1] += (sub_index // factor**axis % factor).to(child.dtype)
    return child, parent_row, sub_index


def _parent_codes(x: SparseTensor, factor: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Parent coordinates (sorted by (b, x, y, z)), each row's parent and sub-index."""
    dims = x.coords.shape[1] - 1
    c = x.coords.long()
    parent = c.clone()
    parent[:, 1:] = torch.div(c[:, 1:], factor, rounding_mode="floor")
    sub_index = sum((c[:, axis + 1] % factor) * factor**axis for axis in range(dims))
    extent = [(s + factor - 1) // factor for s in x.spatial_shape]
    extent = [max(e, int(parent[:, i + 1].max()) + 1 if c.shape[0] else 1) for i, e in enumerate(extent)]
    code = parent[:, 0]
    for axis in range(dims):
        code = code * extent[axis] + parent[:, axis + 1]
    unique_code, parent_row = torch.unique(code, return_inverse=True)
    new_coords = torch.empty((unique_code.shape[0], dims + 1), dtype=torch.int64, device=c.device)
    rest = unique_code
    for axis in reversed(range(dims)):
        new_coords[:, axis + 1] = rest % extent[axis]
        rest = rest // extent[axis]
    new_coords[:, 0] = rest
    return new_coords.to(x.coords.dtype), parent_row, torch.as_tensor(sub_index), extent


def _mask_of(subdivision: SparseTensor | torch.Tensor) -> torch.Tensor:
    feats = subdivision.feats if isinstance(subdivision, SparseTensor) else subdivision
    return feats if feats.dtype == torch.bool else feats > 0


class SparseChannel2Spatial(nn.Module):
    """Upsample by ``factor`` by moving channel blocks to child voxels (depth-to-space).

    Input feats ``[N, C·factor³]``; channel block ``j`` (channels ``j·C … (j+1)·C``) becomes the
    feature of child sub-index ``j``. Only the children selected by ``subdivision`` (``bool
    [N, factor³]``, or logits thresholded at ``> 0``) are created; output feats ``[M, C]`` in
    parent order, then increasing sub-index. Without ``subdivision`` the mapping cached by a
    paired :class:`SparseSpatial2Channel` is used (the reference prefers that cache when present).

    Raises:
        ValueError: no subdivision and no cached mapping.
    """

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: SparseTensor, subdivision: SparseTensor | torch.Tensor | None = None) -> SparseTensor:
        vol = self.factor ** (x.coords.shape[1] - 1)
        cached = x.cache.get((SUBDIVISION_CACHE_KEY, self.factor))
        if cached is not None:
            new_coords, parent_row, sub_index = cached
        elif subdivision is not None:
            new_coords, parent_row, sub_index = _children_of(x.coords, _mask_of(subdivision), self.factor)
        else:
            raise ValueError("channel2spatial needs a subdivision mask (or a paired spatial2channel cache)")
        flat = x.feats.reshape(x.feats.shape[0] * vol, -1)
        feats = flat[parent_row * vol + sub_index]
        shape = tuple(s * self.factor for s in x.spatial_shape)
        return _new_tensor(feats, new_coords, shape, x.batch_size)


class SparseSpatial2Channel(nn.Module):
    """Downsample by ``factor`` by stacking the children's features as channels (space-to-depth).

    Feats ``[N, C]`` → ``[P, C·factor³]`` on the parent cells sorted by ``(b, x, y, z)``; absent
    children contribute zeros. The output caches the inverse mapping for
    :class:`SparseChannel2Spatial`.
    """

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: SparseTensor) -> SparseTensor:
        vol = self.factor ** (x.coords.shape[1] - 1)
        new_coords, parent_row, sub_index, extent = _parent_codes(x, self.factor)
        feats = x.feats.new_zeros((new_coords.shape[0] * vol, x.feats.shape[1]))
        feats[parent_row * vol + sub_index] = x.feats
        out = _new_tensor(feats.reshape(new_coords.shape[0], -1), new_coords, tuple(extent), x.batch_size)
        out.cache[(SUBDIVISION_CACHE_KEY, self.factor)] = (x.coords, parent_row, sub_index)
        return out


class SparseDownsample(nn.Module):
    """Downsample by ``factor`` with mean (or max) pooling over each parent's present children.

    Feats ``[N, C]`` → ``[P, C]`` on the parent cells sorted by ``(b, x, y, z)``.
    """

    def __init__(self, factor: int, mode: str = "mean") -> None:
        super().__init__()
        if mode not in ("mean", "max"):
            raise ValueError(f"mode must be 'mean' or 'max', got {mode!r}")
        self.factor = factor
        self.mode = mode

    def forward(self, x: SparseTensor) -> SparseTensor:
        new_coords, parent_row, _, extent = _parent_codes(x, self.factor)
        feats = torch.scatter_reduce(
            x.feats.new_zeros((new_coords.shape[0], x.feats.shape[1])),
            0,
            parent_row[:, None].expand(-1, x.feats.shape[1]),
            x.feats,
            reduce="mean" if self.mode == "mean" else "amax",
            include_self=False,
        )
        out = _new_tensor(feats, new_coords, tuple(extent), x.batch_size)
        out.cache[("upsample", self.factor)] = (x.coords, parent_row)
        return out


class SparseUpsample(nn.Module):
    """Nearest-neighbour upsampling by ``factor``: each kept child copies its parent's features.

    With ``subdivision`` (``bool [N, factor³]`` or logits ``> 0``): children in parent order,
    then increasing sub-index. Without it, the coordinates cached by a paired
    :class:`SparseDownsample` are restored (the reference prefers that cache when present).

    Raises:
        ValueError: no subdivision and no cached mapping.
    """

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: SparseTensor, subdivision: SparseTensor | torch.Tensor | None = None) -> SparseTensor:
        cached = x.cache.get(("upsample", self.factor))
        if cached is not None:
            new_coords, parent_row = cached
        elif subdivision is not None:
            new_coords, parent_row, _ = _children_of(x.coords, _mask_of(subdivision), self.factor)
        else:
            raise ValueError("upsampling needs a subdivision mask (or a paired downsample cache)")
        shape = tuple(s * self.factor for s in x.spatial_shape)
        return _new_tensor(x.feats[parent_row], new_coords, shape, x.batch_size)
