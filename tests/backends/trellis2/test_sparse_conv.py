"""Submanifold sparse convolution and sparse resampling against plain dense computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from meshforge.backends.trellis2.sparse import SparseTensor
from meshforge.backends.trellis2.sparse_conv import (
    NEIGHBOUR_CACHE_KEY,
    SparseConv3d,
    build_neighbour_map,
    kernel_offsets,
    submanifold_conv3d,
)
from meshforge.backends.trellis2.sparse_nn import (
    LayerNorm32,
    SparseChannel2Spatial,
    SparseDownsample,
    SparseGroupNorm32,
    SparseLinear,
    SparseSpatial2Channel,
    SparseUpsample,
)


def random_grid(
    batch: int, size: tuple[int, int, int], density: float, channels: int, seed: int = 0
) -> tuple[SparseTensor, torch.Tensor]:
    """A random sparse tensor (rows in (b, x, y, z) order) and its occupancy ``bool [B, X, Y, Z]``."""
    g = torch.Generator().manual_seed(seed)
    occ = torch.rand(batch, *size, generator=g) < density
    coords = occ.nonzero().to(torch.int32)
    feats = torch.randn(coords.shape[0], channels, generator=g)
    return SparseTensor(feats, coords, size), occ


def dense_of(x: SparseTensor, size: tuple[int, int, int]) -> torch.Tensor:
    c = x.coords.long()
    dense = torch.zeros(x.batch_size, x.feats.shape[1], *size, dtype=x.feats.dtype)
    dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]] = x.feats
    return dense


def at_sites(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    c = coords.long()
    return dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]


def shuffled(x: SparseTensor, seed: int = 3) -> tuple[SparseTensor, torch.Tensor]:
    """The same tensor with rows permuted inside each batch item (batch grouping kept)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.cat([s.start + torch.randperm(s.stop - s.start, generator=g) for s in x.layout])
    return SparseTensor(x.feats[perm], x.coords[perm], x.spatial_shape), perm


