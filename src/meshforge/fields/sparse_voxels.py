"""TRELLIS.2's PBR attribute field: decoded sparse voxels read back by trilinear interpolation.

TRELLIS.2's texture decoder gives, on the active voxels of a ``R³`` grid over the box ``[-0.5, 0.5]³``,
six attributes per voxel (the pipeline's ``pbr_attr_layout``): base colour RGB, metallic, roughness, alpha,
all in [0, 1] (:data:`PBR_CHANNELS`; the base colour is written to glTF's sRGB ``baseColorTexture`` as is,
so it is sRGB-encoded). The reference samples them (``MeshWithVoxel.query_attrs``, ``o_voxel.postprocess.
to_glb``) with FlexGEMM's sparse ``grid_sample_3d(mode="trilinear")``:

- a point ``p`` becomes the grid coordinate ``g = (p − origin) / voxel_size`` (float32, a true division as in
  ``to_glb``; ``MeshWithVoxel.query_attrs`` divides a CUDA tensor by a Python float, which CUDA computes as a
  product with the reciprocal — the same for TRELLIS.2's power-of-two resolutions); voxel ``c`` is centred at
  ``g = c + 0.5`` (so ``origin`` is the grid's minimum corner and ``voxel_size = 1 / R``);
- the eight voxels ``n = floor(g − 0.5) + {0, 1}³`` around it weigh ``Π_axes (1 − |g − n − 0.5|)``;
  voxels that are not stored (or outside the grid) weigh nothing and the weights of the present ones are
  divided by their sum (clamped below at 1e-12): trilinear interpolation over **existing voxels only**;
- where none of the eight is present the reference returns zeros. :class:`SparseVoxelField` returns the
  nearest stored voxel's value there instead (``fallback="nearest"``, the default: a texel just outside
  the decoded shell keeps a plausible colour), or the reference's zeros with ``fallback="zero"``.

:class:`SparseVoxelField` is also a :class:`meshforge.fields.base.Field` for the bake stage (``color``,
``material`` and ``alpha`` in the canonical glTF frame, mapped into the voxel frame by an affine
``transform``) and is stored in ``.mfraw`` files as the ``sparse_voxels`` attribute kind
(:meth:`SparseVoxelField.raw_members`). Its storage and its NumPy path need no torch; ``query`` also takes
torch tensors and stays on their device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, StageError

if TYPE_CHECKING:
    import torch

#: the channels of a TRELLIS.2 PBR voxel, in order (``pbr_attr_layout``: base_color 0:3, metallic 3,
#: roughness 4, alpha 5)
PBR_CHANNELS: tuple[str, ...] = ("red", "green", "blue", "metallic", "roughness", "alpha")
#: the affine map from meshforge's canonical glTF frame (+Y up) to TRELLIS.2's frame (+Z up): the inverse of
#: the axis swap ``(x, y, z) → (x, z, −y)`` that ``o_voxel.postprocess.to_glb`` applies on export
GLTF_TO_TRELLIS: np.ndarray = np.array(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
#: the ``kind`` of this field in an ``.mfraw`` manifest, and its members
RAW_KIND = "sparse_voxels"
RAW_COORDS = "sparse_voxel_coords.npy"
RAW_ATTRS = "sparse_voxel_attrs.npy"
FALLBACKS = ("nearest", "zero")
#: the corner offsets of the eight neighbours, in the reference's order (x fastest)
_CORNERS = np.array([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=np.int64)


def alpha_mode_of(alpha: np.ndarray, *, opaque_above: float = 0.95, min_fraction: float = 0.01) -> str:
    """The glTF ``alphaMode`` the voxels' opacity calls for.

    Args:
        alpha: ``[M]`` opacity of the voxels (clamped to [0, 1] here).
        opaque_above: opacity counted as opaque.
        min_fraction: the fraction of voxels below ``opaque_above`` that makes the alpha real.

    Returns:
        ``"OPAQUE"`` when fewer than ``min_fraction`` of the voxels are see-through; ``"MASK"`` when the
        see-through ones are nearly all clear (< 0.05) — a cut-out; else ``"BLEND"``.
    """
    a = np.clip(np.asarray(alpha, dtype=np.float32).ravel(), 0.0, 1.0)
    if a.size == 0:
        return "OPAQUE"
    see_through = a < opaque_above
    if see_through.mean() < min_fraction:
        return "OPAQUE"
    partial = (a[see_through] >= 0.05).mean()
    return "MASK" if partial < 0.1 else "BLEND"


class SparseVoxelField:
    """Attributes on sparse voxels, trilinearly interpolated over the stored voxels (see the module docstring).

    Args:
        coords: ``[M, 3]`` integer voxel indices (NumPy or torch), unique.
        attrs: ``[M, C]`` float attributes (TRELLIS.2: ``C = 6``, :data:`PBR_CHANNELS`, in [0, 1]); float16
            is kept as float16 (half the memory and file size), anything else becomes float32.
        origin: ``(3,)`` the grid's minimum corner in the voxel frame (TRELLIS.2: ``(-0.5, -0.5, -0.5)``).
        voxel_size: edge of a voxel in the voxel frame (TRELLIS.2: ``1 / R``).
        transform: ``[4, 4]`` affine from the canonical frame (where :meth:`color`, :meth:`material`,
            :meth:`alpha` are asked) to the voxel frame (where :meth:`query` is asked); identity when None.
            TRELLIS.2's meshes exported in glTF's frame need :data:`GLTF_TO_TRELLIS` (times any scale).
        fallback: ``"nearest"`` (default) or ``"zero"`` (the reference), for points with no stored voxel among
            their eight neighbours.
        chunk: points per batch in :meth:`query`.

    Attributes:
        bbox_min, bbox_max: ``[3]`` float32 corners of the stored voxels' box in the canonical frame.
        iso_level: 0 (attributes only; :meth:`density` is not available).

    Raises:
        InputError: no voxels, shapes that do not match, non-finite values, a non-positive voxel size, a
            singular transform or an unknown fallback.
    """

    iso_level = 0.0

    def __init__(
        self,
        coords: Any,
        attrs: Any,
        origin: Any,
        voxel_size: float,
        *,
        transform: Any = None,
        fallback: str = "nearest",
        chunk: int = 1 << 18,
    ) -> None:
        c = _to_numpy(coords)
        a = _to_numpy(attrs)
        if c.ndim != 2 or c.shape[1] != 3 or not np.issubdtype(c.dtype, np.integer):
            raise InputError(f"sparse voxels: coords must be [M, 3] integers, got {c.shape} {c.dtype}")
        if a.ndim != 2 or len(a) != len(c) or not np.issubdtype(a.dtype, np.floating):
            raise InputError(f"sparse voxels: attrs {a.shape} {a.dtype} do not match coords {c.shape}")
        if len(c) == 0:
            raise InputError("sparse voxels: no voxels")
        if fallback not in FALLBACKS:
            raise InputError(f"sparse voxels: fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
        self.coords = np.ascontiguousarray(c, dtype=np.int32)
        self.attrs = np.ascontiguousarray(a, dtype=np.float16 if a.dtype == np.float16 else np.float32)
        self.origin = np.asarray(_to_numpy(origin), dtype=np.float32).reshape(3)
        self.voxel_size = float(voxel_size)
        t = np.eye(4) if transform is None else np.asarray(_to_numpy(transform), dtype=np.float64)
        if t.shape != (4, 4):
            raise InputError(f"sparse voxels: transform must be [4, 4], got {t.shape}")
        finite = all(np.isfinite(x).all() for x in (self.attrs, self.origin, t)) and np.isfinite(self.voxel_size)
        if not finite or self.voxel_size <= 0:
            raise InputError("sparse voxels: non-finite values, or a voxel size that is not positive")
        if abs(np.linalg.det(t[:3, :3])) < 1e-12:
            raise InputError("sparse voxels: the transform is singular")
        self.transform = t
        self.fallback = fallback
        self.chunk = int(chunk)
        # the coordinate index: keys linearised over the stored voxels' box, sorted once
        c64 = self.coords.astype(np.int64)
        self._lo = c64.min(axis=0)
        self._extent = c64.max(axis=0) - self._lo + 1
        keys = self._keys_np(c64)
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]
        self._tree: Any = None
        self._torch: dict[Any, tuple[Any, ...]] = {}
        # the box in the canonical frame: the eight corners of the voxels' box mapped back
        lo = self.origin.astype(np.float64) + self.voxel_size * self._lo
        hi = self.origin.astype(np.float64) + self.voxel_size * (self._lo + self._extent)
        box = np.array([[(lo, hi)[i][0], (lo, hi)[j][1], (lo, hi)[k][2]] for i, j, k in _CORNERS.tolist()])
        corners = self.to_canonical(box)
        self.bbox_min = corners.min(axis=0).astype(np.float32)
        self.bbox_max = corners.max(axis=0).astype(np.float32)

    # -- frames ------------------------------------------------------------------------------------------
    def to_voxel_frame(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` canonical-frame points → ``[N, 3]`` float32 voxel-frame points (``transform``)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return (p @ self.transform[:3, :3].T + self.transform[:3, 3]).astype(np.float32)

    def to_canonical(self, points: Any) -> np.ndarray:
        """``[N, 3]`` voxel-frame points (e.g. the decoded mesh's vertices) → ``[N, 3]`` float32 canonical
        points (the inverse ``transform``)."""
        p = _to_numpy(points).astype(np.float64).reshape(-1, 3)
        inv = np.linalg.inv(self.transform)
        return (p @ inv[:3, :3].T + inv[:3, 3]).astype(np.float32)

    # -- lookups -----------------------------------------------------------------------------------------
    def _keys_np(self, ijk: np.ndarray) -> np.ndarray:
        rel = ijk - self._lo
        inside = ((rel >= 0) & (rel < self._extent)).all(axis=-1)
        key = (rel[..., 0] * self._extent[1] + rel[..., 1]) * self._extent[2] + rel[..., 2]
        return np.where(inside, key, -1)

    def _rows_np(self, ijk: np.ndarray) -> np.ndarray:
        key = self._keys_np(ijk)
        pos = np.minimum(np.searchsorted(self._sorted, key), len(self._sorted) - 1)
        return np.where((self._sorted[pos] == key) & (key >= 0), self._order[pos], -1)

    def query(self, points: Any) -> Any:
        """Attributes at points of the voxel frame, as the reference's sparse trilinear ``grid_sample_3d``.

        Args:
            points: ``[P, 3]`` float points in the voxel frame (NumPy array or torch tensor, any device).

        Returns:
            ``[P, C]`` float32, of the input's kind (a torch tensor stays on its device). Points with no stored
            voxel among their eight neighbours get the nearest stored voxel's value (``fallback="nearest"``,
            nearest voxel centre in grid units) or zeros (``"zero"``, the reference).

        Raises:
            InputError: ``points`` is not ``[P, 3]``.
        """
        if _is_torch(points):
            return self._query_torch(points)
        p = np.asarray(points)
        if p.ndim != 2 or p.shape[1] != 3:
            raise InputError(f"sparse voxels: points must be [P, 3], got {p.shape}")
        out = np.zeros((len(p), self.attrs.shape[1]), dtype=np.float32)
        for s in range(0, len(p), self.chunk):
            out[s : s + self.chunk] = self._chunk_np(p[s : s + self.chunk].astype(np.float32))
        return out

    def _chunk_np(self, p: np.ndarray) -> np.ndarray:
        g = (p - self.origin) / np.float32(self.voxel_size)
        base = np.floor(g - np.float32(0.5)).astype(np.int64)
        rows, weights = [], []
        total = np.zeros(len(p), dtype=np.float32)
        for corner in _CORNERS:
            n = base + corner
            row = self._rows_np(n)
            d = np.abs(g - n.astype(np.float32) - np.float32(0.5))
            w = (np.float32(1) - d[:, 0]) * (np.float32(1) - d[:, 1]) * (np.float32(1) - d[:, 2])
            w = np.where(row >= 0, w, np.float32(0))
            total = total + w
            rows.append(row)
            weights.append(w)
        scale = np.maximum(total, np.float32(1e-12))
        out = np.zeros((len(p), self.attrs.shape[1]), dtype=np.float32)
        for row, w in zip(rows, weights):
            out += (w / scale)[:, None] * self.attrs[np.maximum(row, 0)].astype(np.float32)
        empty = total < np.float32(1e-12)
        if self.fallback == "nearest" and empty.any():
            out[empty] = self.attrs[self._nearest(g[empty])].astype(np.float32)
        return out

    def _nearest(self, g: np.ndarray) -> np.ndarray:
        """Rows of the stored voxels whose centres are nearest to grid coordinates ``g`` (k-d tree)."""
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._tree = cKDTree(self.coords.astype(np.float64) + 0.5)
        _, rows = self._tree.query(np.asarray(g, dtype=np.float64))
        return np.asarray(rows, dtype=np.int64)

    def _device_tables(self, device: Any) -> tuple[Any, ...]:
        import torch

        key = str(device)
        if key not in self._torch:
            self._torch[key] = (
                torch.from_numpy(self._sorted).to(device),
                torch.from_numpy(self._order).to(device),
                torch.from_numpy(self._lo).to(device),
                torch.from_numpy(self._extent).to(device),
                torch.from_numpy(self.attrs.astype(np.float32)).to(device),
                torch.from_numpy(_CORNERS).to(device),
            )
        return self._torch[key]

    def _query_torch(self, points: torch.Tensor) -> torch.Tensor:
        import torch

        if points.ndim != 2 or points.shape[1] != 3:
            raise InputError(f"sparse voxels: points must be [P, 3], got {tuple(points.shape)}")
        sorted_keys, order, lo, extent, attrs, corners = self._device_tables(points.device)
        origin = torch.from_numpy(self.origin).to(points.device)
        size = torch.tensor(self.voxel_size, dtype=torch.float32, device=points.device)
        out = torch.zeros((points.shape[0], attrs.shape[1]), dtype=torch.float32, device=points.device)
        for s in range(0, points.shape[0], self.chunk):
            g = (points[s : s + self.chunk].to(torch.float32) - origin) / size
            base = torch.floor(g - 0.5).to(torch.int64)
            total = torch.zeros(g.shape[0], dtype=torch.float32, device=g.device)
            rows, weights = [], []
            for corner in corners:
                n = base + corner
                rel = n - lo
                inside = ((rel >= 0) & (rel < extent)).all(dim=1)
                key = torch.where(inside, (rel[:, 0] * extent[1] + rel[:, 1]) * extent[2] + rel[:, 2], -1)
                pos = torch.searchsorted(sorted_keys, key).clamp_max_(sorted_keys.numel() - 1)
                row = torch.where((sorted_keys[pos] == key) & inside, order[pos], -1)
                d = (g - n.to(torch.float32) - 0.5).abs()
                w = torch.where(row >= 0, (1 - d[:, 0]) * (1 - d[:, 1]) * (1 - d[:, 2]), 0.0)
                total = total + w
                rows.append(row)
                weights.append(w)
            scale = total.clamp_min(1e-12)
            acc = out[s : s + self.chunk]
            for row, w in zip(rows, weights):
                acc += (w / scale)[:, None] * attrs[row.clamp_min(0)]
            empty = total < 1e-12
            if self.fallback == "nearest" and bool(empty.any()):
                nearest = self._nearest(g[empty].detach().cpu().numpy())
                acc[empty] = attrs[torch.from_numpy(nearest).to(g.device)]
        return out

    # -- the Field protocol (canonical frame, NumPy) -----------------------------------------------------
    def density(self, points: np.ndarray) -> np.ndarray:
        """Not available: the voxels hold colours and materials; the surface travels beside them.

        Raises:
            StageError: always.
        """
        raise StageError("TRELLIS.2's PBR voxels hold colours and materials, not density")

    def _canonical_query(self, points: np.ndarray) -> np.ndarray:
        return np.clip(self.query(self.to_voxel_frame(points)), 0.0, 1.0)

    def color(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` canonical points → ``[N, 3]`` float32 sRGB-encoded base colour in [0, 1]."""
        return np.ascontiguousarray(self._canonical_query(points)[:, :3])

    def material(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[N, 3]`` canonical points → (metallic ``[N]``, roughness ``[N]``), float32 in [0, 1]."""
        v = self._canonical_query(points)
        return np.ascontiguousarray(v[:, 3]), np.ascontiguousarray(v[:, 4])

    def pbr(self, points: np.ndarray) -> dict[str, np.ndarray]:
        """Every channel at once (:class:`~meshforge.fields.base.PBRAttributes`): one lookup instead of the
        three of :meth:`color`, :meth:`material` and :meth:`alpha`, with the same values.

        Args:
            points: ``[N, 3]`` float canonical points.

        Returns:
            ``base_color`` ``[N, 3]``, ``metallic`` ``[N]``, ``roughness`` ``[N]`` and, with six channels,
            ``alpha`` ``[N]``: float32 in [0, 1].
        """
        return _channels(self._canonical_query(points), self.attrs.shape[1], np.ascontiguousarray)

    def pbr_tensor(self, points: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`pbr` on ``points``' torch device: the canonical → voxel map in float64, the lookup in float32
        (:meth:`query`), as on the host; the values agree with :meth:`pbr` to float32 rounding.

        Args:
            points: ``[N, 3]`` float tensor of canonical points, on any device.

        Returns:
            The keys of :meth:`pbr`, float32 tensors on ``points``' device.

        Raises:
            InputError: ``points`` is not ``[N, 3]``.
        """
        import torch

        if points.ndim != 2 or points.shape[1] != 3:
            raise InputError(f"sparse voxels: points must be [P, 3], got {tuple(points.shape)}")
        t = torch.as_tensor(self.transform, dtype=torch.float64, device=points.device)
        voxel = (points.to(torch.float64) @ t[:3, :3].T + t[:3, 3]).to(torch.float32)
        return _channels(self._query_torch(voxel).clamp_(0.0, 1.0), self.attrs.shape[1], lambda x: x.contiguous())

    @property
    def alpha_mode(self) -> str:
        """The glTF ``alphaMode`` the stored voxels' opacity calls for (:func:`alpha_mode_of`)."""
        if self.attrs.shape[1] < 6:
            return "OPAQUE"
        return alpha_mode_of(np.clip(np.asarray(self.attrs[:, 5], dtype=np.float32), 0.0, 1.0))

    def alpha(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` canonical points → ``[N]`` float32 opacity in [0, 1] (TRELLIS.2's alpha channel)."""
        return np.ascontiguousarray(self._canonical_query(points)[:, 5])

    # -- the .mfraw form -----------------------------------------------------------------------------------
    def raw_members(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The manifest's ``attributes`` entry and the ``.npy`` members of this field in an ``.mfraw`` file.

        Returns:
            ``(spec, arrays)``: ``spec`` = ``{"kind": "sparse_voxels", "origin": [3], "voxel_size": float,
            "transform": [4][4], "fallback": str, "channels": [C names]}``; ``arrays`` = :data:`RAW_COORDS`
            (``[M, 3]`` uint16, int32 past 65535) and :data:`RAW_ATTRS` (``[M, C]`` float16 or float32, as
            held: the round trip is exact).
        """
        small = int(self.coords.max()) < 1 << 16 and int(self.coords.min()) >= 0
        spec = {
            "kind": RAW_KIND,
            "origin": self.origin.tolist(),
            "voxel_size": self.voxel_size,
            "transform": self.transform.tolist(),
            "fallback": self.fallback,
            "channels": list(PBR_CHANNELS[: self.attrs.shape[1]]),
        }
        arrays = {RAW_COORDS: self.coords.astype(np.uint16 if small else np.int32), RAW_ATTRS: self.attrs}
        return spec, arrays

    @classmethod
    def from_raw_members(cls, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> SparseVoxelField:
        """Rebuild the field from :meth:`raw_members`' output (as read back from a file).

        Raises:
            InputError: an inconsistent entry (see the constructor).
            KeyError, TypeError, ValueError: a missing or malformed entry.
        """
        if spec.get("kind") != RAW_KIND:
            raise ValueError(f"not a {RAW_KIND} entry: {spec.get('kind')!r}")
        attrs = arrays[RAW_ATTRS]
        if list(spec["channels"]) != list(PBR_CHANNELS[: attrs.shape[1] if attrs.ndim == 2 else 0]):
            raise ValueError(f"unknown sparse voxel channels {spec['channels']}")
        return cls(
            arrays[RAW_COORDS].astype(np.int64),
            attrs,
            np.asarray(spec["origin"], dtype=np.float32),
            float(spec["voxel_size"]),
            transform=np.asarray(spec["transform"], dtype=np.float64),
            fallback=str(spec.get("fallback", "nearest")),
        )


def _channels(values: Any, channels: int, contiguous: Any) -> dict[str, Any]:
    """``[N, C]`` looked-up attributes (:data:`PBR_CHANNELS`) → the keys of :meth:`SparseVoxelField.pbr`."""
    out = {
        "base_color": contiguous(values[:, :3]),
        "metallic": contiguous(values[:, 3]),
        "roughness": contiguous(values[:, 4]),
    }
    if channels >= 6:
        out["alpha"] = contiguous(values[:, 5])
    return out


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _to_numpy(x: Any) -> np.ndarray:
    if _is_torch(x):
        t = x.detach().cpu()
        if t.dtype.is_floating_point and t.dtype.itemsize == 2 and str(t.dtype) != "torch.float16":
            t = t.float()  # bfloat16 has no NumPy form
        return np.asarray(t.numpy())
    return np.asarray(x)
