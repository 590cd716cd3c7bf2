"""Loading dense source meshes (GLB/glTF, OBJ, PLY, STL) for the ``optimize`` job and for evaluation.

A file becomes a :class:`~.scene.SourceScene`: a flat list of :class:`~.scene.SourcePart` objects, one per
triangle primitive and scene-graph instance, in world space (node transforms applied), each with its own
:class:`~meshforge.types.Material` and texture maps. Everything after parsing (transforms, winding,
colour spaces, texture sampling, tangent frames) is our code.

This module is the entry point (:func:`load_mesh`: reading the file, telling its format, checking the result);
the data model is in :mod:`.scene`, the glTF reader in :mod:`.gltf_reader` (on :mod:`.gltf_document`'s
container and accessors) and OBJ/PLY/STL in :mod:`.trimesh_formats`.

Parsing:

* **GLB / glTF** are read by our own code: the GLB container (glTF 2.0 §4.4), the JSON, buffers (the BIN
  chunk, ``data:`` URIs, or files beside a ``.gltf``), accessors (§3.6.2: byte strides, normalized
  integers, sparse accessors), the node hierarchy (§3.5) and materials (§3.9), images decoded by Pillow.
  trimesh's glTF loader was checked against the shared assets and loses things this job needs: it
  quantises ``baseColorFactor`` to 8 bits (the cake's ``0.258823544`` becomes ``66/255``), drops
  ``TANGENT``, the normal-texture ``scale``, occlusion ``strength``, sampler wrap modes, ``texCoord``
  sets, ``KHR_texture_transform`` and ``KHR_materials_unlit``, does not de-normalise normalized integer
  accessors (``COLOR_0`` as ``UNSIGNED_BYTE``, ``KHR_mesh_quantization``) and gives no mapping from its
  geometries back to glTF primitives and material indices — so the JSON is the source of truth here.
* **OBJ (+MTL, textures), PLY, STL** are parsed by trimesh (``process=False``, so vertices and faces stay
  as in the file); OBJ texture coordinates (v up) are converted to glTF's (v down).

Conventions of the result (those of :mod:`meshforge.types`): positions in the file's units (metres for
glTF), counter-clockwise front faces, glTF UVs (origin top-left, v down), vertex colours sRGB-encoded.
Material factors are stored as in glTF: ``base_color_factor`` is *linear* RGBA.

Materials where the file has none follow each format's convention: a glTF primitive without a material
gets glTF's default material (glTF 2.0 §3.9.6: white, metallic 1, roughness 1), with a warning since it
renders as bare metal; OBJ, PLY and STL have no metalness, so their surfaces are dielectric (metallic 0)
with roughness :data:`~.trimesh_formats.DEFAULT_ROUGHNESS`, unless an MTL gives ``Pm``/``Pr`` or ``Ns`` (see
:mod:`.trimesh_formats`).
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, one_line
from .gltf_reader import GltfReader
from .scene import SourcePart, SourceScene, add_warning
from .trimesh_formats import load_with_trimesh

__all__ = ["DEFAULT_MAX_BYTES", "SUPPORTED_FORMATS", "Z_UP_TO_Y_UP", "load_mesh"]

#: default limit on the size of a mesh file (and of each external resource), in bytes: 512 MiB
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
#: formats :func:`load_mesh` reads (the file extension, or the ``fmt`` argument)
SUPPORTED_FORMATS: tuple[str, ...] = ("glb", "gltf", "obj", "ply", "stl")
#: rotation from a Z-up frame (scans, CAD, Blender: +Z up, front facing −Y) to glTF's +Y up (front facing
#: +Z): −90° about X, (x, y, z) → (x, z, −y)
Z_UP_TO_Y_UP = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1.0]])
_PASS_THROUGH = (MemoryError, KeyboardInterrupt, SystemExit)


def load_mesh(
    source: str | os.PathLike[str] | bytes,
    *,
    fmt: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    name: str | None = None,
) -> SourceScene:
    """Load a mesh file into world-space parts with materials and textures.

    Formats: ``.glb`` and ``.gltf`` (external buffers and images are read from the ``.gltf``'s folder,
    never outside it; ``data:`` URIs are decoded), ``.obj`` (+ ``.mtl`` and its textures beside it), ``.ply``
    (vertex or face colours, texture coordinates), ``.stl`` (identical positions are welded so the mesh is
    connected). See the module docstring for what is read by whom.

    glTF specifics: the default scene (``scene``, else the first; without scenes, every root node) is
    flattened: every node instance of a mesh gives one part per triangle primitive, transformed by the
    node's world matrix (§3.5.3: ``T·R·S`` or ``matrix``); a transform with negative determinant flips the
    face winding; normals are transformed by the inverse transpose, tangents by the matrix (``w`` flipped
    with the winding). Triangle strips and fans become triangles; points and lines are skipped with a
    warning. A skinned mesh is loaded in its rest pose, i.e. the vertices as stored (the skin's bind pose;
    glTF §3.7.3 says the skinned node's own transform is ignored), and skinned or animated files get the
    warning :data:`~.gltf_reader.SKIN_WARNING`; morph targets are ignored with a warning. Unknown required extensions
    give a warning; geometry compression (Draco, meshopt) is refused.

    Args:
        source: a path, or the file's bytes (then ``fmt`` may be needed; GLB, glTF JSON, PLY and STL are
            recognised from their content; a ``.gltf`` or ``.obj`` given as bytes cannot reach external files).
        fmt: the format (``"glb"``, ``"gltf"``, ``"obj"``, ``"ply"``, ``"stl"``), overriding the extension.
        max_bytes: limit on the file's size and on each external resource (default 512 MiB).
        name: display name (default: the file stem, or ``"mesh"`` for bytes).

    Returns:
        A :class:`~.scene.SourceScene`; ``sha256`` is that of the main file's bytes.

    Raises:
        InputError: one line starting with the file's name: missing file, not a regular file, unknown or
            unsupported format, empty or larger than ``max_bytes``, not a mesh / corrupt / truncated file
            (bad GLB header or chunk lengths, invalid JSON, accessors or indices out of range, buffers shorter
            than declared), external resources that are missing or outside the file's folder, compressed
            geometry, no triangles, NaN or infinite positions.
    """
    data, label, stem, path = _read_source(source, max_bytes, name)
    kind = _resolve_format(fmt, path, data, label)
    digest = hashlib.sha256(data).hexdigest()
    meta: dict[str, Any] = {"format": kind, "source": str(path) if path is not None else "<bytes>", "bytes": len(data)}
    notes: list[str] = []
    try:
        if kind in ("glb", "gltf"):
            parts = GltfReader(data, kind, label, path, max_bytes, notes, meta).load()
        else:
            parts = load_with_trimesh(data, kind, label, path, notes, meta)
    except (InputError, *_PASS_THROUGH):
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, struct.error) as exc:
        # Malformed documents reach places no explicit check covers (e.g. a string where a number belongs).
        raise InputError(f"{label}: corrupt {kind.upper()} file ({type(exc).__name__}: {one_line(exc)})") from None
    _check_parts(parts, label)
    scene = SourceScene(parts=parts, name=name if name is not None else stem, sha256=digest, warnings=notes, meta=meta)
    diag = scene.diagonal()
    meta["diagonal"] = diag
    if kind in ("glb", "gltf") and diag > 100.0:
        add_warning(
            notes, f"the model is {diag:.3g} units across; glTF units are metres, so the file may use centimetres"
        )
    return scene


def _read_source(
    source: str | os.PathLike[str] | bytes, max_bytes: int, name: str | None
) -> tuple[bytes, str, str, Path | None]:
    """Return ``(data, label for messages, default name, path or None)``."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        label = name or "mesh"
        if len(data) > max_bytes:
            raise InputError(f"{label}: {len(data)} bytes is larger than the limit of {max_bytes} bytes (max_bytes)")
        if not data:
            raise InputError(f"{label}: empty data, not a mesh")
        return data, label, "mesh", None
    try:
        path = Path(os.fspath(source))
    except TypeError:
        raise InputError(f"cannot load a mesh from a {type(source).__name__}; give a path or bytes") from None
    label = str(path)
    try:
        if not path.exists():
            raise InputError(f"{label}: no such file")
        if not path.is_file():
            raise InputError(f"{label}: not a file ({'a directory' if path.is_dir() else 'not a regular file'})")
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(f"{label}: file is {size} bytes, larger than the limit of {max_bytes} bytes (max_bytes)")
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{label}: cannot read the file ({one_line(exc)})") from None
    if not data:
        raise InputError(f"{label}: empty file, not a mesh")
    return data, label, path.stem, path


