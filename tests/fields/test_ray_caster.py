import numpy as np

from meshforge.fields.surface import RayCaster


def test_rays_hit_the_shared_vertex_mesh_with_exact_face_barycentrics_and_distance():
    # a unit square in z = 0.25 made of two triangles sharing an edge, plus a far triangle; rays from
    # z = 0 up: the hit's face, barycentrics (which reproduce the hit point) and distance are exact
    v = np.array([[0, 0, 0.25], [1, 0, 0.25], [1, 1, 0.25], [0, 1, 0.25], [5, 5, 3], [6, 5, 3], [5, 6, 3]], float)
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6]])
    rays = RayCaster(v, f)
    rays.commit()
    rng = np.random.default_rng(1)
    origins = np.concatenate([rng.uniform(0.01, 0.99, (500, 2)), np.zeros((500, 1))], axis=1)
    up = np.tile([0.0, 0.0, 1.0], (500, 1))
    face, bary, dist = rays.cast(origins, up, 1.0)
    expect = np.where(origins[:, 0] > origins[:, 1], 0, 1)  # below / above the diagonal (0,0)-(1,1)
    away = np.abs(origins[:, 0] - origins[:, 1]) > 1e-4
    assert (face[away] == expect[away]).all()
    hit = np.einsum("nk,nkd->nd", bary, v[f[face]])
    assert np.allclose(hit[:, :2], origins[:, :2], atol=1e-5) and np.allclose(dist, 0.25, atol=1e-6)
    # shorter than the gap, or pointing away: a miss (−1, infinite distance)
    f2, _, d2 = rays.cast(origins[:5], up[:5], 0.2)
    f3, _, _ = rays.cast(origins[:5], -up[:5], 1.0)
    assert (f2 == -1).all() and np.isinf(d2).all() and (f3 == -1).all()
