"""Make TRELLIS.2 parity fixtures by running the REFERENCE implementation on tiny random weights.

The reference (microsoft/TRELLIS.2 with its compiled FlexGEMM and o-voxel) is imported from the
folder given by ``--reference`` (the folder holding the ``trellis2`` package); none of its code is
in this repository. Run it on a CUDA machine where FlexGEMM and o-voxel are installed::

    python benchmarks/trellis2_fixture.py --reference /path/to/TRELLIS.2 --seed 0 --size tiny \
        --image shared/data/images/<a picture with alpha or our cut-out> --out DIR

It writes, under ``DIR/seed<N>_<size>/``:

- ``weights/``: a random checkpoint in the official layout (``pipeline.json``, ``ckpts/<name>.json``
  + ``.safetensors``, the v1 sparse-structure decoder under
  ``microsoft/TRELLIS-image-large/ckpts/``, a random DINOv3 in Hugging Face layout under
  ``facebook/dinov3-vitl16-pretrain-lvd1689m/``). Weights are rounded to fp16 before the run and
  stored in fp16, so the stored checkpoint is exactly the model that ran.
- ``image.png``: the conditioning picture (the reference's preprocessed crop, RGB premultiplied).
- ``stages_<pipeline>.npz`` for ``512`` and ``1024_cascade``: every stage's input and output
  (condition tokens, the noise of each sampler, the first velocity call of each flow model, the
  sparse-structure latent, decoder logits and occupancy coordinates, shape/texture SLats, cascade
  coordinates, subdivision masks, mesh, PBR voxels).
- ``meta.json``: seed, sampler parameters, versions, device, precision.

How the random weights are made (random weights make degenerate outputs otherwise): every
parameter the reference zero-initialises (AdaLN modulation, output layers, residual branches) is
re-drawn from N(0, 0.02²); the sparse-structure decoder's output bias is shifted so that about
0.15 % of its 64³ logits are positive (a few hundred occupied voxels, not an empty or full grid);
each subdivision head's bias is shifted so that about a quarter of the children are kept (the
random heads would otherwise keep half and densify the 1024³ output). Both shifts are calibrated on
a random latent before the seeded run starts and are stored in the checkpoint.

Precision: all models fp32 (``use_fp16`` false), torch's TF32 off. FlexGEMM's Triton sparse-convolution
kernels run at their default, which rounds fp32 inputs to TF32 inside the GEMMs: the decoder stages
therefore differ from an fp32 computation by ~1e-3 relative (tests/backends/trellis2/test_parity.py
bounds that, and forces the reference's subdivisions). Attention: flash_attn is replaced by an SDPA
shim (same math); the dense attention uses the reference's own SDPA backend.

``--manifest OUT.json`` also writes the key names and shapes of every official model, derived by
instantiating the reference classes with the official arguments (``configs/`` of the reference and
TRELLIS v1's ``ss_dec_conv3d_16l8_fp16``) on the meta device.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tarfile
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

PIPELINES = ("512", "1024_cascade")
DINOV3_ID = "facebook/dinov3-vitl16-pretrain-lvd1689m"
SS_DECODER_REF = "microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16"

OFFICIAL_MODELS = {
    "sparse_structure_flow_model": "ckpts/ss_flow_img_dit_1_3B_64_bf16",
    "sparse_structure_decoder": SS_DECODER_REF,
    "shape_slat_flow_model_512": "ckpts/slat_flow_img2shape_dit_1_3B_512_bf16",
    "shape_slat_flow_model_1024": "ckpts/slat_flow_img2shape_dit_1_3B_1024_bf16",
    "shape_slat_decoder": "ckpts/shape_dec_next_dc_f16c32_fp16",
    "tex_slat_flow_model_512": "ckpts/slat_flow_imgshape2tex_dit_1_3B_512_bf16",
    "tex_slat_flow_model_1024": "ckpts/slat_flow_imgshape2tex_dit_1_3B_1024_bf16",
    "tex_slat_decoder": "ckpts/tex_dec_next_dc_f16c32_fp16",
}

SAMPLERS = {
    # official guidance settings; fewer steps keep the fixture run short
    "sparse_structure_sampler": (7.5, 0.7, [0.6, 1.0], 5.0),
    "shape_slat_sampler": (7.5, 0.5, [0.6, 1.0], 3.0),
    "tex_slat_sampler": (1.0, 0.0, [0.6, 0.9], 3.0),
}


# --------------------------------------------------------------------------------------------
# shims: the reference imports compiled modules at import time; only flex_gemm's conv and
# o-voxel's hash are called for real. flash_attn becomes SDPA (same math), cumesh is not needed
# for inference (fill_holes is skipped: our pipeline cleans the mesh itself).
# --------------------------------------------------------------------------------------------
def _flash_attn_shim() -> types.ModuleType:
    import torch.nn.functional as F

    def _varlen(q, k, v, cu_q, cu_k):
        out = torch.empty_like(q)
        cu_q = cu_q.tolist()
        cu_k = cu_k.tolist()
        for i in range(len(cu_q) - 1):
            a, b = cu_q[i], cu_q[i + 1]
            c, d = cu_k[i], cu_k[i + 1]
            qi = q[a:b].transpose(0, 1)[None]
            ki = k[c:d].transpose(0, 1)[None]
            vi = v[c:d].transpose(0, 1)[None]
            out[a:b] = F.scaled_dot_product_attention(qi, ki, vi)[0].transpose(0, 1)
        return out

    def varlen_qkvpacked(qkv, cu, max_len, *a, **kw):
        return _varlen(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu, cu)

    def varlen_kvpacked(q, kv, cu_q, cu_k, mq, mk, *a, **kw):
        return _varlen(q, kv[:, 0], kv[:, 1], cu_q, cu_k)

    def varlen(q, k, v, cu_q, cu_k, mq, mk, *a, **kw):
        return _varlen(q, k, v, cu_q, cu_k)

    def dense(q, k, v, *a, **kw):  # [B, L, H, D]
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)

    m = types.ModuleType("flash_attn")
    m.flash_attn_varlen_qkvpacked_func = varlen_qkvpacked  # type: ignore[attr-defined]
    m.flash_attn_varlen_kvpacked_func = varlen_kvpacked  # type: ignore[attr-defined]
    m.flash_attn_varlen_func = varlen  # type: ignore[attr-defined]
    m.flash_attn_qkvpacked_func = lambda qkv, *a, **kw: dense(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])  # type: ignore[attr-defined]
    m.flash_attn_kvpacked_func = lambda q, kv, *a, **kw: dense(q, kv[:, :, 0], kv[:, :, 1])  # type: ignore[attr-defined]
    m.flash_attn_func = dense  # type: ignore[attr-defined]
    return m


class _AnyModule(types.ModuleType):
    """A module whose every attribute is a placeholder (for imports the run never calls)."""

    def __getattr__(self, item: str) -> Any:
        if item.startswith("__"):
            raise AttributeError(item)
        return type(item, (), {})


def _stub(name: str, **attrs: Any) -> None:
    m = _AnyModule(name)
    for k, v in attrs.items():
        setattr(m, k, v)
    sys.modules[name] = m


def import_reference(path: str, *, need_kernels: bool = True) -> dict[str, Any]:
    """Import the reference from ``path``; returns the modules the fixture run uses."""
    os.environ.setdefault("ATTN_BACKEND", "sdpa")  # the dense attention has an SDPA path
    os.environ.setdefault("SPARSE_ATTN_BACKEND", "flash_attn")  # the sparse one: the shim below
    os.environ.setdefault("SPARSE_CONV_BACKEND", "flex_gemm")
    if need_kernels:
        # transformers probes for flash_attn when its models are imported: do that before the shim
        from transformers import DINOv3ViTModel  # noqa: F401
    import importlib.machinery

    shim = _flash_attn_shim()
    shim.__spec__ = importlib.machinery.ModuleSpec("flash_attn", None)
    sys.modules["flash_attn"] = shim
    for name in ("cumesh", "nvdiffrast", "nvdiffrast.torch", "utils3d", "utils3d.torch"):
        if name not in sys.modules:
            _stub(name)
    for name in ("trimesh", "trimesh.visual", "plyfile", "zstandard"):  # o-voxel's I/O, unused here
        try:
            __import__(name)
        except ImportError:
            _stub(name)
    try:
        import easydict  # noqa: F401
    except ImportError:

        class EasyDict(dict):
            __getattr__ = dict.__getitem__
            __setattr__ = dict.__setitem__

        _stub("easydict", EasyDict=EasyDict)
    if not need_kernels:
        # manifest only (CPU): parameters are built without the compiled kernels
        fg = types.ModuleType("flex_gemm")
        ops = types.ModuleType("flex_gemm.ops")
        spc = types.ModuleType("flex_gemm.ops.spconv")
        gs = types.ModuleType("flex_gemm.ops.grid_sample")
        spc.sparse_submanifold_conv3d = None  # type: ignore[attr-defined]
        gs.grid_sample_3d = None  # type: ignore[attr-defined]
        fg.ops = ops  # type: ignore[attr-defined]
        ops.spconv = spc  # type: ignore[attr-defined]
        ops.grid_sample = gs  # type: ignore[attr-defined]
        ov = types.ModuleType("o_voxel")
        ovc = types.ModuleType("o_voxel.convert")
        ovc.flexible_dual_grid_to_mesh = None  # type: ignore[attr-defined]
        ov.convert = ovc  # type: ignore[attr-defined]
        sys.modules.update(
            {
                "o_voxel": ov,
                "o_voxel.convert": ovc,
                "flex_gemm": fg,
                "flex_gemm.ops": ops,
                "flex_gemm.ops.spconv": spc,
                "flex_gemm.ops.grid_sample": gs,
            }
        )
    sys.path.insert(0, path)
    import trellis2.models as models
    from trellis2.modules import sparse as sp
    from trellis2.pipelines import samplers

    out: dict[str, Any] = {"models": models, "sp": sp, "samplers": samplers}
    if need_kernels:
        import importlib.util

        import o_voxel  # noqa: F401  (the installed, compiled package)
        from trellis2.modules import image_feature_extractor
        from trellis2.pipelines.trellis2_image_to_3d import Trellis2ImageTo3DPipeline

        out["pipeline_cls"] = Trellis2ImageTo3DPipeline
        out["image_feature_extractor"] = image_feature_extractor
        del importlib
    return out


# --------------------------------------------------------------------------------------------
# configurations
# --------------------------------------------------------------------------------------------
def official_configs(reference: str) -> dict[str, dict[str, Any]]:
    """``{model name: {"name": class, "args": {...}}}`` from the reference's ``configs/``."""
    root = Path(reference) / "configs"
    gen = lambda f: json.loads((root / "gen" / f).read_text())["models"]["denoiser"]  # noqa: E731
    vae = lambda f: json.loads((root / "scvae" / f).read_text())["models"]["decoder"]  # noqa: E731
    return {
        "sparse_structure_flow_model": gen("ss_flow_img_dit_1_3B_64_bf16.json"),
        "sparse_structure_decoder": {
            "name": "SparseStructureDecoder",
            "args": {
                "out_channels": 1,
                "latent_channels": 8,
                "num_res_blocks": 2,
                "num_res_blocks_middle": 2,
                "channels": [512, 128, 32],
                "use_fp16": True,
            },
        },
        "shape_slat_flow_model_512": gen("slat_flow_img2shape_dit_1_3B_512_bf16.json"),
        "shape_slat_flow_model_1024": gen("slat_flow_img2shape_dit_1_3B_512_bf16_ft1024.json"),
        "shape_slat_decoder": vae("shape_vae_next_dc_f16c32_fp16.json"),
        "tex_slat_flow_model_512": gen("slat_flow_imgshape2tex_dit_1_3B_512_bf16.json"),
        "tex_slat_flow_model_1024": gen("slat_flow_imgshape2tex_dit_1_3B_512_bf16_ft1024.json"),
        "tex_slat_decoder": vae("tex_vae_next_dc_f16c32_fp16.json"),
    }


