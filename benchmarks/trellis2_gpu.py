"""TRELLIS.2 on one GPU: meshforge's implementation against the reference (microsoft/TRELLIS.2), per stage.

Both run in one process on the SAME random checkpoint in the official layout, written by
``meshforge.backends.trellis2.random_weights.write_random_checkpoint`` (``--size full``: the official
architectures, 1.3 B-parameter flows; its AdaLN/output layers re-drawn, the sparse-structure decoder shaped
to give a few lumps at ~3 % occupancy and the subdivision heads tuned so the cascade does not densify — random
weights otherwise give an empty or a full grid). The picture is a real one (``--image``, default the shared
robot), cut out by its alpha and cropped as the reference crops it. The sparse-structure coordinates that
our run produces are fed to BOTH implementations' later stages, so both decode the same token count.

Stages (median of ``--repeats`` after one warm-up, ``torch.cuda.synchronize`` around each):
``condition`` (DINOv3 at 512 and 1024 px), ``sparse_structure`` (dense flow, 16³ tokens, CFG + decoder),
``shape_slat`` (``512``: one flow; cascades: the 512 flow, the decoder's upsampling, the high-resolution
flow), ``tex_slat``, ``decode_shape`` (flexible dual grid → mesh), ``decode_tex`` (PBR voxels). Peak memory:
``torch.cuda.max_memory_allocated`` over a whole run with only that implementation's models loaded.

Variants: the reference at its defaults (``low_vram`` on, as ``pipeline.json`` leaves it: models moved to the
GPU per stage; FlexGEMM's default algorithm with TF32) and at its best here (``low_vram`` off: every model
resident). Its flash-attn is not installed (no wheel for this machine): its sparse attention runs through a
per-sequence SDPA shim and its dense attention through its own ``sdpa`` backend — stated in the results.
Ours at its defaults on this GPU and in low-VRAM mode (the ≤ 24 GB figure). Precision: both sides run the
dtypes the checkpoint's JSON asks for (``use_fp16`` decoders in fp16, flows in their ``dtype``), unless
``--dtype`` overrides ours.

``--e2e`` also times ``meshforge generate --backend trellis2`` on the picture to a 50k-face GLB with 2048²
maps (the report's stage table).

Usage (on the GPU machine; the reference built with FlexGEMM and o-voxel installed)::

    python benchmarks/trellis2_gpu.py --reference /path/to/TRELLIS.2 --size full --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402

from meshforge.backends.trellis2.conditioning import crop_object  # noqa: E402
from meshforge.backends.trellis2.pipeline import Trellis2Pipeline  # noqa: E402
from meshforge.backends.trellis2.random_weights import write_random_checkpoint  # noqa: E402

DINOV3_ID = "facebook/dinov3-vitl16-pretrain-lvd1689m"
#: the runs --variants picks from (the reference's two need --reference)
VARIANTS = ("ours", "ours-low-vram", "reference", "reference-resident")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t


class Ours:
    """Our pipeline driven stage by stage."""

    name = "meshforge"

    def __init__(self, weights: Path, device: str, low_vram: bool, dtypes: dict[str, Any] | None) -> None:
        self.pipe = Trellis2Pipeline.from_folder(weights, device=device, low_vram=low_vram, dtypes=dtypes)

    def condition(self, picture: Any, kind: str) -> dict[str, Any]:
        c512 = self.pipe.condition([picture], 512)
        c1024 = self.pipe.condition([picture], 1024) if kind != "512" else None
        return {"512": c512, "1024": c1024}

    def sparse_structure(self, cond: dict[str, Any]) -> Any:
        return self.pipe.sample_sparse_structure(cond["512"], 32)

    def shape_slat(self, cond: dict[str, Any], coords: Any, kind: str) -> tuple[Any, int]:
        m = self.pipe.models
        if kind == "512":
            return self.pipe.sample_shape_slat(cond["512"], m["shape_slat_flow_model_512"], coords), 512
        lr = self.pipe.sample_shape_slat(cond["512"], m["shape_slat_flow_model_512"], coords)
        target = 1024 if kind == "1024_cascade" else 1536
        fine, res = self.pipe.cascade_coords(lr, 512, target, 49152)
        return self.pipe.sample_shape_slat(cond["1024"], m["shape_slat_flow_model_1024"], fine), res

    def tex_slat(self, cond: dict[str, Any], shape: Any, kind: str) -> Any:
        key, flow = ("512", "tex_slat_flow_model_512") if kind == "512" else ("1024", "tex_slat_flow_model_1024")
        return self.pipe.sample_tex_slat(cond[key], self.pipe.models[flow], shape)

    def decode_shape(self, shape: Any, res: int) -> tuple[Any, Any]:
        dec = self.pipe.models["shape_slat_decoder"]
        dec.set_resolution(res)
        with self.pipe._on_device(dec):
            meshes, subs = dec(shape, return_subs=True)
        return meshes[0], subs

    def decode_tex(self, tex: Any, subs: Any) -> Any:
        dec = self.pipe.models["tex_slat_decoder"]
        with self.pipe._on_device(dec):
            return dec(tex, guide_subs=subs) * 0.5 + 0.5


class Reference:
    """The reference's pipeline object, driven through the same stages (imported from ``--reference``)."""

    name = "reference"

    def __init__(self, path: str, weights: Path, device: str, low_vram: bool) -> None:
        from trellis2_fixture import import_reference

        ref = import_reference(path, need_kernels=True)
        self.sp = ref["sp"]
        args = json.loads((weights / "pipeline.json").read_text())["args"]
        models = {k: ref["models"].from_pretrained(str(weights / v)).eval() for k, v in args["models"].items()}
        s = ref["samplers"]
        sampler = lambda key: getattr(s, args[key]["name"])(**args[key]["args"])  # noqa: E731
        extractor = ref["image_feature_extractor"].DinoV3FeatureExtractor(str(weights / DINOV3_ID))
        dino = extractor.model
        if not hasattr(dino, "layer") and hasattr(dino, "model"):
            object.__setattr__(dino, "layer", dino.model.layer)  # transformers >= 5 moved the layers
        self.pipe = ref["pipeline_cls"](
            models=models,
            sparse_structure_sampler=sampler("sparse_structure_sampler"),
            shape_slat_sampler=sampler("shape_slat_sampler"),
            tex_slat_sampler=sampler("tex_slat_sampler"),
            sparse_structure_sampler_params=args["sparse_structure_sampler"]["params"],
            shape_slat_sampler_params=args["shape_slat_sampler"]["params"],
            tex_slat_sampler_params=args["tex_slat_sampler"]["params"],
            shape_slat_normalization=args["shape_slat_normalization"],
            tex_slat_normalization=args["tex_slat_normalization"],
            image_cond_model=extractor,
            rembg_model=None,
            low_vram=low_vram,
        )
        self.pipe._device = torch.device(device)
        self.pipe.to(torch.device(device))

    def condition(self, picture: Any, kind: str) -> dict[str, Any]:
        c512 = self.pipe.get_cond([picture], 512)
        c1024 = self.pipe.get_cond([picture], 1024) if kind != "512" else None
        return {"512": c512, "1024": c1024}

    def sparse_structure(self, cond: dict[str, Any]) -> Any:
        return self.pipe.sample_sparse_structure(cond["512"], 32, 1, {})

    def shape_slat(self, cond: dict[str, Any], coords: Any, kind: str) -> tuple[Any, int]:
        m = self.pipe.models
        if kind == "512":
            return self.pipe.sample_shape_slat(cond["512"], m["shape_slat_flow_model_512"], coords, {}), 512
        target = 1024 if kind == "1024_cascade" else 1536
        return self.pipe.sample_shape_slat_cascade(
            cond["512"],
            cond["1024"],
            m["shape_slat_flow_model_512"],
            m["shape_slat_flow_model_1024"],
            512,
            target,
            coords,
            {},
            49152,
        )

    def tex_slat(self, cond: dict[str, Any], shape: Any, kind: str) -> Any:
        key, flow = ("512", "tex_slat_flow_model_512") if kind == "512" else ("1024", "tex_slat_flow_model_1024")
        return self.pipe.sample_tex_slat(cond[key], self.pipe.models[flow], shape, {})

    def decode_shape(self, shape: Any, res: int) -> tuple[Any, Any]:
        meshes, subs = self.pipe.decode_shape_slat(shape, res)
        return meshes[0], subs

    def decode_tex(self, tex: Any, subs: Any) -> Any:
        return self.pipe.decode_tex_slat(tex, subs)


