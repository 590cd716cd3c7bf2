"""optimize: the material of inputs without PBR data follows each format's convention.

glTF 2.0 §3.9.6: a primitive without a material uses the default material (metallic 1, roughness 1); that
is kept, and the report says so. OBJ (without ``Pm``/``Pr`` in its MTL), PLY and STL have no metalness:
they are dielectric (metallic 0), roughness 0.5 or derived from the MTL's ``Ns``.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import trimesh

import meshforge
from meshforge.export.glb import read_glb_json
from meshforge.io.meshes import load_mesh
from meshforge.io.trimesh_formats import DEFAULT_ROUGHNESS
from meshforge.optimize import OptimizeConfig, optimize

CFG = OptimizeConfig().with_options(faces=300, texture_size=64)


def sphere() -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=3, radius=0.5)  # 1280 faces


def baked_material(result) -> tuple[dict, np.ndarray, str]:
    """(glTF pbrMetallicRoughness of the GLB, its metallic-roughness texels, the OBJ's MTL text)."""
    glb = meshforge.export(result.asset, "glb")
    pbr = read_glb_json(glb)["materials"][0]["pbrMetallicRoughness"]
    (part,) = load_mesh(glb, fmt="glb").parts
    files = meshforge.export_files(result.asset, "obj", "out")
    return pbr, part.metallic_roughness, files["out.mtl"].decode()


@pytest.mark.parametrize("fmt", ["obj", "ply", "stl"])
def test_untextured_obj_ply_stl_come_out_dielectric(fmt, tmp_path):
    path = tmp_path / f"plain.{fmt}"
    sphere().export(path)
    result = optimize(path, CFG)
    pbr, mr, mtl = baked_material(result)
    assert pbr["metallicFactor"] == 0.0
    assert mr[..., 2].max() == 0  # metallic texels (B)
    # roughness: the documented default, factor × texel
    rough = pbr["roughnessFactor"] * mr[..., 1].astype(float) / 255.0
    assert np.abs(rough - DEFAULT_ROUGHNESS).max() <= 1.0 / 255.0
    assert "Pm 0.000000" in mtl.splitlines()
    assert not any("default material" in w for w in result.report.warnings)


def write_obj_with_mtl(tmp_path, mtl_lines: list[str]):
    mesh = sphere()
    obj = ["mtllib m.mtl", "usemtl paint"]
    obj += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices]
    obj += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.faces]
    (tmp_path / "m.obj").write_text("\n".join(obj) + "\n")
    (tmp_path / "m.mtl").write_text("\n".join(["newmtl paint", "Kd 0.8 0.2 0.1", *mtl_lines]) + "\n")
    return tmp_path / "m.obj"


@pytest.mark.parametrize(
    ("lines", "metallic", "roughness"),
    [
        ([], 0.0, DEFAULT_ROUGHNESS),
        (["Ns 250"], 0.0, 0.5),  # Blender's mapping: 1 − sqrt(Ns / 1000)
        (["Ns 10", "Pm 0.75", "Pr 0.25"], 0.75, 0.25),  # the PBR extension wins over Ns
    ],
)
def test_obj_mtl_metallic_and_roughness(lines, metallic, roughness, tmp_path):
    scene = load_mesh(write_obj_with_mtl(tmp_path, lines))
    (part,) = scene.parts
    assert part.material.metallic_factor == pytest.approx(metallic)
    assert part.material.roughness_factor == pytest.approx(roughness)
    pbr, mr, _ = baked_material(optimize(scene, CFG))
    baked_metallic = pbr["metallicFactor"] * mr[..., 2].astype(float) / 255.0
    assert np.abs(baked_metallic - metallic).max() <= 1.0 / 255.0


def minimal_glb(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """A GLB with one triangle primitive and no material (glTF 2.0 §4.4 container)."""
    pos = vertices.astype("<f4").tobytes()
    idx = faces.astype("<u4").tobytes()
    doc = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
        "buffers": [{"byteLength": len(pos) + len(idx)}],
        "bufferViews": [
            {"buffer": 0, "byteOffset": 0, "byteLength": len(pos)},
            {"buffer": 0, "byteOffset": len(pos), "byteLength": len(idx)},
        ],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": len(vertices),
                "type": "VEC3",
                "min": vertices.min(0).tolist(),
                "max": vertices.max(0).tolist(),
            },
            {"bufferView": 1, "componentType": 5125, "count": faces.size, "type": "SCALAR"},
        ],
    }
    js = json.dumps(doc).encode()
    js += b" " * (-len(js) % 4)
    body = pos + idx
    chunks = struct.pack("<II", len(js), 0x4E4F534A) + js + struct.pack("<II", len(body), 0x004E4942) + body
    return struct.pack("<III", 0x46546C67, 2, 12 + len(chunks)) + chunks


def test_gltf_without_material_keeps_the_default_material_and_says_so():
    mesh = sphere()
    result = optimize(minimal_glb(np.asarray(mesh.vertices), np.asarray(mesh.faces)), CFG)
    pbr, mr, _ = baked_material(result)
    # glTF's default material: metallic 1, roughness 1, white
    assert pbr["metallicFactor"] * mr[..., 2].min() / 255.0 == pytest.approx(1.0)
    assert pbr["roughnessFactor"] * mr[..., 1].min() / 255.0 == pytest.approx(1.0)
    notes = [w for w in result.report.warnings if "default material" in w]
    assert len(notes) == 1 and "metallic 1" in notes[0], result.report.warnings


def test_generate_writes_a_dielectric_material(shared_images):
    """The weightless backend bakes metallic 0: the OBJ's ``Pm`` says so too, not ``Pm 1`` over a zero map."""
    cfg = meshforge.PipelineConfig().with_options(resolution=48, faces=1000, texture_size=64)
    result = meshforge.generate(shared_images / "triposr__chair.png", "inflate", cfg)
    pbr, mr, mtl = baked_material(result)
    assert pbr["metallicFactor"] == 0.0 and mr[..., 2].max() == 0
    assert "Pm 0.000000" in mtl.splitlines()
