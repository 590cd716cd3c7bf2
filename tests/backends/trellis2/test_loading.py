"""Locating and loading weights in the official TRELLIS.2 layout, with a stand-in model class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from meshforge.backends.trellis2 import loading
from meshforge.backends.trellis2.loading import (
    DEFAULT_REPO,
    MODEL_NAMES,
    PIPELINE_JSON,
    SS_DECODER_REF,
    build_model,
    check_keys,
    find_weights,
    load_model,
    locate_weights,
    register_model_class,
)
from meshforge.errors import BackendError


class StandIn(torch.nn.Module):
    """A tiny model with the constructor-args convention of the real ones."""

    def __init__(self, width: int, depth: int = 1) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(width, width) for _ in range(depth)])
        self.norm = torch.nn.LayerNorm(width)
        torch.nn.init.zeros_(self.blocks[0].weight)  # as the reference zero-inits some layers


register_model_class("StandIn", StandIn)


def _ckpt(base: Path, ref: str, seed: int, width: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = StandIn(width, depth=2)
    state = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    path = base / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_name(path.name + ".json").write_text(
        json.dumps({"name": "StandIn", "args": {"width": width, "depth": 2}})
    )
    save_file(state, str(path.with_name(path.name + ".safetensors")))
    return state


def _refs() -> dict[str, str]:
    refs = {name: f"ckpts/{name}_ckpt" for name in MODEL_NAMES}
    refs["sparse_structure_decoder"] = SS_DECODER_REF
    return refs


def _folder(base: Path, *, v1_inside: bool = True) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    refs = _refs()
    (base / PIPELINE_JSON).write_text(json.dumps({"name": "Trellis2ImageTo3DPipeline", "args": {"models": refs}}))
    for i, (name, ref) in enumerate(refs.items()):
        if name == "sparse_structure_decoder" and not v1_inside:
            continue
        _ckpt(base, ref, i)
    return base


@pytest.fixture(autouse=True)
def _empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def test_folder_layout_is_located_with_the_v1_decoder_inside(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "w")
    files = locate_weights(folder)
    assert files.source == "folder" and files.root == folder
    assert set(files.models) == set(MODEL_NAMES)
    dec = files.models["sparse_structure_decoder"]
    assert dec.config == folder / f"{SS_DECODER_REF}.json" and dec.weights.suffix == ".safetensors"
    assert files.dinov3_id == "facebook/dinov3-vitl16-pretrain-lvd1689m"


def test_load_model_is_strict_and_exact(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    state = _ckpt(folder, "ckpts/a", 3)
    files = loading.ModelFiles("a", "ckpts/a", folder / "ckpts/a.json", folder / "ckpts/a.safetensors")
    model = load_model(files)
    assert isinstance(model, StandIn) and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


def test_missing_weights_name_the_pull_command(tmp_path: Path) -> None:
    with pytest.raises(BackendError) as err:
        locate_weights(tmp_path / "nowhere")
    msg = str(err.value)
    assert "\n" not in msg and "meshforge models pull trellis2" in msg and "--weights" in msg
    with pytest.raises(BackendError) as err:
        locate_weights(None)
    msg = str(err.value)
    assert DEFAULT_REPO in msg and "not in the local Hugging Face cache" in msg and "models pull trellis2" in msg
    assert find_weights(None) is None


def test_wrong_layout_names_the_missing_file(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    with pytest.raises(BackendError, match=r"has no pipeline\.json"):
        locate_weights(folder)
    _folder(folder)
    (folder / "ckpts" / "shape_slat_decoder_ckpt.safetensors").unlink()
    with pytest.raises(BackendError, match=r"lacks ckpts/shape_slat_decoder_ckpt\.safetensors"):
        locate_weights(folder)
    (folder / "ckpts" / "tex_slat_decoder_ckpt.json").unlink()
    with pytest.raises(BackendError, match=r"lacks ckpts/(shape|tex)_slat_decoder_ckpt"):
        locate_weights(folder)


def test_missing_v1_decoder_names_its_repository(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "w", v1_inside=False)
    with pytest.raises(BackendError) as err:
        locate_weights(folder)
    msg = str(err.value)
    assert "microsoft/TRELLIS-image-large" in msg and "sparse_structure_decoder" in msg and "pull trellis2" in msg


def test_truncated_and_corrupt_safetensors_name_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    _ckpt(folder, "ckpts/a", 0, width=32)
    files = loading.ModelFiles("a", "ckpts/a", folder / "ckpts/a.json", folder / "ckpts/a.safetensors")
    data = files.weights.read_bytes()
    files.weights.write_bytes(data[:-100])
    with pytest.raises(BackendError, match=r"a\.safetensors is truncated"):
        load_model(files)
    files.weights.write_bytes(data[:5])
    with pytest.raises(BackendError, match=r"a\.safetensors is truncated"):
        load_model(files)
    files.weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json!!!!!!" + data[24:])
    with pytest.raises(BackendError, match=r"a\.safetensors is corrupt"):
        load_model(files)


def test_key_mismatch_names_keys(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    state = _ckpt(folder, "ckpts/a", 0)
    state["extra.weight"] = state.pop("blocks.1.bias")
    save_file(state, str(folder / "ckpts/a.safetensors"))
    files = loading.ModelFiles("a", "ckpts/a", folder / "ckpts/a.json", folder / "ckpts/a.safetensors")
    with pytest.raises(BackendError) as err:
        load_model(files)
    msg = str(err.value)
    assert "1 missing ('blocks.1.bias')" in msg and "1 unexpected ('extra.weight')" in msg
    model = build_model("StandIn", {"width": 4, "depth": 2})
    bad = dict(model.state_dict())
    bad["norm.weight"] = torch.ones(5)
    with pytest.raises(BackendError, match=r"wrong shape \('norm\.weight': \(5,\), model \(4,\)\)"):
        check_keys(model, bad, "x")


def test_unknown_class_and_bad_args(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"unknown TRELLIS\.2 model class"):
        build_model("Nope", {})
    with pytest.raises(BackendError, match="cannot build StandIn"):
        build_model("StandIn", {"widht": 3})


def _hub_file(cache: Path, repo: str, filename: str, data: bytes) -> None:
    folder = cache / ("models--" + repo.replace("/", "--"))
    snap = folder / "snapshots" / ("1" * 40) / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    snap.write_bytes(data)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text("1" * 40)


def test_hub_cache_layout_with_the_v1_decoder_in_its_own_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _folder(tmp_path / "src")
    cache = tmp_path / "cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for path in src.rglob("*"):
        if path.is_file():
            rel = path.relative_to(src).as_posix()
            if rel.startswith("microsoft/TRELLIS-image-large/"):
                _hub_file(cache, "microsoft/TRELLIS-image-large", rel.split("/", 2)[2], path.read_bytes())
            else:
                _hub_file(cache, DEFAULT_REPO, rel, path.read_bytes())
    files = locate_weights(None)
    assert files.source == "hub" and files.location == DEFAULT_REPO
    dec = files.models["sparse_structure_decoder"]
    assert "models--microsoft--TRELLIS-image-large" in str(dec.weights)
    assert isinstance(load_model(dec), StandIn)


class WithPhases(StandIn):
    """A model with a complex buffer derived from its arguments (as the reference's rope_phases)."""

    def __init__(self, width: int, depth: int = 1) -> None:
        super().__init__(width, depth)
        self.register_buffer("rope_phases", torch.polar(torch.ones(3), torch.arange(3.0)))


register_model_class("WithPhases", WithPhases)


def test_derived_complex_buffers_may_be_absent(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    state = _ckpt(folder, "ckpts/a", 0)
    (folder / "ckpts/a.json").write_text(json.dumps({"name": "WithPhases", "args": {"width": 4, "depth": 2}}))
    files = loading.ModelFiles("a", "ckpts/a", folder / "ckpts/a.json", folder / "ckpts/a.safetensors")
    model = load_model(files)
    assert torch.equal(model.rope_phases, torch.polar(torch.ones(3), torch.arange(3.0)))
    assert torch.equal(model.norm.weight, state["norm.weight"])


def test_full_size_models_match_the_reference_manifest() -> None:
    """Our networks built with the official args on the meta device have the reference's state_dict keys and
    shapes (``manifest_keys.json``, derived from the reference's classes): official checkpoints load strictly."""
    import importlib.util
    from importlib import resources

    for module in ("flows", "decoders"):
        if importlib.util.find_spec(f"meshforge.backends.trellis2.{module}") is None:
            pytest.skip(f"the networks ({module}.py) are not in this tree")
    from meshforge.backends.trellis2.random_weights import model_specs

    manifest = json.loads(resources.files("meshforge.backends.trellis2").joinpath("manifest_keys.json").read_text())
    for ref, spec in model_specs("full").items():
        with torch.device("meta"):
            model = build_model(spec["name"], spec["args"], initialise=False)
        own = {k: list(v.shape) for k, v in model.state_dict().items()}
        want = {k: v[0] for k, v in manifest["models"][ref]["keys"].items()}
        assert own == want, ref
