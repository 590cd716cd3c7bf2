"""The torch bake (meshforge.gpu.bake / .raster) against the numpy/Embree bake it mirrors, on CPU tensors;
the ``gpu``-marked tests compare CUDA with CPU tensors and skip without a CUDA device."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from scipy import ndimage

from meshforge.config import BakeConfig, DecimateConfig, ExtractConfig, UnwrapConfig
from meshforge.errors import StageError
from meshforge.fields.isosurface import extract
from meshforge.fields.surface import FieldSurfacePart, SurfaceField
from meshforge.geometry.closest import closest_point_on_triangles as closest_numpy
from meshforge.geometry.normals import vertex_normals
from meshforge.geometry.raster import rasterize as rasterize_numpy
from meshforge.gpu import bake as tbake
from meshforge.gpu import flood_triton
from meshforge.gpu.raster import rasterize as rasterize_torch
from meshforge.io.meshes import load_mesh
from meshforge.mesh import bake as cbake
from meshforge.mesh.decimate import decimate
from meshforge.mesh.uv import unwrap
from meshforge.optimize import flatten

from ..fields.test_isosurface import Sphere

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def atlas_triangles(rng: np.random.Generator, size: int) -> np.ndarray:
    """A UV-atlas-like triangle soup in texel units: a regular grid of triangle pairs whose corners sit on
    texel centres and edges (shared-edge ties), plus random triangles, slivers and a degenerate one."""
    n = 12
    c = np.linspace(0.5, size / 2 - 0.5, n)
    x, y = np.meshgrid(c, c, indexing="ij")
    idx = np.arange(n * n).reshape(n, n)
    a, b, cc, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    grid_faces = np.concatenate([np.stack([a, b, cc], -1).reshape(-1, 3), np.stack([a, cc, d], -1).reshape(-1, 3)])
    grid = np.stack([x, y], -1).reshape(-1, 2)[grid_faces]
    rand = rng.uniform(size / 2, size, (200, 1, 2)) + rng.normal(0, 4, (200, 3, 2))
    sliver = np.array([[[3.0, size - 3.0], [size - 3.0, size - 2.5], [3.0, size - 2.9]]])
    degenerate = np.array([[[5.0, 5.0], [9.0, 9.0], [13.0, 13.0]]])
    return np.concatenate([grid, rand, sliver, degenerate])


def test_torch_raster_matches_numpy_raster():
    rng = np.random.default_rng(0)
    size = 96
    tri = atlas_triangles(rng, size)
    ref = rasterize_numpy(tri, size, size, max_candidates=5000)
    got = rasterize_torch(torch.as_tensor(tri), size, size, max_candidates=3000)
    assert ref.covered.sum() > 0.3 * size * size
    assert np.array_equal(got.face.numpy(), ref.face)
    assert np.abs(got.bary.numpy() - ref.bary).max() < 1e-5


def test_closest_point_on_triangles_matches_numpy():
    rng = np.random.default_rng(1)
    a, b, c, p = (rng.normal(size=(4000, 3)) for _ in range(4))
    b[:50] = a[:50]  # degenerate: two equal corners
    c[50:100] = a[50:100] + 2.0 * (b[50:100] - a[50:100])  # collinear
    q_ref, w_ref = closest_numpy(p, a, b, c)
    q, w = tbake.closest_point_on_triangles(*(torch.as_tensor(x) for x in (p, a, b, c)))
    assert np.abs(q.numpy() - q_ref).max() < 1e-9  # the same closest points everywhere
    # the same barycentrics where they are unique (degenerate triangles have several for one point)
    assert np.abs(w.numpy()[100:] - w_ref[100:]).max() < 1e-9


@pytest.fixture(scope="module")
def dense_sphere():
    mesh = extract(Sphere(0.3), ExtractConfig(resolution=32))
    return torch.as_tensor(mesh.vertices, dtype=torch.float64), torch.as_tensor(mesh.faces, dtype=torch.int64)


def brute_closest(v: torch.Tensor, f: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    tri = v[f]
    rows = torch.arange(len(p)).repeat_interleave(len(f))
    cols = torch.arange(len(f)).repeat(len(p))
    q, _ = tbake.closest_point_on_triangles(p[rows], tri[cols, 0], tri[cols, 1], tri[cols, 2])
    return torch.linalg.norm(q - p[rows], dim=1).view(len(p), len(f)).amin(1)


def test_grid_closest_points_equal_brute_force(dense_sphere):
    v, f = dense_sphere
    grid = tbake.TriangleGrid(v, f)
    g = torch.Generator().manual_seed(2)
    on = v[torch.randint(len(v), (200,), generator=g)]
    near = on + torch.randn(200, 3, generator=g, dtype=torch.float64) * 0.03  # a few cells off the surface
    inside = torch.randn(40, 3, generator=g, dtype=torch.float64) * 0.05  # deep inside the sphere
    far = torch.randn(20, 3, generator=g, dtype=torch.float64) * 2.0  # far outside the grid
    p = torch.cat([near, inside, far])
    face, bary, dist = grid.closest(p)
    ref = brute_closest(v, f, p)
    assert torch.allclose(dist, ref, atol=1e-10, rtol=0)
    # the returned face and barycentrics give that closest point
    q = torch.einsum("nk,nkd->nd", bary, v[f[face]])
    assert torch.allclose(torch.linalg.norm(q - p, dim=1), ref, atol=1e-9, rtol=0)


def brute_cast(v, f, o, d, tmax):
    tri = v[f]
    rows = torch.arange(len(o)).repeat_interleave(len(f))
    cols = torch.arange(len(f)).repeat(len(o))
    t, _, _ = tbake.ray_triangles(o[rows], d[rows], tri[cols, 0], tri[cols, 1], tri[cols, 2])
    t = torch.where(t <= tmax, t, torch.full_like(t, float("inf"))).view(len(o), len(f))
    return t.amin(1)


@pytest.mark.parametrize("cells_per_pass", [1, 1 << 16], ids=["one-cell-per-pass", "many-cells-per-pass"])
def test_grid_ray_casts_equal_brute_force(dense_sphere, monkeypatch, cells_per_pass):
    # (the walk takes min(64, cells_per_pass // rays) cells per ray and pass: 1, or 64 for these 400 rays)
    monkeypatch.setattr(tbake, "_STEP_CELLS", cells_per_pass)
    v, f = dense_sphere
    grid = tbake.TriangleGrid(v, f)
    g = torch.Generator().manual_seed(3)
    d = torch.randn(400, 3, generator=g, dtype=torch.float64)
    d = d / torch.linalg.norm(d, dim=1, keepdim=True)
    o = torch.randn(400, 3, generator=g, dtype=torch.float64) * 0.35  # inside, near and outside the sphere
    o[:20] = torch.tensor([5.0, 0.0, 0.0], dtype=torch.float64)  # far outside the grid, pointing back
    d[:20] = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64)
    tmax = 0.25
    face, bary, t = grid.cast(o, d, tmax)
    ref = brute_cast(v, f, o, d, tmax)
    hit = torch.isfinite(ref)
    assert 50 < int(hit.sum()) < 400
    assert torch.equal(face >= 0, hit)
    assert torch.allclose(t[hit], ref[hit], atol=1e-12, rtol=0)
    q = torch.einsum("nk,nkd->nd", bary[hit], v[f[face[hit]]])
    assert torch.allclose(q, o[hit] + d[hit] * t[hit, None], atol=1e-9)
    # far origins: max_distance 0.25 from x = 5 reaches nothing; with 10 they hit the sphere at x ≈ 0.3
    face_far, _, t_far = grid.cast(o[:20], d[:20], 10.0)
    assert (face_far >= 0).all() and torch.allclose(t_far, torch.full_like(t_far, 4.7), atol=0.01)


def test_dilation_fills_reachable_texels_and_keeps_written_ones():
    rng = np.random.default_rng(4)
    covered = np.zeros((128, 160), bool)
    for _ in range(25):  # blobs of written texels
        y, x, r = rng.integers(0, 128), rng.integers(0, 160), rng.integers(1, 9)
        yy, xx = np.ogrid[:128, :160]
        covered |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
    values = rng.integers(0, 256, (128, 160, 3)).astype(np.uint8)
    values[~covered] = 0
    exact = ndimage.distance_transform_edt(~covered)
    radius = 6.0
    out = tbake.fill_gutters(torch.as_tensor(values), torch.as_tensor(covered), radius=radius).numpy()
    assert np.array_equal(out[covered], values[covered])  # written texels never change
    seed, dist = tbake.jump_flood(torch.as_tensor(covered))
    seed, dist = seed.numpy(), dist.numpy()
    reach = ~covered & (exact <= radius)
    assert np.array_equal(out[reach], values.reshape(-1, 3)[seed[reach]])  # every reachable texel filled
    assert covered.reshape(-1)[seed.reshape(-1)].all()  # … from a written texel
    assert np.abs(dist - exact).max() < 1.0 and (np.abs(dist - exact) < 1e-4).mean() > 0.995
    assert np.array_equal(out[~covered & (dist > radius)], values[~covered & (dist > radius)])  # beyond: untouched
    full = tbake.fill_gutters(torch.as_tensor(values), torch.as_tensor(covered)).numpy()
    assert np.array_equal(full[covered], values[covered]) and (full.reshape(-1, 3)[~covered.reshape(-1)] >= 0).all()
    assert np.array_equal(full.reshape(-1, 3), values.reshape(-1, 3)[seed.reshape(-1)])


@pytest.fixture(scope="module")
def spot():
    """spot.glb optimized to 2k faces and unwrapped for 256² maps, with its SurfaceField."""
    scene = load_mesh(shared_spot())
    field = SurfaceField(scene.parts, cage=0.03 * scene.diagonal())
    low = decimate(flatten(scene), DecimateConfig(faces=2000))[0]
    low = low.replace(normals=vertex_normals(low.vertices, low.faces))
    mesh, _ = unwrap(low, UnwrapConfig(), 256)
    return mesh, field


def shared_spot() -> str:
    from ..conftest import shared_dir

    path = shared_dir() / "data" / "assets" / "spot.glb"
    if not path.is_file():
        pytest.fail(f"shared asset not found at {path}")
    return str(path)


def diff_stats(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> tuple[float, int, float]:
    d = np.abs(a.astype(np.int64) - b.astype(np.int64))[mask]
    return float(d.mean()), int(d.max()), float((d.reshape(len(d), -1).max(1) > 2).mean())


def test_rival_rays_stop_early_and_the_winners_are_unchanged(dense_sphere, monkeypatch):
    """nearest_hit's pair of opposite rays stop once past each other's score; the winner of every pair (face,
    barycentrics, distance) is what two independent full-length casts give."""
    monkeypatch.setattr(tbake, "_STEP_CELLS", 1)  # one cell per ray and pass, as when many rays are active
    v, f = dense_sphere
    dense = tbake.DenseSurface(v, f, cage=0.3)
    g = torch.Generator().manual_seed(4)
    d = torch.randn(600, 3, generator=g, dtype=torch.float64)
    n = d / torch.linalg.norm(d, dim=1, keepdim=True)
    # points a little inside, on and outside the sphere (radius ≈ 0.3), and some near its centre
    p = n * (0.3 + torch.randn(600, 1, generator=g, dtype=torch.float64) * 0.02)
    p[:50] = torch.randn(50, 3, generator=g, dtype=torch.float64) * 0.05
    face, bary, dist = dense.nearest_hit(p, n)
    m = len(p)
    f_both, b_both, d_both = dense.grid.cast(torch.cat([p, p]), torch.cat([n, -n]), dense.cage)

    def score(fc, dd):
        back = (dense.face_normals[fc.clamp(min=0)] * n).sum(1) < 0
        return torch.where(fc >= 0, dd + torch.where(back, 2.0 * dense.cage, 0.0), torch.inf)

    use_in = score(f_both[m:], d_both[m:]) < score(f_both[:m], d_both[:m])
    ref_face = torch.where(use_in, f_both[m:], f_both[:m])
    assert torch.equal(face, ref_face) and int((face >= 0).sum()) > 0.95 * m
    assert torch.equal(dist, torch.where(use_in, d_both[m:], d_both[:m]))
    assert torch.equal(bary, torch.where(use_in[:, None], b_both[m:], b_both[:m]))
    # the losers were cut short: fewer hits than the full casts found
    f_pair, _, _ = dense.grid.cast(
        torch.cat([p, p]),
        torch.cat([n, -n]),
        dense.cage,
        rival=torch.cat([torch.arange(m, 2 * m), torch.arange(m)]),
    )
    assert int((f_pair >= 0).sum()) < int((f_both >= 0).sum())


def test_a_walk_of_many_cells_at_once_visits_the_cells_of_single_steps():
    g = torch.Generator().manual_seed(5)
    n = 300
    d = torch.randn(n, 3, generator=g, dtype=torch.float64)
    d[:40, 0] = 0.0  # rays parallel to a wall
    d[40:60, :2] = 0.0  # and along an axis
    d = d / torch.linalg.norm(d, dim=1, keepdim=True)
    h = 0.1
    o = torch.rand(n, 3, generator=g, dtype=torch.float64)
    cell = torch.floor(o / h).long()
    step = torch.sign(d).long()
    safe = torch.where(d == 0, torch.ones_like(d), d)
    t_delta = torch.where(d == 0, torch.inf, h / d.abs())
    t_next = torch.where(d == 0, torch.inf, ((cell + (step > 0).long()) * h - o) / safe)
    cells, last, t_last = tbake._walk(cell, t_next, t_delta, step, 12)
    # the same walk one wall at a time
    c, tn, seen = cell.clone(), t_next.clone(), [cell.clone()]
    rows = torch.arange(n)
    for _ in range(11):
        axis = tn.argmin(1)
        c[rows, axis] += step[rows, axis]
        tn[rows, axis] += t_delta[rows, axis]
        seen.append(c.clone())
    assert torch.equal(cells.view(n, 12, 3), torch.stack(seen, 1))
    assert torch.equal(last, c)
    assert torch.allclose(t_last, tn, rtol=1e-12, atol=0)
    # each step moves to a face neighbour
    assert (torch.stack(seen, 1).diff(dim=1).abs().sum(-1) == 1).all()
    assert torch.equal(tbake._walk(cell, t_next, t_delta, step, 1)[0], cell)


def test_projection_agrees_with_the_embree_projection(spot):
    mesh, field = spot
    raster = cbake.rasterize_atlas(mesh, 256)
    points, flat = cbake.surface_points(mesh, raster)
    face = raster.face.ravel()[flat]
    bary = raster.bary.reshape(-1, 3)[flat].astype(np.float64)
    nrm = cbake._unit(np.einsum("nk,nkd->nd", bary, mesh.normals[mesh.faces[face]].astype(np.float64)))
    f_ref, b_ref = field.project(points, nrm, face)
    dense = tbake.dense_surface(field, "cpu")
    f_got, b_got = dense.project(torch.as_tensor(points), torch.as_tensor(nrm), torch.as_tensor(face))
    p_ref = np.einsum("nk,nkd->nd", b_ref, field.vertices[field.faces[f_ref]])
    p_got = np.einsum("nk,nkd->nd", b_got.numpy(), field.vertices[field.faces[f_got.numpy()]])
    gap = np.linalg.norm(p_ref - p_got, axis=1) / field.diagonal
    assert np.median(gap) < 1e-6 and (gap > 1e-4).mean() < 0.002


def test_spot_bake_equals_the_cpu_bake(spot):
    mesh, field = spot
    cfg = BakeConfig(texture_size=256)
    ref, ref_counts = cbake.bake(mesh, field, cfg)
    got, counts = tbake.bake(mesh, field, cfg, device="cpu")
    assert counts == ref_counts
    covered = cbake.rasterize_atlas(mesh, 256).covered
    mean, worst, frac = diff_stats(ref.base_color, got.base_color, covered)
    print(f"base colour on covered texels: mean {mean:.4f}, max {worst}, > 2/255: {frac:.4%}")
    assert mean < 0.05 and frac < 0.002
    assert diff_stats(ref.metallic_roughness, got.metallic_roughness, covered)[2] < 0.002
    assert ref.normal is not None and got.normal is not None
    n_mean, _, n_frac = diff_stats(ref.normal, got.normal, covered)
    print(f"normal map on covered texels: mean {n_mean:.4f}, > 2/255: {n_frac:.4%}")
    assert n_mean < 0.1 and n_frac < 0.005
    assert (ref.occlusion is None) == (got.occlusion is None)
    # gutters: every texel is filled from a chart; JFA and the exact EDT may pick different equidistant texels
    assert got.base_color.shape == ref.base_color.shape == (256, 256, 4)
    assert (np.abs(ref.base_color.astype(int) - got.base_color.astype(int)).max(-1) > 2).mean() < 0.02


def test_plain_field_bake_equals_the_cpu_bake():
    mesh = extract(Sphere(0.3), ExtractConfig(resolution=40))
    low = decimate(mesh, DecimateConfig(faces=800))[0]
    low, _ = unwrap(low, UnwrapConfig(), 128)
    cfg = BakeConfig(texture_size=128)
    ref, _ = cbake.bake(low, Sphere(0.3), cfg)
    got, _ = tbake.bake(low, Sphere(0.3), cfg, device="cpu")
    covered = cbake.rasterize_atlas(low, 128).covered
    assert diff_stats(ref.base_color, got.base_color, covered)[1] <= 1
    assert np.array_equal(ref.metallic_roughness, got.metallic_roughness) and got.normal is None
    with pytest.raises(StageError, match="UV"):
        tbake.bake(mesh, Sphere(0.3), cfg)


class _HalfClearSphere(Sphere):
    """A sphere whose opacity is real: clear where x < 0, opaque elsewhere (a MASK material)."""

    alpha_mode = "MASK"

    def alpha(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points)[:, 0] >= 0).astype(np.float32)


def test_real_alpha_bakes_alike_on_both_engines():
    """Both bakes (plain field, and through the dense surface as generate bakes) write the field's
    alpha into the base colour's alpha channel, and agree on it."""
    field = _HalfClearSphere(0.3)
    mesh = extract(field, ExtractConfig(resolution=40))
    low = decimate(mesh, DecimateConfig(faces=800))[0]
    low, _ = unwrap(low, UnwrapConfig(), 128)
    low = low.replace(normals=vertex_normals(low.vertices, low.faces))
    covered = cbake.rasterize_atlas(low, 128).covered
    diag = float(np.linalg.norm(mesh.vertices.max(0) - mesh.vertices.min(0)))
    surface = SurfaceField([FieldSurfacePart(mesh, field)], cage=0.05 * diag)
    for source in (field, surface):
        ref, _ = cbake.bake(low, source, BakeConfig(texture_size=128))
        got, _ = tbake.bake(low, source, BakeConfig(texture_size=128), device="cpu")
        alpha = ref.base_color[..., 3][covered]
        assert (alpha == 0).mean() > 0.3 and (alpha == 255).mean() > 0.3
        agree = got.base_color[..., 3][covered] == alpha
        assert agree.mean() > 0.99  # texels exactly on x = 0 may round either way


