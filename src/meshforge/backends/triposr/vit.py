"""The DINO ViT image encoder of TripoSR (:class:`ImageTokenizer`), with transformers-4.x parameter names.

A ViT-B/16 (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"; pre-norm, CLS token, learned absolute
positions) with DINO's weights (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
Transformers"): ``rgb [B, 3, H, W]`` → ImageNet normalisation → tokens ``[B, 1 + (H/16)·(W/16), D]`` (token 0 =
CLS). The module tree reproduces the Hugging Face transformers 4.x ViT names, found under
``image_tokenizer.model`` in the official checkpoint (see :class:`~.model.TripoSRModel`).

Numerical conventions that matter (each is pinned by the parity tests):

* position embeddings are interpolated with the *legacy* rule of transformers 4.35: bicubic,
  ``align_corners=False``, ``scale_factor = (n + 0.1) / sqrt(N)`` (not ``size=n``), CLS entry unchanged
  (:func:`legacy_interpolate_pos_encoding`);
* LayerNorm eps from the config (1e-12), exact erf GELU; attention via
  :func:`torch.nn.functional.scaled_dot_product_attention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ViTConfig

__all__ = ["IMAGE_MEAN", "IMAGE_STD", "ImageTokenizer", "ViTEncoder", "legacy_interpolate_pos_encoding"]

#: ImageNet normalisation of the DINO encoder (RGB mean and std).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def legacy_interpolate_pos_encoding(
    position_embeddings: torch.Tensor, grid_h: int, grid_w: int, *, square_input: bool = True
) -> torch.Tensor:
    """Resample a ViT position table to a ``grid_h × grid_w`` patch grid, as transformers 4.35's ViT does.

    The patch part of the table (a ``√N × √N`` grid) is resized by bicubic interpolation with
    ``align_corners=False`` and ``scale_factor = ((grid + 0.1) / √N)`` per axis — the "+0.1" of DINO's
    implementation; the scale factor, not the output size, sets the sampling positions, which differs from
    ``size=(grid_h, grid_w)`` by ~5e-3. The CLS row is kept unchanged. When the grid already matches (and the
    input is square) the table is returned as is.

    Args:
        position_embeddings: ``[1, 1 + N, D]`` float (N a square number).
        grid_h: patch rows of the input (``H // patch_size``).
        grid_w: patch columns.
        square_input: whether the input picture is square (the reference skips interpolation only then).

    Returns:
        ``[1, 1 + grid_h·grid_w, D]``, same dtype and device.
    """
    n_pos = position_embeddings.shape[1] - 1
    if n_pos == grid_h * grid_w and square_input:
        return position_embeddings
    dim = position_embeddings.shape[-1]
    side = math.sqrt(n_pos)
    cls_row = position_embeddings[:, :1]
    patch = position_embeddings[:, 1:].reshape(1, int(side), int(side), dim).permute(0, 3, 1, 2)
    h, w = grid_h + 0.1, grid_w + 0.1
    patch = F.interpolate(patch, scale_factor=(h / side, w / side), mode="bicubic", align_corners=False)
    if patch.shape[-2:] != (grid_h, grid_w):  # pragma: no cover - guarded by the +0.1
        raise RuntimeError(f"position interpolation gave {tuple(patch.shape[-2:])}, expected {(grid_h, grid_w)}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
    return torch.cat([cls_row, patch], dim=1)


class _PatchEmbeddings(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.projection(pixels).flatten(2).transpose(1, 2)  # [B, h·w, D], row-major patches


class _Embeddings(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        n = (cfg.image_size // cfg.patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, n + 1, cfg.hidden_size))
        self.patch_embeddings = _PatchEmbeddings(cfg)
        self.patch_size = cfg.patch_size
        nn.init.trunc_normal_(self.position_embeddings, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def position_table(self, height: int, width: int) -> torch.Tensor:
        """``[1, 1 + (H/p)·(W/p), D]`` position embeddings for an ``H × W`` input (legacy interpolation)."""
        p = self.patch_size
        return legacy_interpolate_pos_encoding(
            self.position_embeddings, height // p, width // p, square_input=height == width
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        b, _, h, w = pixels.shape
        x = self.patch_embeddings(pixels)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        return x + self.position_table(h, w)


class _SelfAttention(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.query = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.key = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.value = nn.Linear(d, d, bias=cfg.qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)))
        return out.transpose(1, 2).reshape(b, n, d)


class _SelfOutput(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)


class _Attention(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.attention = _SelfAttention(cfg)
        self.output = _SelfOutput(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output.dense(self.attention(x))


class _Dense(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)


class _ViTLayer(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Dense(cfg.hidden_size, cfg.intermediate_size)
        self.output = _Dense(cfg.intermediate_size, cfg.hidden_size)
        self.layernorm_before = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.approximate = "none" if cfg.hidden_act == "gelu" else "tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.layernorm_before(x))
        h = F.gelu(self.intermediate.dense(self.layernorm_after(x)), approximate=self.approximate)
        return x + self.output.dense(h)


class _Encoder(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_ViTLayer(cfg) for _ in range(cfg.num_hidden_layers))


class ViTEncoder(nn.Module):
    """A ViT (pre-norm, CLS token, learned absolute positions) with transformers-4.x parameter names.

    ``forward(pixels [B, C, H, W]) -> [B, 1 + (H/p)·(W/p), D]``, the final-LayerNorm'd hidden states
    (``last_hidden_state``). The ``pooler`` exists only so the checkpoint loads; it is not evaluated.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.pooler = _Dense(cfg.hidden_size, cfg.hidden_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(pixels)
        for layer in self.encoder.layer:
            x = layer(x)
        out: torch.Tensor = self.layernorm(x)
        return out


class ImageTokenizer(nn.Module):
    """DINO image tokenizer: ImageNet normalisation, then :class:`ViTEncoder` (parameters under ``model``).

    ``forward(rgb [B, 3, H, W] float in [0, 1]) -> [B, Nt, D]`` with ``Nt = 1 + (H/p)·(W/p)``.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.model = ViTEncoder(cfg)
        self._normalisation: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        key = (rgb.device, rgb.dtype)
        if key not in self._normalisation:  # made once per device (no host→device copy in a captured CUDA graph)
            mean = torch.as_tensor(IMAGE_MEAN, dtype=torch.float32).to(rgb.device, rgb.dtype).view(1, 3, 1, 1)
            std = torch.as_tensor(IMAGE_STD, dtype=torch.float32).to(rgb.device, rgb.dtype).view(1, 3, 1, 1)
            self._normalisation[key] = (mean, std)
        mean, std = self._normalisation[key]
        out: torch.Tensor = self.model((rgb - mean) / std)
        return out
