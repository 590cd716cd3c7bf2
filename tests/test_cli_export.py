"""Two-phase generation on the command line: ``generate --save-raw`` then ``export RAW`` with other budgets,
in a process that never imports torch nor loads a backend."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from meshforge.cli import main
from meshforge.eval.metrics import chamfer_distance
from meshforge.export.glb import read_glb_json
from meshforge.io.meshes import load_mesh

CHAIR = "triposr__chair.png"
ORIGINAL = ["--faces", "3000", "--texture-size", "256"]


@pytest.fixture(scope="module")
def saved(shared_images, tmp_path_factory) -> Path:
    """``meshforge generate chair.png --save-raw -o a`` (inflate backend, small budgets)."""
    out = tmp_path_factory.mktemp("a")
    args = ["generate", str(shared_images / CHAIR), "--backend", "inflate", "--save-raw", "-q", *ORIGINAL]
    assert main([*args, "-o", str(out)]) == 0
    return out


def export_in_subprocess(*args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """Run ``meshforge export ARGS`` via :func:`meshforge.cli.main` in a fresh interpreter; return the process
    and what it imported (torch? which backend modules?)."""
    code = (
        "import json, sys\n"
        "from meshforge.cli import main\n"
        f"rc = main({list(args)!r})\n"
        "mods = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'meshforge.backends.')))\n"
        "print(json.dumps({'rc': rc, 'modules': mods}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(proc.stdout.strip().splitlines()[-1])


def test_generate_save_raw_writes_a_raw_file_listed_in_the_report(saved):
    raw = saved / "triposr__chair.mfraw"
    with zipfile.ZipFile(raw) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["format"] == "meshforge-raw" and manifest["version"] == 1
    assert manifest["provenance"]["backend"]["name"] == "inflate"
    assert manifest["config"]["decimate"]["faces"] == 3000
    report = json.loads((saved / "triposr__chair.report.json").read_text())
    assert "triposr__chair.mfraw" in report["outputs"]


def test_export_refinishes_without_torch_or_a_backend(saved, tmp_path, validate):
    raw = saved / "triposr__chair.mfraw"
    out = tmp_path / "b"
    proc, seen = export_in_subprocess("export", str(raw), "--faces", "5000", "--texture-size", "512", "-o", str(out))
    assert seen == {"rc": 0, "modules": []}, (seen, proc.stderr)
    assert "no backend loaded" in proc.stderr
    glb = (out / "triposr__chair.glb").read_bytes()
    result = validate(glb)
    assert result["errors"] == 0 and result["warnings"] == 0, result["messages"]
    doc = read_glb_json(glb)
    assert doc["asset"]["extras"]["meshforge"]["parameters"]["faces"] == 5000
    report = json.loads((out / "triposr__chair.report.json").read_text())
    source = report["info"]["source"]
    assert source["raw"] == "triposr__chair.mfraw" and source["backend_loaded"] is False
    assert source["backend"]["name"] == "inflate" and source["attributes"].startswith("voxels 256^3")
    assert [s["name"] for s in report["stages"]] == ["clean", "decimate", "unwrap", "bake"]
    assert report["textures"]["base_color"] == [512, 512]
    faces = next(s for s in report["stages"] if s["name"] == "decimate")["counts"]["faces"]
    assert 3000 < faces <= 5000


def test_export_with_the_original_options_gives_the_original_mesh(saved, tmp_path):
    out = tmp_path / "c"
    assert main(["export", str(saved / "triposr__chair.mfraw"), "-q", "-o", str(out / "again.glb")]) == 0
    original = load_mesh(saved / "triposr__chair.glb")
    again = load_mesh(out / "again.glb")
    assert again.n_faces() == original.n_faces() <= 3000
    assert chamfer_distance(again, original, n_samples=20_000) < 1e-4
    rep = json.loads((out / "again.report.json").read_text())
    assert rep["textures"]["base_color"] == [256, 256]


def _newer(raw: Path, dest: Path) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(buf, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "manifest.json":
                data = json.dumps({**json.loads(data), "version": 2}).encode()
            dst.writestr(name, data)
    dest.write_bytes(buf.getvalue())
    return dest


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda raw, d: _newer(raw, d / "newer.mfraw"), "made by a newer meshforge (format 2 > 1): upgrade meshforge"),
        (lambda raw, d: (d / "cut.mfraw").write_bytes(raw.read_bytes()[:5000]) and d / "cut.mfraw", "truncated"),
        (lambda raw, d: raw.with_suffix(".glb"), "not a meshforge raw file"),
    ],
    ids=["newer", "truncated", "not-raw"],
)
def test_bad_raw_is_one_error_line_and_writes_nothing(make, needle, saved, tmp_path, capsys):
    bad = make(saved / "triposr__chair.mfraw", tmp_path)
    out = tmp_path / "out"
    code = main(["export", str(bad), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: ") and needle in lines[0], lines
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_export_options_reuse_the_generate_ranges(saved, tmp_path, capsys):
    code = main(["export", str(saved / "triposr__chair.mfraw"), "--texture-size", "9000", "-o", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err == "error: texture size must be in [16, 8192], got 9000\n"
    assert main(["export", str(saved / "triposr__chair.mfraw"), "-o", str(tmp_path / "x.fbx")]) == 2
    two = [str(saved / "triposr__chair.mfraw")] * 2
    assert main(["export", *two, "-o", str(tmp_path / "one.glb")]) == 2


def test_texture_size_bakes_textures_from_a_vertex_color_raw(shared_images, tmp_path):
    src = tmp_path / "src"
    args = ["--backend", "inflate", "--no-texture", "--resolution", "64", "--faces", "800", "--save-raw", "-q"]
    assert main(["generate", str(shared_images / CHAIR), *args, "-o", str(src)]) == 0
    raw = str(src / "triposr__chair.mfraw")
    assert main(["export", raw, "-q", "-o", str(tmp_path / "plain/")]) == 0
    plain = json.loads((tmp_path / "plain" / "triposr__chair.report.json").read_text())
    assert plain["textures"] == {} and plain["stages"][-1]["counts"]["mode"] == "vertex_colors"
    assert main(["export", raw, "-q", "--texture-size", "128", "-o", str(tmp_path / "baked/")]) == 0
    baked = json.loads((tmp_path / "baked" / "triposr__chair.report.json").read_text())
    assert baked["textures"]["base_color"] == [128, 128]
    assert baked["info"]["source"]["attributes"].startswith("voxels 256^3")  # sampled finer than the 64³ grid
