"""Binary glTF 2.0 (GLB) writer: numpy + json, no third-party glTF library.

Spec: Khronos glTF 2.0 (https://registry.khronos.org/glTF/specs/2.0/glTF-2.0.html). The sections
referred to below are that document's: §3.6 buffers/bufferViews/accessors, §3.7 geometry, §3.8 textures,
images, samplers, §3.9 materials, §4.4 the GLB container.

The output has one scene, one node (named after the asset), one mesh with one triangle primitive, and
one PBR metallic-roughness material; all data (geometry and PNG images) is in the GLB's BIN chunk. It is
meant to pass the Khronos glTF validator with no errors and no warnings.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from meshforge._version import __version__
from meshforge.errors import InputError
from meshforge.export._common import check_asset, unit_normals
from meshforge.export._png import submit_pngs
from meshforge.geometry.color import srgb_to_linear
from meshforge.geometry.normals import vertex_normals
from meshforge.geometry.tangents import asset_tangents
from meshforge.gltf import (
    ARRAY_BUFFER,
    CHUNK_BIN,
    CHUNK_JSON,
    CLAMP_TO_EDGE,
    ELEMENT_ARRAY_BUFFER,
    FLOAT,
    GLB_MAGIC,
    GLB_VERSION,
    LINEAR,
    LINEAR_MIPMAP_LINEAR,
    UNSIGNED_INT,
    UNSIGNED_SHORT,
    jsonable,
)
from meshforge.types import Asset

_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4"}


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


class _BinBuilder:
    """Accumulates the BIN chunk, bufferViews and accessors, keeping every view 4-byte aligned."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.length = 0
        self.buffer_views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def add_view(self, data: bytes, target: int | None = None) -> int:
        view: dict[str, Any] = {"buffer": 0, "byteOffset": self.length, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self.parts.append(data)
        pad = _pad4(len(data))
        if pad:
            self.parts.append(b"\x00" * pad)
        self.length += len(data) + pad
        self.buffer_views.append(view)
        return len(self.buffer_views) - 1

    def add_accessor(
        self,
        array: np.ndarray,
        component_type: int,
        target: int,
        *,
        with_min_max: bool = False,
        scalar: bool = False,
    ) -> int:
        """Store ``array`` (``[N, C]`` or ``[N]`` when ``scalar``) as one tightly packed bufferView + accessor."""
        dtype = {FLOAT: "<f4", UNSIGNED_INT: "<u4", UNSIGNED_SHORT: "<u2"}[component_type]
        arr = np.ascontiguousarray(array, dtype=dtype)
        width = 1 if scalar else int(arr.shape[1])
        view = self.add_view(arr.tobytes(), target)
        accessor: dict[str, Any] = {
            "bufferView": view,
            "componentType": component_type,
            "count": int(arr.shape[0]),
            "type": _TYPES[width],
        }
        if with_min_max:
            # Exact float32 values, so they match what the validator recomputes (ACCESSOR_MIN_MISMATCH).
            flat = arr.reshape(len(arr), width)
            accessor["min"] = [float(x) for x in flat.min(axis=0)]
            accessor["max"] = [float(x) for x in flat.max(axis=0)]
        self.accessors.append(accessor)
        return len(self.accessors) - 1

    def bin_bytes(self) -> bytes:
        return b"".join(self.parts)


def build_gltf(asset: Asset, *, png_compress_level: int = 3) -> tuple[dict[str, Any], bytes]:
    """Build the glTF JSON document and its BIN payload for an asset (what :func:`write_glb` packs).

    Args:
        asset: see :func:`write_glb`.
        png_compress_level: zlib level 0–9 for the embedded PNG images.

    Returns:
        ``(gltf, bin)``: the JSON-serialisable document (one buffer whose ``byteLength`` is
        ``len(bin)``, no ``uri``) and the BIN payload, 4-byte aligned.

    Raises:
        InputError: see :func:`write_glb`.
    """
    check_asset(asset)
    mesh, material, textures = asset.mesh, asset.material, asset.textures
    builder = _BinBuilder()
    pbr: dict[str, Any] = {
        "baseColorFactor": [float(x) for x in material.base_color_factor],
        "metallicFactor": float(material.metallic_factor),
        "roughnessFactor": float(material.roughness_factor),
    }
    gltf_material: dict[str, Any] = {"name": material.name, "pbrMetallicRoughness": pbr}
    # The maps start compressing on the PNG pool now, concurrently with each other and with the geometry
    # below: (name, pixels, drop opaque alpha, the dict that refers to it, its key there).
    maps: list[tuple[str, np.ndarray, bool, dict[str, Any], str]] = []
    if textures is not None:
        maps.append(("baseColor", textures.base_color, True, pbr, "baseColorTexture"))
        maps.append(("metallicRoughness", textures.metallic_roughness, False, pbr, "metallicRoughnessTexture"))
        if textures.normal is not None:
            maps.append(("normal", textures.normal, False, gltf_material, "normalTexture"))
        if textures.occlusion is not None:
            maps.append(("occlusion", textures.occlusion, False, gltf_material, "occlusionTexture"))
    pngs = submit_pngs([m[1] for m in maps], compress_level=png_compress_level, drop_opaque_alpha=[m[2] for m in maps])

    attributes: dict[str, int] = {
        "POSITION": builder.add_accessor(mesh.vertices, FLOAT, ARRAY_BUFFER, with_min_max=True)
    }
    given: np.ndarray | None = mesh.normals
    if given is None and textures is not None and textures.normal is not None:
        # A normal map needs a tangent frame, hence smooth vertex normals (§3.7.2.1: without NORMAL the
        # client uses flat normals and ignores TANGENT).
        given = vertex_normals(mesh.vertices, mesh.faces)
    if given is not None:
        normals = unit_normals(given, mesh.vertices, mesh.faces)
        attributes["NORMAL"] = builder.add_accessor(normals, FLOAT, ARRAY_BUFFER)
    if textures is not None and textures.normal is not None and given is not None and mesh.uv is not None:
        # the frames of these unit normals, as the bake encoded its normal map in (computed once for both)
        tangents = asset_tangents(mesh.vertices, given, mesh.uv, mesh.faces)
        attributes["TANGENT"] = builder.add_accessor(tangents, FLOAT, ARRAY_BUFFER)
    if mesh.uv is not None:
        attributes["TEXCOORD_0"] = builder.add_accessor(mesh.uv, FLOAT, ARRAY_BUFFER)
    if mesh.colors is not None and textures is None:
        # §3.7.2.1: COLOR_0 is linear; our colours are sRGB-encoded (types.py), alpha is already linear.
        linear_rgb = srgb_to_linear(mesh.colors[:, :3])
        alpha = np.clip(mesh.colors[:, 3:4], 0.0, 1.0).astype(np.float32)
        colors = linear_rgb if bool(np.all(alpha == 1.0)) else np.concatenate([linear_rgb, alpha], axis=1)
        attributes["COLOR_0"] = builder.add_accessor(colors, FLOAT, ARRAY_BUFFER)

    # §3.7.2.1 indices: UNSIGNED_SHORT when every index fits below the restart value 65535.
    index_type = UNSIGNED_SHORT if mesh.n_vertices < 65536 else UNSIGNED_INT
    indices = builder.add_accessor(mesh.faces.reshape(-1), index_type, ELEMENT_ARRAY_BUFFER, scalar=True)

    images: list[dict[str, Any]] = []
    gltf_textures: list[dict[str, Any]] = []

    for (name, _, _, owner, key), png in zip(maps, pngs, strict=True):
        view = builder.add_view(png.result())  # image views have no target (§3.6.1.2)
        images.append({"name": name, "bufferView": view, "mimeType": "image/png"})
        gltf_textures.append({"name": name, "sampler": 0, "source": len(images) - 1})
        owner[key] = {"index": len(gltf_textures) - 1}
    if material.alpha_mode != "OPAQUE":
        gltf_material["alphaMode"] = material.alpha_mode
        if material.alpha_mode == "MASK":
            gltf_material["alphaCutoff"] = float(material.alpha_cutoff)
    if material.double_sided:
        gltf_material["doubleSided"] = True

    bin_data = builder.bin_bytes()
    asset_info: dict[str, Any] = {"version": "2.0", "generator": f"meshforge {__version__}"}
    asset_info["extras"] = jsonable(dict(asset.extras))
    gltf: dict[str, Any] = {
        "asset": asset_info,
        "scene": 0,
        "scenes": [{"name": asset.name, "nodes": [0]}],
        "nodes": [{"name": asset.name, "mesh": 0}],
        "meshes": [
            {
                "name": asset.name,
                "primitives": [{"attributes": attributes, "indices": indices, "material": 0, "mode": 4}],
            }
        ],
        "materials": [gltf_material],
        "accessors": builder.accessors,
        "bufferViews": builder.buffer_views,
        "buffers": [{"byteLength": len(bin_data)}],
    }
    if gltf_textures:
        gltf["samplers"] = [
            {"magFilter": LINEAR, "minFilter": LINEAR_MIPMAP_LINEAR, "wrapS": CLAMP_TO_EDGE, "wrapT": CLAMP_TO_EDGE}
        ]
        gltf["images"] = images
        gltf["textures"] = gltf_textures
    return gltf, bin_data


def pack_glb(gltf: dict[str, Any], bin_data: bytes) -> bytes:
    """Pack a glTF JSON document and its BIN payload into a GLB container (glTF 2.0 §4.4).

    The JSON chunk is UTF-8, padded with spaces (0x20) to a multiple of 4 bytes; the BIN chunk is
    padded with zeros. The header's ``length`` is the total file size.

    Args:
        gltf: the document; ``buffers[0]`` must describe ``bin_data`` (no ``uri``).
        bin_data: the binary payload (may be empty, then no BIN chunk is written).

    Returns:
        The GLB file as bytes.
    """
    json_bytes = json.dumps(gltf, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    json_bytes += b" " * _pad4(len(json_bytes))
    chunks = struct.pack("<II", len(json_bytes), CHUNK_JSON) + json_bytes
    if bin_data:
        bin_padded = bin_data + b"\x00" * _pad4(len(bin_data))
        chunks += struct.pack("<II", len(bin_padded), CHUNK_BIN) + bin_padded
    header = struct.pack("<III", GLB_MAGIC, GLB_VERSION, 12 + len(chunks))
    return header + chunks


def write_glb(asset: Asset, *, png_compress_level: int = 3) -> bytes:
    """Write an asset as a self-contained binary glTF 2.0 file (GLB).

    Geometry (glTF 2.0 §3.7.2): ``POSITION`` float32 VEC3 with min/max; ``NORMAL`` (re-normalised, zero
    rows repaired) when the mesh has normals; ``TEXCOORD_0`` float32 VEC2 (glTF UVs, stored as is) when
    it has UVs; ``TANGENT`` when there is a normal map; ``COLOR_0`` when the mesh has colours and the
    asset has no textures (sRGB → linear, VEC3 float32 if every alpha is 1, else VEC4); indices
    UNSIGNED_SHORT below 65536 vertices, else UNSIGNED_INT. Every bufferView is 4-byte aligned, vertex
    views target ARRAY_BUFFER, the index view ELEMENT_ARRAY_BUFFER, image views have no target.

    Material (§3.9): ``pbrMetallicRoughness`` with the material's factors; ``baseColorTexture`` from
    ``Textures.base_color`` (RGBA PNG, RGB when alpha is all 255), ``metallicRoughnessTexture`` (RGB PNG,
    roughness G, metallic B), ``normalTexture`` and ``occlusionTexture`` (greyscale PNG, read as R) when
    present; one sampler (LINEAR / LINEAR_MIPMAP_LINEAR, CLAMP_TO_EDGE). ``alphaMode`` is written unless
    OPAQUE, ``alphaCutoff`` only for MASK, ``doubleSided`` only when true.

    ``asset.generator`` is ``"meshforge <version>"``; ``asset.extras`` is ``Asset.extras`` made
    JSON-safe (numpy scalars → Python, NaN → null).

    Args:
        asset: the asset; positions in metres in the canonical +Y-up frame (written unchanged, since
            that is glTF's frame).
        png_compress_level: zlib level 0–9 for the embedded PNG images.

    Returns:
        The GLB bytes.

    Raises:
        InputError: empty mesh, non-finite values, face indices out of range, textures without UVs,
            material factors outside [0, 1], an unknown alpha mode, or textures of the wrong shape/dtype.
    """
    gltf, bin_data = build_gltf(asset, png_compress_level=png_compress_level)
    return pack_glb(gltf, bin_data)


def read_glb_json(data: bytes) -> dict[str, Any]:
    """Return the JSON chunk of a GLB file as a dict (for tests and reports; glTF 2.0 §4.4).

    Raises:
        InputError: not a GLB 2.0 file.
    """
    if len(data) < 20:
        raise InputError("not a GLB file: too short")
    magic, version, _length = struct.unpack_from("<III", data, 0)
    chunk_len, chunk_type = struct.unpack_from("<II", data, 12)
    if magic != GLB_MAGIC or version != 2 or chunk_type != CHUNK_JSON:
        raise InputError("not a GLB 2.0 file (bad magic, version or first chunk)")
    doc: dict[str, Any] = json.loads(data[20 : 20 + chunk_len].decode("utf-8"))
    return doc
