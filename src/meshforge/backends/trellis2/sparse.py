"""A sparse voxel tensor: features on the occupied cells of a 3D grid, batched.

This is the one carrier of sparse data in the TRELLIS.2 backend (structured latents, decoder
activations, PBR voxels). It is deliberately small: the convolution, attention and resampling
modules work on ``feats``/``coords`` and keep their per-tensor caches (neighbour maps, sequence
layouts) in ``cache``.

Layout (the convention of TRELLIS / TRELLIS.2 and of spconv / MinkowskiEngine):

- ``coords``: ``int32 [N, 4]`` rows ``(b, x, y, z)``, ``b`` the batch index; rows are grouped by
  batch (all rows of batch 0, then of batch 1, …), so each batch item is one contiguous slice.
- ``feats``: ``[N, C]`` (any float dtype), row ``i`` belongs to ``coords[i]``.
- ``layout``: ``list[slice]``, the rows of each batch item.
- ``spatial_shape``: the grid size ``(X, Y, Z)`` the coordinates live in (for resampling).

Sources: Xiang et al., "Structured 3D Latents for Scalable and Versatile 3D Generation" (TRELLIS,
2024) and "Native and Compact Structured Latents for 3D Generation" (TRELLIS.2, 2025).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class SparseTensor:
    """Features ``feats [N, C]`` at integer voxel coordinates ``coords int32 [N, 4]`` (b, x, y, z).

    Args:
        feats: ``[N, C]`` features.
        coords: ``int32 [N, 4]``, batch index first; rows of one batch item contiguous and the
            batch indices non-decreasing.
        spatial_shape: grid size ``(X, Y, Z)``; inferred as ``max(coords) + 1`` when omitted.
        layout: per-batch row slices; computed from ``coords[:, 0]`` when omitted.

    Raises:
        ValueError: shapes that do not match (``feats`` and ``coords`` row counts, ``coords`` not
            ``[N, 4]``).
    """

    def __init__(
        self,
        feats: torch.Tensor,
        coords: torch.Tensor,
        spatial_shape: tuple[int, int, int] | None = None,
        layout: list[slice] | None = None,
    ) -> None:
        if coords.ndim != 2 or coords.shape[1] != 4:
            raise ValueError(f"coords must be [N, 4] (b, x, y, z), got {tuple(coords.shape)}")
        if feats.shape[0] != coords.shape[0]:
            raise ValueError(f"feats has {feats.shape[0]} rows but coords has {coords.shape[0]}")
        self.feats = feats
        self.coords = coords
        if spatial_shape is None:
            if coords.shape[0]:
                spatial_shape = tuple(int(v) + 1 for v in coords[:, 1:].max(0).values.tolist())  # type: ignore[assignment]
            else:
                spatial_shape = (0, 0, 0)
        self.spatial_shape: tuple[int, int, int] = spatial_shape  # type: ignore[assignment]
        if layout is None:
            layout = _layout_of(coords)
        self.layout = layout
        self.cache: dict[Any, Any] = {}

    # -- shape ---------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return len(self.layout)

    @property
    def shape(self) -> torch.Size:
        """``(batch, C, …)`` as the reference reports it: batch size, then the feature shape."""
        return torch.Size([self.batch_size, *self.feats.shape[1:]])

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    @property
    def seqlens(self) -> list[int]:
        """Rows per batch item (the sequence lengths for variable-length attention)."""
        return [s.stop - s.start for s in self.layout]

    @property
    def batch_index(self) -> torch.Tensor:
        """``int64 [N]``: the batch item of each row."""
        return self.coords[:, 0].long()

    # -- new tensors on the same coordinates -----------------------------------------------------
    def replace(self, feats: torch.Tensor, coords: torch.Tensor | None = None) -> SparseTensor:
        """The same sparsity (and cache) with new features; with ``coords``, a new tensor."""
        if coords is None:
            out = SparseTensor(feats, self.coords, self.spatial_shape, self.layout)
            out.cache = self.cache
            return out
        return SparseTensor(feats, coords)

    def to(self, *args: Any, **kwargs: Any) -> SparseTensor:
        """``Tensor.to`` on the features (and the device move on the coordinates)."""
        feats = self.feats.to(*args, **kwargs)
        coords = self.coords.to(feats.device)
        out = SparseTensor(feats, coords, self.spatial_shape, self.layout)
        if coords is self.coords:
            out.cache = self.cache
        return out

    def float(self) -> SparseTensor:
        return self.replace(self.feats.float())

    def type(self, dtype: torch.dtype) -> SparseTensor:
        return self.replace(self.feats.to(dtype))

    def _elementwise(self, other: Any, op: Callable[[torch.Tensor, Any], torch.Tensor]) -> SparseTensor:
        if isinstance(other, SparseTensor):
            return self.replace(op(self.feats, other.feats))
        if (
            isinstance(other, torch.Tensor)
            and other.ndim >= 1
            and other.shape[0] == self.batch_size
            and other.ndim == self.feats.ndim
            and self.batch_size > 1
        ):
            # one row per batch item: broadcast it over that item's rows
            other = other[self.batch_index]
        return self.replace(op(self.feats, other))

    def __add__(self, other: Any) -> SparseTensor:
        return self._elementwise(other, torch.add)

    def __radd__(self, other: Any) -> SparseTensor:
        return self._elementwise(other, torch.add)

    def __sub__(self, other: Any) -> SparseTensor:
        return self._elementwise(other, torch.sub)

    def __rsub__(self, other: Any) -> SparseTensor:
        return self._elementwise(other, lambda a, b: b - a)

    def __mul__(self, other: Any) -> SparseTensor:
        return self._elementwise(other, torch.mul)

    def __rmul__(self, other: Any) -> SparseTensor:
        return self._elementwise(other, torch.mul)

    def __truediv__(self, other: Any) -> SparseTensor:
        return self._elementwise(other, torch.div)

    def __neg__(self) -> SparseTensor:
        return self.replace(-self.feats)

    def unbind(self) -> list[SparseTensor]:
        """One tensor per batch item (batch index reset to 0)."""
        out = []
        for s in self.layout:
            c = self.coords[s].clone()
            c[:, 0] = 0
            out.append(SparseTensor(self.feats[s], c, self.spatial_shape))
        return out

    def __repr__(self) -> str:
        return (
            f"SparseTensor(rows={self.feats.shape[0]}, channels={tuple(self.feats.shape[1:])}, "
            f"batch={self.batch_size}, spatial_shape={self.spatial_shape}, dtype={self.dtype})"
        )


def _layout_of(coords: torch.Tensor) -> list[slice]:
    if coords.shape[0] == 0:
        return [slice(0, 0)]
    b = coords[:, 0]
    if coords.shape[0] > 1 and bool((b[1:] < b[:-1]).any()):
        raise ValueError("coords must be grouped by batch index (non-decreasing b)")
    counts = torch.bincount(b.long()).tolist()
    layout, start = [], 0
    for n in counts:
        layout.append(slice(start, start + n))
        start += n
    return layout
