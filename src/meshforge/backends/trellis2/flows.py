"""The TRELLIS.2 flow-matching denoisers: sparse-structure flow and structured-latent (SLat) flows.

- :class:`SparseStructureFlowModel`: a dense DiT over the ``R³`` (16³) sparse-structure latent,
  ``forward(x [B, C, R, R, R], t [B], cond [B, L, D]) -> [B, C_out, R, R, R]``.
- :class:`SLatFlowModel`: a sparse DiT over the structured latent (a :class:`SparseTensor`), with
  full variable-length self-attention among each item's voxels and cross-attention to the image
  tokens; the texture flow concatenates the (normalised) shape latent as ``concat_cond`` on the
  channels. :class:`ElasticSLatFlowModel` is the name the official configs use: in the reference it
  only adds training-time activation checkpointing under a memory budget, so here it is the same
  module (same arguments, state_dict and forward).

Constructor arguments are the reference's (the official ``configs/gen/*.json`` ``denoiser.args``
dicts construct them directly), and the state_dict keys and shapes are the reference's, so the
official ``.safetensors`` load with ``strict=True``.

Precision policy (``dtype`` argument, ``"float32"`` by default; ``"float16"``/``"bfloat16"``):
only the ``nn.Linear`` weights *inside* ``blocks`` are converted (attention projections, MLPs and,
without ``share_mod``, the per-block adaLN projections). Everything else stays ``float32``: the input
and output layers, the timestep embedder, the shared ``adaLN_modulation``, the per-block
``modulation`` offsets, LayerNorm affine weights, q/k RMS-norm ``gamma``, and the RoPE phases
(``complex64``). In :meth:`forward` the input projection and timestep path run in ``float32``; the
tokens, the modulation vectors and the image tokens are cast to ``dtype`` before the blocks; inside the
blocks LayerNorm, RMS norm and RoPE compute in ``float32`` and cast back; after the blocks the tokens
are cast back to the input's dtype for the final (affine-free, eps 1e-5) LayerNorm and output layer.
Under ``torch.autocast`` the explicit casts are skipped. Do not call ``model.to(<half dtype>)`` on the
whole module (it would also down-cast the float32 parts and the complex RoPE buffer).

Sources: TRELLIS (Xiang et al. 2024), TRELLIS.2 (2025); flow matching (Lipman et al. 2023); DiT
(Peebles & Xie 2023).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Context, rope_phases
from .embeddings import TimestepEmbedder, sincos_position_embedding
from .sparse import SparseTensor
from .transformer import (
    ModulatedSparseTransformerCrossBlock,
    ModulatedTransformerCrossBlock,
    cast_unless_autocast,
)

__all__ = [
    "REGENERATED_BUFFERS",
    "ElasticSLatFlowModel",
    "SLatFlowModel",
    "SparseStructureFlowModel",
    "resolve_dtype",
]

REGENERATED_BUFFERS = ("rope_phases", "pos_emb")
"""Deterministic grid buffers of the dense flow: in its state_dict (as in the reference) but
rebuilt at construction, so a checkpoint may leave them out (see :meth:`_FlowBase.load_checkpoint`)."""

_DTYPES = {
    "f16": torch.float16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "f32": torch.float32,
    "fp32": torch.float32,
    "float32": torch.float32,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"``/``"fp32"``/``"f32"``, ``"float16"``/…, ``"bfloat16"``/``"bf16"`` (or a dtype).

    Raises:
        ValueError: an unknown name.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


class _FlowBase(nn.Module):
    """What both flows share: the timestep path, the dtype conversion of the blocks, and init."""

    blocks: nn.ModuleList
    input_layer: nn.Linear
    out_layer: nn.Linear

    def _setup(
        self,
        resolution: int,
        in_channels: int,
        model_channels: int,
        cond_channels: int,
        out_channels: int,
        num_blocks: int,
        num_heads: int | None,
        num_head_channels: int | None,
        mlp_ratio: float,
        pe_mode: str,
        use_checkpoint: bool,
        share_mod: bool,
        initialization: str,
        qk_rms_norm: bool,
        qk_rms_norm_cross: bool,
        dtype: str | torch.dtype,
    ) -> None:
        if pe_mode not in ("ape", "rope"):
            raise ValueError(f"pe_mode must be 'ape' or 'rope', got {pe_mode!r}")
        if num_heads is None:
            if not num_head_channels:
                raise ValueError("give num_heads or num_head_channels")
            num_heads = model_channels // num_head_channels
        self.resolution = resolution
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.cond_channels = cond_channels
        self.out_channels = out_channels
        self.num_blocks = num_blocks
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.pe_mode = pe_mode
        self.use_checkpoint = use_checkpoint
        self.share_mod = share_mod
        self.initialization = initialization
        self.qk_rms_norm = qk_rms_norm
        self.qk_rms_norm_cross = qk_rms_norm_cross
        self.dtype = resolve_dtype(dtype)
        self.t_embedder = TimestepEmbedder(model_channels)
        if share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(model_channels, 6 * model_channels, bias=True))

    @property
    def device(self) -> torch.device:
        """The device of the parameters."""
        return next(self.parameters()).device

    def load_checkpoint(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load (official) weights strictly, except that :data:`REGENERATED_BUFFERS` may be absent.

        The reference registers the dense flow's ``rope_phases`` / ``pos_emb`` as persistent buffers
        but loads its checkpoints with ``strict=False``; released checkpoints are reported to omit
        ``rope_phases``. Every other key must be present and no extra key is allowed; tensors are
        copied into the existing parameters (cast to their dtype).

        Raises:
            RuntimeError: missing or unexpected keys, or a shape mismatch.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict and k not in REGENERATED_BUFFERS]
        unexpected = [k for k in state_dict if k not in own]
        if missing or unexpected:
            raise RuntimeError(
                f"{type(self).__name__} checkpoint mismatch: missing {missing[:8]}{'…' if len(missing) > 8 else ''}, "
                f"unexpected {unexpected[:8]}{'…' if len(unexpected) > 8 else ''}"
            )
        full = dict(state_dict)
        for key in REGENERATED_BUFFERS:
            if key in own and key not in full:
                full[key] = own[key]
        self.load_state_dict(full, strict=True)

    def convert_to(self, dtype: torch.dtype) -> None:
        """Convert the ``nn.Linear`` weights inside ``blocks`` to ``dtype`` and run the blocks in it."""
        self.dtype = dtype
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                for p in module.parameters():
                    p.data = p.data.to(dtype)

    def initialize_weights(self) -> None:
        """Training initialisation (``"vanilla"``: Xavier; ``"scaled"``: normal with width- and
        depth-scaled std). Either way the adaLN projections and the output layer start at zero, so a
        freshly built model outputs zeros. Inference overwrites all of it with the checkpoint."""
        c = self.model_channels

        def linears(module: nn.Module) -> list[nn.Linear]:
            return [m for m in module.modules() if isinstance(m, nn.Linear)]

        def normal_init(layers: list[nn.Linear], std: float) -> None:
            for layer in layers:
                nn.init.normal_(layer.weight, std=std)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

        if self.initialization == "vanilla":
            for layer in linears(self):
                nn.init.xavier_uniform_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
        elif self.initialization == "scaled":
            normal_init(linears(self), math.sqrt(2.0 / (5.0 * c)))
            deep_std = 1.0 / math.sqrt(5 * self.num_blocks * c)
            for block in self.blocks:
                block = cast(Any, block)
                normal_init(linears(block.self_attn.to_out), deep_std)
                normal_init(linears(block.cross_attn.to_out), deep_std)
                normal_init(linears(block.mlp.mlp[2]), deep_std)
            nn.init.normal_(self.input_layer.weight, std=1.0 / math.sqrt(self.in_channels))
            nn.init.zeros_(self.input_layer.bias)
        else:
            return
        t_mlp = cast(Any, self.t_embedder.mlp)
        nn.init.normal_(t_mlp[0].weight, std=0.02)
        nn.init.normal_(t_mlp[2].weight, std=0.02)
        if self.share_mod:
            zero = [cast(Any, self.adaLN_modulation)[-1]]
        else:
            zero = [cast(Any, block).adaLN_modulation[-1] for block in self.blocks]
        for layer in [*zero, self.out_layer]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _timestep_modulation(self, t: torch.Tensor) -> torch.Tensor:
        """``t [B]`` → ``[B, C]`` embedding (``[B, 6C]`` with share_mod), cast to the block dtype."""
        emb = self.t_embedder(t)
        if self.share_mod:
            emb = self.adaLN_modulation(emb)
        return cast_unless_autocast(emb, self.dtype)


class SparseStructureFlowModel(_FlowBase):
    """Dense flow transformer over the sparse-structure latent grid (TRELLIS.2 stage 1).

    Args:
        resolution: latent grid side ``R`` (16 officially); tokens are the ``R³`` cells.
        in_channels / out_channels: latent channels (8).
        model_channels: transformer width (1536). cond_channels: image-token width (1024, DINOv3).
        num_blocks: transformer blocks (30).
        num_heads: attention heads (12); default ``model_channels // num_head_channels``.
        num_head_channels: used only when ``num_heads`` is None.
        mlp_ratio: MLP width factor (5.3334 → hidden ``int(C * 5.3334)`` = 8192 at C=1536).
        pe_mode: ``"rope"`` (3D RoPE in self-attention; buffer ``rope_phases``) or ``"ape"``
            (sinusoidal embedding added to the tokens; buffer ``pos_emb``).
        rope_freq: passed to the blocks; as in the reference the grid phases use the default
            ``(1.0, 10000.0)`` ladder regardless.
        dtype: block dtype name (see module doc). use_checkpoint: gradient checkpointing.
        share_mod: one model-level adaLN projection plus per-block offsets.
        initialization: ``"vanilla"`` or ``"scaled"`` (training init; irrelevant after loading).
        qk_rms_norm / qk_rms_norm_cross: q/k RMS norm in self- / cross-attention.
        **kwargs: ignored (the reference accepts and ignores extra arguments here).

    Attributes read by the pipeline: ``resolution``, ``in_channels``, ``out_channels``, ``dtype``.

    The buffer ``rope_phases`` (``complex64 [R³, head_dim/2]``) / ``pos_emb`` (``[R³, C]``) is
    persistent, as in the reference, so it is part of the state_dict.
    """

    rope_phases: torch.Tensor | None
    pos_emb: torch.Tensor

    def __init__(
        self,
        resolution: int,
        in_channels: int,
        model_channels: int,
        cond_channels: int,
        out_channels: int,
        num_blocks: int,
        num_heads: int | None = None,
        num_head_channels: int | None = 64,
        mlp_ratio: float = 4,
        pe_mode: Literal["ape", "rope"] = "ape",
        rope_freq: tuple[float, float] = (1.0, 10000.0),
        dtype: str = "float32",
        use_checkpoint: bool = False,
        share_mod: bool = False,
        initialization: str = "vanilla",
        qk_rms_norm: bool = False,
        qk_rms_norm_cross: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self._setup(
            resolution, in_channels, model_channels, cond_channels, out_channels, num_blocks, num_heads,
            num_head_channels, mlp_ratio, pe_mode, use_checkpoint, share_mod, initialization, qk_rms_norm,
            qk_rms_norm_cross, dtype,
        )  # fmt: skip
        grid = self.grid_coords(resolution, device=self.device)
        if pe_mode == "ape":
            self.register_buffer("pos_emb", sincos_position_embedding(grid, model_channels))
            self.rope_phases = None
        else:
            self.register_buffer("rope_phases", rope_phases(grid, model_channels // self.num_heads))
        self.input_layer = nn.Linear(in_channels, model_channels)
        self.blocks = nn.ModuleList(
            ModulatedTransformerCrossBlock(
                model_channels,
                cond_channels,
                num_heads=self.num_heads,
                mlp_ratio=mlp_ratio,
                use_checkpoint=use_checkpoint,
                use_rope=pe_mode == "rope",
                rope_freq=rope_freq,
                qk_rms_norm=qk_rms_norm,
                qk_rms_norm_cross=qk_rms_norm_cross,
                share_mod=share_mod,
            )
            for _ in range(num_blocks)
        )
        self.out_layer = nn.Linear(model_channels, out_channels)
        self.initialize_weights()
        self.convert_to(self.dtype)

    @staticmethod
    def grid_coords(resolution: int, device: torch.device | None = None) -> torch.Tensor:
        """``int64 [R³, 3]`` cell indices ``(i, j, k)`` of the ``[R, R, R]`` grid in C order (token
        ``n`` is cell ``(n // R², n // R % R, n % R)``, i.e. ``x[:, :, i, j, k]``)."""
        axes = [torch.arange(resolution, device=device)] * 3
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predict the flow velocity.

        Args:
            x: ``[B, in_channels, R, R, R]`` noisy latent (float32 in the pipeline).
            t: ``[B]`` timesteps (the pipeline passes ``1000 * t``).
            cond: ``[B, L, cond_channels]`` image tokens.

        Returns:
            ``[B, out_channels, R, R, R]`` in ``x.dtype``.

        Raises:
            ValueError: ``x`` not shaped ``[B, in_channels, R, R, R]``.
        """
        expected = [x.shape[0], self.in_channels, *[self.resolution] * 3]
        if list(x.shape) != expected:
            raise ValueError(f"input shape {list(x.shape)}, expected {expected}")
        b, r = x.shape[0], self.resolution
        h = self.input_layer(x.reshape(b, self.in_channels, -1).permute(0, 2, 1).contiguous())
        if self.pe_mode == "ape":
            h = h + self.pos_emb[None]
        mod = self._timestep_modulation(t)
        h = cast_unless_autocast(h, self.dtype)
        cond = cast_unless_autocast(cond, self.dtype)
        for block in self.blocks:
            h = block(h, mod, cond, self.rope_phases)
        h = cast_unless_autocast(h, x.dtype)
        h = self.out_layer(F.layer_norm(h, h.shape[-1:]))
        return h.permute(0, 2, 1).reshape(b, self.out_channels, r, r, r).contiguous()


class SLatFlowModel(_FlowBase):
    """Sparse flow transformer over a structured latent (TRELLIS.2 shape and texture stages).

    Args: as :class:`SparseStructureFlowModel` (``resolution`` is informational here: the latent
    grid side the model was trained at, 32 or 64), without ``**kwargs``. With ``pe_mode="rope"``
    each block's self-attention derives 3D RoPE phases from the voxel coordinates
    (using ``rope_freq``); with ``"ape"`` a sinusoidal embedding of the coordinates is added.

    State dict: ``t_embedder.*``, ``adaLN_modulation.1.*`` (share_mod), ``input_layer.*``,
    ``blocks.{i}.*``, ``out_layer.*`` (no buffers).
    """

    def __init__(
        self,
        resolution: int,
        in_channels: int,
        model_channels: int,
        cond_channels: int,
        out_channels: int,
        num_blocks: int,
        num_heads: int | None = None,
        num_head_channels: int | None = 64,
        mlp_ratio: float = 4,
        pe_mode: Literal["ape", "rope"] = "ape",
        rope_freq: tuple[float, float] = (1.0, 10000.0),
        dtype: str = "float32",
        use_checkpoint: bool = False,
        share_mod: bool = False,
        initialization: str = "vanilla",
        qk_rms_norm: bool = False,
        qk_rms_norm_cross: bool = False,
    ) -> None:
        super().__init__()
        self._setup(
            resolution, in_channels, model_channels, cond_channels, out_channels, num_blocks, num_heads,
            num_head_channels, mlp_ratio, pe_mode, use_checkpoint, share_mod, initialization, qk_rms_norm,
            qk_rms_norm_cross, dtype,
        )  # fmt: skip
        self.input_layer = nn.Linear(in_channels, model_channels)
        self.blocks = nn.ModuleList(
            ModulatedSparseTransformerCrossBlock(
                model_channels,
                cond_channels,
                num_heads=self.num_heads,
                mlp_ratio=mlp_ratio,
                use_checkpoint=use_checkpoint,
                use_rope=pe_mode == "rope",
                rope_freq=rope_freq,
                qk_rms_norm=qk_rms_norm,
                qk_rms_norm_cross=qk_rms_norm_cross,
                share_mod=share_mod,
            )
            for _ in range(num_blocks)
        )
        self.out_layer = nn.Linear(model_channels, out_channels)
        self.initialize_weights()
        self.convert_to(self.dtype)

    def forward(
        self,
        x: SparseTensor,
        t: torch.Tensor,
        cond: Context,
        concat_cond: SparseTensor | None = None,
        **kwargs: Any,
    ) -> SparseTensor:
        """Predict the flow velocity on the latent's voxels.

        Args:
            x: noisy structured latent, ``feats [N, C_x]`` (float32 in the pipeline).
            t: ``[B]`` timesteps (``1000 * t``).
            cond: image tokens, dense ``[B, L, cond_channels]`` or a list of ``[L_b, cond_channels]``.
            concat_cond: texture flow only: a SparseTensor on the same coordinates whose features are
                concatenated after ``x``'s (``C_x + C_cond == in_channels``).
            **kwargs: ignored (the samplers pass extra keywords).

        Returns:
            SparseTensor on ``x``'s coordinates, ``feats [N, out_channels]`` in ``x.dtype``.

        Raises:
            ValueError: channel count or row count mismatch.
        """
        if concat_cond is not None:
            if concat_cond.feats.shape[0] != x.feats.shape[0]:
                raise ValueError("concat_cond must lie on the same voxels as x")
            x = x.replace(torch.cat([x.feats, concat_cond.feats], dim=-1))
        if x.feats.shape[-1] != self.in_channels:
            raise ValueError(f"got {x.feats.shape[-1]} input channels, expected {self.in_channels}")
        if isinstance(cond, torch.Tensor):
            cond = cast_unless_autocast(cond, self.dtype)
        else:
            cond = [cast_unless_autocast(c, self.dtype) for c in cond]
        feats = cast_unless_autocast(self.input_layer(x.feats), self.dtype)
        mod = self._timestep_modulation(t)
        if self.pe_mode == "ape":
            pe = sincos_position_embedding(x.coords[:, 1:], self.model_channels)
            feats = feats + cast_unless_autocast(pe, self.dtype)
        h = x.replace(feats)
        for block in self.blocks:
            h = block(h, mod, cond)
        out = cast_unless_autocast(h.feats, x.dtype)
        out = self.out_layer(F.layer_norm(out, out.shape[-1:]))
        return x.replace(out)


class ElasticSLatFlowModel(SLatFlowModel):
    """The name the official TRELLIS.2 configs use for the SLat flows.

    The reference adds a training-only memory controller (per-step activation checkpointing of the
    first blocks under a VRAM budget; inactive outside training). It has no parameters and does not
    change the math, so for inference this is :class:`SLatFlowModel` under another name, with the
    same constructor arguments and state_dict.
    """