@pytest.mark.gpu
@needs_cuda
def test_cuda_raster_and_grid_equal_cpu_tensors(dense_sphere):
    rng = np.random.default_rng(5)
    tri = torch.as_tensor(atlas_triangles(rng, 96))
    a, b = rasterize_torch(tri, 96, 96), rasterize_torch(tri.cuda(), 96, 96)
    assert torch.equal(a.face, b.face.cpu()) and torch.allclose(a.bary, b.bary.cpu(), atol=1e-6)
    v, f = dense_sphere
    p = torch.randn(500, 3, dtype=torch.float64) * 0.4
    d = torch.nn.functional.normalize(torch.randn(500, 3, dtype=torch.float64), dim=1)
    cpu_grid, gpu_grid = tbake.TriangleGrid(v, f), tbake.TriangleGrid(v.cuda(), f.cuda())
    for kind, a_res, b_res in (
        ("closest", cpu_grid.closest(p), gpu_grid.closest(p.cuda())),
        ("cast", cpu_grid.cast(p, d, 0.3), gpu_grid.cast(p.cuda(), d.cuda(), 0.3)),
    ):
        (fa, _, da), (fb, _, db) = a_res, (x.cpu() for x in b_res)
        hit = torch.isfinite(da)
        assert torch.equal(hit, torch.isfinite(db))
        assert torch.allclose(da[hit], db[hit], atol=1e-9, rtol=0)
        # the face each device chose attains that distance: ties (a closest point on a shared edge or vertex,
        # a ray through a shared edge) may pick either face, never a farther one
        for chosen in (fa, fb):
            tri = v[f[chosen[hit]]]
            if kind == "closest":
                q, _ = tbake.closest_point_on_triangles(p[hit], tri[:, 0], tri[:, 1], tri[:, 2])
                dist = torch.linalg.norm(q - p[hit], dim=1)
            else:
                dist, _, _ = tbake.ray_triangles(p[hit], d[hit], tri[:, 0], tri[:, 1], tri[:, 2])
            assert torch.allclose(dist, da[hit], atol=1e-9, rtol=0), kind