def tiny_configs(latent: int = 8, width: int = 64, cond: int = 64) -> dict[str, dict[str, Any]]:
    """Small versions of every model: same classes and structure, few channels and blocks."""
    flow = {
        "model_channels": width,
        "cond_channels": cond,
        "num_blocks": 2,
        "num_heads": 2,
        "mlp_ratio": 5.3334,
        "pe_mode": "rope",
        "share_mod": True,
        "initialization": "scaled",
        "qk_rms_norm": True,
        "qk_rms_norm_cross": True,
    }
    unet = {
        "model_channels": [32, 32, 16, 16, 8],
        "latent_channels": latent,
        "num_blocks": [1, 1, 1, 1, 0],
        "block_type": ["SparseConvNeXtBlock3d"] * 5,
        "up_block_type": ["SparseResBlockC2S3d"] * 4,
        "block_args": [{"use_checkpoint": False}] * 5,
        "use_fp16": False,
    }
    return {
        "sparse_structure_flow_model": {
            "name": "SparseStructureFlowModel",
            "args": {"resolution": 16, "in_channels": 8, "out_channels": 8, **flow},
        },
        "sparse_structure_decoder": {
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
        "shape_slat_flow_model_512": {
            "name": "SLatFlowModel",
            "args": {"resolution": 32, "in_channels": latent, "out_channels": latent, **flow},
        },
        "shape_slat_flow_model_1024": {
            "name": "SLatFlowModel",
            "args": {"resolution": 64, "in_channels": latent, "out_channels": latent, **flow},
        },
        "shape_slat_decoder": {
            "name": "FlexiDualGridVaeDecoder",
            "args": {"resolution": 256, **unet},
        },
        "tex_slat_flow_model_512": {
            "name": "SLatFlowModel",
            "args": {"resolution": 32, "in_channels": 2 * latent, "out_channels": latent, **flow},
        },
        "tex_slat_flow_model_1024": {
            "name": "SLatFlowModel",
            "args": {"resolution": 64, "in_channels": 2 * latent, "out_channels": latent, **flow},
        },
        "tex_slat_decoder": {
            "name": "SparseUnetVaeDecoder",
            "args": {"out_channels": 6, "pred_subdiv": False, **unet},
        },
    }


def pipeline_json(latent: int, gen: torch.Generator, steps: int) -> dict[str, Any]:
    def sampler(g: float, r: float, iv: list[float], rt: float) -> dict[str, Any]:
        return {
            "name": "FlowEulerGuidanceIntervalSampler",
            "args": {"sigma_min": 1e-5},
            "params": {
                "steps": steps,
                "guidance_strength": g,
                "guidance_rescale": r,
                "guidance_interval": iv,
                "rescale_t": rt,
            },
        }

    def norm() -> dict[str, list[float]]:
        mean = (torch.randn(latent, generator=gen) * 0.5).tolist()
        std = (torch.rand(latent, generator=gen) * 2 + 1).tolist()
        return {"mean": [round(v, 6) for v in mean], "std": [round(v, 6) for v in std]}

    return {
        "name": "Trellis2ImageTo3DPipeline",
        "args": {
            "models": dict(OFFICIAL_MODELS),
            **{k: sampler(*v) for k, v in SAMPLERS.items()},
            "shape_slat_normalization": norm(),
            "tex_slat_normalization": norm(),
            "image_cond_model": {"name": "DinoV3FeatureExtractor", "args": {"model_name": DINOV3_ID}},
            "rembg_model": {"name": "BiRefNet", "args": {"model_name": "briaai/RMBG-2.0"}},
            "low_vram": False,
            "default_pipeline_type": "1024_cascade",
        },
    }


# --------------------------------------------------------------------------------------------
# random weights
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def rerandomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Re-draw every all-zero weight (the reference zero-initialises AdaLN, output and residual
    branch layers: with them every velocity and residual is zero); round all to fp16."""
    for _name, p in model.named_parameters():
        if p.ndim >= 2 and not bool(p.any()):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        p.copy_(p.half().float())


@torch.no_grad()
def calibrate_ss_decoder(decoder: torch.nn.Module, fraction: float, gen: torch.Generator) -> None:
    """Shift the output bias so that ``fraction`` of the logits of a random latent are positive."""
    res = 16
    z = torch.randn(1, decoder.latent_channels, res, res, res, generator=gen).to(_device(decoder))
    logits = decoder(z).float().flatten()
    q = torch.quantile(logits[:: max(1, logits.numel() // 1_000_000)], 1 - fraction)
    out = decoder.out_layer[-1] if isinstance(decoder.out_layer, torch.nn.Sequential) else decoder.out_layer
    out.bias -= q.to(out.bias.dtype)
    out.bias.copy_(out.bias.half().float())


@torch.no_grad()
def calibrate_subdivision(decoder: torch.nn.Module, slat: Any, keep: float) -> None:
    """Shift each subdivision head's bias (in forward order) so about ``keep`` of children stay."""
    hooks = []

    def hook(mod: torch.nn.Module, inputs: Any, output: Any) -> Any:
        feats = output.feats.float()
        q = torch.quantile(feats.flatten()[:1_000_000], 1 - keep)
        mod.bias -= q.to(mod.bias.dtype)
        mod.bias.copy_(mod.bias.half().float())
        return output.replace(feats - q)

    for name, m in decoder.named_modules():
        if name.endswith("to_subdiv"):
            hooks.append(m.register_forward_hook(hook))
    try:
        decoder(slat, return_subs=True)
    finally:
        for h in hooks:
            h.remove()


def _device(m: torch.nn.Module) -> torch.device:
    return next(m.parameters()).device


def save_model(root: Path, rel: str, spec: dict[str, Any], model: torch.nn.Module) -> None:
    from safetensors.torch import save_file

    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(spec, indent=2))
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path) + ".safetensors")


