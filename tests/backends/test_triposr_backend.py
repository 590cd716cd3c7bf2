"""TripoSR backend plumbing: config parsing, locating and loading weights (folder and Hugging Face cache),
errors, ``auto`` selection, ``models list``/``pull``, and (slow) the CLI on a full-size random checkpoint."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from meshforge.backends import BackendError, resolve_name
from meshforge.backends import weights as models_mod
from meshforge.backends.triposr.backend import TripoSRBackend
from meshforge.backends.triposr.config import TripoSRConfig, load_config_file, parse_config, resolve_interpolations
from meshforge.backends.triposr.loading import find_weights, locate_weights
from meshforge.errors import InputError

from .triposr_helpers import CHAIR, FIXTURES, OFFICIAL_CONFIG_YAML, manifest, write_random_checkpoint

REPO = "someone/TripoSR-test"


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache with downloads disabled."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def fake_hub_snapshot(cache: Path, repo: str, files: dict[str, Path]) -> Path:
    """Lay files out as huggingface_hub's cache does: blobs named by sha256, snapshot symlinks, refs/main."""
    root = cache / ("models--" + repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    for name, src in files.items():
        data = src.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).symlink_to(os.path.relpath(blob, (snap / name).parent))
    return snap


def fixture_files(checkpoint: str = "model.ckpt") -> dict[str, Path]:
    return {
        "config.yaml": FIXTURES / "config.yaml",
        "dino_config/config.json": FIXTURES / "dino_config" / "config.json",
        checkpoint: FIXTURES / checkpoint,
    }


def copy_fixture(folder: Path, checkpoint: str | None = "model.safetensors", config: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if config:
        shutil.copy(FIXTURES / "config.yaml", folder)
    shutil.copytree(FIXTURES / "dino_config", folder / "dino_config")
    if checkpoint:
        shutil.copy(FIXTURES / checkpoint, folder)
    return folder


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


# ------------------------------------------------------------------------------------------------ config


def test_config_yaml_interpolation_and_official_values(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "config.yaml"
    path.write_text(OFFICIAL_CONFIG_YAML)
    cfg = load_config_file(path)
    assert cfg.backbone.in_channels == 1024 == cfg.tokenizer.num_channels  # ${tokenizer.num_channels}
    official = parse_config(manifest()["config"])
    assert official.image_tokenizer.pretrained_model_name_or_path == "facebook/dino-vitb16"
    assert cfg == dataclasses.replace(official, image_tokenizer=cfg.image_tokenizer)
    assert cfg.renderer.radius == 0.87 and cfg.decoder.n_hidden_layers == 9
    tiny = load_config_file(FIXTURES / "config.yaml")
    assert isinstance(tiny, TripoSRConfig) and tiny.backbone.in_channels == 64


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["backbone"].update(in_channels="${tokenizer.nope}"), "missing key"),
        (lambda c: c["backbone"].update(in_channels="x${tokenizer.num_channels}"), "unsupported interpolation"),
        (lambda c: c["decoder"].update(n_layers=3), "unknown key 'n_layers'"),
        (lambda c: c.update(decoder_cls="my.Decoder"), "only 'tsr.models.network_utils.NeRFMLP'"),
        (lambda c: c["backbone"].update(activation_fn="gelu"), "not implemented"),
        (lambda c: c["decoder"].update(in_channels=121), "decoder.in_channels"),
        (lambda c: c["renderer"].update(radius="big"), "must be float"),
        (lambda c: c.pop("renderer"), "missing key"),
    ],
)
def test_config_errors(edit, message):
    import copy

    raw = copy.deepcopy(manifest()["config"])
    raw["backbone"]["in_channels"] = "${tokenizer.num_channels}"
    edit(raw)
    with pytest.raises(BackendError, match=message) as info:
        parse_config(resolve_interpolations(raw))
    one_line(info.value)


# --------------------------------------------------------------------------------------- locating weights


def test_locate_a_folder_prefers_safetensors(tmp_path):
    files = locate_weights(FIXTURES)
    assert files.checkpoint.name == "model.safetensors" and files.source == "folder"
    only_ckpt = copy_fixture(tmp_path / "w", "model.ckpt")
    assert locate_weights(str(only_ckpt)).checkpoint.name == "model.ckpt"
    assert TripoSRBackend.weights_present(str(only_ckpt)) == (
        all(__import__("importlib").util.find_spec(m) for m in ("torch", "yaml"))
    )


