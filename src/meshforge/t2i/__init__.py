"""Text to image with ``diffusers``: a prompt in, a picture of one object out (``generate --prompt``).

The picture then goes through the same preprocessing and backends as any picture
(:func:`meshforge.pipeline.run`); text → image → image-to-3D is the route TRELLIS's authors recommend over
text-conditioned 3D models.

**Models.** ``--t2i-model`` is a Hugging Face model id or a local ``save_pretrained`` folder of any
``diffusers`` text-to-image pipeline (:class:`diffusers.DiffusionPipeline`). :data:`KNOWN_MODELS` lists the
ones meshforge knows, with their licence and recommended settings; a model whose licence does not allow
commercial use is refused unless ``allow_non_commercial`` (``--allow-non-commercial``) is given. The default
is :data:`DEFAULT_MODEL`, FLUX.1-schnell (Apache-2.0, 4 steps, no guidance). A local folder may hold a
``meshforge_t2i.json`` (``license``, ``non_commercial``, ``steps``, ``guidance``, ``size``) with its own
defaults (``meshforge models random t2i`` writes one).

**Prompt template.** The user's prompt is put into :data:`PROMPT_TEMPLATE` (``{prompt}`` is replaced):
it asks for one whole object, centred, on a plain light background, which is what background removal and
single-view reconstruction need. ``--prompt-template '{prompt}'`` turns it off.

**Loading.** Weights are loaded once per process and device (:func:`load_text_to_image` keeps them), in
bfloat16 on CUDA (float16 where bfloat16 is not supported) and float32 on the CPU. On a GPU whose memory is
smaller than 1.2 × the weights, the pipeline runs with ``enable_model_cpu_offload`` (each model moved to the
GPU only while it runs; needs ``accelerate``). ``HF_HUB_OFFLINE`` is honoured, and an unreachable hub is
treated like offline (only the local cache is read).

**Errors** are one line each (:class:`~meshforge.errors.InputError` for the prompt and options,
:class:`~meshforge.errors.BackendError` for the model, :class:`~meshforge.errors.StageError` for out of
memory); nothing is written by this module.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..devices import free_memory
from ..errors import BackendError, InputError, MeshforgeError, StageError, is_out_of_memory, require
from ..types import Image, Report

__all__ = [
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "MAX_PROMPT_CHARS",
    "PROMPT_TEMPLATE",
    "KnownModel",
    "T2IConfig",
    "TextToImage",
    "check_prompt",
    "load_text_to_image",
    "model_card",
    "format_t2i",
    "prompt_stem",
    "t2i_statuses",
    "text_to_image_stage",
]

#: the default model: FLUX.1-schnell, Apache-2.0, a 4-step distilled rectified-flow transformer
DEFAULT_MODEL = "black-forest-labs/FLUX.1-schnell"

#: what the user's prompt is put into (``{prompt}``): one whole object, centred, on a plain background
PROMPT_TEMPLATE = (
    "{prompt}, a single object, whole and centred in the frame, three-quarter view, "
    "on a plain light grey background, soft even studio lighting, no other objects, no text"
)

#: the longest prompt accepted, in characters (the user's prompt, before the template)
MAX_PROMPT_CHARS = 1000

#: picture sizes accepted (square, pixels, a multiple of 16)
MIN_SIZE, MAX_SIZE = 64, 2048


@dataclass(frozen=True)
class KnownModel:
    """A text-to-image model meshforge knows.

    Attributes:
        model: the Hugging Face model id.
        family: the pipeline family (``flux``, ``z-image``, ``stable-diffusion``, ``sdxl``).
        license: the licence's name.
        non_commercial: True when the licence forbids (or restricts) commercial use: needs
            ``allow_non_commercial``.
        steps, guidance, size: recommended sampling steps, guidance scale and square size in pixels.
        negative_prompt: whether the pipeline takes a negative prompt.
        gated: whether the repository asks users to accept its licence before downloading.
    """

    model: str
    family: str
    license: str
    non_commercial: bool
    steps: int
    guidance: float
    size: int
    negative_prompt: bool
    gated: bool = False


#: the models meshforge knows (``meshforge models list`` shows them with their licences)
KNOWN_MODELS: dict[str, KnownModel] = {
    m.model: m
    for m in (
        KnownModel(DEFAULT_MODEL, "flux", "Apache-2.0", False, 4, 0.0, 1024, False),
        KnownModel(
            "black-forest-labs/FLUX.1-dev",
            "flux",
            "FLUX.1 [dev] Non-Commercial License",
            True,
            28,
            3.5,
            1024,
            False,
            gated=True,
        ),
        KnownModel("Tongyi-MAI/Z-Image-Turbo", "z-image", "Apache-2.0", False, 9, 0.0, 1024, False),
        KnownModel(
            "stabilityai/stable-diffusion-xl-base-1.0", "sdxl", "CreativeML Open RAIL++-M", False, 30, 5.0, 1024, True
        ),
        KnownModel("stabilityai/sdxl-turbo", "sdxl", "Stability AI Community License", True, 4, 0.0, 512, True),
        KnownModel(
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "stable-diffusion",
            "CreativeML OpenRAIL-M",
            False,
            30,
            7.5,
            512,
            True,
        ),
        KnownModel(
            "stabilityai/stable-diffusion-3.5-medium",
            "stable-diffusion-3",
            "Stability AI Community License",
            True,
            28,
            4.5,
            1024,
            True,
            gated=True,
        ),
    )
}


@dataclass(frozen=True)
class T2IConfig:
    """Text-to-image settings (None: the model's recommended value, see :func:`model_card`).

    Attributes:
        model: a Hugging Face model id or a local pipeline folder (default :data:`DEFAULT_MODEL`).
        steps: sampling steps (1–200).
        guidance: guidance scale (0–30; FLUX.1-schnell and Z-Image-Turbo ignore it: use 0).
        seed: random seed of the initial noise (picture ``i`` of ``-n`` uses ``seed + i``).
        size: the square picture's side in pixels (64–2048, a multiple of 16).
        negative_prompt: what to avoid, for pipelines that take one (others: a report warning).
        template: the prompt template (must contain ``{prompt}``); default :data:`PROMPT_TEMPLATE`.
        allow_non_commercial: accept a model whose licence forbids or restricts commercial use.
        offload: ``"auto"`` (CPU offload on a GPU with too little memory), ``"on"`` or ``"off"``.
    """

    model: str = DEFAULT_MODEL
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    size: int | None = None
    negative_prompt: str | None = None
    template: str = PROMPT_TEMPLATE
    allow_non_commercial: bool = False
    offload: str = "auto"

    def validate(self) -> None:
        """Check the ranges.

        Raises:
            InputError: a value out of range, naming the option and its range.
        """
        if not self.model or not self.model.strip():
            raise InputError("--t2i-model is empty: give a Hugging Face model id or a pipeline folder")
        if self.steps is not None and not 1 <= self.steps <= 200:
            raise InputError(f"--t2i-steps must be in 1..200, got {self.steps}")
        if self.guidance is not None and not (np.isfinite(self.guidance) and 0.0 <= self.guidance <= 30.0):
            raise InputError(f"--t2i-guidance must be in 0..30, got {self.guidance}")
        if self.size is not None and (not MIN_SIZE <= self.size <= MAX_SIZE or self.size % 16):
            raise InputError(f"--t2i-size must be a multiple of 16 in {MIN_SIZE}..{MAX_SIZE}, got {self.size}")
        if "{prompt}" not in self.template:
            raise InputError("--prompt-template must contain {prompt} (where the prompt goes)")
        if self.offload not in ("auto", "on", "off"):
            raise InputError(f"offload must be auto, on or off, got {self.offload!r}")
        if not 0 <= self.seed < 2**63:
            raise InputError(f"--seed must be in 0..2^63-1, got {self.seed}")


def check_prompt(prompt: str) -> str:
    """The prompt, stripped and on one line, or a one-line error.

    Raises:
        InputError: the prompt is empty, or longer than :data:`MAX_PROMPT_CHARS` characters.
    """
    text = " ".join(str(prompt).split())
    if not text:
        raise InputError("the prompt is empty: describe the object, e.g. --prompt 'a red fire extinguisher'")
    if len(text) > MAX_PROMPT_CHARS:
        raise InputError(
            f"the prompt has {len(text)} characters, more than {MAX_PROMPT_CHARS}: describe one object briefly"
        )
    return text


def prompt_stem(prompt: str, limit: int = 60) -> str:
    """A file-name stem from a prompt: lower case, words joined by ``-``, at most ``limit`` characters
    (cut at a word), only ``a-z0-9-`` (``"prompt"`` when nothing is left)."""
    words = re.findall(r"[a-z0-9]+", prompt.lower())
    stem = ""
    for word in words:
        candidate = f"{stem}-{word}" if stem else word
        if len(candidate) > limit:
            break
        stem = candidate
    return stem or (words[0][:limit] if words else "prompt")


def _hub_offline() -> bool:
    from ..backends.triposr.loading import hub_offline

    return hub_offline()


def _is_repo_id(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text)) and ".." not in text


def _cached_folder(model: str) -> Path | None:
    """The Hugging Face cache's snapshot folder of ``model`` when its ``model_index.json`` is cached."""
    if importlib_find("huggingface_hub") is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model, "model_index.json", cache_dir=os.environ.get("HF_HUB_CACHE") or None)
    except Exception:
        return None
    return Path(found).parent if isinstance(found, str) else None


