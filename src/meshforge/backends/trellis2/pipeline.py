"""The TRELLIS.2 image-to-3D inference pipeline: condition → sparse structure → shape/texture SLat → decode.

Stages of :meth:`Trellis2Pipeline.run` (TRELLIS.2, 2025; behaviour of the reference's
``Trellis2ImageTo3DPipeline.run``, code our own):

1. **condition**: DINOv3 tokens of the object crop at 512 px (and 1024 px unless ``pipeline_type="512"``);
   the negative condition is zeros.
2. **sparse structure**: Euler-sample the dense flow from ``randn(B, 8, 16³)``, decode with the v1 decoder
   (logit > 0 → 64³ occupancy), max-pool to the SS resolution (32 for ``512``/cascades, 64 for ``1024``),
   take the occupied ``(b, x, y, z)``.
3. **shape SLat**: sample the sparse flow on those coordinates and de-normalise (``x·std + mean``).
   Cascades: sample at 512, up-sample the latent's structure four times with the shape decoder, quantise the
   fine coordinates to the target grid (``1024/16`` or ``1536/16`` cells), stepping the target down by 128
   while there are ``max_num_tokens`` or more tokens (not below 1024), then sample the 1024 flow there.
4. **texture SLat**: sample the texture flow with ``concat_cond`` = the *normalised* shape SLat.
5. **decode**: the shape decoder (``return_subs=True``) gives the mesh and its subdivision guides; the texture
   decoder (``guide_subs``) gives PBR voxels ``·0.5 + 0.5`` (base colour RGB, metallic, roughness, alpha).

**Seeds.** ``torch.manual_seed(seed)`` once, then the same ``torch.randn`` calls as the reference in the same
order, on the CPU generator and then moved to the device — so noise (and parity fixtures) agree on any device.

**Memory.** ``low_vram``: every model lives on the CPU and visits the device only while it runs (automatic
when the device has less than :data:`LOW_VRAM_BELOW_GIB` GiB). ``dtypes``: per-stage override of the
models' compute dtype (``"ss"``, ``"shape"``, ``"tex"``, ``"decoder"``; None keeps the checkpoint's); the
CPU always computes in float32. An out-of-memory error at ``1536_cascade`` retries at ``1024_cascade``, then
``512``, with a warning.

Entry points: :meth:`Trellis2Pipeline.from_folder` and :meth:`Trellis2Pipeline.run`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import BackendError, InputError
from .loading import PipelineFiles, load_model, locate_weights
from .sampler import FlowEulerSampler, make_sampler
from .sparse import SparseTensor

if TYPE_CHECKING:
    import torch
    from PIL import Image as PILImage

    from .conditioning import DinoV3Conditioner

__all__ = [
    "LOW_VRAM_BELOW_GIB",
    "PIPELINE_TYPES",
    "STAGES",
    "Trellis2Output",
    "Trellis2Pipeline",
]

PIPELINE_TYPES = ("512", "1024", "1024_cascade", "1536_cascade")
#: the sparse-structure resolution per pipeline type
SS_RESOLUTION = {"512": 32, "1024": 64, "1024_cascade": 32, "1536_cascade": 32}
#: which flows each pipeline type needs
NEEDS = {
    "512": ("shape_slat_flow_model_512", "tex_slat_flow_model_512"),
    "1024": ("shape_slat_flow_model_1024", "tex_slat_flow_model_1024"),
    "1024_cascade": ("shape_slat_flow_model_512", "shape_slat_flow_model_1024", "tex_slat_flow_model_1024"),
    "1536_cascade": ("shape_slat_flow_model_512", "shape_slat_flow_model_1024", "tex_slat_flow_model_1024"),
}
#: the out-of-memory fallback order
STEP_DOWN = {"1536_cascade": "1024_cascade", "1024_cascade": "512", "1024": "512"}
STAGES = ("condition", "sparse_structure", "shape_slat", "tex_slat", "decode_shape", "decode_tex")
#: low-VRAM mode is automatic on devices with less memory than this (GiB)
LOW_VRAM_BELOW_GIB = 40.0
#: the attribute layout of the texture voxels
PBR_LAYOUT = {"base_color": slice(0, 3), "metallic": slice(3, 4), "roughness": slice(4, 5), "alpha": slice(5, 6)}
_FLOW_CLASSES = ("SparseStructureFlowModel", "SLatFlowModel", "ElasticSLatFlowModel")

#: ``on_stage(stage, index, total)`` before each stage
StageCallback = Callable[[str, int, int], None]


@dataclass
class Trellis2Output:
    """What :meth:`Trellis2Pipeline.run` returns (one batch item per list entry).

    Attributes:
        meshes: the shape decoder's meshes (objects with ``vertices [V, 3]`` and ``faces [F, 3]`` tensors, in
            TRELLIS.2's frame: Z up, the object in the cube ``[−0.5, 0.5]³``), before any hole filling.
        voxels: one :class:`~.sparse.SparseTensor` per item: ``coords`` ``(0, x, y, z)`` on the ``resolution³``
            grid, ``feats [M, 6]`` = base colour RGB, metallic, roughness, alpha (``decoder·0.5 + 0.5``, not
            clamped).
        resolution: the output grid (512, 1024 or 1536, or lower after the token cap).
        origin: ``(−0.5, −0.5, −0.5)``: the corner of voxel (0, 0, 0); ``voxel_size = 1 / resolution``.
        pipeline_type: the type that ran (after any out-of-memory step-down).
        coords: the sparse-structure coordinates ``int32 [N, 4]``.
        shape_slat, tex_slat: the de-normalised latents.
        timings: seconds per stage.
        warnings: e.g. the resolution reduced by the token cap or an out-of-memory step-down.
    """

    meshes: list[Any]
    voxels: list[SparseTensor]
    resolution: int
    pipeline_type: str
    coords: torch.Tensor
    shape_slat: SparseTensor
    tex_slat: SparseTensor
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    origin: tuple[float, float, float] = (-0.5, -0.5, -0.5)

    @property
    def voxel_size(self) -> float:
        return 1.0 / self.resolution


def _cuda_oom() -> type[BaseException]:
    import torch

    return torch.cuda.OutOfMemoryError


class Trellis2Pipeline:
    """Loaded TRELLIS.2 models, samplers and settings (see the module docstring).

    Args:
        models: name (``pipeline.json``'s, e.g. ``"shape_slat_flow_model_512"``) → module.
        conditioner: the DINOv3 feature extractor.
        args: ``pipeline.json``'s ``"args"`` (samplers, normalisations, default type).
        device: where the models run.
        low_vram: keep models on the CPU between uses; None: automatic (:data:`LOW_VRAM_BELOW_GIB`).
        dtypes: per-stage compute dtype overrides (``"ss"``, ``"shape"``, ``"tex"``, ``"decoder"``,
            ``"cond"``); ignored on the CPU (always float32).
    """

    def __init__(
        self,
        models: dict[str, Any],
        conditioner: DinoV3Conditioner,
        args: dict[str, Any],
        *,
        device: str = "cpu",
        low_vram: bool | None = None,
        dtypes: dict[str, Any] | None = None,
    ) -> None:
        import torch

        self.models = models
        self.conditioner = conditioner
        self.args = args
        self.device = torch.device(device)
        self.samplers: dict[str, FlowEulerSampler] = {}
        self.sampler_params: dict[str, dict[str, Any]] = {}
        for stage in ("sparse_structure", "shape_slat", "tex_slat"):
            spec = args.get(f"{stage}_sampler")
            if not isinstance(spec, dict):
                raise BackendError(f"pipeline.json has no {stage}_sampler")
            try:
                self.samplers[stage] = make_sampler(spec)
            except ValueError as exc:
                raise BackendError(f"pipeline.json {stage}_sampler: {exc}") from None
            self.sampler_params[stage] = dict(spec.get("params") or {})
        self.normalization = {
            k: args.get(f"{k}_slat_normalization") or {"mean": None, "std": None} for k in ("shape", "tex")
        }
        self.default_pipeline_type = str(args.get("default_pipeline_type", "1024_cascade"))
        self.low_vram = self._auto_low_vram() if low_vram is None else bool(low_vram)
        self.dtypes = dict(dtypes or {})
        if self.device.type == "cpu":
            self.dtypes = dict.fromkeys(("cond", "ss", "shape", "tex", "decoder"), torch.float32)
        self._apply_dtypes()
        if not self.low_vram:
            for model in self.models.values():
                model.to(self.device)
            self.conditioner.to(self.device)

    # -- construction -----------------------------------------------------------------------------------
    @classmethod
    def from_folder(
        cls,
        weights: str | os.PathLike[str] | None = None,
        *,
        device: str = "cpu",
        dinov3: str | os.PathLike[str] | None = None,
        low_vram: bool | None = None,
        dtypes: dict[str, Any] | None = None,
        names: tuple[str, ...] | None = None,
    ) -> Trellis2Pipeline:
        """Load a weights folder or cached repo (:func:`.loading.locate_weights`) and its DINOv3.

        Args:
            weights: folder, repo id or None (the official repo in the HF cache).
            device: torch device string.
            dinov3: an explicit DINOv3 folder (else ``MESHFORGE_DINOV3``, ``<weights>/<id>``, the HF cache).
            low_vram, dtypes: see the class.
            names: load only these models (default: all the pipeline uses).

        Raises:
            BackendError: anything missing or mismatched (one line; see :mod:`.loading`, :mod:`.conditioning`).
        """
        from .conditioning import DinoV3Conditioner

        files = locate_weights(weights)
        conditioner = DinoV3Conditioner.load(dinov3, weights_folder=files.root, model_id=files.dinov3_id)
        wanted = names or tuple(files.models)
        models = {name: load_model(files.models[name]) for name in wanted if name in files.models}
        pipeline = cls(models, conditioner, files.args, device=device, low_vram=low_vram, dtypes=dtypes)
        pipeline.files = files
        return pipeline

    files: PipelineFiles | None = None

    def _auto_low_vram(self) -> bool:
        import torch

        if self.device.type != "cuda":
            return False
        total = torch.cuda.get_device_properties(self.device).total_memory / 2**30
        return bool(total < LOW_VRAM_BELOW_GIB)

    def _apply_dtypes(self) -> None:
        stage_of = {
            "sparse_structure_flow_model": "ss",
            "shape_slat_flow_model_512": "shape",
            "shape_slat_flow_model_1024": "shape",
            "tex_slat_flow_model_512": "tex",
            "tex_slat_flow_model_1024": "tex",
            "sparse_structure_decoder": "decoder",
            "shape_slat_decoder": "decoder",
            "tex_slat_decoder": "decoder",
        }
        for name, model in self.models.items():
            dtype = self.dtypes.get(stage_of.get(name, ""))
            if dtype is not None:
                _set_dtype(model, dtype)
        if self.dtypes.get("cond") is not None:
            self.conditioner.model.to(self.dtypes["cond"])

    # -- device placement -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _on_device(self, model: Any) -> Iterator[Any]:
        """``model`` on the device for the block (low-VRAM: back to the CPU afterwards, cache emptied)."""
        if not self.low_vram:
            yield model
            return
        model.to(self.device)
        if hasattr(model, "low_vram"):
            model.low_vram = True
        try:
            yield model
        finally:
            if hasattr(model, "low_vram"):
                model.low_vram = False
            model.to("cpu")
            if self.device.type == "cuda":
                import torch

                torch.cuda.empty_cache()

    # -- stages ---------------------------------------------------------------------------------------
    def condition(self, images: list[PILImage.Image], resolution: int) -> dict[str, torch.Tensor]:
        """``{"cond": [B, T, D], "neg_cond": zeros}`` at ``resolution`` px."""
        import torch

        with self._on_device(self.conditioner):
            tokens = self.conditioner(images, resolution)
        return {"cond": tokens, "neg_cond": torch.zeros_like(tokens)}

    def _sample(
        self, stage: str, model: Any, noise: Any, cond: dict[str, Any], params: dict[str, Any], **kw: Any
    ) -> Any:
        merged = {**self.sampler_params[stage], **params}
        with self._on_device(model):
            return self.samplers[stage].sample(model, noise, **cond, **merged, **kw).samples

    def sample_sparse_structure(
        self, cond: dict[str, Any], resolution: int, num_samples: int = 1, params: dict[str, Any] | None = None
    ) -> torch.Tensor:
        """Occupied coordinates ``int32 [N, 4]`` ``(b, x, y, z)`` on the ``resolution³`` grid."""
        import torch

        flow = self.models["sparse_structure_flow_model"]
        reso, channels = int(flow.resolution), int(flow.in_channels)
        noise = torch.randn(num_samples, channels, reso, reso, reso).to(self.device)
        latent = self._sample("sparse_structure", flow, noise, cond, params or {})
        decoder = self.models["sparse_structure_decoder"]
        with self._on_device(decoder):
            occupied = decoder(latent) > 0
        if occupied.shape[2] != resolution:
            ratio = occupied.shape[2] // resolution
            occupied = torch.nn.functional.max_pool3d(occupied.float(), ratio, ratio, 0) > 0.5
        return torch.argwhere(occupied)[:, [0, 2, 3, 4]].int()

    def _denormalise(self, kind: str, slat: SparseTensor) -> SparseTensor:
        mean, std = self._stats(kind, slat)
        return slat * std + mean

    def _normalise(self, kind: str, slat: SparseTensor) -> SparseTensor:
        mean, std = self._stats(kind, slat)
        return (slat - mean) / std

    def _stats(self, kind: str, slat: SparseTensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        norm = self.normalization[kind]
        if norm.get("mean") is None or norm.get("std") is None:
            raise BackendError(f"pipeline.json has no {kind}_slat_normalization")
        mean = torch.tensor(norm["mean"])[None].to(slat.device)
        std = torch.tensor(norm["std"])[None].to(slat.device)
        return mean, std

    def sample_shape_slat(
        self, cond: dict[str, Any], flow: Any, coords: torch.Tensor, params: dict[str, Any] | None = None
    ) -> SparseTensor:
        """The de-normalised shape SLat on ``coords``."""
        import torch

        noise = SparseTensor(torch.randn(coords.shape[0], int(flow.in_channels)).to(self.device), coords)
        return self._denormalise("shape", self._sample("shape_slat", flow, noise, cond, params or {}))

    def cascade_coords(
        self, slat: SparseTensor, lr_resolution: int, resolution: int, max_num_tokens: int
    ) -> tuple[torch.Tensor, int]:
        """Fine coordinates for the high-resolution flow, with the token cap (see the module docstring)."""
        import torch

        decoder = self.models["shape_slat_decoder"]
        with self._on_device(decoder):
            fine = decoder.upsample(slat, upsample_times=4)
        target = resolution
        while True:
            cells = ((fine[:, 1:] + 0.5) / lr_resolution * (target // 16)).int()
            coords = torch.cat([fine[:, :1], cells], dim=1).unique(dim=0)
            if coords.shape[0] < max_num_tokens or target == 1024:
                return coords, target
            target -= 128

    def sample_tex_slat(
        self, cond: dict[str, Any], flow: Any, shape_slat: SparseTensor, params: dict[str, Any] | None = None
    ) -> SparseTensor:
        """The de-normalised texture SLat, conditioned on the normalised shape SLat (channel concatenation)."""
        import torch

        shape_norm = self._normalise("shape", shape_slat)
        channels = int(flow.in_channels) - int(shape_norm.feats.shape[1])
        noise = shape_norm.replace(torch.randn(shape_norm.coords.shape[0], channels).to(self.device))
        slat = self._sample("tex_slat", flow, noise, cond, params or {}, concat_cond=shape_norm)
        return self._denormalise("tex", slat)

    # -- the whole run --------------------------------------------------------------------------------
    def run(
        self,
        image: PILImage.Image | np.ndarray,
        *,
        seed: int = 42,
        pipeline_type: str | None = None,
        num_samples: int = 1,
        sparse_structure_sampler_params: dict[str, Any] | None = None,
        shape_slat_sampler_params: dict[str, Any] | None = None,
        tex_slat_sampler_params: dict[str, Any] | None = None,
        max_num_tokens: int = 49152,
        preprocess: bool = True,
        on_stage: StageCallback | None = None,
    ) -> Trellis2Output:
        """Generate a mesh and PBR voxels from one picture.

        Args:
            image: an RGBA ``[H, W, 4]`` uint8 array whose alpha is the object mask (cropped here as the
                reference does when ``preprocess``), or a PIL picture used as given.
            seed: the torch seed (see the module docstring).
            pipeline_type: one of :data:`PIPELINE_TYPES` (default: ``pipeline.json``'s).
            num_samples: batch size of the sparse-structure noise.
            *_sampler_params: overrides of ``pipeline.json``'s sampler params (``steps``, ``guidance_strength``…).
            max_num_tokens: the cascade's token cap.
            preprocess: crop an RGBA array to the object (:func:`.conditioning.crop_object`).
            on_stage: progress callback over :data:`STAGES`.

        Returns:
            A :class:`Trellis2Output`.

        Raises:
            InputError: unknown pipeline type, or a picture without an object.
            BackendError: a model the type needs is missing; out of memory even at ``512``.
        """
        from PIL import Image as PILImage

        from .conditioning import crop_object

        kind = pipeline_type or self.default_pipeline_type
        if isinstance(image, np.ndarray):
            try:
                picture = crop_object(image) if preprocess else PILImage.fromarray(image).convert("RGB")
            except ValueError as exc:
                raise InputError(str(exc)) from None
        else:
            picture = image
        warnings: list[str] = []
        oom = _cuda_oom()
        while True:
            try:
                out = self._run_once(
                    picture,
                    seed,
                    kind,
                    num_samples,
                    (
                        sparse_structure_sampler_params or {},
                        shape_slat_sampler_params or {},
                        tex_slat_sampler_params or {},
                    ),
                    max_num_tokens,
                    on_stage,
                )
            except oom as exc:
                lower = STEP_DOWN.get(kind)
                if lower is None or lower not in self.available_types():
                    raise BackendError(
                        f"TRELLIS.2 ran out of GPU memory at {kind}: {str(exc).splitlines()[0]}"
                    ) from None
                warnings.append(f"out of GPU memory at {kind}; retried at {lower}")
                import torch

                torch.cuda.empty_cache()
                kind = lower
                continue
            out.warnings[:0] = warnings
            return out

    def available_types(self) -> tuple[str, ...]:
        """The pipeline types whose models are loaded."""
        return tuple(t for t in PIPELINE_TYPES if all(n in self.models for n in NEEDS[t]))

    def _run_once(
        self,
        picture: PILImage.Image,
        seed: int,
        kind: str,
        num_samples: int,
        params: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
        max_num_tokens: int,
        on_stage: StageCallback | None,
    ) -> Trellis2Output:
        import torch

        if kind not in PIPELINE_TYPES:
            raise InputError(f"unknown TRELLIS.2 pipeline type {kind!r} (choices: {', '.join(PIPELINE_TYPES)})")
        missing = [n for n in NEEDS[kind] if n not in self.models]
        if missing:
            raise BackendError(f"pipeline type {kind} needs {', '.join(missing)}, which the weights do not provide")
        ss_params, shape_params, tex_params = params
        timings: dict[str, float] = {}
        warnings: list[str] = []

        @contextlib.contextmanager
        def stage(name: str) -> Iterator[None]:
            if on_stage is not None:
                on_stage(name, STAGES.index(name), len(STAGES))
            start = time.perf_counter()
            yield
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - start

        with torch.no_grad():
            torch.manual_seed(seed)
            with stage("condition"):
                cond_512 = self.condition([picture], 512)
                cond_1024 = self.condition([picture], 1024) if kind != "512" else None
            with stage("sparse_structure"):
                coords = self.sample_sparse_structure(cond_512, SS_RESOLUTION[kind], num_samples, ss_params)
            if coords.shape[0] == 0:
                raise BackendError("TRELLIS.2's sparse structure is empty (no occupied voxel)")
            with stage("shape_slat"):
                if kind in ("512", "1024"):
                    res = int(kind)
                    cond = cond_512 if kind == "512" else cond_1024
                    assert cond is not None
                    shape_slat = self.sample_shape_slat(
                        cond, self.models[f"shape_slat_flow_model_{kind}"], coords, shape_params
                    )
                else:
                    assert cond_1024 is not None
                    lr = self.sample_shape_slat(
                        cond_512, self.models["shape_slat_flow_model_512"], coords, shape_params
                    )
                    target = 1536 if kind == "1536_cascade" else 1024
                    fine, res = self.cascade_coords(lr, 512, target, max_num_tokens)
                    if res != target:
                        warnings.append(f"the token cap ({max_num_tokens}) reduced the resolution to {res}")
                    shape_slat = self.sample_shape_slat(
                        cond_1024, self.models["shape_slat_flow_model_1024"], fine, shape_params
                    )
            with stage("tex_slat"):
                tex_res = "512" if kind == "512" else "1024"
                tex_cond = cond_512 if kind == "512" else cond_1024
                assert tex_cond is not None
                tex_slat = self.sample_tex_slat(
                    tex_cond, self.models[f"tex_slat_flow_model_{tex_res}"], shape_slat, tex_params
                )
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            with stage("decode_shape"):
                decoder = self.models["shape_slat_decoder"]
                if hasattr(decoder, "set_resolution"):
                    decoder.set_resolution(res)
                with self._on_device(decoder):
                    meshes, subs = decoder(shape_slat, return_subs=True)
            with stage("decode_tex"):
                with self._on_device(self.models["tex_slat_decoder"]) as tex_decoder:
                    voxels = tex_decoder(tex_slat, guide_subs=subs) * 0.5 + 0.5
        return Trellis2Output(
            meshes=list(meshes),
            voxels=voxels.unbind(),
            resolution=res,
            pipeline_type=kind,
            coords=coords,
            shape_slat=shape_slat,
            tex_slat=tex_slat,
            timings=timings,
            warnings=warnings,
        )


def _set_dtype(model: Any, dtype: Any) -> None:
    """A model's compute dtype through its own conversion hooks (``convert_to(dtype)``, or
    ``convert_to_fp16``/``convert_to_fp32``), as the reference's models expose them; float32 without hooks:
    every parameter in float32 and the ``dtype`` attribute its forward casts to set to float32."""
    import torch

    if callable(getattr(model, "convert_to", None)):
        model.convert_to(dtype)
    elif dtype == torch.float16 and callable(getattr(model, "convert_to_fp16", None)):
        model.convert_to_fp16()
    elif dtype == torch.float32 and callable(getattr(model, "convert_to_fp32", None)):
        model.convert_to_fp32()
    elif dtype == torch.float32:  # a decoder whose forward casts to its ``dtype`` attribute (use_fp16 torso)
        model.float()
        if isinstance(getattr(model, "dtype", None), torch.dtype):
            model.dtype = torch.float32
        if hasattr(model, "use_fp16"):
            model.use_fp16 = False
