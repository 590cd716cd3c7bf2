"""TripoSR on one GPU: meshforge's implementation against the reference (VAST-AI-Research/TripoSR), per stage.

Both run in one process, on the same FULL-size random weights (the official architecture from
``official_state_dict_manifest.json``, ``torch.manual_seed(0)``, a constant added to the density entry of the
decoder's last bias so the 256³ isosurface of the chair picture is non-empty: about 12 % of a 32³ probe grid
inside, as ``tests/backends/triposr_helpers.py`` does; the decoder initialised as the reference's NeRFMLP
initialises it, so the density is not flat, see :func:`build_random`). Timed stages (median after warm-up, with
``torch.cuda.synchronize``):

1. ``scene_codes``: prepared picture (the reference framing of the chair) → grey composite → network → triplane;
2. ``density_grid``: the density on the 256³ extraction grid;
3. ``marching_cubes``: the isosurface at 25 (ours: :mod:`meshforge.fields.mc_torch` on the GPU; the reference:
   torchmcubes on the GPU);
4. ``vertex_colors``: colours at the vertices and the vertex-coloured mesh on the host (ours: float32 arrays;
   the reference: its ``trimesh.Trimesh``, as its ``extract_mesh`` builds it);

and end to end (the reference: ``model([image])`` + ``extract_mesh(codes, True, 256)`` at its defaults, chunk
8192, float32; ours: the backend's defaults). Peak memory is ``torch.cuda.max_memory_allocated`` with only that
implementation's model on the GPU (weights included).

Also measured: grid-kernel and precision variants (time, density error and mesh distance against float32),
our GPU mesh against our CPU float32 mesh, the reference mesh against ours, and the frame check (the reference
camera's rays, rotated into meshforge's canonical frame, against :attr:`TripoSRBackend.camera`) on the parity
fixture.

The reference is never part of meshforge: fetch it yourself and pass its folder (the one holding ``tsr/``) with
``--reference``; it needs ``omegaconf``, ``einops``, ``transformers`` (4.35.0 for the fixtures' numerics),
``trimesh``, ``imageio`` and ``torchmcubes`` (tatsy/torchmcubes, built with CUDA) importable. Without
``--reference`` only ours is measured.

Usage::

    python benchmarks/triposr_gpu.py --reference /path/to/TripoSR --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from meshforge.backends.triposr import kernels as triposr_kernels  # noqa: E402
from meshforge.backends.triposr.backend import TripoSRBackend, TripoSRField  # noqa: E402
from meshforge.backends.triposr.config import (  # noqa: E402
    TripoSRConfig,
    ViTConfig,
    parse_config,
    resolve_interpolations,
)
from meshforge.backends.triposr.loading import build_model  # noqa: E402
from meshforge.backends.triposr.model import TripoSRModel, resize_condition  # noqa: E402
from meshforge.backends.triposr.preprocess import composite_grey, reference_frame  # noqa: E402
from meshforge.fields.base import grid_axes  # noqa: E402
from meshforge.fields.mc_torch import extract_closed, to_host  # noqa: E402
from meshforge.types import Image, Mesh  # noqa: E402

DEFAULT_SHARED = REPO.parent / "shared" / "fixtures" / "triposr"
LEVEL = 25.0
GIB = 2.0**30


# ------------------------------------------------------------------------------------------------ helpers


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / GIB if torch.cuda.is_available() else float("nan")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` between two device synchronisations; (result, seconds)."""
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t


def median_ms(values: list[float]) -> float:
    return round(1000.0 * statistics.median(values), 3)


