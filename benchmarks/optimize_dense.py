"""Benchmark: ``meshforge optimize`` on real assets and on a dense (~1M-face) model.

1. FlightHelmet (94,722 faces, 6 parts) → 20,000 faces, 1024² maps, ``--repeat`` runs (median).
   Timed from the file (loading included).
2. A dense twin of FlightHelmet made by midpoint subdivision (every triangle split into 4, attributes —
   UVs, normals, tangents — interpolated, textures unchanged) until it has about one million faces,
   → 50,000 faces with a 2048² texture set (made in memory, so its ``load`` stage is 0).

Writes per-stage median wall times and peak RSS to ``benchmarks/results/optimize_dense.{json,md}``.

    python benchmarks/optimize_dense.py [--assets DIR] [--repeat 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from meshforge import __version__
from meshforge.io.meshes import load_mesh
from meshforge.io.scene import SourcePart, SourceScene
from meshforge.optimize import OptimizeConfig, optimize
from meshforge.types import Mesh

REPO = Path(__file__).resolve().parents[1]


def subdivide(part: SourcePart) -> SourcePart:
    """Midpoint subdivision: each triangle → 4, per-vertex attributes averaged on new edge vertices."""
    mesh = part.mesh
    f = mesh.faces.astype(np.int64)
    nv = mesh.n_vertices
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    key = np.minimum(edges[:, 0], edges[:, 1]) * nv + np.maximum(edges[:, 0], edges[:, 1])
    uniq, inverse = np.unique(key, return_inverse=True)
    a, b = uniq // nv, uniq % nv
    mid = nv + inverse.reshape(3, -1).T  # [F, 3]: midpoints of edges 01, 12, 20

    def extend(arr: np.ndarray | None) -> np.ndarray | None:
        if arr is None:
            return None
        new = 0.5 * (arr[a].astype(np.float64) + arr[b].astype(np.float64))
        return np.concatenate([arr, new.astype(arr.dtype)])

    m01, m12, m20 = mid[:, 0], mid[:, 1], mid[:, 2]
    faces = np.concatenate(
        [
            np.stack([f[:, 0], m01, m20], 1),
            np.stack([m01, f[:, 1], m12], 1),
            np.stack([m20, m12, f[:, 2]], 1),
            np.stack([m01, m12, m20], 1),
        ]
    )
    normals = extend(mesh.normals)
    if normals is not None:
        normals = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    tangents = extend(part.tangents)
    if tangents is not None:
        tangents[:, :3] /= np.linalg.norm(tangents[:, :3], axis=1, keepdims=True)
        tangents[:, 3] = np.where(tangents[:, 3] < 0, -1.0, 1.0)
    new_mesh = Mesh(
        vertices=extend(mesh.vertices),  # type: ignore[arg-type]
        faces=faces,
        normals=normals,
        uv=extend(mesh.uv),
        colors=extend(mesh.colors),
    )
    return dataclasses.replace(part, mesh=new_mesh, tangents=tangents)


def dense_twin(scene: SourceScene, target: int = 1_000_000) -> SourceScene:
    parts = [subdivide(p) for p in scene.parts]
    order = np.argsort([-p.mesh.n_faces for p in parts])
    for i in order:
        total = sum(p.mesh.n_faces for p in parts)
        if total >= target * 0.95:
            break
        if total + 3 * parts[i].mesh.n_faces <= target * 1.6:
            parts[i] = subdivide(parts[i])
    return dataclasses.replace(scene, parts=parts, name=scene.name + "_dense")


def run(scene: SourceScene, cfg: OptimizeConfig, repeat: int, path: Path | None = None) -> dict[str, object]:
    """Median stage times of ``repeat`` runs after a warm-up; from the file (load timed) when ``path`` is given."""
    source: SourceScene | Path = path if path is not None else scene
    optimize(source, cfg)  # warm-up
    reports = [optimize(source, cfg).report for _ in range(repeat)]
    names = [s.name for s in reports[0].stages]
    stages = {
        n: {
            "median_s": round(statistics.median(next(s.seconds for s in r.stages if s.name == n) for r in reports), 4),
            "peak_rss_mb": round(max(next(s.peak_rss_mb for s in r.stages if s.name == n) for r in reports), 1),
        }
        for n in names
    }
    return {
        "input_faces": scene.n_faces(),
        "faces": cfg.decimate.faces,
        "texture_size": cfg.bake.texture_size,
        "runs": repeat,
        "median_s": round(statistics.median(r.total_seconds for r in reports), 4),
        "peak_rss_mb": round(max(r.peak_rss_mb for r in reports), 1),
        "stages": stages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=REPO.parent / "shared" / "data" / "assets")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()

    helmet = load_mesh(args.assets / "FlightHelmet.glb")
    results = {
        "FlightHelmet_20k_1024": run(
            helmet,
            OptimizeConfig().with_options(faces=20_000, texture_size=1024),
            args.repeat,
            path=args.assets / "FlightHelmet.glb",
        )
    }
    print(json.dumps(results["FlightHelmet_20k_1024"]), flush=True)
    t0 = time.perf_counter()
    dense = dense_twin(helmet)
    make_s = time.perf_counter() - t0
    key = f"FlightHelmet_dense_{dense.n_faces()}_to_50k_2048"
    results[key] = run(dense, OptimizeConfig().with_options(faces=50_000, texture_size=2048), max(1, args.repeat // 2))
    results[key]["subdivision_s"] = round(make_s, 2)
    print(json.dumps(results[key]), flush=True)

    meta = {
        "meshforge": __version__,
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "command": f"python benchmarks/optimize_dense.py --repeat {args.repeat}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "optimize_dense.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    lines = [
        "# optimize: per-stage median wall time (s) and peak RSS (MB)",
        "",
        f"meshforge {meta['meshforge']}, {meta['date']}, Python {meta['python']}, {meta['cpu_count']} CPU cores.",
        "",
    ]
    for name, res in results.items():
        lines += [
            f"## {name}",
            "",
            f"{res['input_faces']:,} → {res['faces']:,} faces, {res['texture_size']}² maps; median of {res['runs']} "
            f"runs: **{res['median_s']:.2f} s**, peak RSS {res['peak_rss_mb']:.0f} MB",
            "",
            "| stage | median (s) | peak RSS (MB) |",
            "|---|---|---|",
        ]
        for stage, val in res["stages"].items():  # type: ignore[union-attr]
            lines.append(f"| {stage} | {val['median_s']:.3f} | {val['peak_rss_mb']:.0f} |")
        lines.append("")
    (args.out / "optimize_dense.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
