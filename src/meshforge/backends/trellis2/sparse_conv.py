"""Submanifold sparse 3D convolution in plain PyTorch (gather-GEMM over a cached neighbour map).

A *submanifold* convolution (Graham & van der Maaten, "Submanifold Sparse Convolutional
Networks", 2017) evaluates a dense 3D convolution only at the occupied voxels of its input and
reads only occupied neighbours: the output has exactly the input's coordinates (stride 1, no
dilation of the active set). TRELLIS.2's sparse VAEs use it everywhere (kernel 3, dilation 1);
the official implementation runs it through the FlexGEMM CUDA/Triton kernels.

Here it is two steps:

1. :func:`build_neighbour_map` — a coordinate hash: every ``(b, x, y, z)`` is linearised to an
   ``int64`` key, the keys are sorted once, and the key of each (voxel, kernel offset) pair is
   looked up with ``torch.searchsorted``. The result ``int32 [N, K³]`` holds the row of the
   neighbour at ``coord + offset·dilation`` or ``-1`` where that cell is empty. Offsets are
   enumerated with the x offset slowest and the z offset fastest.
2. :func:`submanifold_conv3d` — an explicit GEMM: gather the neighbour features into an
   ``[n, K³·C_in]`` matrix (zeros for absent neighbours) and multiply by the weight viewed as
   ``[C_out, K³·C_in]``; rows are processed in chunks to bound the gathered matrix's memory.

The neighbour map depends only on the coordinates, so :class:`SparseConv3d` caches it in
``SparseTensor.cache`` (shared by all tensors made with ``replace(feats)``) under
``("submconv3d_neighbours", kernel_size, dilation)``.

Weight layout: ``[C_out, K_x, K_y, K_z, C_in]`` — the layout of the official TRELLIS.2
checkpoints (the FlexGEMM backend stores the ``nn.Conv3d`` weight ``[C_out, C_in, K_x, K_y, K_z]``
permuted to channels-last). Element ``weight[o, i, j, k, c]`` multiplies input channel ``c`` of
the neighbour at offset ``((i - K_x//2)·d_x, (j - K_y//2)·d_y, (k - K_z//2)·d_z)``: the
cross-correlation of ``torch.nn.functional.conv3d`` on a dense ``[B, C, X, Y, Z]`` grid with
weight ``weight.permute(0, 4, 1, 2, 3)`` and padding ``d·(K//2)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .sparse import SparseTensor

NEIGHBOUR_CACHE_KEY = "submconv3d_neighbours"

# Upper bound on the elements of one gathered im2col chunk (rows × K³ × C_in).
GATHER_CHUNK_ELEMENTS = 1 << 27


def _triple(value: int | tuple[int, ...] | list[int]) -> tuple[int, int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 3:
            raise ValueError(f"expected an int or 3 values, got {value!r}")
        return (int(value[0]), int(value[1]), int(value[2]))
    return (int(value),) * 3


def kernel_offsets(
    kernel_size: tuple[int, int, int], dilation: tuple[int, int, int], device: torch.device | None = None
) -> torch.Tensor:
    """``int64 [K_x·K_y·K_z, 3]``: the voxel offsets of a centred odd kernel, x slowest, z fastest.

    Raises:
        ValueError: an even kernel size (a submanifold kernel needs a centre).
    """
    if any(k % 2 == 0 for k in kernel_size):
        raise ValueError(f"submanifold convolution needs odd kernel sizes, got {kernel_size}")
    axes = [
        torch.arange(-(k // 2), k // 2 + 1, device=device, dtype=torch.int64) * d
        for k, d in zip(kernel_size, dilation, strict=True)
    ]
    grid = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(grid, dim=-1).reshape(-1, 3)


def build_neighbour_map(
    coords: torch.Tensor,
    kernel_size: int | tuple[int, int, int] = 3,
    dilation: int | tuple[int, int, int] = 1,
    chunk_rows: int = 1 << 20,
) -> torch.Tensor:
    """The rows of each voxel's kernel neighbours, through a sorted-key hash.

    Args:
        coords: ``int [N, 4]`` rows ``(b, x, y, z)``, no duplicates; any order.
        kernel_size: odd kernel size per axis (or one int).
        dilation: spacing of the kernel taps in voxels (or one int).
        chunk_rows: rows looked up per pass (bounds the ``[rows, K³]`` temporaries).

    Returns:
        ``int32 [N, K_x·K_y·K_z]`` (``int64`` from 2³¹ rows on): entry ``[n, v]`` is the row of the voxel at
        ``coords[n] + offsets[v]`` (same batch item; :func:`kernel_offsets` order) or ``-1``.

    Raises:
        ValueError: ``coords`` not ``[N, 4]`` or an even kernel size.
    """
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must be [N, 4] (b, x, y, z), got {tuple(coords.shape)}")
    ks, dil = _triple(kernel_size), _triple(dilation)
    offsets = kernel_offsets(ks, dil, coords.device)
    n = coords.shape[0]
    index_dtype = torch.int32 if n < 2**31 - 1 else torch.int64
    if n == 0:
        return torch.empty((0, offsets.shape[0]), dtype=index_dtype, device=coords.device)

    # Shift the coordinates so that every neighbour coordinate is >= 0 and below `extent`: then the
    # linearised key is injective over all queried cells and no bounds mask is needed.
    reach = torch.tensor([(k // 2) * d for k, d in zip(ks, dil, strict=True)], device=coords.device)
    c = coords.long()
    batch = c[:, 0]
    xyz = c[:, 1:] - c[:, 1:].min(0).values + reach
    extent = xyz.max(0).values + reach + 1
    stride_z = 1
    stride_y = int(extent[2])
    stride_x = stride_y * int(extent[1])
    stride_b = stride_x * int(extent[0])
    if (int(batch.max()) + 1) * stride_b >= 2**62:
        raise ValueError("coordinate range too large for int64 keys")
    key_strides = torch.tensor([stride_x, stride_y, stride_z], device=coords.device)

    keys = batch * stride_b + (xyz * key_strides).sum(-1)
    sorted_keys, order = torch.sort(keys)
    offset_keys = (offsets * key_strides).sum(-1)  # a key shift per kernel tap

    out = torch.empty((n, offsets.shape[0]), dtype=index_dtype, device=coords.device)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        query = keys[start:stop, None] + offset_keys[None, :]
        pos = torch.searchsorted(sorted_keys, query).clamp_(max=n - 1)
        found = sorted_keys[pos] == query
        out[start:stop] = torch.where(found, order[pos], torch.full_like(pos, -1)).to(index_dtype)
    return out


def submanifold_conv3d(
    feats: torch.Tensor,
    neighbours: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_elements: int = GATHER_CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Submanifold convolution as gather + GEMM.

    Args:
        feats: ``[N, C_in]`` features (the dtype of ``weight``).
        neighbours: ``int32/int64 [N, V]`` from :func:`build_neighbour_map` (``-1`` = absent).
        weight: ``[C_out, K_x, K_y, K_z, C_in]`` with ``K_x·K_y·K_z == V``.
        bias: ``[C_out]`` or ``None``.
        chunk_elements: bound on the gathered ``[rows, V·C_in]`` matrix per step.

    Returns:
        ``[N, C_out]``: ``out[n] = bias + Σ_v W_v · feats[neighbours[n, v]]`` over present taps.

    Raises:
        ValueError: mismatched channel counts or kernel volume.
    """
    c_out = weight.shape[0]
    c_in = weight.shape[-1]
    volume = math.prod(weight.shape[1:-1])
    if feats.shape[1] != c_in:
        raise ValueError(f"feats have {feats.shape[1]} channels, the weight expects {c_in}")
    if neighbours.shape[1] != volume:
        raise ValueError(f"neighbour map has {neighbours.shape[1]} taps, the kernel has {volume}")
    n = feats.shape[0]
    # One zero row at index N stands for every absent neighbour.
    padded = torch.cat([feats, feats.new_zeros((1, c_in))], dim=0)
    w = weight.reshape(c_out, volume * c_in).t()
    rows = max(1, chunk_elements // max(1, volume * c_in))
    pieces = []
    for start in range(0, max(n, 1), rows):
        stop = min(start + rows, n)
        index = neighbours[start:stop]
        index = torch.where(index < 0, torch.full_like(index, n), index)
        cols = padded[index].reshape(stop - start, volume * c_in)
        pieces.append(torch.addmm(bias, cols, w) if bias is not None else cols @ w)
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)


