import numpy as np
import pytest

from meshforge.config import CleanConfig, DecimateConfig, ExtractConfig
from meshforge.fields.isosurface import extract
from meshforge.mesh.clean import clean, orient_faces
from meshforge.mesh.decimate import decimate
from meshforge.mesh.topology import topology
from meshforge.types import Mesh

from ..fields.test_isosurface import Sphere, signed_volume


@pytest.fixture(scope="module")
def sphere_mesh() -> Mesh:
    return extract(Sphere(0.3), ExtractConfig(resolution=96))


def test_orient_repairs_random_flips_and_points_outward(sphere_mesh):
    rng = np.random.default_rng(0)
    flips = rng.random(sphere_mesh.n_faces) < 0.4
    bad = sphere_mesh.replace(faces=np.where(flips[:, None], sphere_mesh.faces[:, ::-1], sphere_mesh.faces))
    assert topology(bad.vertices, bad.faces).inconsistent_edges > 0
    fixed, n = orient_faces(bad)
    assert n == flips.sum()
    assert (fixed.faces == sphere_mesh.faces).all()
    inverted = sphere_mesh.replace(faces=sphere_mesh.faces[:, ::-1])
    fixed, _ = orient_faces(inverted)
    assert signed_volume(fixed.vertices, fixed.faces) > 0


def test_clean_merges_duplicates_and_drops_small_parts(sphere_mesh):
    v, f = sphere_mesh.vertices, sphere_mesh.faces
    # split every face into its own vertices, add a duplicate face, a degenerate face and a tiny floater
    soup_v = v[f.reshape(-1)]
    soup_f = np.arange(len(soup_v)).reshape(-1, 3)
    tiny = np.array([[0, 0, 0], [1e-3, 0, 0], [0, 1e-3, 0], [0, 0, 1e-3]], np.float32) + 0.45
    tiny_f = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]]) + len(soup_v)
    faces = np.concatenate([soup_f, soup_f[:1], [[0, 0, 1]], tiny_f])
    mesh = Mesh(np.concatenate([soup_v, tiny]), faces)
    out, counts = clean(mesh, CleanConfig(min_component_fraction=0.01))
    assert counts["components_dropped"] == 1
    assert out.n_faces == sphere_mesh.n_faces and out.n_vertices == sphere_mesh.n_vertices
    assert topology(out.vertices, out.faces).watertight


def test_decimate_meets_budget_and_stays_closed(sphere_mesh):
    out, counts = decimate(sphere_mesh, DecimateConfig(faces=2000))
    assert out.n_faces <= 2000 and out.n_faces > 1800
    assert counts["watertight"] and topology(out.vertices, out.faces).degenerate_faces == 0
    assert counts["slivers_over_100"] == 0
    assert signed_volume(out.vertices, out.faces) == pytest.approx(4 / 3 * np.pi * 0.3**3, rel=0.03)


def test_decimate_within_budget_is_identity(sphere_mesh):
    out, counts = decimate(sphere_mesh, DecimateConfig(faces=sphere_mesh.n_faces))
    assert out.n_faces == sphere_mesh.n_faces and counts["attempts"] == 0


def test_repair_removes_folded_pairs_caps_and_needles(sphere_mesh):
    from meshforge.mesh.decimate import _aspect, repair

    low, _ = decimate(sphere_mesh, DecimateConfig(faces=800))
    v, f = low.vertices.copy(), low.faces.copy()
    # a cap: move a vertex onto the midpoint of an opposite edge of one of its faces
    a, b, c = f[0]
    v[c] = 0.5 * (v[a] + v[b]) + 1e-7
    # a needle: move a vertex of another far-away face almost onto its neighbour
    far = int(np.argmax(np.linalg.norm(v[f].mean(1) - v[c], axis=1)))
    p, q, _ = f[far]
    v[q] = v[p] + 1e-6
    broken = Mesh(v, f)
    assert (_aspect(broken.vertices, broken.faces)[0] > 100).sum() >= 2
    fixed = repair(broken)
    assert (_aspect(fixed.vertices, fixed.faces)[0] > 100).sum() == 0
    assert topology(fixed.vertices, fixed.faces).watertight
    assert signed_volume(fixed.vertices, fixed.faces) == pytest.approx(signed_volume(low.vertices, low.faces), rel=0.02)
