"""The Field protocol: what a reconstruction backend hands to the rest of the pipeline.

A field answers, at batches of points ``[N, 3]`` (float32, metres, canonical glTF frame: +Y up, the input
camera looking down −Z), a scalar *density* whose isosurface ``density == iso_level`` is the object's
surface (values **greater** than the level are inside — true for volume densities such as TripoSR's and
for "positive inside" signed distances alike), a base *colour* (sRGB-encoded, in [0, 1], stated once here
for every field), and optionally *metallic* and *roughness* in [0, 1].

The field is the one value used twice in the pipeline: by isosurface extraction and by texture baking.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Field(Protocol):
    """A 3D field in the canonical frame.

    Attributes:
        bbox_min: ``[3]`` float32, lower corner of the region holding the object (metres).
        bbox_max: ``[3]`` float32, upper corner.
        iso_level: the density value of the surface; inside is ``density > iso_level``.
    """

    bbox_min: np.ndarray
    bbox_max: np.ndarray
    iso_level: float

    def density(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` float32 points → ``[N]`` float32 density (greater is inside)."""
        ...

    def color(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` float32 points → ``[N, 3]`` float32 sRGB-encoded base colour in [0, 1]."""
        ...

    def material(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[N, 3]`` float32 points → (metallic ``[N]``, roughness ``[N]``), float32 in [0, 1]."""
        ...


@runtime_checkable
class DensityGrid(Protocol):
    """Optional hook of a :class:`Field`: its own fast evaluation of the whole extraction grid."""

    def density_grid(self, resolution: int) -> np.ndarray:
        """``[R, R, R]`` float32 densities at :func:`grid_axes` (``[i, j, k]`` ↔ ``(x, y, z)``); may be a
        ``torch.Tensor`` on the field's device (see :func:`sample_grid` on precision)."""
        ...


@runtime_checkable
class DensityGridTensor(Protocol):
    """Optional hook of a :class:`Field`: the extraction grid as a ``torch.Tensor`` left on its device, for
    the GPU marching-cubes engine."""

    def density_grid_tensor(self, resolution: int) -> Any:
        """``[R, R, R]`` tensor of densities at :func:`grid_axes`."""
        ...


@runtime_checkable
class SurfaceAttributes(Protocol):
    """Optional hook of a :class:`Field` that is a dense surface rather than a volume (``optimize``'s
    source): the baker projects low-poly points onto it instead of querying the field at them."""

    def bake_attributes(
        self, points: np.ndarray, normals: np.ndarray, low_face: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """``[N, 3]`` points and normals (and the low-poly face of each) → ``base_color`` ``[N, 4]`` sRGB,
        ``metallic`` ``[N]``, ``roughness`` ``[N]``, ``normal`` ``[N, 3]`` and, when known, ``occlusion``."""
        ...


@runtime_checkable
class DenseSurface(Protocol):
    """Optional hook of a :class:`Field` whose backend decodes its own dense mesh (TRELLIS.2's flexible dual
    grid): the pipeline takes it as the dense surface instead of extracting an isosurface of ``density``."""

    def dense_surface(self) -> Any:
        """The dense :class:`~meshforge.types.Mesh` in the canonical frame."""
        ...


@runtime_checkable
class Opacity(Protocol):
    """Optional hook of a :class:`Field` with a real opacity (glTF alpha): baked into the base colour's alpha
    channel, and ``alpha_mode`` (``"OPAQUE"``, ``"MASK"`` or ``"BLEND"``, glTF 2.0 §3.9.4) becomes the
    material's."""

    alpha_mode: str

    def alpha(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` float32 points → ``[N]`` float32 opacity in [0, 1] (1 is opaque)."""
        ...


@runtime_checkable
class PBRAttributes(Protocol):
    """Optional hook of a :class:`Field` whose channels come from one lookup (TRELLIS.2's sparse PBR voxels):
    the bake asks for all of them at once instead of calling ``color``, ``material`` and ``alpha`` (three
    lookups of the same points), and on a torch device without a round trip to the host."""

    def pbr(self, points: np.ndarray) -> dict[str, np.ndarray]:
        """``[N, 3]`` float32 canonical points → ``base_color`` ``[N, 3]``, ``metallic`` ``[N]``, ``roughness``
        ``[N]`` and, when the field has one, ``alpha`` ``[N]``: float32 in [0, 1], equal to what ``color``,
        ``material`` and ``alpha`` return."""
        ...

    def pbr_tensor(self, points: Any) -> dict[str, Any]:
        """:meth:`pbr` for a ``[N, 3]`` torch tensor: the same keys, float32 tensors on its device."""
        ...


def has_real_alpha(field: Any) -> bool:
    """Whether a field's opacity is real (an :class:`Opacity` field whose ``alpha_mode`` is not
    ``"OPAQUE"``): only then is it baked into the base colour's alpha."""
    return isinstance(field, Opacity) and field.alpha_mode != "OPAQUE"


def sample_pbr(
    field: Any, points: np.ndarray, alpha: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """A field's channels at ``[N, 3]`` float32 canonical points, the numpy way: one lookup for a
    :class:`PBRAttributes` field (its ``pbr``), else ``color``, ``material`` and (``alpha=True``) ``alpha``.

    Returns:
        ``(base colour [N, 3], metallic [N], roughness [N], opacity [N] float32 or None when not asked)``.
    """
    if isinstance(field, PBRAttributes):
        pbr = field.pbr(points)
        opacity = np.asarray(pbr["alpha"], dtype=np.float32) if alpha else None
        return pbr["base_color"], pbr["metallic"], pbr["roughness"], opacity
    color = field.color(points)
    metallic, roughness = field.material(points)
    opacity = np.asarray(field.alpha(points), dtype=np.float32) if alpha else None
    return color, metallic, roughness, opacity


@runtime_checkable
class PortableField(Protocol):
    """Optional hook of a backend's live :class:`Field`: its own form that needs no backend (for example
    TRELLIS.2's sparse PBR voxels), saved in ``.mfraw`` files instead of a sampled voxel grid."""

    def portable_field(self) -> Any:
        """A field that :mod:`meshforge.raw` can save (``VoxelField`` or ``SparseVoxelField``)."""
        ...


def grid_axes(field: Field, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sample coordinates of the extraction grid along x, y and z.

    Grid point ``[i, j, k]`` is at ``bbox_min + (bbox_max - bbox_min) * (i, j, k) / (resolution - 1)``.

    Returns:
        Three ``[resolution]`` float32 arrays (metres).
    """
    lo = np.asarray(field.bbox_min, dtype=np.float64)
    hi = np.asarray(field.bbox_max, dtype=np.float64)
    t = np.linspace(0.0, 1.0, resolution)
    return tuple((lo[a] + (hi[a] - lo[a]) * t).astype(np.float32) for a in range(3))


def sample_grid(field: Field, resolution: int, chunk_points: int = 1 << 20) -> np.ndarray:
    """Evaluate a field's density on the extraction grid.

    Uses the field's own ``density_grid(resolution)`` fast path when it has one, else evaluates ``density``
    in batches of ``chunk_points`` points. A fast path returns the generic path's values; on a GPU it may
    compute them in reduced precision (TripoSR's fp16 grid: relative error below 1e-2, which moves the
    isosurface by a small fraction of a voxel). A field may also offer ``density_grid_tensor(resolution)``,
    the same grid as a tensor left on its device, which :func:`meshforge.fields.isosurface.extract` meshes
    there with the ``torch``/``auto`` engines.

    Returns:
        ``[R, R, R]`` float32 densities, indexed ``[i, j, k]`` ↔ ``(x, y, z)`` as in :func:`grid_axes`.
    """
    if isinstance(field, DensityGrid):
        out = np.asarray(field.density_grid(resolution), dtype=np.float32)
        if out.shape != (resolution,) * 3:
            raise ValueError(f"density_grid returned {out.shape}, expected {(resolution,) * 3}")
        return out
    xs, ys, zs = grid_axes(field, resolution)
    out = np.empty((resolution,) * 3, dtype=np.float32)
    plane = resolution * resolution
    slabs = max(1, chunk_points // plane)
    yy, zz = np.meshgrid(ys, zs, indexing="ij")
    yz = np.stack([yy.ravel(), zz.ravel()], axis=1)
    for i0 in range(0, resolution, slabs):
        i1 = min(resolution, i0 + slabs)
        pts = np.empty(((i1 - i0) * plane, 3), dtype=np.float32)
        pts[:, 0] = np.repeat(xs[i0:i1], plane)
        pts[:, 1:] = np.tile(yz, (i1 - i0, 1))
        out[i0:i1] = field.density(pts).reshape(i1 - i0, resolution, resolution)
    return out
