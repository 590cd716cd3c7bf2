"""meshforge's PyTorch marching cubes against scikit-image's, on analytic and random grids.

Vertices are table-independent (every implementation puts them on the same crossed grid edges, at the same
interpolated positions), so our vertex set must lie on scikit-image's to float rounding; scikit-image's Lewiner
variant adds a few cube-centre vertices in ambiguous cells, and the triangle counts differ only there. Our
meshes must be closed (every edge in two triangles, consistently oriented) and outward (positive volume).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scipy.ndimage import gaussian_filter  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from meshforge.config import ExtractConfig  # noqa: E402
from meshforge.errors import InputError, StageError  # noqa: E402
from meshforge.fields import mc_torch  # noqa: E402
from meshforge.fields.isosurface import extract, extract_grid, extract_grid_torch  # noqa: E402
from meshforge.geometry.topology import topology  # noqa: E402

LO = np.full(3, -1.0, np.float32)
HI = np.full(3, 1.0, np.float32)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def axes(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.linspace(-1.0, 1.0, n)
    return tuple(np.meshgrid(a, a, a, indexing="ij"))  # type: ignore[return-value]


def sphere(n: int = 48, r: float = 0.6) -> np.ndarray:
    x, y, z = axes(n)
    return (r - np.sqrt(x**2 + y**2 + z**2)).astype(np.float32)


def torus(n: int = 56, big: float = 0.55, small: float = 0.22) -> np.ndarray:
    x, y, z = axes(n)
    return (small - np.sqrt((np.sqrt(x**2 + y**2) - big) ** 2 + z**2)).astype(np.float32)


def noise(n: int = 48, sigma: float = 1.5, seed: int = 0) -> np.ndarray:
    g = gaussian_filter(np.random.default_rng(seed).standard_normal((n, n, n)), sigma)
    return (g / g.std()).astype(np.float32)


def signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    t = v[f].astype(np.float64)
    return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6)


def assert_closed_and_outward(v: np.ndarray, f: np.ndarray) -> None:
    topo = topology(v, f)
    assert topo.boundary_edges == 0 and topo.nonmanifold_edges == 0 and topo.inconsistent_edges == 0, topo
    assert len(np.unique(f)) == len(v)  # no unused vertices
    assert signed_volume(v, f) > 0


def compare_with_skimage(grid: np.ndarray, level: float, device: str) -> dict[str, float]:
    """Our mesh vs scikit-image's (both through the closing/cropping of :mod:`meshforge.fields.isosurface`)."""
    ours = extract_grid_torch(torch.from_numpy(grid).to(device), LO, HI, level)
    ref = extract_grid(grid, LO, HI, level)
    assert_closed_and_outward(ours.vertices, ours.faces)
    d_ours, _ = cKDTree(ref.vertices).query(ours.vertices)
    d_ref, _ = cKDTree(ours.vertices).query(ref.vertices)
    return {
        "ours_to_ref_max": float(d_ours.max()),
        "ref_unmatched": int((d_ref > 1e-6).sum()),
        "n_ref_vertices": len(ref.vertices),
        "face_ratio": len(ours.faces) / len(ref.faces),
        "volume_ratio": signed_volume(ours.vertices, ours.faces) / signed_volume(ref.vertices, ref.faces),
    }


# --------------------------------------------------------------------------------------------- the table


def test_generated_table_covers_exactly_the_crossed_edges():
    t = mc_torch.tables()
    assert t.tri_edges.shape[0] == 256 and t.tri_count[0] == t.tri_count[255] == 0
    assert t.tri_count.max() <= 5  # the classic bound: at most 5 triangles per cube
    for case in range(256):
        inside = [(case >> c) & 1 for c in range(8)]
        crossed = set()
        for e, (axis, lo) in enumerate(zip(t.edge_axis, t.edge_offset)):
            hi = lo.copy()
            hi[axis] += 1
            a = inside[lo[0] + 2 * lo[1] + 4 * lo[2]]
            b = inside[hi[0] + 2 * hi[1] + 4 * hi[2]]
            if a != b:
                crossed.add(e)
        used = t.tri_edges[case, : t.tri_count[case]]
        assert (t.tri_edges[case, t.tri_count[case] :] == -1).all()
        assert set(used.ravel().tolist()) == crossed, case
        # inside each cube the triangles form closed surfaces with boundary on the cube faces only: every
        # directed triangle side appears once (no side twice in one direction)
        sides = [(a, b) for tri in used.tolist() for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0]))]
        assert len(sides) == len(set(sides)), case


