"""Random TRELLIS.2 checkpoints in the official layout, for smoke tests, parity fixtures and benchmarks.

:func:`write_random_checkpoint` writes::

    DIR/pipeline.json                                     official models/samplers/normalisation
    DIR/ckpts/<ckpt>.json + .safetensors                  one per model of pipeline.json
    DIR/microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16.{json,safetensors}
                                                          the v1 decoder where pipeline.json's reference points
    DIR/facebook/dinov3-vitl16-pretrain-lvd1689m/         a random DINOv3 in Hugging Face layout
                                                          (config.json + model.safetensors)

Sizes: ``"full"`` uses the official constructor arguments (:data:`manifest_keys.json`, derived from the
reference's ``configs/``) and the real DINOv3 ViT-L/16 config — about 4 B parameters, built and written one
model at a time; ``"tiny"`` uses small widths/depths with the same structure, so the whole CPU pipeline
runs in seconds.

**Non-degenerate random weights.** The reference zero-initialises the AdaLN modulation and output layers
of its flow transformers (every velocity would be 0): every parameter of a flow that is entirely zero after
construction is redrawn from N(0, 0.02²) (:func:`rerandomise_zero_parameters`; zero biases stay zero: no
constant drift for guidance to amplify).

**A plausible occupancy (sparse-structure decoder).** Random convolutions turn the latent into salt-and-pepper
logits. Instead the v1 decoder (``input_layer`` → identity ResBlocks → ``UpsampleBlock3d`` convs →
``out_layer`` = norm, SiLU, conv; the reference's attribute names) is set (:func:`shape_sparse_structure_decoder`)
to compute a *low-pass-filtered copy of the latent's first channel plus a bump*: the first conv averages
latent channel 0 over 3³ and adds 1 (channel 0) and writes a constant 8 (channel 1); every ResBlock's last
conv is zero (identity blocks); each up-sampling conv averages channel 0 over 3³ again and passes channel 1
through its centre tap; the output conv reads channel 0 after the channel LayerNorm (monotone in it, because
channel 1 is a large constant) at its centre tap. Zero padding makes every average smaller near the grid's
faces, so the "+1" becomes a bump in the middle: the logits are smooth noise on a central hill. The output
bias is then set to the ``1 − occupancy`` quantile of the logits of a few calibration latents (default 3 %
of the 64³ grid) — for ``tiny`` (and ``full`` built on a GPU), latents sampled from the random flow itself
with pipeline.json's sampler (:func:`sample_structure_latents`), so the pipeline sees the same distribution;
for ``full`` on a CPU, N(0, 1) ones —
giving a few rounded lumps away from the grid's faces: never empty, never full. The texture decoder's
alpha output bias is raised (+3 → opacity ≈ 1, so ``alphaMode`` stays OPAQUE); the SLat decoders'
zero-initialised residual convolutions are redrawn (N(0, 0.05²); else the texture decoder's output is
constant), and the shape decoder's subdivision heads get a bias of +0.5 (a little over half the children:
enough neighbours for the dual grid to close quads, bounded growth).

Source: TRELLIS.2 (2025) checkpoint layout; the shaping above is ours.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from ...errors import InputError
from .conditioning import DINOV3_ID
from .loading import PIPELINE_JSON, SS_DECODER_REF, build_model

__all__ = [
    "SIZES",
    "TINY_DINOV3",
    "TINY_MODELS",
    "calibrate_structure",
    "full_dinov3_config",
    "model_specs",
    "official_pipeline",
    "rerandomise_zero_parameters",
    "sample_structure_latents",
    "shape_sparse_structure_decoder",
    "write_random_checkpoint",
    "write_random_dinov3",
]

SIZES = ("tiny", "full")

#: tiny DINOv3: 2 layers of width 64 (the condition width of the tiny flows), 4 registers, patch 16
TINY_DINOV3: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_register_tokens": 4,
    "patch_size": 16,
    "image_size": 224,
}

_TINY_FLOW = {
    "model_channels": 128,
    "cond_channels": 64,
    "num_blocks": 2,
    "num_heads": 2,
    "mlp_ratio": 2.0,
    "pe_mode": "rope",
    "share_mod": True,
    "initialization": "scaled",
    "qk_rms_norm": True,
    "qk_rms_norm_cross": True,
    "dtype": "float32",
}
_TINY_UNET = {
    "model_channels": [64, 32, 16, 16, 8],
    "latent_channels": 32,
    "num_blocks": [1, 1, 0, 0, 0],
    "block_type": ["SparseConvNeXtBlock3d"] * 5,
    "up_block_type": ["SparseResBlockC2S3d"] * 4,
    "block_args": [{"use_checkpoint": False}] * 5,
    "use_fp16": False,
}
#: tiny constructor args per official checkpoint reference (same classes and structure as the full ones)
TINY_MODELS: dict[str, dict[str, Any]] = {
    "ckpts/ss_flow_img_dit_1_3B_64_bf16": {
        "name": "SparseStructureFlowModel",
        "args": {"resolution": 16, "in_channels": 8, "out_channels": 8, **_TINY_FLOW},
    },
    "ckpts/slat_flow_img2shape_dit_1_3B_512_bf16": {
        "name": "ElasticSLatFlowModel",
        "args": {"resolution": 32, "in_channels": 32, "out_channels": 32, **_TINY_FLOW},
    },
    "ckpts/slat_flow_img2shape_dit_1_3B_1024_bf16": {
        "name": "ElasticSLatFlowModel",
        "args": {"resolution": 64, "in_channels": 32, "out_channels": 32, **_TINY_FLOW},
    },
    "ckpts/slat_flow_imgshape2tex_dit_1_3B_512_bf16": {
        "name": "ElasticSLatFlowModel",
        "args": {"resolution": 32, "in_channels": 64, "out_channels": 32, **_TINY_FLOW},
    },
    "ckpts/slat_flow_imgshape2tex_dit_1_3B_1024_bf16": {
        "name": "ElasticSLatFlowModel",
        "args": {"resolution": 64, "in_channels": 64, "out_channels": 32, **_TINY_FLOW},
    },
    "ckpts/shape_dec_next_dc_f16c32_fp16": {
        "name": "FlexiDualGridVaeDecoder",
        "args": {"resolution": 512, **_TINY_UNET},
    },
    "ckpts/tex_dec_next_dc_f16c32_fp16": {
        "name": "SparseUnetVaeDecoder",
        "args": {"out_channels": 6, "pred_subdiv": False, **_TINY_UNET},
    },
    SS_DECODER_REF: {
        "name": "SparseStructureDecoder",
        "args": {
            "out_channels": 1,
            "latent_channels": 8,
            "num_res_blocks": 1,
            "num_res_blocks_middle": 1,
            "channels": [32, 16, 8],
            "use_fp16": False,
        },
    },
}

#: std of the redrawn zero-initialised convolutions of the SLat decoders (their residual branches)
_DECODER_STD = 0.05
#: bias of the shape decoder's subdivision heads (logit > 0 subdivides): a little over half the children
_SUBDIV_BIAS = 0.5

#: the flows' dtype in the full random checkpoint (the official file names say bf16)
_FULL_FLOW_DTYPE = "bfloat16"


def _manifest(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(resources.files(__package__).joinpath(name).read_text())
    return data


def official_pipeline() -> dict[str, Any]:
    """The official ``pipeline.json`` (``manifest_pipeline.json``, see its ``source``)."""
    return copy.deepcopy(_manifest("manifest_pipeline.json")["pipeline"])


def full_dinov3_config() -> dict[str, Any]:
    """The DINOv3 ViT-L/16 ``DINOv3ViTConfig`` arguments of ``facebook/dinov3-vitl16-pretrain-lvd1689m``."""
    return dict(_manifest("manifest_pipeline.json")["dinov3_config"])


def model_specs(size: str) -> dict[str, dict[str, Any]]:
    """Checkpoint reference → ``{"name": class, "args": {...}}`` for ``size`` (``"tiny"`` or ``"full"``).

    Raises:
        InputError: unknown size.
    """
    if size == "tiny":
        return copy.deepcopy(TINY_MODELS)
    if size != "full":
        raise InputError(f"unknown random checkpoint size {size!r} (choices: {', '.join(SIZES)})")
    specs = {}
    for ref, entry in _manifest("manifest_keys.json")["models"].items():
        args = dict(entry["args"])
        if entry["name"] in ("SparseStructureFlowModel", "SLatFlowModel", "ElasticSLatFlowModel"):
            args.setdefault("dtype", _FULL_FLOW_DTYPE)
        specs[ref] = {"name": entry["name"], "args": args}
    return specs


def rerandomise_zero_parameters(model: Any, generator: Any, std: float = 0.02) -> list[str]:
    """Redraw every weight matrix that is entirely zero from ``N(0, std²)`` (the AdaLN and output layers the
    reference zero-initialises). Zero biases stay zero, so a velocity has no constant drift (which guidance
    would amplify into a shifted latent). Returns the names redrawn."""
    import torch

    redrawn = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and not bool(p.detach().float().abs().max() > 0):
                noise = torch.randn(p.shape, generator=generator, dtype=torch.float32) * std
                p.copy_(noise.to(p.dtype))
                redrawn.append(name)
    return redrawn


def shape_sparse_structure_decoder(
    model: Any,
    generator: Any,
    *,
    occupancy: float = 0.03,
    latent_shape: tuple[int, ...] | None = None,
    latents: Any = None,
    pooled_resolution: int | None = None,
) -> float:
    """Set the v1 sparse-structure decoder to a smooth-noise-on-a-hill occupancy (see the module docstring).

    Args:
        model: a ``SparseStructureDecoder`` with the reference's attribute names.
        generator: a ``torch.Generator`` for the calibration latents.
        occupancy: the fraction of the output grid with logit > 0 on N(0, 1) latents; with
            ``pooled_resolution``, the fraction of that coarser grid occupied after the pipeline's max-pool
            (TRELLIS.2 pools the 64³ occupancy to 32³ for its 1024 cascades: the structure's token count).
        latent_shape: ``[B, C, R, R, R]`` of the calibration latents (default ``[2, latent_channels, 16³]``).
        latents: calibration latents to use instead of N(0, 1) ones (e.g. samples of the random flow).

    Returns:
        The output bias chosen.
    """
    import torch

    first = model.input_layer
    k = 1.0 / 27.0
    with torch.no_grad():
        for module in model.modules():  # identity residual blocks
            conv2 = getattr(module, "conv2", None)
            if isinstance(conv2, torch.nn.Conv3d):
                conv2.weight.zero_()
                if conv2.bias is not None:
                    conv2.bias.zero_()
        first.weight.zero_()
        first.bias.zero_()
        first.weight[0, 0] = k**0.5  # keeps unit variance of the averaged noise
        first.bias[0] = 1.0
        first.bias[1] = 8.0
        for module in model.blocks:
            conv = getattr(module, "conv", None)
            if not isinstance(conv, torch.nn.Conv3d):
                continue
            conv.weight.zero_()
            if conv.bias is not None:
                conv.bias.zero_()
            for sub in range(8):  # pixel shuffle: output channel c, sub-voxel s ← conv channel 8c + s
                conv.weight[sub, 0] = k
                conv.weight[8 + sub, 1, 1, 1, 1] = 1.0
        out_conv = model.out_layer[2]
        out_conv.weight.zero_()
        out_conv.weight[0, 0, 1, 1, 1] = 1.0
        out_conv.bias.zero_()
        channels = int(first.weight.shape[1])
        shape = latent_shape or (2, channels, 16, 16, 16)
        if latents is None:
            latents = torch.randn(shape, generator=generator)
        probe = _float32_copy(model)  # calibrate in float32 (a float16 torso may not run on the CPU)
        logits = probe(latents.to(next(probe.parameters()).device)).float()
        grid = int(logits.shape[-1])
        if pooled_resolution is None or pooled_resolution >= grid:
            bias = -float(torch.quantile(logits.flatten(), 1 - occupancy))
        else:  # the pooled occupancy falls as the bias falls: bisect
            pooled = torch.nn.functional.max_pool3d(logits, grid // pooled_resolution)
            lo, hi = -float(pooled.max()) - 1.0, -float(pooled.min()) + 1.0
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                if float((pooled + mid > 0).float().mean()) > occupancy:
                    hi = mid
                else:
                    lo = mid
            bias = 0.5 * (lo + hi)
        out_conv.bias.fill_(bias)
    return bias


def _tune_decoders(ref: str, model: Any) -> None:
    """Texture decoder: opaque alpha; shape decoder: fewer subdivisions (see the module docstring)."""
    import torch

    with torch.no_grad():
        if "tex_dec" in ref:
            last = [m for m in model.modules() if isinstance(getattr(m, "bias", None), torch.Tensor)]
            out = [m for m in last if m.bias.shape == (6,)]
            if out:
                out[-1].bias[5] = 3.0
        if "shape_dec" in ref:
            for name, module in model.named_modules():
                if name.endswith("to_subdiv") and isinstance(getattr(module, "bias", None), torch.Tensor):
                    module.bias.fill_(_SUBDIV_BIAS)


def _save(model: Any, base: Path, ref: str, spec: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    path = base / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path.with_name(path.name + ".safetensors")), metadata={"format": "pt"})
    path.with_name(path.name + ".json").write_text(json.dumps(spec, indent=2))


def write_random_dinov3(folder: str | os.PathLike[str], size: str = "tiny", seed: int = 0) -> Path:
    """A random ``DINOv3ViTModel`` saved with ``save_pretrained`` (Hugging Face layout) into ``folder``.

    Raises:
        InputError: unknown size.
        MissingDependency: transformers is missing.
    """
    import torch

    from ...errors import MissingDependency

    if size not in SIZES:
        raise InputError(f"unknown random checkpoint size {size!r} (choices: {', '.join(SIZES)})")
    try:
        from transformers import DINOv3ViTConfig, DINOv3ViTModel
    except ImportError as exc:
        raise MissingDependency(f"a random DINOv3 needs 'transformers' >= 4.56: {exc}") from None
    config = DINOv3ViTConfig(**(TINY_DINOV3 if size == "tiny" else full_dinov3_config()))
    torch.manual_seed(seed)
    model = DINOv3ViTModel(config).eval()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    from .conditioning import quiet_transformers

    quiet_transformers()
    model.save_pretrained(out, safe_serialization=True)
    return out


def write_random_checkpoint(
    out: str | os.PathLike[str],
    size: str = "tiny",
    seed: int = 0,
    *,
    with_dinov3: bool = True,
    on_model: Callable[[str, int], None] | None = None,
    device: str | None = None,
) -> Path:
    """Write a random TRELLIS.2 checkpoint folder in the official layout (see the module docstring).

    Args:
        out: the folder to create (may exist; files are overwritten).
        size: ``"tiny"`` or ``"full"``.
        seed: seed of every random draw (model ``i`` uses ``seed + i``).
        with_dinov3: also write the random DINOv3 under ``<out>/facebook/dinov3-vitl16-pretrain-lvd1689m``.
        on_model: called as ``on_model(ref, n_parameters)`` after each model is written.
        device: where the models are built and initialised (default the CPU). ``"cuda"`` writes a full
            checkpoint in a fraction of the time; the default initialisation then draws from the GPU's
            generator, so the values differ from a CPU-built checkpoint of the same seed (the re-drawn layers
            and the calibrations use the seeded CPU generator either way). On a GPU the full checkpoint's
            sparse-structure decoder is calibrated on samples of its random flow, as the tiny one always is
            (N(0, 1) calibration latents can miss the flow's distribution and leave the structure empty or
            full; on a CPU sampling the 1.3 B-parameter flow would take minutes).

    Returns:
        The folder.

    Raises:
        InputError: unknown size.
        BackendError: a model class cannot be built (the networks are missing).
    """
    import torch

    specs = model_specs(size)
    base = Path(out)
    base.mkdir(parents=True, exist_ok=True)
    pipeline = official_pipeline()
    if size == "tiny":
        pipeline["args"]["default_pipeline_type"] = "512"
    (base / PIPELINE_JSON).write_text(json.dumps(pipeline, indent=2))
    ss_latents = None
    on_cuda = str(device or "cpu").startswith("cuda")
    for i, (ref, spec) in enumerate(specs.items()):
        torch.manual_seed(seed + i)
        generator = torch.Generator().manual_seed(seed + i)
        if on_cuda:
            torch.cuda.manual_seed_all(seed + i)
        with torch.device(device or "cpu"):
            model = build_model(spec["name"], spec["args"])
        if spec["name"] in ("SparseStructureFlowModel", "SLatFlowModel", "ElasticSLatFlowModel"):
            rerandomise_zero_parameters(model, generator)
            if spec["name"] == "SparseStructureFlowModel" and (size == "tiny" or on_cuda):
                ss_latents = sample_structure_latents(model, pipeline["args"], generator)
        elif spec["name"] == "SparseStructureDecoder":
            shape_sparse_structure_decoder(model, generator, latents=ss_latents)
        else:
            rerandomise_zero_parameters(model, generator, std=_DECODER_STD)
            _tune_decoders(ref, model)
        _save(model, base, ref, spec)
        if on_model is not None:
            on_model(ref, sum(int(p.numel()) for p in model.parameters()))
        del model
    if with_dinov3:
        write_random_dinov3(base / DINOV3_ID, size, seed)
    return base


class _LatentCaught(Exception):
    """Stops a sparse-structure pass once the decoder's input latent is captured."""


def calibrate_structure(
    folder: str | os.PathLike[str],
    images: list[Any],
    *,
    seeds: tuple[int, ...] = (0, 42),
    occupancy: float = 0.03,
    pooled_resolution: int | None = None,
    device: str = "cpu",
) -> float:
    """Re-calibrate a random checkpoint's sparse-structure decoder on the structure latents of given pictures.

    The decoder's occupancy (:func:`shape_sparse_structure_decoder`) follows the statistics of the latent it
    is given, and a random flow's latent for a real picture's DINOv3 tokens can sit far from the calibration
    latents (an empty or a full structure: seen with a full checkpoint built on a GPU). This runs the
    checkpoint's own conditioning and sparse-structure flow on ``images`` at each of ``seeds`` (the noise as
    :meth:`~.pipeline.Trellis2Pipeline.run` draws it after ``torch.manual_seed(seed)``), sets the decoder's
    output bias to the ``1 − occupancy`` quantile of its logits over all of them, and rewrites the decoder's
    safetensors in place. For benchmarks and smoke tests of random checkpoints only.

    Args:
        folder: a checkpoint written by :func:`write_random_checkpoint`.
        images: pictures as the pipeline conditions on them (PIL RGB images, e.g. ``crop_object``'s).
        seeds: torch seeds of the structure noise (42 is ``generate``'s default, 0 the benchmarks').
        occupancy: the target fraction of the 64³ grid, or of the ``pooled_resolution``³ grid (see
            :func:`shape_sparse_structure_decoder`; 0.29 of 32³ ≈ 9,500 structure tokens, which a 1024
            cascade grows to its 49,152-token cap).
        pooled_resolution: measure the occupancy after max-pooling to this resolution.
        device: where the pipeline runs.

    Returns:
        The new output bias.

    Raises:
        BackendError: the checkpoint cannot be loaded.
    """
    import torch

    from .pipeline import Trellis2Pipeline

    base = Path(folder)
    pipe = Trellis2Pipeline.from_folder(base, device=device, low_vram=False)
    decoder = pipe.models["sparse_structure_decoder"]
    latents: list[Any] = []

    def catch(_module: Any, args: tuple[Any, ...]) -> None:
        latents.append(args[0].detach().float().cpu())
        raise _LatentCaught

    hook = decoder.register_forward_pre_hook(catch)
    try:
        for seed in seeds:
            for image in images:
                torch.manual_seed(seed)
                cond = pipe.condition([image], 512)
                try:
                    pipe.sample_sparse_structure(cond, 32)
                except _LatentCaught:
                    pass
    finally:
        hook.remove()
    bias = shape_sparse_structure_decoder(
        decoder,
        torch.Generator().manual_seed(0),
        occupancy=occupancy,
        latents=torch.cat(latents),
        pooled_resolution=pooled_resolution,
    )
    spec = json.loads((base / f"{SS_DECODER_REF}.json").read_text())
    _save(decoder, base, SS_DECODER_REF, spec)
    return bias


def sample_structure_latents(flow: Any, args: dict[str, Any], generator: Any, n: int = 2) -> Any:
    """Latents of the random sparse-structure flow as the pipeline samples them (pipeline.json's sampler and
    params, a random unit-variance condition of ``flow.cond_channels`` and a zero negative one), for the
    decoder's occupancy calibration. ``None`` when the flow cannot run here (it needs no GPU when tiny)."""
    import torch

    from .sampler import make_sampler

    spec = args["sparse_structure_sampler"]
    width = int(getattr(flow, "cond_channels", 0) or 0)
    reso, channels = int(getattr(flow, "resolution", 16)), int(getattr(flow, "in_channels", 8))
    if width <= 0:
        return None
    cond = torch.randn(n, 64 + 5, width, generator=generator)
    cond = torch.nn.functional.layer_norm(cond, cond.shape[-1:])
    noise = torch.randn(n, channels, reso, reso, reso, generator=generator)
    device = next(flow.parameters()).device  # drawn on the CPU generator, run where the flow is
    cond, noise = cond.to(device), noise.to(device)
    flow.eval()
    with torch.no_grad():
        out = make_sampler(spec).sample(flow, noise, cond=cond, neg_cond=torch.zeros_like(cond), **spec["params"])
    return out.samples.float().cpu()


def _float32_copy(model: Any) -> Any:
    """A float32 copy of a model whose forward casts to its ``dtype`` attribute (the v1 decoder's torso)."""
    import torch

    probe = copy.deepcopy(model).float()
    if isinstance(getattr(probe, "dtype", None), torch.dtype):
        probe.dtype = torch.float32
    if hasattr(probe, "use_fp16"):
        probe.use_fp16 = False
    return probe
