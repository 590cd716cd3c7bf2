"""meshforge optimize: real dense assets → one low-poly mesh with one material and baked maps,
measured against the source."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import meshforge
from meshforge.cli import main
from meshforge.eval.metrics import compare_surfaces
from meshforge.export.glb import read_glb_json
from meshforge.io.gltf_reader import SKIN_WARNING
from meshforge.io.meshes import load_mesh
from meshforge.optimize import PRESETS, OptimizeConfig, optimize

ASSETS = ["spot.glb", "FlightHelmet.glb", "kenney_cakeBirthday.glb", "Fox.glb", "CesiumMilkTruck.glb"]


def check_glb(glb: bytes, validate, *, normal_map: bool = True) -> dict:
    report = validate(glb)
    assert report["errors"] == 0 and report["warnings"] == 0, report["messages"]
    doc = read_glb_json(glb)
    assert len(doc["meshes"]) == 1 and len(doc["meshes"][0]["primitives"]) == 1 and len(doc["materials"]) == 1
    pbr = doc["materials"][0]["pbrMetallicRoughness"]
    assert "baseColorTexture" in pbr and "metallicRoughnessTexture" in pbr
    if normal_map:
        assert "normalTexture" in doc["materials"][0]
        assert "TANGENT" in doc["meshes"][0]["primitives"][0]["attributes"]
    return doc


@pytest.fixture(scope="module")
def helmet(shared_assets):
    source = load_mesh(shared_assets / "FlightHelmet.glb")
    result = optimize(source, OptimizeConfig().with_options(faces=20_000, texture_size=1024))
    return source, result


@pytest.mark.slow
def test_flight_helmet_meets_the_bar(helmet, validate):
    source, result = helmet
    glb = meshforge.export(result.asset, "glb")
    check_glb(glb, validate)
    assert result.asset.mesh.n_faces <= 20_000
    assert result.asset.textures.base_color.shape == (1024, 1024, 4)
    cmp = compare_surfaces(result.asset, source, n_samples=50_000, seed=1)
    assert cmp.chamfer_rel <= 0.005, cmp.to_dict()
    assert cmp.color_psnr_db >= 28.0, cmp.to_dict()
    # the source's ORM occlusion is real, so it is baked too
    assert result.asset.textures.occlusion is not None


@pytest.mark.slow
@pytest.mark.parametrize("budget", [2_000, 20_000])
@pytest.mark.parametrize("name", ASSETS)
def test_every_asset_optimizes_to_a_valid_glb(name, budget, shared_assets, validate):
    source = load_mesh(shared_assets / name)
    result = optimize(source, OptimizeConfig().with_options(faces=budget, texture_size=512))
    glb = meshforge.export(result.asset, "glb")
    check_glb(glb, validate)
    assert result.asset.mesh.n_faces <= min(budget, source.n_faces())
    assert result.asset.mesh.n_faces >= 0.5 * min(budget, source.n_faces())
    cmp = compare_surfaces(result.asset, source, n_samples=20_000, color=False)
    assert cmp.f_score[0.02] > 0.9, cmp.to_dict()


def test_spot_at_1000_faces_keeps_its_shape(shared_assets):
    source = load_mesh(shared_assets / "spot.glb")
    result = optimize(source, OptimizeConfig().with_options(faces=1_000, texture_size=512))
    assert result.asset.mesh.n_faces <= 1_000
    cmp = compare_surfaces(result.asset, source, n_samples=50_000)
    assert cmp.f_score[0.01] >= 0.95
    assert cmp.color_psnr_db > 28.0


def test_flat_color_materials_are_baked(shared_assets):
    source = load_mesh(shared_assets / "kenney_cakeBirthday.glb")
    result = optimize(source, OptimizeConfig().with_options(faces=1_000, texture_size=256))
    sampled = compare_surfaces(result.asset, source, n_samples=20_000).color_psnr_db
    assert sampled > 25.0
    # every flat colour of the source appears in the baked texture
    tex = result.asset.textures.base_color[..., :3].reshape(-1, 3).astype(int)
    colors = {
        tuple(np.rint(p.sample(np.array([0]), np.array([[1.0, 0, 0]]))["base_color"][0, :3] * 255).astype(int))
        for p in source.parts
    }
    for c in colors:
        assert (np.abs(tex - np.array(c)).max(axis=1) <= 2).sum() >= 8, c  # sprinkles are small


def test_skinned_input_warns_that_skin_and_animation_are_dropped(shared_assets):
    result = optimize(shared_assets / "Fox.glb", OptimizeConfig().with_options(faces=300, texture_size=256))
    assert SKIN_WARNING in result.report.warnings
    assert result.asset.mesh.n_faces <= 300


def test_presets_and_bad_values():
    cfg = OptimizeConfig().with_options(preset="mobile")
    assert cfg.decimate.faces == PRESETS["mobile"]["faces"] and cfg.bake.texture_size == 512
    assert OptimizeConfig().with_options(preset="hero", faces=1234).decimate.faces == 1234
    with pytest.raises(meshforge.InputError, match="unknown preset"):
        OptimizeConfig().with_options(preset="huge")


def test_cli_optimize_writes_glb_report_and_preview(tmp_path, shared_assets, capsys, validate):
    out = tmp_path / "out" / "cake.glb"
    code = main(
        ["optimize", str(shared_assets / "kenney_cakeBirthday.glb"), "-o", str(out), "--preset", "mobile", "--preview"]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    check_glb(out.read_bytes(), validate)
    report = json.loads((out.parent / "cake.report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["load", "flatten", "clean", "decimate", "unwrap", "bake"]
    assert report["textures"]["base_color"] == [512, 512]
    assert (out.parent / "cake.preview.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"glTF\x02\x00\x00\x00\xff\xff\x00\x00", "glb"), (b"solid nothing\nendsolid\n", "stl"), (b"not a mesh", "obj")],
)
def test_cli_optimize_refuses_broken_files_in_one_line(tmp_path, capsys, payload, reason):
    bad = tmp_path / f"broken.{reason}"
    bad.write_bytes(payload)
    out_dir = tmp_path / "out"
    code = main(["optimize", str(bad), "-o", str(out_dir)])
    err = capsys.readouterr().err
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "broken" in lines[0], lines
    assert "Traceback" not in err
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_report_and_inspect_agree_on_winding_and_utilisation(shared_assets, tmp_path):
    """Multi-part, open source: the decimate stage's orientation counts and the unwrap stage's utilisation
    are the figures ``inspect --reference`` gives for the written file (one function each)."""
    from meshforge.eval.diagnostics import inspect_file

    path = shared_assets / "CesiumMilkTruck.glb"
    result = optimize(path, OptimizeConfig().with_options(faces=1_000, texture_size=256))
    out = tmp_path / "truck.glb"
    out.write_bytes(meshforge.export(result.asset, "glb"))
    stages = {s.name: s.counts for s in result.report.stages}
    inspected = inspect_file(out, reference=path, n_samples=5_000)
    for key in ("inconsistent_edges", "facing_away_faces"):
        assert stages["decimate"][key] == inspected["orientation"][key], key
    assert stages["decimate"]["facing_away_area"] == pytest.approx(inspected["orientation"]["facing_away_area"])
    assert inspected["diagnostics"]["topology"]["inconsistent_edges"] == stages["decimate"]["inconsistent_edges"]
    # the source is consistently wound and decimation keeps every face's winding
    assert stages["decimate"]["inconsistent_edges"] == 0
    (atlas,) = inspected["diagnostics"]["uv"]
    assert stages["unwrap"]["utilisation"] == pytest.approx(atlas["utilisation"], abs=1e-4)
    assert stages["unwrap"]["stretch"] == pytest.approx(atlas["stretch"], abs=1e-3)
    assert 1.0 <= atlas["stretch"] < 1.2


def open_bottle_glb(around: int = 72, rings: int = 32) -> bytes:
    """A textured open bottle (surface of revolution, open at the lip, UV seam split), 4,392 faces after
    cleaning: at 600, 900, 1,000 and 1,100 faces its decimation used to crash in ``repair``."""
    import trimesh
    from PIL import Image as PILImage

    t = np.linspace(0.0, 1.0, rings)
    r = np.interp(t, [0.0, 0.03, 0.55, 0.75, 0.85, 1.0], [0.0, 0.06, 0.06, 0.025, 0.02, 0.022])
    a = np.linspace(0.0, 2 * np.pi, around + 1)  # the seam column is duplicated for its UVs
    v = np.stack([r[:, None] * np.cos(a), r[:, None] * np.sin(a), np.repeat(0.3 * t[:, None], around + 1, 1)], -1)
    uv = np.stack(np.meshgrid(a / (2 * np.pi), t, indexing="xy"), -1).reshape(-1, 2)
    idx = np.arange(rings * (around + 1)).reshape(rings, around + 1)
    q00, q01, q10, q11 = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([q00, q01, q11], -1).reshape(-1, 3), np.stack([q00, q11, q10], -1).reshape(-1, 3)])
    stripes = (np.indices((64, 64)).sum(0) % 16 < 8)[..., None] * np.array([200, 40, 40]) + 30
    image = PILImage.fromarray(stripes.astype(np.uint8))
    mesh = trimesh.Trimesh(
        v.reshape(-1, 3), faces, process=False, visual=trimesh.visual.TextureVisuals(uv=uv, image=image)
    )
    return mesh.export(file_type="glb")


#: budgets swept per source (FlightHelmet's 95k-face source count and small budgets take ~5 s each: fewer)
SWEEP = (100, 300, 500, 800, 1_000, 2_000, 5_000)
SWEEP_ASSETS = {name: SWEEP for name in ASSETS} | {"FlightHelmet.glb": (100, 800, 5_000), "bottle": SWEEP}


@pytest.mark.parametrize("name", list(SWEEP_ASSETS))
def test_every_budget_gives_a_valid_asset_or_says_why_not(name, shared_assets, validate):
    """Low budgets (LODs, mobile) from 100 faces up to the source's count: each ends in a valid asset
    within budget, or — when the source has more separate parts than the budget can hold — in the fewest
    faces reachable with a report warning that gives the count and why; never an internal error."""
    source = load_mesh(open_bottle_glb() if name == "bottle" else shared_assets / name)
    n = source.n_faces()
    budgets = sorted({b for b in SWEEP_ASSETS[name] if b < n} | ({n} if name != "FlightHelmet.glb" else set()))
    for budget in budgets:
        result = optimize(source, OptimizeConfig().with_options(faces=budget, texture_size=64))
        mesh = result.asset.mesh
        shortfall = [w for w in result.report.warnings if w.startswith(f"face budget {budget} not reachable")]
        if mesh.n_faces > budget:
            assert len(shortfall) == 1 and f"has {mesh.n_faces} faces" in shortfall[0], result.report.warnings
            parts = re.search(r"(\d+) separate", shortfall[0])  # collapses never remove a part
            assert parts is not None and int(parts.group(1)) > 1, shortfall
        else:
            assert mesh.n_faces > 0 and not shortfall, (budget, mesh.n_faces, shortfall)
        assert np.isfinite(mesh.vertices).all() and mesh.uv is not None and np.isfinite(mesh.uv).all()
        assert result.asset.textures.base_color.shape == (64, 64, 4)
        check_glb(meshforge.export(result.asset, "glb"), validate)


def test_atlas_utilisation_of_a_real_asset(shared_assets):
    """spot.glb at a modest budget: UV triangles cover at least half of the atlas (the unwrap stage's figure,
    exact UV area over the unit square; 0.35 with the old 4-texel-plus-bilinear padding), at no more stretch.
    The issue's bar is 0.65 (benchmarks/results/atlas_quality.md has every shared input)."""
    from meshforge.geometry.raster import uv_stretch, uv_utilisation

    result = optimize(shared_assets / "spot.glb", OptimizeConfig().with_options(faces=3_000, texture_size=512))
    mesh = result.asset.mesh
    unwrap = next(s.counts for s in result.report.stages if s.name == "unwrap")
    assert unwrap["utilisation"] == pytest.approx(uv_utilisation(mesh.uv, mesh.faces), abs=1e-4)
    assert unwrap["utilisation"] >= 0.5
    assert 1.0 <= uv_stretch(mesh.vertices, mesh.uv, mesh.faces) <= 1.01
