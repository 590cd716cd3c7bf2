"""The raw reconstruction (:mod:`meshforge.raw`): the portable voxel attribute volume, the ``.mfraw`` file,
and :func:`meshforge.finish` re-finishing a raw without the backend."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import meshforge
from meshforge.backends import load_backend
from meshforge.config import PipelineConfig
from meshforge.errors import InputError, one_line
from meshforge.fields.surface import FieldSurfacePart, SurfaceField
from meshforge.mesh.bake import bake, rasterize_atlas
from meshforge.mesh.clean import clean
from meshforge.raw import CHANNELS, RAW_VERSION, VoxelField, dumps_raw, loads_raw, portable

CHAIR = "triposr__chair.png"


@pytest.fixture(scope="module")
def chair(shared_images):
    """The chair through the inflate backend at the default extraction resolution (256), small budgets."""
    cfg = PipelineConfig().with_options(faces=5000, texture_size=512)
    return meshforge.generate(shared_images / CHAIR, load_backend("inflate"), cfg), cfg


class LinearField:
    """Colour and material linear in position: trilinear interpolation reproduces them exactly."""

    bbox_min = np.full(3, -0.5, np.float32)
    bbox_max = np.full(3, 0.5, np.float32)
    iso_level = 0.0

    def density(self, p: np.ndarray) -> np.ndarray:
        return (0.3 - np.linalg.norm(p, axis=1)).astype(np.float32)

    def color(self, p: np.ndarray) -> np.ndarray:
        return (np.asarray(p, np.float32) + 0.5) * np.float32(0.8) + np.float32(0.1)

    def material(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (p[:, 0] + 0.5).astype(np.float32) * 0.5, (p[:, 1] + 0.5).astype(np.float32) * 0.5 + 0.25


def test_voxel_volume_reproduces_a_linear_field_and_falls_back_to_the_nearest_voxel():
    from meshforge.config import ExtractConfig
    from meshforge.fields.isosurface import extract

    field = LinearField()
    sphere = extract(field, ExtractConfig(resolution=48, engine="skimage"))
    vox = VoxelField.sample(field, sphere, 48)
    assert vox.values.dtype == np.float16 and vox.values.shape == (len(vox.coords), len(CHANNELS))
    assert len(vox.coords) < 48**3 // 4  # a narrow band, not the whole grid
    rng = np.random.default_rng(0)
    on = sphere.vertices[rng.choice(sphere.n_vertices, 2000)]
    assert np.abs(vox.color(on) - field.color(on)).max() < 2e-3  # float16 rounding only
    metallic, roughness = vox.material(on)
    assert np.abs(metallic - field.material(on)[0]).max() < 2e-3
    assert np.abs(roughness - field.material(on)[1]).max() < 2e-3
    # far from the band (the centre of the sphere): the nearest stored voxel's value, not zeros
    centre = np.zeros((1, 3), np.float32)
    dist = np.linalg.norm(vox.coords - 23.5, axis=1)  # the centre is grid point (23.5, 23.5, 23.5)
    nearest = vox.values[dist <= dist.min() + 1e-9, :3].astype(np.float32)
    assert np.abs(nearest - vox.color(centre)[0]).max(axis=1).min() < 1e-6


def test_bake_from_the_voxel_volume_matches_the_live_field(chair):
    """Base colour texels baked from the portable volume vs from the backend's live field, same mesh."""
    result, cfg = chair
    raw = result.raw
    vox = portable(raw).attributes
    assert isinstance(vox, VoxelField) and vox.resolution == 256
    cleaned, _ = clean(raw.surface, cfg.clean)
    diag = float(np.linalg.norm(cleaned.vertices.max(0) - cleaned.vertices.min(0)))
    mesh = result.asset.mesh
    baked = {}
    for name, source in (("live", raw.attributes), ("voxels", vox)):
        field = SurfaceField([FieldSurfacePart(cleaned, source)], cage=cfg.bake.cage_fraction * diag)
        baked[name] = bake(mesh, field, cfg.bake)[0]
    covered = rasterize_atlas(mesh, cfg.bake.texture_size).covered
    live = baked["live"].base_color[..., :3][covered].astype(np.float64)
    voxels = baked["voxels"].base_color[..., :3][covered].astype(np.float64)
    mae = np.abs(live - voxels).mean()
    assert mae < 2.0, f"mean abs base-colour error {mae:.2f}/255"  # measured 1.01/255
    mr_live = baked["live"].metallic_roughness[covered].astype(np.int16)
    assert np.abs(mr_live - baked["voxels"].metallic_roughness[covered]).max() <= 1


def test_finish_refinishes_a_raw_with_another_budget(chair):
    result, cfg = chair
    again = meshforge.finish(portable(result.raw), cfg.with_options(faces=1000, texture_size=256))
    assert again.asset.mesh.n_faces <= 1000
    assert again.asset.textures is not None and again.asset.textures.base_color.shape == (256, 256, 4)
    rep = again.report.to_dict()
    assert [s["name"] for s in rep["stages"]] == ["clean", "decimate", "unwrap", "bake"]
    assert rep["info"]["source"]["backend_loaded"] is False
    assert rep["info"]["source"]["backend"]["name"] == "inflate"
    assert again.asset.extras["meshforge"]["parameters"]["faces"] == 1000
    assert again.asset.extras["meshforge"]["input_sha256"] == result.asset.extras["meshforge"]["input_sha256"]
    # the generate run itself says a backend's live field was baked
    assert result.report.info["source"]["backend_loaded"] is True
    # the same options again: the same mesh as the original asset
    same = meshforge.finish(portable(result.raw), cfg)
    assert same.asset.mesh.n_faces == result.asset.mesh.n_faces
    assert np.array_equal(same.asset.mesh.faces, result.asset.mesh.faces)
    assert np.allclose(same.asset.mesh.vertices, result.asset.mesh.vertices)


