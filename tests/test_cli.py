"""The ``meshforge generate`` command: outputs on disk, exit codes, and one-line errors with no traceback.

Most tests call :func:`meshforge.cli.main` in-process; a few run the installed console script in a
subprocess, where stderr is what a user (or a CI log) really sees.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meshforge.cli import main
from meshforge.export.glb import read_glb_json

GOOD = "triposr__chair.png"  # RGBA with a meaningful alpha: fast and deterministic
GOOD2 = "triposr__robot.png"
SMALL = ["--resolution", "64", "--faces", "2000", "--texture-size", "256"]
STAGE_NAMES = ["load", "prepare", "reconstruct", "extract", "clean", "decimate", "unwrap", "bake"]


# -- helpers ---------------------------------------------------------------------------------------------


def generate(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``meshforge generate ARGS`` in-process; return (exit code, stdout, stderr)."""
    code = main(["generate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def console_script() -> list[str]:
    """The installed ``meshforge`` script beside the interpreter, else ``python -m meshforge.cli``."""
    script = Path(sys.executable).with_name("meshforge.exe" if os.name == "nt" else "meshforge")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "meshforge.cli"]


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*console_script(), "generate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def all_files(folder: Path) -> list[str]:
    """Every file under ``folder`` (hidden temporary files included), relative, sorted."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A well-formed PNG header declaring ``width × height`` RGB pixels, with one tiny IDAT (a bomb that
    would need ``3·width·height`` bytes to decode, built without allocating them)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def glb_faces(glb: bytes) -> int:
    doc = read_glb_json(glb)
    (prim,) = doc["meshes"][0]["primitives"]
    return doc["accessors"][prim["indices"]]["count"] // 3


def stderr_lines(err: str) -> list[str]:
    """stderr lines without the one ``note:`` line that says ``auto`` chose the weightless backend."""
    lines = err.splitlines()
    notes = [line for line in lines if line.startswith("note: ")]
    assert len(notes) <= 1 and all("weightless 'inflate'" in n for n in notes), notes
    return [line for line in lines if not line.startswith("note: ")]


def assert_one_error_line(err: str, *needles: str) -> str:
    """stderr holds exactly one line, ``error: ...``, containing every needle; return it."""
    assert "Traceback" not in err
    lines = stderr_lines(err)  # also splits on "\r": progress-bar redraws would count as extra lines
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    (line,) = lines
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


# -- a good picture -----------------------------------------------------------------------------------


def test_good_image_writes_valid_glb_and_report(capsys, tmp_path, shared_images, validate):
    out_dir = tmp_path / "out"
    old_umask = os.umask(0o022)
    try:
        code, out, err = generate(
            capsys,
            str(shared_images / GOOD),
            "-o",
            str(out_dir),
            *SMALL,
            "--seed",
            "7",
            "--foreground-ratio",
            "0.8",
        )
    finally:
        os.umask(old_umask)
    assert code == 0, err
    assert out == ""
    assert "Traceback" not in err

    stem = Path(GOOD).stem
    assert all_files(out_dir) == [f"{stem}.glb", f"{stem}.report.json"]  # and no leftover temporary file
    # files are created like any other program's: the umask decides, not mkstemp's private 0600
    for p in out_dir.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p

    # one summary line naming the input, the output and the face count
    (summary,) = stderr_lines(err)
    assert summary.startswith(f"{GOOD} -> ") and f"{stem}.glb" in summary and "faces" in summary

    glb = (out_dir / f"{stem}.glb").read_bytes()
    result = validate(glb)
    assert result["errors"] == 0 and result["warnings"] == 0, result["messages"]
    assert 100 <= glb_faces(glb) <= 2000
    doc = read_glb_json(glb)
    pbr = doc["materials"][0]["pbrMetallicRoughness"]
    assert "baseColorTexture" in pbr

    report = json.loads((out_dir / f"{stem}.report.json").read_text())
    assert [s["name"] for s in report["stages"]] == STAGE_NAMES
    for s in report["stages"]:
        assert isinstance(s["seconds"], float) and 0.0 <= s["seconds"] < 60.0, s
        assert isinstance(s["peak_rss_mb"], float) and s["peak_rss_mb"] > 10.0, s
    assert report["total_seconds"] >= sum(s["seconds"] for s in report["stages"]) * 0.9
    assert report["peak_rss_mb"] >= max(s["peak_rss_mb"] for s in report["stages"])
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["extract"]["counts"]["resolution"] == 64
    assert stages["decimate"]["counts"]["budget"] == 2000
    assert stages["decimate"]["counts"]["faces"] <= 2000
    assert stages["unwrap"]["counts"]["faces"] <= 2000
    assert report["info"]["mesh"]["faces"] == glb_faces(glb)
    assert report["info"]["input"]["source"] == str(shared_images / GOOD)
    assert report["textures"]["base_color"] == [256, 256]
    assert report["outputs"] == [f"{stem}.glb"]

    cfg = report["config"]
    assert cfg["extract"]["resolution"] == 64
    assert cfg["decimate"]["faces"] == 2000
    assert cfg["bake"]["texture_size"] == 256 and cfg["bake"]["textures"] is True
    assert "resolution" not in cfg["unwrap"]  # one texture size: the atlas is packed for bake.texture_size
    assert cfg["preprocess"]["foreground_ratio"] == 0.8
    assert cfg["seed"] == 7
    assert cfg["input"]["max_pixels"] == 40_000_000  # untouched options keep their defaults


def test_all_formats_and_preview(capsys, tmp_path, shared_images):
    out_dir = tmp_path / "out"
    code, _, err = generate(
        capsys, str(shared_images / GOOD), "-o", str(out_dir), *SMALL, "--format", "glb, OBJ,ply,stl", "--preview"
    )
    assert code == 0, err
    s = Path(GOOD).stem
    files = all_files(out_dir)
    expected = {f"{s}.glb", f"{s}.obj", f"{s}.mtl", f"{s}.ply", f"{s}.stl", f"{s}.report.json", f"{s}.preview.png"}
    assert expected <= set(files)
    textures = [f for f in files if f.endswith(".png") and f != f"{s}.preview.png"]
    assert f"{s}_basecolor.png" in textures
    assert set(files) == expected | set(textures)

    report = json.loads((out_dir / f"{s}.report.json").read_text())
    assert report["outputs"] == sorted(set(files) - {f"{s}.report.json"})
    n_faces = report["info"]["mesh"]["faces"]
    assert 100 <= n_faces <= 2000

    # OBJ: names its MTL, which names texture files that exist and decode at the asked size
    obj = (out_dir / f"{s}.obj").read_text()
    assert f"mtllib {s}.mtl" in obj
    assert sum(1 for line in obj.splitlines() if line.startswith("f ")) == n_faces
    mtl = (out_dir / f"{s}.mtl").read_text()
    maps = [line.split()[-1] for line in mtl.splitlines() if line.strip().startswith(("map_", "norm "))]
    assert f"{s}_basecolor.png" in maps and f"{s}_normal.png" in maps  # generate bakes a normal map
    for name in maps:
        with Image.open(out_dir / name) as im:
            assert im.size == (256, 256)
    for name in textures:
        assert name in maps

    # PLY: binary with the same face count; STL: binary, 84 + 50 bytes per triangle
    ply = (out_dir / f"{s}.ply").read_bytes()
    header = ply[: ply.index(b"end_header")].decode("ascii")
    assert header.startswith("ply\nformat binary_little_endian 1.0")
    assert f"element face {n_faces}" in header
    stl = (out_dir / f"{s}.stl").read_bytes()
    assert struct.unpack_from("<I", stl, 80)[0] == n_faces
    assert len(stl) == 84 + 50 * n_faces

    # preview: a contact sheet of renders, not an empty canvas
    with Image.open(out_dir / f"{s}.preview.png") as im:
        assert im.format == "PNG"
        w, h = im.size
        pixels = np.asarray(im.convert("RGB"))
    assert 256 <= w <= 4096 and 256 <= h <= 4096
    assert pixels.std() > 10.0
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500
    background = pixels[0, 0]
    assert 0.02 < (pixels != background).any(axis=2).mean() < 0.98  # an object on a background


def test_no_texture_writes_vertex_colors(capsys, tmp_path, shared_images, validate):
    out_dir = tmp_path / "out"
    code, _, err = generate(capsys, str(shared_images / GOOD), "-o", str(out_dir), *SMALL, "--no-texture")
    assert code == 0, err
    s = Path(GOOD).stem
    assert all_files(out_dir) == [f"{s}.glb", f"{s}.report.json"]
    glb = (out_dir / f"{s}.glb").read_bytes()
    result = validate(glb)
    assert result["errors"] == 0 and result["warnings"] == 0, result["messages"]
    doc = read_glb_json(glb)
    assert "COLOR_0" in doc["meshes"][0]["primitives"][0]["attributes"]
    assert "textures" not in doc and "images" not in doc
    report = json.loads((out_dir / f"{s}.report.json").read_text())
    assert report["config"]["bake"]["textures"] is False


def test_quiet_prints_nothing_on_success(capsys, tmp_path, shared_images):
    out_dir = tmp_path / "out"
    code, out, err = generate(capsys, str(shared_images / GOOD), "-o", str(out_dir), *SMALL, "--no-texture", "-q")
    assert code == 0
    assert out == "" and err == ""
    assert (out_dir / f"{Path(GOOD).stem}.glb").is_file()


# -- refused inputs -------------------------------------------------------------------------------------


def _text_as_png(folder: Path, images: Path) -> Path:
    p = folder / "notes.png"
    p.write_text("these are my notes, not a picture\n")
    return p


def _truncated_png(folder: Path, images: Path) -> Path:
    data = (images / GOOD).read_bytes()
    p = folder / "half.png"
    p.write_bytes(data[: len(data) // 2])
    return p


def _huge_header_png(folder: Path, images: Path) -> Path:
    p = folder / "bomb.png"
    p.write_bytes(png_declaring(100_000, 100_000))  # 10 gigapixels declared
    return p


def _over_default_limit_png(folder: Path, images: Path) -> Path:
    p = folder / "big.png"
    p.write_bytes(png_declaring(8000, 8000))  # 64 MP: under Pillow's bomb limit, over meshforge's 40 MP
    return p


def _transparent_png(folder: Path, images: Path) -> Path:
    p = folder / "clear.png"
    Image.fromarray(np.zeros((64, 64, 4), np.uint8)).save(p)
    return p


def _uniform_png(folder: Path, images: Path) -> Path:
    p = folder / "grey.png"
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(p)
    return p


def _missing(folder: Path, images: Path) -> Path:
    return folder / "nowhere.png"


REFUSALS = {
    "text-renamed-png": (_text_as_png, "not an image"),
    "truncated-png": (_truncated_png, "truncated or corrupt"),
    "header-bomb": (_huge_header_png, "decompression bomb"),
    "over-default-max-pixels": (_over_default_limit_png, "max_pixels"),
    "alpha-all-zero": (_transparent_png, "fully transparent"),
    "no-object": (_uniform_png, "found no object"),
    "missing-file": (_missing, "no such file"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_input_gives_one_line_and_no_output(case, capsys, tmp_path, shared_images):
    make, reason = REFUSALS[case]
    src = tmp_path / "in"
    src.mkdir()
    path = make(src, shared_images)
    out_dir = tmp_path / "out"
    code, out, err = generate(capsys, str(path), "-o", str(out_dir), *SMALL)
    assert code == 1
    assert out == ""
    assert_one_error_line(err, str(path), reason)
    assert all_files(out_dir) == []


def test_pixel_limit_from_config_file(capsys, tmp_path, shared_images):
    config = tmp_path / "limits.toml"
    config.write_text("[input]\nmax_pixels = 1000\n")
    out_dir = tmp_path / "out"
    path = shared_images / GOOD
    code, _, err = generate(capsys, str(path), "-o", str(out_dir), "--config", str(config), *SMALL)
    assert code == 1
    assert_one_error_line(err, str(path), "512x512", "max_pixels")
    assert all_files(out_dir) == []


def test_refusal_through_console_script_has_no_traceback(tmp_path, shared_images):
    """The real entry point: a bad and a good input; the user sees one error line, one result line and the
    batch's closing summary."""
    bad = tmp_path / "broken.png"
    bad.write_bytes((shared_images / GOOD).read_bytes()[:3000])
    good = tmp_path / GOOD
    shutil.copy(shared_images / GOOD, good)
    out_dir = tmp_path / "out"
    proc = run_script(bad.name, good.name, "-o", "out", *SMALL, "--no-texture", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stdout == ""
    lines = stderr_lines(proc.stderr)
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [errors[0]] and "broken.png" in errors[0] and "truncated or corrupt" in errors[0]
    assert len(lines) == 3, lines  # the error, the good picture's result and the summary; no progress-bar debris
    assert lines[1].startswith(f"[2/2] {GOOD} -> ") and lines[2].startswith("done 1, failed 1 in ")
    stem = Path(GOOD).stem
    assert all_files(out_dir) == [f"{stem}.glb", f"{stem}.report.json"]


def test_console_script_bomb_and_usage_errors(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(100_000, 100_000))
    proc = run_script("bomb.png", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr, "bomb.png", "decompression bomb")
    assert all_files(tmp_path / "out") == []

    proc = run_script("bomb.png", "--format", "glb,fbx", cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, "unknown format fbx")


# -- batches and folders --------------------------------------------------------------------------------


def test_batch_with_one_bad_input_keeps_going(capsys, tmp_path, shared_images):
    bad = tmp_path / "junk.png"
    bad.write_bytes(b"GIF89a this is not really a gif")
    out_dir = tmp_path / "out"
    good = shared_images / GOOD
    code, _, err = generate(capsys, str(bad), str(good), "-o", str(out_dir), *SMALL, "--no-texture")
    assert code == 1
    assert "Traceback" not in err
    lines = stderr_lines(err)
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0]
    assert len(lines) == 3 and lines[1].startswith(f"[2/2] {GOOD} -> "), lines
    assert lines[2].startswith("done 1, failed 1 in "), lines
    stem = Path(GOOD).stem
    assert all_files(out_dir) == [f"{stem}.glb", f"{stem}.report.json"]


def test_folder_input_expands_to_its_images(capsys, tmp_path, shared_images):
    folder = tmp_path / "pics"
    folder.mkdir()
    shutil.copy(shared_images / GOOD, folder / GOOD)
    shutil.copy(shared_images / GOOD2, folder / GOOD2.replace(".png", ".PNG"))  # suffix case ignored
    (folder / "README.txt").write_text("not a picture, and not picked up\n")
    (folder / "sub").mkdir()  # sub-folders are not entered
    shutil.copy(shared_images / GOOD, folder / "sub" / "nested.png")
    out_dir = tmp_path / "out"
    code, _, err = generate(capsys, str(folder), "-o", str(out_dir), *SMALL, "--no-texture")
    assert code == 0, err
    assert "error" not in err
    s1, s2 = Path(GOOD).stem, Path(GOOD2).stem
    assert all_files(out_dir) == sorted([f"{s1}.glb", f"{s1}.report.json", f"{s2}.glb", f"{s2}.report.json"])
    summaries = [line for line in stderr_lines(err) if " -> " in line]
    assert len(summaries) == 2


def test_empty_folder_is_an_error(capsys, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("nothing to see\n")
    code, _, err = generate(capsys, str(folder), "-o", str(tmp_path / "out"))
    assert code == 1
    assert_one_error_line(err, str(folder), "no image files")
    assert all_files(tmp_path / "out") == []


def test_output_names_are_safe_and_never_collide(capsys, tmp_path, shared_images):
    """``<stem>.glb`` and ``<stem>.report.json`` share one file-safe stem; equal stems get ``-2``."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    shutil.copy(shared_images / GOOD, a / "my chair.png")
    shutil.copy(shared_images / GOOD, b / "my chair.png")
    out_dir = tmp_path / "out"
    code, _, err = generate(capsys, str(a / "my chair.png"), str(b), "-o", str(out_dir), *SMALL, "--no-texture")
    assert code == 0, err
    assert all_files(out_dir) == ["my_chair-2.glb", "my_chair-2.report.json", "my_chair.glb", "my_chair.report.json"]
    for line in (line for line in stderr_lines(err) if " -> " in line):
        target = line.split(" -> ", 1)[1].split(":", 1)[0]
        assert Path(target).is_file(), line  # the summary names a file that exists


# -- bad options ------------------------------------------------------------------------------------------


def test_unknown_format_is_a_usage_error(capsys, tmp_path, shared_images):
    out_dir = tmp_path / "out"
    code, out, err = generate(capsys, str(shared_images / GOOD), "-o", str(out_dir), "--format", "xyz")
    assert code == 2
    assert out == ""
    assert_one_error_line(err, "unknown format xyz", "glb")
    assert not out_dir.exists()


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        (["--faces", "0"], "faces must be at least 4, got 0"),
        (["--resolution", "-3"], "resolution must be in [16, 1024], got -3"),
        (["--texture-size", "big"], "argument --texture-size: expected an integer, got 'big'"),
    ],
)
def test_bad_numbers_are_one_error_line_and_exit_2(option, needle, capsys, tmp_path, shared_images):
    """Not a number: argparse refuses it; out of range: the option table's check (config.OPTIONS) does."""
    try:
        code = main(["generate", str(shared_images / GOOD), "-o", str(tmp_path / "out"), *option])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    assert stderr_lines(err)[-1].endswith(needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--faces", "2"], "faces must be at least 4"),
        (["--resolution", "5000"], "resolution must be in [16, 1024]"),
        (["--config", "no-such-config.toml"], "cannot read configuration"),
    ],
)
def test_out_of_range_options_exit_2(args, needle, capsys, tmp_path, shared_images):
    code, _, err = generate(capsys, str(shared_images / GOOD), "-o", str(tmp_path / "out"), *args)
    assert code == 2
    assert_one_error_line(err, needle)
    assert not (tmp_path / "out").exists()


def test_bad_config_key_exits_2(capsys, tmp_path, shared_images):
    config = tmp_path / "c.toml"
    config.write_text("[input]\nmax_pixles = 5\n")
    code, _, err = generate(capsys, str(shared_images / GOOD), "-o", str(tmp_path / "out"), "--config", str(config))
    assert code == 2
    assert_one_error_line(err, "max_pixles")


def test_auto_backend_says_it_fell_back_to_inflate(tmp_path, capsys, shared_images):
    code, _, err = generate(capsys, str(shared_images / GOOD), "-o", str(tmp_path), *SMALL, "--no-texture")
    assert code == 0
    assert err.splitlines()[0].startswith("note: no model weights found") and "'inflate'" in err
    code, _, err = generate(
        capsys, str(shared_images / GOOD), "-o", str(tmp_path), *SMALL, "--no-texture", "--backend", "inflate"
    )
    assert code == 0 and "note:" not in err


# -- background cut-out: quality warning and --save-intermediates ------------------------------------------


def test_doubtful_cutout_warns_on_the_command_line_and_in_the_report(capsys, tmp_path):
    """The rocket photo (a sky gradient and launch towers): the cut-out is the rocket plus loose tower
    pieces, so the run goes on with a one-line warning on stderr and in the report."""
    import skimage.data

    picture = tmp_path / "rocket.png"
    Image.fromarray(skimage.data.rocket()).save(picture)
    out_dir = tmp_path / "out"
    code, out, err = generate(
        capsys, str(picture), "-o", str(out_dir), *SMALL, "--backend", "inflate", "--save-intermediates"
    )
    assert code == 0, err
    assert out == "" and "Traceback" not in err
    summary, warning = stderr_lines(err)
    assert summary.startswith("rocket.png -> ")
    assert warning.startswith("warning: rocket.png: doubtful background cut-out: ")
    assert "--background keep" in warning and "--bg-engine rembg" in warning

    report = json.loads((out_dir / "rocket.report.json").read_text())
    assert warning.removeprefix("warning: rocket.png: ") in report["warnings"]
    prepare = next(s for s in report["stages"] if s["name"] == "prepare")
    quality = prepare["counts"]["background"]["quality"]
    assert quality["verdict"] == "doubtful" and quality["reasons"]
    assert 0.0 < quality["stability"] < 1.0 and quality["components"] >= 2
    assert report["outputs"] == ["rocket.cutout.png", "rocket.glb"]
    assert report["config"]["save_intermediates"] is True


def test_save_intermediates_writes_the_prepared_cutout(capsys, tmp_path, shared_images):
    """A clean cut (the teapot on flat grey) gives no warning, and <stem>.cutout.png is the RGBA picture
    the backend saw: its alpha is the object mask."""
    from meshforge.backends import load_backend
    from meshforge.config import PreprocessConfig
    from meshforge.io.images import load_image
    from meshforge.preprocess import prepare

    name = "triposr__teapot_graybg.png"
    out_dir = tmp_path / "out"
    code, _, err = generate(
        capsys, str(shared_images / name), "-o", str(out_dir), *SMALL, "--backend", "inflate", "--save-intermediates"
    )
    assert code == 0, err
    assert "warning" not in err
    stem = Path(name).stem
    assert all_files(out_dir) == [f"{stem}.cutout.png", f"{stem}.glb", f"{stem}.report.json"]
    with Image.open(out_dir / f"{stem}.cutout.png") as png:
        assert png.format == "PNG" and png.mode == "RGBA"
        cutout = np.asarray(png)
    expected = prepare(load_image(shared_images / name), PreprocessConfig(), load_backend("inflate").input_size)
    np.testing.assert_array_equal(cutout, expected.rgba)
    alpha = cutout[..., 3]
    assert alpha[0, 0] == 0 and alpha[alpha.shape[0] // 2, alpha.shape[1] // 2] == 255
    assert 0.15 < (alpha > 127).mean() < 0.6  # the teapot, not the grey backdrop
    report = json.loads((out_dir / f"{stem}.report.json").read_text())
    assert report["warnings"] == []
    prepare_stage = next(s for s in report["stages"] if s["name"] == "prepare")
    assert prepare_stage["counts"]["background"]["quality"]["verdict"] == "ok"

    # without the flag: no cut-out file
    code, _, err = generate(
        capsys, str(shared_images / name), "-o", str(tmp_path / "plain"), *SMALL, "--backend", "inflate"
    )
    assert code == 0 and all_files(tmp_path / "plain") == [f"{stem}.glb", f"{stem}.report.json"]


def test_refused_cutout_is_one_error_line_and_saved_for_a_look(capsys, tmp_path, monkeypatch):
    """A cut-out that is the background (rembg answering with the table around the cup) is refused: exit 1,
    one line naming the remedy, no asset, and with --save-intermediates the refused cut-out to look at."""
    import types

    import skimage.data

    from meshforge.preprocess import background

    def table_mask(rgb: np.ndarray) -> np.ndarray:
        mask = np.full(rgb.shape[:2], 255, np.uint8)
        mask[40:380, 90:480] = 0  # everything but the cup: the frame's whole border is "object"
        return mask

    fake = types.ModuleType("rembg")
    fake.new_session = lambda name: name  # type: ignore[attr-defined]
    fake.remove = lambda img, session=None, only_mask=False: Image.fromarray(table_mask(np.asarray(img)))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rembg", fake)
    background._rembg_session.cache_clear()

    picture = tmp_path / "coffee.png"
    Image.fromarray(skimage.data.coffee()).save(picture)
    out_dir = tmp_path / "out"
    args = [str(picture), "-o", str(out_dir), *SMALL, "--backend", "inflate", "--bg-engine", "rembg"]
    code, _, err = generate(capsys, *args, "--rembg-model", "u2net", "--save-intermediates")
    background._rembg_session.cache_clear()
    assert code == 1
    line = assert_one_error_line(err, "background removal gave no usable cut-out (", "--background keep")
    assert line.startswith(f"error: {picture}: ") and "covers 100% of the picture's border" in line
    assert line.endswith(f"(the refused cut-out is {out_dir / 'coffee.cutout.png'})")
    assert all_files(out_dir) == ["coffee.cutout.png"]
    with Image.open(out_dir / "coffee.cutout.png") as png:
        assert png.mode == "RGBA"
        cutout = np.asarray(png)
    np.testing.assert_array_equal(cutout[..., :3], skimage.data.coffee())
    np.testing.assert_array_equal(cutout[..., 3], table_mask(cutout))