def importlib_find(module: str) -> object:
    import importlib.util

    return importlib.util.find_spec(module)


def model_card(model: str) -> dict[str, Any]:
    """What meshforge knows of a model before loading it: licence, non-commercial, recommended settings.

    A known id (:data:`KNOWN_MODELS`), else a local folder's ``meshforge_t2i.json``, else ``license``
    ``"unknown"`` (the caller warns) and diffusers' defaults (``steps``/``guidance``/``size`` None).

    Returns:
        ``{"model", "family", "license", "non_commercial", "steps", "guidance", "size", "negative_prompt",
        "gated"}``.
    """
    known = KNOWN_MODELS.get(model)
    if known is not None:
        return {
            "model": known.model,
            "family": known.family,
            "license": known.license,
            "non_commercial": known.non_commercial,
            "steps": known.steps,
            "guidance": known.guidance,
            "size": known.size,
            "negative_prompt": known.negative_prompt,
            "gated": known.gated,
        }
    card: dict[str, Any] = {
        "model": model,
        "family": None,
        "license": "unknown",
        "non_commercial": False,
        "steps": None,
        "guidance": None,
        "size": None,
        "negative_prompt": None,
        "gated": False,
    }
    folder = Path(model).expanduser()
    sidecar = folder / "meshforge_t2i.json"
    if folder.is_dir() and sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            raise BackendError(f"--t2i-model {folder.name}: meshforge_t2i.json is not valid JSON ({exc})") from None
        for key in ("license", "non_commercial", "steps", "guidance", "size"):
            if key in data:
                card[key] = data[key]
    return card


