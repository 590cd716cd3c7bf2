"""GLB writer: Khronos-validator-clean output, and the document says what the asset holds."""

from __future__ import annotations

import io

import numpy as np
import pytest
import trimesh

from meshforge._version import __version__
from meshforge.errors import InputError
from meshforge.export import export
from meshforge.types import Asset, Material, Mesh, Textures


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """The glTF 2.0 spec's formula, written out here independently of the exporter."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _assert_clean(report: dict) -> None:
    bad = [m for m in report["messages"] if m["severity"] in ("error", "warning")]
    assert report["errors"] == 0 and report["warnings"] == 0, bad


@pytest.mark.parametrize("fixture", ["textured_asset", "full_textured_asset", "color_asset", "color_alpha_asset"])
def test_validator_reports_no_errors_or_warnings(fixture, request, validate):
    asset = request.getfixturevalue(fixture)
    report = validate(export(asset, "glb"))
    _assert_clean(report)
    assert report["validator_version"]
    info = report["info"]
    assert info["totalTriangleCount"] == asset.mesh.n_faces
    assert info["totalVertexCount"] == asset.mesh.n_vertices
    assert info["hasTextures"] is (asset.textures is not None)


def test_untextured_uncolored_and_large_meshes_are_clean(validate, glb):
    rng = np.random.default_rng(0)
    vertices = rng.random((70_002, 3), dtype=np.float32)
    faces = np.arange(70_002, dtype=np.int32).reshape(-1, 3)
    data = export(Asset(mesh=Mesh(vertices, faces), name="big"), "glb")
    doc, bin_chunk = glb.parse(data)
    indices = doc["meshes"][0]["primitives"][0]["indices"]
    assert doc["accessors"][indices]["componentType"] == 5125  # UNSIGNED_INT above 65535 vertices
    np.testing.assert_array_equal(glb.accessor(doc, bin_chunk, indices), faces.reshape(-1))
    _assert_clean(validate(data))


def test_layout_alignment_targets_and_positions(textured_asset, glb):
    data = export(textured_asset, "glb")
    doc, bin_chunk = glb.parse(data)
    assert doc["buffers"] == [{"byteLength": len(bin_chunk)}]
    prim = doc["meshes"][0]["primitives"][0]
    attr = prim["attributes"]
    assert set(attr) == {"POSITION", "NORMAL", "TEXCOORD_0"}  # no COLOR_0 / TANGENT for this asset
    for view in doc["bufferViews"]:
        assert view["byteOffset"] % 4 == 0
        assert view["byteOffset"] + view["byteLength"] <= len(bin_chunk)
    image_views = {img["bufferView"] for img in doc["images"]}
    for name, acc in attr.items():
        assert doc["bufferViews"][doc["accessors"][acc]["bufferView"]]["target"] == 34962, name
    assert doc["bufferViews"][doc["accessors"][prim["indices"]]["bufferView"]]["target"] == 34963
    assert doc["accessors"][prim["indices"]]["componentType"] == 5123  # UNSIGNED_SHORT
    for view_index in image_views:
        assert "target" not in doc["bufferViews"][view_index]

    mesh = textured_asset.mesh
    pos = glb.accessor(doc, bin_chunk, attr["POSITION"])
    np.testing.assert_array_equal(pos, mesh.vertices)
    acc = doc["accessors"][attr["POSITION"]]
    assert acc["min"] == mesh.vertices.min(axis=0).tolist() and acc["max"] == mesh.vertices.max(axis=0).tolist()
    np.testing.assert_array_equal(glb.accessor(doc, bin_chunk, attr["TEXCOORD_0"]), mesh.uv)
    np.testing.assert_array_equal(glb.accessor(doc, bin_chunk, prim["indices"]), mesh.faces.reshape(-1))


def test_asset_header_scene_and_extras(textured_asset, glb):
    doc, _ = glb.parse(export(textured_asset, "glb"))
    assert doc["asset"]["version"] == "2.0"
    assert doc["asset"]["generator"] == f"meshforge {__version__}"
    assert doc["asset"]["extras"] == {"meshforge": {"backend": "test", "seed": 7, "scale": 0.5}, "sha256": "ab"}
    assert doc["scenes"][doc["scene"]]["nodes"] == [0]
    assert doc["nodes"] == [{"name": "test cube", "mesh": 0}]


def test_textures_sampler_and_roughness_in_green(textured_asset, glb):
    doc, bin_chunk = glb.parse(export(textured_asset, "glb"))
    assert doc["samplers"] == [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}]
    assert all(img["mimeType"] == "image/png" for img in doc["images"])
    assert all(tex["sampler"] == 0 for tex in doc["textures"])
    material = doc["materials"][0]
    pbr = material["pbrMetallicRoughness"]
    assert pbr["baseColorFactor"] == [1.0, 1.0, 1.0, 1.0]
    assert pbr["metallicFactor"] == 1.0 and pbr["roughnessFactor"] == pytest.approx(0.8)
    for key in ("alphaMode", "alphaCutoff", "doubleSided", "normalTexture", "occlusionTexture"):
        assert key not in material

    mime, base = glb.image(doc, bin_chunk, pbr["baseColorTexture"]["index"])
    assert mime == "image/png" and base.shape == (32, 32, 3)  # opaque alpha dropped
    np.testing.assert_array_equal(base, textured_asset.textures.base_color[..., :3])
    mime, mr = glb.image(doc, bin_chunk, pbr["metallicRoughnessTexture"]["index"])
    assert mime == "image/png" and mr.shape == (32, 32, 3)
    np.testing.assert_array_equal(mr, textured_asset.textures.metallic_roughness)
    # glTF 2.0 §3.9.2: roughness is read from G, metallic from B.
    yy, xx = np.mgrid[0:32, 0:32]
    np.testing.assert_array_equal(mr[..., 1], 40 + 5 * xx)
    np.testing.assert_array_equal(mr[..., 2], 200 - 4 * yy)


def test_full_material_alpha_normal_occlusion_tangents(full_textured_asset, glb):
    doc, bin_chunk = glb.parse(export(full_textured_asset, "glb"))
    material = doc["materials"][0]
    assert material["alphaMode"] == "MASK" and material["alphaCutoff"] == pytest.approx(0.4)
    assert material["doubleSided"] is True
    assert material["pbrMetallicRoughness"]["baseColorFactor"] == pytest.approx([0.9, 0.8, 0.7, 1.0])
    _, base = glb.image(doc, bin_chunk, material["pbrMetallicRoughness"]["baseColorTexture"]["index"])
    assert base.shape == (32, 32, 4)  # real alpha kept
    np.testing.assert_array_equal(base, full_textured_asset.textures.base_color)
    _, normal = glb.image(doc, bin_chunk, material["normalTexture"]["index"])
    np.testing.assert_array_equal(normal, full_textured_asset.textures.normal)
    _, occ = glb.image(doc, bin_chunk, material["occlusionTexture"]["index"])
    np.testing.assert_array_equal(occ if occ.ndim == 2 else occ[..., 0], full_textured_asset.textures.occlusion)

    attr = doc["meshes"][0]["primitives"][0]["attributes"]
    tangents = glb.accessor(doc, bin_chunk, attr["TANGENT"])
    normals = glb.accessor(doc, bin_chunk, attr["NORMAL"])
    np.testing.assert_allclose(np.linalg.norm(tangents[:, :3], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.einsum("ij,ij->i", tangents[:, :3], normals), 0.0, atol=1e-6)
    assert set(np.unique(tangents[:, 3]).tolist()) <= {-1.0, 1.0}
    # On the +Z face u runs along +X, so the tangent (direction of increasing u) is +X.
    front = np.flatnonzero(np.isclose(normals[:, 2], 1.0))
    np.testing.assert_allclose(tangents[front], np.tile([1.0, 0.0, 0.0, 1.0], (len(front), 1)), atol=1e-6)


def test_color0_is_linear_conversion_of_srgb(color_asset, color_alpha_asset, glb):
    for asset, width in ((color_asset, 3), (color_alpha_asset, 4)):
        doc, bin_chunk = glb.parse(export(asset, "glb"))
        attr = doc["meshes"][0]["primitives"][0]["attributes"]
        acc = doc["accessors"][attr["COLOR_0"]]
        assert acc["componentType"] == 5126 and acc["type"] == f"VEC{width}"
        colors = glb.accessor(doc, bin_chunk, attr["COLOR_0"])
        expected = _srgb_to_linear(asset.mesh.colors[:, :3])
        np.testing.assert_allclose(colors[:, :3], expected, atol=1e-6)
        if width == 4:
            np.testing.assert_allclose(colors[:, 3], asset.mesh.colors[:, 3])
        assert "images" not in doc and "samplers" not in doc and "TEXCOORD_0" not in attr
    assert doc["materials"][0]["alphaMode"] == "BLEND" and "alphaCutoff" not in doc["materials"][0]


def test_textured_asset_ignores_vertex_colors(textured_asset, glb):
    mesh = textured_asset.mesh
    asset = Asset(mesh=mesh.replace(colors=np.ones((mesh.n_vertices, 4), np.float32)), textures=textured_asset.textures)
    doc, _ = glb.parse(export(asset, "glb"))
    assert "COLOR_0" not in doc["meshes"][0]["primitives"][0]["attributes"]


def test_normals_are_renormalised(validate, glb, shapes):
    mesh = shapes.icosphere(subdivisions=1)
    normals = mesh.normals * np.linspace(0.5, 3.0, mesh.n_vertices, dtype=np.float32)[:, None]
    normals[0] = 0.0  # a broken normal is repaired from the faces
    data = export(Asset(mesh=mesh.replace(normals=normals)), "glb")
    doc, bin_chunk = glb.parse(data)
    written = glb.accessor(doc, bin_chunk, doc["meshes"][0]["primitives"][0]["attributes"]["NORMAL"])
    np.testing.assert_allclose(np.linalg.norm(written, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(written[1:], mesh.normals[1:], atol=1e-6)
    assert float(written[0] @ mesh.normals[0]) > 0.99
    _assert_clean(validate(data))


@pytest.mark.parametrize("fixture", ["textured_asset", "color_asset"])
def test_trimesh_reads_back_same_geometry(fixture, request):
    asset = request.getfixturevalue(fixture)
    scene = trimesh.load(io.BytesIO(export(asset, "glb")), file_type="glb", process=False)
    (geom,) = scene.geometry.values()
    assert len(geom.faces) == asset.mesh.n_faces
    np.testing.assert_allclose(geom.vertices, asset.mesh.vertices, atol=1e-6)
    np.testing.assert_array_equal(geom.faces, asset.mesh.faces)


def test_bad_inputs_raise_input_error(shapes):
    cube = shapes.cube()
    textures = Textures(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="no UVs"):
        export(Asset(mesh=cube.replace(uv=None), textures=textures), "glb")
    with pytest.raises(InputError, match="empty"):
        export(Asset(mesh=Mesh(np.zeros((0, 3)), np.zeros((0, 3)))), "glb")
    bad = cube.vertices.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        export(Asset(mesh=cube.replace(vertices=bad)), "glb")
    with pytest.raises(InputError, match="face indices"):
        export(Asset(mesh=cube.replace(faces=cube.faces + 1)), "glb")
    with pytest.raises(InputError, match="roughness_factor"):
        export(Asset(mesh=cube, material=Material(roughness_factor=1.5)), "glb")
    with pytest.raises(InputError, match="alpha_mode"):
        export(Asset(mesh=cube, material=Material(alpha_mode="CUTOUT")), "glb")


def test_output_is_deterministic(textured_asset):
    assert export(textured_asset, "glb") == export(textured_asset, "glb")
