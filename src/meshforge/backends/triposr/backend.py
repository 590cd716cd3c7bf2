"""``triposr``: single-image reconstruction with TripoSR (Tochilkin et al. 2024), our own implementation.

The backend loads the official weights (see :mod:`.loading`), composites the prepared RGBA picture over grey
as the reference does (:func:`.preprocess.composite_grey`), runs the network once to get the triplane scene code
(:mod:`.model`), and hands back a :class:`TripoSRField` that answers density and colour queries by decoding the
triplane — in meshforge's canonical frame.

**Frames.** TripoSR's native frame is the one of its renderer: the scene cube is ``[−0.87, 0.87]³``, the camera
of the input view sits on the +x axis (azimuth 0, elevation 0, distance 1.9, vertical fov 40°) looking at the
origin with +z up, and the picture's columns run towards +y (its right). meshforge's canonical frame (glTF) has
the input camera on +z looking down −z with +y up and +x to the picture's right. So

    canonical (X, Y, Z) = (y, z, x)          i.e.  canonical = ROTATION @ native,

a proper rotation (a cyclic permutation of the axes, det +1: −120° about (1, 1, 1); x → Z, y → X, z → Y).
The cube is symmetric, so the bounding box stays ``±0.87`` on every axis. (The input view is taken to be the
reference renderer's view 0 with its default distance and fov; with the official weights, the silhouette of the
extracted mesh seen from :attr:`TripoSRBackend.camera` should match the picture's mask.)

**Field values.** ``density`` is TripoSR's volume density ``exp(raw − 1)``; the surface is its level
``iso_level = 25`` (the reference's marching-cubes threshold), inside is denser. ``colour`` is the decoder's
sigmoid colour, which is trained against sRGB renders, so it is sRGB-encoded in [0, 1]. TripoSR predicts no
material: metallic is 0 and roughness a constant (0.8 by default, a matte dielectric).
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import BackendError, InputError
from ...types import Camera, Image
from .loading import WeightFiles, find_weights
from .preprocess import composite_grey

if TYPE_CHECKING:
    import torch

    from .model import TripoSRModel

__all__ = ["TripoSRBackend", "TripoSRField"]


class TripoSRField:
    """The triplane NeRF of one picture, queried in the canonical frame.

    Args:
        model: the loaded network (eval mode).
        scene_code: ``[3, Co, H, W]`` float32 triplane on the model's device.
        roughness: the constant roughness.
        chunk_points: points per decoder batch.

    Attributes:
        bbox_min, bbox_max: ``[3]`` float32, ``∓radius`` (0.87 for the official config).
        iso_level: 25.0.
    """

    iso_level = 25.0

    def __init__(self, model: TripoSRModel, scene_code: torch.Tensor, roughness: float, chunk_points: int) -> None:
        self.model = model
        self.scene_code = scene_code
        self.roughness = float(roughness)
        self.chunk_points = int(chunk_points)
        r = float(model.renderer.radius)
        self.bbox_min = np.full(3, -r, dtype=np.float32)
        self.bbox_max = np.full(3, r, dtype=np.float32)

    def _native(self, points: np.ndarray) -> torch.Tensor:
        import torch

        p = np.asarray(points, dtype=np.float32).reshape(-1, 3)
        native = np.ascontiguousarray(p[:, [2, 0, 1]])  # (x, y, z)_native = (Z, X, Y)_canonical
        return torch.from_numpy(native).to(self.scene_code.device)

    def _query(self, points: np.ndarray) -> dict[str, torch.Tensor]:
        import torch

        with torch.inference_mode():
            return self.model.query(self.scene_code, self._native(points), chunk=self.chunk_points)

    def density(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` float32 canonical points → ``[N]`` float32 density (> 25 inside)."""
        out: np.ndarray = self._query(points)["density"].float().cpu().numpy()
        return out

    def colour(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` float32 canonical points → ``[N, 3]`` float32 sRGB-encoded colour in [0, 1]."""
        out: np.ndarray = self._query(points)["rgb"].float().cpu().numpy()
        return np.clip(out, 0.0, 1.0)

    def material(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Metallic 0 and the constant roughness, ``[N]`` float32 each."""
        n = len(points)
        return np.zeros(n, dtype=np.float32), np.full(n, self.roughness, dtype=np.float32)

    def density_grid(self, resolution: int) -> np.ndarray:
        """The density on the extraction grid ``[i, j, k] ↔ (X, Y, Z)`` of :func:`~meshforge.fields.base.grid_axes`.

        Evaluated on the native grid with separable plane lookups in big batches (:meth:`.model.TripoSRModel.
        query_grid`), then re-indexed: canonical ``[i, j, k]`` is native ``[k, i, j]``.

        Returns:
            ``[R, R, R]`` float32.
        """
        import torch

        from ...fields.base import grid_axes

        axis = torch.from_numpy(grid_axes(self, resolution)[0]).to(self.scene_code.device)
        with torch.inference_mode():
            native = self.model.query_grid(self.scene_code, axis, chunk=self.chunk_points)["density"]
        return np.ascontiguousarray(native.float().cpu().numpy().transpose(1, 2, 0))


class TripoSRBackend:
    """TripoSR single-image → triplane NeRF backend (see the module docstring).

    Args:
        weights: folder with ``config.yaml`` + ``model.safetensors``/``model.ckpt``, or a Hugging Face repo id;
            None → ``stabilityai/TripoSR`` (see :mod:`.loading`).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"`` (or ``"cuda:N"``).
        roughness: the constant roughness of the material, in [0, 1].
        chunk_points: points per decoder batch (default: 2²⁰ on CUDA, 2¹⁸ on CPU).
        download: allow downloading hub weights that are not cached (``HF_HUB_OFFLINE=1`` also forbids it).

    Attributes:
        name: ``"triposr"``.
        input_size: 512, the side of the prepared square picture (the official ``cond_image_size``).
        camera: perspective, vertical fov 40°, distance 1.9 (the input view of the reference's renderer).
        ROTATION: ``[3, 3]`` rotation taking TripoSR's native frame to the canonical frame
            (``canonical = ROTATION @ native``).

    Raises:
        BackendError: unusable weights, or an unavailable device.
        MissingDependency: torch (or another needed package) is not installed.
        InputError: bad option values.
    """

    name = "triposr"
    input_size = 512
    camera = Camera(kind="perspective", fov_deg=40.0, distance=1.9)
    ROTATION = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=np.float64)
    DEFAULT_ROUGHNESS = 0.8

    def __init__(
        self,
        *,
        weights: str | os.PathLike[str] | None = None,
        device: str = "auto",
        roughness: float = DEFAULT_ROUGHNESS,
        chunk_points: int | None = None,
        download: bool = True,
        **_: Any,
    ) -> None:
        if not 0.0 <= roughness <= 1.0:
            raise InputError(f"roughness must be in [0, 1], got {roughness}")
        from .loading import load_model

        self.device = _resolve_device(device)
        self.roughness = float(roughness)
        self.chunk_points = int(chunk_points or (1 << 20 if self.device.startswith("cuda") else 1 << 18))
        self.model, self.files = load_model(weights, device=self.device, download=download)
        self.input_size = int(self.model.cfg.cond_image_size)

    @classmethod
    def weights_location(cls, weights: str | os.PathLike[str] | None = None) -> WeightFiles | None:
        """Where the weights are (no download, no torch import), or None when they are not all present."""
        return find_weights(weights)

    @classmethod
    def weights_present(cls, weights: str | os.PathLike[str] | None = None) -> bool:
        """True when the weights are present locally (folder or HF cache) and torch + PyYAML are installed.

        Used by ``auto`` selection; never downloads and never imports torch.
        """
        if any(importlib.util.find_spec(m) is None for m in ("torch", "yaml")):
            return False
        files = find_weights(weights)
        if files is None:
            return False
        return files.checkpoint.suffix != ".safetensors" or importlib.util.find_spec("safetensors") is not None

    def info(self) -> dict[str, Any]:
        """Provenance for reports and the asset's extras."""
        n_params = sum(int(p.numel()) for p in self.model.parameters())
        return {
            "name": self.name,
            "weights": self.files.location,
            "weights_source": self.files.source,
            "checkpoint": self.files.checkpoint.name,
            "checkpoint_bytes": self.files.checkpoint.stat().st_size,
            "parameters": n_params,
            "device": self.device,
            "dtype": "float32",
            "cond_image_size": self.input_size,
            "iso_level": TripoSRField.iso_level,
            "radius": float(self.model.renderer.radius),
            "roughness": self.roughness,
            "rotation_to_canonical": self.ROTATION.tolist(),
            "reference": "VAST-AI-Research/TripoSR (Tochilkin et al. 2024); meshforge clean-room implementation",
        }

    def condition(self, image: Image) -> torch.Tensor:
        """The network input of a prepared picture: grey composite, uint8 truncation, antialiased resize.

        Returns:
            ``[1, S, S, 3]`` float32 in [0, 1] on the backend's device (S = ``input_size``).
        """
        import torch

        from .model import resize_condition

        rgba = image.rgba
        if rgba.shape[0] != rgba.shape[1]:
            raise InputError(
                f"{image.name}: triposr needs a square prepared picture, got {rgba.shape[1]}x{rgba.shape[0]}"
            )
        rgb = torch.from_numpy(composite_grey(rgba)).to(self.device)
        return resize_condition(rgb, self.input_size)

    def __call__(self, image: Image) -> TripoSRField:
        """Reconstruct a prepared picture into a field.

        Args:
            image: a prepared ``[S, S, 4]`` picture (:func:`meshforge.preprocess.prepare`), its alpha the object mask.

        Raises:
            InputError: the picture is not square.
            BackendError: the network failed (e.g. out of device memory).
        """
        import torch

        cond = self.condition(image)
        try:
            with torch.inference_mode():
                codes = self.model(cond)
        except torch.cuda.OutOfMemoryError as exc:
            raise BackendError(f"{image.name}: TripoSR ran out of GPU memory: {str(exc).splitlines()[0]}") from None
        return TripoSRField(self.model, codes[0], self.roughness, self.chunk_points)


def _resolve_device(device: str) -> str:
    if importlib.util.find_spec("torch") is None:
        from ...errors import MissingDependency

        raise MissingDependency("the TripoSR backend needs PyTorch: pip install 'meshforge[triposr]'")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BackendError("device 'cuda' was requested but PyTorch sees no CUDA device")
        return device
    raise InputError(f"unknown device {device!r} (choices: auto, cpu, cuda)")