class SparseConv3d(nn.Module):
    """Submanifold sparse 3D convolution (stride 1) with the official TRELLIS.2 parameter layout.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: odd size per axis (or one int).
        stride: only ``1`` (submanifold).
        dilation: tap spacing per axis (or one int).
        padding: only ``None`` (submanifold: output sites = input sites).
        bias: whether to add a ``[C_out]`` bias.
        indice_key: accepted for signature parity with the reference; unused.

    Parameters: ``weight [C_out, K_x, K_y, K_z, C_in]``, ``bias [C_out]`` (initialised as
    ``nn.Conv3d`` does, then permuted, like the reference).

    Forward: ``SparseTensor`` with feats ``[N, C_in]`` → same coordinates, feats ``[N, C_out]``.
    The neighbour map is built once per (coordinates, kernel, dilation) and kept in ``x.cache``.

    Raises:
        ValueError: ``stride != 1``, ``padding`` given, or an even kernel size.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        dilation: int | tuple[int, int, int] = 1,
        padding: int | None = None,
        bias: bool = True,
        indice_key: str | None = None,
    ) -> None:
        super().__init__()
        if _triple(stride) != (1, 1, 1) or padding is not None:
            raise ValueError("only submanifold convolution (stride=1, padding=None) is supported")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _triple(kernel_size)
        self.stride = (1, 1, 1)
        self.dilation = _triple(dilation)
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"submanifold convolution needs odd kernel sizes, got {self.kernel_size}")
        self.chunk_elements = GATHER_CHUNK_ELEMENTS  # lower it to cut peak memory (same result)
        dense_weight = torch.empty((out_channels, in_channels, *self.kernel_size))
        nn.init.kaiming_uniform_(dense_weight, a=math.sqrt(5))
        self.weight = nn.Parameter(dense_weight.permute(0, 2, 3, 4, 1).contiguous())
        if bias:
            fan_in = in_channels * math.prod(self.kernel_size)
            bound = 1 / math.sqrt(fan_in) if fan_in else 0.0
            self.bias: nn.Parameter | None = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)

    def neighbours(self, x: SparseTensor) -> torch.Tensor:
        """The cached (or freshly built) ``[N, K³]`` neighbour map of ``x``'s coordinates."""
        key = (NEIGHBOUR_CACHE_KEY, self.kernel_size, self.dilation)
        nbr = x.cache.get(key)
        if nbr is None:
            nbr = build_neighbour_map(x.coords, self.kernel_size, self.dilation)
            x.cache[key] = nbr
        return nbr

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = submanifold_conv3d(x.feats, self.neighbours(x), self.weight, self.bias, self.chunk_elements)
        return x.replace(out)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"dilation={self.dilation}, bias={self.bias is not None}"
        )
