"""TRELLIS.2 decoders: exact state_dict layout, dense equivalence, subdivision behaviour.

The state_dict fixture (``fixtures/decoder_state_dict_keys.json``) was derived from the reference
classes themselves (see its ``_note``); the numerical checks compare against plain dense
re-computations written here from the block definitions (a submanifold conv on a fully occupied
grid is a zero-padded dense ``conv3d``).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from meshforge.backends.trellis2.decoders import decoder_from_config
from meshforge.backends.trellis2.slat_decoders import (
    DecodedMesh,
    FlexiDualGridVaeDecoder,
    SparseUnetVaeDecoder,
)
from meshforge.backends.trellis2.sparse import SparseTensor
from meshforge.backends.trellis2.sparse_conv import SparseConv3d
from meshforge.backends.trellis2.ss_decoder import SparseStructureDecoder, pixel_shuffle_3d

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "decoder_state_dict_keys.json").read_text())["configs"]
CLASSES: dict[str, type[nn.Module]] = {
    "SparseStructureDecoder": SparseStructureDecoder,
    "SparseUnetVaeDecoder": SparseUnetVaeDecoder,
    "FlexiDualGridVaeDecoder": FlexiDualGridVaeDecoder,
}


def build(name: str, **overrides: Any) -> nn.Module:
    cfg = FIXTURE[name]
    return CLASSES[cfg["class"]](**{**cfg["args"], **overrides})


def rerandomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere (the zero-initialised residual branches would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
    return model


def random_latent(channels: int, res: int = 4, batch: int = 2, density: float = 0.5, seed: int = 0) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    occ = torch.rand(batch, res, res, res, generator=g) < density
    coords = occ.nonzero().to(torch.int32)
    return SparseTensor(torch.randn(coords.shape[0], channels, generator=g), coords, (res,) * 3)


def full_latent(channels: int, res: int, batch: int, seed: int = 0) -> SparseTensor:
    return random_latent(channels, res, batch, density=2.0, seed=seed)


def sort_rows(coords: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = coords.long()
    key = ((c[:, 0] * 4096 + c[:, 1]) * 4096 + c[:, 2]) * 4096 + c[:, 3]
    order = torch.argsort(key)
    return coords[order], feats[order]


# -- state dict layout ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ss_tiny", "ss_tiny_group", "tex_tiny", "fdg_tiny", "mixed_tiny"])
def test_tiny_state_dict_matches_reference_keys_shapes_dtypes(name: str) -> None:
    sd = build(name).state_dict()
    got = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in sd.items()}
    assert got == FIXTURE[name]["state_dict"]


@pytest.mark.parametrize("name", ["ss_official", "shape_official_256", "tex_official_256"])
def test_official_configs_construct_on_meta_with_reference_layout(name: str) -> None:
    with torch.device("meta"):
        model = build(name)
    got = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()}
    assert got == FIXTURE[name]["state_dict"]


# -- sparse-structure decoder ----------------------------------------------------------------------
def test_pixel_shuffle_3d_index_convention() -> None:
    x = torch.randn(2, 3 * 8, 2, 3, 4)
    y = pixel_shuffle_3d(x, 2)
    assert y.shape == (2, 3, 4, 6, 8)
    for i, j, k in [(0, 0, 0), (1, 0, 0), (0, 1, 1), (1, 1, 0)]:
        assert torch.equal(y[:, :, i::2, j::2, k::2], x[:, i * 4 + j * 2 + k :: 8])


def _dense_resblock(sd: dict[str, torch.Tensor], p: str, x: torch.Tensor) -> torch.Tensor:
    def ln(t: torch.Tensor, name: str) -> torch.Tensor:
        t = t.permute(0, 2, 3, 4, 1)
        t = F.layer_norm(t, t.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], 1e-5)
        return t.permute(0, 4, 1, 2, 3)

    h = F.conv3d(F.silu(ln(x, p + "norm1")), sd[p + "conv1.weight"], sd[p + "conv1.bias"], padding=1)
    h = F.conv3d(F.silu(ln(h, p + "norm2")), sd[p + "conv2.weight"], sd[p + "conv2.bias"], padding=1)
    return h + x


def test_ss_decoder_equals_dense_recomputation() -> None:
    model = rerandomise(build("ss_tiny")).eval()
    sd = {k: v.float() for k, v in model.state_dict().items()}
    x = torch.randn(2, 4, 4, 4, 4)
    with torch.no_grad():
        got = model(x)
        h = F.conv3d(x, sd["input_layer.weight"], sd["input_layer.bias"], padding=1)
        h = _dense_resblock(sd, "middle_block.0.", h)
        h = _dense_resblock(sd, "blocks.0.", h)
        h = pixel_shuffle_3d(F.conv3d(h, sd["blocks.1.conv.weight"], sd["blocks.1.conv.bias"], padding=1), 2)
        h = _dense_resblock(sd, "blocks.2.", h)
        h = h.permute(0, 2, 3, 4, 1)
        h = F.layer_norm(h, h.shape[-1:], sd["out_layer.0.weight"], sd["out_layer.0.bias"], 1e-5)
        want = F.conv3d(F.silu(h.permute(0, 4, 1, 2, 3)), sd["out_layer.2.weight"], sd["out_layer.2.bias"], padding=1)
    assert got.shape == (2, 1, 8, 8, 8)
    assert (got - want).abs().max().item() < 1e-4


def test_ss_decoder_fp16_blocks_keep_float32_io() -> None:
    model = rerandomise(build("ss_tiny_group")).eval()
    assert model.blocks[0].conv1.weight.dtype == torch.float16
    assert model.input_layer.weight.dtype == torch.float32
    assert model.out_layer[0].weight.dtype == torch.float32
    with torch.no_grad():
        out = model(torch.randn(1, 4, 4, 4, 4))
    assert out.dtype == torch.float32 and out.shape == (1, 1, 8, 8, 8)
    assert torch.isfinite(out).all()


# -- SLat decoders: dense equivalence on a fully occupied grid -------------------------------------
def _channels_last_conv(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Zero-padded dense conv3d of channels-last ``[B, X, Y, Z, C]`` with the sparse weight layout."""
    out = F.conv3d(h.permute(0, 4, 1, 2, 3), weight.permute(0, 4, 1, 2, 3), bias, padding=1)
    return out.permute(0, 2, 3, 4, 1)


