"""The tangent frames of a textured asset: computed once for the bake and the GLB writer, and the same frames."""

from __future__ import annotations

import numpy as np

import meshforge
from meshforge.geometry import tangents as tangents_module
from meshforge.geometry.normals import unit_normals, vertex_normals
from meshforge.geometry.tangents import asset_tangents, compute_tangents
from meshforge.types import Asset, Material, Mesh, Textures


def _sheet(n: int = 12) -> Mesh:
    u, v = np.meshgrid(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1))
    vertices = np.stack([u, v, 0.2 * np.sin(5 * u) * np.cos(4 * v)], axis=-1).reshape(-1, 3).astype(np.float32)
    i = np.arange(n)[:, None] * (n + 1) + np.arange(n)[None, :]
    quads = np.stack([i, i + 1, i + n + 2, i + n + 1], axis=-1).reshape(-1, 4)
    faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]).astype(np.int32)
    uv = np.stack([u, v], axis=-1).reshape(-1, 2).astype(np.float32)
    normals = 3.0 * vertex_normals(vertices, faces).astype(np.float32)  # not unit: the writer normalises them
    return Mesh(vertices=vertices, faces=faces, normals=normals, uv=uv)


def test_asset_tangents_are_the_frames_of_the_written_unit_normals_computed_once(monkeypatch):
    mesh = _sheet()
    calls: list[int] = []
    real = tangents_module.compute_tangents

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(tangents_module, "compute_tangents", counted)
    first = asset_tangents(mesh.vertices, mesh.normals, mesh.uv, mesh.faces)
    want = compute_tangents(mesh.vertices, unit_normals(mesh.normals, mesh.vertices, mesh.faces), mesh.uv, mesh.faces)
    assert np.array_equal(first, want) and first.dtype == np.float32 and first.shape == (len(mesh.vertices), 4)
    first[:] = 0.0  # a copy: the kept frames are not the caller's array
    again = asset_tangents(mesh.vertices, mesh.normals, mesh.uv, mesh.faces)
    assert np.array_equal(again, want) and len(calls) == 1
    moved = mesh.uv.copy()
    moved[0, 0] += 0.01  # another mesh (one UV differs): computed again
    other = asset_tangents(mesh.vertices, mesh.normals, moved, mesh.faces)
    assert len(calls) == 2 and not np.array_equal(other, want)


def test_the_glb_stores_the_frames_the_normal_map_was_baked_in(glb):
    """The GLB's TANGENT attribute is the bake's frames to the bit (the same function, the same unit normals)."""
    mesh = _sheet()
    size = 8
    textures = Textures(
        base_color=np.full((size, size, 4), 200, np.uint8),
        metallic_roughness=np.full((size, size, 3), 128, np.uint8),
        normal=np.full((size, size, 3), (128, 128, 255), np.uint8),
    )
    asset = Asset(mesh=mesh, material=Material(), textures=textures, name="sheet")
    baked = asset_tangents(mesh.vertices, mesh.normals, mesh.uv, mesh.faces)  # as the bake asks for them
    doc, bin_chunk = glb.parse(meshforge.export(asset, "glb"))
    written = glb.accessor(doc, bin_chunk, doc["meshes"][0]["primitives"][0]["attributes"]["TANGENT"])
    assert np.array_equal(written, baked)
