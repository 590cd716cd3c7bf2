"""Benchmark: the zlib strategy of meshforge's PNG textures (:data:`meshforge.export._png.ZLIB_STRATEGY`).

Encodes pictures with Pillow at ``compress_level=3`` under zlib's default strategy and under ``Z_RLE`` (matches at
distance 1 only), each ``--repeat`` times (median wall time), and checks that every stream decodes to the same
pixels. The pictures:

* the maps a ``finish`` bakes at 2048² (base colour, metallic-roughness, tangent-space normal map) for the
  isosurface of ``benchmarks/gpu_finish.py``'s analytic blob at 160³ with its colour field, decimated to 20,000
  faces (built here on the CPU, not timed);
* the shared pictures (``shared/data/images``: photographs and renders, as the backends' inputs).

Writes ``benchmarks/results/png_strategy.{json,md}``.

    python benchmarks/png_strategy.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MESHFORGE_SHARED") or REPO.parent / "shared") / "data" / "images"
sys.path.insert(0, str(REPO / "benchmarks"))

STRATEGIES = {"default": -1, "Z_RLE": 3}


def baked_maps() -> dict[str, np.ndarray]:
    import gpu_finish
    from meshforge.config import FinishingConfig, PipelineConfig
    from meshforge.fields.mc_torch import extract_closed
    from meshforge.pipeline import finish
    from meshforge.raw import Raw
    from meshforge.types import DeviceMesh

    cfg = PipelineConfig().with_options(faces=20000, texture_size=2048)
    cfg = dataclasses.replace(cfg, finish=FinishingConfig(engine="torch"))
    grid = gpu_finish.density(160, torch.device("cpu"))
    out = extract_closed(grid, np.full(3, -1.0), np.full(3, 1.0), 0.0)
    assert out is not None
    raw = Raw(surface=DeviceMesh(*out), attributes=gpu_finish.ColourField(), name="blob", config=cfg.to_dict())
    t = finish(raw, cfg).asset.textures
    maps = {"base_color": t.base_color, "metallic_roughness": t.metallic_roughness, "normal": t.normal}
    out_maps = {}
    for name, a in maps.items():
        if a is None:
            continue
        if a.shape[-1] == 4 and bool((a[..., 3] == 255).all()):
            a = a[..., :3]  # as the exporter writes an opaque base colour
        out_maps[f"baked 2048² {name}"] = np.ascontiguousarray(a)
    return out_maps


def pictures() -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(SHARED.glob("*")):
        if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
            out[path.name] = np.asarray(Image.open(path).convert("RGB"))
    return out


def encode(a: np.ndarray, strategy: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", compress_level=3, compress_type=strategy)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "png_strategy")
    args = ap.parse_args()
    rows = []
    for name, a in {**baked_maps(), **pictures()}.items():
        row: dict[str, object] = {"picture": name, "shape": list(a.shape)}
        for label, strategy in STRATEGIES.items():
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                data = encode(a, strategy)
                times.append(time.perf_counter() - t0)
            same = np.array_equal(np.asarray(Image.open(io.BytesIO(data))), a)
            row[label] = {"seconds": statistics.median(times), "bytes": len(data), "lossless": same}
        rows.append(row)
        print(name, {k: row[k] for k in STRATEGIES}, flush=True)
    meta = {
        "python": platform.python_version(),
        "pillow": PIL.__version__,
        "cpu_count": os.cpu_count(),
        "repeat": args.repeat,
    }
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        "# PNG zlib strategy: default against Z_RLE (Pillow, compress_level 3)",
        "",
        f"Python {meta['python']}, Pillow {meta['pillow']}, {meta['cpu_count']} CPU cores; median of {args.repeat}"
        " encodings, one thread. `python benchmarks/png_strategy.py`",
        "",
        "| picture | size | default s | Z_RLE s | time | default bytes | Z_RLE bytes | size | lossless |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        d, z = r["default"], r["Z_RLE"]
        assert isinstance(d, dict) and isinstance(z, dict)
        shape = r["shape"]
        assert isinstance(shape, list)
        lines.append(
            f"| {r['picture']} | {shape[1]}×{shape[0]}×{shape[2]} | {d['seconds']:.3f} | {z['seconds']:.3f} | "
            f"{z['seconds'] / d['seconds']:.2f}× | {d['bytes']:,} | {z['bytes']:,} | {z['bytes'] / d['bytes']:.2f}× | "
            f"{'yes' if d['lossless'] and z['lossless'] else 'NO'} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
