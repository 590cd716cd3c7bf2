"""``meshforge generate --backend trellis2`` end to end on a CPU: random tiny weights in the official layout
(written by ``meshforge models random``), a real picture, our whole finishing pipeline, a validated GLB;
the raw re-exported without torch; real opacity baked into the base colour's alpha and ``alphaMode``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from meshforge.cli import main  # noqa: E402
from meshforge.export.glb import read_glb_json  # noqa: E402


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trellis2") / "w"
    assert main(["models", "random", "trellis2", "--size", "tiny", "-o", str(out)]) == 0
    return out


def _gltf_json(path: Path) -> dict:
    return read_glb_json(path.read_bytes())


def test_generate_with_random_tiny_weights_writes_a_valid_pbr_glb(
    weights: Path, tmp_path: Path, validate, shared_images: Path
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "generate",
            str(shared_images / "triposr__robot.png"),
            "--backend",
            "trellis2",
            "--weights",
            str(weights),
            "-o",
            str(out),
        ]
        + ["--texture-size", "512", "--save-raw", "-q"]
    )
    assert code == 0
    glb = out / "triposr__robot.glb"
    report = validate(glb)
    assert report["errors"] == 0 and report["warnings"] == 0
    doc = _gltf_json(glb)
    pbr = doc["materials"][0]["pbrMetallicRoughness"]
    assert "baseColorTexture" in pbr and "metallicRoughnessTexture" in pbr
    rep = json.loads((out / "triposr__robot.report.json").read_text())
    extract = next(s for s in rep["stages"] if s["name"] == "extract")
    assert extract["counts"]["source"] == "backend mesh"  # the decoder's mesh, not an isosurface
    assert rep["info"]["backend"]["name"] == "trellis2"
    assert rep["info"]["backend"]["pipeline_type"] in ("512", "1024_cascade", "1536_cascade")

    # the raw re-exports with another budget, without torch and without loading the backend
    raw = out / "triposr__robot.mfraw"
    again = tmp_path / "again"
    argv = ["export", str(raw), "--faces", "800", "--texture-size", "256", "-o", str(again), "-q"]
    script = (
        "import sys; from meshforge.cli import main; "
        f"code = main({argv!r}); "
        "assert 'torch' not in sys.modules, 'export imported torch'; sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report2 = validate(again / "triposr__robot.glb")
    assert report2["errors"] == 0 and report2["warnings"] == 0
    rep2 = json.loads((again / "triposr__robot.report.json").read_text())
    assert rep2["info"]["source"]["backend_loaded"] is False
    assert rep2["info"]["source"]["attributes"].startswith("sparse PBR voxels")


def test_real_opacity_sets_alpha_mode_and_bakes_alpha(tmp_path: Path, validate) -> None:
    """Voxels whose alpha is 0 on one half and 1 on the other: a MASK material whose base-colour alpha
    follows the voxels; a fully opaque copy stays OPAQUE with alpha 255."""
    import meshforge
    from meshforge.backends.trellis2.dual_grid import flexible_dual_grid_to_mesh
    from meshforge.config import PipelineConfig
    from meshforge.export import export
    from meshforge.fields.sparse_voxels import GLTF_TO_TRELLIS, SparseVoxelField
    from meshforge.raw import Raw
    from meshforge.types import Material, Mesh

    from .test_dual_grid import sphere_grid

    (coords, dual, flags), _, _ = sphere_grid(24, 0.3)
    vertices, faces = flexible_dual_grid_to_mesh(
        torch.from_numpy(coords),
        torch.from_numpy(dual),
        torch.from_numpy(flags),
        torch.ones(len(coords), 1),
        grid_size=24,
    )
    attrs = np.zeros((len(coords), 6), np.float32)
    attrs[:, :3] = 0.6
    attrs[:, 4] = 0.5
    attrs[:, 5] = (coords[:, 0] >= 12).astype(np.float32)  # +x half opaque, −x half clear
    for alpha_values, expected in ((attrs[:, 5], "MASK"), (np.ones(len(coords), np.float32), "OPAQUE")):
        a = attrs.copy()
        a[:, 5] = alpha_values
        field = SparseVoxelField(coords, a, (-0.5, -0.5, -0.5), 1 / 24, transform=GLTF_TO_TRELLIS)
        assert field.alpha_mode == expected
        surface = Mesh(vertices=field.to_canonical(vertices), faces=faces.numpy().astype(np.int32))
        raw = Raw(surface=surface, attributes=field, name="half", material=Material(name="m", alpha_mode=expected))
        cfg = PipelineConfig().with_options(faces=800, texture_size=128)
        result = meshforge.finish(raw, cfg)
        assert result.asset.material.alpha_mode == expected
        alpha = result.asset.textures.base_color[..., 3]
        if expected == "OPAQUE":
            assert alpha.min() == 255
        else:
            assert (alpha < 128).mean() > 0.2 and (alpha > 128).mean() > 0.2
        path = tmp_path / f"{expected}.glb"
        path.write_bytes(export(result.asset, "glb"))
        report = validate(path)
        assert report["errors"] == 0 and report["warnings"] == 0
        mat = _gltf_json(path)["materials"][0]
        assert mat.get("alphaMode", "OPAQUE") == expected
