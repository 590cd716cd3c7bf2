"""Baking from a dense surface: analytic checks of the normal map and of constant colours."""

from __future__ import annotations

import numpy as np
import pytest

from meshforge.config import BakeConfig, DecimateConfig, ExtractConfig, UnwrapConfig
from meshforge.fields.isosurface import extract
from meshforge.fields.surface import ClosestPoint, SurfaceField
from meshforge.geometry.closest import closest_point_on_triangles
from meshforge.geometry.normals import vertex_normals
from meshforge.io.scene import SourcePart
from meshforge.mesh.bake import bake
from meshforge.mesh.decimate import decimate
from meshforge.mesh.uv import unwrap
from meshforge.types import Material, Mesh

from ..fields.test_isosurface import Sphere

AMPLITUDE, WAVELENGTH = 0.02, 0.25


class BumpyPlane:
    """Dense twin of the unit plane: z = A sin(2πx/λ), with its analytic normals."""

    def __init__(self, n: int = 256) -> None:
        c = np.linspace(-0.6, 0.6, n)
        x, y = np.meshgrid(c, c, indexing="ij")
        z = AMPLITUDE * np.sin(2 * np.pi * x / WAVELENGTH)
        verts = np.stack([x, y, z], -1).reshape(-1, 3)
        idx = np.arange(n * n).reshape(n, n)
        a, b, cc, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
        faces = np.concatenate([np.stack([a, b, cc], -1).reshape(-1, 3), np.stack([a, cc, d], -1).reshape(-1, 3)])
        self.mesh = Mesh(verts.astype(np.float32), faces)

    @staticmethod
    def normal_at(x: np.ndarray) -> np.ndarray:
        dzdx = AMPLITUDE * 2 * np.pi / WAVELENGTH * np.cos(2 * np.pi * x / WAVELENGTH)
        n = np.stack([-dzdx, np.zeros_like(x), np.ones_like(x)], -1)
        return n / np.linalg.norm(n, axis=-1, keepdims=True)

    def sample(self, face: np.ndarray, bary: np.ndarray) -> dict[str, np.ndarray]:
        p = np.einsum("nk,nkd->nd", bary, self.mesh.vertices[self.mesh.faces[face]].astype(np.float64))
        n = len(face)
        return {
            "base_color": np.tile(np.array([[0.5, 0.5, 0.5, 1.0]], np.float32), (n, 1)),
            "metallic": np.zeros(n, np.float32),
            "roughness": np.full(n, 0.5, np.float32),
            "normal": self.normal_at(p[:, 0]).astype(np.float32),
        }


def flat_plane() -> Mesh:
    v = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]], np.float32)
    uv = np.stack([v[:, 0] + 0.5, 0.5 - v[:, 1]], 1)  # glTF: v down the image, so +y is up the texture
    return Mesh(v, np.array([[0, 1, 2], [0, 2, 3]]), normals=np.tile([[0, 0, 1.0]], (4, 1)), uv=uv)


def test_bumpy_twin_bakes_a_normal_map_that_decodes_to_the_bump():
    size = 128
    low = flat_plane()
    field = SurfaceField([BumpyPlane()], cage=0.1)
    tex, counts = bake(low, field, BakeConfig(texture_size=size))
    assert tex.normal is not None and counts["coverage"] > 0.95
    decoded = tex.normal.astype(np.float64) / 255.0 * 2.0 - 1.0
    decoded /= np.linalg.norm(decoded, axis=-1, keepdims=True)
    cols = (np.arange(size) + 0.5) / size - 0.5  # x of each texel column (u = x + 0.5)
    want = np.broadcast_to(BumpyPlane.normal_at(cols)[None, :, :], decoded.shape)
    angle = np.degrees(np.arccos(np.clip((decoded * want).sum(-1), -1, 1)))
    assert np.median(angle) < 1.0 and np.percentile(angle, 99) < 3.0
    # the bump tilts normals by up to atan(2πA/λ) ≈ 26.7°: the map really carries it
    tilt = np.degrees(np.arccos(decoded[..., 2]))
    assert tilt.max() == pytest.approx(np.degrees(np.arctan(2 * np.pi * AMPLITUDE / WAVELENGTH)), abs=1.5)
    # tangent-space x follows +u: where the surface rises with x the normal leans to -x
    assert (np.sign(decoded[size // 2, :, 0]) == np.sign(want[size // 2, :, 0])).mean() > 0.95


def test_constant_color_source_gives_a_constant_texture_without_seam_texels():
    dense = extract(Sphere(0.3), ExtractConfig(resolution=96))
    dense = dense.replace(normals=vertex_normals(dense.vertices, dense.faces))
    color = (0.8, 0.2, 0.05, 1.0)  # linear base colour factor, as glTF stores it
    part = SourcePart(
        mesh=dense, material=Material(base_color_factor=color, metallic_factor=0.25, roughness_factor=0.6)
    )
    low, _ = decimate(dense, DecimateConfig(faces=1500))
    low = low.replace(normals=vertex_normals(low.vertices, low.faces))
    mesh, _ = unwrap(low, UnwrapConfig(padding=3), 256)
    tex, _ = bake(mesh, SurfaceField([part]), BakeConfig(texture_size=256))
    srgb = np.where(
        np.array(color[:3]) <= 0.0031308,
        12.92 * np.array(color[:3]),
        1.055 * np.array(color[:3]) ** (1 / 2.4) - 0.055,
    )
    expected = np.rint(srgb * 255)
    values = np.unique(tex.base_color[..., :3].reshape(-1, 3), axis=0)
    assert len(values) == 1 and np.abs(values[0] - expected).max() <= 1  # every texel, gutters included
    assert np.unique(tex.metallic_roughness[..., 2]).tolist() == [64]
    assert np.unique(tex.metallic_roughness[..., 1]).tolist() == [153]
    # a sphere's dense and low-poly normals differ only slightly: the normal map is nearly flat
    z = tex.normal[..., 2].astype(float) / 255 * 2 - 1
    assert z.min() > 0.9


def test_closest_point_is_exact_on_random_queries():
    rng = np.random.default_rng(3)
    dense = extract(Sphere(0.3), ExtractConfig(resolution=48))
    cp = ClosestPoint(dense.vertices, dense.faces)
    q = rng.normal(size=(500, 3))
    q = q / np.linalg.norm(q, axis=1, keepdims=True) * rng.uniform(0.2, 0.4, (500, 1))
    _, _, dist = cp.query(q)
    # brute force over every triangle for a subset
    tri = dense.vertices[dense.faces].astype(np.float64)
    for i in range(0, 500, 50):
        closest, _ = closest_point_on_triangles(np.repeat(q[i : i + 1], len(tri), 0), tri[:, 0], tri[:, 1], tri[:, 2])
        best = np.linalg.norm(closest - q[i], axis=1).min()
        assert dist[i] == pytest.approx(best, abs=1e-9)
