"""Benchmark: the torch bake (:func:`meshforge.gpu.bake.bake`) per stage, on a device, against the CPU bake.

The dense surface is FlightHelmet (94,722 faces, 6 parts, normal and occlusion maps) midpoint-subdivided
once (every triangle → 4, attributes interpolated, textures unchanged: ~379k faces, the same surface); the
low-poly mesh is FlightHelmet decimated to ``--faces`` (20,000) and unwrapped for ``--size`` (1024²) maps
(setup, not timed). Timed, median of ``--repeat`` runs after a warm-up:

* the torch bake on ``--device``, per stage: ``raster`` (UV atlas), ``index`` (the voxel hash of the dense
  triangles, rebuilt every run), ``project`` (rays both ways + closest-point fallback + part agreement),
  ``query`` (the source's attributes), ``normals`` (tangent-space encoding), ``dilate`` (jump flooding and
  the copy of the maps to the host);
* PNG encoding of the maps: sequential and on the pool (:func:`meshforge.export._png.encode_pngs`);
* the CPU bake (:func:`meshforge.mesh.bake.bake`, Embree rays), once, as the reference (``--no-reference``
  skips it), and the agreement of the two on covered texels (mean / max absolute difference, fraction of
  texels differing by more than 2/255 in any channel).

Peak device memory is reported on CUDA. Results go to ``benchmarks/results/gpu_bake_<device>.{json,md}``.

    python benchmarks/gpu_bake.py --device cuda [--repeat 5] [--faces 20000] [--size 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from meshforge import __version__
from meshforge.config import BakeConfig, DecimateConfig, UnwrapConfig
from meshforge.export._png import POOL_THREADS, encode_png, encode_pngs
from meshforge.fields.surface import SurfaceField
from meshforge.geometry.normals import vertex_normals
from meshforge.gpu import bake as tbake
from meshforge.io.meshes import load_mesh
from meshforge.mesh import bake as cbake
from meshforge.mesh.decimate import decimate
from meshforge.mesh.uv import unwrap
from meshforge.optimize import flatten
from meshforge.types import Textures

REPO = Path(__file__).resolve().parents[1]
MAPS = ("base_color", "metallic_roughness", "normal", "occlusion")


def maps_of(t: Textures) -> tuple[list[np.ndarray], list[bool]]:
    arrays = [getattr(t, n) for n in MAPS if getattr(t, n) is not None]
    return arrays, [True] + [False] * (len(arrays) - 1)


def agreement(ref: Textures, got: Textures, covered: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    for name in MAPS:
        a, b = getattr(ref, name), getattr(got, name)
        if a is None or b is None:
            continue
        d = np.abs(a.astype(np.int64) - b.astype(np.int64))[covered].reshape(int(covered.sum()), -1)
        over = float((d.max(1) > 2).mean())
        out[name] = {"mean": round(float(d.mean()), 4), "max": int(d.max()), "over_2": round(over, 5)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--assets", type=Path, default=REPO.parent / "shared" / "data" / "assets")
    parser.add_argument("--faces", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-reference", action="store_true", help="skip the CPU bake")
    parser.add_argument("--cell-scale", type=float, default=tbake.CELL_SCALE, help="grid cell, in triangle sizes")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    dev = torch.device(args.device)
    tbake.CELL_SCALE = args.cell_scale
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from optimize_dense import subdivide  # the benchmark's midpoint subdivision, shared

    t0 = time.perf_counter()
    helmet = load_mesh(args.assets / "FlightHelmet.glb")
    dense_scene = type(helmet)(parts=[subdivide(p) for p in helmet.parts], name="FlightHelmet_x4")
    field = SurfaceField(dense_scene.parts, cage=0.03 * dense_scene.diagonal())
    low = decimate(flatten(helmet), DecimateConfig(faces=args.faces))[0]
    low = low.replace(normals=vertex_normals(low.vertices, low.faces))
    mesh, _ = unwrap(low, UnwrapConfig(), args.size)
    setup_s = time.perf_counter() - t0
    cfg = BakeConfig(texture_size=args.size)
    print(f"setup {setup_s:.1f} s: dense {dense_scene.n_faces():,} faces, low {mesh.n_faces:,} faces", flush=True)

    def one() -> tuple[Textures, dict[str, float], float]:
        tbake._SURFACES.pop(field, None)  # rebuild the grid every run: its time is part of the bake
        timings: dict[str, float] = {}
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        a = time.perf_counter()
        textures, _ = tbake.bake(mesh, field, cfg, device=dev, timings=timings)
        return textures, timings, time.perf_counter() - a

    one()  # warm-up
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    runs = [one() for _ in range(args.repeat)]
    got = runs[-1][0]
    stages = {k: round(statistics.median(r[1][k] for r in runs), 4) for k in runs[0][1]}
    bake_s = round(statistics.median(r[2] for r in runs), 4)
    arrays, flags = maps_of(got)
    seq, pool = [], []
    for _ in range(args.repeat):
        a = time.perf_counter()
        [encode_png(x, drop_opaque_alpha=f) for x, f in zip(arrays, flags, strict=True)]
        seq.append(time.perf_counter() - a)
        a = time.perf_counter()
        encode_pngs(arrays, drop_opaque_alpha=flags)
        pool.append(time.perf_counter() - a)
    result: dict[str, object] = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "dense_faces": dense_scene.n_faces(),
        "low_faces": mesh.n_faces,
        "texture_size": args.size,
        "runs": args.repeat,
        "cell_scale": args.cell_scale,
        "setup_s": round(setup_s, 2),
        "bake_median_s": bake_s,
        "bake_stages_s": stages,
        "encode_sequential_s": round(statistics.median(seq), 4),
        "encode_pool_s": round(statistics.median(pool), 4),
        "encode_pool_threads": POOL_THREADS,
    }
    if dev.type == "cuda":
        result["peak_device_memory_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    if not args.no_reference:
        a = time.perf_counter()
        ref, _ = cbake.bake(mesh, field, cfg)
        result["cpu_bake_s"] = round(time.perf_counter() - a, 3)
        result["agreement_on_covered_texels"] = agreement(ref, got, cbake.rasterize_atlas(mesh, args.size).covered)
    print(json.dumps(result, indent=2), flush=True)

    meta = {
        "meshforge": __version__,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "command": f"python benchmarks/gpu_bake.py --device {args.device} --repeat {args.repeat} "
        f"--faces {args.faces} --size {args.size} --cell-scale {args.cell_scale}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_bake_{dev.type}"
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "result": result}, indent=2) + "\n")
    lines = [
        f"# torch bake on {result['device_name']} ({dev})",
        "",
        f"meshforge {meta['meshforge']}, torch {meta['torch']}, {meta['date']}, {meta['cpu_count']} CPU cores. "
        f"`{meta['command']}`",
        "",
        f"{result['dense_faces']:,}-face dense surface (FlightHelmet subdivided once) → {result['low_faces']:,} "
        f"faces, {args.size}² maps; median of {args.repeat} runs: **{bake_s:.3f} s** bake"
        + (f", CPU bake {result['cpu_bake_s']:.2f} s" if "cpu_bake_s" in result else ""),
        "",
        "| stage | median (s) |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.4f} |" for k, v in stages.items()]
    lines += [
        f"| PNG encode, sequential | {result['encode_sequential_s']:.4f} |",
        f"| PNG encode, pool of {POOL_THREADS} | {result['encode_pool_s']:.4f} |",
        "",
    ]
    if "peak_device_memory_mb" in result:
        lines += [f"Peak device memory: {result['peak_device_memory_mb']:.0f} MB.", ""]
    if "agreement_on_covered_texels" in result:
        lines += ["| map (covered texels) | mean abs diff | max | > 2/255 |", "|---|---|---|---|"]
        for name, v in result["agreement_on_covered_texels"].items():  # type: ignore[attr-defined]
            lines.append(f"| {name} | {v['mean']:.4f} | {v['max']} | {v['over_2']:.3%} |")
        lines.append("")
    (args.out / f"{stem}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
