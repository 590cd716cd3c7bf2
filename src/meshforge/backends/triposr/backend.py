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
``iso_level = 25`` (the reference's marching-cubes threshold), inside is denser. ``color`` is the decoder's
sigmoid colour, which is trained against sRGB renders, so it is sRGB-encoded in [0, 1]. TripoSR predicts no
material: metallic is 0 and roughness a constant (0.8 by default, a matte dielectric).

**GPU path.** On CUDA the network runs under fp16 autocast (``precision``; fused attention through
:func:`torch.nn.functional.scaled_dot_product_attention`; a non-finite result is recomputed in float32), and the
extraction grid is evaluated by :meth:`.model.TripoSRModel.density_grid_fast` (``grid_precision``): the decoder's
first layer split over the three planes, the rest of the MLP in one fused Triton kernel (or in big ``F.linear``
batches sized by ``max_vram_gib``). The grid stays on the GPU (:meth:`TripoSRField.density_grid_tensor`) for
meshforge's PyTorch marching cubes (``ExtractConfig(engine="auto")``), and vertex colours come from a second fused
kernel (:meth:`TripoSRField.color_tensor`). On the CPU everything is float32 and exactly as before (the parity
path). Measurements: ``benchmarks/results/triposr_gpu.md``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ...devices import resolve_device
from ...errors import BackendError, InputError
from ...types import Camera, Image
from .loading import WeightFiles, find_weights
from .preprocess import composite_grey

if TYPE_CHECKING:
    import torch

    from .model import TripoSRModel

__all__ = ["CUDA_GRID_PRECISION", "CUDA_PRECISION", "TripoSRBackend", "TripoSRField"]

#: ``precision="auto"`` on CUDA: the network under fp16 autocast (measured on an H200 with the full architecture:
#: as fast as bf16 and 8× closer to float32; a non-finite result is recomputed in float32).
CUDA_PRECISION = "fp16"
#: ``grid_precision="auto"`` on CUDA: fp16 matrix operands in the grid MLP (float32 accumulation/activations).
CUDA_GRID_PRECISION = "fp16"


class TripoSRField:
    """The triplane NeRF of one picture, queried in the canonical frame.

    Args:
        model: the loaded network (eval mode).
        scene_code: ``[3, Co, H, W]`` float32 triplane on the model's device.
        roughness: the constant roughness.
        chunk_points: points per decoder batch.
        grid_precision: arithmetic of :meth:`density_grid_tensor` on CUDA: ``"fp32"`` (the float32 reference path,
            :meth:`.model.TripoSRModel.query_grid`), or ``"tf32"``/``"bf16"``/``"fp16"`` through
            :meth:`.model.TripoSRModel.density_grid_fast`. Ignored on the CPU (always the float32 path).
        max_vram_bytes: device-memory cap that sizes the GPU grid batches (None: ``chunk_points`` points).

    Attributes:
        bbox_min, bbox_max: ``[3]`` float32, ``∓radius`` (0.87 for the official config).
        iso_level: 25.0.
    """

    iso_level = 25.0

    def __init__(
        self,
        model: TripoSRModel,
        scene_code: torch.Tensor,
        roughness: float,
        chunk_points: int,
        grid_precision: str = "fp32",
        max_vram_bytes: int | None = None,
    ) -> None:
        self.model = model
        self.scene_code = scene_code
        self.roughness = float(roughness)
        self.chunk_points = int(chunk_points)
        self.grid_precision = grid_precision
        self.max_vram_bytes = max_vram_bytes
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
            return self.model.query(self.scene_code, self._native(points), chunk=self._query_chunk(len(points)))

    def _query_chunk(self, n: int) -> int:
        """Points per :meth:`.model.TripoSRModel.query` batch: ``chunk_points``, capped on CUDA by the memory cap
        (about 1.6 kB per point in flight: the three planes' samples, their concatenation, the MLP)."""
        return min(max(n, 1), self._batch_points(1, 1600))

    def density(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` float32 canonical points → ``[N]`` float32 density (> 25 inside)."""
        out: np.ndarray = self._query(points)["density"].float().cpu().numpy()
        return out

    def color(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` float32 canonical points → ``[N, 3]`` float32 sRGB-encoded colour in [0, 1]."""
        out: np.ndarray = self._query(points)["rgb"].float().cpu().numpy()
        return np.clip(out, 0.0, 1.0)

    def color_tensor(self, points: torch.Tensor) -> torch.Tensor:
        """:meth:`color` on the device: ``[N, 3]`` canonical points (any device) → ``[N, 3]`` float32 colour in
        [0, 1] on the model's device.

        On CUDA with a reduced ``grid_precision`` the decoder runs at that precision (fp16: at most 1.2e-3 from
        float32 on 4.7 M vertices, a third of an 8-bit step): by the fused Triton kernel
        (:func:`.kernels.triton_color`) where it applies (and compiles: else :func:`.kernels.note_failure` and the
        next), else under autocast. Otherwise in float32 (:meth:`.model.TripoSRModel.query`).
        """
        import torch

        from . import kernels

        native = points.to(self.scene_code.device, torch.float32)[:, [2, 0, 1]].contiguous()
        reduced = native.is_cuda and self.grid_precision != "fp32"
        with torch.inference_mode():
            rgb = None
            if reduced and self._fused_color():  # (None where Triton could not compile or launch it)
                rgb = kernels.attempt(kernels.triton_color, self.model, self.scene_code, native, self.grid_precision)
            if rgb is None:
                half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.grid_precision)
                cast = torch.autocast("cuda", dtype=half) if reduced and half is not None else contextlib.nullcontext()
                with cast:
                    rgb = self.model.query(self.scene_code, native, chunk=self._query_chunk(len(native)))["rgb"]
        return rgb.float().clamp(0.0, 1.0)

    def _fused_color(self) -> bool:
        """Whether the colour may take the fused Triton kernel (:func:`.kernels.triton_color`): Triton works here and
        fits the decoder, whose colour activation is a sigmoid or none."""
        from .kernels import triton_grid_supported

        return triton_grid_supported(self.model) and self.model.renderer.color_activation.lower() in ("sigmoid", "none")

    def material(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Metallic 0 and the constant roughness, ``[N]`` float32 each."""
        n = len(points)
        return np.zeros(n, dtype=np.float32), np.full(n, self.roughness, dtype=np.float32)

    def density_grid(self, resolution: int) -> np.ndarray:
        """The density on the extraction grid ``[i, j, k] ↔ (X, Y, Z)`` of :func:`~meshforge.fields.base.grid_axes`.

        :meth:`density_grid_tensor`, copied to the host.

        Returns:
            ``[R, R, R]`` float32.
        """
        return np.ascontiguousarray(self.density_grid_tensor(resolution).cpu().numpy())

    def density_grid_tensor(self, resolution: int) -> torch.Tensor:
        """The extraction grid (as :meth:`density_grid`) as a tensor on the model's device.

        Evaluated on the native grid with separable plane lookups in big batches, then re-indexed: canonical
        ``[i, j, k]`` is native ``[k, i, j]``. On the CPU (and with ``grid_precision="fp32"``) by
        :meth:`.model.TripoSRModel.query_grid` in float32; on CUDA otherwise by
        :meth:`.model.TripoSRModel.density_grid_fast`.

        Returns:
            ``[R, R, R]`` float32, contiguous, on the scene code's device.
        """
        import torch

        from ...fields.base import grid_axes

        device = self.scene_code.device
        axis = torch.from_numpy(grid_axes(self, resolution)[0]).to(device)
        with torch.inference_mode():
            if device.type != "cuda" or self.grid_precision == "fp32":
                chunk = self._batch_points(resolution, 1200)
                native = self.model.query_grid(self.scene_code, axis, chunk=chunk)["density"].float()
            else:
                native = self.model.density_grid_fast(
                    self.scene_code,
                    axis,
                    precision=self.grid_precision,
                    batch_points=self._batch_points(resolution, 64 * 10),
                )
            return native.permute(1, 2, 0).contiguous()

    def _batch_points(self, resolution: int, bytes_per_point: int) -> int:
        """Points per decoder batch: ``chunk_points``, or on CUDA with a cap, as many as half the memory left
        under ``max_vram_bytes`` holds, at most ``chunk_points``·4 and at least one ``R²`` slab."""
        if self.max_vram_bytes is None or self.scene_code.device.type != "cuda":
            return self.chunk_points
        import torch

        free = self.max_vram_bytes - torch.cuda.memory_allocated(self.scene_code.device)
        return max(resolution * resolution, 1 << 14, min(4 * self.chunk_points, free // 2 // bytes_per_point))


class TripoSRBackend:
    """TripoSR single-image → triplane NeRF backend (see the module docstring).

    Args:
        weights: folder with ``config.yaml`` + ``model.safetensors``/``model.ckpt``, or a Hugging Face repo id;
            None → ``stabilityai/TripoSR`` (see :mod:`.loading`).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"`` (or ``"cuda:N"``).
        roughness: the constant roughness of the material, in [0, 1].
        chunk_points: points per decoder batch (default: 2²⁰ on CUDA, 2¹⁸ on CPU).
        download: allow downloading hub weights that are not cached (``HF_HUB_OFFLINE=1`` also forbids it).
        precision: the network's arithmetic on CUDA: ``"auto"`` (= :data:`CUDA_PRECISION`), ``"bf16"`` or
            ``"fp16"`` (autocast), ``"tf32"`` (TF32 matrix products) or ``"fp32"``. The CPU always uses float32.
        grid_precision: the extraction grid's on CUDA (see :class:`TripoSRField`); ``"auto"`` =
            :data:`CUDA_GRID_PRECISION`.
        max_vram_gib: GPU memory cap (GiB) that sizes the grid and query batches; None: no cap. (The weights
            alone take 1.56 GiB; the peak of a 256³ extraction stays under 3 GiB with the default.)
        cuda_graph: on CUDA, capture the network once per input size and precision in a CUDA graph and replay
            it (saves kernel-launch overhead: 6 % of the network's time on an H200; the graph keeps its
            activations' memory). Results are bit-identical to the eager run.

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
    DEFAULT_MAX_VRAM_GIB: float | None = 3.0
    DEFAULT_CUDA_GRAPH = False

    def __init__(
        self,
        *,
        weights: str | os.PathLike[str] | None = None,
        device: str = "auto",
        roughness: float = DEFAULT_ROUGHNESS,
        chunk_points: int | None = None,
        download: bool = True,
        precision: str = "auto",
        grid_precision: str = "auto",
        max_vram_gib: float | None = DEFAULT_MAX_VRAM_GIB,
        cuda_graph: bool = DEFAULT_CUDA_GRAPH,
        **_: Any,
    ) -> None:
        from .loading import load_model

        self._configure(device, roughness, chunk_points, precision, grid_precision, max_vram_gib, cuda_graph)
        self.model, self.files = load_model(weights, device=self.device, download=download)
        self.input_size = int(self.model.cfg.cond_image_size)

    @classmethod
    def from_model(
        cls,
        model: TripoSRModel,
        *,
        roughness: float = DEFAULT_ROUGHNESS,
        chunk_points: int | None = None,
        precision: str = "auto",
        grid_precision: str = "auto",
        max_vram_gib: float | None = DEFAULT_MAX_VRAM_GIB,
        cuda_graph: bool = DEFAULT_CUDA_GRAPH,
    ) -> TripoSRBackend:
        """A backend around an already built model (on its device), e.g. random weights for benchmarks.

        ``files`` is None: :meth:`info` needs a backend loaded from weights.
        """
        self = cls.__new__(cls)
        device = str(next(model.parameters()).device)
        self._configure(device, roughness, chunk_points, precision, grid_precision, max_vram_gib, cuda_graph)
        self.model, self.files = model.eval(), None  # type: ignore[assignment]
        self.input_size = int(model.cfg.cond_image_size)
        return self

    def _configure(
        self,
        device: str,
        roughness: float,
        chunk_points: int | None,
        precision: str,
        grid_precision: str,
        max_vram_gib: float | None,
        cuda_graph: bool = False,
    ) -> None:
        if not 0.0 <= roughness <= 1.0:
            raise InputError(f"roughness must be in [0, 1], got {roughness}")
        if precision not in ("auto", "fp32", "tf32", "bf16", "fp16"):
            raise InputError(f"unknown precision {precision!r} (choices: auto, fp32, tf32, bf16, fp16)")
        if grid_precision not in ("auto", "fp32", "tf32", "bf16", "fp16"):
            raise InputError(f"unknown grid precision {grid_precision!r} (choices: auto, fp32, tf32, bf16, fp16)")
        if max_vram_gib is not None and max_vram_gib <= 0:
            raise InputError(f"max_vram_gib must be positive, got {max_vram_gib}")
        self.device = _resolve_device(device)
        cuda = self.device.startswith("cuda")
        self.roughness = float(roughness)
        self.chunk_points = int(chunk_points or (1 << 20 if cuda else 1 << 18))
        self.precision = (CUDA_PRECISION if precision == "auto" else precision) if cuda else "fp32"
        self.grid_precision = (CUDA_GRID_PRECISION if grid_precision == "auto" else grid_precision) if cuda else "fp32"
        self.max_vram_bytes = None if max_vram_gib is None else int(max_vram_gib * 2**30)
        self.cuda_graph = bool(cuda_graph and cuda)
        self._graph: tuple[Any, ...] | None = None
        self.fp32_fallbacks = 0

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
            "precision": self.precision,
            "grid_precision": self.grid_precision,
            "cuda_graph": self.cuda_graph,
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
                codes = self._network(cond).float()
                if self.precision in ("fp16", "bf16") and not bool(torch.isfinite(codes).all()):
                    # 16-bit overflow (fp16's range is ±65504): recompute in float32
                    self.fp32_fallbacks += 1
                    with _matmul_tf32(False):
                        codes = self.model(cond).float()
        except torch.cuda.OutOfMemoryError as exc:
            raise BackendError(f"{image.name}: TripoSR ran out of GPU memory: {str(exc).splitlines()[0]}") from None
        return TripoSRField(
            self.model, codes[0], self.roughness, self.chunk_points, self.grid_precision, self.max_vram_bytes
        )

    def _network(self, cond: torch.Tensor) -> torch.Tensor:
        """The network under :meth:`autocast`, eagerly or by replaying a captured CUDA graph."""
        import torch

        if not (self.cuda_graph and cond.is_cuda):
            with self.autocast():
                return self.model(cond)
        key = (tuple(cond.shape), self.precision)
        if self._graph is None or self._graph[0] != key:
            self._graph = None
            static_in = cond.clone()
            side = torch.cuda.Stream(cond.device)
            side.wait_stream(torch.cuda.current_stream(cond.device))
            with torch.cuda.stream(side), self.autocast():
                for _ in range(2):  # warm-up outside the capture (kernel selection, workspaces)
                    self.model(static_in)
            torch.cuda.current_stream(cond.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), self.autocast():
                static_out = self.model(static_in)
            self._graph = (key, graph, static_in, static_out)
        _, graph, static_in, static_out = self._graph
        static_in.copy_(cond)
        graph.replay()
        out: torch.Tensor = static_out.clone()
        return out

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The network's arithmetic context per ``precision``: bf16/fp16 autocast, TF32 matrix products, or
        strict float32 (TF32 off also for convolutions, which PyTorch allows by default); the TF32 settings are
        PyTorch's global flags, restored on exit."""
        if not self.device.startswith("cuda"):
            return contextlib.nullcontext()
        if self.precision in ("fp32", "tf32"):
            return _matmul_tf32(self.precision == "tf32")
        import torch

        return torch.autocast("cuda", dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)

    def peak_vram_bytes(self) -> int:
        """``torch.cuda.max_memory_allocated`` of the backend's device (0 on the CPU)."""
        if not self.device.startswith("cuda"):
            return 0
        import torch

        return int(torch.cuda.max_memory_allocated(self.device))


@contextlib.contextmanager
def _matmul_tf32(enabled: bool) -> Iterator[None]:
    """TF32 on or off for float32 matrix products and convolutions inside the block (PyTorch's global flags,
    restored on exit)."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _resolve_device(device: str) -> str:
    if importlib.util.find_spec("torch") is None:
        from ...errors import MissingDependency

        raise MissingDependency("the TripoSR backend needs PyTorch: pip install 'meshforge[triposr]'")
    return resolve_device(device)
