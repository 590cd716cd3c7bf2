"""Benchmark: meshforge's striped PNG encoder against Pillow's, on the maps of one result.

The maps a ``finish`` bakes at 2048² (base colour, metallic-roughness, tangent-space normal map; built as in
``png_strategy.py``: the isosurface of ``gpu_finish.py``'s analytic blob at 160³ with its colour field, 20,000
faces, on the CPU, not timed), and the same maps cut to 1024² (their top-left quarter). Each set of three maps is
encoded, ``--repeat`` times (median wall time), as the GLB writer would:

* **Pillow, one map per thread** — the encoder before (``encode_png_pillow`` of each map on a pool of
  ``min(4, CPUs)`` threads, the old ``submit_pngs``);
* **ours, sequential** — :func:`meshforge.export._png.encode_png` of each on one thread;
* **ours, striped on the pool** — :func:`meshforge.export._png.encode_pngs` (every stripe of every map a task).

Both at ``compress_level=3`` with zlib's ``Z_RLE`` strategy; every stream is decoded and compared with its pixels.
Writes ``--out`` ``.json`` and ``.md``.

    python benchmarks/png_encode.py [--repeat 5] [--out benchmarks/results/png_encode]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from meshforge.export._png import POOL_THREADS, encode_png, encode_png_pillow, encode_pngs  # noqa: E402


def median_time(fn, repeat: int) -> tuple[float, list[bytes]]:  # type: ignore[no-untyped-def]
    times, out = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    import png_strategy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "png_encode")
    args = ap.parse_args()
    full = list(png_strategy.baked_maps().values())
    sets = {"2048²": full, "1024²": [np.ascontiguousarray(m[:1024, :1024]) for m in full]}
    old_threads = max(1, min(4, os.cpu_count() or 1))
    old_pool = ThreadPoolExecutor(old_threads)
    encode_pngs(full)  # the pool's threads exist before timing
    rows = []
    for label, maps in sets.items():
        ways = {
            "pillow_map_per_thread": lambda maps=maps: list(old_pool.map(encode_png_pillow, maps)),
            "ours_sequential": lambda maps=maps: [encode_png(m) for m in maps],
            "ours_striped_pool": lambda maps=maps: encode_pngs(maps),
        }
        row: dict[str, object] = {"maps": label, "shapes": [list(m.shape) for m in maps]}
        for name, fn in ways.items():
            seconds, data = median_time(fn, args.repeat)
            lossless = all(np.array_equal(np.asarray(Image.open(io.BytesIO(d))), m) for d, m in zip(data, maps))
            row[name] = {"seconds": seconds, "bytes": [len(d) for d in data], "lossless": lossless}
        rows.append(row)
        print(label, {k: row[k] for k in ways}, flush=True)
    meta = {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "pool_threads": POOL_THREADS,
        "old_pool_threads": old_threads,
        "repeat": args.repeat,
    }
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        "| maps (3: base colour, metallic-roughness, normal) | Pillow, a map per thread s | ours sequential s |"
        " ours striped s | vs Pillow | Pillow bytes | ours bytes | lossless |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        p, s, o = r["pillow_map_per_thread"], r["ours_sequential"], r["ours_striped_pool"]
        assert isinstance(p, dict) and isinstance(s, dict) and isinstance(o, dict)
        lines.append(
            f"| {r['maps']} | {p['seconds']:.3f} | {s['seconds']:.3f} | **{o['seconds']:.3f}** | "
            f"{o['seconds'] / p['seconds']:.2f}× | {sum(p['bytes']):,} | {sum(o['bytes']):,} | "
            f"{'yes' if p['lossless'] and s['lossless'] and o['lossless'] else 'NO'} |"
        )
    head = (
        f"Python {meta['python']}, {meta['cpu_count']} CPU cores (pool {POOL_THREADS} threads; Pillow's map "
        f"per thread on {old_threads}); median of {args.repeat}. `python benchmarks/png_encode.py`"
    )
    args.out.with_suffix(".md").write_text("\n".join([head, "", *lines]) + "\n")
    print("\n".join([head, "", *lines]))


if __name__ == "__main__":
    main()
