"""``trellis2``: single-image 3D generation with TRELLIS.2 (2025), our own PyTorch implementation.

The backend runs :class:`.pipeline.Trellis2Pipeline` on the prepared RGBA picture (whose alpha is the object
mask: the picture's own alpha when it has one, else meshforge's weightless background remover — never
RMBG-2.0, which is non-commercial) and returns a :class:`Trellis2Field`:

* its **dense surface** (:meth:`Trellis2Field.dense_surface`) is the shape decoder's mesh — meshforge's raw
  surface, to be cleaned, decimated, unwrapped and baked;
* its **attributes** (``color``/``material``/``alpha``) are the texture decoder's sparse PBR voxels:
  :attr:`Trellis2Field.voxels`, a :class:`~meshforge.fields.sparse_voxels.SparseVoxelField`
  (trilinear over existing voxels only) whose ``transform`` maps the canonical frame into TRELLIS.2's — a
  portable attribute source for the raw file;
* its ``alpha_mode`` says whether the voxels' opacity is real
  (:func:`~meshforge.fields.sparse_voxels.alpha_mode_of`: ``OPAQUE`` unless it is; then ``MASK`` when it
  is nearly binary, else ``BLEND``), and ``alpha(points)`` samples it;
* ``density`` (occupancy of the voxels, iso-level 0.5) is only a fallback for a pipeline that extracts an
  isosurface instead of taking :meth:`Trellis2Field.dense_surface`.

**Frames.** TRELLIS.2 works in a Z-up cube ``[−0.5, 0.5]³``; meshforge's canonical frame is glTF (+Y up, the
input camera on +Z). As the reference's GLB export does, canonical ``(X, Y, Z) = (x, z, −y)`` — a proper
rotation (winding kept).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import BackendError, InputError, MissingDependency
from ...types import Camera, DeviceMesh, Image, Mesh
from .loading import find_weights

if TYPE_CHECKING:
    from .pipeline import Trellis2Output, Trellis2Pipeline

__all__ = ["Trellis2Backend", "Trellis2Field", "to_canonical", "to_trellis"]

#: canonical = ROTATION @ trellis
ROTATION = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
#: the ``[4, 4]`` affine from the canonical frame to TRELLIS.2's (the voxel field's ``transform``)
CANONICAL_TO_TRELLIS = np.eye(4)
CANONICAL_TO_TRELLIS[:3, :3] = ROTATION.T


def to_canonical(points: np.ndarray) -> np.ndarray:
    """TRELLIS.2 frame ``[N, 3]`` → canonical glTF frame (``(x, y, z) → (x, z, −y)``), float32."""
    p = np.asarray(points, dtype=np.float32)
    return np.stack([p[:, 0], p[:, 2], -p[:, 1]], axis=1)


def to_trellis(points: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_canonical` (``(X, Y, Z) → (X, −Z, Y)``), float32."""
    p = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    return np.stack([p[:, 0], -p[:, 2], p[:, 1]], axis=1)