def run_stages(
    impl: Any, picture: Any, kind: str, coords: Any | None, seed: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """One full run, stage by stage; returns seconds per stage and sizes."""
    torch.manual_seed(seed)
    t: dict[str, float] = {}
    cond, t["condition"] = timed(lambda: impl.condition(picture, kind))
    ss, t["sparse_structure"] = timed(lambda: impl.sparse_structure(cond))
    coords = ss if coords is None else coords
    (shape, res), t["shape_slat"] = timed(lambda: impl.shape_slat(cond, coords, kind))
    tex, t["tex_slat"] = timed(lambda: impl.tex_slat(cond, shape, kind))
    (mesh, subs), t["decode_shape"] = timed(lambda: impl.decode_shape(shape, res))
    voxels, t["decode_tex"] = timed(lambda: impl.decode_tex(tex, subs))
    t["total"] = sum(t.values())
    sizes = {
        "ss_tokens": int(coords.shape[0]),
        "slat_tokens": int(shape.coords.shape[0]),
        "resolution": int(res),
        "mesh_faces": int(mesh.faces.shape[0]),
        "pbr_voxels": int(voxels.coords.shape[0]),
    }
    return t, {"sizes": sizes, "coords": ss}


def measure(impl: Any, picture: Any, kind: str, coords: Any | None, repeats: int, seed: int) -> dict[str, Any]:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    _, first = run_stages(impl, picture, kind, coords, seed)  # warm-up (kernels compiled, caches filled)
    runs = [run_stages(impl, picture, kind, coords, seed)[0] for _ in range(repeats)]
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {
        "seconds": median,
        "sizes": first["sizes"],
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan"),
        "coords": first["coords"],
    }


def release(impl: Any) -> None:
    del impl
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def table(results: dict[str, dict[str, Any]], kinds: list[str]) -> str:
    stages = ["condition", "sparse_structure", "shape_slat", "tex_slat", "decode_shape", "decode_tex", "total"]
    lines = []
    for kind in kinds:
        rows = {name: r for name, r in results.items() if name.endswith(f"@{kind}")}
        if not rows:
            continue
        names = list(rows)
        lines += [f"### `{kind}`", "", "| stage | " + " | ".join(n.split("@")[0] for n in names) + " |"]
        lines.append("|---|" + "---:|" * len(names))
        for s in stages:
            lines.append(f"| {s} | " + " | ".join(f"{rows[n]['seconds'][s]:.2f} s" for n in names) + " |")
        lines.append("| peak VRAM | " + " | ".join(f"{rows[n]['peak_gib']:.1f} GiB" for n in names) + " |")
        lines.append(
            "| tokens (SS → SLat), resolution | "
            + " | ".join(
                f"{rows[n]['sizes']['ss_tokens']} → {rows[n]['sizes']['slat_tokens']}, {rows[n]['sizes']['resolution']}"
                for n in names
            )
            + " |"
        )
        lines.append(
            "| mesh faces / PBR voxels | "
            + " | ".join(f"{rows[n]['sizes']['mesh_faces']:,} / {rows[n]['sizes']['pbr_voxels']:,}" for n in names)
            + " |"
        )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--reference", help="folder holding the reference's trellis2 package (with FlexGEMM/o-voxel installed)"
    )
    ap.add_argument("--size", default="full", choices=["tiny", "full"])
    ap.add_argument("--weights", help="an existing random checkpoint folder (else one is written to a temp dir)")
    ap.add_argument("--image", default=str(REPO.parent / "shared" / "data" / "images" / "triposr__robot.png"))
    ap.add_argument("--pipelines", nargs="+", default=["512", "1024_cascade"])
    ap.add_argument(
        "--variants",
        nargs="*",
        choices=VARIANTS,
        default=list(VARIANTS),
        help="which of ours, ours-low-vram, reference (its defaults), reference-resident (its best) to time",
    )
    ap.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="keep the checkpoint's structure decoder as written (else re-calibrated on --image)",
    )
    ap.add_argument(
        "--structure-occupancy",
        type=float,
        default=0.29,
        help="calibrated occupancy of the 32³ structure grid (0.29 ≈ 9,500 tokens: the 1024 cascade reaches its "
        "49,152-token cap, as a real object does)",
    )
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--e2e", action="store_true", help="also time meshforge generate to a 50k-face GLB, 2048² maps")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    a = ap.parse_args()
    from PIL import Image

    weights = Path(a.weights) if a.weights else Path(tempfile.mkdtemp()) / "w"
    if not a.weights:
        t0 = time.perf_counter()
        write_random_checkpoint(weights, a.size, a.seed, device=a.device)  # built on the GPU: minutes faster
        print(f"random {a.size} checkpoint written in {time.perf_counter() - t0:.0f} s: {weights}", flush=True)
    picture = crop_object(np.asarray(Image.open(a.image).convert("RGBA")))
    if a.calibrate:
        # a random flow's structure latent for this picture can miss the decoder's calibration (an empty or
        # a full structure): re-calibrate it on this picture, as these stages and `generate` condition on it
        from meshforge.backends.trellis2.backend import Trellis2Backend
        from meshforge.backends.trellis2.random_weights import calibrate_structure
        from meshforge.config import PreprocessConfig
        from meshforge.io.images import load_image
        from meshforge.preprocess import prepare

        prepared = prepare(load_image(a.image), PreprocessConfig(), Trellis2Backend.input_size)
        t0 = time.perf_counter()
        bias = calibrate_structure(
            weights,
            [picture, crop_object(prepared.rgba)],
            seeds=(a.seed, 42),
            occupancy=a.structure_occupancy,
            pooled_resolution=32,
            device=a.device,
        )
        print(f"structure decoder calibrated on the picture in {time.perf_counter() - t0:.0f} s (bias {bias:.3f})")
    results: dict[str, dict[str, Any]] = {}
    coords: dict[str, Any] = {}
    every: dict[str, tuple[str, Callable[[], Any]]] = {
        "ours": ("meshforge (default)", lambda: Ours(weights, a.device, False, None)),
        "ours-low-vram": ("meshforge (low-VRAM)", lambda: Ours(weights, a.device, True, None)),
    }
    if a.reference:
        every["reference"] = ("reference (default: low_vram)", lambda: Reference(a.reference, weights, a.device, True))
        every["reference-resident"] = (
            "reference (best: resident)",
            lambda: Reference(a.reference, weights, a.device, False),
        )
    variants = [every[v] for v in a.variants if v in every]

    def save(e2e: dict[str, Any] | None) -> None:
        meta = {
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__,
            "python": platform.python_version(),
            "size": a.size,
            "image": Path(a.image).name,
            "repeats": a.repeats,
            "note": "reference sparse attention: per-sequence SDPA shim (flash-attn not installed); "
            "dense: its sdpa backend",
        }
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "trellis2_gpu.json").write_text(json.dumps({"meta": meta, "results": results, "e2e": e2e}, indent=1))
        md = [
            "# TRELLIS.2 on one GPU: meshforge against the reference",
            "",
            "```",
            json.dumps(meta, indent=1),
            "```",
            "",
            table(results, a.pipelines),
        ]
        if e2e:
            md += ["## meshforge generate → 50k faces, 2048² maps", "", "```", json.dumps(e2e, indent=1), "```"]
        (out / "trellis2_gpu.md").write_text("\n".join(md) + "\n")

    for label, make in variants:
        impl = make()
        for kind in a.pipelines:
            key = f"{label}@{kind}"
            try:
                r = measure(impl, picture, kind, coords.get(kind), a.repeats, a.seed)
            except Exception as exc:  # report, go on with the other variants
                print(f"{key}: failed: {type(exc).__name__}: {str(exc).splitlines()[0]}", flush=True)
                traceback.print_exc()
                continue
            coords.setdefault(kind, r.pop("coords"))
            r.pop("coords", None)
            results[key] = r
            print(
                key,
                json.dumps({k: round(v, 3) for k, v in r["seconds"].items()}),
                f"peak {r['peak_gib']:.1f} GiB",
                flush=True,
            )
            save(None)  # written as it goes: a run cut short keeps what it measured
        release(impl)
    e2e = None
    if a.e2e:
        out_dir = Path(tempfile.mkdtemp())
        pythonpath = [str(REPO / "src")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        cmd = [
            sys.executable,
            "-m",
            "meshforge.cli",
            "generate",
            a.image,
            "--backend",
            "trellis2",
            "--weights",
            str(weights),
            "--faces",
            "50000",
            "--texture-size",
            "2048",
            "--device",
            a.device,
            "-o",
            str(out_dir),
        ]
        t0 = time.perf_counter()
        done = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
        )
        wall = time.perf_counter() - t0
        report = next(out_dir.glob("*.report.json"), None)
        e2e = {"wall_s": wall, "rc": done.returncode, "stderr_tail": done.stderr[-500:]}
        if report is not None:
            rep = json.loads(report.read_text())
            e2e["stages"] = {s["name"]: s["seconds"] for s in rep["stages"]}
            shutil.copy(report, Path(a.out) / "trellis2_generate.report.json")
            for glb in out_dir.glob("*.glb"):  # kept to look at (rendered to PNG beside the results)
                shutil.copy(glb, Path(a.out) / "trellis2_generate.glb")
        print("e2e", json.dumps(e2e)[:800], flush=True)
    save(e2e)
    print("wrote", Path(a.out) / "trellis2_gpu.md")


if __name__ == "__main__":
    main()
