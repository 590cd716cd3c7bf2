"""Benchmark: the PyTorch finishing engine (weld/clean, QEM decimation) on a ~300k-face isosurface → 20k faces.

The surface is the marching-cubes isosurface (meshforge's torch engine, :mod:`meshforge.fields.mc_torch`) of a
smooth procedural density — an ellipsoid body with four lobes and a small-amplitude three-axis sine relief,
plus a few small floating specks for the cleanup to drop — evaluated on the device at ``--resolution``³
(256³ gives ~300k faces). Everything up to the decimated mesh stays on ``--device``; the per-stage wall
times (device-synchronised) are printed as a table, and on CUDA the peak VRAM of the finishing stages (from the
extracted surface on; the density grid is freed first). With ``--cpu-reference`` the CPU path (numpy clean,
fast-simplification) runs on the same surface, and the two results are compared by Chamfer distance; with
``--assets DIR`` every ``.glb`` there is decimated by both engines to each of ``--asset-budgets`` and compared
(the issue's bar: torch vs CPU within 0.05 % of the diagonal).

    python benchmarks/gpu_finish.py --device cuda [--resolution 256] [--faces 20000] [--repeat 3] [--cpu-reference]
    python benchmarks/gpu_finish.py --device cpu --resolution 160   # a sanity run without a GPU
    python benchmarks/gpu_finish.py --device cuda --assets ../shared/data/assets   # + torch vs CPU per asset

``--pipeline`` times the whole :func:`meshforge.pipeline.finish` instead, from the extracted surface left on
``--device`` (a :class:`~meshforge.types.DeviceMesh`) to GLB bytes (:func:`meshforge.export.export`): clean,
decimate, unwrap (xatlas, host), bake (the torch bake through the dense surface on the device, base colour +
metallic-roughness + normal maps) and the GLB writer (PNG encoding included), at ``--faces`` (20k) and
``--texture-size`` (1024²) — the issue's "< 0.5 s from the field to GLB bytes" figure. The colour field is
procedural (a smooth RGB function of position, with ``color_tensor`` on the device, as TripoSR's field);
``--pipeline-engine cpu`` runs the CPU path on the same surface for comparison:

    python benchmarks/gpu_finish.py --pipeline --device cuda [--resolution 256] [--repeat 3] [--json out.json]
    python benchmarks/gpu_finish.py --pipeline --device cpu --resolution 96 --faces 3000 --texture-size 256 --repeat 1

Prints a Markdown table; ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from meshforge.config import CleanConfig, DecimateConfig
from meshforge.fields.mc_torch import extract_closed
from meshforge.mesh.torch_clean import clean_torch
from meshforge.mesh.torch_decimate import decimate_torch
from meshforge.types import Mesh


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def density(resolution: int, device: torch.device, slab: int = 64) -> torch.Tensor:
    """``[R, R, R]`` float32 density over [-1, 1]³ (inside > 0), evaluated ``slab`` x-slices at a time (at 1400³
    the whole grid's temporaries would not fit even an H200; the result alone is 11 GB)."""
    axis = torch.linspace(-1.0, 1.0, resolution, device=device)
    out = torch.empty((resolution, resolution, resolution), dtype=torch.float32, device=device)
    for i in range(0, resolution, slab):
        gx, gy, gz = torch.meshgrid(axis[i : i + slab], axis, axis, indexing="ij")
        x, y, z = gx / 1.15, gy / 1.15, gz / 1.15
        d = 1.0 - torch.sqrt((x / 0.75) ** 2 + (y / 0.5) ** 2 + (z / 0.45) ** 2)  # the body
        for cx, cy, cz in ((0.55, 0.35, 0.2), (-0.55, 0.35, -0.2), (0.2, -0.45, 0.3), (-0.3, -0.4, -0.3)):  # lobes
            d = torch.maximum(d, 0.3 - torch.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / 0.6)
        d = d + 0.04 * torch.sin(15.0 * x) * torch.sin(17.0 * y) * torch.sin(19.0 * z)
        for cx, cy, cz in ((0.9, 0.9, 0.9), (-0.9, 0.85, -0.9), (0.88, -0.9, -0.85)):  # specks
            d = torch.maximum(d, 0.02 - torch.sqrt((gx - cx) ** 2 + (gy - cy) ** 2 + (gz - cz) ** 2))
        out[i : i + slab] = d
    return out


def run_once(resolution: int, faces: int, device: torch.device) -> tuple[dict[str, float], dict[str, object], Mesh]:
    times: dict[str, float] = {}
    t = clock(device)
    grid = density(resolution, device)
    times["field"] = clock(device) - t
    t = clock(device)
    out = extract_closed(grid, np.full(3, -1.0), np.full(3, 1.0), 0.0)
    assert out is not None
    v, f = out
    times["marching_cubes"] = clock(device) - t
    del grid
    if device.type == "cuda":  # the finishing stages' own peak, from the surface on
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t = clock(device)
    cv, cf, clean_counts = clean_torch(v, f, CleanConfig())
    times["clean"] = clock(device) - t
    inner: dict[str, float] = {}
    t = clock(device)
    low, counts = decimate_torch(cv, cf, DecimateConfig(faces=faces), timings=inner)
    times["decimate"] = clock(device) - t
    for k, s in inner.items():
        times[f"decimate.{k}"] = s
    facts = {
        "dense_faces": int(f.shape[0]),
        "cleaned_faces": int(cf.shape[0]),
        "components_dropped": clean_counts["components_dropped"],
        "faces_flipped": clean_counts["faces_flipped"],
        "low_faces": low.n_faces,
        "rounds": counts["rounds"],
        "rejected": counts["rejected"],
        "watertight": counts["watertight"],
        "slivers_over_100": counts["slivers_over_100"],
    }
    if device.type == "cuda":
        facts["finish_peak_vram_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return times, facts, low


def compare_assets(folder: Path, budgets: list[int], device: torch.device) -> list[dict[str, object]]:
    """Each shared asset (flattened, cleaned as ``optimize`` does) decimated by the torch engine on ``device`` and by
    the CPU path, per budget: faces, seconds, Chamfer of each to the source and between the two (rel. diagonal)."""
    from meshforge.eval.metrics import chamfer_distance
    from meshforge.io.meshes import load_mesh
    from meshforge.mesh.clean import clean
    from meshforge.mesh.decimate import decimate
    from meshforge.optimize import OptimizeConfig, flatten

    rows: list[dict[str, object]] = []
    print("\n| asset | faces | budget | torch faces | CPU faces | torch s | CPU s | torch→src | CPU→src | torch↔CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path in sorted(folder.glob("*.glb")):
        source, _ = clean(flatten(load_mesh(path)), OptimizeConfig().clean)
        v = torch.from_numpy(source.vertices).to(device)
        f = torch.from_numpy(source.faces).to(device)
        for budget in budgets:
            if budget >= source.n_faces:
                continue
            t = clock(device)
            ours, counts = decimate_torch(v, f, DecimateConfig(faces=budget))
            t_ours = clock(device) - t
            t = time.perf_counter()
            ref, _ = decimate(source, DecimateConfig(faces=budget))
            t_ref = time.perf_counter() - t
            row = {
                "asset": path.name,
                "faces": source.n_faces,
                "budget": budget,
                "torch_faces": ours.n_faces,
                "cpu_faces": ref.n_faces,
                "torch_s": t_ours,
                "cpu_s": t_ref,
                "chamfer_torch": chamfer_distance(ours, source, n_samples=50_000),
                "chamfer_cpu": chamfer_distance(ref, source, n_samples=50_000),
                "chamfer_between": chamfer_distance(ours, ref, n_samples=50_000),
                "torch_watertight": counts["watertight"],
            }
            rows.append(row)
            chamfers = " | ".join(f"{row[k]:.2e}" for k in ("chamfer_torch", "chamfer_cpu", "chamfer_between"))
            print(
                f"| {path.name} | {source.n_faces:,} | {budget:,} | {ours.n_faces:,} | {ref.n_faces:,} "
                f"| {t_ours:.3f} | {t_ref:.3f} | {chamfers} |"
            )
    return rows


class ColourField:
    """The attribute field of :func:`density`'s surface: a smooth RGB function of position (sRGB, in [0, 1]),
    with ``color_tensor`` on the device (the torch bake samples it there, as TripoSR's field) and the numpy
    ``color``/``material`` of the :class:`~meshforge.fields.base.Field` protocol."""

    iso_level = 0.0

    def __init__(self) -> None:
        self.bbox_min = np.full(3, -1.0, np.float32)
        self.bbox_max = np.full(3, 1.0, np.float32)

    def color_tensor(self, p: torch.Tensor) -> torch.Tensor:
        return (0.5 + 0.45 * torch.sin(3.0 * p + torch.tensor([0.0, 2.0, 4.0], device=p.device))).float()

    def color(self, p: np.ndarray) -> np.ndarray:
        return self.color_tensor(torch.from_numpy(np.asarray(p, np.float32))).numpy()

    def material(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(len(p), np.float32), np.full(len(p), 0.6, np.float32)

    def density(self, p: np.ndarray) -> np.ndarray:  # pragma: no cover - the grid is made by density()
        raise NotImplementedError


def run_pipeline(
    resolution: int, faces: int, texture_size: int, device: torch.device, engine: str
) -> tuple[dict[str, float], dict[str, object]]:
    """One ``pipeline.finish`` from the extracted surface on ``device`` to GLB bytes; seconds per stage."""
    import dataclasses

    import meshforge
    from meshforge.config import FinishingConfig, PipelineConfig
    from meshforge.pipeline import finish
    from meshforge.raw import Raw
    from meshforge.types import DeviceMesh, Report

    cfg = PipelineConfig().with_options(faces=faces, texture_size=texture_size)
    cfg = dataclasses.replace(cfg, finish=FinishingConfig(engine=engine))
    tf0 = clock(device)
    grid = density(resolution, device)
    tf1 = clock(device)
    out = extract_closed(grid, np.full(3, -1.0), np.full(3, 1.0), 0.0)
    assert out is not None
    tf2 = clock(device)
    del grid
    raw = Raw(surface=DeviceMesh(*out), attributes=ColourField(), name="blob", config=cfg.to_dict())
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    report = Report()
    t0 = clock(device)
    result = finish(raw, cfg, report=report)
    t1 = clock(device)
    glb = meshforge.export(result.asset, "glb")
    t2 = time.perf_counter()
    times = {"field": tf1 - tf0, "marching_cubes": tf2 - tf1}
    times.update({s.name: s.seconds for s in report.stages})
    times["glb"] = t2 - t1
    times["total"] = t2 - t0
    times["total_from_field"] = t2 - t0 + (tf2 - tf0)  # the figure: the field evaluated → GLB bytes
    stages = {s.name: s.counts for s in report.stages}
    facts: dict[str, object] = {
        "dense_faces": raw.surface.n_faces,
        "low_faces": result.asset.mesh.n_faces,
        "glb_bytes": len(glb),
        "engine": stages["clean"].get("engine"),
        "device": stages["clean"].get("device"),
        "coverage": stages["bake"].get("coverage"),
        "warnings": list(report.warnings),
        # where the unwrap's time went (pieces' xatlas in the worker processes; the packing) and its atlas
        **{
            f"unwrap_{k}": stages["unwrap"].get(k)
            for k in (
                "pieces",
                "pieces_redone",
                "charts",
                "seconds_charts",
                "seconds_pack",
                "utilisation",
                "stretch",
                "fallback",
            )
        },
    }
    if device.type == "cuda":
        facts["finish_peak_vram_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return times, facts


def main_pipeline(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    run_pipeline(min(args.resolution, 64), 2_000, 256, device, args.pipeline_engine)  # warm-up
    runs = [
        run_pipeline(args.resolution, args.faces, args.texture_size, device, args.pipeline_engine)
        for _ in range(max(1, args.repeat))
    ]
    stages = list(runs[0][0])
    median = {k: statistics.median(r[0][k] for r in runs) for k in stages}
    facts = runs[-1][1]  # the last run's (the first timed one may still compile kernels for the full size)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"pipeline.finish on {device} ({name}), engine {facts['engine']}, torch {torch.__version__}: "
        f"{args.resolution}³ grid, {facts['dense_faces']:,} faces → {facts['low_faces']:,} faces, "
        f"{args.texture_size}² maps, median of {len(runs)}"
    )
    print("\n| stage | median s |\n|---|---:|")
    for k in stages:
        bold = {"total": "**extracted surface → GLB bytes**", "total_from_field": "**field → GLB bytes**"}
        label = bold.get(k, k)
        value = f"**{median[k]:.3f}**" if k in bold else f"{median[k]:.3f}"
        print(f"| {label} | {value} |")
    print()
    if "finish_peak_vram_gb" in facts:
        print(f"peak VRAM of the finishing stages (surface included): {facts['finish_peak_vram_gb']:.2f} GiB")
    for warning in facts["warnings"]:  # type: ignore[attr-defined]
        print(f"warning: {warning}")
    if args.json:
        result = {
            "mode": "pipeline",
            "device": str(device),
            "resolution": args.resolution,
            "faces": args.faces,
            "texture_size": args.texture_size,
            "median_s": median,
            "runs_s": [r[0] for r in runs],
            **facts,
        }
        args.json.write_text(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--faces", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu-reference", action="store_true", help="also run the CPU path and compare")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--assets", type=Path, default=None, help="also compare with the CPU path on these .glb files")
    parser.add_argument("--asset-budgets", default="20000,2000")
    parser.add_argument(
        "--pipeline", action="store_true", help="time pipeline.finish from the device surface to GLB bytes"
    )
    parser.add_argument("--texture-size", type=int, default=1024, help="--pipeline: side of the baked maps")
    parser.add_argument(
        "--pipeline-engine", choices=("torch", "cpu"), default="torch", help="--pipeline: the finishing engine"
    )
    args = parser.parse_args()
    if args.pipeline:
        main_pipeline(args)
        return
    device = torch.device(args.device)
    run_once(min(args.resolution, 64), 2_000, device)  # warm-up: kernels, allocator
    runs = [run_once(args.resolution, args.faces, device) for _ in range(max(1, args.repeat))]
    stages = list(runs[0][0])
    median = {k: statistics.median(r[0][k] for r in runs) for k in stages}
    facts = runs[-1][1]  # the last run's (the first timed one may still compile kernels for the full size)
    low = runs[0][2]
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
        f"torch {torch.__version__}, {args.resolution}³ grid, {facts['dense_faces']:,} faces → budget {args.faces:,}"
    )
    print("\n| stage | median s |\n|---|---:|")
    for k in stages:
        print(f"| {k} | {median[k]:.3f} |")
    total = sum(v for k, v in median.items() if "." not in k)
    print(f"| **field → decimated mesh** | **{total:.3f}** |\n")
    print(json.dumps(facts))
    result: dict[str, object] = {"device": str(device), "resolution": args.resolution, "median_s": median, **facts}
    if device.type == "cuda":
        print(f"peak VRAM of clean + decimate (surface included): {facts['finish_peak_vram_gb']:.2f} GiB")
    if args.cpu_reference:
        from meshforge.eval.metrics import chamfer_distance
        from meshforge.mesh.clean import clean
        from meshforge.mesh.decimate import decimate

        grid = density(args.resolution, torch.device("cpu"))
        v, f = extract_closed(grid, np.full(3, -1.0), np.full(3, 1.0), 0.0)  # type: ignore[misc]
        dense = Mesh(v.numpy(), f.numpy())
        t = time.perf_counter()
        cleaned, _ = clean(dense, CleanConfig())
        t_clean = time.perf_counter() - t
        t = time.perf_counter()
        ref, _ = decimate(cleaned, DecimateConfig(faces=args.faces))
        t_dec = time.perf_counter() - t
        ours_rel = chamfer_distance(low, cleaned, n_samples=50_000)
        ref_rel = chamfer_distance(ref, cleaned, n_samples=50_000)
        between = chamfer_distance(low, ref, n_samples=50_000)
        print(f"CPU path: clean {t_clean:.3f} s, decimate {t_dec:.3f} s → {ref.n_faces:,} faces")
        print(
            f"Chamfer to the dense surface (rel. diagonal): torch {ours_rel:.2e}, CPU {ref_rel:.2e}; "
            f"torch vs CPU {between:.2e}"
        )
        result["cpu_reference"] = {
            "clean_s": t_clean,
            "decimate_s": t_dec,
            "faces": ref.n_faces,
            "chamfer_torch": ours_rel,
            "chamfer_cpu": ref_rel,
            "chamfer_between": between,
        }
    if args.assets:
        budgets = [int(b) for b in args.asset_budgets.split(",")]
        result["assets"] = compare_assets(args.assets, budgets, device)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
