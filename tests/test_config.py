"""The pipeline configuration: one texture size for the run; files round-trip."""

from __future__ import annotations

import dataclasses

import pytest

from meshforge.config import PipelineConfig, UnwrapConfig
from meshforge.errors import InputError


def test_one_texture_size_for_the_run():
    assert "resolution" not in {f.name for f in dataclasses.fields(UnwrapConfig)}
    cfg = PipelineConfig().with_options(texture_size=512)
    assert cfg.bake.texture_size == 512
    again = PipelineConfig.from_dict(cfg.to_dict())
    assert again == cfg


def test_a_file_that_sets_the_atlas_apart_is_refused_in_one_line(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text("[unwrap]\nresolution = 2048\n[bake]\ntexture_size = 1024\n")
    with pytest.raises(InputError, match=r"unwrap\.resolution") as exc:
        PipelineConfig.load(path)
    assert "\n" not in str(exc.value) and "bake.texture_size" in str(exc.value)


def test_toml_round_trip(tmp_path):
    cfg = PipelineConfig().with_options(faces=5000, texture_size=256, resolution=128, background="remove")
    path = tmp_path / "cfg.toml"
    path.write_text(cfg.to_toml())
    assert PipelineConfig.load(path) == cfg
