"""TripoSR network, written from the papers and the reference's documented numerics (clean-room).

TripoSR (Tochilkin et al. 2024, "TripoSR: Fast 3D Object Reconstruction from a Single Image") is an LRM
(Hong et al. 2023, "LRM: Large Reconstruction Model for Single Image to 3D"): a DINO ViT-B/16 image encoder
(Caron et al. 2021; ViT, Dosovitskiy et al. 2021) turns the picture into tokens; learned triplane tokens attend to
them in a 1D transformer; a transposed convolution up-samples the result into a triplane of features; a NeRF MLP
decodes density and colour at any 3D point from bilinear triplane samples.

Data flow and shapes (B batch, S = ``cond_image_size``, D ViT width, C triplane channels, P ``plane_size``,
Co post-processor channels; all float32)::

    rgb [B, S, S, 3] in [0, 1]
      ─ImageTokenizer─▶ image tokens [B, 1 + (S/16)², D]   (token 0 = CLS, 1 + r·S/16 + c = patch (r, c))
    TriplaneTokens [B, C, 3·P²]                            (token = plane·P² + row·P + col)
      ─Backbone(self + cross attention)─▶ [B, C, 3·P²]
      ─detokenize─▶ [B, 3, C, P, P] ─Upsample─▶ scene codes [B, 3, Co, 2P, 2P]   planes [XY, XZ, YZ]
    points [N, 3] ─triplane sample + NeRF MLP─▶ density [N], colour [N, 3]

Everything here is in TripoSR's **native frame**: the scene cube is ``[-radius, radius]³``, the render camera's up
is +z and the input view is seen from +x (see :mod:`.backend` for the rotation to meshforge's canonical frame).

The module tree reproduces the official checkpoint's ``state_dict`` keys exactly (Hugging Face transformers 4.x ViT
names under ``image_tokenizer.model``; the reference's ``backbone``/``post_processor``/``decoder`` names), so the
official ``model.ckpt`` loads with ``load_state_dict(strict=True)``.

Numerical conventions that matter (each is pinned by the parity tests):

* ViT position embeddings are interpolated with the *legacy* rule of transformers 4.35: bicubic,
  ``align_corners=False``, ``scale_factor = (n + 0.1) / sqrt(N)`` (not ``size=n``), CLS entry unchanged.
* ViT: LayerNorm eps from the config (1e-12), exact erf GELU; attention via
  :func:`torch.nn.functional.scaled_dot_product_attention`.
* Backbone: GroupNorm eps 1e-6 over channels with an outer residual; LayerNorm eps 1e-5 in the blocks; GEGLU
  feed-forward whose first half of the projection is the value and second half the (exact GELU) gate.
* Triplane lookup: ``grid_sample`` bilinear, ``align_corners=False``, zero padding; plane XY at (x, y), XZ at
  (x, z), YZ at (y, z), the first coordinate indexing the plane's last axis; concatenated plane-major.
* Density ``= act(raw + density_bias)`` (``exp(raw − 1)`` for the official config), colour ``= sigmoid(raw)``.

The GPU paths (:meth:`TripoSRModel.density_grid_fast` for the extraction grid, :func:`triton_color` for vertex
colours: the decoder's first layer split over the three planes, the MLP fused in Triton kernels, 16-bit matrix
operands) are not part of the parity contract; the CPU never takes them. Their error against float32 is measured
by ``benchmarks/triposr_gpu.py``.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import BackboneConfig, DecoderConfig, RendererConfig, TripoSRConfig, ViTConfig

__all__ = [
    "Backbone",
    "ImageTokenizer",
    "NeRFDecoder",
    "TriplaneTokens",
    "TriplaneUpsample",
    "TripoSRModel",
    "ViTEncoder",
    "TRITON_COLOUR_CONFIG",
    "TRITON_GRID_CONFIG",
    "legacy_interpolate_pos_encoding",
    "resize_condition",
    "triton_color",
    "triton_grid_supported",
]

#: ImageNet normalisation of the DINO encoder (RGB mean and std).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------- ViT encoder


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


# ------------------------------------------------------------------------------------ triplane transformer


class TriplaneTokens(nn.Module):
    """Learned triplane tokens ``embeddings [3, C, P, P]``; ``forward(B) -> [B, C, 3·P²]`` (plane-major)."""

    def __init__(self, plane_size: int, channels: int) -> None:
        super().__init__()
        self.plane_size = plane_size
        self.embeddings = nn.Parameter(torch.randn(3, channels, plane_size, plane_size) / math.sqrt(channels))

    def forward(self, batch: int) -> torch.Tensor:
        c = self.embeddings.shape[1]
        tokens = self.embeddings.permute(1, 0, 2, 3).reshape(1, c, -1)
        return tokens.expand(batch, -1, -1)

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, C, 3·P²] -> [B, 3, C, P, P]``."""
        b, c, n = tokens.shape
        p = self.plane_size
        if n != 3 * p * p:
            raise ValueError(f"expected {3 * p * p} triplane tokens, got {n}")
        return tokens.view(b, c, 3, p, p).permute(0, 2, 1, 3, 4)


