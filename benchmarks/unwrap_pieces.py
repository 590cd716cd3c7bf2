"""UV unwrapping of large meshes: xatlas on the whole mesh against xatlas on pieces in parallel workers.

The input is the smooth surface of ``finish_vs_trellis2.py`` (the marching-cubes isosurface of a procedural
lobed ellipsoid at ``--resolution``³) decimated by the CPU engine to each of ``--faces``. Each mesh is unwrapped
by :func:`meshforge.mesh.uv.unwrap` for a ``--texture-size``² atlas twice: ``piece_faces=0`` (xatlas on the
whole mesh, in one worker, under ``--time-limit``) and the default ``piece_faces`` (a mesh over 24k faces in
at most 64 pieces, :func:`meshforge.mesh.uv.piece_size`; one worker per CPU; the charts packed together by
meshforge's packer). Reported: wall seconds, the
engine that made the atlas (``faces`` is the per-face fallback past the time limit), pieces, charts,
utilisation (UV triangle area over the atlas), stretch, seam ratio (seam length over the square root of the
area, :func:`meshforge.mesh.uv.atlas_quality`), texels never written.

    python benchmarks/unwrap_pieces.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from finish_vs_trellis2 import surface  # noqa: E402
from meshforge.config import DecimateConfig, UnwrapConfig  # noqa: E402
from meshforge.mesh.decimate import decimate  # noqa: E402
from meshforge.mesh.uv import unwrap  # noqa: E402
from meshforge.types import Mesh  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=448)
    ap.add_argument("--faces", default="40000,200000")
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    a = ap.parse_args()
    v, f = surface(a.resolution, 0.0, torch.device("cpu"))
    dense = Mesh(v.numpy(), f.numpy().astype(np.int32))
    rows = []
    for budget in (int(x) for x in a.faces.split(",")):
        low, _ = decimate(dense, DecimateConfig(faces=budget))
        for piece_faces in (0, UnwrapConfig.piece_faces):
            cfg = dataclasses.replace(UnwrapConfig(), piece_faces=piece_faces, time_limit=a.time_limit)
            t = time.perf_counter()
            _, counts = unwrap(low, cfg, a.texture_size)
            row = {
                "dense_faces": dense.n_faces,
                "faces": low.n_faces,
                "piece_faces": piece_faces,
                "seconds": time.perf_counter() - t,
                **{
                    k: counts.get(k)
                    for k in ("engine", "fallback", "pieces", "charts", "utilisation", "stretch", "seam_ratio")
                },
                "texels_never_written": counts.get("texels_never_written"),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {"cpu": platform.processor() or "cpu", "cores": os.cpu_count(), "texture_size": a.texture_size}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "unwrap_pieces.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        "| faces | unwrap | s | engine | pieces | charts | utilisation | stretch | seam ratio | never written |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        how = "whole mesh" if r["piece_faces"] == 0 else f"in pieces (piece_faces {r['piece_faces']:,})"
        lines.append(
            f"| {r['faces']:,} | {how} | {r['seconds']:.2f} | {r['engine']}"
            f"{' (' + r['fallback'] + ')' if r['fallback'] else ''} | {r['pieces'] or '–'} | {r['charts']:,} | "
            f"{r['utilisation']:.3f} | {r['stretch']:.4f} | {r['seam_ratio']:.1f} | {r['texels_never_written']:.3f} |"
        )
    print("\n".join(lines))
    (a.out / "unwrap_pieces_table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