def mesh_distance(a: np.ndarray, b: np.ndarray, voxel: float, sample: int = 400_000) -> dict[str, float]:
    """Nearest-vertex distances between two vertex sets, both ways (world units and voxels); at most ``sample``
    query points per side (a fixed random subset), against all vertices of the other side."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(0)

    def one_way(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        pts = src if len(src) <= sample else src[rng.choice(len(src), sample, replace=False)]
        dist, _ = cKDTree(dst).query(pts, workers=-1)
        return np.asarray(dist)

    d_ab, d_ba = one_way(a, b), one_way(b, a)
    return {
        "chamfer_mean": float(0.5 * (d_ab.mean() + d_ba.mean())),
        "max_a_to_b": float(d_ab.max()),
        "max_b_to_a": float(d_ba.max()),
        "chamfer_mean_voxels": float(0.5 * (d_ab.mean() + d_ba.mean()) / voxel),
        "max_voxels": float(max(d_ab.max(), d_ba.max()) / voxel),
        "frac_within_1e-3_voxel": float(((d_ab < 1e-3 * voxel).mean() + (d_ba < 1e-3 * voxel).mean()) / 2),
        "frac_within_0.1_voxel": float(((d_ab < 0.1 * voxel).mean() + (d_ba < 0.1 * voxel).mean()) / 2),
        "vertices_a": len(a),
        "vertices_b": len(b),
    }


def load_architecture(manifest: Path, tiny: Path | None) -> tuple[TripoSRConfig, ViTConfig, dict[str, Any]]:
    """The official architecture from the manifest (or, with ``tiny``, the parity fixture's tiny one, for a
    quick CPU run of this script): (config, ViT config, {"config": raw dict, "dino_config_json", "num_elements"})."""
    if tiny is None:
        man = json.loads(manifest.read_text())
        return parse_config(man["config"], str(manifest)), ViTConfig.from_dict(man["dino_config_json"]), man
    import yaml

    raw = yaml.safe_load((tiny / "config.yaml").read_text())
    dino = json.loads((tiny / "dino_config" / "config.json").read_text())
    cfg = parse_config(resolve_interpolations(raw))
    return cfg, ViTConfig.from_dict(dino), {"config": raw, "dino_config_json": dino, "num_elements": 0}


def prepared_picture(path: Path) -> np.ndarray:
    """The chair as the parity tests prepare it: the reference framing (foreground ratio 0.85) of the RGBA."""
    from PIL import Image as PILImage

    return reference_frame(np.asarray(PILImage.open(path).convert("RGBA")), 0.85)


def build_random(
    cfg: TripoSRConfig,
    vit: ViTConfig,
    framed: np.ndarray,
    *,
    seed: int,
    device: str,
    inside_fraction: float = 0.12,
    density_std: float = 1.0,
) -> tuple[TripoSRModel, dict[str, float]]:
    """Random FULL-size model on ``device``, its density made usable for meshing.

    PyTorch's default initialisation everywhere (``torch.manual_seed(seed)``), except the decoder's Linear
    weights, which get the reference NeRFMLP's own random initialisation (the config's ``weight_init:
    kaiming_uniform``, i.e. ``kaiming_uniform_(nonlinearity="relu")``): with PyTorch's default (a third of the
    variance per layer) the nine-layer SiLU decoder maps every point to nearly the same value (the raw density
    varies by about 1e-5 around its mean), and the level would sit in a flat field where float32 rounding alone
    moves the surface by voxels; with the reference's initialisation it varies by about 0.7, like a trained
    model's density near the surface. Then, as ``tests/backends/triposr_helpers.py``: the decoder's last bias gets
    a constant on its density entry so that ``inside_fraction`` of a 32³ probe grid (float32 network, this
    picture) is inside. With ``density_std > 0`` the density row of the last layer is also scaled so that the raw
    density has that standard deviation on the probe grid (a monotone map: same surface, other steepness).
    """
    torch.manual_seed(seed)
    model = build_model(cfg, vit, device).eval()
    with torch.no_grad():
        for layer in model.decoder.layers:
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
    last = model.decoder.layers[-1]
    assert isinstance(last, torch.nn.Linear) and last.bias is not None
    with torch.inference_mode():
        cond = resize_condition(torch.from_numpy(composite_grey(framed)).to(device), cfg.cond_image_size)
        code = model(cond)[0]
        axis = torch.linspace(-cfg.renderer.radius, cfg.renderer.radius, 32, device=device)
        raw = model.query_grid(code, axis, keys=("density_raw",))["density_raw"].double()
        std0 = float(raw.std())
        gain = density_std / std0 if density_std > 0 else 1.0
        bias0 = float(last.bias[0])
        last.weight[0] *= gain
        raw = bias0 + gain * (raw - bias0)
        level = float(np.log(LEVEL)) - cfg.renderer.density_bias
        shift = level - float(torch.quantile(raw.flatten(), 1.0 - inside_fraction))
        last.bias[0] += shift
    return model, {"density_bias_shift": shift, "raw_density_std_before": std0, "density_row_gain": gain}


# ------------------------------------------------------------------------------------------------- ours


def ours_staged(
    backend: TripoSRBackend, image: Image, resolution: int, peaks: dict[str, float] | None = None
) -> tuple[dict[str, float], Mesh]:
    """One run of our pipeline with a synchronisation after each stage; (seconds per stage, mesh). With ``peaks``,
    also each stage's peak device memory (GiB)."""
    times: dict[str, float] = {}

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        if peaks is not None:
            reset_peak()
        out, times[name] = timed(fn)
        if peaks is not None:
            peaks[name] = peak_gib()
        return out

    field = stage("scene_codes", lambda: backend(image))
    grid = stage("density_grid", lambda: field.density_grid_tensor(resolution))
    out = stage("marching_cubes", lambda: extract_closed(grid, field.bbox_min, field.bbox_max, LEVEL))
    assert out is not None
    mesh = stage("vertex_colors", lambda: _colored_mesh(field, *out))
    return times, mesh


def _colored_mesh(field: TripoSRField, verts: torch.Tensor, faces: torch.Tensor) -> Mesh:
    """Vertex colours on the device, and the mesh on the host: the vertex and face copies (pinned memory, a side
    stream) overlap the colour queries."""
    if not verts.is_cuda:
        v, f = to_host(verts, faces)
        rgb = field.color_tensor(verts).numpy()
        return Mesh(vertices=v, faces=f, colors=np.concatenate([rgb, np.ones_like(rgb[:, :1])], axis=1))
    main = torch.cuda.current_stream()
    copy = torch.cuda.Stream()
    copy.wait_stream(main)
    hv = torch.empty(verts.shape, dtype=verts.dtype, pin_memory=True)
    hf = torch.empty(faces.shape, dtype=faces.dtype, pin_memory=True)
    with torch.cuda.stream(copy):
        hv.copy_(verts, non_blocking=True)
        hf.copy_(faces, non_blocking=True)
    rgb = field.color_tensor(verts)
    rgba = torch.cat([rgb, torch.ones_like(rgb[:, :1])], dim=1)
    hc = torch.empty(rgba.shape, dtype=rgba.dtype, pin_memory=True)
    hc.copy_(rgba, non_blocking=True)
    main.synchronize()
    copy.synchronize()
    return Mesh(vertices=hv.numpy(), faces=hf.numpy(), colors=hc.numpy())