@pytest.mark.gpu
@needs_cuda
def test_cuda_bake_equals_cpu_tensor_bake(spot):
    mesh, field = spot
    cfg = BakeConfig(texture_size=256)
    a, _ = tbake.bake(mesh, field, cfg, device="cpu")
    b, _ = tbake.bake(mesh, field, cfg, device="cuda")
    covered = cbake.rasterize_atlas(mesh, 256).covered
    for name in ("base_color", "metallic_roughness", "normal"):
        mean, _, frac = diff_stats(getattr(a, name), getattr(b, name), covered)
        assert mean < 0.02 and frac < 0.001, name


@pytest.mark.parametrize("asset", ["spot.glb", "Fox.glb", "kenney_cakeBirthday.glb", "CesiumMilkTruck.glb"])
def test_torch_attributes_equal_the_numpy_attributes(asset):
    from ..conftest import shared_dir

    scene = load_mesh(str(shared_dir() / "data" / "assets" / asset))
    field = SurfaceField(scene.parts)
    dense = tbake.DenseSurface.from_field(field, "cpu")
    rng = np.random.default_rng(6)
    face = rng.integers(0, len(field.faces), 5000)
    bary = rng.dirichlet((1.0, 1.0, 1.0), 5000)
    ref = field.attributes(face, bary)
    got = dense.attributes(torch.as_tensor(face), torch.as_tensor(bary))
    assert set(got) >= {"base_color", "metallic", "roughness", "normal", "occlusion"}
    for key in ("base_color", "metallic", "roughness", "normal", "occlusion"):
        assert np.abs(got[key].numpy() - ref[key]).max() < 1e-5, key


