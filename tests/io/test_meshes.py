"""Tests for meshforge.io.meshes (and the modules it reads with: scene, gltf_reader, gltf_document,
trimesh_formats): the shared real assets, glTF details, OBJ/PLY/STL, sampling, refusals."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trimesh
from PIL import Image as PILImage

from meshforge.errors import InputError
from meshforge.export.glb import pack_glb, read_glb_json, write_glb
from meshforge.geometry.color import linear_to_srgb, srgb_to_linear
from meshforge.geometry.texture import CLAMP_TO_EDGE, MIRRORED_REPEAT, REPEAT, sample_texture
from meshforge.io.gltf_reader import SKIN_WARNING
from meshforge.io.meshes import load_mesh
from meshforge.io.scene import SourcePart, SourceScene
from meshforge.types import Asset, Material, Mesh, Textures

# (file, parts, faces) as in shared/data/MANIFEST.md
ASSETS = [
    ("spot.glb", 1, 5856),
    ("FlightHelmet.glb", 6, 94722),
    ("kenney_cakeBirthday.glb", 42, 1332),
    ("Fox.glb", 1, 576),
    ("CesiumMilkTruck.glb", 5, 3624),
]

_CACHE: dict[str, SourceScene] = {}


def load_shared(assets: Path, name: str) -> SourceScene:
    if name not in _CACHE:
        _CACHE[name] = load_mesh(assets / name)
    return _CACHE[name]


# --------------------------------------------------------------------------------------------------------
# helpers: hand-made glTF documents
# --------------------------------------------------------------------------------------------------------


class DocBuilder:
    """Builds small glTF documents with arbitrary accessors (component types, normalized, modes)."""

    def __init__(self) -> None:
        self.bin = bytearray()
        self.doc: dict[str, Any] = {
            "asset": {"version": "2.0"},
            "scene": 0,
            "scenes": [{"nodes": []}],
            "nodes": [],
            "meshes": [],
            "accessors": [],
            "bufferViews": [],
            "buffers": [],
        }

    def accessor(self, array: np.ndarray, ctype: int, kind: str, *, normalized: bool = False) -> int:
        dtype = {5121: "<u1", 5123: "<u2", 5125: "<u4", 5126: "<f4"}[ctype]
        data = np.ascontiguousarray(array, dtype=dtype).tobytes()
        while len(self.bin) % 4:
            self.bin.append(0)
        self.doc["bufferViews"].append({"buffer": 0, "byteOffset": len(self.bin), "byteLength": len(data)})
        self.bin.extend(data)
        acc: dict[str, Any] = {
            "bufferView": len(self.doc["bufferViews"]) - 1,
            "componentType": ctype,
            "count": int(len(array)),
            "type": kind,
        }
        if normalized:
            acc["normalized"] = True
        self.doc["accessors"].append(acc)
        return len(self.doc["accessors"]) - 1

    def mesh(
        self,
        positions: np.ndarray,
        indices: np.ndarray | None,
        *,
        mode: int = 4,
        attributes: dict[str, int] | None = None,
        material: int | None = None,
    ) -> int:
        attrs = {"POSITION": self.accessor(positions, 5126, "VEC3"), **(attributes or {})}
        prim: dict[str, Any] = {"attributes": attrs, "mode": mode}
        if indices is not None:
            prim["indices"] = self.accessor(np.asarray(indices).reshape(-1), 5125, "SCALAR")
        if material is not None:
            prim["material"] = material
        self.doc["meshes"].append({"primitives": [prim]})
        return len(self.doc["meshes"]) - 1

    def node(self, mesh: int | None = None, *, root: bool = True, **fields: Any) -> int:
        node = dict(fields)
        if mesh is not None:
            node["mesh"] = mesh
        self.doc["nodes"].append(node)
        index = len(self.doc["nodes"]) - 1
        if root:
            self.doc["scenes"][0]["nodes"].append(index)
        return index

    def glb(self) -> bytes:
        self.doc["buffers"] = [{"byteLength": len(self.bin)}]
        return pack_glb(self.doc, bytes(self.bin))


def box_mesh() -> tuple[np.ndarray, np.ndarray]:
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    return np.asarray(box.vertices, dtype=np.float32), np.asarray(box.faces, dtype=np.int64)


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    t = np.asarray(vertices, dtype=np.float64)[faces]
    return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6.0)


# --------------------------------------------------------------------------------------------------------
# the shared assets
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "n_parts", "n_faces"), ASSETS)
def test_shared_asset_loads(shared_assets: Path, name: str, n_parts: int, n_faces: int) -> None:
    scene = load_shared(shared_assets, name)
    assert len(scene.parts) == n_parts
    assert scene.n_faces() == n_faces
    assert scene.sha256 == hashlib.sha256((shared_assets / name).read_bytes()).hexdigest()
    assert scene.name == Path(name).stem
    assert scene.meta["format"] == "glb"
    for part in scene.parts:
        m = part.mesh
        assert m.vertices.dtype == np.float32 and m.faces.dtype == np.int32
        assert m.faces.min() >= 0 and m.faces.max() < m.n_vertices
        assert np.all(np.isfinite(m.vertices))
    # Node transforms are applied: the bounds agree with trimesh's scene bounds.
    ref = trimesh.load(shared_assets / name, force="scene").bounds
    lo, hi = scene.bounds()
    np.testing.assert_allclose(lo, ref[0], atol=1e-5)
    np.testing.assert_allclose(hi, ref[1], atol=1e-5)
    assert scene.diagonal() == pytest.approx(float(np.linalg.norm(ref[1] - ref[0])), rel=1e-6)


def test_flight_helmet_pbr_textures(shared_assets: Path) -> None:
    scene = load_shared(shared_assets, "FlightHelmet.glb")
    doc = read_glb_json((shared_assets / "FlightHelmet.glb").read_bytes())
    assert {p.material.name for p in scene.parts} == {m["name"] for m in doc["materials"]}
    for part in scene.parts:
        assert part.base_color is not None and part.base_color.shape == (512, 512, 4)
        assert part.metallic_roughness is not None and part.metallic_roughness.shape == (512, 512, 3)
        assert part.normal is not None and part.normal.shape[2] == 3
        assert part.occlusion is not None and part.occlusion.shape == (512, 512)
        # The ORM texture serves both maps: occlusion is its R channel.
        np.testing.assert_array_equal(part.occlusion, part.metallic_roughness[..., 0])
        assert part.tangents is not None and part.tangents.shape == (part.mesh.n_vertices, 4)
        assert part.mesh.normals is not None and part.mesh.uv is not None
        assert part.wrap["base_color"] == (REPEAT, REPEAT)
    by_name = {p.material.name: p for p in scene.parts}
    assert by_name["LensesMat"].material.alpha_mode == "BLEND"
    assert by_name["HoseMat"].material.double_sided is True
    assert by_name["RubberWoodMat"].material.double_sided is False
    # Shading normals follow the normal map: unit length, near but not equal to the vertex normals.
    part = by_name["LeatherPartsMat"]
    rng = np.random.default_rng(0)
    face = rng.integers(0, part.mesh.n_faces, 2000)
    bary = rng.dirichlet((1.0, 1.0, 1.0), 2000)
    s = part.sample(face, bary)
    np.testing.assert_allclose(np.linalg.norm(s["normal"], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(s["geometric_normal"], axis=1), 1.0, atol=1e-6)
    interp = np.einsum("nk,nkd->nd", bary, part.mesh.normals[part.mesh.faces[face]])
    interp /= np.linalg.norm(interp, axis=1, keepdims=True)
    cos = np.einsum("ij,ij->i", s["normal"], interp)
    assert np.median(cos) > 0.9 and np.mean(cos < 0.99999) > 0.5
    assert s["base_color"].shape == (2000, 4) and 0.0 <= s["base_color"].min() <= s["base_color"].max() <= 1.0
    assert np.all((s["roughness"] >= 0) & (s["roughness"] <= 1) & (s["metallic"] >= 0) & (s["metallic"] <= 1))
    assert s["occlusion"].min() >= 0.0 and s["occlusion"].max() <= 1.0


def test_cake_flat_colors(shared_assets: Path) -> None:
    scene = load_shared(shared_assets, "kenney_cakeBirthday.glb")
    doc = read_glb_json((shared_assets / "kenney_cakeBirthday.glb").read_bytes())
    expected = {m["name"]: tuple(m["pbrMetallicRoughness"]["baseColorFactor"]) for m in doc["materials"]}
    factors = {p.material.base_color_factor for p in scene.parts}
    assert len(factors) == 7  # seven distinct flat colours, exact (not quantised to 8 bits)
    for part in scene.parts:
        assert part.material.base_color_factor == pytest.approx(expected[part.material.name], abs=1e-12)
        assert part.textures() == {}
        s = part.sample(np.zeros(3, dtype=np.int64), np.full((3, 3), 1 / 3))
        want = linear_to_srgb(np.asarray(expected[part.material.name][:3]))
        np.testing.assert_allclose(s["base_color"][:, :3], np.tile(want, (3, 1)), atol=1e-6)
    # The file lists KHR_materials_unlit in extensionsUsed but no material references it.
    assert "KHR_materials_unlit" in scene.meta["extensions_used"]
    assert not any(p.unlit for p in scene.parts)


def test_fox_skin_warning(shared_assets: Path) -> None:
    scene = load_shared(shared_assets, "Fox.glb")
    assert SKIN_WARNING in scene.warnings
    assert "skin and animation are not carried over" in SKIN_WARNING
    assert scene.meta["skins"] == 1 and scene.meta["animations"] == 3
    assert any("centimetres" in w for w in scene.warnings)
    # Rest pose = the positions as stored.
    gltf = trimesh.load(shared_assets / "Fox.glb", force="scene")
    stored = next(iter(gltf.geometry.values())).vertices
    np.testing.assert_allclose(np.sort(scene.parts[0].mesh.vertices[:, 1]), np.sort(stored[:, 1]), atol=1e-4)


def test_truck_instances_and_animation_warning(shared_assets: Path) -> None:
    scene = load_shared(shared_assets, "CesiumMilkTruck.glb")
    assert SKIN_WARNING in scene.warnings  # animated, not skinned
    wheels = [p for p in scene.parts if p.name == "Wheels"]
    assert len(wheels) == 2
    c0, c1 = (w.mesh.vertices.mean(axis=0) for w in wheels)
    assert abs(c0[0] - c1[0]) > 2.0  # front and back axle
    glass = next(p for p in scene.parts if p.material.name == "glass")
    assert glass.material.base_color_factor[1] == pytest.approx(0.04050629958510399, abs=1e-12)
    assert glass.base_color is None


def bilinear_clamped(img: np.ndarray, u: float, v: float) -> np.ndarray:
    """Independent reference: bilinear lookup, texel centres at (i + 0.5) / size, v down."""
    h, w = img.shape[:2]
    x, y = u * w - 0.5, v * h - 0.5
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0

    def px(i: int, j: int) -> np.ndarray:
        return img[min(max(j, 0), h - 1), min(max(i, 0), w - 1)].astype(np.float64)

    top = px(x0, y0) * (1 - fx) + px(x0 + 1, y0) * fx
    bottom = px(x0, y0 + 1) * (1 - fx) + px(x0 + 1, y0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def test_spot_color_matches_texture(shared_assets: Path) -> None:
    """The colour sampled on spot.glb equals the original PNG looked up at the OBJ's (v-up) coordinates."""
    obj = (shared_assets / "spot_src" / "spot_triangulated.obj").read_text().splitlines()
    v = np.array([list(map(float, line.split()[1:4])) for line in obj if line.startswith("v ")])
    vt = np.array([list(map(float, line.split()[1:3])) for line in obj if line.startswith("vt ")])
    faces = [
        [tuple(int(x) - 1 for x in c.split("/")[:2]) for c in line.split()[1:]] for line in obj if line[:2] == "f "
    ]
    png = np.asarray(PILImage.open(shared_assets / "spot_src" / "spot_texture.png").convert("RGB"))
    part = load_shared(shared_assets, "spot.glb").parts[0]
    cen = part.mesh.vertices[part.mesh.faces].mean(axis=1)
    for k in (0, 1000, 2500, 4000, 5800):
        corners = faces[k]
        p = v[[c[0] for c in corners]].mean(axis=0)
        uv_up = vt[[c[1] for c in corners]].mean(axis=0)
        expected = bilinear_clamped(png, uv_up[0], 1.0 - uv_up[1]) / 255.0
        j = int(np.argmin(np.linalg.norm(cen - p, axis=1)))
        assert np.linalg.norm(cen[j] - p) < 1e-5
        got = part.sample(np.array([j]), np.full((1, 3), 1 / 3))["base_color"][0]
        np.testing.assert_allclose(got[:3], expected, atol=2e-3)
        assert got[3] == pytest.approx(1.0)


