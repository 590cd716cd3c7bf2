"""Image conditioning of TRELLIS.2: DINOv3 ViT-L/16 patch tokens at 512 or 1024 pixels.

TRELLIS.2 conditions every flow on the token sequence of DINOv3 (Siméoni et al. 2025, "DINOv3") run on the
square object crop: ``[B, 1 + R + P, D]`` — the class token, ``R`` register tokens (4) and ``P = (S/16)²``
patch tokens (1024 at 512 px, 4096 at 1024 px), ``D = 1024`` — taken **before** the model's own final
LayerNorm and normalised instead by a LayerNorm *without* affine parameters (eps 1e-5). The picture is
resized with Lanczos to ``S × S``, scaled to [0, 1] and normalised with the ImageNet mean/std.

The backbone is ``transformers``' ``DINOv3ViTModel`` (``facebook/dinov3-vitl16-pretrain-lvd1689m``; a gated
model under the DINOv3 licence: meshforge never bundles or downloads it). Its transformer layers are
``model.layer`` in ``transformers`` 4.x and ``model.model.layer`` in 5.x; :func:`transformer_layers` finds
either. Where the backbone comes from, first match wins:

1. an explicit folder (the backend's ``dinov3`` option),
2. the folder in the environment variable :data:`DINOV3_ENV` (``MESHFORGE_DINOV3``),
3. ``<weights folder>/<model id>`` (how ``meshforge models random`` lays it out),
4. the Hugging Face cache (``local_files_only``: never a download; ``HF_HUB_CACHE`` honoured).

Sources: TRELLIS.2 (2025) ``DinoV3FeatureExtractor`` and ``Trellis2ImageTo3DPipeline.preprocess_image``
(behaviour reproduced, code our own); DINOv3 (Siméoni et al. 2025).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import BackendError, MissingDependency

if TYPE_CHECKING:
    import torch
    from PIL import Image as PILImage

__all__ = [
    "DINOV3_ENV",
    "DINOV3_ID",
    "DINOV3_LICENCE_STEP",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DinoV3Conditioner",
    "crop_object",
    "find_dinov3",
    "images_to_tensor",
    "transformer_layers",
]

#: the Hugging Face id of the backbone TRELLIS.2 uses
DINOV3_ID = "facebook/dinov3-vitl16-pretrain-lvd1689m"
#: environment variable naming a local DINOv3 folder (``config.json`` + ``model.safetensors``)
DINOV3_ENV = "MESHFORGE_DINOV3"
#: how to get the gated backbone (printed by ``meshforge models pull trellis2`` and in errors)
DINOV3_LICENCE_STEP = (
    f"DINOv3 is gated: accept its licence at https://huggingface.co/{DINOV3_ID}, log in "
    f"('hf auth login'), then 'hf download {DINOV3_ID}' (into the Hugging Face cache), or download it "
    f"into a folder and set {DINOV3_ENV}=DIR"
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the longest side the reference keeps before cropping (larger pictures are shrunk with Lanczos)
MAX_INPUT_SIDE = 1024


def crop_object(rgba: np.ndarray) -> PILImage.Image:
    """The reference's object crop of an RGBA picture whose alpha is the object mask.

    Shrinks the picture (Lanczos) so its longest side is at most 1024, takes the box of the pixels with
    alpha > 0.8·255, crops the square of the box's longer side centred on it (PIL's crop: outside pixels
    are transparent black), and premultiplies the colour by the alpha (black background).

    Args:
        rgba: ``[H, W, 4]`` uint8, straight alpha.

    Returns:
        A PIL ``RGB`` picture.

    Raises:
        ValueError: no pixel has alpha above 0.8·255.
    """
    from PIL import Image as PILImage

    image = PILImage.fromarray(np.ascontiguousarray(rgba, dtype=np.uint8), "RGBA")
    scale = min(1, MAX_INPUT_SIDE / max(image.size))
    if scale < 1:
        image = image.resize((int(image.width * scale), int(image.height * scale)), PILImage.Resampling.LANCZOS)
    alpha = np.asarray(image)[:, :, 3]
    rows_cols = np.argwhere(alpha > 0.8 * 255)
    if rows_cols.size == 0:
        raise ValueError("the picture's alpha has no pixel above 0.8: no object to crop")
    x0, y0 = int(rows_cols[:, 1].min()), int(rows_cols[:, 0].min())
    x1, y1 = int(rows_cols[:, 1].max()), int(rows_cols[:, 0].max())
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) // 2
    crop = image.crop((cx - half, cy - half, cx + half, cy + half))
    values = np.asarray(crop).astype(np.float32) / 255
    premultiplied = values[:, :, :3] * values[:, :, 3:4]
    return PILImage.fromarray((premultiplied * 255).astype(np.uint8))


def images_to_tensor(images: list[PILImage.Image], size: int) -> torch.Tensor:
    """PIL pictures → ``[B, 3, size, size]`` float32 in [0, 1] (Lanczos resize, RGB, /255)."""
    import torch
    from PIL import Image as PILImage

    arrays = []
    for image in images:
        resized = image.resize((size, size), PILImage.Resampling.LANCZOS)
        arrays.append(torch.from_numpy(np.asarray(resized.convert("RGB")).astype(np.float32) / 255).permute(2, 0, 1))
    return torch.stack(arrays).float()


def transformer_layers(model: Any) -> Any:
    """The ``nn.ModuleList`` of a ``DINOv3ViTModel``'s layers: ``model.model.layer`` (transformers 5.x) or
    ``model.layer`` (4.x).

    Raises:
        BackendError: neither exists.
    """
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "layer"):
        return inner.layer
    if hasattr(model, "layer"):
        return model.layer
    raise BackendError("this transformers version's DINOv3ViTModel has neither .model.layer nor .layer")


def quiet_transformers() -> None:
    """Turn off transformers' per-file progress bars ("Loading weights", "Writing model shards"): our CLI
    prints one line per stage, and servers log JSON."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is the extra's dependency
        pass