def make_dinov3(root: Path, hidden: int, gen: torch.Generator) -> Path:
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    cfg = DINOv3ViTConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=16,
        num_register_tokens=4,
    )
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    model = DINOv3ViTModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    path = root / DINOV3_ID
    model.save_pretrained(path, safe_serialization=True)
    return path


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
class Recorder:
    """Collects named arrays; the first call of each flow model (input, t, output)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def put(self, name: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.dtype in (torch.float16, torch.bfloat16):
                value = value.float()
            value = value.numpy()
        self.arrays[name] = np.asarray(value)

    def put_sparse(self, name: str, st: Any) -> None:
        self.put(name + ".coords", st.coords.int())
        self.put(name + ".feats", st.feats)

    def first_call_hook(self, name: str) -> Any:
        done = {"v": False}

        def hook(mod: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if done["v"]:
                return
            done["v"] = True
            x, t = args[:2]
            if hasattr(x, "feats"):
                self.put_sparse(name + ".x", x)
                self.put(name + ".out", output.feats)
            else:
                self.put(name + ".x", x)
                self.put(name + ".out", output)
            self.put(name + ".t", t)
            cc = kwargs.get("concat_cond")
            if cc is not None:
                self.put(name + ".concat_cond", cc.feats)

        return hook


def run_pipeline(
    ref: dict[str, Any], weights: Path, image: Any, seed: int, pipeline_type: str, device: str
) -> dict[str, np.ndarray]:
    models_mod = ref["models"]
    args = json.loads((weights / "pipeline.json").read_text())["args"]
    loaded = {k: models_mod.from_pretrained(str(weights / v)).to(device).eval() for k, v in args["models"].items()}
    samplers = ref["samplers"]
    cls = ref["pipeline_cls"]
    pipe = cls(
        models=loaded,
        sparse_structure_sampler=getattr(samplers, args["sparse_structure_sampler"]["name"])(
            **args["sparse_structure_sampler"]["args"]
        ),
        shape_slat_sampler=getattr(samplers, args["shape_slat_sampler"]["name"])(**args["shape_slat_sampler"]["args"]),
        tex_slat_sampler=getattr(samplers, args["tex_slat_sampler"]["name"])(**args["tex_slat_sampler"]["args"]),
        sparse_structure_sampler_params=args["sparse_structure_sampler"]["params"],
        shape_slat_sampler_params=args["shape_slat_sampler"]["params"],
        tex_slat_sampler_params=args["tex_slat_sampler"]["params"],
        shape_slat_normalization=args["shape_slat_normalization"],
        tex_slat_normalization=args["tex_slat_normalization"],
        image_cond_model=ref["image_feature_extractor"].DinoV3FeatureExtractor(str(weights / DINOV3_ID)),
        rembg_model=None,
        low_vram=False,
    )
    pipe._device = torch.device(device)
    dino = pipe.image_cond_model.model
    if not hasattr(dino, "layer") and hasattr(dino, "model"):
        # transformers >= 5 moved DINOv3's layers under .model; the reference reads .layer
        object.__setattr__(dino, "layer", dino.model.layer)
    pipe.image_cond_model.to(device)
    rec = Recorder()
    handles = []
    for name, m in loaded.items():
        if "flow" in name:
            handles.append(m.register_forward_hook(rec.first_call_hook(name), with_kwargs=True))

    # wrap the stages to record what passes between them
    orig = {
        n: getattr(pipe, n)
        for n in (
            "get_cond",
            "sample_sparse_structure",
            "sample_shape_slat",
            "sample_shape_slat_cascade",
            "sample_tex_slat",
            "decode_shape_slat",
            "decode_tex_slat",
        )
    }

    def get_cond(image_list: Any, resolution: int, include_neg_cond: bool = True) -> dict:
        out = orig["get_cond"](image_list, resolution, include_neg_cond)
        rec.put(f"cond_{resolution}", out["cond"])
        return out

    ss_decoder = loaded["sparse_structure_decoder"]

    def ss_hook(mod: Any, inputs: Any, output: Any) -> None:
        rec.put("ss.z", inputs[0])
        rec.put("ss.logits", output)

    handles.append(ss_decoder.register_forward_hook(ss_hook))

    def sample_sparse_structure(cond: dict, resolution: int, num_samples: int = 1, sampler_params: dict = {}) -> Any:  # noqa: B006
        state = torch.get_rng_state()
        flow = loaded["sparse_structure_flow_model"]
        noise = torch.randn(num_samples, flow.in_channels, flow.resolution, flow.resolution, flow.resolution)
        torch.set_rng_state(state)
        rec.put("ss.noise", noise)
        coords = orig["sample_sparse_structure"](cond, resolution, num_samples, sampler_params)
        rec.put("ss.coords", coords)
        return coords

    def _noise_peek(n: int, c: int) -> torch.Tensor:
        state = torch.get_rng_state()
        noise = torch.randn(n, c)
        torch.set_rng_state(state)
        return noise

    def sample_shape_slat(cond: dict, flow_model: Any, coords: Any, sampler_params: dict = {}) -> Any:  # noqa: B006
        rec.put("shape.noise", _noise_peek(coords.shape[0], flow_model.in_channels))
        slat = orig["sample_shape_slat"](cond, flow_model, coords, sampler_params)
        rec.put_sparse("shape.slat", slat)
        return slat

    dec = loaded["shape_slat_decoder"]
    orig_upsample = dec.upsample

    def upsample(x: Any, upsample_times: int) -> Any:
        rec.put_sparse("cascade.lr_slat", x)
        hr = orig_upsample(x, upsample_times)
        rec.put("cascade.hr_coords", hr)
        return hr

    dec.upsample = upsample

    def sample_shape_slat_cascade(
        lr_cond: dict,
        cond: dict,
        flow_lr: Any,
        flow: Any,
        lr_res: int,
        res: int,
        coords: Any,
        sampler_params: dict = {},  # noqa: B006  (the reference's signature)
        max_num_tokens: int = 49152,
    ) -> Any:
        rec.put("cascade.lr_noise", _noise_peek(coords.shape[0], flow_lr.in_channels))
        # the HR noise is drawn after the LR sampling and the upsampling: recorded from the flow's first call
        slat, hr_res = orig["sample_shape_slat_cascade"](
            lr_cond, cond, flow_lr, flow, lr_res, res, coords, sampler_params, max_num_tokens
        )
        rec.put_sparse("shape.slat", slat)
        rec.put("cascade.hr_resolution", np.int64(hr_res))
        return slat, hr_res

    def sample_tex_slat(cond: dict, flow_model: Any, shape_slat: Any, sampler_params: dict = {}) -> Any:  # noqa: B006
        ch = flow_model.in_channels - shape_slat.feats.shape[1]
        rec.put("tex.noise", _noise_peek(shape_slat.coords.shape[0], ch))
        slat = orig["sample_tex_slat"](cond, flow_model, shape_slat, sampler_params)
        rec.put_sparse("tex.slat", slat)
        return slat

    def decode_shape_slat(slat: Any, resolution: int) -> Any:
        meshes, subs = orig["decode_shape_slat"](slat, resolution)
        rec.put("decode.resolution", np.int64(resolution))
        rec.put("mesh.vertices", meshes[0].vertices)
        rec.put("mesh.faces", meshes[0].faces)
        for i, s in enumerate(subs):
            rec.put(f"subs.{i}.coords", s.coords.int())
            rec.put(f"subs.{i}.feats", s.feats)
        return meshes, subs

    def decode_tex_slat(slat: Any, subs: Any) -> Any:
        out = orig["decode_tex_slat"](slat, subs)
        rec.put_sparse("tex.voxels", out)
        return out

    for n, f in [
        ("get_cond", get_cond),
        ("sample_sparse_structure", sample_sparse_structure),
        ("sample_shape_slat", sample_shape_slat),
        ("sample_shape_slat_cascade", sample_shape_slat_cascade),
        ("sample_tex_slat", sample_tex_slat),
        ("decode_shape_slat", decode_shape_slat),
        ("decode_tex_slat", decode_tex_slat),
    ]:
        setattr(pipe, n, f)

    # the reference's Mesh.fill_holes needs cumesh; our pipeline cleans the mesh itself
    from trellis2.representations.mesh import base as mesh_base

    mesh_base.Mesh.fill_holes = lambda self, *a, **k: None  # type: ignore[method-assign]
    pipe.run(image, seed=seed, preprocess_image=False, pipeline_type=pipeline_type)
    for h in handles:
        h.remove()
    return rec.arrays


def build_weights(ref: dict[str, Any], out: Path, seed: int, size: str, steps: int, device: str) -> None:
    gen = torch.Generator().manual_seed(10_000 + seed)
    latent = 8
    if size != "tiny":
        raise SystemExit("only --size tiny makes fixtures (full-size is for benchmarks/trellis2_gpu.py)")
    cfgs = tiny_configs(latent=latent)
    pj = pipeline_json(latent, gen, steps)
    (out / "pipeline.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps(pj, indent=2))
    models_mod = ref["models"]
    built: dict[str, torch.nn.Module] = {}
    for name, spec in cfgs.items():
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        m = getattr(models_mod, spec["name"])(**spec["args"]).eval()
        rerandomise(m, gen)
        built[name] = m.to(device)
    calibrate_ss_decoder(built["sparse_structure_decoder"], 0.0015, gen)
    # subdivision heads: calibrate on a random latent at a blob of coordinates
    sp = ref["sp"]
    g = torch.arange(8, 24)
    blob = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    blob = blob[((blob.float() - 15.5) ** 2).sum(-1) < 40]
    coords = torch.cat([torch.zeros(len(blob), 1, dtype=torch.long), blob], 1).int().to(device)
    feats = torch.randn(len(coords), latent, generator=gen).to(device) * 3
    calibrate_subdivision(built["shape_slat_decoder"], sp.SparseTensor(feats=feats, coords=coords), 0.25)
    for name, m in built.items():
        save_model(out, pj["args"]["models"][name], cfgs[name], m.cpu())
    make_dinov3(out, 64, gen)


def write_manifest(ref: dict[str, Any], reference: str, path: Path) -> None:
    models_mod = ref["models"]
    manifest: dict[str, Any] = {
        "derived_from": "the reference classes (microsoft/TRELLIS.2 @5565d24) instantiated on the meta "
        "device with the official arguments: configs/gen/*.json and configs/scvae/*.json of the reference "
        "(1024 flows: the *_ft1024 configs), TRELLIS v1's ss_dec_conv3d_16l8_fp16 arguments; "
        "shapes only (the stored dtypes of the released files are not asserted)",
        "models": {},
    }
    for name, spec in official_configs(reference).items():
        with torch.device("meta"):
            m = getattr(models_mod, spec["name"])(**spec["args"])
        manifest["models"][name] = {
            "path": OFFICIAL_MODELS[name],
            "name": spec["name"],
            "args": spec["args"],
            "parameters": int(sum(p.numel() for p in m.state_dict().values())),
            "keys": {k: list(v.shape) for k, v in m.state_dict().items()},
        }
    path.write_text(json.dumps(manifest, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", required=True, help="folder holding the reference's trellis2 package and configs/")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="tiny", choices=["tiny"])
    ap.add_argument("--steps", type=int, default=3, help="sampler steps per stage (official: 12)")
    ap.add_argument("--image", help="an RGBA picture (its alpha is the cut-out)")
    ap.add_argument("--out", help="fixture folder (a seed<N>_<size> folder is made inside)")
    ap.add_argument("--tar", help="also pack the fixture folder into this .tar.gz")
    ap.add_argument("--manifest", help="write the official key/shape manifest here")
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref = import_reference(a.reference, need_kernels=a.out is not None)
    if a.manifest:
        write_manifest(ref, a.reference, Path(a.manifest))
        print("manifest:", a.manifest)
    if not a.out:
        return
    from PIL import Image

    root = Path(a.out) / f"seed{a.seed}_{a.size}"
    weights = root / "weights"
    build_weights(ref, weights, a.seed, a.size, a.steps, a.device)
    # the conditioning picture: the reference's own preprocessing of an RGBA picture
    pipe_cls = ref["pipeline_cls"]
    probe = pipe_cls.__new__(pipe_cls)
    probe.low_vram = False
    rgba = Image.open(a.image).convert("RGBA")
    image = pipe_cls.preprocess_image(probe, rgba)
    image.save(root / "image.png")
    image = Image.open(root / "image.png")
    meta: dict[str, Any] = {
        "seed": a.seed,
        "size": a.size,
        "steps": a.steps,
        "source_image": Path(a.image).name,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if a.device == "cuda" else a.device,
        "precision": "fp32 models (use_fp16 false), torch TF32 off; FlexGEMM's Triton sparse-convolution kernels "
        "at their default (allow_tf32: fp32 inputs rounded to TF32 in the GEMMs); weights stored fp16 (the run "
        "used the same rounded values)",
        "attention": "flash_attn replaced by an SDPA shim",
        "stages": {},
    }
    for pt in PIPELINES:
        arrays = run_pipeline(ref, weights, copy.copy(image), a.seed, pt, a.device)
        np.savez_compressed(root / f"stages_{pt}.npz", **arrays)
        meta["stages"][pt] = {k: list(v.shape) for k, v in arrays.items()}
        print(pt, {k: v.shape for k, v in arrays.items() if not k.endswith(".t")})
    (root / "meta.json").write_text(json.dumps(meta, indent=1))
    if a.tar:
        with tarfile.open(a.tar, "w:gz") as t:
            t.add(root, arcname=root.name)
        print("packed", a.tar)


if __name__ == "__main__":
    main()
