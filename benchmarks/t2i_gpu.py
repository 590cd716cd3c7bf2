"""Text → image → 3D on one GPU: per-stage time and peak VRAM of prompt → GLB with FLUX.1-schnell and TripoSR.

The text-to-image model is the FULL-size FLUX.1-schnell architecture (the ``black-forest-labs/FLUX.1-schnell``
configs: a 19 + 38 block rectified-flow transformer of width 3072, 12 B parameters; the 16-channel VAE; CLIP
ViT-L/14 text encoder; T5-XXL encoder, 4.7 B) with RANDOM weights (``torch.manual_seed``), built directly on
the GPU in bfloat16 — nothing is downloaded (the tokenizers are :func:`meshforge.t2i.random_pipeline.char_tokenizer`,
one token per character, so the token counts differ from the real tokenizers' but the sequence lengths, 77 and
256/512, are the pipeline's). Sampling: 4 steps, guidance 0, 1024², as FLUX.1-schnell is run.

TripoSR: ``--triposr-weights DIR`` (the official weights, if the machine has them), else a full-size random
checkpoint written by ``tests/backends/triposr_helpers.write_random_checkpoint`` (its isosurface shifted so the
chair picture's is non-empty).

Random FLUX weights make a noise picture, which background removal refuses ("no object"), as it should. The
text-to-image stage is timed on the generated picture; then, so that the 3D half is measured too, the
reconstruction runs on the chair picture (``--image``), and the results say so (``picture_for_3d``).

Per stage (``meshforge.pipeline`` report stages, plus ``text_to_image``): wall seconds (every stage ends with a
copy to the host, which waits for the GPU) and ``torch.cuda.max_memory_allocated``, reset at each stage boundary
(``peak_vram_mb_total``: the whole run's peak, weights included). Runs: one warm-up, then ``--runs`` timed runs
(median).

Usage (the H200)::

    python benchmarks/t2i_gpu.py --out benchmarks/results

Script check on a CPU (tiny FLUX, inflate backend; numbers meaningless)::

    python benchmarks/t2i_gpu.py --tiny --device cpu --backend inflate --runs 1 --out /tmp/t2i-check
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from meshforge import export  # noqa: E402
from meshforge.backends import load_backend  # noqa: E402
from meshforge.config import PipelineConfig  # noqa: E402
from meshforge.errors import InputError  # noqa: E402
from meshforge.io.images import load_image  # noqa: E402
from meshforge.pipeline import run  # noqa: E402
from meshforge.t2i import DEFAULT_MODEL, T2IConfig, TextToImage, model_card, text_to_image_stage  # noqa: E402
from meshforge.t2i.random_pipeline import char_tokenizer, tiny_flux_pipeline  # noqa: E402
from meshforge.types import Report  # noqa: E402

SHARED = REPO.parent / "shared"
CHAIR = SHARED / "data" / "images" / "triposr__chair.png"
PROMPT = "a red fire extinguisher"


def full_flux_schnell(device: str, seed: int = 0) -> Any:
    """The FLUX.1-schnell pipeline at its official sizes with random weights, built on ``device`` in bfloat16."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            transformer = FluxTransformer2DModel(  # black-forest-labs/FLUX.1-schnell transformer/config.json
                patch_size=1,
                in_channels=64,
                num_layers=19,
                num_single_layers=38,
                attention_head_dim=128,
                num_attention_heads=24,
                joint_attention_dim=4096,
                pooled_projection_dim=768,
                guidance_embeds=False,
                axes_dims_rope=(16, 56, 56),
            )
            vae = AutoencoderKL(  # vae/config.json
                in_channels=3,
                out_channels=3,
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                block_out_channels=(128, 256, 512, 512),
                layers_per_block=2,
                latent_channels=16,
                norm_num_groups=32,
                sample_size=1024,
                scaling_factor=0.3611,
                shift_factor=0.1159,
                use_quant_conv=False,
                use_post_quant_conv=False,
            )
            clip = CLIPTextModel(  # text_encoder/config.json (CLIP ViT-L/14)
                CLIPTextConfig(
                    hidden_size=768,
                    intermediate_size=3072,
                    num_attention_heads=12,
                    num_hidden_layers=12,
                    projection_dim=768,
                    vocab_size=49408,
                    max_position_embeddings=77,
                    hidden_act="quick_gelu",
                )
            )
            t5 = T5EncoderModel(  # text_encoder_2/config.json (T5 v1.1 XXL encoder)
                T5Config(
                    vocab_size=32128,
                    d_model=4096,
                    d_kv=64,
                    d_ff=10240,
                    num_layers=24,
                    num_heads=64,
                    relative_attention_num_buckets=32,
                    relative_attention_max_distance=128,
                    feed_forward_proj="gated-gelu",
                    is_encoder_decoder=False,
                )
            )
    finally:
        torch.set_default_dtype(previous)
    scheduler = FlowMatchEulerDiscreteScheduler(  # scheduler/scheduler_config.json
        num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False
    )
    return FluxPipeline(
        scheduler=scheduler,
        text_encoder=clip.eval(),
        tokenizer=char_tokenizer(77, pad="<|endoftext|>", eos="<|endoftext|>", bos="<|startoftext|>"),
        text_encoder_2=t5.eval(),
        tokenizer_2=char_tokenizer(512, pad="<pad>", eos="</s>"),
        transformer=transformer.eval(),
        vae=vae.eval(),
    )