def _dense_c2s(h: torch.Tensor) -> torch.Tensor:
    """``[B, X, Y, Z, 8C]`` → ``[B, 2X, 2Y, 2Z, C]``: channel block ``dx + 2dy + 4dz`` → child ``(dx, dy, dz)``."""
    b, x, y, z, c8 = h.shape
    h = h.reshape(b, x, y, z, 2, 2, 2, c8 // 8)  # block index j = dz*4 + dy*2 + dx → dims (dz, dy, dx)
    h = h.permute(0, 1, 6, 2, 5, 3, 4, 7)  # b, x, dx, y, dy, z, dz, c
    return h.reshape(b, 2 * x, 2 * y, 2 * z, c8 // 8)


def _dense_unet_decoder(sd: dict[str, torch.Tensor], num_blocks: list[int], latent: torch.Tensor) -> torch.Tensor:
    h = latent @ sd["from_latent.weight"].t() + sd["from_latent.bias"]
    for stage, count in enumerate(num_blocks):
        for i in range(count):  # ConvNeXt blocks
            p = f"blocks.{stage}.{i}."
            t = _channels_last_conv(h, sd[p + "conv.weight"], sd[p + "conv.bias"])
            t = F.layer_norm(t, t.shape[-1:], sd[p + "norm.weight"], sd[p + "norm.bias"], 1e-6)
            t = F.silu(t @ sd[p + "mlp.0.weight"].t() + sd[p + "mlp.0.bias"])
            h = t @ sd[p + "mlp.2.weight"].t() + sd[p + "mlp.2.bias"] + h
        if stage < len(num_blocks) - 1:  # channel-to-space block, every child kept
            p = f"blocks.{stage}.{count}."
            c_in = h.shape[-1]
            t = F.silu(F.layer_norm(h, (c_in,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6))
            t = _dense_c2s(_channels_last_conv(t, sd[p + "conv1.weight"], sd[p + "conv1.bias"]))
            c_out = t.shape[-1]
            t = F.silu(F.layer_norm(t, (c_out,), eps=1e-6))
            t = _channels_last_conv(t, sd[p + "conv2.weight"], sd[p + "conv2.bias"])
            h = t + _dense_c2s(h).repeat_interleave(c_out // (c_in // 8), dim=-1)
    h = F.layer_norm(h, h.shape[-1:])
    return h @ sd["output_layer.weight"].t() + sd["output_layer.bias"]


def _keep_all_children(model: nn.Module) -> None:
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("to_subdiv"):
                module.bias.fill_(100.0)  # type: ignore[operator]


def test_shape_decoder_equals_dense_recomputation_when_every_child_is_kept() -> None:
    model = rerandomise(build("fdg_tiny", use_fp16=False)).eval()
    _keep_all_children(model)
    latent = full_latent(4, res=3, batch=2)
    with torch.no_grad():
        h, subs = SparseUnetVaeDecoder.forward(model, latent, return_subs=True)  # the raw 7-channel head
        dense_latent = latent.feats.reshape(2, 3, 3, 3, 4)
        want = _dense_unet_decoder(model.state_dict(), FIXTURE["fdg_tiny"]["args"]["num_blocks"], dense_latent)
    assert h.feats.shape == (2 * 12**3, 7)
    assert [s.feats.shape for s in subs] == [(2 * 27, 8), (2 * 6**3, 8)]
    c = h.coords.long()
    got_dense = torch.zeros(2, 12, 12, 12, 7)
    got_dense[c[:, 0], c[:, 1], c[:, 2], c[:, 3]] = h.feats
    assert (got_dense - want).abs().max().item() < 1e-4


def test_guided_texture_decoder_equals_dense_recomputation() -> None:
    model = rerandomise(build("tex_tiny"), seed=3).eval()
    latent = full_latent(4, res=2, batch=1)
    with torch.no_grad():
        out = _run_guided_with_full_subdivision(model, latent)
        want = _dense_unet_decoder(model.state_dict(), [1, 1, 0], latent.feats.reshape(1, 2, 2, 2, 4))
    c = out.coords.long()
    got = torch.zeros(1, 8, 8, 8, 6)
    got[c[:, 0], c[:, 1], c[:, 2], c[:, 3]] = out.feats
    assert out.feats.shape == (8**3, 6)
    assert (got - want).abs().max().item() < 1e-4


def _run_guided_with_full_subdivision(model: nn.Module, latent: SparseTensor) -> SparseTensor:
    """Guide every upsampling with 'keep all': the guides are built stage by stage on the
    coordinates the guided decoder itself produces (children of all rows, reference order)."""
    guides = []
    coords = latent.coords
    for _ in range(2):
        guides.append(SparseTensor(torch.ones(coords.shape[0], 8), coords))
        j = torch.arange(8)
        child = coords.repeat_interleave(8, dim=0).clone()
        child[:, 1:] *= 2
        offsets = torch.stack([j % 2, j // 2 % 2, j // 4], 1).repeat(coords.shape[0], 1).to(torch.int32)
        child[:, 1:] += offsets
        coords = child
    out = model(latent, guide_subs=guides)
    assert isinstance(out, SparseTensor)
    return out


# -- SLat decoders: subdivision, guidance, cascade upsampling --------------------------------------
def _expected_children(coords: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    rows = []
    for p in range(coords.shape[0]):
        for j in range(8):
            if logits[p, j] > 0:
                rows.append(coords[p] * torch.tensor([1, 2, 2, 2]) + torch.tensor([0, j % 2, j // 2 % 2, j // 4]))
    return torch.stack(rows).to(torch.int32)


def test_predicted_subdivision_decides_the_output_voxels_in_reference_order() -> None:
    model = rerandomise(build("mixed_tiny"), seed=1).eval()
    latent = random_latent(4, res=4, batch=2)
    with torch.no_grad():
        out, subs = model(latent, return_subs=True)
    assert len(subs) == 2
    assert torch.equal(subs[0].coords, latent.coords)
    stage1 = _expected_children(latent.coords, subs[0].feats)
    assert torch.equal(subs[1].coords, stage1)
    assert torch.equal(out.coords, _expected_children(stage1, subs[1].feats))
    assert out.feats.shape == (out.coords.shape[0], 3) and out.feats.dtype == torch.float32
    assert out.spatial_shape == (16, 16, 16)
    assert [s.stop - s.start for s in out.layout] == [
        int((out.coords[:, 0] == b).sum()) for b in range(2)
    ]  # still grouped by batch
    with torch.no_grad():
        assert torch.equal(model.upsample(latent, upsample_times=1), stage1)
        assert torch.equal(model.upsample(latent, upsample_times=2), out.coords)
        assert torch.equal(model.upsample(latent, upsample_times=0), latent.coords)


def test_texture_decoder_guided_by_shape_subs_lands_on_shape_voxels() -> None:
    shape = rerandomise(build("fdg_tiny"), seed=2).eval()  # fp16 blocks, like the official decoder
    tex = rerandomise(build("tex_tiny"), seed=4).eval()
    shape_latent = random_latent(4, res=4, batch=2, seed=7)
    tex_latent = shape_latent.replace(torch.randn(shape_latent.feats.shape[0], 4))
    with torch.no_grad():
        fields, subs = shape.decode_fields(shape_latent, return_subs=True)
        pbr = tex(tex_latent, guide_subs=subs)
    assert subs[0].feats.dtype == torch.float16  # logits in the blocks' dtype, as the reference
    assert torch.equal(pbr.coords, fields.vertices.coords)  # row-aligned, not just the same set
    assert pbr.feats.shape == (fields.vertices.coords.shape[0], 6) and pbr.feats.dtype == torch.float32
    assert torch.isfinite(pbr.feats).all()
    with torch.no_grad():
        as_bool = tex(tex_latent, guide_subs=[s.replace(s.feats > 0) for s in subs])
    assert torch.equal(as_bool.feats, pbr.feats)


def test_fdg_fields_ranges_and_low_vram_gives_identical_results() -> None:
    model = rerandomise(build("fdg_tiny", use_fp16=False), seed=5).eval()
    latent = random_latent(4, res=4, batch=2, seed=1)
    with torch.no_grad():
        fields = model.decode_fields(latent)
        raw = SparseUnetVaeDecoder.forward(model, latent)
        model.low_vram = True
        assert all(m.chunk_elements < 1 << 27 for m in model.modules() if isinstance(m, SparseConv3d))
        again = model.decode_fields(latent)
        model.low_vram = False
    v, i, q = fields.vertices.feats, fields.intersected.feats, fields.quad_lerp.feats
    assert v.shape[1:] == (3,) and i.shape[1:] == (3,) and q.shape[1:] == (1,)
    assert i.dtype == torch.bool
    assert torch.allclose(v, 2 * torch.sigmoid(raw.feats[:, :3]) - 0.5)  # margin 0.5: [-0.5, 1.5]
    assert torch.equal(i, raw.feats[:, 3:6] > 0)
    assert torch.allclose(q, F.softplus(raw.feats[:, 6:7])) and bool((q >= 0).all())
    assert torch.allclose(again.vertices.feats, v, atol=1e-6)


def test_fdg_forward_hands_each_batch_item_to_dual_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def fake_to_mesh(coords, dual_vertices, intersected, quad_lerp, aabb, grid_size):  # type: ignore[no-untyped-def]
        calls.append(dict(coords=coords, v=dual_vertices, i=intersected, q=quad_lerp, aabb=aabb, grid=grid_size))
        return coords.float()[:, :3] / grid_size, torch.zeros((2, 3), dtype=torch.int64)

    fake = types.ModuleType("meshforge.backends.trellis2.dual_grid")
    fake.flexible_dual_grid_to_mesh = fake_to_mesh  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "meshforge.backends.trellis2.dual_grid", fake)
    model = rerandomise(build("fdg_tiny"), seed=6).eval()
    model.set_resolution(64)
    latent = random_latent(4, res=4, batch=2, seed=2)
    with torch.no_grad():
        meshes, subs = model(latent, return_subs=True)
        fields = model.decode_fields(latent)
    assert len(meshes) == 2 and all(isinstance(m, DecodedMesh) for m in meshes) and len(subs) == 2
    for call, rows in zip(calls, fields.vertices.layout, strict=True):
        assert torch.equal(call["coords"], fields.vertices.coords[rows, 1:])
        assert torch.equal(call["i"], fields.intersected.feats[rows])
        assert call["v"].shape == (rows.stop - rows.start, 3) and call["q"].shape == (rows.stop - rows.start, 1)
        assert call["grid"] == 64 and call["aabb"] == [[-0.5] * 3, [0.5] * 3]
    assert meshes[0].vertices.dtype == torch.float32 and meshes[0].faces.dtype == torch.int64


def test_decoder_argument_errors() -> None:
    shape, tex = build("mixed_tiny"), build("tex_tiny")
    latent = random_latent(4, res=3, batch=1)
    with pytest.raises(ValueError):
        shape(latent, guide_subs=[latent])
    with pytest.raises(ValueError):
        tex(latent, return_subs=True)
    with pytest.raises(ValueError):
        tex(latent)  # a guided decoder needs its subdivisions
    with pytest.raises(ValueError):
        tex.upsample(latent, 1)
    with pytest.raises(ValueError):
        build("tex_tiny", block_type=["NoSuchBlock"] * 3)


def test_decoder_from_config_builds_by_reference_class_name() -> None:
    cfg = FIXTURE["tex_official_256"]
    model = decoder_from_config({"name": cfg["class"], "args": cfg["args"]}, device="meta")
    assert isinstance(model, SparseUnetVaeDecoder) and not model.pred_subdiv
    assert next(model.parameters()).device.type == "meta"
    tiny = decoder_from_config({"name": "SparseStructureDecoder", "args": FIXTURE["ss_tiny"]["args"]})
    assert isinstance(tiny, SparseStructureDecoder) and tiny.input_layer.weight.device.type == "cpu"
    with pytest.raises(ValueError):
        decoder_from_config({"name": "SparseStructureEncoder", "args": {}})
