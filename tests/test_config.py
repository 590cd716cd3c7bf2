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


def _generate_parser_actions():
    from meshforge.cli import _build_parser

    parser = _build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {a.dest: a for a in sub.choices["generate"]._actions}


def test_the_cli_is_built_from_the_option_table():
    from meshforge.config import OPTIONS

    actions = _generate_parser_actions()
    for name, option in OPTIONS.items():
        if name == "textures":  # the CLI's spelling is the switch --no-texture
            assert "no_texture" in actions
            continue
        action = actions[name]
        assert action.option_strings == ["--" + name.replace("_", "-")]
        assert action.help == option.describe(), name  # range, choices and default, written once
        assert f"(default: {option.default})" in action.help
        assert tuple(action.choices or ()) == (option.choices or ()), name


def test_validate_and_the_cli_refuse_out_of_range_values_with_the_same_line(capsys):
    from meshforge.cli import main
    from meshforge.config import OPTIONS
    from meshforge.optimize import OptimizeConfig

    for name, option in OPTIONS.items():
        if option.minimum is None:
            continue
        bad = option.kind(option.minimum) - (1 if option.kind is int else 0.05)
        message = option.problem(bad)
        assert message is not None
        with pytest.raises(InputError) as exc:
            PipelineConfig().with_options(**{name: bad})
        assert str(exc.value) == message
        code = main(["generate", "x.png", "--" + name.replace("_", "-"), str(bad)])
        assert code == 2 and capsys.readouterr().err.strip().endswith(message), name
        if name in ("faces", "texture_size"):  # optimize takes the same options with the same checks
            with pytest.raises(InputError) as exc:
                OptimizeConfig().with_options(**{name: bad})
            assert str(exc.value) == message


def test_an_optimize_configuration_round_trips_and_keeps_its_own_defaults():
    from meshforge.optimize import OptimizeConfig

    cfg = OptimizeConfig(max_bytes=1000).with_options(faces=300, texture_size=64, up_axis="z")
    assert OptimizeConfig.from_dict(cfg.to_dict()) == cfg
    # what a partial dict does not name keeps OptimizeConfig's defaults, not generate's
    partial = OptimizeConfig.from_dict({"decimate": {"faces": 300}})
    assert partial.clean == OptimizeConfig().clean and partial.clean != PipelineConfig().clean
    with pytest.raises(InputError, match=r"texture size must be in \[16, 8192\], got 8"):
        OptimizeConfig.from_dict({"bake": {"texture_size": 8}})
    with pytest.raises(InputError, match="unknown configuration key 'extract'"):
        OptimizeConfig.from_dict({"extract": {"resolution": 64}})
