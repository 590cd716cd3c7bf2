"""``meshforge models list|pull|random`` for trellis2, and the random checkpoint writer (real networks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from scipy import ndimage

pytest.importorskip("transformers")

from meshforge.backends.trellis2 import loading
from meshforge.backends.trellis2.conditioning import DINOV3_ID, DinoV3Conditioner
from meshforge.backends.trellis2.flows import SLatFlowModel, SparseStructureFlowModel
from meshforge.backends.trellis2.loading import SS_DECODER_REF, locate_weights
from meshforge.backends.trellis2.random_weights import (
    TINY_MODELS,
    full_dinov3_config,
    model_specs,
    shape_sparse_structure_decoder,
)
from meshforge.backends.trellis2.ss_decoder import SparseStructureDecoder
from meshforge.cli import main


@pytest.fixture(autouse=True)
def _isolated_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("MESHFORGE_DINOV3", raising=False)


def test_models_random_tiny_writes_the_official_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w"
    assert main(["models", "random", "trellis2", "--size", "tiny", "-o", str(out), "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    pipeline = json.loads((out / "pipeline.json").read_text())
    assert pipeline["name"] == "Trellis2ImageTo3DPipeline"
    assert pipeline["args"]["models"]["sparse_structure_decoder"] == SS_DECODER_REF
    assert len(pipeline["args"]["shape_slat_normalization"]["mean"]) == 32
    assert (out / f"{SS_DECODER_REF}.safetensors").is_file()
    files = locate_weights(out)
    assert files.source == "folder" and len(files.models) == 8
    for spec_ref, spec in TINY_MODELS.items():
        assert json.loads((out / f"{spec_ref}.json").read_text()) == spec
    for name, mf in files.models.items():
        model = loading.load_model(mf)  # strict keys
        if isinstance(model, SLatFlowModel | SparseStructureFlowModel):
            state = load_file(str(mf.weights))
            zero = [k for k, v in state.items() if v.ndim >= 2 and not v.abs().max() > 0]
            assert zero == [], f"{name}: zero-initialised weights left: {zero}"
            assert not state["out_layer.bias"].abs().max() > 0  # no constant drift
    dino = DinoV3Conditioner.load(weights_folder=out)
    assert dino.source == str(out / DINOV3_ID)
    assert dino(torch.rand(1, 3, 32, 32)).shape == (1, 1 + 4 + 4, 64)


def test_sparse_structure_decoder_shaping_gives_lumps() -> None:
    args = TINY_MODELS[SS_DECODER_REF]["args"]
    torch.manual_seed(0)
    model = SparseStructureDecoder(**args).eval()
    shape_sparse_structure_decoder(model, torch.Generator().manual_seed(0), occupancy=0.03)
    for seed in range(3):
        z = torch.randn(1, 8, 16, 16, 16, generator=torch.Generator().manual_seed(10 + seed))
        with torch.no_grad():
            occupied = model(z)[0, 0] > 0
        fraction = float(occupied.float().mean())
        assert 0.002 < fraction < 0.1  # neither empty nor full
        idx = torch.argwhere(occupied)
        assert int(idx.min()) > 1 and int(idx.max()) < 62  # pulled off the grid's faces
        _, n_lumps = ndimage.label(occupied.numpy())
        assert 1 <= n_lumps <= 12  # a few lumps, not salt and pepper


def test_full_specs_are_the_official_args() -> None:
    specs = model_specs("full")
    flow = specs["ckpts/ss_flow_img_dit_1_3B_64_bf16"]
    assert flow["name"] == "SparseStructureFlowModel" and flow["args"]["model_channels"] == 1536
    assert flow["args"]["num_blocks"] == 30 and flow["args"]["resolution"] == 16
    assert specs["ckpts/slat_flow_img2shape_dit_1_3B_1024_bf16"]["args"]["resolution"] == 64
    assert specs["ckpts/slat_flow_imgshape2tex_dit_1_3B_512_bf16"]["args"]["in_channels"] == 64
    assert specs[SS_DECODER_REF]["args"]["channels"] == [512, 128, 32]
    assert set(specs) == set(TINY_MODELS)
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    with torch.device("meta"):
        dino = DINOv3ViTModel(DINOv3ViTConfig(**full_dinov3_config()))
    n = sum(p.numel() for p in dino.parameters())
    assert 300e6 < n < 310e6  # ViT-L/16: ~303 M parameters
    with pytest.raises(Exception, match="unknown random checkpoint size"):
        model_specs("huge")


def test_models_list_shows_trellis2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--json"]) == 0
    rows = {r["backend"]: r for r in json.loads(capsys.readouterr().out)}
    row = rows["trellis2"]
    assert row["needs_weights"] and not row["present"] and row["location"] is None
    assert "meshforge models pull trellis2" in row["note"]


def test_models_list_with_a_folder_names_a_missing_dinov3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w"
    assert main(["models", "random", "trellis2", "-o", str(out), "--no-dinov3"]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--json", "--weights", str(out)]) == 0
    row = {r["backend"]: r for r in json.loads(capsys.readouterr().out)}["trellis2"]
    assert not row["present"] and row["location"] == str(out) and "DINOv3" in row["note"]
    assert "licence" in row["note"]


def test_models_pull_offline_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["models", "pull", "trellis2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "HF_HUB_OFFLINE" in err and "TRELLIS.2" in err


def test_models_pull_without_network_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert main(["models", "pull", "trellis2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot be reached" in err


def test_models_pull_fetches_both_repositories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import huggingface_hub

    from meshforge.backends.trellis2 import hub
    from meshforge.backends.trellis2.random_weights import official_pipeline

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_reachable", lambda url, timeout=3.0: True)
    calls: list[tuple[str, str, str | None]] = []

    def fake_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        calls.append((repo_id, filename, kwargs.get("local_dir")))
        path = Path(kwargs.get("local_dir") or tmp_path / "cache" / repo_id) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(official_pipeline()) if filename == "pipeline.json" else "x")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    local = tmp_path / "local"
    assert main(["models", "pull", "trellis2", "--local-dir", str(local)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(local) and "licence" in captured.err and DINOV3_ID in captured.err
    repos = {(repo, name) for repo, name, _ in calls}
    assert ("microsoft/TRELLIS.2-4B", "pipeline.json") in repos
    assert ("microsoft/TRELLIS.2-4B", "ckpts/shape_dec_next_dc_f16c32_fp16.safetensors") in repos
    assert ("microsoft/TRELLIS-image-large", "ckpts/ss_dec_conv3d_16l8_fp16.safetensors") in repos
    assert len(calls) == 1 + 2 * 8
    v1_dir = {d for repo, _, d in calls if repo == "microsoft/TRELLIS-image-large"}
    assert v1_dir == {str(local / "microsoft/TRELLIS-image-large")}  # where pipeline.json's reference points
    assert (local / f"{SS_DECODER_REF}.safetensors").is_file()


def test_models_random_on_a_missing_gpu_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w"
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last device PyTorch sees
    assert main(["models", "random", "trellis2", "-o", str(out), "--no-dinov3", "--device", missing]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and missing in err
    assert not (out / "pipeline.json").exists()  # nothing half-written
    assert main(["models", "random", "trellis2", "-o", str(out), "--no-dinov3", "--device", "gpu0"]) == 1
    assert "choices" in capsys.readouterr().err


def test_models_random_device_cpu_is_the_default_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["models", "random", "trellis2", "-o", str(a), "--no-dinov3", "--seed", "1"]) == 0
    assert main(["models", "random", "trellis2", "-o", str(b), "--no-dinov3", "--seed", "1", "--device", "cpu"]) == 0
    for file in sorted(a.rglob("*.safetensors")):
        assert file.read_bytes() == (b / file.relative_to(a)).read_bytes(), file.name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_models_random_built_on_cuda_loads_strictly(tmp_path: Path) -> None:
    out = tmp_path / "w"
    assert main(["models", "random", "trellis2", "-o", str(out), "--no-dinov3", "--device", "cuda"]) == 0
    files = locate_weights(out)
    for name, mf in files.models.items():
        model = loading.load_model(mf)  # strict keys, on the host
        assert all(p.device.type == "cpu" for p in model.parameters()), name
        if isinstance(model, SLatFlowModel | SparseStructureFlowModel):
            state = load_file(str(mf.weights))
            assert not [k for k, v in state.items() if v.ndim >= 2 and not v.abs().max() > 0], name
