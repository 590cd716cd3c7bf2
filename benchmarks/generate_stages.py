"""Benchmark: per-stage wall time and peak memory of ``meshforge.generate`` on the real example images.

Runs the default pipeline (inflate backend, 256³ grid, 20,000 faces, 1024² textures) on every image in
``../shared/data/images`` (or the folder given with ``--images``), ``--repeat`` times each after one
warm-up run, and writes the medians to ``benchmarks/results/generate_stages.{json,md}``.

    python benchmarks/generate_stages.py [--images DIR] [--repeat 5] [--out benchmarks/results]

Peak memory is the process's peak resident set size during each stage (``VmHWM``, reset per stage), so it
includes the interpreter and libraries (about 150 MB) — the number a user's machine sees.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from meshforge import __version__
from meshforge.backends import load_backend
from meshforge.config import PipelineConfig
from meshforge.export import export
from meshforge.io.images import load_image
from meshforge.pipeline import run

REPO = Path(__file__).resolve().parents[1]


def bench_image(path: Path, backend: object, cfg: PipelineConfig, repeat: int) -> dict[str, object]:
    image = load_image(path, cfg.input)
    run(image, backend, cfg)  # warm-up (imports, caches)
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = run(image, backend, cfg)
        glb = export(result.asset, "glb")
        t_total = time.perf_counter() - t0
        runs.append((result, t_total, len(glb)))
    stages: dict[str, dict[str, float]] = {}
    for name in [s.name for s in runs[0][0].report.stages]:
        secs = [next(s.seconds for s in r.report.stages if s.name == name) for r, _, _ in runs]
        peaks = [next(s.peak_rss_mb for s in r.report.stages if s.name == name) for r, _, _ in runs]
        stages[name] = {"median_s": round(statistics.median(secs), 4), "peak_rss_mb": round(max(peaks), 1)}
    t_export = []
    for r, _, _ in runs:
        t0 = time.perf_counter()
        export(r.asset, "glb")
        t_export.append(time.perf_counter() - t0)
    stages["export_glb"] = {"median_s": round(statistics.median(t_export), 4), "peak_rss_mb": float("nan")}
    last = runs[-1][0]
    return {
        "image": path.name,
        "runs": repeat,
        "pipeline_median_s": round(statistics.median(r.report.total_seconds for r, _, _ in runs), 4),
        "with_export_median_s": round(statistics.median(t for _, t, _ in runs), 4),
        "peak_rss_mb": round(max(r.report.peak_rss_mb for r, _, _ in runs), 1),
        "faces": last.asset.mesh.n_faces,
        "dense_faces": next(s.counts.get("faces") for s in last.report.stages if s.name == "extract"),
        "glb_bytes": runs[-1][2],
        "stages": stages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=REPO.parent / "shared" / "data" / "images")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--note", default="", help="a sentence about the machine for the results (e.g. shared cores)")
    args = parser.parse_args()

    cfg = PipelineConfig()
    backend = load_backend("inflate")
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    results = []
    for path in images:
        res = bench_image(path, backend, cfg, args.repeat)
        print(f"{path.name:40s} {res['pipeline_median_s']:.3f} s  peak {res['peak_rss_mb']:.0f} MB", flush=True)
        results.append(res)
    meta = {
        "meshforge": __version__,
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "config": {"resolution": 256, "faces": 20000, "texture_size": 1024, "backend": "inflate"},
        "command": f"python benchmarks/generate_stages.py --repeat {args.repeat}",
        "note": args.note,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generate_stages.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    stage_names = list(results[0]["stages"])  # type: ignore[arg-type]
    lines = [
        "# generate: per-stage median wall time (s) and peak RSS",
        "",
        f"meshforge {meta['meshforge']}, {meta['date']}, Python {meta['python']}, {meta['cpu_count']} CPU cores; "
        f"defaults (inflate, 256³, 20k faces, 1024² textures), median of {args.repeat} runs after a warm-up."
        + (f" {args.note}" if args.note else ""),
        "",
        "| image | total (s) | peak RSS (MB) | " + " | ".join(stage_names) + " |",
        "|---|---|---|" + "---|" * len(stage_names),
    ]
    for r in results:
        st = r["stages"]
        cells = " | ".join(f"{st[n]['median_s']:.3f}" for n in stage_names)  # type: ignore[index]
        lines.append(f"| {r['image']} | {r['pipeline_median_s']:.3f} | {r['peak_rss_mb']:.0f} | {cells} |")
    (args.out / "generate_stages.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