class Trellis2Field:
    """One generated object in the canonical frame: dense surface + sparse PBR voxels (module docstring).

    Args:
        vertices: ``[V, 3]`` float32 mesh vertices, TRELLIS.2 frame: a numpy array, or a tensor (left on its
            CUDA device for :meth:`dense_surface`; copied to the host only when :attr:`vertices` is read).
        faces: ``[F, 3]`` int mesh faces (numpy, or a tensor on the vertices' device).
        coords: ``[M, 3]`` int voxel coordinates on the ``resolution³`` grid.
        attrs: ``[M, 6]`` float32 voxel attributes (base colour RGB, metallic, roughness, alpha; the decoder's
            ``·0.5 + 0.5`` values, clamped to [0, 1] here).
        resolution: the grid size; ``origin`` ``(−0.5)³`` and ``voxel_size`` ``1/resolution`` (TRELLIS.2 frame).

    Attributes:
        bbox_min, bbox_max: ``∓0.5`` (canonical).
        iso_level: 0.5 (for the occupancy fallback :meth:`density`).
        alpha_mode: see :func:`~meshforge.fields.sparse_voxels.alpha_mode_of`.
        voxels: the :class:`~meshforge.fields.sparse_voxels.SparseVoxelField` (voxels in TRELLIS.2's frame,
            asked in the canonical frame through its ``transform``).
    """

    iso_level = 0.5

    def __init__(
        self, vertices: np.ndarray, faces: np.ndarray, coords: np.ndarray, attrs: np.ndarray, resolution: int
    ) -> None:
        from ...fields.sparse_voxels import SparseVoxelField

        on_cuda = hasattr(vertices, "detach") and bool(getattr(vertices, "is_cuda", False))
        #: the decoded mesh, TRELLIS.2 frame: CUDA tensors stay where the decoder made them
        self._mesh: tuple[Any, Any] = (vertices, faces) if on_cuda else (_numpy(vertices), _numpy(faces))
        self.coords = np.asarray(coords, dtype=np.int64)
        self.attrs = np.clip(np.asarray(attrs, dtype=np.float32), 0.0, 1.0)
        self.resolution = int(resolution)
        self.origin = (-0.5, -0.5, -0.5)
        self.voxel_size = 1.0 / self.resolution
        self.voxels = SparseVoxelField(
            self.coords, self.attrs, self.origin, self.voxel_size, transform=CANONICAL_TO_TRELLIS
        )
        self.bbox_min = np.full(3, -0.5, dtype=np.float32)
        self.bbox_max = np.full(3, 0.5, dtype=np.float32)
        self.alpha_mode = self.voxels.alpha_mode
        r = self.resolution
        keys = (self.coords[:, 0] * r + self.coords[:, 1]) * r + self.coords[:, 2]
        self._keys = np.unique(keys)

    def portable_field(self) -> Any:
        """The form of this field that needs no backend: its
        :class:`~meshforge.fields.sparse_voxels.SparseVoxelField`."""
        return self.voxels

    @property
    def vertices(self) -> np.ndarray:
        """``[V, 3]`` float32 mesh vertices, TRELLIS.2 frame, on the host."""
        return np.asarray(_numpy(self._mesh[0]), dtype=np.float32)

    @property
    def faces(self) -> np.ndarray:
        """``[F, 3]`` int64 mesh faces on the host."""
        return np.asarray(_numpy(self._mesh[1]), dtype=np.int64)

    def dense_surface(self) -> Mesh | DeviceMesh:
        """The decoded mesh in the canonical frame (meshforge's raw dense surface): a host :class:`Mesh`, or a
        :class:`~meshforge.types.DeviceMesh` left on the CUDA device the decoder made it on."""
        v, f = self._mesh
        if hasattr(v, "detach"):  # (x, y, z) → (x, z, −y) on the device, as to_canonical
            import torch

            return DeviceMesh(torch.stack([v[:, 0], v[:, 2], -v[:, 1]], 1).float(), f.long())
        return Mesh(vertices=to_canonical(v), faces=np.asarray(f).astype(np.int32))

    def density(self, points: np.ndarray) -> np.ndarray:
        """Occupancy (1 inside an existing voxel, else 0) at canonical points — a fallback only."""
        ijk = np.floor((to_trellis(points) + 0.5) * self.resolution).astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < self.resolution), axis=1)
        r = self.resolution
        keys = (ijk[:, 0] * r + ijk[:, 1]) * r + ijk[:, 2]
        pos = np.clip(np.searchsorted(self._keys, keys), 0, max(len(self._keys) - 1, 0))
        hit = inside & (self._keys[pos] == keys) if len(self._keys) else np.zeros(len(keys), bool)
        return hit.astype(np.float32)

    def color(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` canonical points → ``[N, 3]`` sRGB base colour in [0, 1]."""
        return np.asarray(self.voxels.color(points), dtype=np.float32)

    def material(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[N, 3]`` canonical points → (metallic ``[N]``, roughness ``[N]``) in [0, 1]."""
        metallic, roughness = self.voxels.material(points)
        return np.asarray(metallic, dtype=np.float32), np.asarray(roughness, dtype=np.float32)

    def alpha(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` canonical points → ``[N]`` opacity in [0, 1]."""
        return np.asarray(self.voxels.alpha(points), dtype=np.float32)


class Trellis2Backend:
    """TRELLIS.2 image → mesh + PBR voxels (see the module docstring).

    Args:
        weights: a folder in the official layout, a Hugging Face repo id, or None (``microsoft/TRELLIS.2-4B``
            in the local cache); never downloaded here (``meshforge models pull trellis2``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``/``"cuda:N"``.
        pipeline_type: ``"auto"`` (pipeline.json's default) or one of :data:`~.pipeline.PIPELINE_TYPES`.
        seed: the torch seed of the noise (the reference's default is 42).
        steps: override every sampler's step count (None: pipeline.json's).
        dinov3: a DINOv3 folder (else ``MESHFORGE_DINOV3``, ``<weights>/<id>``, the HF cache).
        low_vram: None = automatic (below 40 GiB of device memory).
        max_num_tokens: the cascade's token cap.
        dtypes: per-stage compute dtype on CUDA, stage (``"cond"``, ``"ss"``, ``"shape"``, ``"tex"``,
            ``"decoder"``) → ``"fp32"``, ``"bf16"`` or ``"fp16"``; unnamed stages keep the checkpoint's
            (the reference's) dtypes. The CPU always computes in float32.

    Raises:
        BackendError: weights or DINOv3 missing/unusable (one line saying how to get them).
        MissingDependency: torch or transformers missing.
        InputError: bad option values.
    """

    name = "trellis2"
    #: the prepared picture's side: the reference keeps up to 1024 px before its object crop
    input_size = 1024
    #: nominal input view (TRELLIS.2 is trained on renders of varying field of view)
    camera = Camera(kind="perspective", fov_deg=40.0, distance=2.0)

    def __init__(
        self,
        *,
        weights: str | os.PathLike[str] | None = None,
        device: str = "auto",
        pipeline_type: str = "auto",
        seed: int = 42,
        steps: int | None = None,
        dinov3: str | os.PathLike[str] | None = None,
        low_vram: bool | None = None,
        max_num_tokens: int = 49152,
        dtypes: dict[str, str] | None = None,
        **_: Any,
    ) -> None:
        if importlib.util.find_spec("torch") is None:
            raise MissingDependency("the TRELLIS.2 backend needs PyTorch: pip install 'meshforge[trellis2]'")
        from .pipeline import PIPELINE_TYPES

        if pipeline_type != "auto" and pipeline_type not in PIPELINE_TYPES:
            raise InputError(f"unknown pipeline type {pipeline_type!r} (choices: auto, {', '.join(PIPELINE_TYPES)})")
        if steps is not None and steps < 1:
            raise InputError(f"steps must be at least 1, got {steps}")
        stage_dtypes = _parse_dtypes(dtypes or {})
        from ...devices import resolve_device
        from .pipeline import Trellis2Pipeline

        self.device = resolve_device(device)
        self.pipeline_type = pipeline_type
        self.seed = int(seed)
        self.steps = steps
        self.max_num_tokens = int(max_num_tokens)
        self.pipeline: Trellis2Pipeline = Trellis2Pipeline.from_folder(
            weights, device=self.device, dinov3=dinov3, low_vram=low_vram, dtypes=stage_dtypes
        )
        self.last_output: Trellis2Output | None = None

    @classmethod
    def weights_location(cls, weights: str | os.PathLike[str] | None = None) -> Path | None:
        """The folder holding ``pipeline.json`` (a cache snapshot for a repo id), without downloading or
        importing torch; None when the weights are not all there."""
        files = find_weights(weights)
        return files.root if files is not None else None

    @classmethod
    def weights_present(cls, weights: str | os.PathLike[str] | None = None) -> bool:
        """True when the weights and DINOv3 are local and torch, transformers and safetensors are installed."""
        if any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "safetensors")):
            return False
        files = find_weights(weights)
        if files is None:
            return False
        from .conditioning import find_dinov3

        try:
            find_dinov3(weights_folder=files.root, model_id=files.dinov3_id)
        except BackendError:
            return False
        return True

    @classmethod
    def weights_note(cls, weights: str | os.PathLike[str] | None = None) -> str | None:
        """What is missing, for ``meshforge models list`` (None when ready)."""
        files = find_weights(weights)
        if files is None:
            return "weights not found: meshforge models pull trellis2 (or --weights DIR)"
        from .conditioning import DINOV3_LICENCE_STEP, find_dinov3

        try:
            find_dinov3(weights_folder=files.root, model_id=files.dinov3_id)
        except BackendError:
            return f"DINOv3 missing: {DINOV3_LICENCE_STEP}"
        if any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "safetensors")):
            return "a needed package is missing: pip install 'meshforge[trellis2]'"
        return None

    @classmethod
    def pull_weights(
        cls, *, revision: str | None = None, local_dir: str | os.PathLike[str] | None = None
    ) -> tuple[Any, str]:
        """``meshforge models pull trellis2``: see :func:`.hub.pull`."""
        from .hub import pull

        return pull(revision=revision, local_dir=local_dir)

    def info(self) -> dict[str, Any]:
        """Provenance for reports and the asset's extras."""
        files = self.pipeline.files
        n_params = sum(int(p.numel()) for m in self.pipeline.models.values() for p in m.parameters())
        out = self.last_output
        return {
            "name": self.name,
            "weights": files.location if files else None,
            "weights_source": files.source if files else None,
            "dinov3": self.pipeline.conditioner.source,
            "parameters": n_params,
            "device": self.device,
            "low_vram": self.pipeline.low_vram,
            "pipeline_type": self.pipeline_type
            if self.pipeline_type != "auto"
            else self.pipeline.default_pipeline_type,
            "seed": self.seed,
            "steps": self.steps,
            "resolution": out.resolution if out else None,
            "timings": out.timings if out else None,
            "warnings": out.warnings if out else [],
            "reference": "microsoft/TRELLIS.2 (2025); meshforge clean-room implementation",
        }

    def __call__(self, image: Image) -> Trellis2Field:
        """Generate from a prepared RGBA picture (alpha = object mask).

        Raises:
            InputError: the mask is empty.
            BackendError: the networks failed (out of memory even at ``512``, empty structure).
        """
        params = {"steps": self.steps} if self.steps is not None else {}
        kind = None if self.pipeline_type == "auto" else self.pipeline_type
        out = self.pipeline.run(
            image.rgba,
            seed=self.seed,
            pipeline_type=kind,
            sparse_structure_sampler_params=params,
            shape_slat_sampler_params=params,
            tex_slat_sampler_params=params,
            max_num_tokens=self.max_num_tokens,
        )
        self.last_output = out
        return field_from_output(out)


def field_from_output(out: Trellis2Output, index: int = 0) -> Trellis2Field:
    """The :class:`Trellis2Field` of batch item ``index`` of a pipeline output.

    The mesh may be an object with ``vertices``/``faces`` tensors or a ``(vertices, faces)`` pair.
    """
    mesh = out.meshes[index]
    if isinstance(mesh, (tuple, list)):
        vertices, faces = mesh[0], mesh[1]
    else:
        vertices, faces = mesh.vertices, mesh.faces
    vox = out.voxels[index]
    # the mesh as the decoder left it (CUDA tensors stay on the device: Trellis2Field.dense_surface)
    return Trellis2Field(vertices, faces, _numpy(vox.coords[:, 1:]), _numpy(vox.feats.float()), out.resolution)


def _parse_dtypes(spec: dict[str, str]) -> dict[str, Any]:
    """``{"tex": "fp32", ...}`` → ``{"tex": torch.float32, ...}``.

    Raises:
        InputError: unknown stage or dtype name.
    """
    import torch

    names = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    stages = ("cond", "ss", "shape", "tex", "decoder")
    out: dict[str, Any] = {}
    for stage, name in spec.items():
        if stage not in stages:
            raise InputError(f"unknown TRELLIS.2 stage {stage!r} in dtypes (choices: {', '.join(stages)})")
        if name not in names:
            raise InputError(f"unknown dtype {name!r} for stage {stage} (choices: fp32, bf16, fp16)")
        out[stage] = names[name]
    return out


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return np.asarray(x.detach().cpu().numpy())
    return np.asarray(x)