def n_parameters(pipe: Any) -> dict[str, int]:
    return {
        name: sum(p.numel() for p in module.parameters())
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }


def triposr_folder(args: argparse.Namespace, tmp: Path) -> str:
    if args.triposr_weights:
        return str(args.triposr_weights)
    from tests.backends.triposr_helpers import write_random_checkpoint

    folder = tmp / "triposr"
    folder.mkdir()
    write_random_checkpoint(folder, args.image)
    return str(folder)


def markdown(result: dict[str, Any]) -> str:
    """The results as a Markdown page (what ``--out`` holds beside the JSON)."""
    t2i = result["t2i"]
    n = sum(t2i["parameters"].values()) / 1e9
    lines = [
        f"# text → image → 3D ({result['device']})",
        "",
        f"`python benchmarks/t2i_gpu.py --runs {result['runs']} --resolution {result['resolution']}`: torch "
        f"{result['torch']}; text to image: {t2i['architecture']} architecture, {t2i['weights']} weights "
        f"({n:.1f} B parameters, {t2i['dtype']}, built on the GPU in {t2i['build_s']} s), {t2i['steps']} steps, "
        f"{t2i['size']}²; 3D: `{result['backend']}` (full-size random checkpoint), isosurface "
        f"{result['resolution']}³, defaults otherwise (20k-face budget, 1024² maps, CPU finishing stages). "
        f"Median of {result['runs']} run(s) after a warm-up.",
        "",
        "| stage | median s | peak VRAM MiB |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {v['median_s']} | {v.get('peak_vram_mb', '')} |" for k, v in result["per_stage"].items()]
    lines += [
        "",
        f"Total {result['total_median_s']} s; peak VRAM {result['peak_vram_mb_total']} MiB; GLB "
        f"{result['glb_bytes']:,} bytes, {result['faces']:,} faces.",
        "",
        f"3D half on: {result['picture_for_3d']}.",
    ]
    return "\n".join(lines) + "\n"