def color_stage_parts(backend: TripoSRBackend, image: Image, resolution: int, runs: int) -> dict[str, Any]:
    """The parts of the last stage: the colour queries, and the mesh copy to the host (pinned and pageable)."""
    with torch.inference_mode():
        field = backend(image)
        mesh = extract_closed(field.density_grid_tensor(resolution), field.bbox_min, field.bbox_max, LEVEL)
        assert mesh is not None
        return {
            "color_query": median_ms([timed(lambda: field.color_tensor(mesh[0]))[1] for _ in range(runs)]),
            "mesh_to_host_pinned": median_ms([timed(lambda: to_host(*mesh))[1] for _ in range(runs)]),
            "mesh_to_host_pageable": median_ms([timed(lambda: [t.cpu() for t in mesh])[1] for _ in range(3)]),
            "mesh_bytes": int(sum(t.numel() * t.element_size() for t in mesh)),
            "color_max_abs_err_vs_fp32": (
                field.color_tensor(mesh[0])
                - field.model.query(field.scene_code, mesh[0][:, [2, 0, 1]].contiguous(), chunk=1 << 19)["rgb"]
            )
            .abs()
            .max()
            .item(),
        }


def ours_end_to_end(backend: TripoSRBackend, image: Image, resolution: int) -> Mesh:
    field = backend(image)
    grid = field.density_grid_tensor(resolution)
    out = extract_closed(grid, field.bbox_min, field.bbox_max, LEVEL)
    assert out is not None
    del grid
    return _colored_mesh(field, *out)


def grid_variants(
    model: TripoSRModel, code: torch.Tensor, resolution: int, runs: int, voxel: float, bbox: tuple[Any, Any]
) -> dict[str, Any]:
    """Density grid by each kernel/precision: median time, density error and mesh distance vs float32."""
    axis = torch.from_numpy(grid_axes(_Box(bbox), resolution)[0]).to(code.device)
    variants: dict[str, Callable[[], torch.Tensor]] = {
        "fp32-reference-path": lambda: model.query_grid(code, axis, chunk=1 << 21)["density"],
        "fp32-split-torch": lambda: model.density_grid_fast(code, axis, precision="fp32", kernel="torch"),
        "bf16-torch": lambda: model.density_grid_fast(code, axis, precision="bf16", kernel="torch"),
        "fp16-torch": lambda: model.density_grid_fast(code, axis, precision="fp16", kernel="torch"),
    }
    if triposr_kernels.triton_grid_supported(model):
        for prec in ("fp32", "tf32", "bf16", "fp16"):
            variants[f"{prec}-triton"] = lambda p=prec: model.density_grid_fast(  # type: ignore[misc]
                code, axis, precision=p, kernel="triton", fast_act=False
            )
        for prec in ("bf16", "fp16"):
            variants[f"{prec}-triton-fastsilu"] = lambda p=prec: model.density_grid_fast(  # type: ignore[misc]
                code, axis, precision=p, kernel="triton", fast_act=True
            )
    results: dict[str, Any] = {}
    ref_grid: torch.Tensor | None = None
    ref_verts: np.ndarray | None = None
    for name, fn in variants.items():
        try:
            with torch.inference_mode():
                fn()  # compile / warm up
                times = []
                for _ in range(runs):
                    grid, t = timed(fn)
                    times.append(t)
                out = extract_closed(grid, bbox[0], bbox[1], LEVEL)
            assert out is not None
            verts = out[0].cpu().numpy()
            entry: dict[str, Any] = {"median_ms": median_ms(times), "faces": int(out[1].shape[0])}
            if ref_grid is None:
                ref_grid, ref_verts = grid, verts
            else:
                rel = ((grid - ref_grid).abs() / ref_grid.abs().clamp_min(1e-6)).max().item()
                near = (ref_grid - LEVEL).abs() < 5.0
                entry["density_max_rel_err"] = rel
                entry["density_max_rel_err_near_level"] = (
                    ((grid - ref_grid).abs() / ref_grid.abs())[near].max().item() if bool(near.any()) else None
                )
                assert ref_verts is not None
                entry["mesh_vs_fp32"] = mesh_distance(verts, ref_verts, voxel)
            results[name] = entry
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        print(f"  grid {name}: {results[name]}", flush=True)
    return results


class _Box:
    def __init__(self, bbox: tuple[Any, Any]) -> None:
        self.bbox_min, self.bbox_max = np.asarray(bbox[0]), np.asarray(bbox[1])