class DinoV3Conditioner:
    """DINOv3 features as TRELLIS.2 uses them (see the module docstring).

    Args:
        model: a ``transformers`` ``DINOv3ViTModel`` (eval mode).
        source: where it was loaded from (for provenance).

    Attributes:
        image_size: the side the pictures are resized to (512 or 1024; set per call by :meth:`__call__`).
    """

    def __init__(self, model: Any, source: str = "") -> None:
        self.model = model.eval()
        self.source = source
        self.image_size = 512

    @classmethod
    def load(
        cls,
        location: str | os.PathLike[str] | None = None,
        *,
        weights_folder: str | os.PathLike[str] | None = None,
        model_id: str = DINOV3_ID,
        dtype: torch.dtype | None = None,
    ) -> DinoV3Conditioner:
        """Load the backbone found by :func:`find_dinov3`, with strict keys.

        Args:
            location: an explicit folder (first choice).
            weights_folder: the TRELLIS.2 weights folder (looked into for ``<model_id>/``).
            model_id: the id ``pipeline.json`` names.
            dtype: parameter dtype (default float32, as the reference loads it).

        Raises:
            BackendError: not found (with the licence step), unreadable, or keys that do not match.
            MissingDependency: ``transformers`` is not installed.
        """
        import torch

        try:
            from transformers import DINOv3ViTModel
        except ImportError as exc:
            raise MissingDependency(
                f"the TRELLIS.2 backend needs 'transformers' with DINOv3 (>= 4.56): pip install 'meshforge[trellis2]' "
                f"({exc})"
            ) from None
        folder = find_dinov3(location, weights_folder=weights_folder, model_id=model_id)
        try:
            quiet_transformers()
            loaded: Any = DINOv3ViTModel.from_pretrained(
                str(folder),
                dtype=dtype or torch.float32,
                local_files_only=True,
                output_loading_info=True,
                attn_implementation="sdpa",
                use_safetensors=True,
            )
        except Exception as exc:  # corrupt or truncated file, bad config: one line naming the folder
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise BackendError(f"cannot load DINOv3 from {folder}: {reason}") from None
        model, info = loaded
        bad = {k: sorted(v) for k, v in info.items() if k != "error_msgs" and v}
        if bad or info.get("error_msgs"):
            parts = [f"{len(v)} {k.replace('_keys', '')} (e.g. {v[0]!r})" for k, v in bad.items()]
            parts += [str(m) for m in info.get("error_msgs", [])][:1]
            raise BackendError(f"DINOv3 weights in {folder} do not match their config: {'; '.join(parts)}")
        return cls(model, str(folder))

    @property
    def device(self) -> torch.device:
        device: torch.device = self.model.embeddings.patch_embeddings.weight.device
        return device

    def to(self, device: str | torch.device) -> DinoV3Conditioner:
        self.model.to(device)
        return self

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Tokens of normalised pictures.

        Args:
            pixels: ``[B, 3, S, S]`` ImageNet-normalised pictures (S a multiple of 16).

        Returns:
            ``[B, 1 + R + (S/16)², D]`` in the model's dtype: the last layer's output through a LayerNorm
            without affine (eps 1e-5).
        """
        import torch.nn.functional as F

        pixels = pixels.to(self.model.embeddings.patch_embeddings.weight.dtype)
        hidden = self.model.embeddings(pixels, bool_masked_pos=None)
        rope = self.model.rope_embeddings(pixels)
        for layer in transformer_layers(self.model):
            hidden = layer(hidden, position_embeddings=rope)
        return F.layer_norm(hidden, hidden.shape[-1:])

    def __call__(self, images: list[PILImage.Image] | torch.Tensor, resolution: int | None = None) -> torch.Tensor:
        """Condition tokens of pictures at ``resolution`` (default :attr:`image_size`).

        Args:
            images: PIL pictures (resized here), or a ``[B, 3, S, S]`` float tensor in [0, 1] (used as is).
            resolution: the side to resize PIL pictures to (512 or 1024 in TRELLIS.2).

        Returns:
            ``[B, 1 + R + P, D]`` on the model's device (see :meth:`features`).
        """
        import torch

        if resolution is not None:
            self.image_size = int(resolution)
        if isinstance(images, torch.Tensor):
            if images.ndim != 4:
                raise ValueError(f"expected a [B, 3, H, W] tensor, got {tuple(images.shape)}")
            pixels = images.float()
        else:
            pixels = images_to_tensor(list(images), self.image_size)
        pixels = pixels.to(self.device)
        mean = torch.tensor(IMAGENET_MEAN, dtype=pixels.dtype, device=pixels.device).view(-1, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=pixels.dtype, device=pixels.device).view(-1, 1, 1)
        with torch.no_grad():
            return self.features((pixels - mean) / std)


def _is_model_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def find_dinov3(
    location: str | os.PathLike[str] | None = None,
    *,
    weights_folder: str | os.PathLike[str] | None = None,
    model_id: str = DINOV3_ID,
) -> Path:
    """The local folder of the DINOv3 backbone (see the module docstring for the order). Never downloads.

    Raises:
        BackendError: an explicit or ``MESHFORGE_DINOV3`` folder that is not a model folder (naming the missing
            file), or nothing found — with :data:`DINOV3_LICENCE_STEP`.
    """
    for given, origin in ((location, "the dinov3 option"), (os.environ.get(DINOV3_ENV) or None, DINOV3_ENV)):
        if given is None:
            continue
        folder = Path(given).expanduser()
        if not folder.is_dir():
            raise BackendError(f"DINOv3 folder {folder} (from {origin}) does not exist. {DINOV3_LICENCE_STEP}")
        if not (folder / "config.json").is_file():
            raise BackendError(f"DINOv3 folder {folder} (from {origin}) has no config.json")
        if not any(folder.glob("*.safetensors")):
            raise BackendError(f"DINOv3 folder {folder} (from {origin}) has no model.safetensors")
        return folder
    if weights_folder is not None:
        inside = Path(weights_folder) / model_id
        if _is_model_folder(inside):
            return inside
    cached = _cached_snapshot(model_id)
    if cached is not None:
        return cached
    raise BackendError(f"the DINOv3 image encoder {model_id!r} was not found. {DINOV3_LICENCE_STEP}")


def _cached_snapshot(repo_id: str) -> Path | None:
    """The Hugging Face cache snapshot folder of ``repo_id`` holding ``config.json`` and ``model.safetensors``."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cache = os.environ.get("HF_HUB_CACHE") or None
    try:
        config = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache)
        weights = try_to_load_from_cache(repo_id, "model.safetensors", cache_dir=cache)
    except Exception:
        return None
    if isinstance(config, str) and isinstance(weights, str) and os.path.isfile(weights):
        return Path(config).parent
    return None
