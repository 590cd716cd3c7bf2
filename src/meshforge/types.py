"""The values that flow between pipeline stages.

All are frozen dataclasses holding numpy arrays. Conventions, stated once for the whole package:

* **Frame.** glTF's canonical frame: +Y up, right-handed, units of metres, counter-clockwise front
  faces (outward normals), the input camera looking down −Z (the object's front faces +Z).
* **Colour.** Image pixels, field colours, vertex colours and base-colour texels are *sRGB-encoded*
  values (not linear). Exporters convert where a format wants linear values (glTF ``COLOR_0``).
* **Alpha.** Straight (not premultiplied).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Image:
    """An RGBA picture.

    Attributes:
        rgba: ``[H, W, 4]`` uint8, sRGB colour with straight alpha. For a picture without a meaningful
            alpha channel the alpha is 255 everywhere until background removal writes a mask into it.
        name: a display name (usually the file stem), used in messages.
        sha256: hex digest of the encoded input bytes (provenance); empty when made in memory.
        has_alpha: True when the source carried an alpha channel that is meaningful (not all 255).
        meta: free-form facts about decoding and preprocessing (source mode, EXIF rotation, crop box).
    """

    rgba: np.ndarray
    name: str = "image"
    sha256: str = ""
    has_alpha: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        a = self.rgba
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 4:
            raise ValueError(f"Image.rgba must be [H, W, 4] uint8, got {a.shape} {a.dtype}")

    @property
    def width(self) -> int:
        return int(self.rgba.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgba.shape[0])

    @property
    def alpha(self) -> np.ndarray:
        """``[H, W]`` float32 alpha in [0, 1]."""
        return self.rgba[..., 3].astype(np.float32) / 255.0

    def replace(self, **changes: Any) -> Image:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, eq=False)
class Mesh:
    """A triangle mesh in the canonical frame.

    Attributes:
        vertices: ``[V, 3]`` float32 positions in metres.
        faces: ``[F, 3]`` int32 vertex indices, counter-clockwise seen from outside.
        normals: optional ``[V, 3]`` float32 unit vertex normals.
        uv: optional ``[V, 2]`` float32 texture coordinates, glTF convention (origin at the top-left
            of the image, v pointing down), in [0, 1].
        colors: optional ``[V, 4]`` float32 sRGB-encoded RGBA vertex colours in [0, 1].
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray | None = None
    uv: np.ndarray | None = None
    colors: np.ndarray | None = None

    def __post_init__(self) -> None:
        v, f = self.vertices, self.faces
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"Mesh.vertices must be [V, 3], got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"Mesh.faces must be [F, 3], got {f.shape}")
        object.__setattr__(self, "vertices", np.ascontiguousarray(v, dtype=np.float32))
        object.__setattr__(self, "faces", np.ascontiguousarray(f, dtype=np.int32))
        for name, width in (("normals", 3), ("uv", 2), ("colors", 4)):
            arr = getattr(self, name)
            if arr is None:
                continue
            if arr.shape != (len(v), width):
                raise ValueError(f"Mesh.{name} must be [{len(v)}, {width}], got {arr.shape}")
            object.__setattr__(self, name, np.ascontiguousarray(arr, dtype=np.float32))

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    def replace(self, **changes: Any) -> Mesh:
        return dataclasses.replace(self, **changes)


class DeviceMesh:
    """A dense surface left in ``torch`` tensors on the device that made it (a CUDA GPU, or the CPU): what
    extraction on a CUDA grid or a backend that decodes its mesh on the GPU (TRELLIS.2) hands to the
    finishing stages, so a surface of millions of faces is not copied to the host and back.

    The host copy (:meth:`to_mesh`) is made only where numpy is needed — saving a ``.mfraw``, the CPU
    finishing engine, sampling a field into a voxel volume — through :func:`host_mesh`, once (it is kept).

    Args:
        vertices: ``[V, 3]`` float tensor, metres, canonical frame (kept as float32).
        faces: ``[F, 3]`` integer tensor on the same device (kept as int64), counter-clockwise seen from
            outside.

    Raises:
        ValueError: wrong shapes, or vertices and faces on different devices.
    """

    def __init__(self, vertices: Any, faces: Any) -> None:
        import torch

        if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
            shapes = f"{tuple(vertices.shape)} and {tuple(faces.shape)}"
            raise ValueError(f"DeviceMesh needs [V, 3] vertices and [F, 3] faces, got {shapes}")
        if vertices.device != faces.device:
            raise ValueError(f"DeviceMesh: vertices on {vertices.device} but faces on {faces.device}")
        self.vertices = vertices.detach().to(torch.float32)
        self.faces = faces.detach().to(torch.int64)
        self._host: Mesh | None = None

    @property
    def device(self) -> Any:
        """The ``torch.device`` holding the tensors."""
        return self.vertices.device

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    def to_mesh(self) -> Mesh:
        """The host :class:`Mesh` (float32 vertices, int32 faces), copied once (through pinned buffers from a
        CUDA device, :func:`to_host`) and kept."""
        if self._host is None:
            import torch

            v, f = to_host(self.vertices, self.faces.to(torch.int32))  # int32 on the device: half the bytes
            self._host = Mesh(vertices=v, faces=f)
        return self._host


