"""TRELLIS.2 flow transformers: reference state_dict layout, official configs, forward invariants.

``fixtures/flow_state_dicts.json`` was derived from the reference classes (see its ``_note``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from meshforge.backends.trellis2.attention import rope_phases
from meshforge.backends.trellis2.flows import (
    ElasticSLatFlowModel,
    SLatFlowModel,
    SparseStructureFlowModel,
)
from meshforge.backends.trellis2.sparse import SparseTensor

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "flow_state_dicts.json").read_text())
CLASSES: dict[str, type[torch.nn.Module]] = {
    "SparseStructureFlowModel": SparseStructureFlowModel,
    "SLatFlowModel": SLatFlowModel,
    "ElasticSLatFlowModel": ElasticSLatFlowModel,
}
TINY: dict[str, Any] = dict(
    in_channels=8, out_channels=8, model_channels=64, cond_channels=32, num_blocks=2, num_heads=2,
    mlp_ratio=5.3334, pe_mode="rope", share_mod=True, initialization="scaled", qk_rms_norm=True,
    qk_rms_norm_cross=True,
)  # fmt: skip


def layout(model: torch.nn.Module) -> dict[str, list[Any]]:
    return {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()}


def randomise(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_((torch.randn(p.shape, generator=g) * 0.3).to(p.dtype))


def random_latent(seqlens: list[int], channels: int, grid: int = 5, seed: int = 0) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b, n in enumerate(seqlens):
        cells = torch.randperm(grid**3, generator=g)[:n].sort().values
        xyz = torch.stack([cells // grid**2, cells // grid % grid, cells % grid], dim=-1)
        rows.append(torch.cat([torch.full((n, 1), b), xyz], dim=1))
    coords = torch.cat(rows).int()
    return SparseTensor(torch.randn(coords.shape[0], channels, generator=g), coords)


@pytest.mark.parametrize("name", sorted(FIXTURE["tiny"]))
def test_tiny_state_dict_matches_reference(name: str) -> None:
    entry = FIXTURE["tiny"][name]
    model = CLASSES[entry["class"]](**entry["args"])
    assert layout(model) == entry["state_dict"]


@pytest.mark.parametrize("config", sorted(FIXTURE["official"]))
def test_official_config_builds_with_reference_layout(config: str) -> None:
    entry = FIXTURE["official"][config]
    model: Any
    with torch.device("meta"):
        model = CLASSES[entry["class"]](**entry["args"])
    assert model.resolution == entry["args"]["resolution"]
    assert (model.in_channels, model.out_channels) == (entry["args"]["in_channels"], entry["args"]["out_channels"])
    assert sum(p.numel() for p in model.parameters()) == entry["num_parameters"]
    full = layout(model)
    assert len(full) == entry["num_keys"] and len(model.blocks) == entry["num_blocks"]
    outside = {k: v for k, v in full.items() if not k.startswith("blocks.")}
    block0 = {k: v for k, v in full.items() if k.startswith("blocks.0.")}
    assert {**outside, **block0} == entry["state_dict"]
    for i in range(entry["num_blocks"]):
        block = {re.sub(r"^blocks\.\d+\.", "blocks.0.", k): v for k, v in full.items() if k.startswith(f"blocks.{i}.")}
        assert block == block0


def test_official_config_names_from_the_reference() -> None:
    classes = {entry["class"] for entry in FIXTURE["official"].values()}
    assert classes == {"SparseStructureFlowModel", "ElasticSLatFlowModel"}


def test_elastic_and_plain_slat_are_the_same_model() -> None:
    args = dict(TINY, resolution=8)
    plain = SLatFlowModel(**args)
    randomise(plain)
    elastic = ElasticSLatFlowModel(**args)
    elastic.load_state_dict(plain.state_dict(), strict=True)
    assert layout(plain) == layout(elastic)
    x, t, cond = random_latent([6, 9], 8), torch.tensor([10.0, 700.0]), torch.randn(2, 3, 32)
    with torch.no_grad():
        assert torch.equal(plain(x, t, cond).feats, elastic(x, t, cond).feats)


def test_constructor_arguments_like_the_reference() -> None:
    # the dense model ignores extra keywords, the sparse one rejects them (as the reference does)
    SparseStructureFlowModel(resolution=2, **dict(TINY, num_blocks=1), unknown_option=True)
    with pytest.raises(TypeError):
        SLatFlowModel(resolution=2, **dict(TINY, num_blocks=1), unknown_option=True)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        SLatFlowModel(resolution=2, **dict(TINY, num_blocks=1, dtype="float8"))


def test_fresh_models_output_zero() -> None:
    # the training init zeroes the adaLN projection and the output layer
    ss = SparseStructureFlowModel(resolution=3, **TINY)
    out = ss(torch.randn(1, 8, 3, 3, 3), torch.tensor([500.0]), torch.randn(1, 4, 32))
    assert out.shape == (1, 8, 3, 3, 3) and not out.any()
    slat = SLatFlowModel(resolution=8, **TINY)
    assert not slat(random_latent([5], 8), torch.tensor([500.0]), torch.randn(1, 4, 32)).feats.any()


def test_sparse_structure_flow_is_the_slat_flow_on_a_full_grid() -> None:
    # the dense model's token order and RoPE axes must be the sparse model's (x, y, z) coordinates
    r = 3
    ss = SparseStructureFlowModel(resolution=r, **TINY)
    randomise(ss, 1)
    slat = SLatFlowModel(resolution=r, **TINY)
    weights = {k: v for k, v in ss.state_dict().items() if k != "rope_phases"}
    slat.load_state_dict(weights, strict=True)
    assert ss.rope_phases is not None
    assert torch.equal(ss.rope_phases, rope_phases(SparseStructureFlowModel.grid_coords(r), 32))
    x, t, cond = torch.randn(2, 8, r, r, r), torch.tensor([30.0, 900.0]), torch.randn(2, 6, 32)
    grid = SparseStructureFlowModel.grid_coords(r)
    coords = torch.cat([torch.cat([torch.full((r**3, 1), b), grid], 1) for b in range(2)]).int()
    feats = x.permute(0, 2, 3, 4, 1).reshape(-1, 8)
    with torch.no_grad():
        dense = ss(x, t, cond)
        sparse = slat(SparseTensor(feats, coords), t, cond)
    assert (dense.permute(0, 2, 3, 4, 1).reshape(-1, 8) - sparse.feats).abs().max() < 1e-4


def test_slat_flow_batch_items_are_independent_and_row_order_equivariant() -> None:
    slat = SLatFlowModel(resolution=8, **TINY)
    randomise(slat, 2)
    x = random_latent([7, 12, 3], 8, seed=3)
    t = torch.tensor([10.0, 400.0, 990.0])
    cond = torch.randn(3, 4, 32)
    with torch.no_grad():
        batched = slat(x, t, cond)
        for b, item in enumerate(x.unbind()):
            alone = slat(item, t[b : b + 1], cond[b : b + 1])
            assert (batched.feats[x.layout[b]] - alone.feats).abs().max() < 1e-5
        perm = torch.randperm(12)
        item = x.unbind()[1]
        shuffled = SparseTensor(item.feats[perm], item.coords[perm])
        out = slat(shuffled, t[1:2], cond[1:2]).feats
        assert (out - slat(item, t[1:2], cond[1:2]).feats[perm]).abs().max() < 1e-5


def test_slat_flow_concat_cond_and_ragged_cond() -> None:
    slat = SLatFlowModel(resolution=8, **dict(TINY, in_channels=12, out_channels=5))
    randomise(slat, 3)
    x = random_latent([4, 6], 8, seed=4)
    extra = x.replace(torch.randn(10, 4))
    t = torch.tensor([100.0, 200.0])
    cond = torch.randn(2, 3, 32)
    with torch.no_grad():
        out = slat(x, t, cond, concat_cond=extra)
        joined = slat(x.replace(torch.cat([x.feats, extra.feats], 1)), t, cond)
        assert out.feats.shape == (10, 5) and torch.equal(out.coords, x.coords)
        assert torch.equal(out.feats, joined.feats)
        ragged = slat(x, t, [cond[0], cond[1, :2]], concat_cond=extra)
        assert torch.allclose(ragged.feats[:4], out.feats[:4], atol=1e-5)
        assert not torch.allclose(ragged.feats[4:], out.feats[4:])
    with pytest.raises(ValueError):
        slat(x, t, cond)  # 8 channels without the concat_cond's 4


def test_sparse_structure_flow_rejects_wrong_shape() -> None:
    ss = SparseStructureFlowModel(resolution=3, **dict(TINY, num_blocks=1))
    with pytest.raises(ValueError):
        ss(torch.randn(1, 8, 4, 4, 4), torch.tensor([1.0]), torch.randn(1, 2, 32))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_blocks(dtype: str) -> None:
    full = SparseStructureFlowModel(resolution=3, **TINY)
    randomise(full, 4)
    half: Any = SparseStructureFlowModel(resolution=3, **dict(TINY, dtype=dtype))
    half.load_state_dict(full.state_dict(), strict=True)
    want = getattr(torch, dtype)
    assert half.blocks[0].self_attn.to_qkv.weight.dtype == want
    assert half.input_layer.weight.dtype == torch.float32 and half.blocks[0].modulation.dtype == torch.float32
    x, t, cond = torch.randn(1, 8, 3, 3, 3), torch.tensor([250.0]), torch.randn(1, 5, 32)
    with torch.no_grad():
        ref, out = full(x, t, cond), half(x, t, cond)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    assert not torch.equal(out, ref)  # the blocks really ran in reduced precision


def test_load_checkpoint_is_strict_but_rebuilds_grid_buffers() -> None:
    source = SparseStructureFlowModel(resolution=3, **dict(TINY, num_blocks=1))
    randomise(source, 5)
    weights = {k: v.to(torch.bfloat16) for k, v in source.state_dict().items() if k != "rope_phases"}
    target: Any = SparseStructureFlowModel(resolution=3, **dict(TINY, num_blocks=1))
    target.load_checkpoint(weights)
    assert torch.equal(target.blocks[0].mlp.mlp[0].weight, weights["blocks.0.mlp.mlp.0.weight"].float())
    assert target.blocks[0].mlp.mlp[0].weight.dtype == torch.float32
    assert torch.equal(target.rope_phases, source.rope_phases)
    with pytest.raises(RuntimeError, match="missing"):
        target.load_checkpoint({k: v for k, v in weights.items() if k != "out_layer.bias"})
    with pytest.raises(RuntimeError, match="unexpected"):
        target.load_checkpoint({**weights, "extra.weight": torch.zeros(1)})
    slat = SLatFlowModel(resolution=8, **dict(TINY, num_blocks=1))
    with pytest.raises(RuntimeError):
        slat.load_checkpoint({k: v for k, v in weights.items() if k != "blocks.0.modulation"})