def test_single_corner_triangle_faces_away_from_the_corner():
    grid = np.zeros((2, 2, 2), np.float32)
    grid[0, 0, 0] = 1.0  # corner 0 inside, level 0.5: one triangle cutting it off
    v, f = mc_torch.marching_cubes(torch.from_numpy(grid), 0.5)
    assert f.shape == (1, 3)
    p = v[f[0]].numpy()
    normal = np.cross(p[1] - p[0], p[2] - p[0])
    assert np.allclose(np.sort(p.sum(axis=1)), 0.5)  # vertices at the edge mid-points (0.5, 0, 0), ...
    assert (normal > 0).all()  # towards (1, 1, 1), away from the inside corner


# ------------------------------------------------------------------------------ against scikit-image


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("name", "grid", "level"),
    [("sphere", sphere(), 0.0), ("torus", torus(), 0.0), ("noise-smooth", noise(48, 3.0), 0.1)],
)
def test_same_vertices_as_skimage(device, name, grid, level):
    stats = compare_with_skimage(grid, level, device)
    assert stats["ours_to_ref_max"] < 1e-6, stats  # every vertex of ours is one of scikit-image's
    assert stats["ref_unmatched"] == 0, stats  # and the converse: no ambiguous cells in these grids
    assert stats["face_ratio"] == pytest.approx(1.0, abs=2e-3), stats
    assert stats["volume_ratio"] == pytest.approx(1.0, abs=1e-3), stats


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sigma", [1.0, 1.5])
def test_rough_noise_differs_from_skimage_only_in_ambiguous_cells(device, sigma):
    """Many ambiguous faces: scikit-image adds cube-centre vertices there and may join what we separate."""
    stats = compare_with_skimage(noise(48, sigma), 0.1, device)
    assert stats["ours_to_ref_max"] < 1e-6, stats
    assert stats["ref_unmatched"] <= 0.005 * stats["n_ref_vertices"], stats
    assert stats["face_ratio"] == pytest.approx(1.0, abs=0.01), stats
    assert stats["volume_ratio"] == pytest.approx(1.0, abs=0.01), stats


@pytest.mark.parametrize("device", DEVICES)
def test_values_exactly_at_the_level_give_no_degenerate_or_open_mesh(device):
    rng = np.random.default_rng(5)
    grid = rng.integers(-1, 2, (20, 20, 20)).astype(np.float32)  # a third of the points exactly at 0
    v, f = mc_torch.marching_cubes(torch.from_numpy(grid).to(device), 0.0)
    v, f = v.cpu().numpy(), f.cpu().numpy()
    assert (f[:, 0] != f[:, 1]).all() and (f[:, 1] != f[:, 2]).all() and (f[:, 0] != f[:, 2]).all()
    assert len(np.unique(v, axis=0)) == len(v)  # vertices on a grid point are merged
    # the surface is closed except where it reaches the grid's border (no padding here): every edge with an
    # end strictly inside the grid has two triangles
    inner = np.all((v > 0) & (v < 19), axis=1)
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    uniq, count = np.unique(edges, axis=0, return_counts=True)
    open_edges = uniq[count == 1]
    assert not inner[open_edges].any()


def test_no_crossing_gives_empty_and_bad_grids_raise():
    v, f = mc_torch.marching_cubes(torch.zeros(4, 4, 4), 0.5)
    assert v.shape == (0, 3) and f.shape == (0, 3)
    assert mc_torch.extract_closed(torch.zeros(4, 4, 4), LO, HI, 0.5) is None
    with pytest.raises(ValueError):
        mc_torch.marching_cubes(torch.zeros(4, 4), 0.0)


def test_non_cubic_grid_positions():
    x = np.arange(12, dtype=np.float32)[:, None, None]
    y = np.arange(7, dtype=np.float32)[None, :, None]
    z = np.arange(9, dtype=np.float32)[None, None, :]
    grid = (8.0 - ((x - 6) ** 2 + (y - 3) ** 2 + 1.5 * (z - 4) ** 2)) + 0 * x * y * z
    v, f = mc_torch.marching_cubes(torch.from_numpy(grid.astype(np.float32)), 0.0)
    # every vertex lies on the quadric (to the linear interpolation error) and inside the grid
    v = v.numpy()
    q = 8.0 - ((v[:, 0] - 6) ** 2 + (v[:, 1] - 3) ** 2 + 1.5 * (v[:, 2] - 4) ** 2)
    assert np.abs(q).max() < 1.6 and v.min() >= 0 and (v.max(axis=0) <= [11, 6, 8]).all()
    assert_closed_and_outward(v, f.numpy())