def test_obj_with_mtl_matches_glb(shared_assets: Path, tmp_path: Path) -> None:
    src = shared_assets / "spot_src"
    (tmp_path / "spot_texture.png").write_bytes((src / "spot_texture.png").read_bytes())
    (tmp_path / "spot.mtl").write_text("newmtl spot\nKd 0.8 0.8 0.8\nmap_Kd spot_texture.png\n")
    (tmp_path / "spot.obj").write_text("mtllib spot.mtl\nusemtl spot\n" + (src / "spot_triangulated.obj").read_text())
    scene = load_mesh(tmp_path / "spot.obj")
    assert scene.meta["format"] == "obj" and scene.n_faces() == 5856
    part = scene.parts[0]
    assert part.base_color is not None and part.base_color.shape == (1024, 1024, 4)
    assert part.material.base_color_factor == (1.0, 1.0, 1.0, 1.0)  # Kd is ignored beside map_Kd
    glb = load_shared(shared_assets, "spot.glb").parts[0]
    rng = np.random.default_rng(1)
    face = rng.integers(0, 5856, 300)
    bary = rng.dirichlet((1.0, 1.0, 1.0), 300)
    a, b = part.sample(face, bary), glb.sample(face, bary)
    np.testing.assert_allclose(a["position"], b["position"], atol=1e-6)
    np.testing.assert_allclose(a["base_color"], b["base_color"], atol=1e-6)
    # An OBJ without materials has no texture (trimesh's placeholder material is not used).
    plain = load_mesh(src / "spot_triangulated.obj").parts[0]
    assert plain.base_color is None and plain.mesh.uv is not None