def check_licence(card: dict[str, Any], allow_non_commercial: bool) -> None:
    """Refuse a model whose licence forbids or restricts commercial use unless it was allowed.

    Raises:
        InputError: the model is non-commercial and ``allow_non_commercial`` is False.
    """
    if card["non_commercial"] and not allow_non_commercial:
        raise InputError(
            f"text-to-image model {card['model']} is under the {card['license']}, which does not allow (or "
            "restricts) commercial use: pass --allow-non-commercial to use it anyway, or use the default "
            f"{DEFAULT_MODEL} (Apache-2.0)"
        )


@dataclass
class TextToImage:
    """A loaded text-to-image pipeline (:func:`load_text_to_image`); call :meth:`generate` per picture.

    Attributes:
        pipe: the :class:`diffusers.DiffusionPipeline`.
        card: :func:`model_card` of the model.
        device: ``"cpu"`` or ``"cuda[:N]"``.
        dtype: the weights' dtype name (``float32``, ``bfloat16``, ``float16``).
        offload: whether model CPU offload is on.
        load_seconds: how long loading took.
        warnings: facts the user should see (unknown licence, offload unavailable).
    """

    pipe: Any
    card: dict[str, Any]
    device: str
    dtype: str
    offload: bool
    load_seconds: float
    warnings: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def settings(self, cfg: T2IConfig) -> dict[str, Any]:
        """The values :meth:`generate` uses: ``cfg``'s, else the model card's, else the pipeline's defaults."""
        call = _call_defaults(self.pipe)
        size = cfg.size or self.card["size"] or call.get("size") or 1024
        return {
            "steps": int(cfg.steps or self.card["steps"] or call.get("steps") or 28),
            "guidance": float(
                cfg.guidance if cfg.guidance is not None else _first(self.card["guidance"], call.get("guidance"), 0.0)
            ),
            "size": int(size),
        }

    def generate(
        self,
        prompt: str,
        cfg: T2IConfig,
        *,
        seed: int | None = None,
        on_step: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> tuple[Image, dict[str, Any]]:
        """One picture from one prompt.

        Args:
            prompt: the user's prompt (checked with :func:`check_prompt`, then put into ``cfg.template``).
            cfg: the settings.
            seed: the seed of this picture (default ``cfg.seed``); the noise is drawn on the CPU by a
                :class:`torch.Generator`, so a seed gives the same picture on every device type up to
                floating-point differences.
            on_step: called as ``on_step(step, steps)`` after each sampling step (1-based).
            should_stop: polled after each step; when it returns True the sampling stops (the caller
                raises its own error after).

        Returns:
            ``(picture, parameters)``: an opaque RGBA :class:`~meshforge.types.Image` ``[size, size, 4]``
            uint8 named from the prompt (:func:`prompt_stem`), and the parameters used (for the report).

        Raises:
            InputError: empty or over-long prompt, or a setting out of range.
            StageError: out of memory (the message says what to lower); other errors of the pipeline (and
                whatever ``on_step`` raises) pass unchanged.
        """
        import torch

        text = check_prompt(prompt)
        cfg.validate()
        s = self.settings(cfg)
        full = cfg.template.replace("{prompt}", text)
        seed = cfg.seed if seed is None else seed
        kwargs: dict[str, Any] = {
            "prompt": full,
            "num_inference_steps": s["steps"],
            "guidance_scale": s["guidance"],
            "height": s["size"],
            "width": s["size"],
            "generator": torch.Generator("cpu").manual_seed(seed),
            "output_type": "np",
        }
        warnings: list[str] = []
        takes = _call_parameters(self.pipe)
        if cfg.negative_prompt:
            # FLUX takes one only with true CFG (twice the work); distilled models ignore it
            flux = type(self.pipe).__name__.startswith("Flux")
            if "negative_prompt" in takes and self.card["negative_prompt"] is not False and not flux:
                kwargs["negative_prompt"] = cfg.negative_prompt
            else:
                warnings.append(f"{self.card['model']} takes no negative prompt: it was not used")
        if "max_sequence_length" in takes:
            kwargs["max_sequence_length"] = 512 if len(full) > 200 else 256
        if "callback_on_step_end" in takes and (on_step is not None or should_stop is not None):

            def step_end(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                if on_step is not None:
                    on_step(i + 1, s["steps"])
                if should_stop is not None and should_stop():
                    pipe._interrupt = True
                return {}

            kwargs["callback_on_step_end"] = step_end
        started = time.perf_counter()
        try:
            with self.lock, torch.inference_mode():
                out = self.pipe(**kwargs)
        except Exception as exc:  # others (a caller's stop raised from on_step/should_stop) pass unchanged
            if not is_out_of_memory(exc):
                raise
            free_memory()
            raise StageError(
                f"out of memory generating a {s['size']}×{s['size']} picture with {self.card['model']} on "
                f"{self.device}: try a smaller --t2i-size" + ("" if self.offload else " or a GPU with more memory")
            ) from None
        pixels = np.asarray(out.images[0], dtype=np.float32)
        rgb = np.clip(np.rint(np.nan_to_num(pixels) * 255.0), 0, 255).astype(np.uint8)
        rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
        import hashlib

        picture = Image(
            rgba=np.ascontiguousarray(rgba),
            name=prompt_stem(text),
            sha256=hashlib.sha256(rgba.tobytes()).hexdigest(),
            has_alpha=False,
            meta={"source": "text_to_image"},
        )
        params = {
            "model": self.card["model"],
            "license": self.card["license"],
            "prompt": text,
            "full_prompt": full,
            "negative_prompt": kwargs.get("negative_prompt"),
            "template": cfg.template,
            "steps": s["steps"],
            "guidance": s["guidance"],
            "seed": seed,
            "width": s["size"],
            "height": s["size"],
            "pipeline": type(self.pipe).__name__,
            "device": self.device,
            "dtype": self.dtype,
            "offload": self.offload,
            "seconds": round(time.perf_counter() - started, 4),
            "warnings": self.warnings + warnings,
        }
        return picture, params


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _call_parameters(pipe: Any) -> set[str]:
    import inspect

    return set(inspect.signature(pipe.__call__).parameters)


def _call_defaults(pipe: Any) -> dict[str, Any]:
    """The pipeline's own defaults: steps, guidance, and its default size (``default_sample_size`` ×
    ``vae_scale_factor``, as diffusers computes it)."""
    import inspect

    params = inspect.signature(pipe.__call__).parameters
    out: dict[str, Any] = {}
    if "num_inference_steps" in params and isinstance(params["num_inference_steps"].default, int):
        out["steps"] = params["num_inference_steps"].default
    if "guidance_scale" in params and isinstance(params["guidance_scale"].default, (int, float)):
        out["guidance"] = float(params["guidance_scale"].default)
    sample, scale = getattr(pipe, "default_sample_size", None), getattr(pipe, "vae_scale_factor", None)
    if isinstance(sample, int) and isinstance(scale, int):
        out["size"] = sample * scale
    return out


_LOADED: dict[tuple[str, str, str], TextToImage] = {}
_LOAD_LOCK = threading.Lock()


def load_text_to_image(cfg: T2IConfig, device: str = "cpu") -> TextToImage:
    """Load (once per process, model and device) the text-to-image pipeline ``cfg.model``.

    Args:
        cfg: the settings (``model``, ``allow_non_commercial``, ``offload`` are read here).
        device: ``"cpu"`` or ``"cuda[:N]"`` (resolve ``"auto"`` first: :func:`meshforge.devices.resolve_device`).

    Returns:
        The loaded :class:`TextToImage` (the same object for the same model and device).

    Raises:
        InputError: a bad setting, or a non-commercial model without ``allow_non_commercial``.
        BackendError: no such folder or model; not cached and offline (or no network); a gated model
            without access; not a diffusers pipeline.
        MissingDependency: diffusers is not installed.
        StageError: out of memory while loading.
    """
    cfg.validate()
    card = model_card(cfg.model)
    check_licence(card, cfg.allow_non_commercial)
    key = (cfg.model, device, cfg.offload)
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load(cfg, card, device)
        return _LOADED[key]


def quiet_libraries() -> None:
    """No progress bars or advice from transformers/diffusers/huggingface_hub on stderr (the CLI draws its
    own); transformers first, as importing diffusers makes it talk."""
    for name in ("diffusers", "transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except Exception:  # pragma: no cover
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except Exception:  # pragma: no cover
        pass
    try:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
    except Exception:  # pragma: no cover
        pass


def _source(model: str) -> tuple[str, bool, str]:
    """``(what to pass to from_pretrained, local files only?, why local only)`` for a model argument."""
    folder = Path(model).expanduser()
    if folder.exists():
        if not (folder / "model_index.json").is_file():
            raise BackendError(
                f"--t2i-model {folder.name}: not a diffusers pipeline folder (no model_index.json); save one "
                "with pipeline.save_pretrained(DIR), or give a Hugging Face model id"
            )
        return str(folder), True, ""
    if not _is_repo_id(model):
        raise BackendError(
            f"--t2i-model {model}: no such folder, and not a Hugging Face model id (owner/name): e.g. {DEFAULT_MODEL}"
        )
    if _hub_offline():
        return model, True, "HF_HUB_OFFLINE is set"
    from ..backends.weights import _reachable

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not _reachable(endpoint):
        return model, True, f"{endpoint} cannot be reached"
    return model, False, ""


def _load(cfg: T2IConfig, card: dict[str, Any], device: str) -> TextToImage:
    require("diffusers", "text to image", "t2i")
    import torch

    quiet_libraries()
    from diffusers import DiffusionPipeline

    source, local_only, why = _source(cfg.model)
    cuda = device.startswith("cuda")
    dtype = torch.float32
    if cuda:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():  # newer diffusers name it dtype; torch_dtype works in all
            warnings.simplefilter("ignore", FutureWarning)
            pipe = DiffusionPipeline.from_pretrained(source, torch_dtype=dtype, local_files_only=local_only)
    except Exception as exc:
        raise _load_error(cfg.model, card, exc, local_only, why) from None
    if not callable(pipe) or "prompt" not in _call_parameters(pipe):
        raise BackendError(f"--t2i-model {cfg.model}: {type(pipe).__name__} is not a text-to-image pipeline")
    notes: list[str] = []
    if card["license"] == "unknown":
        notes.append(f"the licence of text-to-image model {Path(cfg.model).name} is unknown to meshforge: check it")
    try:
        pipe.set_progress_bar_config(disable=True)
    except Exception:  # pragma: no cover
        pass
    offload = False
    try:
        if cuda:
            offload = cfg.offload == "on" or (cfg.offload == "auto" and _too_big(pipe, device))
            if offload and importlib_find("accelerate") is None:
                notes.append("low-VRAM offload needs 'accelerate' (pip install accelerate): loading fully on the GPU")
                offload = False
            if offload:
                pipe.enable_model_cpu_offload(device=device)
            else:
                pipe.to(device)
    except Exception as exc:
        del pipe
        free_memory()
        if is_out_of_memory(exc):
            raise StageError(
                f"out of memory loading text-to-image model {cfg.model} on {device}: free the GPU, or let "
                "meshforge offload (--t2i-offload on, needs accelerate)"
            ) from None
        raise BackendError(f"cannot move {cfg.model} to {device}: {' '.join(str(exc).split())}") from None
    return TextToImage(
        pipe=pipe,
        card=card,
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        offload=offload,
        load_seconds=time.perf_counter() - started,
        warnings=notes,
    )


def _too_big(pipe: Any, device: str) -> bool:
    """Whether the pipeline's weights need more than 1/1.2 of the GPU's memory."""
    import torch

    n_bytes = 0
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            n_bytes += sum(p.numel() * p.element_size() for p in module.parameters())
    total = torch.cuda.get_device_properties(torch.device(device)).total_memory
    return n_bytes * 1.2 > total


def _load_error(model: str, card: dict[str, Any], exc: Exception, local_only: bool, why: str) -> MeshforgeError:
    """One line for a failed ``from_pretrained``: gated, not found, not cached, out of memory, other."""
    names = {type(e).__name__ for e in _chain(exc)}
    reason = " ".join(str(exc).split())
    if "GatedRepoError" in names or ("gated" in reason.lower() and "access" in reason.lower()):
        return BackendError(
            f"text-to-image model {model} is gated: accept its licence at https://huggingface.co/{model} and log "
            "in (hf auth login, or set HF_TOKEN), then try again"
        )
    if is_out_of_memory(exc):
        return StageError(f"out of memory loading text-to-image model {model}")
    if local_only and Path(model).expanduser().exists():
        return BackendError(f"--t2i-model {Path(model).name}: cannot load the pipeline folder: {reason[:300]}")
    if local_only:
        return BackendError(
            f"text-to-image model {model} is not in the Hugging Face cache and {why}: download it on a machine "
            f"with network access (hf download {model}), or give --t2i-model DIR (a local pipeline folder)"
        )
    if "RepositoryNotFoundError" in names:
        return BackendError(f"text-to-image model {model} does not exist on the Hugging Face hub (or is private)")
    return BackendError(f"cannot load text-to-image model {model}: {reason[:300] or type(exc).__name__}")


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def t2i_statuses() -> list[dict[str, Any]]:
    """Each known text-to-image model: licence, whether commercial use needs a flag, cached locally?

    No network access, no torch import.
    """
    out = []
    for model in KNOWN_MODELS.values():
        folder = _cached_folder(model.model)
        out.append(
            {
                "model": model.model,
                "license": model.license,
                "non_commercial": model.non_commercial,
                "default": model.model == DEFAULT_MODEL,
                "gated": model.gated,
                "present": folder is not None,
                "location": str(folder) if folder is not None else None,
            }
        )
    return out


def text_to_image_stage(
    t2i: TextToImage,
    prompt: str,
    cfg: T2IConfig,
    report: Report,
    *,
    seed: int | None = None,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Image:
    """:meth:`TextToImage.generate` as the pipeline's first stage: timed (``text_to_image`` in
    ``report.stages``, with the steps, size, seed and peak memory), its parameters in
    ``report.info["text_to_image"]`` and its warnings in ``report.warnings``.

    The picture it returns goes through :func:`meshforge.pipeline.run` like any picture.

    Raises:
        InputError, StageError: see :meth:`TextToImage.generate`.
    """
    from .. import _profiling

    with _profiling.stage(report, "text_to_image") as counts:
        picture, params = t2i.generate(prompt, cfg, seed=seed, on_step=on_step, should_stop=should_stop)
        counts.update(
            model=params["model"], steps=params["steps"], size=params["width"], seed=params["seed"],
            device=params["device"],
        )  # fmt: skip
        if _cuda_peak(t2i.device) is not None:
            counts["peak_vram_mb"] = _cuda_peak(t2i.device)
    report.info["text_to_image"] = {k: v for k, v in params.items() if k != "warnings"}
    report.info["text_to_image"]["load_seconds"] = round(t2i.load_seconds, 4)
    for warning in params["warnings"]:
        report.warn(warning)
    return picture


def _cuda_peak(device: str) -> float | None:
    """The CUDA caching allocator's peak in MiB on ``device``, or None on the CPU."""
    torch = sys.modules.get("torch")
    if torch is None or not device.startswith("cuda"):
        return None
    return round(torch.cuda.max_memory_allocated(torch.device(device)) / 2**20, 1)


def format_t2i(statuses: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`t2i_statuses`: model, cached?, licence (non-commercial flagged)."""
    width = max((len(s["model"]) for s in statuses), default=5)
    lines = []
    for s in statuses:
        state = "cached" if s["present"] else "-"
        notes = [s["license"]]
        if s["non_commercial"]:
            notes.append("non-commercial or restricted commercial use: needs --allow-non-commercial")
        if s["gated"]:
            notes.append("gated: accept its licence on Hugging Face")
        if s["default"]:
            notes.append("default")
        lines.append(f"{s['model']:<{width}}  {state:<6}  {'; '.join(notes)}")
    return "\n".join(lines)
