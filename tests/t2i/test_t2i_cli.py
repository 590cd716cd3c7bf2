"""Text → image → 3D through ``meshforge generate --prompt`` with a tiny random FLUX pipeline on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from meshforge.cli import main
from meshforge.export.glb import read_glb_json

from ..test_cli import all_files, assert_one_error_line


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_random_t2i_writes_a_diffusers_pipeline_folder(tiny_t2i):
    index = json.loads((tiny_t2i / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline"
    for part in ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
        assert (tiny_t2i / part).is_dir(), part
    assert (tiny_t2i / "transformer" / "diffusion_pytorch_model.safetensors").stat().st_size > 1000
    card = json.loads((tiny_t2i / "meshforge_t2i.json").read_text())
    assert card["size"] == 64 and card["non_commercial"] is False


def test_models_random_t2i_refuses_a_non_empty_folder(capsys, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    code, _, err = run(capsys, "models", "random", "t2i", "-o", str(tmp_path))
    assert code == 1 and "not an empty folder" in err and len(err.splitlines()) == 1
    assert all_files(tmp_path) == ["keep.txt"]


def test_the_bar_prompt_to_picture_and_glb_or_refusal(capsys, tmp_path, tiny_t2i):
    out_dir = tmp_path / "out"
    code, _, err = run(
        capsys, "generate", "--prompt", "a wooden chair", "--t2i-model", str(tiny_t2i), "--backend", "inflate",
        "--save-intermediates", "-o", str(out_dir),
    )  # fmt: skip
    assert "Traceback" not in err
    picture = Image.open(out_dir / "a-wooden-chair.picture.png")
    assert picture.size == (64, 64)
    pixels = np.asarray(picture.convert("RGB"))
    assert pixels.std() > 0  # a generated picture, not a blank one
    if code == 0:
        glb = (out_dir / "a-wooden-chair.glb").read_bytes()
        assert read_glb_json(glb)["asset"]["version"] == "2.0"
        report = json.loads((out_dir / "a-wooden-chair.report.json").read_text())
        names = [s["name"] for s in report["stages"]]
        assert names[0] == "text_to_image" and "reconstruct" in names
        assert all(s["seconds"] >= 0 for s in report["stages"])
        assert report["info"]["text_to_image"]["prompt"] == "a wooden chair"
    else:  # random weights: a noise picture, refused in one line, naming the prompt and the picture
        line = assert_one_error_line(err, "a wooden chair", "a-wooden-chair.picture.png")
        assert "text_to_image" not in line
        assert not (out_dir / "a-wooden-chair.glb").exists()
        report = json.loads((out_dir / "a-wooden-chair.report.json").read_text())
        names = [s["name"] for s in report["stages"]]
        assert names[:2] == ["text_to_image", "prepare"], names
        t2i = report["info"]["text_to_image"]
        assert t2i["steps"] == 2 and t2i["width"] == 64 and t2i["seed"] == 0
        assert report["outcome"].startswith("refused")


def test_same_seed_same_picture_other_seed_other_picture(capsys, tmp_path, tiny_t2i):
    pics = []
    for seed, folder in ((0, "a"), (0, "b"), (1, "c")):
        run(
            capsys, "generate", "--prompt", "a lamp", "--t2i-model", str(tiny_t2i), "--backend", "inflate",
            "--seed", str(seed), "-o", str(tmp_path / folder), "-q",
        )  # fmt: skip
        pics.append(np.asarray(Image.open(tmp_path / folder / "a-lamp.picture.png")))
    assert np.array_equal(pics[0], pics[1])
    assert not np.array_equal(pics[0], pics[2])


def test_n_pictures_and_prompts_file_get_distinct_safe_names(capsys, tmp_path, tiny_t2i):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# props\nA red fire-extinguisher!\n\n../../etc/passwd\n")
    out_dir = tmp_path / "out"
    _, _, err = run(
        capsys, "generate", "--prompts", str(prompts), "-n", "2", "--t2i-model", str(tiny_t2i),
        "--backend", "inflate", "-o", str(out_dir),
    )  # fmt: skip
    assert "Traceback" not in err
    pictures = sorted(p.name for p in out_dir.glob("*.picture.png"))
    assert pictures == [
        "a-red-fire-extinguisher-1.picture.png",
        "a-red-fire-extinguisher-2.picture.png",
        "etc-passwd-1.picture.png",
        "etc-passwd-2.picture.png",
    ]
    a = np.asarray(Image.open(out_dir / pictures[0]))
    b = np.asarray(Image.open(out_dir / pictures[1]))
    assert not np.array_equal(a, b)  # picture i uses seed + i
    assert all(p.parent == out_dir for p in out_dir.rglob("*"))


@pytest.mark.parametrize(
    ("prompt", "needle"),
    [("   ", "the prompt is empty"), ("a chair " * 200, "more than 1000")],
)
def test_bad_prompt_is_one_line_and_writes_nothing(capsys, tmp_path, tiny_t2i, prompt, needle):
    out_dir = tmp_path / "out"
    code, _, err = run(
        capsys, "generate", "--prompt", prompt, "--t2i-model", str(tiny_t2i), "--backend", "inflate",
        "-o", str(out_dir),
    )  # fmt: skip
    assert code == 1
    assert_one_error_line(err, needle)
    assert all_files(out_dir) == []


def test_non_commercial_model_needs_the_flag(capsys, tmp_path):
    code, _, err = run(
        capsys, "generate", "--prompt", "a chair", "--t2i-model", "black-forest-labs/FLUX.1-dev", "-o", str(tmp_path)
    )
    assert code == 1
    assert_one_error_line(err, "FLUX.1-dev", "Non-Commercial", "--allow-non-commercial")
    assert all_files(tmp_path) == []


def test_default_model_not_cached_offline_is_one_line(tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "empty-cache"),
        "HF_HOME": str(tmp_path / "hf-home"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "meshforge.cli", "generate", "--prompt", "a chair", "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 1
    line = assert_one_error_line(proc.stderr, "FLUX.1-schnell", "not in the Hugging Face cache", "HF_HUB_OFFLINE")
    assert "--t2i-model" in line
    assert all_files(tmp_path / "out") == []


def test_missing_folder_and_non_pipeline_folder(capsys, tmp_path):
    empty = tmp_path / "not-a-pipeline"
    empty.mkdir()
    code, _, err = run(capsys, "generate", "--prompt", "a chair", "--t2i-model", str(empty), "-o", str(tmp_path / "o"))
    assert code == 1
    line = assert_one_error_line(err, "not a diffusers pipeline folder", "model_index.json")
    assert str(tmp_path) not in line  # no server/host path beyond the folder's name
    code, _, err = run(capsys, "generate", "--prompt", "a chair", "--t2i-model", "no such", "-o", str(tmp_path / "o"))
    assert code == 1
    assert_one_error_line(err, "no such folder")


def test_prompt_and_pictures_together_and_models_list_shows_licences(capsys, tmp_path, tiny_t2i, shared_images):
    run(
        capsys, "generate", str(shared_images / "triposr__chair.png"), "--prompt", "a teapot",
        "--t2i-model", str(tiny_t2i), "--backend", "inflate", "--faces", "500", "--no-texture", "-o", str(tmp_path),
    )  # fmt: skip
    assert (tmp_path / "triposr__chair.glb").is_file()
    assert (tmp_path / "a-teapot.picture.png").is_file()
    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    assert "black-forest-labs/FLUX.1-schnell" in out and "Apache-2.0" in out
    line = next(x for x in out.splitlines() if "FLUX.1-dev" in x)
    assert "non-commercial" in line
    code, out, _ = run(capsys, "models", "list", "--json")
    entries = json.loads(out)
    t2i = [e for e in entries if e.get("kind") == "text-to-image"]
    assert {e["model"] for e in t2i} >= {"black-forest-labs/FLUX.1-schnell", "Tongyi-MAI/Z-Image-Turbo"}
    assert any(e["non_commercial"] for e in t2i)


def test_generate_without_pictures_or_prompts_is_a_usage_error(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "-o", str(tmp_path))
    assert code == 2
    assert_one_error_line(err, "--prompt")
