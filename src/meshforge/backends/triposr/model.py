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

* ViT (the image encoder, :mod:`.vit`): see that module.
* Backbone: GroupNorm eps 1e-6 over channels with an outer residual; LayerNorm eps 1e-5 in the blocks; GEGLU
  feed-forward whose first half of the projection is the value and second half the (exact GELU) gate.
* Triplane lookup: ``grid_sample`` bilinear, ``align_corners=False``, zero padding; plane XY at (x, y), XZ at
  (x, z), YZ at (y, z), the first coordinate indexing the plane's last axis; concatenated plane-major.
* Density ``= act(raw + density_bias)`` (``exp(raw − 1)`` for the official config), colour ``= sigmoid(raw)``.

The GPU paths (:meth:`TripoSRModel.density_grid_fast` for the extraction grid, :func:`.kernels.triton_color` for
vertex colours: the decoder's first layer split over the three planes, the MLP fused in the Triton kernels of
:mod:`.kernels`, 16-bit matrix operands) are not part of the parity contract; the CPU never takes them. Their
error against float32 is measured by ``benchmarks/triposr_gpu.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import BackboneConfig, DecoderConfig, RendererConfig, TripoSRConfig, ViTConfig
from .vit import ImageTokenizer

__all__ = [
    "Backbone",
    "NeRFDecoder",
    "TriplaneTokens",
    "TriplaneUpsample",
    "TripoSRModel",
    "resize_condition",
]


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


def _auto_triton(model: TripoSRModel, scene_code: torch.Tensor, precision: str) -> bool:
    """Whether ``kernel="auto"`` takes the fused Triton grid kernel: on CUDA, a reduced precision, a decoder it fits."""
    from .kernels import triton_grid_supported

    return bool(scene_code.is_cuda) and precision != "fp32" and triton_grid_supported(model)


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
            kernel: ``"auto"``, ``"triton"`` or ``"torch"``; with ``"auto"`` a Triton kernel that cannot be compiled
                or launched here (:func:`.kernels.note_failure`) leaves the torch layers to answer.
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
        from . import kernels  # here: Triton loads only where it runs

        use_triton = kernel == "triton" or (kernel == "auto" and _auto_triton(self, scene_code, precision))
        raw = None
        if use_triton:  # "auto": None where Triton could not compile or launch it (the torch layers, from now on)
            args = (pxy, pxz, pyz, hidden, last, act_name, precision, fast_act)
            raw = kernels.attempt(kernels.triton_density_grid, *args, strict=kernel == "triton")
        if raw is None:
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