def to_host(*tensors: Any) -> tuple[np.ndarray, ...]:
    """Copy torch tensors to numpy arrays; from a CUDA device through pinned (page-locked) buffers, which move
    at several times the speed of pageable memory (the buffers come from PyTorch's caching host allocator).

    Args:
        tensors: tensors on one device.

    Returns:
        One array per tensor, same shapes and dtypes.
    """
    if not tensors or not tensors[0].is_cuda:
        return tuple(t.detach().cpu().numpy() for t in tensors)
    import torch

    host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
    for h, t in zip(host, tensors, strict=True):
        h.copy_(t.detach(), non_blocking=True)
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return tuple(h.numpy() for h in host)


def host_mesh(surface: Mesh | DeviceMesh) -> Mesh:
    """The surface as a host :class:`Mesh`: itself, or a :class:`DeviceMesh`'s :meth:`~DeviceMesh.to_mesh`
    (the one place a device-resident dense surface is copied to the host)."""
    return surface.to_mesh() if isinstance(surface, DeviceMesh) else surface


@dataclass(frozen=True, eq=False)
class Textures:
    """Baked PBR texture maps (glTF 2.0 metallic-roughness model).

    Attributes:
        base_color: ``[S, S, 4]`` uint8, sRGB-encoded RGBA base colour.
        metallic_roughness: ``[S, S, 3]`` uint8, linear; roughness in G, metallic in B (glTF 2.0
            §3.9.2), R unused (0).
        normal: optional ``[S, S, 3]`` uint8 tangent-space normal map (glTF convention, +Y up).
        occlusion: optional ``[S, S]`` uint8 ambient occlusion (R channel when exported).
    """

    base_color: np.ndarray
    metallic_roughness: np.ndarray
    normal: np.ndarray | None = None
    occlusion: np.ndarray | None = None

    def sizes(self) -> dict[str, list[int]]:
        """Texture sizes as ``{map name: [width, height]}``, for reports."""
        out: dict[str, list[int]] = {}
        for name in ("base_color", "metallic_roughness", "normal", "occlusion"):
            arr = getattr(self, name)
            if arr is not None:
                out[name] = [int(arr.shape[1]), int(arr.shape[0])]
        return out


@dataclass(frozen=True)
class Material:
    """One glTF PBR metallic-roughness material.

    Factors multiply the textures when there are textures, and stand alone when there are none.
    ``alpha_mode`` is ``"OPAQUE"`` unless the data has real transparency.
    """

    name: str = "material"
    base_color_factor: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    metallic_factor: float = 1.0
    roughness_factor: float = 1.0
    alpha_mode: str = "OPAQUE"
    alpha_cutoff: float = 0.5
    double_sided: bool = False


@dataclass(frozen=True, eq=False)
class Asset:
    """A game-ready asset: one mesh, one material, optional textures, and provenance.

    ``textures`` is None for a vertex-colour asset (then ``mesh.colors`` is set).
    ``extras`` is written into the glTF asset's ``extras`` (provenance: version, backend, parameters,
    input sha256).
    """

    mesh: Mesh
    material: Material = field(default_factory=Material)
    textures: Textures | None = None
    name: str = "asset"
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageRecord:
    """Timing, memory and counts for one pipeline stage."""

    name: str
    seconds: float
    peak_rss_mb: float
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    """What happened during one run: per-stage records, warnings, textures and the configuration."""

    stages: list[StageRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    textures: dict[str, list[int]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    @property
    def total_seconds(self) -> float:
        return float(sum(s.seconds for s in self.stages))

    @property
    def peak_rss_mb(self) -> float:
        return max((s.peak_rss_mb for s in self.stages), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_seconds": round(self.total_seconds, 4),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "stages": [
                {
                    "name": s.name,
                    "seconds": round(s.seconds, 4),
                    "peak_rss_mb": round(s.peak_rss_mb, 1),
                    **({"counts": s.counts} if s.counts else {}),
                }
                for s in self.stages
            ],
            "warnings": list(self.warnings),
            "textures": dict(self.textures),
            "info": dict(self.info),
            "config": dict(self.config),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str)


@dataclass(frozen=True)
class Camera:
    """The camera a backend assumes for its input picture, in the canonical frame.

    The camera sits on the +Z axis looking down −Z, +Y up in the picture.

    Attributes:
        kind: ``"orthographic"`` or ``"perspective"``.
        extent: orthographic only: width (= height) of the square view in metres, centred on the origin.
        fov_deg: perspective only: vertical field of view in degrees.
        distance: perspective only: distance of the camera from the origin in metres.
    """

    kind: str = "orthographic"
    extent: float = 1.0
    fov_deg: float = 40.0
    distance: float = 1.9
