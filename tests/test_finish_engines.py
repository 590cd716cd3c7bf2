"""The finishing engines wired into pipeline.finish: the CPU path (the reference) and the PyTorch engine
(torch_clean, torch_decimate, gpu.bake), forced on CPU tensors here; the ``gpu``-marked test runs the same on
CUDA with the dense surface left on the device (skipped without one)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import meshforge
from meshforge.backends import load_backend
from meshforge.config import FinishingConfig, PipelineConfig
from meshforge.errors import InputError
from meshforge.eval.metrics import chamfer_distance, closest_points, sample_colors, sample_surface
from meshforge.io.meshes import load_mesh
from meshforge.pipeline import finish, reconstruct
from meshforge.raw import dumps_raw, loads_raw, portable
from meshforge.types import DeviceMesh, Mesh, host_mesh

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

#: small budgets: each finish is about a second on 2 cores
SMALL = PipelineConfig().with_options(resolution=96, faces=3000, texture_size=256)


def engine_cfg(engine: str, base: PipelineConfig = SMALL) -> PipelineConfig:
    return dataclasses.replace(base, finish=FinishingConfig(engine=engine))


@pytest.fixture(scope="module")
def chair_raw(shared_images):
    """The chair reconstructed once (inflate backend, 96³ grid), finished by each test."""
    backend = load_backend("inflate")
    image = meshforge.pipeline.as_image(shared_images / "triposr__chair.png", SMALL)
    return reconstruct(image, backend, SMALL)


@pytest.fixture(scope="module")
def chair_results(chair_raw):
    return {engine: finish(chair_raw, engine_cfg(engine)) for engine in ("cpu", "torch")}


def stage_counts(result, name):
    return next(s for s in result.report.to_dict()["stages"] if s["name"] == name)["counts"]


def colour_difference(a: Mesh | object, b: object, n: int = 20_000) -> float:
    """Mean absolute sRGB difference (0–255) of the baked base colour of ``a`` at area-uniform samples and of
    ``b`` at the closest points (each read from its own texture through its own UVs)."""
    samples = sample_surface(a, n, seed=3)
    near = closest_points(b, samples.points)
    ca = sample_colors(a, samples.part, samples.face, samples.bary)[:, :3]
    cb = sample_colors(b, near.part, near.face, near.bary)[:, :3]
    return float(np.abs(ca - cb).mean() * 255.0)


def test_the_report_names_the_engine_and_device_of_each_stage(chair_results):
    from meshforge.devices import resolve_device

    # a host surface: the CPU path on the host, the torch engine on the default device (a CUDA one where there is)
    devices = {"cpu": "cpu", "torch": resolve_device("auto")}
    for engine, result in chair_results.items():
        for stage in ("clean", "decimate", "bake"):
            counts = stage_counts(result, stage)
            assert counts["engine"] == engine and counts["device"] == devices[engine], (engine, stage)
    # the torch engine ran torch_clean / torch_decimate (their own count keys) and the torch bake
    assert "rounds" in stage_counts(chair_results["torch"], "decimate")
    # the decimated mesh's checks, computed beside the unwrap for the torch engine, reach the report all the same
    for result in chair_results.values():
        assert {"watertight", "degenerate_faces", "slivers_over_100"} <= stage_counts(result, "decimate").keys()
    assert "rounds" not in stage_counts(chair_results["cpu"], "decimate")


def test_the_torch_bake_counts_the_atlas_texels_never_written_as_the_host_raster_does(chair_results):
    """The torch engine takes the unwrap's ``texels_never_written`` from its bake's own raster (the host does not
    rasterise the atlas again): the same figure as :func:`atlas_quality`'s host raster of the same mesh, up to
    texel centres on a triangle's edge; the bake stage keeps only its own counts."""
    from meshforge.mesh.uv import atlas_quality

    result = chair_results["torch"]
    figure = stage_counts(result, "unwrap")["texels_never_written"]
    host = atlas_quality(result.asset.mesh, 256)["texels_never_written"]
    assert 0.05 < host < 0.95 and figure == pytest.approx(host, abs=2e-3)
    assert "texels_never_written" not in stage_counts(result, "bake")
    assert stage_counts(chair_results["cpu"], "unwrap")["texels_never_written"] is not None


def test_never_written_torch_equals_the_host_definition():
    from meshforge.geometry.raster import never_written
    from meshforge.gpu.bake import never_written_torch

    rng = np.random.default_rng(5)
    for density in (0.0, 0.002, 0.02, 0.3):
        covered = rng.random((97, 130)) < density
        for dilation in (0.0, 1.0, 1.5, 2.0, 3.5):
            want = never_written(covered, dilation)
            got = never_written_torch(torch.from_numpy(covered), dilation).numpy()
            assert np.array_equal(got, want), (density, dilation)


