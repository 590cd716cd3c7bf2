"""Profile one ``pipeline.finish`` on a CUDA device: device time against wall time, and the top operators.

Builds the surface of :mod:`gpu_finish` (the isosurface of its analytic density at ``--resolution``³, with its
procedural colour field), runs :func:`meshforge.pipeline.finish` with the torch engine to ``--faces`` faces and
``--texture-size``² maps twice (warm-up, then timed), and a third time under ``torch.profiler`` (CPU and CUDA
activity). Prints each run's stage times, then the operators sorted by device time and by host time: where the
device is busy, how many kernels the host launched and how often it waited.

    python benchmarks/gpu_finish_profile.py --resolution 1400 --faces 50000 --texture-size 2048 > profile.txt
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_finish
from meshforge.config import FinishingConfig, PipelineConfig
from meshforge.fields.mc_torch import extract_closed
from meshforge.pipeline import finish
from meshforge.raw import Raw
from meshforge.types import DeviceMesh, Report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=1400)
    ap.add_argument("--faces", type=int, default=50_000)
    ap.add_argument("--texture-size", type=int, default=2048)
    ap.add_argument("--rows", type=int, default=22, help="operators listed per table")
    ap.add_argument("--device", default="cuda", help="cuda (the point), or cpu for a check of the script")
    a = ap.parse_args()
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_finish_profile: no CUDA device (--device cpu checks the script)")
    on_cuda = device.type == "cuda"

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize()

    cfg = PipelineConfig().with_options(faces=a.faces, texture_size=a.texture_size)
    cfg = dataclasses.replace(cfg, finish=FinishingConfig(engine="torch"))
    grid = gpu_finish.density(a.resolution, device)
    out = extract_closed(grid, np.full(3, -1.0), np.full(3, 1.0), 0.0)
    assert out is not None
    v, f = out
    del grid
    if on_cuda:
        torch.cuda.empty_cache()
    print(f"{a.resolution}³: {f.shape[0]:,} faces → {a.faces:,}, {a.texture_size}² maps", flush=True)

    def once() -> tuple[float, dict[str, float]]:
        raw = Raw(surface=DeviceMesh(v, f), attributes=gpu_finish.ColourField(), name="blob", config=cfg.to_dict())
        report = Report()
        sync()
        t = time.perf_counter()
        finish(raw, cfg, report=report)
        sync()
        return time.perf_counter() - t, {s.name: round(s.seconds, 3) for s in report.stages}

    print("warm-up", once(), flush=True)
    print("timed", once(), flush=True)
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if on_cuda else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        print("profiled", once(), flush=True)
    averages = prof.key_averages()
    if on_cuda:
        print(averages.table(sort_by="self_cuda_time_total", row_limit=a.rows, max_name_column_width=50))
    print(averages.table(sort_by="self_cpu_time_total", row_limit=a.rows, max_name_column_width=50))


if __name__ == "__main__":
    main()
