"""The text-to-image stage as a library: settings, report, and the picture → asset path after it."""

from __future__ import annotations

import numpy as np
import pytest

import meshforge
from meshforge.backends import load_backend
from meshforge.config import PipelineConfig
from meshforge.errors import InputError
from meshforge.export.glb import read_glb_json
from meshforge.io.images import load_image
from meshforge.pipeline import run
from meshforge.t2i import T2IConfig, load_text_to_image, prompt_stem, text_to_image_stage
from meshforge.types import Report


def test_stage_records_parameters_and_is_loaded_once(tiny_t2i):
    cfg = T2IConfig(model=str(tiny_t2i), steps=3, size=96, negative_prompt="blurry", template="{prompt}")
    t2i = load_text_to_image(cfg, "cpu")
    assert load_text_to_image(cfg, "cpu") is t2i  # once per process
    report = Report()
    steps: list[tuple[int, int]] = []
    picture = text_to_image_stage(
        t2i, "  a  brass\nlantern ", cfg, report, seed=7, on_step=lambda i, n: steps.append((i, n))
    )
    assert picture.rgba.shape == (96, 96, 4) and picture.rgba.dtype == np.uint8
    assert (picture.rgba[..., 3] == 255).all() and picture.name == "a-brass-lantern"
    assert steps == [(1, 3), (2, 3), (3, 3)]
    (stage,) = report.stages
    assert stage.name == "text_to_image" and stage.counts["steps"] == 3 and stage.counts["seed"] == 7
    info = report.info["text_to_image"]
    assert info["full_prompt"] == "a brass lantern" and info["prompt"] == "a brass lantern"
    assert any("negative prompt" in w for w in report.warnings)  # FLUX: not used, and the report says so
    assert not any("licence" in w for w in report.warnings)  # its meshforge_t2i.json names it


def test_a_known_picture_after_the_stage_makes_a_valid_asset(tiny_t2i, shared_images):
    """The success path after text to image: the stage's report, then a picture with an object through the
    same :func:`run` the prompt path calls (random weights only make noise, which is refused)."""
    cfg = T2IConfig(model=str(tiny_t2i))
    t2i = load_text_to_image(cfg, "cpu")
    report = Report()
    text_to_image_stage(t2i, "a chair", cfg, report)
    picture = load_image(shared_images / "triposr__chair.png")
    pcfg = PipelineConfig().with_options(faces=800, textures=False)
    result = run(picture, load_backend("inflate"), pcfg, report=report)
    names = [s.name for s in result.report.stages]
    assert names[:2] == ["text_to_image", "prepare"] and names[-1] == "bake"
    glb = meshforge.export(result.asset, "glb")
    assert read_glb_json(glb)["asset"]["version"] == "2.0"
    assert 0 < result.asset.mesh.n_faces <= 800
    assert result.report.to_dict()["info"]["text_to_image"]["model"] == str(tiny_t2i)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"steps": 0}, "--t2i-steps"),
        ({"size": 100}, "multiple of 16"),
        ({"guidance": -1.0}, "--t2i-guidance"),
        ({"template": "no placeholder"}, "{prompt}"),
    ],
)
def test_bad_settings_are_one_line(changes, needle):
    with pytest.raises(InputError, match=None) as info:
        T2IConfig(**changes).validate()
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_prompt_stems_are_safe():
    assert prompt_stem("A red fire-extinguisher!") == "a-red-fire-extinguisher"
    assert prompt_stem("../../etc/passwd") == "etc-passwd"
    assert prompt_stem("日本") == "prompt"
    assert len(prompt_stem("word " * 100)) <= 60


def test_a_failed_cpu_allocation_counts_as_out_of_memory():
    torch = pytest.importorskip("torch")
    from meshforge.errors import is_out_of_memory

    with pytest.raises(RuntimeError) as info:
        torch.empty(2**52, dtype=torch.uint8)  # 4 PiB: torch's CPU allocator refuses it
    assert is_out_of_memory(info.value), str(info.value)
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
