"""The PyTorch cleanup (mesh/torch_clean.py) against the CPU reference path (mesh/clean.py).

CPU tensors here; the ``gpu`` tests (skipped without CUDA) run the same on a CUDA device and compare it with
the CPU tensors' result and with the CPU path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meshforge.config import CleanConfig, DecimateConfig
from meshforge.fields.isosurface import extract_grid
from meshforge.geometry.topology import directed_edges, topology
from meshforge.io.meshes import load_mesh
from meshforge.mesh.clean import clean
from meshforge.mesh.torch_clean import clean_torch, union_find
from meshforge.optimize import flatten
from meshforge.types import Mesh

GENERATE = CleanConfig()  # isosurfaces: drop specks, orient outward
OPTIMIZE = CleanConfig(min_component_fraction=0.0, orient=False)  # authored assets: keep parts and winding
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def run_torch(mesh: Mesh, cfg: CleanConfig, device: str = "cpu") -> tuple[Mesh, dict[str, int]]:
    v, f, counts = clean_torch(torch.from_numpy(mesh.vertices).to(device), torch.from_numpy(mesh.faces).to(device), cfg)
    assert v.device.type == f.device.type == torch.device(device).type
    return Mesh(v.cpu().numpy(), f.cpu().numpy().astype(np.int32)), counts


def same_triangles(a: Mesh, b: Mesh) -> bool:
    """Same faces in the same order with the same corner positions (vertex numbering may differ)."""
    ta, tb = a.vertices[a.faces], b.vertices[b.faces]
    return ta.shape == tb.shape and bool(np.array_equal(ta, tb))


def corner_sets(mesh: Mesh) -> np.ndarray:
    """``[F, 3]`` each face's corner positions (12-byte keys) sorted: equal for a face and its flip."""
    corners = np.ascontiguousarray(mesh.vertices[mesh.faces]).view(np.dtype((np.void, 12)))[..., 0]
    return np.sort(corners, axis=1)


def blobs_isosurface() -> Mesh:
    """A marching-cubes (scikit-image) surface of two overlapping balls, a torus and a speck far away, split into
    a triangle soup (every face its own three vertices) with 30 % of the faces flipped, a duplicate face (in the
    other winding) and a face with a repeated vertex."""
    r = 64
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, r),) * 3, indexing="ij")
    balls = np.maximum(0.45 - np.hypot(np.hypot(x + 0.2, y), z), 0.35 - np.hypot(np.hypot(x - 0.3, y), z))
    torus = 0.12 - np.hypot(np.hypot(x, y + 0.55) - 0.3, z - 0.75)
    speck = 0.05 - np.hypot(np.hypot(x - 0.8, y - 0.8), z - 0.8)
    grid = np.maximum(np.maximum(balls, torus), speck).astype(np.float32)
    iso = extract_grid(grid, np.full(3, -1.0), np.full(3, 1.0), 0.0)
    rng = np.random.default_rng(3)
    soup_v = iso.vertices[iso.faces.reshape(-1)]
    soup_f = np.arange(len(soup_v)).reshape(-1, 3)
    soup_f = np.where((rng.random(len(soup_f)) < 0.3)[:, None], soup_f[:, ::-1], soup_f)
    faces = np.concatenate([soup_f, soup_f[5:6, ::-1], [[0, 0, 1]]]).astype(np.int32)
    return Mesh(soup_v, faces)


def inconsistent_manifold_edges(mesh: Mesh) -> int:
    """Manifold edges (two faces) that both faces traverse in the same direction."""
    e = directed_edges(mesh.faces)
    nv = mesh.n_vertices
    key = np.minimum(e[:, 0], e[:, 1]) * nv + np.maximum(e[:, 0], e[:, 1])
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    two = counts[inverse] == 2
    _, dcounts = np.unique((e[:, 0] * nv + e[:, 1])[two], return_counts=True)
    return int((dcounts > 1).sum())


def test_union_find_components_and_parity():
    # two paths 0-1-2-3 (parities 1, 0, 1) and 4-5, and a lone node 6
    a = torch.tensor([2, 1, 0, 5])
    b = torch.tensor([3, 2, 1, 4])
    parity = torch.tensor([True, False, True, True])
    root, flip = union_find(7, a, b, parity)
    assert root.tolist() == [0, 0, 0, 0, 4, 4, 6]
    assert flip.tolist() == [False, True, True, False, False, True, False]


