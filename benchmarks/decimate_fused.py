"""Benchmark: the GPU decimation's rounds with the fused Triton kernels against the torch reference, same run.

The surface of ``gpu_finish.py`` (the isosurface of its analytic density, cleaned on the device) at each
``--resolutions``³ is decimated to its budget (``256:20000,1400:50000``) by
:func:`meshforge.mesh.torch_decimate.decimate_torch` with :data:`~meshforge.mesh.torch_decimate.FUSED` on (the
round's per-edge costs and per-face guards in :mod:`meshforge.mesh.qem_triton`) and off (the torch operators),
the two engines taking turns (fused, torch, fused, torch), ``--repeat`` times each turn, device-synchronised. Both
decimate in float64. Prints each run's seconds and stage times, rounds, faces, slivers over 100 and watertightness,
and the Chamfer distance between the two engines' last results (relative to the diagonal).

    python benchmarks/decimate_fused.py [--resolutions 256:20000,1400:50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_finish
from meshforge.config import CleanConfig, DecimateConfig
from meshforge.eval.metrics import chamfer_distance
from meshforge.fields.mc_torch import extract_closed
from meshforge.mesh import torch_decimate as td
from meshforge.mesh.torch_clean import clean_torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolutions", default="256:20000,1400:50000", help="resolution:budget pairs")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    dev = torch.device(args.device)
    for item in args.resolutions.split(","):
        res, budget = (int(x) for x in item.split(":"))
        grid = gpu_finish.density(res, dev)
        out = extract_closed(grid, np.full(3, -1.0), np.full(3, 1.0), 0.0)
        assert out is not None
        del grid
        vv, ff, _ = clean_torch(out[0], out[1], CleanConfig())
        last = {}
        for fused in (True, False, True, False):
            td.FUSED = fused
            runs = []
            for _ in range(args.repeat):
                stages: dict[str, float] = {}
                t = gpu_finish.clock(dev)
                mesh, counts = td.decimate_torch(vv, ff, DecimateConfig(faces=budget), timings=stages)
                seconds = gpu_finish.clock(dev) - t
                runs.append(
                    (
                        round(seconds, 3),
                        {k: round(x, 3) for k, x in stages.items()},
                        counts["rounds"],
                        mesh.n_faces,
                        counts["slivers_over_100"],
                        counts["watertight"],
                    )
                )
            last[fused] = mesh
            print(res, "fused" if fused else "plain", runs, flush=True)
        td.FUSED = True
        print(res, "chamfer fused vs plain", chamfer_distance(last[True], last[False], n_samples=100_000), flush=True)


if __name__ == "__main__":
    main()
