import numpy as np
import pytest

from meshforge.config import ExtractConfig
from meshforge.errors import StageError
from meshforge.fields.base import grid_axes, sample_grid
from meshforge.fields.isosurface import extract
from meshforge.geometry.topology import face_areas, topology


class Sphere:
    """Analytic field: positive-inside signed distance of a sphere, colour = position-based gradient."""

    iso_level = 0.0

    def __init__(self, radius: float = 0.3, centre=(0.0, 0.0, 0.0), half: float = 0.5):
        self.r = radius
        self.c = np.asarray(centre, dtype=np.float32)
        self.bbox_min = np.full(3, -half, np.float32)
        self.bbox_max = np.full(3, half, np.float32)

    def density(self, p):
        return (self.r - np.linalg.norm(p - self.c, axis=1)).astype(np.float32)

    def color(self, p):
        return np.clip(p + 0.5, 0, 1).astype(np.float32)

    def material(self, p):
        return np.zeros(len(p), np.float32), np.full(len(p), 0.5, np.float32)


def signed_volume(v, f):
    t = v[f].astype(np.float64)
    return np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6


def test_sphere_isosurface_is_closed_outward_and_accurate():
    mesh = extract(Sphere(0.3), ExtractConfig(resolution=64))
    topo = topology(mesh.vertices, mesh.faces)
    assert topo.watertight and topo.inconsistent_edges == 0 and topo.components == 1
    vol = signed_volume(mesh.vertices, mesh.faces)
    assert vol == pytest.approx(4 / 3 * np.pi * 0.3**3, rel=0.02)  # positive: outward winding
    assert face_areas(mesh.vertices, mesh.faces).sum() == pytest.approx(4 * np.pi * 0.3**2, rel=0.02)
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(r - 0.3).max() < 0.5 / 63  # within half a voxel


def test_object_touching_the_box_is_closed():
    mesh = extract(Sphere(0.3, centre=(0.4, 0.0, 0.0)), ExtractConfig(resolution=48))
    assert topology(mesh.vertices, mesh.faces).watertight
    assert mesh.vertices[:, 0].max() == pytest.approx(0.5, abs=1e-5)


def test_generic_grid_path_matches_points():
    field = Sphere(0.25)
    grid = sample_grid(field, 17, chunk_points=100)  # forces several slabs
    xs, ys, zs = grid_axes(field, 17)
    i, j, k = 3, 9, 14
    expect = field.density(np.array([[xs[i], ys[j], zs[k]]], np.float32))[0]
    assert grid[i, j, k] == pytest.approx(expect, abs=1e-6)


def test_empty_field_raises():
    with pytest.raises(StageError, match="empty"):
        extract(Sphere(0.001), ExtractConfig(resolution=16))