def triton_configs(model: TripoSRModel, code: torch.Tensor, resolution: int, runs: int) -> dict[str, Any]:
    """Time the fused kernel's launch settings; leaves the fastest in ``TRITON_GRID_CONFIG``."""
    if not triposr_kernels.triton_grid_supported(model):
        return {"error": "Triton not available"}
    axis = torch.linspace(-model.renderer.radius, model.renderer.radius, resolution, device=code.device)
    default = dict(triposr_kernels.TRITON_GRID_CONFIG)
    candidates = [
        default,
        {"BLOCK": 128, "J_PER": 1, "num_warps": 4, "num_stages": 1},
        {"BLOCK": 128, "J_PER": 1, "num_warps": 8, "num_stages": 3},
        {"BLOCK": 64, "J_PER": 1, "num_warps": 4, "num_stages": 3},
        {"BLOCK": 256, "J_PER": 1, "num_warps": 8, "num_stages": 1},
        {"BLOCK": 128, "J_PER": 4, "num_warps": 4, "num_stages": 1},
        {"BLOCK": 128, "J_PER": 8, "num_warps": 8, "num_stages": 1},
        {"BLOCK": 64, "J_PER": 4, "num_warps": 4, "num_stages": 1},
        {"BLOCK": 256, "J_PER": 2, "num_warps": 8, "num_stages": 1},
    ]
    out: dict[str, Any] = {}
    best: tuple[float, dict[str, int]] | None = None
    ref_grid: torch.Tensor | None = None
    for cand in candidates:
        key = "B{BLOCK}-J{J_PER}-w{num_warps}-s{num_stages}".format(**cand)
        if key in out:
            continue
        triposr_kernels.TRITON_GRID_CONFIG.clear()
        triposr_kernels.TRITON_GRID_CONFIG.update(cand)
        try:
            with torch.inference_mode():
                fn = lambda: model.density_grid_fast(  # noqa: E731
                    code, axis, precision="fp16", kernel="triton", fast_act=True
                )
                grid = fn()
                if ref_grid is None:
                    ref_grid = grid
                elif not torch.equal(grid, ref_grid):  # the launch settings must not change the numbers much
                    diff = ((grid - ref_grid).abs() / ref_grid.abs()).max().item()
                    assert diff < 1e-3, f"grid differs by {diff:.2e}"
                t = median_ms([timed(fn)[1] for _ in range(runs)])
            out[key] = t
            if best is None or t < best[0]:
                best = (t, cand)
        except Exception as exc:
            out[key] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        print(f"  triton {key}: {out[key]}", flush=True)
    triposr_kernels.TRITON_GRID_CONFIG.clear()
    triposr_kernels.TRITON_GRID_CONFIG.update(best[1] if best else default)
    out["chosen"] = dict(triposr_kernels.TRITON_GRID_CONFIG)
    return out


def encoder_variants(backend: TripoSRBackend, image: Image, runs: int, resolution: int, voxel: float) -> dict[str, Any]:
    """Scene codes under each network precision: time, error against float32, and the float32-grid mesh's
    distance to the all-float32 mesh."""
    out: dict[str, Any] = {}
    ref: torch.Tensor | None = None
    ref_verts: np.ndarray | None = None
    saved = backend.precision, backend.grid_precision
    for variant in ("fp32", "tf32", "bf16", "fp16", "fp16+graph"):
        prec = variant.split("+")[0]
        try:
            backend.cuda_graph = variant.endswith("+graph")
            backend.precision, backend.grid_precision = prec, "fp32"
            backend(image)
            times = []
            for _ in range(runs):
                field, t = timed(lambda: backend(image))
                times.append(t)
            code = field.scene_code
            entry: dict[str, Any] = {"median_ms": median_ms(times)}
            mesh = extract_closed(field.density_grid_tensor(resolution), field.bbox_min, field.bbox_max, LEVEL)
            assert mesh is not None
            verts = mesh[0].cpu().numpy()
            if ref is None:
                ref, ref_verts = code, verts
            else:
                assert ref_verts is not None
                entry["scene_code_max_abs_err"] = (code - ref).abs().max().item()
                entry["scene_code_rel_rms_err"] = ((code - ref).norm() / ref.norm()).item()
                entry["mesh_vs_fp32"] = mesh_distance(verts, ref_verts, voxel)
            if variant.endswith("+graph"):
                eager = out.get(prec, {}).get("_code")
                entry["equal_to_eager"] = bool(eager is not None and torch.equal(eager, code))
            entry["_code"] = code
            out[variant] = entry
        except Exception as exc:
            out[variant] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        print(f"  encoder {variant}: { {k: v for k, v in out[variant].items() if k != '_code'} }", flush=True)
    backend.precision, backend.grid_precision = saved
    backend.cuda_graph, backend._graph = False, None
    for entry in out.values():
        entry.pop("_code", None)
    return out


# -------------------------------------------------------------------------------------------- reference


def import_reference(folder: Path, dino: dict[str, Any], tmp: Path) -> Any:
    """Import the reference's ``tsr`` package from ``folder`` (not vendored), with two run-time shims: a stub
    ``rembg`` (imported by ``tsr.utils``, used only for background removal, which is not run) and a local
    ``config.json`` for its DINO tokenizer (it always asks the Hub)."""
    sys.path.insert(0, str(folder))
    sys.modules.setdefault("rembg", types.ModuleType("rembg"))
    cfg_path = tmp / "dino_config.json"
    cfg_path.write_text(json.dumps(dino))
    import tsr.models.tokenizers.image as tokenizer_module
    import tsr.system

    tokenizer_module.hf_hub_download = lambda repo_id, filename, **_: str(cfg_path)  # type: ignore[attr-defined]
    return tsr.system


