import numpy as np
import pytest

from meshforge.geometry.topology import face_sets


@pytest.mark.parametrize("n_vertices", [50, 3_000_000])  # small keys, and indices past the packed range
def test_face_sets_match_the_row_unique_of_sorted_faces(n_vertices):
    rng = np.random.default_rng(7)
    f = rng.integers(0, n_vertices, size=(4000, 3))
    f[::7] = f[1::7][: len(f[::7])][:, ::-1]  # the same vertex sets in the other winding
    f[5::11] = f[3::11][: len(f[5::11])][:, [1, 2, 0]]  # rotated copies
    f[-1] = f[-2]
    _, first, inverse, counts = np.unique(
        np.sort(f, axis=1), axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    got_first, got_inverse, got_counts = face_sets(f)
    assert np.array_equal(np.sort(got_first), np.sort(first))
    assert np.array_equal(got_counts[got_inverse], counts[inverse.reshape(-1)])
    assert (got_inverse[got_first] == np.arange(len(got_first))).all()
    # two faces share a label exactly when they use the same three vertices
    same = np.sort(f, axis=1)
    assert all((same[got_first[got_inverse[i]]] == same[i]).all() for i in range(0, len(f), 37))


def test_face_sets_of_no_faces():
    first, inverse, counts = face_sets(np.zeros((0, 3), np.int32))
    assert first.size == inverse.size == counts.size == 0


def test_topology_edge_counts_match_a_count_of_every_edge():
    from collections import Counter

    from meshforge.geometry.topology import topology

    rng = np.random.default_rng(11)
    for n_vertices in (6, 40, 400):
        f = rng.integers(0, n_vertices, size=(300, 3))
        f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
        directed = Counter((int(a), int(b)) for tri in f for a, b in zip(tri, np.roll(tri, -1), strict=True))
        undirected = Counter()
        for (a, b), k in directed.items():
            undirected[min(a, b), max(a, b)] += k
        t = topology(np.zeros((n_vertices, 3)), f)
        assert t.boundary_edges == sum(1 for k in undirected.values() if k == 1)
        assert t.nonmanifold_edges == sum(1 for k in undirected.values() if k > 2)
        assert t.inconsistent_edges == sum(1 for k in directed.values() if k > 1)