def test_isosurface_soup_cleans_like_the_cpu_path():
    soup = blobs_isosurface()
    cfg = CleanConfig(min_component_fraction=0.01)
    ref, ref_counts = clean(soup, cfg)
    ours, counts = run_torch(soup, cfg)
    assert ref_counts["components_dropped"] == 1 and ref_counts["faces_flipped"] > 0.2 * soup.n_faces
    assert counts == ref_counts
    assert ours.n_vertices == ref.n_vertices
    assert same_triangles(ours, ref)
    topo = topology(ours.vertices, ours.faces)
    assert topo.watertight and topo.inconsistent_edges == 0 and topo.components == 2


@pytest.mark.parametrize("name", ["spot.glb", "CesiumMilkTruck.glb"])
@pytest.mark.parametrize("cfg", [GENERATE, OPTIMIZE], ids=["generate", "optimize"])
def test_shared_assets_clean_like_the_cpu_path(name, cfg, shared_assets):
    mesh = flatten(load_mesh(shared_assets / name))
    ref, ref_counts = clean(mesh, cfg)
    ours, counts = run_torch(mesh, cfg)
    assert counts == ref_counts
    assert ours.n_vertices == ref.n_vertices and same_triangles(ours, ref)


def test_non_orientable_parts_keep_every_manifold_edge_consistent(shared_assets):
    """The birthday cake's parts meet at non-manifold edges whose face pairs contradict each other: no winding
    is consistent everywhere. Same faces and parts as the CPU path; the torch path orients across manifold
    edges first, so no manifold edge is left inconsistent and no more edges overall than on the CPU path."""
    mesh = flatten(load_mesh(shared_assets / "kenney_cakeBirthday.glb"))
    ref, ref_counts = clean(mesh, GENERATE)
    ours, counts = run_torch(mesh, GENERATE)
    assert ours.n_faces == ref.n_faces and counts["components_dropped"] == ref_counts["components_dropped"]
    assert np.array_equal(corner_sets(ours), corner_sets(ref))  # the same faces, in the same order, either winding
    assert inconsistent_manifold_edges(ours) == 0
    ours_topo, ref_topo = topology(ours.vertices, ours.faces), topology(ref.vertices, ref.faces)
    assert ours_topo.inconsistent_edges <= ref_topo.inconsistent_edges


@pytest.mark.gpu
@needs_cuda
def test_cuda_cleans_like_cpu_tensors_and_the_cpu_path(shared_assets):
    for mesh, cfg in [
        (blobs_isosurface(), CleanConfig(min_component_fraction=0.01)),
        (flatten(load_mesh(shared_assets / "CesiumMilkTruck.glb")), GENERATE),
        (flatten(load_mesh(shared_assets / "FlightHelmet.glb")), OPTIMIZE),
    ]:
        on_cpu, cpu_counts = run_torch(mesh, cfg, "cpu")
        on_gpu, gpu_counts = run_torch(mesh, cfg, "cuda")
        ref, ref_counts = clean(mesh, cfg)
        assert gpu_counts == cpu_counts == ref_counts
        assert np.array_equal(on_gpu.vertices, on_cpu.vertices) and np.array_equal(on_gpu.faces, on_cpu.faces)
        assert same_triangles(on_gpu, ref)


@pytest.mark.parametrize(
    ("vertices", "faces", "message"),
    [
        (torch.zeros(4, 2), torch.zeros(1, 3, dtype=torch.long), r"vertices must be \[V, 3\]"),
        (torch.zeros(4, 3), torch.zeros(3, dtype=torch.long), r"faces must be \[F, 3\]"),
        (torch.zeros(4, 3), torch.zeros(1, 3), "faces must hold integer indices"),
        (torch.zeros(4, 3), torch.tensor([[0, 1, 4]]), "face index 4 out of range for 4 vertices"),
        (torch.zeros(4, 3), torch.tensor([[0, -1, 2]]), "face index -1 out of range for 4 vertices"),
    ],
)
def test_bad_surfaces_are_one_line_input_errors(vertices, faces, message):
    from meshforge.errors import InputError
    from meshforge.mesh.torch_decimate import decimate_torch

    with pytest.raises(InputError, match=message) as info:
        clean_torch(vertices, faces, GENERATE)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match=message):
        decimate_torch(vertices, faces, DecimateConfig(faces=0))