def test_missing_folder_config_or_checkpoint(tmp_path, empty_hub):
    with pytest.raises(BackendError, match="folder not found") as info:
        locate_weights(tmp_path / "nowhere" / "deeper")
    one_line(info.value)
    no_config = copy_fixture(tmp_path / "a", config=False)
    with pytest.raises(BackendError, match=r"has no config.yaml"):
        locate_weights(no_config)
    no_ckpt = copy_fixture(tmp_path / "b", checkpoint=None)
    with pytest.raises(BackendError, match=r"neither model.safetensors nor model.ckpt"):
        locate_weights(no_ckpt)
    a_file = tmp_path / "model.ckpt"
    a_file.write_bytes(b"x")
    with pytest.raises(BackendError, match="must be a folder"):
        locate_weights(a_file)
    for bad in (tmp_path / "nowhere", no_config, no_ckpt):
        assert find_weights(bad) is None and not TripoSRBackend.weights_present(bad)


def test_hub_id_offline_with_an_empty_cache(empty_hub):
    pytest.importorskip("huggingface_hub")
    with pytest.raises(BackendError) as info:
        locate_weights(REPO)
    text = one_line(info.value)
    assert REPO in text and "HF_HUB_OFFLINE" in text and "meshforge models pull triposr" in text
    assert not TripoSRBackend.weights_present(REPO) and not TripoSRBackend.weights_present(None)
    # auto falls back to inflate and says why
    name, note = resolve_name("auto", None)
    assert name == "inflate" and note is not None and "triposr" in note


def test_hub_id_found_in_the_cache(empty_hub):
    pytest.importorskip("huggingface_hub")
    snap = fake_hub_snapshot(empty_hub, REPO, fixture_files("model.ckpt"))
    files = locate_weights(REPO)
    assert files.source == "hub" and files.location == REPO
    assert files.config.parent == snap and files.checkpoint.name == "model.ckpt"


def test_models_list(tmp_path, empty_hub):
    pytest.importorskip("huggingface_hub")
    statuses = {s.backend: s for s in models_mod.list_models()}
    assert list(statuses)[:1] == ["triposr"] and "inflate" in statuses
    assert statuses["inflate"].present and not statuses["inflate"].needs_weights
    assert not statuses["triposr"].present and "meshforge models pull triposr" in statuses["triposr"].note
    text = models_mod.format_models(list(statuses.values()))
    assert text.splitlines()[0].startswith("triposr") and "missing" in text
    fake_hub_snapshot(empty_hub, "stabilityai/TripoSR", fixture_files("model.ckpt"))
    status = models_mod.list_models()[0]
    assert status.location is not None and status.location.endswith("model.ckpt")
    assert status.present == TripoSRBackend.weights_present(None)


def test_models_pull_offline_and_unknown(empty_hub):
    pytest.importorskip("huggingface_hub")
    with pytest.raises(BackendError, match="HF_HUB_OFFLINE") as info:
        models_mod.pull("triposr")
    one_line(info.value)
    with pytest.raises(BackendError, match="no downloadable weights"):
        models_mod.pull("inflate")


def test_models_pull_without_network_says_so_in_one_line(monkeypatch, empty_hub):
    pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(BackendError, match="cannot be reached") as info:
        models_mod.pull("triposr")
    one_line(info.value)


def test_models_pull_verifies_sha256(tmp_path, monkeypatch, empty_hub):
    pytest.importorskip("huggingface_hub")
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(models_mod, "_reachable", lambda url, timeout=3.0: True)
    snap = fake_hub_snapshot(empty_hub, "stabilityai/TripoSR", fixture_files("model.ckpt"))
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        return str(snap / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert models_mod.pull("triposr") == snap
    assert calls == [("stabilityai/TripoSR", "config.yaml"), ("stabilityai/TripoSR", "model.ckpt")]
    # a corrupted blob (its content no longer matches its sha256 name) is refused
    blob = (snap / "model.ckpt").resolve()
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(BackendError, match="does not match") as info:
        models_mod.pull("triposr")
    one_line(info.value)

    def failing(*args, **kwargs):
        raise OSError("Temporary failure in name resolution\nmore")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing)
    with pytest.raises(BackendError, match=r"cannot download config.yaml of 'stabilityai/TripoSR'") as info:
        models_mod.pull("triposr")
    one_line(info.value)


def test_import_meshforge_and_inflate_need_no_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import meshforge\n"
        "from meshforge.backends import resolve_name, load_backend\n"
        f"print(resolve_name('auto', {str(FIXTURES)!r})[0])\n"
        "load_backend('inflate')\n"
        "from meshforge.backends.weights import list_models\n"
        "print(list_models()[0].present)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["inflate", "False"]  # weights present but no torch: auto skips triposr


# ---------------------------------------------------------------------------------------- loading (torch)


