"""Attention of the TRELLIS.2 flows: variable-length SDPA, 3D RoPE, sparse vs dense modules."""

from __future__ import annotations

import math

import pytest
import torch

from meshforge.backends.trellis2.attention import (
    MultiHeadAttention,
    MultiHeadRMSNorm,
    SparseMultiHeadAttention,
    apply_rope,
    rope_frequencies,
    rope_phases,
    varlen_attention,
)
from meshforge.backends.trellis2.sparse import SparseTensor


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention in float64 from the definition; q [L, H, C], k/v [S, H, C] → [L, H, C]."""
    w = torch.einsum("lhc,shc->hls", q.double(), k.double()) / math.sqrt(q.shape[-1])
    return torch.einsum("hls,shc->lhc", torch.softmax(w, dim=-1), v.double())


def random_sparse(seqlens: list[int], channels: int, grid: int = 6, seed: int = 0) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b, n in enumerate(seqlens):
        cells = torch.randperm(grid**3, generator=g)[:n].sort().values
        xyz = torch.stack([cells // grid**2, cells // grid % grid, cells % grid], dim=-1)
        rows.append(torch.cat([torch.full((n, 1), b), xyz], dim=1))
    coords = torch.cat(rows).int()
    return SparseTensor(torch.randn(coords.shape[0], channels, generator=g), coords)


def randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("q_lens,kv_lens", [([7, 19, 1], [7, 19, 1]), ([5, 5], [4, 4]), ([6, 3], [2, 11])])
def test_varlen_attention_equals_per_item_dense(q_lens: list[int], kv_lens: list[int]) -> None:
    g = torch.Generator().manual_seed(1)
    q = torch.randn(sum(q_lens), 3, 8, generator=g)
    k = torch.randn(sum(kv_lens), 3, 8, generator=g)
    v = torch.randn(sum(kv_lens), 3, 5, generator=g)
    out = varlen_attention(q, k, v, q_lens, kv_lens)
    assert out.shape == (sum(q_lens), 3, 5) and out.dtype == torch.float32
    qs = ks = 0
    for lq, lk in zip(q_lens, kv_lens, strict=True):
        expected = naive_attention(q[qs : qs + lq], k[ks : ks + lk], v[ks : ks + lk])
        assert (out[qs : qs + lq].double() - expected).abs().max() < 1e-5
        qs, ks = qs + lq, ks + lk


def test_varlen_attention_rejects_inconsistent_lengths() -> None:
    q, k = torch.randn(5, 1, 4), torch.randn(5, 1, 4)
    with pytest.raises(ValueError):
        varlen_attention(q, k, k, [2, 3], [5])
    with pytest.raises(ValueError):
        varlen_attention(q, k, k, [2, 2], [2, 3])
    with pytest.raises(ValueError):
        varlen_attention(q, k, k, [2, 3], [5, 0])


def test_rope_phases_layout_and_padding() -> None:
    head_dim = 16  # 8 pairs, 8 // 3 = 2 frequencies per axis, 2 pairs left unrotated
    coords = torch.tensor([[3, 1, 2], [0, 5, 7]])
    phases = rope_phases(coords, head_dim)
    assert phases.shape == (2, 8) and phases.dtype == torch.complex64
    freqs = [1.0, 1.0 / 10000 ** (1 / 2)]
    for n in range(2):
        for axis in range(3):
            for j, f in enumerate(freqs):
                angle = float(coords[n, axis]) * f
                got = phases[n, 2 * axis + j]
                assert abs(got.real - math.cos(angle)) < 1e-6 and abs(got.imag - math.sin(angle)) < 1e-6
        assert torch.equal(phases[n, 6:], torch.ones(2, dtype=torch.complex64))
    assert torch.allclose(rope_frequencies(head_dim), torch.tensor(freqs))


def test_apply_rope_rotates_channel_pairs() -> None:
    x = torch.randn(4, 2, 16)  # [L, H, D]
    coords = torch.randint(0, 9, (4, 3))
    phases = rope_phases(coords, 16)
    y = apply_rope(x, phases)
    # pair i of every head is rotated by the angle of phases[:, i] (real-arithmetic re-derivation)
    c, s = phases.real[:, None, :], phases.imag[:, None, :]
    xr, xi = x[..., 0::2], x[..., 1::2]
    assert torch.allclose(y[..., 0::2], xr * c - xi * s, atol=1e-6)
    assert torch.allclose(y[..., 1::2], xr * s + xi * c, atol=1e-6)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)


def test_rope_scores_depend_only_on_relative_position() -> None:
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(6, 1, 24, generator=g), torch.randn(6, 1, 24, generator=g)
    coords = torch.randint(0, 10, (6, 3), generator=g)
    shift = torch.tensor([[4, -2, 7]])

    def scores(c: torch.Tensor) -> torch.Tensor:
        p = rope_phases(c, 24)
        return torch.einsum("lhc,shc->hls", apply_rope(q, p), apply_rope(k, p))

    base = scores(coords)
    assert torch.allclose(scores(coords + shift), base, atol=1e-4)
    # and they do depend on the position (a non-uniform change of coordinates changes them)
    assert not torch.allclose(scores(coords * 2), base, atol=1e-2)


def test_multihead_rms_norm() -> None:
    norm = MultiHeadRMSNorm(8, 3)
    x = torch.randn(5, 3, 8, dtype=torch.bfloat16)
    y = norm(x)
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float().norm(dim=-1), torch.full((5, 3), math.sqrt(8)), rtol=1e-2)
    with torch.no_grad():
        norm.gamma[1].mul_(2)
    assert torch.allclose(norm(x)[:, 1].float(), 2 * y[:, 1].float(), rtol=1e-2)


@pytest.mark.parametrize("use_rope,qk_rms_norm", [(True, True), (False, False), (True, False)])
def test_sparse_self_attention_equals_dense_per_item(use_rope: bool, qk_rms_norm: bool) -> None:
    sparse = SparseMultiHeadAttention(32, 2, type="self", use_rope=use_rope, qk_rms_norm=qk_rms_norm)
    randomise(sparse, 0)
    dense = MultiHeadAttention(32, 2, type="self", use_rope=use_rope, qk_rms_norm=qk_rms_norm)
    dense.load_state_dict(sparse.state_dict(), strict=True)
    x = random_sparse([9, 23, 4], 32)
    out = sparse(x)
    assert out.feats.shape == (36, 32) and torch.equal(out.coords, x.coords)
    for s in x.layout:
        phases = rope_phases(x.coords[s, 1:], 16) if use_rope else None
        expected = dense(x.feats[s][None], phases=phases)[0]
        assert (out.feats[s] - expected).abs().max() < 1e-5


def test_sparse_cross_attention_with_padded_and_ragged_context() -> None:
    cross = SparseMultiHeadAttention(32, 4, ctx_channels=12, type="cross", qk_rms_norm=True)
    randomise(cross, 1)
    dense = MultiHeadAttention(32, 4, ctx_channels=12, type="cross", qk_rms_norm=True)
    dense.load_state_dict(cross.state_dict(), strict=True)
    x = random_sparse([10, 3], 32, seed=2)
    ctx_lens = [5, 2]
    ctx = [torch.randn(n, 12) for n in ctx_lens]
    out = cross(x, ctx)
    for s, c in zip(x.layout, ctx, strict=True):  # each item sees only its own tokens
        expected = dense(x.feats[s][None], c[None])[0]
        assert (out.feats[s] - expected).abs().max() < 1e-5
    # the same context padded to [B, 5, 12] with a key mask gives the same result
    padded = torch.zeros(2, 5, 12)
    padded[1, :2] = ctx[1]
    padded[0] = ctx[0]
    mask = torch.arange(5)[None, :] < torch.tensor(ctx_lens)[:, None]  # [B, S]
    q = cross._heads(cross.to_q(x.feats))
    q = cross.q_rms_norm(q)
    k, v = cross._heads(cross.to_kv(padded), 2).unbind(dim=2)
    k = cross.k_rms_norm(k)
    for b, s in enumerate(x.layout):
        qb, kb, vb = (t.transpose(0, 1)[None] for t in (q[s], k[b], v[b]))
        o = torch.nn.functional.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask[b][None, None, None])
        expected = cross.to_out(o[0].transpose(0, 1).reshape(-1, 32))
        assert (out.feats[s] - expected).abs().max() < 1e-5
    # a dense context with equal lengths goes through the batched path and agrees with a list of it
    dense_ctx = torch.randn(2, 4, 12)
    assert torch.allclose(cross(x, dense_ctx).feats, cross(x, list(dense_ctx)).feats, atol=1e-6)


def test_attention_argument_errors() -> None:
    with pytest.raises(ValueError):
        MultiHeadAttention(30, 4)
    with pytest.raises(ValueError):
        SparseMultiHeadAttention(32, 4, type="cross", use_rope=True)
    with pytest.raises(ValueError):
        MultiHeadAttention(32, 4, use_rope=True)(torch.randn(1, 3, 32))
    with pytest.raises(ValueError):
        SparseMultiHeadAttention(32, 4, type="cross")(random_sparse([3], 32))