def test_ply_and_stl(tmp_path: Path) -> None:
    box = trimesh.creation.box()
    box.visual.vertex_colors = np.tile([255, 0, 0, 255], (8, 1))
    ply = load_mesh(box.export(file_type="ply"), fmt="ply")
    assert ply.n_faces() == 12
    assert ply.parts[0].mesh.colors is not None
    np.testing.assert_allclose(ply.parts[0].mesh.colors, np.tile([1.0, 0, 0, 1], (8, 1)))
    assert load_mesh(box.export(file_type="ply")).meta["format"] == "ply"  # recognised from the bytes
    box.visual.face_colors = np.tile([0, 255, 0, 255], (12, 1))
    faces_colored = load_mesh(box.export(file_type="ply"), fmt="ply").parts[0].mesh
    assert faces_colored.n_vertices == 36 and faces_colored.colors is not None
    path = tmp_path / "box.stl"
    path.write_bytes(trimesh.creation.box().export(file_type="stl"))
    stl = load_mesh(path)
    assert stl.meta["format"] == "stl" and stl.n_faces() == 12
    assert stl.parts[0].mesh.n_vertices == 8  # welded
    assert signed_volume(stl.parts[0].mesh.vertices, stl.parts[0].mesh.faces) == pytest.approx(1.0, rel=1e-6)