def test_cpu_and_torch_engines_give_valid_close_assets(chair_results, validate):
    glbs = {engine: meshforge.export(r.asset, "glb") for engine, r in chair_results.items()}
    for engine, glb in glbs.items():
        report = validate(glb)
        assert report["errors"] == 0 and report["warnings"] == 0, (engine, report["messages"])
        assert chair_results[engine].asset.mesh.n_faces <= 3000
    cpu, ours = (load_mesh(glbs[e], fmt="glb") for e in ("cpu", "torch"))
    # the bar, 0.05 % of the diagonal, holds: two different decimators (fast-simplification vs
    # parallel QEM rounds) of one cleaned surface, measured 2.2e-4 here (1.9e-5 at 128³ → 20k faces); each is
    # about 2e-4 from the dense surface itself
    assert chamfer_distance(ours, cpu, n_samples=30_000) < 5e-4
    # the baked base colour read on each surface: measured 1.2/255 both ways (0.5/255 at 20k faces, 512²):
    # both bake the same field through the same dense surface; the rest is different atlases, texel grids
    # and low-poly surfaces at 256² texels. 2.5/255 is twice that; a wrong projection or a channel mix-up is
    # tens of levels
    assert colour_difference(ours, cpu) < 2.5
    assert colour_difference(cpu, ours) < 2.5


def test_a_device_surface_finishes_saves_and_exports(chair_raw, tmp_path, validate):
    """A raw whose dense surface is a DeviceMesh (CPU tensors stand in for the GPU here): auto finishes it on
    the CPU path (copied once), torch on its tensors; it saves as .mfraw and exports like a host one."""
    host = host_mesh(chair_raw.surface)
    on_device = chair_raw.replace(
        surface=DeviceMesh(torch.from_numpy(host.vertices), torch.from_numpy(host.faces.astype(np.int64)))
    )
    auto = finish(on_device, engine_cfg("auto"))
    assert stage_counts(auto, "clean")["engine"] == "cpu"  # CPU tensors: the CPU path is the faster one
    ours = finish(on_device, engine_cfg("torch"))
    assert stage_counts(ours, "bake")["engine"] == "torch"
    # the same surface: the same faces as from the host raw
    assert ours.asset.mesh.n_faces == finish(chair_raw, engine_cfg("torch")).asset.mesh.n_faces
    data = dumps_raw(ours.raw)
    back = loads_raw(data)
    assert np.array_equal(back.surface.vertices, host.vertices) and np.array_equal(back.surface.faces, host.faces)
    again = finish(back, engine_cfg("torch"))
    assert validate(meshforge.export(again.asset, "glb"))["errors"] == 0
    assert portable(on_device).attributes.coords.shape[0] > 0  # the voxel volume sampled around the surface


def test_extraction_keeps_a_cuda_surface_only_when_asked():
    from meshforge.config import ExtractConfig
    from meshforge.fields.isosurface import extract

    from .fields.test_isosurface import Sphere

    cfg = ExtractConfig(resolution=24, engine="torch")
    # a CPU grid: a host mesh even when asked (nothing to keep on a device)
    assert isinstance(extract(Sphere(0.3), cfg, on_device=True), Mesh)
    assert isinstance(extract(Sphere(0.3), cfg), Mesh)


def test_a_bad_engine_is_one_line_naming_the_choices(tmp_path):
    with pytest.raises(InputError, match=r"^finish engine must be auto, cpu or torch, got 'gpu'$"):
        PipelineConfig().with_options(finish_engine="gpu")
    path = tmp_path / "c.toml"
    path.write_text('[finish]\nengine = "cuda"\n')
    with pytest.raises(InputError, match="finish engine must be auto, cpu or torch, got 'cuda'"):
        PipelineConfig.load(path)


def test_generate_with_the_torch_engine_saves_a_raw_that_exports(shared_images, tmp_path, validate, capsys):
    from meshforge.cli import main

    out = tmp_path / "out"
    args = ["--resolution", "64", "--faces", "1500", "--texture-size", "128", "--finish-engine", "torch"]
    assert main(["generate", str(shared_images / "triposr__chair.png"), "-o", str(out), "--save-raw", *args]) == 0
    report = (out / "triposr__chair.report.json").read_text()
    assert '"engine": "torch"' in report
    raw = out / "triposr__chair.mfraw"
    assert main(["export", str(raw), "-o", str(tmp_path / "again.glb"), "--faces", "800"]) == 0
    assert validate((tmp_path / "again.glb").read_bytes())["errors"] == 0
    assert main(["export", str(raw), "-o", str(tmp_path / "cpu.glb"), "--finish-engine", "cpu"]) == 0
    assert '"engine": "cpu"' in (tmp_path / "cpu.report.json").read_text()
    err = capsys.readouterr().err
    assert "Traceback" not in err