def test_wrong_keys_and_bad_checkpoints(tmp_path):
    pytest.importorskip("safetensors")
    pytest.importorskip("yaml")
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from meshforge.backends.triposr.loading import load_model

    state = torch.load(FIXTURES / "model.ckpt", weights_only=True)
    renamed = dict(state)
    renamed["decoder.layers.6.extra"] = renamed.pop("decoder.layers.6.bias")
    folder = copy_fixture(tmp_path / "renamed", checkpoint=None)
    save_file(renamed, str(folder / "model.safetensors"))
    with pytest.raises(BackendError) as info:
        load_model(folder)
    text = one_line(info.value)
    assert "1 missing (e.g. 'decoder.layers.6.bias')" in text and "1 unexpected" in text

    reshaped = dict(state)
    reshaped["tokenizer.embeddings"] = reshaped["tokenizer.embeddings"][:, :32].contiguous()
    folder = copy_fixture(tmp_path / "reshaped", checkpoint=None)
    torch.save(reshaped, folder / "model.ckpt")
    with pytest.raises(BackendError, match=r"wrong shape .*'tokenizer.embeddings'") as info:
        load_model(folder)
    one_line(info.value)

    folder = copy_fixture(tmp_path / "corrupt", checkpoint=None)
    (folder / "model.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(BackendError, match="cannot read the TripoSR checkpoint") as info:
        load_model(folder)
    one_line(info.value)

    class Evil:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    folder = copy_fixture(tmp_path / "evil", checkpoint=None)
    torch.save({"x": Evil()}, folder / "model.ckpt")
    with pytest.raises(BackendError, match="cannot read the TripoSR checkpoint"):
        load_model(folder)  # weights_only=True refuses arbitrary objects

    folder = copy_fixture(tmp_path / "nodino", checkpoint="model.ckpt")
    shutil.rmtree(folder / "dino_config")
    with pytest.raises(BackendError, match="image encoder config 'dino_config' not found"):
        load_model(folder)


def test_load_from_the_hub_cache_offline(empty_hub):
    pytest.importorskip("huggingface_hub")
    pytest.importorskip("yaml")
    torch = pytest.importorskip("torch")
    from meshforge.backends.triposr.loading import load_model

    fake_hub_snapshot(empty_hub, REPO, fixture_files("model.ckpt"))
    model, files = load_model(REPO, download=False)
    ref, _ = load_model(FIXTURES)
    assert files.source == "hub"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def test_backend_options_and_devices():
    pytest.importorskip("yaml")
    pytest.importorskip("safetensors")
    torch = pytest.importorskip("torch")
    with pytest.raises(InputError, match="unknown device"):
        TripoSRBackend(weights=str(FIXTURES), device="tpu")
    with pytest.raises(InputError, match="roughness"):
        TripoSRBackend(weights=str(FIXTURES), roughness=2.0)
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="no CUDA device"):
            TripoSRBackend(weights=str(FIXTURES), device="cuda")
    backend = TripoSRBackend(weights=str(FIXTURES), device="auto", roughness=0.5)
    info = backend.info()
    assert info["name"] == "triposr" and info["parameters"] == 322_940 and info["weights_source"] == "folder"
    assert backend.camera.kind == "perspective" and backend.camera.fov_deg == 40.0 and backend.camera.distance == 1.9
    assert backend.input_size == 512
    assert resolve_name("auto", str(FIXTURES)) == ("triposr", None)
    with pytest.raises(InputError, match="square"):
        from meshforge.types import Image

        backend(Image(rgba=np.zeros((8, 9, 4), np.uint8)))


# ------------------------------------------------------------------------------------------ end to end (slow)


@pytest.fixture(scope="session")
def full_random_weights(tmp_path_factory):
    """A full-size (1.68 GB) random TripoSR checkpoint folder, written once per session, removed afterwards."""
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    folder = tmp_path_factory.mktemp("triposr-full-random")
    write_random_checkpoint(folder, CHAIR)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)  # pytest keeps old temp folders; do not keep 1.7 GB each


@pytest.mark.slow
def test_cli_generate_with_full_size_random_weights(full_random_weights, tmp_path, validate, capsys):
    from meshforge.cli import main
    from meshforge.export.glb import read_glb_json

    out = tmp_path / "out"
    args = ["generate", str(CHAIR), "-o", str(out), "--backend", "triposr", "--weights", str(full_random_weights)]
    args += ["--resolution", "64", "--faces", "2000", "--texture-size", "256", "--device", "cpu"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 0, err
    glb = (out / f"{CHAIR.stem}.glb").read_bytes()
    result = validate(glb)
    assert result["errors"] == 0 and result["warnings"] == 0, result["messages"]
    doc = read_glb_json(glb)
    assert doc["asset"]["extras"]["meshforge"]["backend"]["name"] == "triposr"
