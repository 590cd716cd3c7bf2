"""UV unwrapping in pieces with the worker processes kept on one CPU each, and without (``uv.PIN_WORKERS``).

xatlas starts a task thread per CPU of the machine for every atlas it makes, and its calling thread waits for
them by yielding; with one unwrap worker per CPU (the default for a large mesh's pieces) every worker wakes a
thread per CPU. :mod:`meshforge.mesh.uv` keeps each worker on one CPU so that its xatlas threads share it; this
benchmark measures the difference. The input is one of ``finish_vs_trellis2.py``'s surfaces (``--noise`` 0: the
smooth lobed ellipsoid, 0.05: the noisy one) at ``--resolution``³, decimated to ``--faces`` by the torch engine
on ``--device``. For each of ``--repeat`` rounds both settings run, alternating, each with freshly started
workers (one per CPU) that are warmed on a small mesh first; reported: the unwrap's wall seconds, the pieces'
xatlas seconds and the packing's (the same atlas either way: charts, utilisation, stretch).

    python benchmarks/unwrap_workers.py --device cuda --noise 0.05 --resolution 500 --faces 200000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
from meshforge.mesh import uv  # noqa: E402
from meshforge.mesh.torch_decimate import decimate_torch  # noqa: E402
from meshforge.types import Mesh  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--resolution", type=int, default=500)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--faces", type=int, default=200_000)
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    v, f = surface(a.resolution, a.noise, torch.device(a.device))
    low, _ = decimate_torch(v.to(torch.float64), f, DecimateConfig(faces=a.faces))
    del v, f
    warm = Mesh(low.vertices, low.faces[:3000])
    n = min(os.cpu_count() or 1, uv.MAX_PIECES)
    rows = []
    for rep in range(a.repeat):
        for pinned in (False, True) if rep % 2 == 0 else (True, False):
            uv._close_workers()
            uv.PIN_WORKERS = pinned
            uv.start_worker(n)
            uv.unwrap(warm, UnwrapConfig(), a.texture_size)
            t = time.perf_counter()
            _, counts = uv.unwrap(low, UnwrapConfig(), a.texture_size)
            row = {
                "pinned": pinned,
                "repeat": rep,
                "seconds": round(time.perf_counter() - t, 3),
                **{
                    k: counts.get(k)
                    for k in ("pieces", "pieces_redone", "charts", "seconds_charts", "seconds_pack", "utilisation")
                },
                "stretch": counts.get("stretch"),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    uv._close_workers()
    medians = {p: statistics.median(r["seconds_charts"] for r in rows if r["pinned"] == p) for p in (False, True)}
    print(
        f"{low.n_faces:,} faces, {n} workers on {os.cpu_count()} CPUs; median xatlas seconds of the pieces: "
        f"free {medians[False]:.2f}, pinned {medians[True]:.2f}"
    )
    if a.json is not None:
        meta = {"device": a.device, "cpus": os.cpu_count(), "faces": int(low.n_faces), "noise": a.noise}
        a.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