# ------------------------------------------------------------------------------------ the engine hook


class Sphere:
    iso_level = 0.0

    def __init__(self, centre=(0.0, 0.0, 0.0), radius: float = 0.3, half: float = 0.5):
        self.c = np.asarray(centre, np.float32)
        self.r = radius
        self.bbox_min = np.full(3, -half, np.float32)
        self.bbox_max = np.full(3, half, np.float32)

    def density(self, p):
        return (self.r - np.linalg.norm(p - self.c, axis=1)).astype(np.float32)

    def color(self, p):
        return np.zeros((len(p), 3), np.float32)

    def material(self, p):
        return np.zeros(len(p), np.float32), np.ones(len(p), np.float32)


class TensorSphere(Sphere):
    """A field that hands its grid over as a tensor (as the TripoSR field does on a GPU)."""

    def __init__(self, device: str = "cpu", **kw):
        super().__init__(**kw)
        self.device = device
        self.calls = 0

    def density_grid_tensor(self, resolution: int):
        from meshforge.fields.base import sample_grid

        self.calls += 1
        return torch.from_numpy(sample_grid(Sphere(self.c, self.r), resolution)).to(self.device)


def test_engines_agree_and_touching_objects_close():
    field = Sphere(centre=(0.35, 0.0, 0.0))  # sticks out of the box at +x
    sk = extract(field, ExtractConfig(resolution=40, engine="skimage"))
    ours = extract(field, ExtractConfig(resolution=40, engine="torch"))
    assert_closed_and_outward(ours.vertices, ours.faces)
    assert ours.vertices[:, 0].max() == pytest.approx(0.5, abs=1e-6)  # the cap lies on the box face
    d, _ = cKDTree(sk.vertices).query(ours.vertices)
    assert d.max() < 1e-6
    assert len(ours.faces) == pytest.approx(len(sk.faces), rel=2e-3)


def test_auto_engine_choice_and_unknown_engine():
    field = Sphere()
    auto = extract(field, ExtractConfig(resolution=24, engine="auto"))  # numpy grid: scikit-image, exactly
    sk = extract(field, ExtractConfig(resolution=24, engine="skimage"))
    assert np.array_equal(auto.vertices, sk.vertices) and np.array_equal(auto.faces, sk.faces)

    cpu_tensor = TensorSphere("cpu")  # a CPU tensor: still scikit-image under auto
    auto = extract(cpu_tensor, ExtractConfig(resolution=24, engine="auto"))
    assert cpu_tensor.calls == 1 and np.array_equal(auto.faces, sk.faces)
    ours = extract(cpu_tensor, ExtractConfig(resolution=24, engine="torch"))
    assert cpu_tensor.calls == 2 and cKDTree(sk.vertices).query(ours.vertices)[0].max() < 1e-6
    skimage_path = extract(cpu_tensor, ExtractConfig(resolution=24, engine="skimage"))  # ignores the tensor path
    assert cpu_tensor.calls == 2 and np.array_equal(skimage_path.faces, sk.faces)

    with pytest.raises(InputError, match="unknown isosurface engine"):
        extract(field, ExtractConfig(resolution=24, engine="mcubes"))
    with pytest.raises(StageError, match="empty"):
        extract(Sphere(radius=0.001), ExtractConfig(resolution=16, engine="torch"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_uses_torch_for_cuda_grids():
    field = TensorSphere("cuda")
    auto = extract(field, ExtractConfig(resolution=32, engine="auto"))
    ours = extract(field, ExtractConfig(resolution=32, engine="torch"))
    assert np.array_equal(auto.vertices, ours.vertices) and np.array_equal(auto.faces, ours.faces)
    cpu = extract(TensorSphere("cpu"), ExtractConfig(resolution=32, engine="torch"))
    assert np.abs(cpu.vertices - ours.vertices).max() < 1e-6 and np.array_equal(cpu.faces, ours.faces)