@pytest.mark.gpu
@needs_cuda
def test_cuda_surface_stays_on_the_device_and_matches_the_cpu_path(chair_raw, validate):
    """The dense surface on CUDA (as a CUDA grid's isosurface or TRELLIS.2's mesh arrive): auto picks torch on
    that device; the result agrees with the CPU path as the CPU-tensor run does."""
    host = host_mesh(chair_raw.surface)
    on_cuda = chair_raw.replace(
        surface=DeviceMesh(torch.from_numpy(host.vertices).cuda(), torch.from_numpy(host.faces.astype(np.int64)).cuda())
    )
    ours = finish(on_cuda, engine_cfg("auto"))
    for stage in ("clean", "decimate", "bake"):
        counts = stage_counts(ours, stage)
        assert counts["engine"] == "torch" and counts["device"].startswith("cuda"), stage
    cpu = finish(chair_raw, engine_cfg("cpu"))
    glbs = [meshforge.export(r.asset, "glb") for r in (ours, cpu)]
    for glb in glbs:
        report = validate(glb)
        assert report["errors"] == 0 and report["warnings"] == 0, report["messages"]
    a, b = (load_mesh(g, fmt="glb") for g in glbs)
    assert chamfer_distance(a, b, n_samples=30_000) < 5e-4
    assert colour_difference(a, b) < 2.5
    assert on_cuda.surface._host is None  # never copied to the host


def test_generate_optimize_and_export_take_the_finish_engine():
    from meshforge.cli import _build_parser
    from meshforge.optimize import OptimizeConfig

    parser = _build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for command in ("generate", "optimize", "export"):
        action = next(a for a in sub.choices[command]._actions if a.dest == "finish_engine")
        assert action.option_strings == ["--finish-engine"] and tuple(action.choices) == ("auto", "cpu", "torch")
        assert "cuda" in action.help.lower() and "(default: " in action.help, command
    # the setting round-trips through both configurations' dicts and TOML
    cfg = PipelineConfig().with_options(finish_engine="torch")
    assert PipelineConfig.from_dict(cfg.to_dict()).finish.engine == "torch"
    assert 'engine = "torch"' in cfg.to_toml().split("[finish]")[1]
    assert OptimizeConfig.from_dict(OptimizeConfig().with_options(finish_engine="cpu").to_dict()).finish.engine == "cpu"


@pytest.mark.gpu
@needs_cuda
def test_cuda_extraction_and_trellis2_meshes_stay_on_the_device():
    from meshforge.backends.trellis2.backend import Trellis2Field
    from meshforge.fields.isosurface import extract_grid_torch

    axis = torch.linspace(-0.5, 0.5, 24)
    grid = 0.3 - torch.sqrt(sum(g**2 for g in torch.meshgrid(axis, axis, axis, indexing="ij")))
    lo, hi = np.full(3, -0.5), np.full(3, 0.5)
    host = extract_grid_torch(grid, lo, hi, 0.0)
    kept = extract_grid_torch(grid.cuda(), lo, hi, 0.0, on_device=True)
    assert isinstance(kept, DeviceMesh) and kept.device.type == "cuda"
    assert np.array_equal(kept.to_mesh().faces, host.faces)
    assert np.abs(kept.to_mesh().vertices - host.vertices).max() < 1e-6

    v = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.0, 0.4], [0.2, -0.3, 0.0]])
    f = torch.tensor([[0, 1, 2]])
    coords, attrs = np.array([[1, 2, 3]]), np.full((1, 6), 0.5, np.float32)
    on_host = Trellis2Field(v, f, coords, attrs, 4).dense_surface()
    on_cuda = Trellis2Field(v.cuda(), f.cuda(), coords, attrs, 4).dense_surface()
    assert isinstance(on_host, Mesh) and isinstance(on_cuda, DeviceMesh) and on_cuda.device.type == "cuda"
    back = on_cuda.to_mesh()
    assert np.allclose(back.vertices, on_host.vertices) and np.array_equal(back.faces, on_host.faces)