@pytest.mark.parametrize(
    ("kernel", "dilation", "size"),
    [(3, 1, (9, 7, 8)), (3, 2, (10, 9, 11)), ((3, 1, 5), (1, 1, 2), (8, 6, 12)), (1, 1, (5, 5, 5))],
)
def test_submanifold_conv_matches_dense_conv3d_at_occupied_sites(kernel, dilation, size) -> None:
    torch.manual_seed(0)
    x, _ = random_grid(batch=2, size=size, density=0.35, channels=5)
    x, _ = shuffled(x)  # the neighbour hash must not rely on sorted rows
    conv = SparseConv3d(5, 7, kernel, dilation=dilation)
    assert conv.weight.shape == (7, *conv.kernel_size, 5)  # official [C_out, Kx, Ky, Kz, C_in] layout
    with torch.no_grad():
        conv.bias.normal_()  # type: ignore[union-attr]
        got = conv(x).feats
        pad = tuple((k // 2) * d for k, d in zip(conv.kernel_size, conv.dilation, strict=True))
        dense = F.conv3d(
            dense_of(x, size), conv.weight.permute(0, 4, 1, 2, 3), conv.bias, padding=pad, dilation=conv.dilation
        )
    want = at_sites(dense, x.coords)
    assert got.shape == (x.feats.shape[0], 7)
    assert (got - want).abs().max().item() < 1e-4


def test_batch_items_do_not_see_each_other() -> None:
    # two batch items with identical coordinates: item 1's output must not depend on item 0's feats
    x, _ = random_grid(batch=1, size=(6, 6, 6), density=0.5, channels=3)
    coords = torch.cat([x.coords, x.coords + torch.tensor([1, 0, 0, 0], dtype=torch.int32)])
    feats = torch.cat([x.feats, x.feats])
    conv = SparseConv3d(3, 4, 3)
    with torch.no_grad():
        base = conv(SparseTensor(feats, coords)).feats
        feats2 = feats.clone()
        feats2[: x.feats.shape[0]] = torch.randn_like(x.feats)
        moved = conv(SparseTensor(feats2, coords)).feats
    n = x.feats.shape[0]
    assert torch.equal(base[n:], moved[n:])
    assert torch.allclose(base[:n], base[n:], atol=1e-6)


def test_neighbour_map_entries_point_at_the_offset_voxel() -> None:
    x, occ = random_grid(batch=2, size=(7, 7, 7), density=0.3, channels=1)
    nbr = build_neighbour_map(x.coords, 3, 2)
    offsets = kernel_offsets((3, 3, 3), (2, 2, 2))
    assert nbr.shape == (x.coords.shape[0], 27) and nbr.dtype == torch.int32
    assert torch.equal(offsets[13], torch.zeros(3, dtype=torch.int64))  # centre tap, x slowest / z fastest
    assert torch.equal(offsets[1], torch.tensor([-2, -2, 0]))
    assert torch.equal(nbr[:, 13].long(), torch.arange(x.coords.shape[0]))
    target = x.coords.long()[:, None, 1:] + offsets[None]
    inside = ((target >= 0) & (target < 7)).all(-1)
    b = x.coords.long()[:, None, 0].expand_as(inside)
    t = target.clamp(0, 6)
    present = inside & occ[b, t[..., 0], t[..., 1], t[..., 2]]
    assert torch.equal(nbr >= 0, present)
    found = nbr[present].long()
    assert torch.equal(x.coords.long()[found, 1:], target[present])
    assert torch.equal(x.coords.long()[found, 0], b[present])


def test_neighbour_map_is_cached_and_shared_by_replaced_tensors() -> None:
    x, _ = random_grid(batch=2, size=(6, 6, 6), density=0.4, channels=4)
    conv_a, conv_b = SparseConv3d(4, 4, 3), SparseConv3d(4, 6, 3)
    with torch.no_grad():
        y = conv_a(x)
        key = (NEIGHBOUR_CACHE_KEY, (3, 3, 3), (1, 1, 1))
        cached = x.cache[key]
        assert y.cache is x.cache  # same coordinates: one cache
        # poison the cached map: a reused cache must change the result, a rebuilt one would not
        y.cache[key] = torch.full_like(cached, -1)
        z = conv_b(y)
        assert torch.allclose(z.feats, conv_b.bias.expand_as(z.feats))  # type: ignore[union-attr]
        y.cache[key] = cached
        z2 = conv_b(y)
        assert not torch.allclose(z2.feats, z.feats)
        dilated = SparseConv3d(4, 4, 3, dilation=2)
        dilated(x)
    assert (NEIGHBOUR_CACHE_KEY, (3, 3, 3), (2, 2, 2)) in x.cache


def test_chunked_gather_equals_single_chunk_and_half_precision_runs() -> None:
    x, _ = random_grid(batch=2, size=(8, 8, 8), density=0.3, channels=6)
    conv = SparseConv3d(6, 5, 3)
    nbr = build_neighbour_map(x.coords, 3, 1, chunk_rows=17)
    assert torch.equal(nbr, build_neighbour_map(x.coords, 3, 1))
    with torch.no_grad():
        whole = submanifold_conv3d(x.feats, nbr, conv.weight, conv.bias)
        chunked = submanifold_conv3d(x.feats, nbr, conv.weight, conv.bias, chunk_elements=6 * 27 * 10)
        half = submanifold_conv3d(x.feats.half(), nbr, conv.weight.half(), conv.bias.half())  # type: ignore[union-attr]
    assert torch.allclose(whole, chunked, atol=1e-6)
    assert half.dtype == torch.float16
    assert (half.float() - whole).abs().max().item() < 2e-2


def test_conv_rejects_non_submanifold_settings() -> None:
    with pytest.raises(ValueError):
        SparseConv3d(2, 2, 3, stride=2)
    with pytest.raises(ValueError):
        SparseConv3d(2, 2, 2)
    with pytest.raises(ValueError):
        build_neighbour_map(torch.zeros(4, 3, dtype=torch.int32))


# -- resampling ------------------------------------------------------------------------------------
def test_channel2spatial_places_channel_blocks_on_kept_children_in_reference_order() -> None:
    g = torch.Generator().manual_seed(1)
    x, _ = random_grid(batch=2, size=(4, 4, 4), density=0.4, channels=8 * 3)
    logits = torch.randn(x.coords.shape[0], 8, generator=g)
    out = SparseChannel2Spatial(2)(x, SparseTensor(logits, x.coords))
    mask = logits > 0
    assert out.feats.shape == (int(mask.sum()), 3)
    assert out.spatial_shape == (8, 8, 8)
    # expected rows: parents in input order, children by sub-index dx + 2dy + 4dz
    rows, want_coords, want_feats = 0, [], []
    for p in range(x.coords.shape[0]):
        for j in range(8):
            if mask[p, j]:
                d = torch.tensor([0, j % 2, j // 2 % 2, j // 4], dtype=torch.int32)
                want_coords.append(x.coords[p] * torch.tensor([1, 2, 2, 2], dtype=torch.int32) + d)
                want_feats.append(x.feats[p, 3 * j : 3 * j + 3])
                rows += 1
    assert torch.equal(out.coords, torch.stack(want_coords))
    assert torch.equal(out.feats, torch.stack(want_feats))
    assert out.layout[0].stop == int(mask[x.layout[0]].sum())  # batch grouping kept


def test_spatial2channel_then_channel2spatial_round_trips() -> None:
    x, _ = random_grid(batch=2, size=(8, 6, 7), density=0.3, channels=2)
    down = SparseSpatial2Channel(2)(x)
    assert down.feats.shape[1] == 16
    # parents sorted by (b, x, y, z), one per occupied 2^3 cell
    parents = torch.unique(torch.cat([x.coords[:, :1], x.coords[:, 1:] // 2], 1), dim=0)
    assert torch.equal(down.coords, parents)
    up_cached = SparseChannel2Spatial(2)(down)  # through the cache of the paired downsample
    fresh = SparseTensor(down.feats, down.coords, down.spatial_shape)
    mask = down.feats.reshape(-1, 8, 2).abs().sum(-1) > 0
    up_masked = SparseChannel2Spatial(2)(fresh, mask)
    for up in (up_cached, up_masked):
        order = torch.argsort(((up.coords[:, 0] * 64 + up.coords[:, 1]) * 64 + up.coords[:, 2]) * 64 + up.coords[:, 3])
        ref_order = torch.argsort(((x.coords[:, 0] * 64 + x.coords[:, 1]) * 64 + x.coords[:, 2]) * 64 + x.coords[:, 3])
        assert torch.equal(up.coords[order], x.coords[ref_order])
        assert torch.equal(up.feats[order], x.feats[ref_order])
    with pytest.raises(ValueError):
        SparseChannel2Spatial(2)(fresh)


def test_downsample_mean_and_nearest_upsample() -> None:
    x, _ = random_grid(batch=2, size=(6, 6, 6), density=0.5, channels=3)
    pooled = SparseDownsample(2)(x)
    dense = dense_of(x, (6, 6, 6))
    occ = dense_of(x.replace(torch.ones_like(x.feats[:, :1])), (6, 6, 6))
    mean = F.avg_pool3d(dense, 2) / F.avg_pool3d(occ, 2).clamp_min(1e-12)
    assert torch.allclose(pooled.feats, at_sites(mean, pooled.coords), atol=1e-6)
    back = SparseUpsample(2)(pooled)  # restores the fine coordinates through the cache
    assert torch.equal(back.coords, x.coords)
    parent = at_sites(mean, torch.cat([x.coords[:, :1], x.coords[:, 1:] // 2], 1))
    assert torch.allclose(back.feats, parent, atol=1e-6)
    mask = torch.zeros(pooled.coords.shape[0], 8, dtype=torch.bool)
    mask[:, 7] = True  # only the (+1, +1, +1) child
    one = SparseUpsample(2)(SparseTensor(pooled.feats, pooled.coords), mask)
    assert torch.equal(one.coords[:, 1:], pooled.coords[:, 1:] * 2 + 1)
    assert torch.equal(one.feats, pooled.feats)


def test_pointwise_layers_and_group_norm_per_batch_item() -> None:
    x, _ = random_grid(batch=3, size=(5, 5, 5), density=0.4, channels=64)
    x = x.replace(x.feats * 3 + 1)
    norm = SparseGroupNorm32(32, 64)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
        out = norm(x.type(torch.float16))
        assert out.dtype == torch.float16
        for rows in x.layout:  # each item normalised on its own statistics
            want = F.group_norm(x.feats[rows].t()[None], 32, norm.weight, norm.bias, 1e-5)[0].t()
            assert (out.feats[rows].float() - want).abs().max().item() < 1e-2
        lin = SparseLinear(64, 7)
        assert torch.allclose(lin(x).feats, x.feats @ lin.weight.t() + lin.bias)
        ln = LayerNorm32(64, eps=1e-6)
        half = ln(x.feats.half())
        assert half.dtype == torch.float16
        assert torch.allclose(half.float(), F.layer_norm(x.feats, (64,), eps=1e-6), atol=1e-2)


def test_upsampling_keeps_a_batch_item_whose_children_are_all_dropped() -> None:
    x, _ = random_grid(batch=3, size=(4, 4, 4), density=0.5, channels=8)
    mask = torch.ones(x.coords.shape[0], 8, dtype=torch.bool)
    mask[x.layout[2]] = False  # the last item loses every voxel
    mask[x.layout[0], 1:] = False
    out = SparseChannel2Spatial(2)(x, mask)
    assert out.batch_size == 3
    assert [s.stop - s.start for s in out.layout] == [x.seqlens[0], 8 * x.seqlens[1], 0]
    pooled = SparseDownsample(2)(out)
    assert pooled.batch_size == 3 and pooled.seqlens[2] == 0