class TensorSphere(Sphere):
    """The analytic sphere with its colour also on tensors (as TripoSR's ``color_tensor``)."""

    def color_tensor(self, p: torch.Tensor) -> torch.Tensor:
        return torch.clamp(p + 0.5, 0, 1).to(torch.float32)


def test_field_surface_part_samples_on_tensors():
    from meshforge.fields.surface import FieldSurfacePart

    mesh = extract(Sphere(0.3), ExtractConfig(resolution=32))
    field = SurfaceField([FieldSurfacePart(mesh, TensorSphere(0.3))])
    dense = tbake.DenseSurface.from_field(field, "cpu")
    assert type(dense.samplers[0]).__name__ == "TorchFieldPart"
    rng = np.random.default_rng(7)
    face = rng.integers(0, mesh.n_faces, 3000)
    bary = rng.dirichlet((1.0, 1.0, 1.0), 3000)
    ref = field.attributes(face, bary)
    got = dense.attributes(torch.as_tensor(face), torch.as_tensor(bary))
    for key in ("base_color", "metallic", "roughness", "normal"):
        assert np.abs(got[key].numpy() - ref[key]).max() < 1e-6, key


def _assert_sparse_voxel_surface_part_matches(device: str) -> None:
    """A dense isosurface sampled through TRELLIS.2's sparse voxels (the pipeline's path for a decoded raw):
    the numpy part (``pbr``: one lookup) equals the three plain lookups, and the device part (``pbr_tensor``)
    equals the numpy part."""
    from meshforge.fields.surface import FieldSurfacePart

    _, field = _sparse_voxel_bake_case()
    mesh = extract(Sphere(0.3), ExtractConfig(resolution=32))
    rng = np.random.default_rng(8)
    face = rng.integers(0, mesh.n_faces, 3000)
    bary = rng.dirichlet((1.0, 1.0, 1.0), 3000)
    ref = FieldSurfacePart(mesh, _ThreeLookups(field)).sample(face, bary)
    host = FieldSurfacePart(mesh, field).sample(face, bary)
    for key in ("base_color", "metallic", "roughness", "normal"):
        assert np.array_equal(host[key], ref[key]), key
    assert (host["base_color"][:, 3] == 0).any() and (host["base_color"][:, 3] == 1).any()  # the real alpha
    dense = tbake.DenseSurface.from_field(SurfaceField([FieldSurfacePart(mesh, field)]), device)
    assert type(dense.samplers[0]).__name__ == "TorchFieldPart"
    got = dense.attributes(torch.as_tensor(face, device=device), torch.as_tensor(bary, device=device))
    for key in ("base_color", "metallic", "roughness", "normal"):
        assert np.abs(got[key].cpu().numpy() - host[key]).max() < 1e-6, key


