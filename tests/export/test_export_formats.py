"""OBJ / PLY / STL writers and the export() dispatcher: files read back with the same content."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import trimesh
from PIL import Image

from meshforge.errors import InputError
from meshforge.export import FORMATS, export, export_files
from meshforge.types import Asset


def _load(data: bytes, file_type: str) -> trimesh.Trimesh:
    mesh = trimesh.load(io.BytesIO(data), file_type=file_type, process=False)
    assert isinstance(mesh, trimesh.Trimesh)
    return mesh


def _ply_header(data: bytes) -> list[str]:
    end = data.index(b"end_header\n") + len(b"end_header\n")
    return data[:end].decode("ascii").splitlines()


def test_formats_and_unknown_format(textured_asset):
    assert FORMATS == ("glb", "obj", "ply", "stl")
    with pytest.raises(InputError) as info:
        export(textured_asset, "fbx")
    assert "'fbx'" in str(info.value) and all(f in str(info.value) for f in FORMATS)
    with pytest.raises(InputError, match="usdz"):
        export_files(textured_asset, "usdz", "x")
    assert export(textured_asset, ".GLB")[:4] == b"glTF"  # case and leading dot are tolerated


def test_export_files_names(textured_asset, color_asset):
    for fmt in ("glb", "ply", "stl"):
        files = export_files(textured_asset, fmt, "my asset")
        assert list(files) == [f"my_asset.{fmt}"]
        assert files[f"my_asset.{fmt}"] == export(textured_asset, fmt)
    files = export_files(textured_asset, "obj", "out")
    assert list(files) == ["out.obj", "out.mtl", "out_basecolor.png", "out_metallicroughness.png"]
    assert list(export_files(color_asset, "obj", "vc")) == ["vc.obj", "vc.mtl"]


def test_obj_zip_reads_back_with_texture(textured_asset, tmp_path):
    data = export(textured_asset, "obj")
    assert data == export(textured_asset, "obj")  # reproducible archive
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        assert names == ["test_cube.obj", "test_cube.mtl", "test_cube_basecolor.png", "test_cube_metallicroughness.png"]
        zf.extractall(tmp_path)
    mtl = (tmp_path / "test_cube.mtl").read_text()
    assert "map_Kd test_cube_basecolor.png" in mtl
    assert "Pr 0.800000" in mtl and "Pm 1.000000" in mtl
    assert "map_Pr -imfchan g test_cube_metallicroughness.png" in mtl
    base = np.asarray(Image.open(tmp_path / "test_cube_basecolor.png"))
    np.testing.assert_array_equal(base, textured_asset.textures.base_color[..., :3])

    mesh = trimesh.load(tmp_path / "test_cube.obj", process=False, maintain_order=True)
    src = textured_asset.mesh
    assert len(mesh.faces) == src.n_faces
    np.testing.assert_allclose(mesh.vertices, src.vertices, atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, src.faces)
    # OBJ's v axis points up: the file holds 1 - v of the glTF-convention UVs.
    np.testing.assert_allclose(mesh.visual.uv, np.column_stack([src.uv[:, 0], 1.0 - src.uv[:, 1]]), atol=1e-6)
    np.testing.assert_allclose(mesh.vertex_normals, src.normals, atol=1e-6)
    assert mesh.visual.material.image.size == (32, 32)


def test_obj_text_layout(textured_asset):
    text = export_files(textured_asset, "obj", "c")["c.obj"].decode()
    lines = text.splitlines()
    assert "mtllib c.mtl" in lines
    assert sum(line.startswith("v ") for line in lines) == textured_asset.mesh.n_vertices
    assert sum(line.startswith("vt ") for line in lines) == textured_asset.mesh.n_vertices
    assert sum(line.startswith("vn ") for line in lines) == textured_asset.mesh.n_vertices
    faces = [line for line in lines if line.startswith("f ")]
    assert len(faces) == textured_asset.mesh.n_faces
    a, b, c = textured_asset.mesh.faces[0] + 1
    assert faces[0] == f"f {a}/{a}/{a} {b}/{b}/{b} {c}/{c}/{c}"
    first_vt = next(line for line in lines if line.startswith("vt "))
    u, v = textured_asset.mesh.uv[0]
    assert [float(x) for x in first_vt.split()[1:]] == pytest.approx([u, 1.0 - v], abs=1e-6)


def test_obj_vertex_colors(color_asset, tmp_path):
    files = export_files(color_asset, "obj", "vc")
    assert b"map_Kd" not in files["vc.mtl"]
    v_lines = [line for line in files["vc.obj"].decode().splitlines() if line.startswith("v ")]
    rgb = np.array([[float(x) for x in line.split()[4:7]] for line in v_lines])
    np.testing.assert_allclose(rgb, color_asset.mesh.colors[:, :3], atol=1e-5)  # sRGB values, unchanged
    # trimesh lets a material's TextureVisuals replace vertex colours, so read the .obj without its .mtl.
    (tmp_path / "vc.obj").write_bytes(files["vc.obj"])
    mesh = trimesh.load(tmp_path / "vc.obj", process=False, maintain_order=True)
    assert len(mesh.faces) == color_asset.mesh.n_faces
    np.testing.assert_allclose(mesh.vertices, color_asset.mesh.vertices, atol=1e-6)
    np.testing.assert_allclose(mesh.visual.vertex_colors[:, :3] / 255.0, color_asset.mesh.colors[:, :3], atol=1 / 255)


def test_ply_textured_colors_match_texture_at_uvs(textured_asset):
    data = export(textured_asset, "ply")
    header = _ply_header(data)
    assert header[1] == "format binary_little_endian 1.0"
    assert "property uchar red" in header and "property uchar alpha" in header and "property float nx" in header
    assert "property list uchar int vertex_indices" in header
    mesh = _load(data, "ply")
    src = textured_asset.mesh
    assert len(mesh.faces) == src.n_faces
    np.testing.assert_allclose(mesh.vertices, src.vertices, atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, src.faces)
    # The gradient texture is affine in the pixel position (R = 4 + 8 * column with texel centres at
    # (column + 0.5) / 32), so bilinear sampling at uv gives exactly R = 256 u, G = 256 v.
    colors = mesh.visual.vertex_colors.astype(np.float64)
    np.testing.assert_allclose(colors[:, 0], 256.0 * src.uv[:, 0], atol=0.51)
    np.testing.assert_allclose(colors[:, 1], 256.0 * src.uv[:, 1], atol=0.51)
    assert np.all(colors[:, 2] == 128) and np.all(colors[:, 3] == 255)


def test_ply_vertex_colors_and_factor(color_asset):
    mesh = _load(export(color_asset, "ply"), "ply")
    np.testing.assert_allclose(mesh.visual.vertex_colors / 255.0, color_asset.mesh.colors, atol=0.5 / 255 + 1e-6)
    plain = Asset(mesh=color_asset.mesh.replace(colors=None))
    white = _load(export(plain, "ply"), "ply")
    assert np.all(white.visual.vertex_colors == 255)


def test_stl_normals_unit_and_outward(color_asset, textured_asset):
    for asset in (color_asset, textured_asset):
        data = export(asset, "stl")
        src = asset.mesh
        assert len(data) == 84 + 50 * src.n_faces
        assert b"meshforge" in data[:80] and not data.startswith(b"solid")
        records = np.frombuffer(
            data, offset=84, dtype=np.dtype([("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("a", "<u2")])
        )
        assert int.from_bytes(data[80:84], "little") == src.n_faces
        np.testing.assert_array_equal(records["v"], src.vertices[src.faces])
        np.testing.assert_allclose(np.linalg.norm(records["n"], axis=1), 1.0, atol=1e-6)
        centre = src.vertices.mean(axis=0)
        outward = np.einsum("ij,ij->i", records["n"], records["v"].mean(axis=1) - centre)
        assert np.all(outward > 0)
        mesh = _load(data, "stl")
        assert len(mesh.faces) == src.n_faces
        np.testing.assert_allclose(mesh.triangles, src.vertices[src.faces], atol=1e-6)
        np.testing.assert_allclose(mesh.face_normals, records["n"], atol=1e-5)


def test_stl_degenerate_face_uses_vertex_normals(shapes):
    cube = shapes.cube()
    faces = np.vstack([cube.faces, [[0, 0, 1]]])
    data = export(Asset(mesh=cube.replace(faces=faces)), "stl")
    last = np.frombuffer(data, dtype="<f4", count=3, offset=84 + 50 * (len(faces) - 1))
    np.testing.assert_allclose(last, cube.normals[0], atol=1e-6)


@pytest.mark.parametrize("fmt", ["obj", "ply", "stl"])
def test_bad_asset_raises_for_every_format(fmt, shapes):
    cube = shapes.cube()
    with pytest.raises(InputError, match="face indices"):
        export(Asset(mesh=cube.replace(faces=cube.faces - 1)), fmt)