def test_raw_file_round_trips(chair):
    result, _ = chair
    raw = portable(result.raw)
    data = dumps_raw(raw)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert all(not n.endswith((".pkl", ".pickle")) for n in zf.namelist())
    assert manifest["format"] == "meshforge-raw" and manifest["version"] == RAW_VERSION
    back = loads_raw(data, "chair.mfraw")
    assert np.array_equal(back.surface.vertices, raw.surface.vertices)
    assert np.array_equal(back.surface.faces, raw.surface.faces)
    assert isinstance(back.attributes, VoxelField) and isinstance(raw.attributes, VoxelField)
    assert np.array_equal(back.attributes.coords, raw.attributes.coords)
    assert np.array_equal(back.attributes.values, raw.attributes.values)
    assert back.attributes.resolution == raw.attributes.resolution
    assert back.prepared is not None and np.array_equal(back.prepared.rgba, result.prepared.rgba)
    assert back.provenance == json.loads(json.dumps(raw.provenance))
    assert back.config == raw.config and back.name == raw.name and back.material == raw.material


def _rewrite(data: bytes, change) -> bytes:
    """A copy of a raw file's zip with ``change(name, bytes) -> bytes | None`` applied to each member."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            new = change(name, src.read(name))
            if new is not None:
                dst.writestr(name, new)
    return out.getvalue()


def _newer(name: str, blob: bytes) -> bytes:
    if name != "manifest.json":
        return blob
    manifest = json.loads(blob)
    manifest["version"] = RAW_VERSION + 1
    return json.dumps(manifest).encode()


def _smaller_grid(name: str, blob: bytes) -> bytes:
    if name != "manifest.json":
        return blob
    manifest = json.loads(blob)
    manifest["attributes"]["resolution"] = 16  # the stored voxel indices no longer fit
    return json.dumps(manifest).encode()


def _corrupt_member(data: bytes) -> bytes:
    """Flip bytes inside the largest member's compressed data (its CRC or inflate then fails)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = max(zf.infolist(), key=lambda i: i.compress_size)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    buf = bytearray(data)
    mid = start + info.compress_size // 2
    buf[mid : mid + 64] = bytes(b ^ 0x5A for b in buf[mid : mid + 64])
    return bytes(buf)


BAD_RAWS = {
    "newer": (lambda d: _rewrite(d, _newer), f"made by a newer meshforge (format {RAW_VERSION + 1} > {RAW_VERSION})"),
    "truncated": (lambda d: d[: len(d) // 2], "truncated or corrupt"),
    "corrupt member": (_corrupt_member, "truncated or corrupt"),
    "inconsistent": (lambda d: _rewrite(d, _smaller_grid), "inconsistent (voxel volume: indices outside"),
    "png": (lambda d: b"\x89PNG\r\n\x1a\n" + bytes(100), "not a meshforge raw file"),
    "other zip": (lambda d: _rewrite(d, lambda n, b: None if n == "manifest.json" else b), "not a meshforge raw file"),
    "missing member": (lambda d: _rewrite(d, lambda n, b: None if n == "voxel_values.npy" else b), "missing"),
}


@pytest.mark.parametrize("case", sorted(BAD_RAWS))
def test_bad_raw_files_give_one_line_errors(case, chair):
    make, needle = BAD_RAWS[case]
    data = make(dumps_raw(portable(chair[0].raw)))
    with pytest.raises(InputError) as info:
        loads_raw(data, "chair.mfraw")
    message = str(info.value)
    assert message == one_line(info.value) and message.startswith("chair.mfraw: ")
    assert needle in message, message


def test_a_triposr_raw_finishes_where_torch_cannot_be_imported(tmp_path):
    """The tiny TripoSR fixture (random weights), extracted on a 64³ grid: its raw samples the triplane field on
    a 256³ grid (the floor), and the saved file finishes in a process where ``import torch`` fails."""
    pytest.importorskip("torch")
    from meshforge.backends.triposr.backend import TripoSRBackend

    from .conftest import shared_dir

    fixtures = shared_dir() / "fixtures" / "triposr"
    backend = TripoSRBackend(weights=str(fixtures), device="cpu")
    cfg = PipelineConfig().with_options(resolution=64, faces=500, texture_size=64, background="keep")
    result = meshforge.generate(fixtures / "input.png", backend, cfg)
    raw = portable(result.raw)
    assert isinstance(raw.attributes, VoxelField) and raw.attributes.resolution == 256
    assert np.array_equal(raw.attributes.bbox_max, result.raw.attributes.bbox_max)
    on = result.raw.surface.vertices
    diff = np.abs(raw.attributes.color(on) - result.raw.attributes.color(on))
    assert diff.mean() < 1 / 255, diff.mean()
    path = tmp_path / "tsr.mfraw"
    meshforge.save_raw(result.raw, path)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import meshforge\n"
        f"r = meshforge.finish(meshforge.load_raw({str(path)!r}))\n"
        "source = r.report.info['source']\n"
        "print(r.asset.mesh.n_faces, source['backend_loaded'], source['backend']['name'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(result.asset.mesh.n_faces), "False", "triposr"]