def test_sparse_voxel_surface_part_samples_every_channel_at_once():
    _assert_sparse_voxel_surface_part_matches("cpu")


@pytest.mark.gpu
@needs_cuda
def test_cuda_sparse_voxel_surface_part_equals_numpy():
    _assert_sparse_voxel_surface_part_matches("cuda")


class OwnProjection:
    """A field with its own ``bake_attributes`` (not a SurfaceField): the torch bake calls it with numpy."""

    def __init__(self, field: SurfaceField) -> None:
        self.inner = field
        self.bbox_min, self.bbox_max, self.iso_level = field.bbox_min, field.bbox_max, 0.0

    def bake_attributes(self, points, normals, low_face=None):
        assert isinstance(points, np.ndarray) and isinstance(normals, np.ndarray)
        return self.inner.bake_attributes(points, normals, low_face)


def test_a_field_with_its_own_projection_is_called_with_numpy(spot):
    mesh, field = spot
    cfg = BakeConfig(texture_size=128)
    ref, _ = cbake.bake(mesh, OwnProjection(field), cfg)
    got, _ = tbake.bake(mesh, OwnProjection(field), cfg)
    covered = cbake.rasterize_atlas(mesh, 128).covered
    for name in ("base_color", "metallic_roughness", "normal"):
        assert diff_stats(getattr(ref, name), getattr(got, name), covered)[2] < 0.002, name