def one_run(t2i: TextToImage, backend: Any, cfg: PipelineConfig, t2i_cfg: T2IConfig, image: Any, cuda: bool) -> dict:
    report = Report()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    picture = text_to_image_stage(t2i, PROMPT, t2i_cfg, report)
    try:  # the generated picture through the 3D half: refused when it holds no object (random weights)
        run(picture, backend, cfg, report=Report())
        used = "generated"
    except InputError as exc:
        used = f"--image (the generated picture was refused: {exc})"
    stages = list(report.stages)
    rep3d = Report()
    peaks: dict[str, float] = {}
    current: list[str] = []

    def boundary(stage: str, index: int, total: int) -> None:  # each stage's own peak VRAM
        if cuda:
            if current:
                peaks[current[0]] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            torch.cuda.reset_peak_memory_stats()
        current[:] = [stage]

    if used != "generated":
        result = run(image, backend, cfg, report=rep3d, on_progress=boundary)
    else:  # pragma: no cover - a real model's picture (not with random weights)
        result = run(picture, backend, cfg, report=rep3d, on_progress=boundary)
    boundary("", 0, 0)
    for s in rep3d.stages:
        if s.name in peaks:
            s.counts["peak_vram_mb"] = peaks[s.name]
    stages += rep3d.stages
    glb = export(result.asset, "glb")
    return {
        "picture_for_3d": used,
        "stages": [{"name": s.name, "seconds": s.seconds, **s.counts} for s in stages],
        "glb_bytes": len(glb),
        "faces": result.asset.mesh.n_faces,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--backend", default="triposr", help="triposr (the benchmark) or inflate (script check)")
    ap.add_argument("--triposr-weights", type=Path, default=None, help="official TripoSR weights folder, if present")
    ap.add_argument("--image", type=Path, default=CHAIR, help="the picture the 3D half runs on")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=256, help="isosurface grid")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="the tiny random FLUX (script check only)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")

    t0 = time.perf_counter()
    pipe = tiny_flux_pipeline() if args.tiny else full_flux_schnell(args.device)
    pipe.set_progress_bar_config(disable=True)
    if args.tiny:
        pipe.to(args.device)
    if cuda:
        torch.cuda.synchronize()
    build_s = time.perf_counter() - t0
    card = {**model_card(DEFAULT_MODEL), "license": "random weights (FLUX.1-schnell architecture)"}
    t2i = TextToImage(
        pipe=pipe,
        card=card,
        device=args.device,
        dtype=str(next(pipe.transformer.parameters()).dtype).removeprefix("torch."),
        offload=False,
        load_seconds=build_s,
    )
    t2i_cfg = T2IConfig(steps=args.steps, guidance=0.0, size=args.size, seed=0)
    cfg = PipelineConfig().with_options(resolution=args.resolution)
    image = load_image(args.image)
    with tempfile.TemporaryDirectory() as tmp:
        weights = triposr_folder(args, Path(tmp)) if args.backend == "triposr" else None
        backend = load_backend(args.backend, weights=weights, device=args.device)
        one_run(t2i, backend, cfg, t2i_cfg, image, cuda)  # warm-up
        runs = [one_run(t2i, backend, cfg, t2i_cfg, image, cuda) for _ in range(args.runs)]

    names = [s["name"] for s in runs[0]["stages"]]
    per_stage = {}
    for name in names:
        rows = [next(s for s in r["stages"] if s["name"] == name) for r in runs]
        per_stage[name] = {
            "median_s": round(statistics.median(r["seconds"] for r in rows), 4),
            **({"peak_vram_mb": rows[-1]["peak_vram_mb"]} if "peak_vram_mb" in rows[-1] else {}),
        }
    result = {
        "benchmark": "t2i_gpu",
        "prompt": PROMPT,
        "t2i": {
            "architecture": "FLUX.1-schnell" if not args.tiny else "tiny", "weights": "random", "size": args.size,
            "steps": args.steps, "dtype": t2i.dtype, "parameters": n_parameters(pipe), "build_s": round(build_s, 2),
        },
        "backend": args.backend,
        "resolution": args.resolution,
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "runs": args.runs,
        "per_stage": per_stage,
        "total_median_s": round(sum(v["median_s"] for v in per_stage.values()), 3),
        # each stage resets the peak counter: the run's peak is the largest stage peak
        "peak_vram_mb_total": max((v.get("peak_vram_mb", 0.0) for v in per_stage.values()), default=None)
        if cuda
        else None,
        "picture_for_3d": runs[-1]["picture_for_3d"],
        "glb_bytes": runs[-1]["glb_bytes"],
        "faces": runs[-1]["faces"],
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "t2i_gpu" if not args.tiny else "t2i_gpu_tiny_check"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
