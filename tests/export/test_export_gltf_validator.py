"""The Khronos glTF validator harness (meshforge.eval.validate) on files, bytes and broken input."""

from __future__ import annotations

import base64
import copy
import json
import shutil

import pytest

from meshforge.errors import InputError, MissingDependency
from meshforge.eval import validate as validate_mod
from meshforge.export import export
from meshforge.export.glb import build_gltf, pack_glb


def test_validate_glb_path_and_bytes_agree(textured_asset, validate, tmp_path):
    data = export(textured_asset, "glb")
    path = tmp_path / "cube.glb"
    path.write_bytes(data)
    from_path = validate(path)
    from_bytes = validate(data)
    for report in (from_path, from_bytes):
        assert report["errors"] == 0 and report["warnings"] == 0
        assert set(report) >= {"errors", "warnings", "infos", "hints", "messages"}
    assert from_path["report"]["uri"] == "cube.glb"
    assert from_path["info"] == from_bytes["info"]


def test_gltf_with_external_resources_is_read_beside_it(textured_asset, validate, tmp_path):
    gltf, bin_data = build_gltf(textured_asset)
    gltf["buffers"][0]["uri"] = "cube.bin"
    (tmp_path / "cube.gltf").write_text(json.dumps(gltf))
    (tmp_path / "cube.bin").write_bytes(bin_data)
    report = validate(tmp_path / "cube.gltf")
    assert report["errors"] == 0 and report["warnings"] == 0
    assert report["info"]["resources"][0]["storage"] == "external"

    (tmp_path / "cube.bin").unlink()
    missing = validate(tmp_path / "cube.gltf")
    assert missing["errors"] > 0
    assert any(m["code"] == "IO_ERROR" and m["severity"] == "error" for m in missing["messages"])


def test_embedded_data_uri_gltf_bytes(textured_asset, validate):
    gltf, bin_data = build_gltf(textured_asset)
    gltf["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(bin_data).decode()
    report = validate(json.dumps(gltf).encode())
    assert report["errors"] == 0
    assert report["report"]["mimeType"] == "model/gltf+json"


def test_broken_glb_is_reported_with_messages(textured_asset, validate):
    gltf, bin_data = build_gltf(textured_asset)
    broken = copy.deepcopy(gltf)
    pos = broken["meshes"][0]["primitives"][0]["attributes"]["POSITION"]
    broken["accessors"][pos]["max"] = [0.0, 0.0, 0.0]
    del broken["bufferViews"][0]["target"]
    report = validate(pack_glb(broken, bin_data))
    assert report["errors"] >= 1
    codes = {m["code"]: m for m in report["messages"]}
    assert codes["ACCESSOR_MAX_MISMATCH"]["severity"] == "error"
    assert codes["ACCESSOR_MAX_MISMATCH"]["pointer"].startswith(f"/accessors/{pos}/max")
    assert all({"code", "severity", "pointer", "message"} <= set(m) for m in report["messages"])


def test_not_gltf_raises_input_error(validate, tmp_path):
    with pytest.raises(InputError, match="rejected"):
        validate(b"this is not a glTF file")
    with pytest.raises(InputError, match="no such file"):
        validate(tmp_path / "absent.glb")


def test_missing_validator_raises_missing_dependency(monkeypatch, tmp_path, textured_asset):
    monkeypatch.setenv(validate_mod.ENV_DIR, str(tmp_path))
    with pytest.raises(MissingDependency, match=r"npm ci --prefix tools/gltf-validator"):
        validate_mod.validate_gltf(b"glTF")
    # Script present but the npm package not installed beside it.
    shutil.copy(validate_mod.Path(validate_mod.__file__).parents[3] / "tools/gltf-validator/validate.mjs", tmp_path)
    with pytest.raises(MissingDependency, match="not installed"):
        validate_mod.validate_gltf(b"glTF")
    monkeypatch.delenv(validate_mod.ENV_DIR)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(validate_mod.ENV_NODE, raising=False)
    with pytest.raises(MissingDependency, match=r"Node\.js"):
        validate_mod.validate_gltf(b"glTF")