def test_optimize_with_the_torch_engine_matches_the_cpu_path(shared_assets, validate):
    """optimize's dense source (a host mesh, its own SurfaceField as the attribute source) on the torch engine:
    the projection onto the source and its textures run in the torch bake."""
    from meshforge.optimize import OptimizeConfig, optimize

    def run(engine: str):
        cfg = OptimizeConfig().with_options(faces=2000, texture_size=256, finish_engine=engine)
        return optimize(shared_assets / "spot.glb", cfg)

    results = {e: run(e) for e in ("cpu", "torch")}
    assert stage_counts(results["torch"], "bake")["engine"] == "torch"
    assert stage_counts(results["cpu"], "bake")["engine"] == "cpu"
    glbs = {e: meshforge.export(r.asset, "glb") for e, r in results.items()}
    for glb in glbs.values():
        report = validate(glb)
        assert report["errors"] == 0 and report["warnings"] == 0, report["messages"]
    a, b = (load_mesh(glbs[e], fmt="glb") for e in ("torch", "cpu"))
    # within the 0.05 % of the diagonal: measured 3.4e-4 (deterministic); base colour 1.0/255 apart
    # (bound 2.5/255 as for the chair)
    assert chamfer_distance(a, b, n_samples=30_000) < 5e-4
    assert colour_difference(a, b) < 2.5


def test_the_inflate_grid_on_a_device_equals_its_host_grid(shared_images):
    """inflate on a CUDA device builds its extraction grid there (InflateGridField); the same values as the host
    grid (checked on CPU tensors), so the torch marching cubes meshes the same surface."""
    from meshforge.backends.inflate import InflateBackend, InflateGridField
    from meshforge.fields.base import DensityGridTensor
    from meshforge.preprocess import prepare

    backend = InflateBackend(device="auto")
    assert backend.device == "cpu" and backend.info()["device"] == "cpu"
    image = meshforge.pipeline.as_image(shared_images / "triposr__chair.png", SMALL)
    field = backend(prepare(image, SMALL.preprocess, backend.input_size))
    assert not isinstance(field, DensityGridTensor)  # the host path: no torch grid, no torch import needed
    on_device = InflateGridField(field, "cpu")
    grid = on_device.density_grid_tensor(48)
    assert isinstance(grid, torch.Tensor) and grid.dtype == torch.float32
    assert np.array_equal(grid.numpy(), field.density_grid(48))
    assert np.array_equal(on_device.color(np.zeros((2, 3), np.float32)), field.color(np.zeros((2, 3), np.float32)))


@pytest.mark.gpu
@needs_cuda
def test_inflate_on_cuda_extracts_and_finishes_on_the_device(shared_images, validate):
    """generate with the weightless backend on CUDA: the grid, the isosurface (a DeviceMesh) and clean,
    decimate and bake run on the GPU (auto engine); the asset matches the CPU run's."""
    from meshforge.backends.inflate import InflateBackend

    image = meshforge.pipeline.as_image(shared_images / "triposr__chair.png", SMALL)
    ours = meshforge.pipeline.run(image, InflateBackend(device="cuda"), engine_cfg("auto"))
    stages = {s["name"]: s["counts"] for s in ours.report.to_dict()["stages"]}
    assert stages["extract"]["on_device"] is True and isinstance(ours.raw.surface, DeviceMesh)
    for stage in ("clean", "decimate", "bake"):
        assert stages[stage]["engine"] == "torch" and stages[stage]["device"].startswith("cuda"), stage
    cpu = meshforge.pipeline.run(image, InflateBackend(device="cpu"), engine_cfg("auto"))
    assert stage_counts(cpu, "clean")["engine"] == "cpu"
    glbs = [meshforge.export(r.asset, "glb") for r in (ours, cpu)]
    for glb in glbs:
        assert validate(glb)["errors"] == 0
    a, b = (load_mesh(g, fmt="glb") for g in glbs)
    assert chamfer_distance(a, b, n_samples=30_000) < 5e-4
    assert colour_difference(a, b) < 2.5


def test_edge_topology_on_tensors_equals_the_numpy_topology(chair_raw):
    """The watertightness check finish makes before decimating, on the device's tensors and on the host."""
    from meshforge.mesh.finish_engine import edge_topology

    host = host_mesh(chair_raw.surface)
    faces = host.faces.copy()
    faces[0] = faces[0, ::-1]  # one face wound against its neighbours: 3 inconsistent edges
    cases = [host.faces, faces, host.faces[10:]]  # closed, one flipped face, open (10 faces removed)
    seen = []
    for f in cases:
        ref = edge_topology(Mesh(host.vertices, f))
        got = edge_topology((torch.from_numpy(host.vertices), torch.from_numpy(f.astype(np.int64))))
        assert got == ref
        seen.append((ref["watertight"], ref["inconsistent_edges"], ref["boundary_edges"] > 0))
    assert seen == [(True, 0, False), (True, 3, False), (False, 0, True)]
