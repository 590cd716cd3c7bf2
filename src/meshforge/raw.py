"""The raw reconstruction: what reconstruction hands to finishing, and its file format (``.mfraw``).

::

    Image ─prepare─▶ Image ─backend─▶ Field ─extract─▶ Raw ─finish─▶ Asset

A :class:`Raw` holds the dense surface (the isosurface, before any mesh stage), the *attribute source* the
baker samples (a :class:`~meshforge.fields.base.Field`), the prepared picture and the provenance. It is
what :func:`meshforge.finish` turns into an asset, so an asset can be re-made with other budgets without
running the network again.

**Portable attributes.** A backend's live field may need the network (TripoSR's triplane decoder needs
torch and the weights). :func:`portable` replaces it by a :class:`VoxelField`: the field's base colour,
metallic and roughness sampled at the points of a grid over the field's bounding box (the extraction
grid, :func:`~meshforge.fields.base.grid_axes`, at least :data:`ATTRIBUTE_RESOLUTION` points per axis) in
a narrow band around the dense surface — the corners of every grid cell the surface passes through and of
their 26 neighbours — stored sparsely (a sparse voxel volume, as TRELLIS's structured latents are), and
read back by trilinear interpolation. Colour detail finer than the grid is lost: baking the chair's base
colour from the 256³ volume differs from baking the live field by 1.0/255 on average, from a 128³ one by
2.4/255 — hence the floor of 256 even when the surface was extracted on a coarser grid.

**File format** ``.mfraw``, version 1: a ZIP archive (deflate) of NumPy ``.npy`` members read with
``allow_pickle=False`` (no pickle anywhere) and one JSON manifest:

``manifest.json``
    ``{"format": "meshforge-raw", "version": 1, "meshforge": <version that wrote it>, "name": <asset
    name>, "provenance": {...}, "config": <the PipelineConfig that made it, as a dict>, "attributes":
    {"kind": "voxels", "bbox_min": [3], "bbox_max": [3], "resolution": R, "channels": ["red", "green",
    "blue", "metallic", "roughness"]}, "members": {<member>: {"shape": [...], "dtype": "<f4"}}}``
``surface_vertices.npy``
    ``[V, 3]`` float32 dense-surface positions, metres, canonical glTF frame (+Y up, camera on +Z).
``surface_faces.npy``
    ``[F, 3]`` int32 vertex indices, counter-clockwise seen from outside.
``voxel_coords.npy``
    ``[N, 3]`` uint16 grid indices ``(i, j, k)`` of the sampled grid points, sorted by ``(i·R + j)·R + k``.
``voxel_values.npy``
    ``[N, 5]`` float16 values at those points: sRGB-encoded base colour R, G, B in [0, 1], metallic and
    roughness in [0, 1].
``prepared.npy`` (optional)
    ``[S, S, 4]`` uint8 the prepared RGBA picture the backend saw (straight alpha = the object mask).

**Sparse PBR voxels** (TRELLIS.2): instead of ``voxel_coords.npy``/``voxel_values.npy``, a raw whose attribute
source is a :class:`~meshforge.fields.sparse_voxels.SparseVoxelField` (the decoder's voxels, read back
by trilinear interpolation over the stored voxels) has ``"attributes": {"kind": "sparse_voxels", "origin": [3],
"voxel_size": s, "transform": [4][4] (canonical → voxel frame), "fallback": "nearest" | "zero", "channels":
["red", "green", "blue", "metallic", "roughness", "alpha"]}`` and the members ``sparse_voxel_coords.npy``
(``[M, 3]`` uint16, or int32 past 65535, voxel indices) and ``sparse_voxel_attrs.npy`` (``[M, 6]`` float16 or
float32, as the field holds them: the round trip is exact). The version stays 1 (the ``voxels`` kind is
unchanged); a meshforge without this kind refuses such a file as inconsistent ("unknown attribute source").

A reader refuses a file whose ``format`` is not ``meshforge-raw``, whose ``version`` is newer than
:data:`RAW_VERSION` ("made by a newer meshforge"), or whose members are missing, truncated, fail their
CRC or disagree with the manifest, each with a one-line :class:`~meshforge.errors.InputError`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .errors import InputError, StageError
from .fields.base import Field, PortableField, SurfaceAttributes
from .fields.sparse_voxels import RAW_KIND as SPARSE_KIND
from .fields.sparse_voxels import SparseVoxelField
from .types import DeviceMesh, Image, Material, Mesh, host_mesh

#: the ``format`` value of an ``.mfraw`` manifest
RAW_FORMAT = "meshforge-raw"
#: the newest ``.mfraw`` version this meshforge writes and reads
RAW_VERSION = 1
#: the file suffix of a raw reconstruction
RAW_SUFFIX = ".mfraw"
#: the channels of :class:`VoxelField` values, in order
CHANNELS: tuple[str, ...] = ("red", "green", "blue", "metallic", "roughness")
#: the fewest grid points per axis :func:`portable` samples attributes on (see the module docstring)
ATTRIBUTE_RESOLUTION = 256
#: refuse raw files whose members would decompress to more than this many bytes (zip-bomb guard)
MAX_RAW_BYTES = 4 * 1024**3


@dataclass(frozen=True, eq=False)
class Raw:
    """A raw reconstruction: the dense surface plus what the baker samples, before any mesh stage.

    Attributes:
        surface: the dense surface (``[V, 3]`` float32 vertices in metres, faces wound counter-clockwise seen
            from outside), e.g. the extracted isosurface or the flattened source mesh: a host
            :class:`~meshforge.types.Mesh` (``[F, 3]`` int32 faces), or a :class:`~meshforge.types.DeviceMesh`
            (``[F, 3]`` int64 faces, tensors left on the device that extracted or decoded them: a CUDA grid's
            isosurface, TRELLIS.2's mesh). Code that needs numpy calls :func:`~meshforge.types.host_mesh`.
        attributes: the attribute source the bake samples: a point :class:`~meshforge.fields.base.Field`
            (a backend's live field, or its portable :class:`VoxelField`, or TRELLIS.2's
            :class:`~meshforge.fields.sparse_voxels.SparseVoxelField`), or a dense-surface field with
            ``bake_attributes`` (:class:`~meshforge.fields.surface.SurfaceField`, what ``optimize`` uses).
        prepared: the prepared ``[S, S, 4]`` picture the backend saw (None for ``optimize``).
        provenance: JSON-able facts: ``job``, ``version``, ``backend`` (its ``info()``), ``input_name``,
            ``input_sha256``,
            ``parameters`` (``resolution``, ``foreground_ratio``, ``background``, ``seed``), ``warnings`` (the
            reconstruction's, repeated in every report finished from it).
        name: the asset's name (the input's stem).
        material: the material template: alpha mode, cutoff, double-sidedness; :func:`meshforge.finish`
            sets the metallic and roughness factors from the bake.
        config: the configuration that made it, as a dict (``PipelineConfig.to_dict()``), empty if unknown.
    """

    surface: Mesh | DeviceMesh
    attributes: Field
    prepared: Image | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    name: str = "asset"
    material: Material = field(default_factory=Material)
    config: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> Raw:
        return dataclasses.replace(self, **changes)


class VoxelField:
    """A field's attributes sampled on a sparse set of extraction-grid points (see the module docstring).

    Lookups interpolate trilinearly between the 8 grid points around a query point; where some of them are
    not stored (the edge of the band) the weights of the stored ones are renormalised, and where none is
    the nearest stored point's value is used (k-d tree, built on first use).

    Args:
        bbox_min, bbox_max: ``[3]`` corners of the grid (metres), as the field's.
        resolution: grid points per axis ``R`` (point ``[i, j, k]`` at ``bbox_min + (bbox_max − bbox_min) ·
            (i, j, k) / (R − 1)``, :func:`~meshforge.fields.base.grid_axes`).
        coords: ``[N, 3]`` integer grid indices in ``[0, R)``.
        values: ``[N, 5]`` float values per :data:`CHANNELS` (stored as given; float16 in files).

    Attributes:
        iso_level: 0 (this field holds attributes only; :meth:`density` is not available).

    Raises:
        InputError: inconsistent shapes or indices outside the grid.
    """

    iso_level = 0.0

    def __init__(
        self, bbox_min: np.ndarray, bbox_max: np.ndarray, resolution: int, coords: np.ndarray, values: np.ndarray
    ) -> None:
        self.bbox_min = np.asarray(bbox_min, dtype=np.float32).reshape(3)
        self.bbox_max = np.asarray(bbox_max, dtype=np.float32).reshape(3)
        self.resolution = int(resolution)
        coords = np.asarray(coords)
        if coords.ndim != 2 or coords.shape[1] != 3 or values.shape != (len(coords), len(CHANNELS)):
            raise InputError(f"voxel volume: coords {coords.shape} and values {values.shape} do not match")
        if len(coords) == 0:
            raise InputError("voxel volume: no voxels")
        r = self.resolution
        if r < 2 or coords.min() < 0 or coords.max() >= r:
            raise InputError(f"voxel volume: indices outside the {r}³ grid")
        if not (np.isfinite(values).all() and np.isfinite(self.bbox_min).all() and np.isfinite(self.bbox_max).all()):
            raise InputError("voxel volume: non-finite values or bounds")
        if not (self.bbox_max > self.bbox_min).all():
            raise InputError("voxel volume: an empty bounding box")
        keys = self._keys(coords.astype(np.int64))
        order = np.argsort(keys, kind="stable")
        self.coords = np.ascontiguousarray(coords[order].astype(np.uint16))
        self.values = np.ascontiguousarray(values[order])
        self._sorted = keys[order]
        self._step = (self.bbox_max.astype(np.float64) - self.bbox_min) / (r - 1)
        self._tree: Any = None

    def _keys(self, ijk: np.ndarray) -> np.ndarray:
        r = self.resolution
        return (ijk[..., 0] * r + ijk[..., 1]) * r + ijk[..., 2]

    @classmethod
    def sample(cls, source: Field, surface: Mesh | DeviceMesh, resolution: int, *, chunk: int = 1 << 18) -> VoxelField:
        """Sample a field's attributes on the extraction-grid points around a dense surface.

        The band is the corners of every grid cell holding a vertex or a triangle centroid of ``surface``
        and of the cells around those (one cell on every side): about a voxel and a half on each side.

        Args:
            source: the live field (``color``, ``material``; ``bbox_min``/``bbox_max`` span the grid).
            surface: the dense surface extracted from it (a :class:`~meshforge.types.DeviceMesh` is copied to
                the host, :func:`~meshforge.types.host_mesh`).
            resolution: the sampling grid's points per axis (the extraction grid's, or finer).
            chunk: points per field query.

        Returns:
            A :class:`VoxelField` with float16 values.
        """
        r = int(resolution)
        surface = host_mesh(surface)
        lo = np.asarray(source.bbox_min, dtype=np.float64)
        step = (np.asarray(source.bbox_max, dtype=np.float64) - lo) / (r - 1)
        v = surface.vertices.astype(np.float64)
        pts = np.concatenate([v, v[surface.faces].mean(axis=1)])
        cells = np.clip(np.floor((pts - lo) / step).astype(np.int64), 0, r - 2)
        around = np.stack(np.meshgrid(*[np.arange(-1, 3)] * 3, indexing="ij"), -1).reshape(-1, 3)
        cells = np.unique(cells, axis=0)
        keys = []
        for s in range(0, len(cells), 1 << 14):  # corners of the cells ±1: offsets −1 … +2 per axis
            c = np.clip(cells[s : s + (1 << 14), None, :] + around[None], 0, r - 1)
            keys.append(np.unique((c[..., 0] * r + c[..., 1]) * r + c[..., 2]))
        flat = np.unique(np.concatenate(keys))
        coords = np.stack([flat // (r * r), (flat // r) % r, flat % r], axis=1)
        values = np.empty((len(coords), len(CHANNELS)), dtype=np.float16)
        for s in range(0, len(coords), chunk):
            p = (lo + coords[s : s + chunk] * step).astype(np.float32)
            metallic, roughness = source.material(p)
            values[s : s + chunk, :3] = np.clip(source.color(p), 0.0, 1.0)
            values[s : s + chunk, 3] = metallic
            values[s : s + chunk, 4] = roughness
        return cls(source.bbox_min, source.bbox_max, r, coords, values)

    def lookup(self, points: np.ndarray) -> np.ndarray:
        """Trilinear lookup of every channel.

        Args:
            points: ``[N, 3]`` points (metres, canonical frame).

        Returns:
            ``[N, 5]`` float32 values per :data:`CHANNELS`.
        """
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        r = self.resolution
        g = np.clip((p - self.bbox_min) / self._step, 0.0, r - 1.0)
        base = np.minimum(np.floor(g).astype(np.int64), r - 2)
        frac = g - base
        out = np.zeros((len(p), len(CHANNELS)), dtype=np.float64)
        weight = np.zeros(len(p))
        for corner in np.ndindex(2, 2, 2):
            c = np.asarray(corner)
            w = np.prod(np.where(c == 1, frac, 1.0 - frac), axis=1)
            key = self._keys(base + c)
            idx = np.minimum(np.searchsorted(self._sorted, key), len(self._sorted) - 1)
            hit = self._sorted[idx] == key
            w = np.where(hit, w, 0.0)
            out += w[:, None] * self.values[idx].astype(np.float64)
            weight += w
        ok = weight > 1e-9
        out[ok] /= weight[ok, None]
        if not ok.all():  # outside the band: the nearest stored grid point
            if self._tree is None:
                from scipy.spatial import cKDTree

                self._tree = cKDTree(self.coords.astype(np.float64))
            _, nearest = self._tree.query(g[~ok])
            out[~ok] = self.values[nearest]
        return out.astype(np.float32)

    # -- the Field protocol --------------------------------------------------------------------------
    def density(self, points: np.ndarray) -> np.ndarray:
        """Not available: the volume holds attributes only (the dense surface travels beside it).

        Raises:
            StageError: always.
        """
        raise StageError("a raw file's voxel volume holds colours and materials, not density")

    def color(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` float32 points → ``[N, 3]`` float32 sRGB-encoded base colour in [0, 1]."""
        return np.clip(self.lookup(points)[:, :3], 0.0, 1.0)

    def material(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[N, 3]`` float32 points → (metallic ``[N]``, roughness ``[N]``), float32 in [0, 1]."""
        v = np.clip(self.lookup(points)[:, 3:], 0.0, 1.0)
        return np.ascontiguousarray(v[:, 0]), np.ascontiguousarray(v[:, 1])


def portable(raw: Raw, resolution: int | None = None) -> Raw:
    """The raw with its attribute source replaced by a :class:`VoxelField` (no backend needed to bake).

    Args:
        raw: a raw whose ``attributes`` is a point field (a backend's live field).
        resolution: the sampling grid's points per axis (default: the extraction resolution in
            ``raw.provenance["parameters"]["resolution"]``, at least :data:`ATTRIBUTE_RESOLUTION`).

    Returns:
        The raw itself when it is already portable (a :class:`VoxelField` or a
        :class:`~meshforge.fields.sparse_voxels.SparseVoxelField`), else a copy with a :class:`VoxelField`.

    Raises:
        InputError: the attribute source is a dense-surface field (``optimize``'s), which has no voxel form.
    """
    if isinstance(raw.attributes, VoxelField | SparseVoxelField):
        return raw
    if isinstance(raw.attributes, PortableField):
        return raw.replace(attributes=raw.attributes.portable_field())
    if isinstance(raw.attributes, SurfaceAttributes):
        raise InputError("an optimize job's raw (a dense source mesh) cannot be saved: optimize the source again")
    extracted = int(raw.provenance.get("parameters", {}).get("resolution") or 0)
    res = int(resolution or max(extracted, ATTRIBUTE_RESOLUTION))
    return raw.replace(attributes=VoxelField.sample(raw.attributes, host_mesh(raw.surface), res))


# -- the .mfraw file -----------------------------------------------------------------------------------------


def dumps_raw(raw: Raw) -> bytes:
    """Encode a raw as ``.mfraw`` bytes (see the module docstring), sampling its field first if needed.

    Returns:
        The ZIP archive's bytes.

    Raises:
        InputError: see :func:`portable`.
    """
    raw = portable(raw)
    vox = raw.attributes
    surface = host_mesh(raw.surface)
    arrays: dict[str, np.ndarray] = {
        "surface_vertices.npy": surface.vertices.astype(np.float32),
        "surface_faces.npy": surface.faces.astype(np.int32),
    }
    attributes: dict[str, Any]
    if isinstance(vox, SparseVoxelField):
        attributes, members = vox.raw_members()
        arrays.update(members)
    else:
        assert isinstance(vox, VoxelField)
        arrays["voxel_coords.npy"] = vox.coords.astype(np.uint16)
        arrays["voxel_values.npy"] = vox.values.astype(np.float16)
        attributes = {
            "kind": "voxels",
            "bbox_min": vox.bbox_min.tolist(),
            "bbox_max": vox.bbox_max.tolist(),
            "resolution": vox.resolution,
            "channels": list(CHANNELS),
        }
    if raw.prepared is not None:
        arrays["prepared.npy"] = raw.prepared.rgba
    manifest = {
        "format": RAW_FORMAT,
        "version": RAW_VERSION,
        "meshforge": __version__,
        "name": raw.name,
        "provenance": raw.provenance,
        "config": raw.config,
        "material": dataclasses.asdict(raw.material),
        "attributes": attributes,
        "members": {name: {"shape": list(a.shape), "dtype": a.dtype.str} for name, a in arrays.items()},
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=2, default=str))
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.save(member, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(name, member.getvalue())
    return buf.getvalue()


def loads_raw(data: bytes, label: str = "raw file") -> Raw:
    """Decode ``.mfraw`` bytes into a :class:`Raw` whose attributes are a :class:`VoxelField` (or the
    :class:`~meshforge.fields.sparse_voxels.SparseVoxelField` it was saved with).

    Args:
        data: the file's bytes.
        label: how messages name the file (e.g. its name).

    Raises:
        InputError: not a raw file, a newer format version, or truncated/corrupt members (one line, naming
            ``label`` and what to do).
    """
    if not data.startswith(b"PK\x03\x04"):
        raise InputError(f"{label}: not a meshforge raw file (.mfraw: a zip archive made by generate --save-raw)")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError):
        raise InputError(
            f"{label}: the raw file is truncated or corrupt: make it again with generate --save-raw"
        ) from None
    with zf:
        total = sum(i.file_size for i in zf.infolist())
        if total > MAX_RAW_BYTES:
            limit = MAX_RAW_BYTES / 2**30
            raise InputError(f"{label}: the raw file would expand to {total / 2**30:.1f} GiB (limit {limit:.0f} GiB)")
        manifest = _manifest(zf, label)
        members = manifest.get("members")
        if not isinstance(members, dict):
            raise InputError(
                f"{label}: the raw file's manifest lists no members: make it again with generate --save-raw"
            )
        arrays = {name: _array(zf, name, spec, label) for name, spec in members.items()}
    try:
        surface = Mesh(vertices=arrays["surface_vertices.npy"], faces=arrays["surface_faces.npy"])
        att = manifest["attributes"]
        vox: Field
        if att.get("kind") == SPARSE_KIND:
            vox = SparseVoxelField.from_raw_members(att, arrays)
        elif att.get("kind") != "voxels" or list(att.get("channels", [])) != list(CHANNELS):
            raise ValueError(f"unknown attribute source {att.get('kind')!r}")
        else:
            vox = VoxelField(
                np.asarray(att["bbox_min"], np.float32),
                np.asarray(att["bbox_max"], np.float32),
                int(att["resolution"]),
                arrays["voxel_coords.npy"],
                arrays["voxel_values.npy"],
            )
        if surface.n_faces and (surface.faces.min() < 0 or surface.faces.max() >= surface.n_vertices):
            raise ValueError("face indices outside the vertex array")
        if not np.isfinite(surface.vertices).all():
            raise ValueError("non-finite vertex positions")
        prepared = None
        if "prepared.npy" in arrays:
            prepared = Image(rgba=arrays["prepared.npy"], name=str(manifest.get("name", "asset")))
        material = _material(manifest.get("material", {}))
    except (KeyError, TypeError, ValueError) as exc:
        text = " ".join(str(exc).split())
        raise InputError(
            f"{label}: the raw file is inconsistent ({text}): make it again with generate --save-raw"
        ) from None
    return Raw(
        surface=surface,
        attributes=vox,
        prepared=prepared,
        provenance=dict(manifest.get("provenance") or {}),
        name=str(manifest.get("name", "asset")),
        material=material,
        config=dict(manifest.get("config") or {}),
    )


def _material(data: Any) -> Material:
    """The manifest's material template (JSON has lists where :class:`Material` has tuples)."""
    values = dict(data)
    if "base_color_factor" in values:
        factor = tuple(float(x) for x in values["base_color_factor"])
        if len(factor) != 4:
            raise ValueError("base_color_factor needs 4 values")
        values["base_color_factor"] = factor
    return Material(**values)


def _manifest(zf: zipfile.ZipFile, label: str) -> dict[str, Any]:
    try:
        text = zf.read("manifest.json")
    except KeyError:
        raise InputError(f"{label}: not a meshforge raw file (the zip archive has no manifest.json)") from None
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError):
        raise InputError(
            f"{label}: the raw file is truncated or corrupt: make it again with generate --save-raw"
        ) from None
    try:
        manifest = json.loads(text)
    except ValueError:
        raise InputError(f"{label}: not a meshforge raw file (its manifest.json is not JSON)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != RAW_FORMAT:
        raise InputError(f"{label}: not a meshforge raw file (manifest format is not {RAW_FORMAT!r})")
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(f"{label}: the raw file has no valid format version ({version!r})")
    if version > RAW_VERSION:
        raise InputError(f"{label}: made by a newer meshforge (format {version} > {RAW_VERSION}): upgrade meshforge")
    return manifest


def _array(zf: zipfile.ZipFile, name: str, spec: Any, label: str) -> np.ndarray:
    """One ``.npy`` member, checked against the manifest's shape and dtype."""
    try:
        arr = np.load(io.BytesIO(zf.read(name)), allow_pickle=False)
        ok = (
            isinstance(spec, dict)
            and list(arr.shape) == list(spec.get("shape", []))
            and arr.dtype.str == spec.get("dtype")
        )
    except KeyError:
        raise InputError(
            f"{label}: the raw file is missing its member {name}: make it again with generate --save-raw"
        ) from None
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError):
        raise InputError(
            f"{label}: the raw file is truncated or corrupt (member {name}): make it again with generate --save-raw"
        ) from None
    if not ok:
        raise InputError(
            f"{label}: the raw file's member {name} does not match its manifest: make it again with generate --save-raw"
        )
    return arr


def save_raw(raw: Raw, path: str | os.PathLike[str]) -> None:
    """Write a raw to ``path`` atomically (:func:`meshforge.io.files.write_atomic`); see :func:`dumps_raw`.

    Raises:
        InputError: see :func:`portable`.
        OSError: the folder is not writable.
    """
    from .io.files import write_atomic

    write_atomic(Path(path), dumps_raw(raw))


def load_raw(path: str | os.PathLike[str]) -> Raw:
    """Read a ``.mfraw`` file; see :func:`loads_raw`.

    Raises:
        InputError: the file cannot be read, or is not a usable raw file (the message names it).
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"{p}: cannot read the raw file ({exc.strerror or exc})") from None
    return loads_raw(data, str(p))