def _resolve_format(fmt: str | None, path: Path | None, data: bytes, label: str) -> str:
    supported = ", ".join("." + f for f in SUPPORTED_FORMATS)
    if fmt is not None:
        kind = fmt.lower().lstrip(".")
        if kind not in SUPPORTED_FORMATS:
            raise InputError(f"{label}: unsupported mesh format {fmt!r} (supported: {supported})")
        return kind
    if path is not None:
        kind = path.suffix.lower().lstrip(".")
        if kind not in SUPPORTED_FORMATS:
            shown = path.suffix or "(none)"
            raise InputError(f"{label}: unsupported mesh file extension {shown} (supported: {supported})")
        return kind
    # Bytes: recognise by content.
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    if data[:4] == b"glTF":
        return "glb"
    if head.startswith(b"{"):
        return "gltf"
    if head[:3] == b"ply" and head[3:4] in (b"\n", b"\r"):
        return "ply"
    if len(data) >= 84 and 84 + 50 * struct.unpack_from("<I", data, 80)[0] == len(data):
        return "stl"
    if head[:5].lower() == b"solid":
        return "stl"
    if re.search(rb"(?m)^\s*(v|vt|vn|f)\s", data[:65536]):
        return "obj"
    raise InputError(f"{label}: cannot tell the mesh format from the content; pass fmt= (one of {supported})")


def _check_parts(parts: list[SourcePart], label: str) -> None:
    if not parts or sum(p.mesh.n_faces for p in parts) == 0:
        raise InputError(f"{label}: no triangles (the file has no triangle faces)")
    for part in parts:
        if not np.all(np.isfinite(part.mesh.vertices)):
            raise InputError(f"{label}: vertex positions contain NaN or infinite values (part {part.name!r})")
        for attr in ("normals", "uv", "colors"):
            arr = getattr(part.mesh, attr)
            if arr is not None and not np.all(np.isfinite(arr)):
                raise InputError(f"{label}: {attr} contain NaN or infinite values (part {part.name!r})")