def test_a_dense_isosurface_on_tensors_bakes_as_the_pipeline_does():
    from meshforge.fields.surface import FieldSurfacePart
    from meshforge.gpu.sample import vertex_normals as torch_vertex_normals

    dense = extract(Sphere(0.3), ExtractConfig(resolution=32))
    v, f = torch.as_tensor(dense.vertices), torch.as_tensor(dense.faces, dtype=torch.int64)
    assert np.abs(torch_vertex_normals(v, f).numpy() - vertex_normals(dense.vertices, dense.faces)).max() < 1e-12
    low = decimate(dense, DecimateConfig(faces=600))[0]
    low, _ = unwrap(low.replace(normals=vertex_normals(low.vertices, low.faces)), UnwrapConfig(), 128)
    cfg = BakeConfig(texture_size=128)
    diag = float(np.linalg.norm(dense.vertices.max(0) - dense.vertices.min(0)))
    ref, _ = cbake.bake(low, SurfaceField([FieldSurfacePart(dense, TensorSphere(0.3))], cage=0.03 * diag), cfg)
    surface = tbake.DenseSurface.from_isosurface(v, f, TensorSphere(0.3))
    got, _ = tbake.bake(low, TensorSphere(0.3), cfg, surface=surface)
    covered = cbake.rasterize_atlas(low, 128).covered
    for name in ("base_color", "metallic_roughness", "normal"):
        assert diff_stats(getattr(ref, name), getattr(got, name), covered)[2] < 0.002, name