# --------------------------------------------------------------------------------------------------------
# glTF details on hand-made files
# --------------------------------------------------------------------------------------------------------


def test_node_transforms_and_mirroring() -> None:
    v, f = box_mesh()
    normals = v / np.linalg.norm(v, axis=1, keepdims=True)
    b = DocBuilder()
    m = b.mesh(v, f, attributes={"NORMAL": b.accessor(normals, 5126, "VEC3")})
    quat = [0.0, np.sin(np.pi / 8), 0.0, np.cos(np.pi / 8)]  # 45° about +Y
    parent = b.node(None, translation=[1.0, 2.0, 3.0], children=[])
    child = b.node(m, root=False, rotation=quat, scale=[2.0, 2.0, 2.0])
    b.doc["nodes"][parent]["children"].append(child)
    b.node(m, scale=[-1.0, 1.0, 1.0])  # a mirroring instance
    scene = load_mesh(b.glb(), name="t")
    assert len(scene.parts) == 2
    a = np.radians(45.0)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    expected = (v.astype(np.float64) * 2.0) @ rot.T + [1.0, 2.0, 3.0]
    np.testing.assert_allclose(scene.parts[0].mesh.vertices, expected, atol=1e-5)
    # Volumes stay positive: the mirrored instance had its winding flipped (outward normals kept).
    assert signed_volume(scene.parts[0].mesh.vertices, scene.parts[0].mesh.faces) == pytest.approx(48.0, rel=1e-5)
    mirrored = scene.parts[1].mesh
    np.testing.assert_allclose(mirrored.vertices[:, 0], -v[:, 0])
    # Normals go through the inverse transpose: mirrored in x, rotated (not scaled) for the first instance.
    assert mirrored.normals is not None and scene.parts[0].mesh.normals is not None
    np.testing.assert_allclose(mirrored.normals, normals * [-1.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(scene.parts[0].mesh.normals, normals @ rot.T, atol=1e-6)
    assert signed_volume(mirrored.vertices, mirrored.faces) == pytest.approx(6.0, rel=1e-5)


def test_vertex_colors_linear_to_srgb_and_normalized() -> None:
    v, f = box_mesh()
    srgb = np.random.default_rng(0).random((len(v), 4)).astype(np.float32)
    srgb[:, 3] = 1.0
    # Our own exporter writes COLOR_0 as linear float.
    scene = load_mesh(write_glb(Asset(mesh=Mesh(vertices=v, faces=f, colors=srgb))))
    np.testing.assert_allclose(scene.parts[0].mesh.colors, srgb, atol=1e-5)
    s = scene.parts[0].sample(np.array([0]), np.array([[1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(s["base_color"][0], srgb[f[0, 0]], atol=1e-5)
    # Normalized UNSIGNED_BYTE COLOR_0 (linear): 255 → 1.0, 0 → 0, 128 → sRGB of 128/255.
    b = DocBuilder()
    cols = np.tile(np.array([[255, 0, 128, 255]], dtype=np.uint8), (len(v), 1))
    color = b.accessor(cols, 5121, "VEC4", normalized=True)
    b.node(b.mesh(v, f, attributes={"COLOR_0": color}))
    got = load_mesh(b.glb()).parts[0].mesh.colors
    assert got is not None
    np.testing.assert_allclose(got[0], [1.0, 0.0, linear_to_srgb(np.array(128 / 255))[()], 1.0], atol=1e-6)


def test_material_factors_texture_product_and_unlit() -> None:
    """base colour = texture (sRGB→linear) × factor × vertex colour, in linear space; unlit is read."""
    v, f = box_mesh()
    uv = np.full((len(v), 2), 0.5, dtype=np.float32)
    tex = np.zeros((4, 4, 4), dtype=np.uint8)
    tex[...] = (200, 100, 50, 255)
    asset = Asset(
        mesh=Mesh(vertices=v, faces=f, uv=uv),
        material=Material(base_color_factor=(0.5, 1.0, 0.25, 0.8), metallic_factor=0.3, roughness_factor=0.6),
        textures=Textures(base_color=tex, metallic_roughness=np.full((4, 4, 3), (0, 128, 255), np.uint8)),
    )
    gltf_bytes = write_glb(asset)
    doc = read_glb_json(gltf_bytes)
    doc["materials"][0]["extensions"] = {"KHR_materials_unlit": {}}
    doc["extensionsUsed"] = ["KHR_materials_unlit"]
    length = struct.unpack_from("<I", gltf_bytes, 12)[0]
    patched = pack_glb(doc, gltf_bytes[20 + length + 8 :])
    part = load_mesh(patched).parts[0]
    assert part.unlit is True
    assert part.wrap["base_color"] == (CLAMP_TO_EDGE, CLAMP_TO_EDGE)
    s = part.sample(np.array([0, 1]), np.full((2, 3), 1 / 3))
    lin = srgb_to_linear(np.array([200, 100, 50]) / 255.0) * np.array([0.5, 1.0, 0.25])
    np.testing.assert_allclose(s["base_color"][0, :3], linear_to_srgb(lin), atol=1e-5)
    assert s["base_color"][0, 3] == pytest.approx(0.8)
    assert s["metallic"][0] == pytest.approx(0.3 * 1.0)
    assert s["roughness"][0] == pytest.approx(0.6 * 128 / 255)
    assert s["occlusion"][0] == 1.0


def test_triangle_strip_fan_and_points() -> None:
    b = DocBuilder()
    quad = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=np.float32)
    b.node(b.mesh(quad, np.array([0, 1, 2, 3]), mode=5))  # strip: (0,1,2), (2,1,3)
    b.node(b.mesh(quad, np.array([0, 1, 3, 2]), mode=6))  # fan: (0,1,3), (0,3,2)
    b.node(b.mesh(quad, None, mode=0))  # points: skipped with a warning
    scene = load_mesh(b.glb())
    assert [p.mesh.n_faces for p in scene.parts] == [2, 2]
    for part in scene.parts:
        np.testing.assert_allclose(part.face_normals, np.tile([0.0, 0.0, 1.0], (2, 1)), atol=1e-7)
    assert any("point and line primitives are skipped" in w for w in scene.warnings)


def test_gltf_with_external_files(shared_assets: Path, tmp_path: Path) -> None:
    data = (shared_assets / "spot.glb").read_bytes()
    doc = read_glb_json(data)
    length = struct.unpack_from("<I", data, 12)[0]
    bin_chunk = data[20 + length + 8 :]
    image_view = doc["bufferViews"][doc["images"][0]["bufferView"]]
    start = image_view.get("byteOffset", 0)
    (tmp_path / "tex.png").write_bytes(bin_chunk[start : start + image_view["byteLength"]])
    (tmp_path / "spot.bin").write_bytes(bin_chunk)
    doc["buffers"][0]["uri"] = "spot.bin"
    doc["images"][0] = {"uri": "tex.png"}
    (tmp_path / "spot.gltf").write_text(json.dumps(doc))
    scene = load_mesh(tmp_path / "spot.gltf")
    glb = load_mesh(shared_assets / "spot.glb")
    assert scene.meta["format"] == "gltf"
    np.testing.assert_array_equal(scene.parts[0].mesh.vertices, glb.parts[0].mesh.vertices)
    assert scene.parts[0].base_color is not None
    np.testing.assert_array_equal(scene.parts[0].base_color, glb.parts[0].base_color)
    # The same document given as bytes cannot reach its external files.
    with pytest.raises(InputError, match="external file"):
        load_mesh((tmp_path / "spot.gltf").read_bytes())
    # A URI leaving the folder is refused.
    doc["buffers"][0]["uri"] = "../spot.bin"
    (tmp_path / "escape.gltf").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="outside the glTF file's folder"):
        load_mesh(tmp_path / "escape.gltf")


def test_sample_texture_wrap_modes() -> None:
    img = np.array([[0.0, 10.0], [20.0, 30.0]])
    at_edge = np.array([[0.0, 0.25]])  # u = 0: halfway between the last and the first column
    assert sample_texture(img, at_edge, (REPEAT, REPEAT))[0] == pytest.approx(5.0)
    assert sample_texture(img, at_edge, (CLAMP_TO_EDGE, CLAMP_TO_EDGE))[0] == pytest.approx(0.0)
    assert sample_texture(img, at_edge, (MIRRORED_REPEAT, MIRRORED_REPEAT))[0] == pytest.approx(0.0)
    # Texel centres sample exactly; u + 1 repeats; v points down (row 1 is v = 0.75).
    centres = np.array([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [1.75, 0.75], [-0.25, 0.25]])
    np.testing.assert_allclose(sample_texture(img, centres), [0.0, 10.0, 20.0, 30.0, 10.0])
    assert sample_texture(img, np.array([[-0.25, 0.25]]), (MIRRORED_REPEAT, REPEAT))[0] == pytest.approx(0.0)


def test_source_scene_from_asset() -> None:
    v, f = box_mesh()
    scene = SourceScene.from_asset(Asset(mesh=Mesh(vertices=v, faces=f), name="box"))
    assert scene.n_faces() == 12 and scene.parts[0].name == "box"
    assert scene.diagonal() == pytest.approx(np.sqrt(1 + 4 + 9))
    with pytest.raises(ValueError, match="base_color"):
        SourcePart(mesh=Mesh(vertices=v, faces=f), base_color=np.zeros((2, 2, 3), np.uint8))


# --------------------------------------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------------------------------------


def assert_refused(source: Any, match: str, **kwargs: Any) -> None:
    with pytest.raises(InputError, match=match) as info:
        load_mesh(source, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    if isinstance(source, Path):
        assert message.startswith(str(source))


def test_refusals(shared_assets: Path, tmp_path: Path) -> None:
    assert_refused(tmp_path / "missing.glb", "no such file")
    assert_refused(tmp_path, "not a file")
    fbx = tmp_path / "model.fbx"
    fbx.write_bytes(b"Kaydara FBX Binary")
    assert_refused(fbx, r"unsupported mesh file extension \.fbx")
    empty = tmp_path / "empty.obj"
    empty.write_bytes(b"")
    assert_refused(empty, "empty file")
    garbage = tmp_path / "garbage.glb"
    garbage.write_bytes(b"\x00\x01" * 100)
    assert_refused(garbage, "not a GLB file")
    data = (shared_assets / "spot.glb").read_bytes()
    truncated = tmp_path / "truncated.glb"
    truncated.write_bytes(data[: len(data) // 2])
    assert_refused(truncated, "truncated")
    bad_json = tmp_path / "bad.gltf"
    bad_json.write_text('{"asset": {"version": "2.0"}, "meshes": [')
    assert_refused(bad_json, "invalid JSON")
    assert_refused(shared_assets / "spot.glb", "larger than the limit", max_bytes=1000)
    text_obj = tmp_path / "nan.obj"
    text_obj.write_text("v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert_refused(text_obj, "NaN or infinite")
    points = tmp_path / "points.obj"
    points.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    assert_refused(points, "no triangles")
    # Corrupt index data: an index past the vertex count.
    v, f = box_mesh()
    b = DocBuilder()
    b.node(b.mesh(v, f + 100))
    bad_index = tmp_path / "bad_index.glb"
    bad_index.write_bytes(b.glb())
    assert_refused(bad_index, "out of range")
    # Compressed geometry.
    b = DocBuilder()
    b.node(b.mesh(v, f))
    b.doc["extensionsRequired"] = ["KHR_draco_mesh_compression"]
    draco = tmp_path / "draco.glb"
    draco.write_bytes(b.glb())
    assert_refused(draco, "KHR_draco_mesh_compression")
    # A glTF without triangles at all.
    b = DocBuilder()
    b.node(b.mesh(v, None, mode=0))
    assert_refused(b.glb(), "no triangles")
    assert_refused(b"\x00" * 10, "cannot tell the mesh format")
    assert_refused(b"", "empty data")
    assert_refused(data, "unsupported mesh format", fmt="fbx")
