"""DINOv3 conditioning: a tiny random DINOv3 saved in the official Hugging Face layout and loaded back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from meshforge.backends.trellis2.conditioning import (
    DINOV3_ENV,
    DINOV3_ID,
    DinoV3Conditioner,
    crop_object,
    find_dinov3,
    images_to_tensor,
    transformer_layers,
)
from meshforge.errors import BackendError

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_register_tokens": 4,
    "patch_size": 16,
    "image_size": 64,
}


@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = DINOv3ViTModel(DINOv3ViTConfig(**TINY)).eval()
    with torch.no_grad():  # non-trivial affine final norm, so skipping it is visible
        model.norm.weight.uniform_(0.5, 2.0)
        model.norm.bias.uniform_(-1.0, 1.0)
    folder = tmp_path_factory.mktemp("dinov3")
    model.save_pretrained(folder)
    return folder


def _picture(seed: int = 0, size: int = 80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[20:60, 10:50, 3] = 255
    return rgba


def test_saved_layout_is_the_official_one(tiny_dino: Path) -> None:
    keys = set(load_file(str(tiny_dino / "model.safetensors")))
    assert "layer.0.attention.q_proj.weight" in keys  # 4.x / hub key names, not model.layer.*
    assert "embeddings.register_tokens" in keys and "norm.weight" in keys


@pytest.mark.parametrize("side", [32, 64])
def test_features_shape_and_equal_to_transformers_forward(tiny_dino: Path, side: int) -> None:
    cond = DinoV3Conditioner.load(tiny_dino)
    reference = DINOv3ViTModel.from_pretrained(str(tiny_dino)).eval()
    pixels = torch.rand(2, 3, side, side)
    tokens = cond(pixels)
    patches = (side // 16) ** 2
    assert tokens.shape == (2, 1 + TINY["num_register_tokens"] + patches, TINY["hidden_size"])
    assert tokens.dtype == torch.float32
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = reference((pixels - mean) / std, output_hidden_states=True)
    last = out.hidden_states[-1]
    expected = torch.nn.functional.layer_norm(last, last.shape[-1:])
    torch.testing.assert_close(tokens, expected, rtol=0, atol=1e-5)
    # normalised without the model's affine final norm: not transformers' last_hidden_state
    assert not torch.allclose(tokens, out.last_hidden_state, atol=1e-2)
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(tokens.shape[:2]), rtol=0, atol=1e-5)


def test_pil_input_is_resized_to_the_resolution(tiny_dino: Path) -> None:
    cond = DinoV3Conditioner.load(tiny_dino)
    picture = crop_object(_picture())
    a = cond([picture], 32)
    b = cond([picture], 64)
    assert a.shape[1] == 1 + 4 + 4 and b.shape[1] == 1 + 4 + 16
    pixels = images_to_tensor([picture], 64)
    torch.testing.assert_close(cond(pixels), b)


def test_transformer_layers_finds_both_layouts(tiny_dino: Path) -> None:
    model = DINOv3ViTModel.from_pretrained(str(tiny_dino))
    assert transformer_layers(model) is model.model.layer

    class Old(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.ModuleList([torch.nn.Identity()])

    old = Old()
    assert transformer_layers(old) is old.layer
    with pytest.raises(BackendError):
        transformer_layers(torch.nn.Linear(1, 1))


def test_crop_object_is_the_square_box_premultiplied() -> None:
    rgba = _picture()
    rgba[20:60, 10:50, 3] = 0
    rgba[30:50, 20:40, 3] = 255  # a 20×20 opaque square
    rgba[30, 20, 3] = 128  # below 0.8: outside the box but still premultiplied
    out = np.asarray(crop_object(rgba))
    # box x 20..39, y 30..49 → centre (29.5, 39.5), half 19 // 2 = 9 → PIL rounds the crop box
    # (20.5, 30.5, 38.5, 48.5) half-to-even → columns 20..37, rows 30..47
    assert out.shape == (18, 18, 3)
    window = rgba[30:48, 20:38].astype(np.float32) / 255
    expected = window[:, :, :3] * window[:, :, 3:] * 255
    np.testing.assert_array_equal(out, expected.astype(np.uint8))
    with pytest.raises(ValueError):
        crop_object(np.zeros((8, 8, 4), np.uint8))


def test_find_dinov3_order_and_errors(tiny_dino: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DINOV3_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(BackendError) as err:
        find_dinov3(weights_folder=tmp_path)
    message = str(err.value)
    assert "\n" not in message and DINOV3_ID in message and "licence" in message and DINOV3_ENV in message
    assert find_dinov3(tiny_dino) == tiny_dino
    monkeypatch.setenv(DINOV3_ENV, str(tiny_dino))
    assert find_dinov3() == tiny_dino
    monkeypatch.setenv(DINOV3_ENV, str(tmp_path / "nope"))
    with pytest.raises(BackendError, match="does not exist"):
        find_dinov3()
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(BackendError, match=r"model\.safetensors"):
        find_dinov3(tmp_path / "half")
    monkeypatch.delenv(DINOV3_ENV)
    # inside the weights folder, as `meshforge models random` writes it
    inside = tmp_path / "w" / DINOV3_ID
    inside.mkdir(parents=True)
    for f in tiny_dino.iterdir():
        (inside / f.name).write_bytes(f.read_bytes())
    assert find_dinov3(weights_folder=tmp_path / "w") == inside


def test_find_dinov3_in_the_hub_cache(tiny_dino: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DINOV3_ENV, raising=False)
    repo = tmp_path / "hub" / ("models--" + DINOV3_ID.replace("/", "--"))
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for f in tiny_dino.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert find_dinov3() == snap
    assert DinoV3Conditioner.load().source == str(snap)


def test_load_rejects_key_mismatch_and_corrupt_files(tiny_dino: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_bytes((tiny_dino / "config.json").read_bytes())
    state = load_file(str(tiny_dino / "model.safetensors"))
    del state["layer.1.norm2.weight"]
    save_file(state, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(BackendError, match=r"do not match.*layer\.1\.norm2\.weight"):
        DinoV3Conditioner.load(bad)
    data = (tiny_dino / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(BackendError, match="cannot load DINOv3"):
        DinoV3Conditioner.load(bad)