class _MultiHeadAttention(nn.Module):
    """Attention with ``to_q``/``to_k``/``to_v`` (bias per config) and ``to_out.0`` (with bias)."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None, bias: bool) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=bias)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=bias)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Identity()])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        ctx = x if context is None else context
        b = x.shape[0]

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], self.heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(ctx)), split(self.to_v(ctx)))
        out = out.transpose(1, 2).reshape(b, x.shape[1], -1)
        result: torch.Tensor = self.to_out[0](out)
        return result


class _GEGLU(nn.Module):
    """GEGLU (Shazeer 2020): ``value, gate = proj(x).chunk(2)``; ``value · gelu(gate)`` (exact GELU)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class _FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.ModuleList([_GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.net:
            x = module(x)
        return x


class _Block(nn.Module):
    """Pre-norm block: self-attention, cross-attention to the image tokens, GEGLU MLP; each with a residual."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        dim, affine = cfg.inner_dim, cfg.norm_elementwise_affine
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=affine)
        self.attn1 = _MultiHeadAttention(dim, cfg.num_attention_heads, cfg.attention_head_dim, None, cfg.attention_bias)
        self.norm2: nn.Module | None = None
        self.attn2: _MultiHeadAttention | None = None
        if cfg.cross_attention_dim is not None:
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=affine)
            self.attn2 = _MultiHeadAttention(
                dim, cfg.num_attention_heads, cfg.attention_head_dim, cfg.cross_attention_dim, cfg.attention_bias
            )
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=affine)
        self.ff = _FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        if self.attn2 is not None and self.norm2 is not None:
            x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Backbone(nn.Module):
    """The 1D triplane transformer.

    ``forward(tokens [B, C, N], context [B, Nt, Dc]) -> [B, C, N]``: GroupNorm (eps 1e-6) over channels,
    ``proj_in``, the blocks (on ``[B, N, inner]``), ``proj_out``, plus the input as an outer residual.
    """

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(cfg.norm_num_groups, cfg.in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(cfg.in_channels, cfg.inner_dim)
        self.transformer_blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.num_layers))
        self.proj_out = nn.Linear(cfg.inner_dim, cfg.in_channels)

    def forward(self, tokens: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        x = self.proj_in(self.norm(tokens).transpose(1, 2))
        for block in self.transformer_blocks:
            x = block(x, context)
        return self.proj_out(x).transpose(1, 2) + tokens


class TriplaneUpsample(nn.Module):
    """``upsample``: ConvTranspose2d(k=2, s=2) per plane; ``[B, 3, Ci, P, P] -> [B, 3, Co, 2P, 2P]``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        b, n = planes.shape[:2]
        out: torch.Tensor = self.upsample(planes.flatten(0, 1))
        return out.view(b, n, *out.shape[1:])


class NeRFDecoder(nn.Module):
    """NeRF MLP: ``layers`` = [Linear, act] × n_hidden_layers + [Linear → 4]; ``[N, Cin] -> [N, 4]``.

    Output channel 0 is the raw density, channels 1–3 the raw colour.
    """

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        act: Callable[[], nn.Module] = nn.SiLU if cfg.activation == "silu" else nn.ReLU
        layers: list[nn.Module] = []
        width = cfg.in_channels
        for _ in range(cfg.n_hidden_layers):
            layers += [nn.Linear(width, cfg.n_neurons, bias=cfg.bias), act()]
            width = cfg.n_neurons
        layers.append(nn.Linear(width, 4, bias=cfg.bias))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(features)
        return out


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    name = name.lower()
    if name in ("exp", "trunc_exp"):  # trunc_exp only clamps the gradient; its forward is exp
        return torch.exp
    if name == "sigmoid":
        return torch.sigmoid
    if name == "softplus":
        return F.softplus
    if name == "relu":
        return F.relu
    return lambda t: t


# ----------------------------------------------------------------------------------------------- the model


class TripoSRModel(nn.Module):
    """The whole TripoSR network; parameter names equal the official checkpoint's.

    Args:
        cfg: the model config (``config.yaml``).
        vit: the image encoder config.

    Attributes:
        renderer: the renderer settings (radius, activations, samples per ray); not parameters.
    """

    def __init__(self, cfg: TripoSRConfig, vit: ViTConfig) -> None:
        super().__init__()
        if cfg.backbone.cross_attention_dim not in (None, vit.hidden_size):
            raise ValueError(
                f"backbone.cross_attention_dim {cfg.backbone.cross_attention_dim} != ViT hidden_size {vit.hidden_size}"
            )
        self.cfg = cfg
        self.vit_cfg = vit
        self.renderer: RendererConfig = cfg.renderer
        self.image_tokenizer = ImageTokenizer(vit)
        self.tokenizer = TriplaneTokens(cfg.tokenizer.plane_size, cfg.tokenizer.num_channels)
        self.backbone = Backbone(cfg.backbone)
        self.post_processor = TriplaneUpsample(cfg.post_processor.in_channels, cfg.post_processor.out_channels)
        self.decoder = NeRFDecoder(cfg.decoder)
        self._density_act = _activation(cfg.renderer.density_activation)
        self._color_act = _activation(cfg.renderer.color_activation)

    # -- image → scene codes ----------------------------------------------------------------------------
    def encode(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the network on conditioning pictures and keep the intermediate results.

        Args:
            rgb: ``[B, S, S, 3]`` float32 in [0, 1] (channels last, as :func:`resize_condition` returns it).

        Returns:
            ``image_tokens [B, Nt, D]``, ``backbone_out [B, C, 3·P²]`` and ``scene_codes [B, 3, Co, 2P, 2P]``.
        """
        tokens_img = self.image_tokenizer(rgb.permute(0, 3, 1, 2))
        tokens = self.tokenizer(rgb.shape[0])
        out = self.backbone(tokens, tokens_img)
        codes = self.post_processor(self.tokenizer.detokenize(out))
        return {"image_tokens": tokens_img, "backbone_out": out, "scene_codes": codes}

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """``[B, S, S, 3]`` float32 in [0, 1] → scene codes ``[B, 3, Co, 2P, 2P]``."""
        return self.encode(rgb)["scene_codes"]

    # -- queries ------------------------------------------------------------------------------------------
    def normalise(self, positions: torch.Tensor) -> torch.Tensor:
        """World coordinates in ``[-radius, radius]`` → ``grid_sample`` coordinates in ``[-1, 1]``."""
        r = self.renderer.radius
        return (positions - (-r)) / (r - (-r)) * (1 - (-1)) + (-1)

    def decode_features(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[..., Cin]`` triplane features → ``density_raw [...]``, ``rgb_raw [..., 3]``, ``density``, ``rgb``."""
        out = self.decoder(features)
        raw, rgb_raw = out[..., 0], out[..., 1:4]
        return {
            "density_raw": raw,
            "rgb_raw": rgb_raw,
            "density": self._density_act(raw + self.renderer.density_bias),
            "rgb": self._color_act(rgb_raw),
        }

    def _reduce(self, samples: torch.Tensor) -> torch.Tensor:
        """``[3, C, N]`` plane samples → ``[N, 3·C]`` (concat, plane-major) or ``[N, C]`` (mean)."""
        if self.renderer.feature_reduction == "concat":
            return samples.permute(2, 0, 1).reshape(samples.shape[2], -1)
        return samples.mean(dim=0).transpose(0, 1)

    def sample_triplane(self, scene_code: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Bilinear triplane features at world points.

        Args:
            scene_code: ``[3, Co, H, W]`` planes [XY, XZ, YZ].
            positions: ``[N, 3]`` native-frame points.

        Returns:
            ``[N, 3·Co]`` (concat) features; points outside the cube blend towards zero (zero padding).
        """
        u = self.normalise(positions)
        coords = torch.stack([u[:, [0, 1]], u[:, [0, 2]], u[:, [1, 2]]], dim=0)  # [3, N, 2]
        samples = F.grid_sample(scene_code, coords[:, None], mode="bilinear", align_corners=False)  # [3, C, 1, N]
        return self._reduce(samples[:, :, 0])

    def query(self, scene_code: torch.Tensor, positions: torch.Tensor, chunk: int = 1 << 18) -> dict[str, torch.Tensor]:
        """Decode density and colour at points, in chunks of ``chunk`` points.

        Args:
            scene_code: ``[3, Co, H, W]``.
            positions: ``[N, 3]`` float32 native-frame points, on the scene code's device.
            chunk: points per batch (bounds memory; results do not depend on it beyond float rounding).

        Returns:
            ``density_raw [N]``, ``density [N]``, ``rgb_raw [N, 3]``, ``rgb [N, 3]`` (float32).
        """
        parts = [
            self.decode_features(self.sample_triplane(scene_code, positions[i : i + chunk]))
            for i in range(0, max(len(positions), 1), chunk)
        ]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def grid_planes(
        self, scene_code: torch.Tensor, axis: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three planes' features on the grid's ``R × R`` sub-grids (float32, the scene code's device).

        Returns:
            ``(fxy, fxz, fyz)``, each ``[R, R, Co]``: ``fxy[i, j]`` at ``(x_i, y_j)``, ``fxz[i, k]`` at
            ``(x_i, z_k)``, ``fyz[j, k]`` at ``(y_j, z_k)``.
        """
        r = axis.shape[0]
        u = self.normalise(axis)
        uu = torch.stack(torch.meshgrid(u, u, indexing="ij"), dim=-1).reshape(1, r * r, 2)  # (first, second)
        planes = F.grid_sample(scene_code, uu.expand(3, -1, -1)[:, None], mode="bilinear", align_corners=False)
        planes = planes[:, :, 0].reshape(3, -1, r, r).permute(0, 2, 3, 1)  # [3, R, R, C]: [first, second, C]
        return planes[0], planes[1], planes[2]

    def query_grid(
        self, scene_code: torch.Tensor, axis: torch.Tensor, chunk: int = 1 << 18, keys: tuple[str, ...] = ("density",)
    ) -> dict[str, torch.Tensor]:
        """Decode a regular grid ``[i, j, k] ↔ (axis[i], axis[j], axis[k])`` (native x, y, z).

        Each plane is sampled once on its ``R × R`` sub-grid (XY at (x_i, y_j), ...), which gives the same
        features as :meth:`sample_triplane` on the ``R³`` points at a third of the lookups; the MLP then runs
        on slabs of about ``chunk`` points. This is the float32 reference path (the CPU's); see
        :meth:`density_grid_fast` for the GPU's.

        Args:
            scene_code: ``[3, Co, H, W]``.
            axis: ``[R]`` float32 coordinates (world units), on the scene code's device.
            chunk: points per MLP batch.
            keys: which outputs of :meth:`decode_features` to keep.

        Returns:
            The requested outputs, each ``[R, R, R]`` (``rgb``/``rgb_raw``: ``[R, R, R, 3]``).
        """
        r = axis.shape[0]
        fxy, fxz, fyz = self.grid_planes(scene_code, axis)
        c = fxy.shape[-1]
        slab = max(1, chunk // (r * r))
        out: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        for i0 in range(0, r, slab):
            i1 = min(r, i0 + slab)
            s = i1 - i0
            stacked = torch.stack(
                [
                    fxy[i0:i1, :, None, :].expand(s, r, r, c),
                    fxz[i0:i1, None, :, :].expand(s, r, r, c),
                    fyz[None, :, :, :].expand(s, r, r, c),
                ],
                dim=3,
            )  # [s, R, R, 3, C]
            if self.renderer.feature_reduction == "concat":
                feats = stacked.reshape(s * r * r, 3 * c)
            else:
                feats = stacked.mean(dim=3).reshape(s * r * r, c)
            dec = self.decode_features(feats)
            for k in keys:
                out[k].append(dec[k].reshape(s, r, r, *dec[k].shape[1:]))
        return {k: torch.cat(v) for k, v in out.items()}

    # -- the GPU grid path ----------------------------------------------------------------------------------
    def first_layer_planes(self, scene_code: torch.Tensor, axis: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The decoder's first Linear layer, split over the three planes (float32).

        The first layer is linear in the concatenated (or averaged) plane features, so at grid point
        ``(i, j, k)`` its output is ``pxy[i, j] + pxz[i, k] + pyz[j, k]`` with ``pxy = fxy·W_xyᵀ + b`` etc.
        (``W_xy`` the weight's columns for the XY features): ``3·R²`` small products instead of ``R³``.

        Returns:
            ``(pxy, pxz, pyz)``, each ``[R, R, N]`` float32 (N = ``n_neurons``), bias folded into ``pxy``.
        """
        first = self.decoder.layers[0]
        assert isinstance(first, nn.Linear)
        fxy, fxz, fyz = self.grid_planes(scene_code, axis)
        c = fxy.shape[-1]
        w = first.weight.float()
        if self.renderer.feature_reduction == "concat":
            parts = (w[:, :c], w[:, c : 2 * c], w[:, 2 * c :])
        else:
            parts = (w / 3, w / 3, w / 3)
        bias = first.bias.float() if first.bias is not None else None
        pxy = F.linear(fxy, parts[0], bias)
        return pxy, F.linear(fxz, parts[1]), F.linear(fyz, parts[2])

    def density_grid_fast(
        self,
        scene_code: torch.Tensor,
        axis: torch.Tensor,
        *,
        precision: str = "fp16",
        batch_points: int = 1 << 22,
        kernel: str = "auto",
        fast_act: bool = True,
    ) -> torch.Tensor:
        """The density on a regular grid, fast: separable first layer, then the rest of the MLP in big batches.

        Same grid and layout as :meth:`query_grid` (``[i, j, k] ↔ (axis[i], axis[j], axis[k])``, native frame);
        only the arithmetic differs: the first layer by :meth:`first_layer_planes` (float32), the other layers
        in ``precision``:

        * ``"fp32"``: float32 (no TF32) — equal to :meth:`query_grid` up to float32 rounding;
        * ``"tf32"``: TensorFloat-32 matrix products (Triton kernel only; float32 elsewhere);
        * ``"bf16"`` / ``"fp16"``: 16-bit matrix operands, float32 accumulation, bias and activation.

        With ``kernel="triton"`` (or ``"auto"`` on CUDA when Triton imports and the decoder fits it) one fused
        Triton kernel evaluates the whole MLP per point in registers and writes only the raw density (memory:
        the three ``[R, R, N]`` planes and the output); else ``"torch"`` runs the layers with ``F.linear`` on
        slabs of ``batch_points`` points (memory: about ``N·(4 + 3·bytes(precision))`` bytes per point).

        Args:
            scene_code: ``[3, Co, H, W]`` float32.
            axis: ``[R]`` float32 coordinates (world units), on the scene code's device.
            precision: see above.
            batch_points: points per slab of the torch path.
            kernel: ``"auto"``, ``"triton"`` or ``"torch"``.
            fast_act: Triton only: SiLU as ``x·(1 + tanh(x/2))/2`` through the hardware ``tanh.approx`` (one
                special-function op instead of an exponential and a division: 8.2 → 5.2 ms for a 256³ grid on an
                H200; relative error about 1e-3, at the level of the 16-bit operands' rounding, and the same
                mesh error against float32 was measured with and without it).

        Returns:
            ``[R, R, R]`` float32 density (after the activation), on the scene code's device.
        """
        if precision not in ("fp32", "tf32", "bf16", "fp16"):
            raise ValueError(f"unknown precision {precision!r}")
        pxy, pxz, pyz = self.first_layer_planes(scene_code, axis)
        hidden = [m for m in list(self.decoder.layers)[2:-1] if isinstance(m, nn.Linear)]
        last = self.decoder.layers[-1]
        assert isinstance(last, nn.Linear)
        act_name = self.cfg.decoder.activation
        use_triton = kernel == "triton" or (
            kernel == "auto" and scene_code.is_cuda and precision != "fp32" and triton_grid_supported(self)
        )
        if use_triton:
            raw = _triton_density_grid(pxy, pxz, pyz, hidden, last, act_name, precision, fast_act)
        else:
            raw = self._torch_density_grid(pxy, pxz, pyz, hidden, last, act_name, precision, batch_points)
        return self._density_act(raw + self.renderer.density_bias)

    def _torch_density_grid(
        self,
        pxy: torch.Tensor,
        pxz: torch.Tensor,
        pyz: torch.Tensor,
        hidden: list[nn.Linear],
        last: nn.Linear,
        act_name: str,
        precision: str,
        batch_points: int,
    ) -> torch.Tensor:
        r = pxy.shape[0]
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        act = F.silu if act_name == "silu" else F.relu
        weights = [(m.weight.to(dtype), None if m.bias is None else m.bias.to(dtype)) for m in hidden]
        w_out, b_out = last.weight[:1].float(), None if last.bias is None else last.bias[:1].float()
        raw = torch.empty((r, r, r), dtype=torch.float32, device=pxy.device)
        slab = max(1, batch_points // (r * r))
        for i0 in range(0, r, slab):
            i1 = min(r, i0 + slab)
            h = act(pxy[i0:i1, :, None, :] + pxz[i0:i1, None, :, :] + pyz[None, :, :, :]).to(dtype)
            for w, b in weights:
                h = act(F.linear(h, w, b))
            raw[i0:i1] = F.linear(h.float(), w_out, b_out)[..., 0]  # float32: raw ≈ 4.2 needs the bits
        return raw


# ------------------------------------------------------------------------------------- the fused Triton kernel


def triton_grid_supported(model: TripoSRModel) -> bool:
    """Whether :func:`_triton_density_grid` can run this model's decoder: Triton importable, ``silu``/``relu``,
    ``n_neurons`` a power of two in [16, 128], at least one hidden layer."""
    n = model.cfg.decoder.n_neurons
    return (
        _grid_mlp_kernel is not None
        and model.cfg.decoder.activation in ("silu", "relu")
        and 16 <= n <= 128
        and n & (n - 1) == 0
        and model.cfg.decoder.n_hidden_layers >= 1
    )


#: Triton launch settings of the fused grid kernel: points per program along k, j rows per program, warps,
#: software-pipelining stages (measured on an H200, see ``benchmarks/results/triposr_gpu.md``).
TRITON_GRID_CONFIG = {"BLOCK": 128, "J_PER": 1, "num_warps": 8, "num_stages": 3}


if importlib.util.find_spec("triton") is not None:  # CUDA builds of PyTorch ship Triton; CPU builds do not
    import triton
    import triton.language as tl

    @triton.jit
    def _act(x, ACT: tl.constexpr, FAST: tl.constexpr):
        """ReLU (ACT 0) or SiLU (ACT 1); FAST: SiLU as x·(1 + tanh(x/2))/2 with the hardware tanh.approx."""
        if ACT == 0:
            return tl.maximum(x, 0.0)
        elif FAST:
            t = tl.inline_asm_elementwise(
                "tanh.approx.f32 $0, $1;", "=f,f", [x * 0.5], dtype=tl.float32, is_pure=True, pack=1
            )
            return x * (0.5 + 0.5 * t)
        else:
            return x / (1.0 + tl.exp(-x))

    @triton.jit
    def _grid_mlp_kernel(
        pxy_ptr,
        pxz_ptr,
        pyz_ptr,
        w_ptr,
        b_ptr,
        wout_ptr,
        bout_ptr,
        out_ptr,
        R,
        WIDTH: tl.constexpr,
        N_HIDDEN: tl.constexpr,
        BLOCK: tl.constexpr,
        J_PER: tl.constexpr,
        ACT: tl.constexpr,
        FAST: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """Program (kb, jb, i): raw density at grid points (i, j, k), k in one BLOCK, J_PER consecutive j.

        ``h = act(pxy[i, j] + pxz[i, k] + pyz[j, k])``, then N_HIDDEN × ``h = act(h @ W + b)`` (W ``[in, out]``
        in the operand dtype, float32 accumulation), then ``raw = h · w_out + b_out``; ``out[i, j, k] = raw``.
        """
        k = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        i = tl.program_id(2)
        c = tl.arange(0, WIDTH)
        kmask = k < R
        kc = tl.minimum(k, R - 1)
        pxz = tl.load(pxz_ptr + (i * R + kc)[:, None] * WIDTH + c[None, :])  # [BLOCK, WIDTH] float32
        w_out = tl.load(wout_ptr + c)
        b_out = tl.load(bout_ptr)
        for jj in range(J_PER):
            j = tl.program_id(1) * J_PER + jj
            jc = tl.minimum(j, R - 1)
            pxy = tl.load(pxy_ptr + (i * R + jc) * WIDTH + c)
            pyz = tl.load(pyz_ptr + (jc * R + kc)[:, None] * WIDTH + c[None, :])
            h = _act(pxz + pyz + pxy[None, :], ACT, FAST)
            for layer in tl.static_range(N_HIDDEN):
                w = tl.load(w_ptr + layer * WIDTH * WIDTH + c[:, None] * WIDTH + c[None, :])
                b = tl.load(b_ptr + layer * WIDTH + c)
                acc = tl.dot(h.to(w.dtype), w, input_precision=PRECISION, out_dtype=tl.float32)
                h = _act(acc + b[None, :], ACT, FAST)
            raw = tl.sum(h * w_out[None, :], axis=1) + b_out
            tl.store(out_ptr + (i * R + jc) * R + k, raw, mask=kmask & (j < R))

    @triton.jit
    def _plane_features(planes_ptr, plane, ua, ub, H, W, c, cmask, nmask, C: tl.constexpr):
        """``grid_sample`` (bilinear, align_corners=False, zero padding) of channels-last plane ``plane`` at
        normalised coordinates (ua → the W axis, ub → the H axis): ``[BLOCK, CP]`` float32."""
        fx = ((ua + 1.0) * W - 1.0) * 0.5
        fy = ((ub + 1.0) * H - 1.0) * 0.5
        x0f = tl.floor(fx)
        y0f = tl.floor(fy)
        wx1 = fx - x0f
        wy1 = fy - y0f
        x0 = x0f.to(tl.int32)
        y0 = y0f.to(tl.int32)
        feat = tl.zeros((fx.shape[0], c.shape[0]), dtype=tl.float32)
        for corner in tl.static_range(4):
            xi = x0 + (corner % 2)
            yi = y0 + (corner // 2)
            wx = wx1 if corner % 2 == 1 else 1.0 - wx1
            wy = wy1 if corner // 2 == 1 else 1.0 - wy1
            valid = nmask & (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
            row = (plane * H + tl.minimum(tl.maximum(yi, 0), H - 1)) * W + tl.minimum(tl.maximum(xi, 0), W - 1)
            v = tl.load(planes_ptr + row[:, None] * C + c[None, :], mask=valid[:, None] & cmask[None, :], other=0.0)
            feat += v * (wx * wy)[:, None]
        return feat

    @triton.jit
    def _point_color_kernel(
        pos_ptr,
        planes_ptr,
        w1_ptr,
        b1_ptr,
        w_ptr,
        b_ptr,
        wout_ptr,
        bout_ptr,
        out_ptr,
        N,
        H,
        W,
        radius,
        C: tl.constexpr,
        CP: tl.constexpr,
        WIDTH: tl.constexpr,
        N_HIDDEN: tl.constexpr,
        BLOCK: tl.constexpr,
        ACT: tl.constexpr,
        FAST: tl.constexpr,
        SIGMOID: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """Program: colours of BLOCK points: triplane sampling, the whole MLP, the colour activation."""
        n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        nmask = n < N
        u0 = (tl.load(pos_ptr + n * 3 + 0, mask=nmask, other=0.0) + radius) / (2.0 * radius) * 2.0 - 1.0
        u1 = (tl.load(pos_ptr + n * 3 + 1, mask=nmask, other=0.0) + radius) / (2.0 * radius) * 2.0 - 1.0
        u2 = (tl.load(pos_ptr + n * 3 + 2, mask=nmask, other=0.0) + radius) / (2.0 * radius) * 2.0 - 1.0
        c = tl.arange(0, CP)
        cmask = c < C
        o = tl.arange(0, WIDTH)
        w1 = tl.load(w1_ptr + c[:, None] * WIDTH + o[None, :])
        f = _plane_features(planes_ptr, 0, u0, u1, H, W, c, cmask, nmask, C)  # XY at (x, y)
        acc = tl.dot(f.to(w1.dtype), w1, input_precision=PRECISION, out_dtype=tl.float32)
        w1 = tl.load(w1_ptr + CP * WIDTH + c[:, None] * WIDTH + o[None, :])
        f = _plane_features(planes_ptr, 1, u0, u2, H, W, c, cmask, nmask, C)  # XZ at (x, z)
        acc = tl.dot(f.to(w1.dtype), w1, acc, input_precision=PRECISION, out_dtype=tl.float32)
        w1 = tl.load(w1_ptr + 2 * CP * WIDTH + c[:, None] * WIDTH + o[None, :])
        f = _plane_features(planes_ptr, 2, u1, u2, H, W, c, cmask, nmask, C)  # YZ at (y, z)
        acc = tl.dot(f.to(w1.dtype), w1, acc, input_precision=PRECISION, out_dtype=tl.float32)
        h = _act(acc + tl.load(b1_ptr + o)[None, :], ACT, FAST)
        for layer in tl.static_range(N_HIDDEN):
            w = tl.load(w_ptr + layer * WIDTH * WIDTH + o[:, None] * WIDTH + o[None, :])
            b = tl.load(b_ptr + layer * WIDTH + o)
            acc = tl.dot(h.to(w.dtype), w, input_precision=PRECISION, out_dtype=tl.float32)
            h = _act(acc + b[None, :], ACT, FAST)
        for j in tl.static_range(3):
            x = tl.sum(h * tl.load(wout_ptr + j * WIDTH + o)[None, :], axis=1) + tl.load(bout_ptr + j)
            if SIGMOID:
                x = 1.0 / (1.0 + tl.exp(-x))
            tl.store(out_ptr + n * 3 + j, x, mask=nmask)

else:  # pragma: no cover - exercised where Triton is installed
    _grid_mlp_kernel = None
    _point_color_kernel = None


#: Triton launch settings of the fused colour kernel.
TRITON_COLOUR_CONFIG = {"BLOCK": 128, "num_warps": 4}


def triton_color(
    model: TripoSRModel,
    scene_code: torch.Tensor,
    positions: torch.Tensor,
    precision: str = "fp16",
    fast_act: bool = True,
) -> torch.Tensor:
    """Colours at points by one fused Triton kernel: the three planes' bilinear samples (``grid_sample``'s
    arithmetic: align_corners=False, zero padding), the whole decoder MLP (``precision`` matrix operands, float32
    accumulation and activations) and the colour activation; nothing per point but the colour touches memory.

    Args:
        model: a model for which :func:`triton_grid_supported` holds, with a ``sigmoid`` or ``none`` colour.
        scene_code: ``[3, Co, H, W]`` float32 (CUDA).
        positions: ``[N, 3]`` float32 native-frame points (same device).
        precision: ``"fp16"``, ``"bf16"``, ``"tf32"`` or ``"fp32"``.
        fast_act: SiLU by the hardware ``tanh.approx`` (see :meth:`TripoSRModel.density_grid_fast`).

    Returns:
        ``[N, 3]`` float32 colours (after the activation).
    """
    layers = [m for m in model.decoder.layers if isinstance(m, nn.Linear)]
    first, hidden, last = layers[0], layers[1:-1], layers[-1]
    dev = scene_code.device
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    _, c, h, w = scene_code.shape
    width = first.weight.shape[0]
    cp = max(16, 1 << (c - 1).bit_length())
    planes = scene_code.permute(0, 2, 3, 1).contiguous().float()  # [3, H, W, C] channels last
    w1 = first.weight.float()
    parts = [w1[:, i * c : (i + 1) * c] for i in range(3)] if w1.shape[1] == 3 * c else [w1 / 3] * 3
    w1p = torch.zeros((3, cp, width), device=dev)
    for i, part in enumerate(parts):
        w1p[i, :c] = part.t()
    b1 = first.bias.float() if first.bias is not None else torch.zeros(width, device=dev)
    if hidden:
        wh = torch.stack([m.weight.t() for m in hidden]).to(dtype).contiguous()
        bh = torch.stack([m.bias if m.bias is not None else torch.zeros(width, device=dev) for m in hidden]).float()
    else:
        wh = torch.zeros((1, width, width), device=dev, dtype=dtype)
        bh = torch.zeros((1, width), device=dev)
    wout = last.weight[1:4].float().contiguous()
    bout = (last.bias[1:4] if last.bias is not None else torch.zeros(3, device=dev)).float().contiguous()
    pos = positions.float().contiguous()
    out = torch.empty((pos.shape[0], 3), dtype=torch.float32, device=dev)
    block = int(TRITON_COLOUR_CONFIG["BLOCK"])
    _point_color_kernel[((pos.shape[0] + block - 1) // block,)](
        pos,
        planes,
        w1p.to(dtype).contiguous(),
        b1.contiguous(),
        wh,
        bh.contiguous(),
        wout,
        bout,
        out,
        pos.shape[0],
        h,
        w,
        float(model.renderer.radius),
        C=c,
        CP=cp,
        WIDTH=width,
        N_HIDDEN=len(hidden),
        BLOCK=block,
        ACT=1 if model.cfg.decoder.activation == "silu" else 0,
        FAST=bool(fast_act and model.cfg.decoder.activation == "silu"),
        SIGMOID=model.renderer.color_activation.lower() == "sigmoid",
        PRECISION="ieee" if precision == "fp32" else "tf32",
        num_warps=int(TRITON_COLOUR_CONFIG["num_warps"]),
    )
    return out


def _triton_density_grid(
    pxy: torch.Tensor,
    pxz: torch.Tensor,
    pyz: torch.Tensor,
    hidden: list[nn.Linear],
    last: nn.Linear,
    act_name: str,
    precision: str,
    fast_act: bool,
) -> torch.Tensor:
    """Raw density ``[R, R, R]`` float32 of the MLP after the first layer, by the fused kernel (see
    :meth:`TripoSRModel.density_grid_fast`)."""
    r, width = pxy.shape[0], pxy.shape[-1]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    dev = pxy.device
    # weights transposed to [in, out] for h @ W; biases float32; a zero bias where a layer has none
    w = torch.stack([m.weight.t() for m in hidden]).to(dtype).contiguous()
    b = torch.stack([m.bias if m.bias is not None else torch.zeros(width, device=dev) for m in hidden]).float()
    w_out = last.weight[0].float().contiguous()
    b_out = (last.bias[:1] if last.bias is not None else torch.zeros(1, device=dev)).float().contiguous()
    out = torch.empty((r, r, r), dtype=torch.float32, device=dev)
    cfg = TRITON_GRID_CONFIG
    block, j_per = int(cfg["BLOCK"]), int(cfg["J_PER"])
    grid = ((r + block - 1) // block, (r + j_per - 1) // j_per, r)
    _grid_mlp_kernel[grid](
        pxy.contiguous(),
        pxz.contiguous(),
        pyz.contiguous(),
        w,
        b.contiguous(),
        w_out,
        b_out,
        out,
        r,
        WIDTH=width,
        N_HIDDEN=len(hidden),
        BLOCK=block,
        J_PER=j_per,
        ACT=1 if act_name == "silu" else 0,
        FAST=bool(fast_act and act_name == "silu"),
        PRECISION="ieee" if precision == "fp32" else "tf32",
        num_warps=int(cfg["num_warps"]),
        num_stages=int(cfg.get("num_stages", 3)),
    )
    return out


def resize_condition(rgb_uint8: torch.Tensor, size: int) -> torch.Tensor:
    """TripoSR's model preprocessing: uint8 RGB → float32 in [0, 1], resized to ``size × size``.

    Bilinear with ``align_corners=False`` and ``antialias=True`` (a triangle filter widened by the scale factor
    when shrinking), channels last.

    Args:
        rgb_uint8: ``[B, H, W, 3]`` or ``[H, W, 3]`` uint8.
        size: the output side (``cond_image_size``).

    Returns:
        ``[B, size, size, 3]`` float32 in [0, 1], on the input's device.
    """
    x = rgb_uint8 if rgb_uint8.ndim == 4 else rgb_uint8[None]
    x = x.to(torch.float32) / 255.0
    x = F.interpolate(x.permute(0, 3, 1, 2), (size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.permute(0, 2, 3, 1).contiguous()