@pytest.mark.gpu
@needs_cuda
def test_cuda_isosurface_bake_equals_cpu_tensors():
    dense = extract(Sphere(0.3), ExtractConfig(resolution=32))
    low = decimate(dense, DecimateConfig(faces=600))[0]
    low, _ = unwrap(low.replace(normals=vertex_normals(low.vertices, low.faces)), UnwrapConfig(), 128)
    v, f = torch.as_tensor(dense.vertices), torch.as_tensor(dense.faces, dtype=torch.int64)
    cfg = BakeConfig(texture_size=128)
    a, _ = tbake.bake(low, TensorSphere(0.3), cfg, surface=tbake.DenseSurface.from_isosurface(v, f, TensorSphere(0.3)))
    gpu_surface = tbake.DenseSurface.from_isosurface(v.cuda(), f.cuda(), TensorSphere(0.3))
    b, _ = tbake.bake(low, TensorSphere(0.3), cfg, device="cuda", surface=gpu_surface)
    covered = cbake.rasterize_atlas(low, 128).covered
    for name in ("base_color", "normal"):
        assert diff_stats(getattr(a, name), getattr(b, name), covered)[2] < 0.002, name


class _ThreeLookups:
    """A sparse voxel field seen through the plain Field methods only (no ``pbr``): the bake's old path."""

    def __init__(self, field):  # type: ignore[no-untyped-def]
        self.f = field
        self.bbox_min, self.bbox_max, self.iso_level = field.bbox_min, field.bbox_max, 0.0
        self.alpha_mode = field.alpha_mode

    def density(self, points):  # type: ignore[no-untyped-def]
        return self.f.density(points)

    def color(self, points):  # type: ignore[no-untyped-def]
        return self.f.color(points)

    def material(self, points):  # type: ignore[no-untyped-def]
        return self.f.material(points)

    def alpha(self, points):  # type: ignore[no-untyped-def]
        return self.f.alpha(points)


