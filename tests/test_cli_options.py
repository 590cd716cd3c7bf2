"""The command line's contract: output suffixes, unreachable budgets, --help, --up-axis, batch progress, and
the preview sheet a user looks at."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
import trimesh

from meshforge.backends import REGISTRY
from meshforge.cli import _build_parser, main
from meshforge.config import PipelineConfig
from meshforge.eval.diagnostics import preview_sheet
from meshforge.eval.render import DEFAULT_VIEWS
from meshforge.io.meshes import load_mesh
from meshforge.types import Asset, Material

FAST = ["--texture-size", "64"]
SMALL = ["--resolution", "48", "--faces", "1000", "--no-texture"]


def run(capsys, *args: str) -> tuple[int, list[str]]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, (captured.out + captured.err).splitlines()


def all_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture()
def sphere_obj(tmp_path) -> Path:
    path = tmp_path / "in" / "ball.obj"
    path.parent.mkdir()
    trimesh.creation.icosphere(subdivisions=2, radius=0.5).export(path)
    return path


# -- output names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x.fbx", "x.GLTF2", "model.usdz"])
def test_optimize_refuses_an_unknown_output_suffix(name, sphere_obj, tmp_path, capsys):
    out_root = tmp_path / "out"
    out_root.mkdir()
    code, lines = run(capsys, "optimize", str(sphere_obj), "-o", str(out_root / name), *FAST)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert Path(name).suffix in lines[0] and ".glb" in lines[0] and "folder" in lines[0]
    assert all_files(out_root) == []  # nothing created: no folder x.fbx/


def test_optimize_output_folder_with_a_trailing_slash_or_existing(sphere_obj, tmp_path, capsys):
    code, lines = run(capsys, "optimize", str(sphere_obj), "-o", f"{tmp_path / 'v1.2'}/", *FAST)
    assert code == 0, lines
    assert all_files(tmp_path / "v1.2") == ["ball.glb", "ball.report.json"]


def test_generate_refuses_a_file_name_as_its_output_folder(tmp_path, capsys, shared_images):
    code, lines = run(capsys, "generate", str(shared_images / "triposr__chair.png"), "-o", str(tmp_path / "c.glb"))
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: ") and "folder" in lines[0], lines
    assert all_files(tmp_path) == []


# -- face budget -----------------------------------------------------------------------------------------


def test_an_unreachable_face_budget_is_said_with_the_count_reached(tmp_path, capsys):
    """42 separate closed parts cannot go below 4 faces each: --faces 100 gives 168, and says so."""
    ball = trimesh.creation.icosphere(subdivisions=2, radius=0.1)
    parts = [ball.copy().apply_translation([0.3 * (i % 7), 0.3 * (i // 7), 0]) for i in range(42)]
    src = tmp_path / "blobs.obj"
    trimesh.util.concatenate(parts).export(src)
    out = tmp_path / "blobs.glb"
    code, lines = run(capsys, "optimize", str(src), "-o", str(out), "--faces", "100", *FAST)
    assert code == 0, lines
    (part,) = load_mesh(out).parts
    n = part.mesh.n_faces
    assert n == 168  # a tetrahedron per part
    result_line = next(line for line in lines if " -> " in line)
    assert result_line.endswith("s") and f"{n} faces (budget 100 not reachable)" in result_line, result_line
    (warning,) = [line for line in lines if line.startswith("warning:")]
    assert "face budget 100" in warning and f"{n} faces" in warning and "42 separate closed parts" in warning
    report = json.loads((tmp_path / "blobs.report.json").read_text())
    assert warning.split(": ", 2)[2] in report["warnings"], report["warnings"]


def test_a_reachable_budget_gives_no_budget_warning(sphere_obj, tmp_path, capsys):
    code, lines = run(capsys, "optimize", str(sphere_obj), "-o", str(tmp_path / "b.glb"), "--faces", "100", *FAST)
    assert code == 0
    assert not any("not reachable" in line or line.startswith("warning:") for line in lines), lines


# -- --help ----------------------------------------------------------------------------------------------


def help_blocks(capsys, command: str) -> dict[str, str]:
    """``--help`` of a subcommand split into one text block per option, keyed by its long name."""
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    blocks: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        m = re.match(r"^  (?:-\w(?: [A-Z_]+)?, )?(--[\w-]+)", line)
        if m:
            key = m.group(1)
            blocks[key] = line
        elif key and line.startswith("    "):
            blocks[key] += " " + line.strip()
        else:
            key = None
    return {k: " ".join(v.split()) for k, v in blocks.items()}


@pytest.mark.parametrize("command", ["generate", "optimize"])
def test_help_lists_every_default_and_the_backends(command, capsys):
    blocks = help_blocks(capsys, command)
    (commands,) = [a for a in _build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    sub = commands.choices[command]
    options = [a for a in sub._actions if a.option_strings and a.nargs != 0 and not a.required]  # with a value
    assert len(options) >= 4
    for action in options:
        name = max(action.option_strings, key=len)
        assert "(default: " in blocks[name], (name, blocks[name])
    cfg = PipelineConfig()
    assert f"(default: {cfg.decimate.faces})" in blocks["--faces"]
    assert f"(default: {cfg.bake.texture_size})" in blocks["--texture-size"]
    if command == "generate":
        assert f"(default: {cfg.extract.resolution})" in blocks["--resolution"]
        for backend in ("auto", *REGISTRY):
            assert backend in blocks["--backend"], blocks["--backend"]
    else:
        assert "(default: y)" in blocks["--up-axis"]


# -- --up-axis -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("up", [None, "y", "z"])
def test_up_axis_z_turns_a_z_up_source_to_gltf_y_up(up, tmp_path, capsys):
    cone = trimesh.creation.cone(radius=0.2, height=1.0, sections=48)  # base at z = 0, tip at z = 1
    src = tmp_path / "cone.stl"
    cone.export(src)
    out = tmp_path / "cone.glb"
    code, lines = run(capsys, "optimize", str(src), "-o", str(out), *FAST, *(["--up-axis", up] if up else []))
    assert code == 0, lines
    (part,) = load_mesh(out).parts
    v = part.mesh.vertices
    tip = v[np.argmax(v[:, 1] if up == "z" else v[:, 2])]
    if up == "z":  # (x, y, z) → (x, z, −y): the tip points up +Y, the base sits at y = 0
        assert v[:, 1].min() == pytest.approx(0.0, abs=1e-3) and v[:, 1].max() == pytest.approx(1.0, abs=1e-3)
        assert np.ptp(v[:, 2]) == pytest.approx(0.4, abs=0.02)
        assert np.abs(tip[[0, 2]]).max() < 1e-3
    else:  # unchanged
        assert v[:, 2].max() == pytest.approx(1.0, abs=1e-3) and np.ptp(v[:, 1]) == pytest.approx(0.4, abs=0.02)
    report = json.loads((tmp_path / "cone.report.json").read_text())
    assert report["config"]["up_axis"] == (up or "y")


def test_up_axis_refuses_other_values(sphere_obj, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["optimize", str(sphere_obj), "-o", str(tmp_path / "o.glb"), "--up-axis", "x"])
    assert exit_info.value.code == 2
    assert "--up-axis" in capsys.readouterr().err
    assert not (tmp_path / "o.glb").exists()


# -- batches ---------------------------------------------------------------------------------------------


def test_batch_shows_position_eta_and_a_closing_summary(tmp_path, capsys, shared_images):
    bad = tmp_path / "junk.png"
    bad.write_bytes(b"not a picture")
    good1, good2 = shared_images / "triposr__chair.png", shared_images / "triposr__robot.png"
    code, lines = run(capsys, "generate", str(good1), str(bad), str(good2), "-o", str(tmp_path / "out"), *SMALL)
    assert code == 1
    progress = [line for line in lines if not line.startswith(("note:", "warning:"))]
    assert len(progress) == 4, lines
    assert re.match(r"^\[1/3\] triposr__chair\.png -> .*: \d+ faces, ok \(\d+\.\d s, ETA \d+ s\)$", progress[0])
    assert progress[1].startswith(f"error: [2/3] {bad}: ")
    assert re.match(r"^\[3/3\] triposr__robot\.png -> .*: \d+ faces, ok \(\d+\.\d s\)$", progress[2])
    assert re.match(r"^done 2, failed 1 in \d+\.\d s$", progress[3]), progress[3]


def test_quiet_batch_prints_only_errors(tmp_path, capsys, shared_images):
    bad = tmp_path / "junk.png"
    bad.write_bytes(b"not a picture")
    good = shared_images / "triposr__chair.png"
    code, lines = run(capsys, "generate", str(good), str(bad), "-o", str(tmp_path / "out"), *SMALL, "-q")
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("error: [2/2] "), lines


# -- preview sheet ---------------------------------------------------------------------------------------


def white_sphere() -> Asset:
    ball = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    from meshforge.types import Mesh

    mesh = Mesh(vertices=np.asarray(ball.vertices, np.float32), faces=np.asarray(ball.faces, np.int32))
    return Asset(mesh=mesh, material=Material(metallic_factor=0.0, roughness_factor=0.5), name="ball")


def test_preview_sheet_is_on_neutral_grey_with_view_labels():
    from meshforge.eval.diagnostics import PREVIEW_BACKGROUND

    size = 128
    sheet = preview_sheet(white_sphere(), size=size).astype(int)
    views = len(DEFAULT_VIEWS)
    assert sheet.shape == (2 * size, views * size, 3)
    bg = np.array(PREVIEW_BACKGROUND)
    assert bg[0] == bg[1] == bg[2] and 96 <= bg[0] <= 160  # neutral mid-grey
    assert (sheet[-1, -1] == bg).all() and (sheet[size - 1, 0] == bg).all()
    # a white mesh stands out: the unlit front view's centre is white, far from the background
    centre = sheet[size // 2, size // 2]
    assert (centre >= 250).all() and np.abs(centre - bg).min() > 80
    # every tile has a label in its top-left corner, and the six labels of a row differ
    patches = []
    for row in range(2):
        for col in range(views):
            patch = sheet[row * size + 1 : row * size + 14, col * size + 1 : col * size + 70]
            text = np.abs(patch - bg).max(axis=2) > 60
            assert text.sum() >= 15, (row, col)
            patches.append(text)
    for a in range(views):
        for b in range(a + 1, views):
            assert (patches[a] != patches[b]).any(), (a, b)