def reference_staged(ref: Any, framed: np.ndarray, resolution: int, device: str) -> tuple[dict[str, float], Any]:
    """The reference's ``forward`` and ``extract_mesh`` steps, timed one by one (its own objects and calls)."""
    import PIL.Image
    import trimesh
    from tsr.utils import scale_tensor

    times: dict[str, float] = {}
    radius = ref.renderer.cfg.radius
    with torch.no_grad():
        codes, times["scene_codes"] = timed(lambda: ref([PIL.Image.fromarray(composite_grey(framed))], device=device))
        ref.set_marching_cubes_resolution(resolution)
        helper = ref.isosurface_helper
        code = codes[0]

        def grid() -> torch.Tensor:
            pts = scale_tensor(helper.grid_vertices.to(device), helper.points_range, (-radius, radius))
            return ref.renderer.query_triplane(ref.decoder, pts, code)["density_act"]

        density, times["density_grid"] = timed(grid)

        def march() -> tuple[torch.Tensor, torch.Tensor]:
            v, f = helper(-(density - LEVEL))
            return scale_tensor(v, helper.points_range, (-radius, radius)), f

        (v_pos, faces), times["marching_cubes"] = timed(march)

        def color() -> tuple[np.ndarray, ...]:
            rgb = ref.renderer.query_triplane(ref.decoder, v_pos, code)["color"]
            return v_pos.cpu().numpy(), faces.cpu().numpy(), rgb.cpu().numpy()

        arrays, query = timed(color)
        mesh, build = timed(lambda: trimesh.Trimesh(vertices=arrays[0], faces=arrays[1], vertex_colors=arrays[2]))
        times["vertex_colors"] = query + build
        times["of_which_trimesh"] = build
    return times, mesh


def reference_end_to_end(ref: Any, framed: np.ndarray, resolution: int, device: str) -> Any:
    import PIL.Image

    with torch.no_grad():
        codes = ref([PIL.Image.fromarray(composite_grey(framed))], device=device)
        return ref.extract_mesh(codes, True, resolution=resolution)[0]


# ---------------------------------------------------------------------------------------- frame check


def frame_check(fixture: Path) -> dict[str, Any]:
    """The rotation native → canonical and the input camera, on the parity fixture (CPU, float32).

    1. The reference camera of the input view (its renderer's view 0: azimuth 0, elevation 0, distance 1.9,
       fov 40°) gives one ray per pixel in the native frame; rotated by ``ROTATION``, each ray must start at
       ``backend.camera``'s centre (0, 0, 1.9) and project, through meshforge's perspective projection, onto its
       own pixel centre (column → canonical +X, row → canonical −Y).
    2. The silhouette of our extracted mesh (canonical frame, closed) seen from ``backend.camera`` must match the
       silhouette of the reference's own 64³ mesh (native frame) projected with the reference camera model
       (pixel column ∝ native y, row ∝ −native z, depth along −x), checked against its rays in step 1.
    """
    from meshforge.backends.triposr.render import spherical_camera_rays
    from meshforge.config import ExtractConfig
    from meshforge.eval.render import project, silhouette
    from meshforge.fields.isosurface import extract
    from meshforge.geometry.raster import rasterize

    rot = TripoSRBackend.ROTATION
    camera = TripoSRBackend.camera
    size = 96
    rays_o, rays_d = spherical_camera_rays(1, 0.0, camera.distance, camera.fov_deg, size, size)
    o = rays_o[0].reshape(-1, 3).double().numpy()
    d = rays_d[0].reshape(-1, 3).double().numpy()
    rows, cols = np.mgrid[0:size, 0:size]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    on_ray = (o + 1.3 * d) @ rot.T  # canonical points on every pixel's ray
    xy, _ = project(on_ray, size, camera)
    focal = 0.5 * size / np.tan(np.radians(camera.fov_deg) / 2)

    def native_pixels(p: np.ndarray) -> np.ndarray:
        depth = camera.distance - p[:, 0]
        return np.stack([size / 2 + focal * p[:, 1] / depth, size / 2 - focal * p[:, 2] / depth], axis=1)

    result: dict[str, Any] = {
        "camera_centre_canonical": (o[0] @ rot.T).round(6).tolist(),
        "ray_pixel_error_canonical_projection_px": float(np.abs(xy - centres).max()),
        "ray_pixel_error_native_model_px": float(np.abs(native_pixels(o + 1.3 * d) - centres).max()),
        "picture_right_is": "canonical +X (native +y)",
        "picture_up_is": "canonical +Y (native +z)",
        "towards_camera_is": "canonical +Z (native +x)",
    }
    expected = np.load(fixture / "expected.npz")
    backend = TripoSRBackend(weights=str(fixture), device="cpu")
    field = backend(Image(rgba=expected["resized_foreground_rgba"], name="chair", has_alpha=True))
    ours = extract(field, ExtractConfig(resolution=64, engine="torch"))
    ref_v = expected["mesh_vertices"].astype(np.float64)
    ref_sil = rasterize(native_pixels(ref_v)[expected["mesh_faces"]], size, size).covered
    our_sil = silhouette(ours, camera, size)
    mask = np.asarray(expected["resized_foreground_rgba"])[..., 3] > 127
    result["silhouette_iou_ours_vs_reference_mesh"] = float((our_sil & ref_sil).sum() / (our_sil | ref_sil).sum())
    result["silhouette_pixels"] = [int(our_sil.sum()), int(ref_sil.sum())]
    result["note"] = (
        "tiny random fixture weights: the shape is unrelated to the chair, so the chair mask "
        f"({int(mask.sum())} px at {mask.shape[0]}²) cannot be compared; the check is of frames and cameras"
    )
    return result