def _sparse_voxel_bake_case():  # type: ignore[no-untyped-def]
    from meshforge.fields.sparse_voxels import GLTF_TO_TRELLIS, SparseVoxelField

    mesh = extract(Sphere(0.3), ExtractConfig(resolution=40))
    low = decimate(mesh, DecimateConfig(faces=800))[0]
    low, _ = unwrap(low, UnwrapConfig(), 128)
    # voxels of a 32³ grid over the box, a shell around the sphere; colour by position, alpha clear below y = 0
    ijk = np.argwhere(np.ones((32, 32, 32), bool))
    centres = (ijk + 0.5) / 32 - 0.5  # TRELLIS.2 frame
    shell = np.abs(np.linalg.norm(centres, axis=1) - 0.3) < 0.08
    ijk, centres = ijk[shell], centres[shell]
    attrs = np.concatenate(
        [centres + 0.5, (centres[:, :1] > 0), 0.2 + centres[:, 1:2] + 0.5, (centres[:, 2:3] >= 0) * 1.0], 1
    ).astype(np.float32)
    field = SparseVoxelField(ijk, attrs, (-0.5, -0.5, -0.5), 1 / 32, transform=GLTF_TO_TRELLIS)
    assert field.alpha_mode != "OPAQUE"
    return low, field


def test_sparse_voxel_bake_from_one_lookup_equals_three_lookups_on_both_engines():
    """TRELLIS.2's attribute field bakes through ``pbr`` (host) and ``pbr_tensor`` (device) to the maps the
    three plain Field calls give."""
    low, field = _sparse_voxel_bake_case()
    cfg = BakeConfig(texture_size=128)
    ref, _ = cbake.bake(low, _ThreeLookups(field), cfg)
    host, _ = cbake.bake(low, field, cfg)
    dev, _ = tbake.bake(low, field, cfg, device="cpu")
    assert np.array_equal(ref.base_color, host.base_color)
    assert np.array_equal(ref.metallic_roughness, host.metallic_roughness)
    covered = cbake.rasterize_atlas(low, 128).covered
    alpha = ref.base_color[..., 3][covered]
    assert (alpha == 0).mean() > 0.2 and (alpha == 255).mean() > 0.2  # the real alpha is baked
    assert diff_stats(ref.base_color, dev.base_color, covered)[1] <= 1
    assert diff_stats(ref.metallic_roughness, dev.metallic_roughness, covered)[1] <= 1


@pytest.mark.gpu
@needs_cuda
def test_cuda_sparse_voxel_bake_equals_cpu_tensors():
    low, field = _sparse_voxel_bake_case()
    cfg = BakeConfig(texture_size=128)
    ref, _ = tbake.bake(low, field, cfg, device="cpu")
    got, _ = tbake.bake(low, field, cfg, device="cuda")
    covered = cbake.rasterize_atlas(low, 128).covered
    assert diff_stats(ref.base_color, got.base_color, covered)[1] <= 1
    assert diff_stats(ref.metallic_roughness, got.metallic_roughness, covered)[1] <= 1


#: TRITON_INTERPRET=1 runs the Triton kernels on CPU tensors (Triton's interpreter), for a check without a GPU
_TRITON_DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"


@pytest.mark.gpu
@pytest.mark.skipif(
    not flood_triton.AVAILABLE or (_TRITON_DEVICE == "cuda" and not torch.cuda.is_available()),
    reason="needs Triton and a CUDA device (or TRITON_INTERPRET=1)",
)
def test_triton_jump_flooding_equals_the_torch_reference():
    """One Triton launch a step (flood_triton) against the torch steps: the same seeds and distances, on blobs
    in a non-square atlas, one written texel, and an almost full one."""
    jump_flood_triton = flood_triton.jump_flood_triton
    rng = np.random.default_rng(7)
    blobs = np.zeros((96, 130), bool)
    yy, xx = np.ogrid[:96, :130]
    for _ in range(12):
        y, x, r = rng.integers(0, 96), rng.integers(0, 130), rng.integers(1, 7)
        blobs |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
    single = np.zeros((64, 64), bool)
    single[5, 60] = True
    full = rng.random((40, 33)) < 0.97
    for covered in (blobs, single, full):
        c = torch.as_tensor(covered, device=_TRITON_DEVICE)
        seed, dist = jump_flood_triton(c)
        want_seed, want_dist = tbake.jump_flood(c)
        assert torch.equal(seed, want_seed) and torch.equal(dist, want_dist)
    assert float(want_dist.max()) > 0  # (the comparison can fail: uncovered texels exist)
    with pytest.raises(ValueError, match="2048"):
        jump_flood_triton(torch.ones((2049, 8), dtype=torch.bool, device=_TRITON_DEVICE))
