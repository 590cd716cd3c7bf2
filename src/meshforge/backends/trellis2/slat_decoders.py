"""The TRELLIS.2 structured-latent decoders: shape (flexible dual grid) and texture (PBR voxels).

Both are the decoder half of TRELLIS.2's sparse-convolutional VAE (TRELLIS.2, "Native and Compact
Structured Latents for 3D Generation", 2025): a linear lift of the latent, stages of sparse
ConvNeXt blocks separated by 2× upsampling residual blocks, a final parameter-free LayerNorm and a
linear head.

- :class:`SparseUnetVaeDecoder` — the generic decoder. With ``pred_subdiv=True`` (shape decoder)
  every upsampling block predicts which of the 8 children of each voxel exist; with
  ``pred_subdiv=False`` (texture decoder) the subdivisions are given (``guide_subs``: the shape
  decoder's predictions, so the texture voxels land exactly on the shape voxels).
- :class:`FlexiDualGridVaeDecoder` — the shape decoder: 7 output channels per voxel (dual vertex
  position in the voxel, 3 edge-intersection flags, 1 quad-split weight) turned into a triangle
  mesh by ``flexible_dual_grid_to_mesh`` (``dual_grid.py``).

Row order: each upsampling emits the children of parent row 0 first (by sub-index ``dx + 2dy +
4dz``), then those of row 1, …, exactly as the reference does; the final rows therefore follow the
latent's row order hierarchically, not a sorted order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .slat_blocks import BLOCK_TYPES, UP_BLOCK_TYPES
from .sparse import SparseTensor
from .sparse_conv import GATHER_CHUNK_ELEMENTS, SparseConv3d
from .sparse_nn import SparseLinear, convert_module_to_f16

LOW_VRAM_CHUNK_ELEMENTS = 1 << 24


def _block_class(name: str, table: dict[str, type[nn.Module]]) -> type[nn.Module]:
    if name not in table:
        raise ValueError(f"unknown block type {name!r}; expected one of {sorted(table)}")
    return table[name]


class SparseUnetVaeDecoder(nn.Module):
    """Sparse-convolutional SLat decoder (reference: ``SparseUnetVaeDecoder``).

    Args:
        out_channels: channels of the output head (6 for the PBR texture decoder).
        model_channels: channels per stage, coarse to fine (official: ``[1024, 512, 256, 128, 64]``).
        latent_channels: SLat channels (official: 32).
        num_blocks: blocks per stage (official: ``[4, 16, 8, 4, 0]``).
        block_type: block class name per stage (``"SparseConvNeXtBlock3d"``,
            ``"SparseResBlock3d"``).
        up_block_type: upsampling block name between stages (``"SparseResBlockC2S3d"``,
            ``"SparseResBlockUpsample3d"``).
        block_args: extra keyword arguments per stage (e.g. ``{"use_checkpoint": true}``).
        use_fp16: run the blocks in float16 (their conv / linear weights are stored in float16).
        pred_subdiv: the upsampling blocks predict their subdivision (shape) or are guided (texture).

    Attributes:
        low_vram: when true, the sparse convolutions gather in smaller chunks (same results,
            lower peak memory). The reference pipeline toggles this attribute around decoding.

    State dict keys: ``from_latent.*``, ``blocks.{stage}.{index}.*``, ``output_layer.*`` — as in
    the official checkpoints.
    """

    def __init__(
        self,
        out_channels: int,
        model_channels: list[int],
        latent_channels: int,
        num_blocks: list[int],
        block_type: list[str],
        up_block_type: list[str],
        block_args: list[dict[str, Any]],
        use_fp16: bool = False,
        pred_subdiv: bool = True,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.model_channels = model_channels
        self.num_blocks = num_blocks
        self.use_fp16 = use_fp16
        self.pred_subdiv = pred_subdiv
        self.dtype = torch.float16 if use_fp16 else torch.float32
        self._low_vram = False

        self.output_layer = SparseLinear(model_channels[-1], out_channels)
        self.from_latent = SparseLinear(latent_channels, model_channels[0])
        self.blocks = nn.ModuleList()
        last = len(num_blocks) - 1
        for stage, count in enumerate(num_blocks):
            block_cls = _block_class(block_type[stage], BLOCK_TYPES)
            stage_blocks = nn.ModuleList(block_cls(model_channels[stage], **block_args[stage]) for _ in range(count))
            if stage < last:
                up_cls = _block_class(up_block_type[stage], UP_BLOCK_TYPES)
                up_block = up_cls(
                    model_channels[stage], model_channels[stage + 1], pred_subdiv=pred_subdiv, **block_args[stage]
                )
                stage_blocks.append(up_block)
            self.blocks.append(stage_blocks)
        self._init_linear_layers()
        if use_fp16:
            self.blocks.apply(convert_module_to_f16)

    def _init_linear_layers(self) -> None:
        # Reference initialisation (Xavier-uniform linear weights, zero bias); it also undoes the
        # zero init of the ConvNeXt MLP output layers, as in the reference.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @property
    def low_vram(self) -> bool:
        return self._low_vram

    @low_vram.setter
    def low_vram(self, value: bool) -> None:
        self._low_vram = bool(value)
        chunk = LOW_VRAM_CHUNK_ELEMENTS if value else GATHER_CHUNK_ELEMENTS
        for module in self.modules():
            if isinstance(module, SparseConv3d):
                module.chunk_elements = chunk

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _is_up_block(self, stage: int, index: int) -> bool:
        return stage < len(self.blocks) - 1 and index == len(self.blocks[stage]) - 1  # type: ignore[arg-type]

    def _trunk(
        self,
        x: SparseTensor,
        guide_subs: list[SparseTensor] | None,
        stop_stage: int | None = None,
        force_subs: list[SparseTensor] | None = None,
    ) -> tuple[SparseTensor, list[SparseTensor]]:
        h = self.from_latent(x).type(self.dtype)
        subs: list[SparseTensor] = []
        for stage, stage_blocks in enumerate(self.blocks):
            if stage == stop_stage:
                break
            block: nn.Module
            predicted: SparseTensor
            for index, block in enumerate(stage_blocks):  # type: ignore[arg-type]
                if not self._is_up_block(stage, index):
                    h = block(h)
                elif self.pred_subdiv:
                    h, predicted = block(h, force=force_subs[stage] if force_subs is not None else None)
                    subs.append(predicted)
                else:
                    h = block(h, subdiv=guide_subs[stage] if guide_subs is not None else None)
        return h, subs

    def forward(
        self,
        x: SparseTensor,
        guide_subs: list[SparseTensor] | None = None,
        return_subs: bool = False,
        force_subs: list[SparseTensor] | None = None,
    ) -> SparseTensor | tuple[SparseTensor, list[SparseTensor]]:
        """Decode a structured latent.

        Args:
            x: the SLat, feats ``[N, latent_channels]`` (float32) at resolution ``R``.
            guide_subs: for ``pred_subdiv=False`` only: one subdivision per upsampling (a
                ``SparseTensor [N_s, 8]`` of logits or booleans, row-aligned with that stage's
                voxels — the ``subs`` returned by the shape decoder on the same coordinates).
            return_subs: for ``pred_subdiv=True`` only: also return the predicted subdivision
                logits (``SparseTensor [N_s, 8]`` per upsampling, in the blocks' dtype).
            force_subs: for ``pred_subdiv=True`` only: teacher forcing — upsample with these
                subdivisions (one per upsampling, row-aligned like ``guide_subs``) instead of the
                predicted ones (which are still returned); for stage-by-stage parity tests.

        Returns:
            feats ``[M, out_channels]`` in ``x``'s dtype at resolution ``R·2^(stages-1)``, or
            ``(that, subs)`` with ``return_subs``.

        Raises:
            ValueError: ``guide_subs`` with a predicting decoder, ``return_subs`` with a guided
                one, or a guided decoder without ``guide_subs``.
        """
        if guide_subs is not None and self.pred_subdiv:
            raise ValueError("guide_subs is only for decoders built with pred_subdiv=False")
        if (return_subs or force_subs is not None) and not self.pred_subdiv:
            raise ValueError("return_subs and force_subs are only for decoders built with pred_subdiv=True")
        h, subs = self._trunk(x, guide_subs, force_subs=force_subs)
        h = h.type(x.dtype)
        h = h.replace(F.layer_norm(h.feats, h.feats.shape[-1:]))
        h = self.output_layer(h)
        if return_subs:
            return h, subs
        return h

    @torch.no_grad()
    def upsample(self, x: SparseTensor, upsample_times: int) -> torch.Tensor:
        """The voxel coordinates after ``upsample_times`` predicted subdivisions.

        Runs the trunk up to (excluding) stage ``upsample_times`` and returns its ``int32
        [M, 4]`` coordinates ``(b, x, y, z)`` at resolution ``R·2^upsample_times`` — the
        cascade's way to lift a low-resolution shape SLat to a finer voxel set.

        Raises:
            ValueError: on a decoder built with ``pred_subdiv=False``.
        """
        if not self.pred_subdiv:
            raise ValueError("upsample needs a decoder built with pred_subdiv=True")
        h, _ = self._trunk(x, None, stop_stage=upsample_times)
        return h.coords


@dataclass
class DecodedMesh:
    """A decoded triangle mesh: ``vertices float32 [V, 3]`` in the unit cube ``[-0.5, 0.5]³``,
    ``faces int64 [F, 3]`` (vertex indices)."""

    vertices: torch.Tensor
    faces: torch.Tensor


@dataclass
class DualGridFields:
    """Per-voxel outputs of the shape decoder, on the decoded voxels.

    ``vertices``: feats ``float [M, 3]``, the dual vertex in voxel units, in
    ``[-margin, 1 + margin]``; ``intersected``: feats ``bool [M, 3]``, whether the voxel's
    +x/+y/+z primal edge crosses the surface; ``quad_lerp``: feats ``float [M, 1] ≥ 0``, the
    quad split weight (softplus).
    """

    vertices: SparseTensor
    intersected: SparseTensor
    quad_lerp: SparseTensor


class FlexiDualGridVaeDecoder(SparseUnetVaeDecoder):
    """TRELLIS.2 shape decoder: SLat → flexible-dual-grid fields → triangle meshes.

    Args:
        resolution: the output grid size (256 / 512 / 1024; changeable with :meth:`set_resolution`).
        model_channels, latent_channels, num_blocks, block_type, up_block_type, block_args,
            use_fp16: as for :class:`SparseUnetVaeDecoder` (7 output channels, predicted
            subdivision).
        voxel_margin: how far (in voxels) a dual vertex may leave its voxel.

    Call ``decoder(slat)`` → ``list[DecodedMesh]`` (one per batch item), or
    ``decoder(slat, return_subs=True)`` → ``(meshes, subs)``; :meth:`decode_fields` gives the raw
    per-voxel outputs.
    """

    def __init__(
        self,
        resolution: int,
        model_channels: list[int],
        latent_channels: int,
        num_blocks: list[int],
        block_type: list[str],
        up_block_type: list[str],
        block_args: list[dict[str, Any]],
        voxel_margin: float = 0.5,
        use_fp16: bool = False,
    ) -> None:
        super().__init__(
            7, model_channels, latent_channels, num_blocks, block_type, up_block_type, block_args, use_fp16
        )
        self.resolution = resolution
        self.voxel_margin = voxel_margin

    def set_resolution(self, resolution: int) -> None:
        """Set the grid size used to place the mesh vertices (the final voxel resolution)."""
        self.resolution = resolution

    def decode_fields(
        self, x: SparseTensor, return_subs: bool = False, force_subs: list[SparseTensor] | None = None
    ) -> DualGridFields | tuple[DualGridFields, list[SparseTensor]]:
        """The decoder's per-voxel dual-grid fields (see :class:`DualGridFields`).

        ``vertices = (1 + 2·margin)·sigmoid(h[:, 0:3]) − margin``, ``intersected = h[:, 3:6] > 0``,
        ``quad_lerp = softplus(h[:, 6:7])`` with ``h`` the head output. ``force_subs``: see
        :meth:`SparseUnetVaeDecoder.forward`.
        """
        decoded = super().forward(x, return_subs=return_subs, force_subs=force_subs)
        h, subs = decoded if isinstance(decoded, tuple) else (decoded, [])
        margin = self.voxel_margin
        fields = DualGridFields(
            vertices=h.replace((1 + 2 * margin) * torch.sigmoid(h.feats[:, 0:3]) - margin),
            intersected=h.replace(h.feats[:, 3:6] > 0),
            quad_lerp=h.replace(F.softplus(h.feats[:, 6:7])),
        )
        return (fields, subs) if return_subs else fields

    def fields_to_meshes(self, fields: DualGridFields) -> list[DecodedMesh]:
        """One mesh per batch item through ``dual_grid.flexible_dual_grid_to_mesh``."""
        from .dual_grid import flexible_dual_grid_to_mesh

        meshes = []
        aabb = [[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]]
        for rows in fields.vertices.layout:
            vertices, faces = flexible_dual_grid_to_mesh(
                fields.vertices.coords[rows, 1:],
                fields.vertices.feats[rows],
                fields.intersected.feats[rows],
                fields.quad_lerp.feats[rows],
                aabb=aabb,
                grid_size=self.resolution,
            )
            meshes.append(DecodedMesh(vertices=vertices.float(), faces=faces))
        return meshes

    def forward(  # type: ignore[override]
        self, x: SparseTensor, return_subs: bool = False
    ) -> list[DecodedMesh] | tuple[list[DecodedMesh], list[SparseTensor]]:
        """Decode shape SLats to meshes (``return_subs``: also the subdivision logits per stage)."""
        if return_subs:
            fields, subs = self.decode_fields(x, return_subs=True)  # type: ignore[misc]
            return self.fields_to_meshes(fields), subs
        return self.fields_to_meshes(self.decode_fields(x))  # type: ignore[arg-type]