# ----------------------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", type=Path, default=None, help="folder holding the reference's tsr/ package")
    ap.add_argument("--manifest", type=Path, default=DEFAULT_SHARED / "official_state_dict_manifest.json")
    ap.add_argument("--image", type=Path, default=DEFAULT_SHARED / "input.png", help="RGBA picture (the chair)")
    ap.add_argument("--fixture", type=Path, default=DEFAULT_SHARED, help="parity fixture folder (frame check)")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--reference-runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--density-std", type=float, default=0.0, help="rescale the raw density to this std on the probe grid (0: no)"
    )
    ap.add_argument("--skip-cpu", action="store_true", help="skip our CPU float32 mesh (slow)")
    ap.add_argument("--skip-variants", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--device", default="cuda", help="cuda (the benchmark); cpu only to try the script out")
    ap.add_argument(
        "--cuda-graph",
        choices=("auto", "on", "off"),
        default="auto",
        help="ours: replay the network from a CUDA graph (auto: when measured faster and bit-identical)",
    )
    ap.add_argument("--tiny", action="store_true", help="the fixture's tiny architecture (script check only)")
    args = ap.parse_args()
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    res = args.resolution
    cfg, vit, man = load_architecture(args.manifest, args.fixture if args.tiny else None)
    framed = prepared_picture(args.image)
    image = Image(rgba=framed, name="chair", has_alpha=True)
    report: dict[str, Any] = {
        "machine": {
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads(),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        },
        "setup": {
            "resolution": res,
            "warmup": args.warmup,
            "runs": args.runs,
            "reference_runs": args.reference_runs,
            "image": f"{args.image.name}, reference framing 0.85 → {framed.shape[1]}×{framed.shape[0]} RGBA",
            "parameters": man["num_elements"],
        },
    }
    t_start = time.time()

    # ---- the model and its weights
    model, weights_info = build_random(cfg, vit, framed, seed=args.seed, device=device, density_std=args.density_std)
    report["setup"].update(weights_info)
    shift = weights_info["density_bias_shift"]
    voxel = 2 * cfg.renderer.radius / (res - 1)
    bbox = (np.full(3, -cfg.renderer.radius, np.float32), np.full(3, cfg.renderer.radius, np.float32))
    print(f"model ready ({time.time() - t_start:.1f} s), shift {shift:.4f}", flush=True)

    # ---- ours: variants
    backend = TripoSRBackend.from_model(model)
    report["ours_config"] = {
        "precision": backend.precision,
        "grid_precision": backend.grid_precision,
        "max_vram_gib": backend.max_vram_bytes / GIB if backend.max_vram_bytes else None,
        "triton": triposr_kernels.triton_grid_supported(model),
    }
    if not args.skip_variants:
        report["triton_configs"] = triton_configs(model, backend(image).scene_code, res, args.runs)
        report["encoder_variants"] = encoder_variants(backend, image, args.runs, res, voxel)
        with torch.inference_mode():
            backend.precision = "fp32"
            code32 = backend(image).scene_code
            backend.precision = report["ours_config"]["precision"]
        report["grid_variants"] = grid_variants(model, code32, res, args.runs, voxel, bbox)
    report["ours_config"]["triton_grid_config"] = dict(triposr_kernels.TRITON_GRID_CONFIG)
    graph_entry = report.get("encoder_variants", {}).get("fp16+graph", {})
    eager_entry = report.get("encoder_variants", {}).get("fp16", {})
    use_graph = args.cuda_graph == "on" or (
        args.cuda_graph == "auto"
        and backend.precision == "fp16"
        and graph_entry.get("equal_to_eager", False)
        and graph_entry.get("median_ms", 1e9) < 0.95 * eager_entry.get("median_ms", 0.0)
    )
    backend.cuda_graph = bool(use_graph and device.startswith("cuda"))
    report["ours_config"]["cuda_graph"] = backend.cuda_graph

    # ---- ours: staged and end to end
    for _ in range(args.warmup):
        ours_end_to_end(backend, image, res)
    stages = [ours_staged(backend, image, res)[0] for _ in range(args.runs)]
    stage_peaks: dict[str, float] = {}
    ours_staged(backend, image, res, stage_peaks)
    report["ours_vertex_colors_parts_ms"] = color_stage_parts(backend, image, res, args.runs)
    reset_peak()
    e2e = [timed(lambda: ours_end_to_end(backend, image, res))[1] for _ in range(args.runs)]
    peak = peak_gib()
    ours_mesh = ours_end_to_end(backend, image, res)
    report["ours"] = {
        "fp32_fallbacks": backend.fp32_fallbacks,
        "stages_ms": {k: median_ms([s[k] for s in stages]) for k in stages[0]},
        "end_to_end_ms": median_ms(e2e),
        "end_to_end_all_ms": [round(1000 * t, 3) for t in e2e],
        "peak_vram_gib": peak,
        "stage_peak_vram_gib": stage_peaks,
        "weights_gib": sum(p.numel() * p.element_size() for p in model.parameters()) / GIB,
        "vertices": len(ours_mesh.vertices),
        "faces": len(ours_mesh.faces),
    }
    print(f"ours: {report['ours']}", flush=True)
    # float32 everything on the GPU (the CPU path's arithmetic)
    backend32 = TripoSRBackend.from_model(model, precision="fp32", grid_precision="fp32")
    with torch.inference_mode():
        f32 = ours_end_to_end(backend32, image, res)
    report["ours_gpu_default_vs_gpu_fp32"] = mesh_distance(ours_mesh.vertices, f32.vertices, voxel)

    # ---- the reference
    model.to("cpu")
    reset_peak()
    ref_mesh = None
    if args.reference is not None:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                system = import_reference(args.reference.resolve(), man["dino_config_json"], Path(tmp))
                from omegaconf import OmegaConf

                ref_cfg = OmegaConf.create(man["config"])
                OmegaConf.resolve(ref_cfg)  # as its from_pretrained does
                with torch.device(device):
                    ref = system.TSR(ref_cfg)
                ref.load_state_dict(model.state_dict(), strict=True)
                ref.eval()
                ref.renderer.set_chunk_size(8192)  # run.py's default
                import torchmcubes

                report["reference_setup"] = {
                    "folder": str(args.reference),
                    "transformers": __import__("transformers").__version__,
                    "torchmcubes": getattr(torchmcubes, "__file__", "?"),
                    "chunk_size": 8192,
                    "dtype": "float32",
                }
                for _ in range(min(args.warmup, 1)):
                    reference_end_to_end(ref, framed, res, device)
                rstages = [reference_staged(ref, framed, res, device)[0] for _ in range(args.reference_runs)]
                reset_peak()
                re2e = []
                for _ in range(args.reference_runs):
                    ref_mesh, t = timed(lambda: reference_end_to_end(ref, framed, res, device))
                    re2e.append(t)
                rstage_ms = {k: median_ms([s[k] for s in rstages]) for k in rstages[0]}
                report["reference"] = {
                    "stages_ms": {k: v for k, v in rstage_ms.items() if not k.startswith("of_which")},
                    "vertex_colors_of_which_trimesh_ms": rstage_ms["of_which_trimesh"],
                    "end_to_end_ms": median_ms(re2e),
                    "end_to_end_all_ms": [round(1000 * t, 3) for t in re2e],
                    "peak_vram_gib": peak_gib(),
                    "vertices": len(ref_mesh.vertices),
                    "faces": len(ref_mesh.faces),
                }
                print(f"reference: {report['reference']}", flush=True)
                del ref
                reset_peak()
        except Exception as exc:
            report["reference_error"] = traceback.format_exc(limit=3)
            print(f"reference failed: {exc}", flush=True)
    if "reference" in report:
        ro, rr = report["ours"], report["reference"]
        report["speedup"] = {
            "end_to_end": rr["end_to_end_ms"] / ro["end_to_end_ms"],
            "end_to_end_without_reference_trimesh": (rr["end_to_end_ms"] - rr["vertex_colors_of_which_trimesh_ms"])
            / ro["end_to_end_ms"],
            **{k: rr["stages_ms"][k] / ro["stages_ms"][k] for k in ro["stages_ms"]},
        }
        # the reference mesh (native frame) in the canonical frame, against our float32 GPU mesh
        ref_canonical = np.asarray(ref_mesh.vertices, np.float64) @ TripoSRBackend.ROTATION.T
        from scipy.spatial import cKDTree

        d, _ = cKDTree(f32.vertices).query(ref_canonical, workers=-1)
        report["reference_vs_ours_fp32"] = {
            "reference_vertices_to_ours_max": float(d.max()),
            "reference_vertices_to_ours_max_voxels": float(d.max() / voxel),
            "reference_vertices_within_5e-5": float((d <= 5e-5).mean()),
        }

    # ---- our CPU float32 mesh
    if not args.skip_cpu:
        t = time.time()
        cpu_backend = TripoSRBackend.from_model(model)
        cpu_field = cpu_backend(image)
        from meshforge.config import ExtractConfig
        from meshforge.fields.isosurface import extract

        cpu_grid = cpu_field.density_grid_tensor(res)
        cpu_verts = extract_closed(cpu_grid, cpu_field.bbox_min, cpu_field.bbox_max, LEVEL)[0].numpy()  # type: ignore[index]
        report["ours_cpu_fp32"] = {"seconds": time.time() - t, "vertices": len(cpu_verts)}
        # the same marching cubes on both sides: the distances measure the arithmetic alone
        report["ours_gpu_default_vs_cpu_fp32"] = mesh_distance(ours_mesh.vertices, cpu_verts, voxel)
        report["ours_gpu_fp32_vs_cpu_fp32"] = mesh_distance(f32.vertices, cpu_verts, voxel)
        # and the CPU pipeline's own extraction (scikit-image) against our GPU marching cubes on the same grid
        sk = extract(cpu_field, ExtractConfig(resolution=res, engine="skimage"))
        report["cpu_torch_mc_vs_cpu_skimage"] = mesh_distance(cpu_verts, sk.vertices, voxel)
        print(f"cpu: {report['ours_cpu_fp32']}", flush=True)

    # ---- frames
    try:
        report["frame_check"] = frame_check(args.fixture)
    except Exception:
        report["frame_check"] = {"error": traceback.format_exc(limit=3)}
    report["total_seconds"] = time.time() - t_start

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "triposr_gpu.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (args.out / "triposr_gpu.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(r: dict[str, Any]) -> str:
    """The summary table of a report."""
    m = r["machine"]
    lines = [
        "# TripoSR on one GPU: meshforge vs the reference",
        "",
        f"{m['gpu']}, torch {m['torch']} (CUDA {m['cuda']}), {r['setup']['resolution']}³ grid, chair picture, "
        f"FULL-size random weights ({r['setup']['parameters']:,} parameters; decoder initialised as the reference's "
        f"NeRFMLP, density bias shifted by {r['setup']['density_bias_shift']:.4g}, see `build_random`); "
        f"medians of {r['setup']['runs']} runs "
        f"(reference: {r['setup']['reference_runs']}) after warm-up. Written by `benchmarks/triposr_gpu.py`.",
        "",
    ]
    ours, ref = r.get("ours"), r.get("reference")
    if ours:
        lines += ["| stage | reference (ms) | ours (ms) | speed-up |", "|---|---:|---:|---:|"]
        rows = [(k, ref["stages_ms"][k] if ref else None, v) for k, v in ours["stages_ms"].items()]
        rows.append(("**end to end**", ref["end_to_end_ms"] if ref else None, ours["end_to_end_ms"]))
        for k, rv, v in rows:
            ratio = f"{rv / v:.1f}×" if rv is not None else "–"
            lines.append(f"| {k} | {rv if rv is not None else '–'} | {v} | {ratio} |")
        lines += [
            "",
            f"Peak VRAM (`max_memory_allocated`, weights included): ours {ours['peak_vram_gib']:.2f} GiB "
            f"(weights {ours['weights_gib']:.2f} GiB)"
            + (f", reference {ref['peak_vram_gib']:.2f} GiB." if ref else "."),
            (
                f"Of the reference's vertex_colours stage, {ref['vertex_colours_of_which_trimesh_ms']} ms is its "
                "`trimesh.Trimesh(process=True)` (merging vertices on the CPU); without it the reference takes "
                f"{ref['end_to_end_ms'] - ref['vertex_colours_of_which_trimesh_ms']:.1f} ms end to end "
                f"({(ref['end_to_end_ms'] - ref['vertex_colours_of_which_trimesh_ms']) / ours['end_to_end_ms']:.1f}× "
                "ours)."
                if ref
                else ""
            ),
            "Peak VRAM per stage of ours (GiB): "
            + ", ".join(f"{k} {v:.2f}" for k, v in ours.get("stage_peak_vram_gib", {}).items())
            + ".",
            f"Mesh: ours {ours['vertices']} vertices / {ours['faces']} faces (closed)"
            + (f"; reference {ref['vertices']} / {ref['faces']} (open at the box)." if ref else "."),
            f"Ours: precision {r['ours_config']['precision']}, grid {r['ours_config']['grid_precision']}, "
            f"CUDA graph {r['ours_config'].get('cuda_graph')}, Triton {r['ours_config']['triton_grid_config']}.",
            "",
        ]
    if r.get("reference_error"):
        lines += ["Reference failed:", "", "```", r["reference_error"], "```", ""]
    for key, title in (
        ("ours_gpu_default_vs_gpu_fp32", "ours GPU default vs ours GPU float32"),
        ("ours_gpu_default_vs_cpu_fp32", "ours GPU default vs ours CPU float32"),
        ("ours_gpu_fp32_vs_cpu_fp32", "ours GPU float32 vs ours CPU float32"),
        ("cpu_torch_mc_vs_cpu_skimage", "CPU float32 grid: our marching cubes vs scikit-image"),
    ):
        if key in r:
            d = r[key]
            lines.append(
                f"- {title}: Chamfer (mean NN) {d['chamfer_mean_voxels']:.2e} voxel, max {d['max_voxels']:.3f} voxel, "
                f"{100 * d['frac_within_1e-3_voxel']:.1f} % / {100 * d['frac_within_0.1_voxel']:.1f} % of vertices "
                "within 1e-3 / 0.1 voxel"
            )
    if "reference_vs_ours_fp32" in r:
        d = r["reference_vs_ours_fp32"]
        lines.append(
            f"- reference vertices → ours (float32): max {d['reference_vertices_to_ours_max']:.2e} "
            f"({100 * d['reference_vertices_within_5e-5']:.2f} % within 5e-5)"
        )
    if "grid_variants" in r:
        lines += ["", "| density grid variant | ms | max rel. err | mesh vs fp32: mean / max (voxel) |"]
        lines += ["|---|---:|---:|---:|"]
        for k, v in r["grid_variants"].items():
            if "error" in v:
                lines.append(f"| {k} | error: {v['error'][:80]} | | |")
                continue
            mv = v.get("mesh_vs_fp32")
            err = v.get("density_max_rel_err")
            lines.append(
                f"| {k} | {v['median_ms']} | {f'{err:.1e}' if err is not None else 'ref'} | "
                + (f"{mv['chamfer_mean_voxels']:.1e} / {mv['max_voxels']:.2f} |" if mv else "– |")
            )
    if "encoder_variants" in r:
        lines += ["", "| network precision | ms | scene code rel. RMS err | mesh vs fp32: mean / max (voxel) |"]
        lines += ["|---|---:|---:|---:|"]
        for k, v in r["encoder_variants"].items():
            if "error" in v:
                lines.append(f"| {k} | error: {v['error'][:80]} | | |")
                continue
            e, mv = v.get("scene_code_rel_rms_err"), v.get("mesh_vs_fp32")
            lines.append(
                f"| {k} | {v['median_ms']} | {f'{e:.1e}' if e is not None else 'ref'} | "
                + (f"{mv['chamfer_mean_voxels']:.1e} / {mv['max_voxels']:.2f} |" if mv else "– |")
            )
    if "frame_check" in r:
        lines += ["", "Frame check (parity fixture): " + json.dumps(r["frame_check"], default=float)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
