"""Small real assets for the exporter tests, and helpers to read GLB files back independently."""

from __future__ import annotations

import io
import json
import struct
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from meshforge.types import Asset, Material, Mesh, Textures

TEX = 32  # texture size (pixels)

# Cube faces: (outward normal, in-face u axis, in-face v axis), u x v = n so the quads below are CCW.
_CUBE_FACES = [
    ((1, 0, 0), (0, 0, -1), (0, 1, 0)),
    ((-1, 0, 0), (0, 0, 1), (0, 1, 0)),
    ((0, 1, 0), (1, 0, 0), (0, 0, -1)),
    ((0, -1, 0), (1, 0, 0), (0, 0, 1)),
    ((0, 0, 1), (1, 0, 0), (0, 1, 0)),
    ((0, 0, -1), (-1, 0, 0), (0, 1, 0)),
]


def make_cube(half: float = 0.5, center: tuple[float, float, float] = (0.0, 0.25, 0.0)) -> Mesh:
    """A closed cube (24 vertices, 12 triangles) with per-face normals and per-face UV islands.

    The islands tile a 3 x 2 atlas with a margin, so every UV lies inside [0.03, 0.97].
    """
    verts, norms, uvs, faces = [], [], [], []
    c = np.asarray(center, dtype=np.float64)
    for k, (n, u, v) in enumerate(_CUBE_FACES):
        n_, u_, v_ = (np.asarray(x, dtype=np.float64) for x in (n, u, v))
        col, row = k % 3, k // 3
        base = len(verts)
        for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
            verts.append(c + half * (n_ + a * u_ + b * v_))
            norms.append(n_)
            # glTF UVs: v points down the image, so +b (up the face) means smaller v.
            uvs.append(((col + 0.1 + 0.8 * (a + 1) / 2) / 3, (row + 0.1 + 0.8 * (1 - b) / 2) / 2))
        faces += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    return Mesh(
        vertices=np.asarray(verts, dtype=np.float32),
        faces=np.asarray(faces, dtype=np.int32),
        normals=np.asarray(norms, dtype=np.float32),
        uv=np.asarray(uvs, dtype=np.float32),
    )


def make_icosphere(subdivisions: int = 2, radius: float = 0.4) -> Mesh:
    """A closed convex icosphere centred at the origin with outward CCW faces and unit normals."""
    t = (1.0 + 5**0.5) / 2.0
    v = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t)]
    v += [(0, -1, -t), (0, 1, -t), (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    verts = [np.asarray(p, dtype=np.float64) / np.linalg.norm(p) for p in v]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2)]
    faces += [(10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5)]
    faces += [(2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]

    def mid(cache: dict[tuple[int, int], int], i: int, j: int) -> int:
        key = (min(i, j), max(i, j))
        if key not in cache:
            p = verts[i] + verts[j]
            verts.append(p / np.linalg.norm(p))
            cache[key] = len(verts) - 1
        return cache[key]

    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}
        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(cache, a, b), mid(cache, b, c), mid(cache, c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    unit = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int32)
    tri = unit[f]
    outward = np.einsum("ij,ij->i", np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), tri.mean(axis=1)) > 0
    f[~outward] = f[~outward][:, ::-1]
    return Mesh(vertices=(unit * radius).astype(np.float32), faces=f, normals=unit.astype(np.float32))


def gradient_textures(*, normal: bool = False, occlusion: bool = False, alpha: bool = False) -> Textures:
    """Small textures whose base colour is affine in the pixel position (so bilinear sampling is exact).

    base colour: R = 4 + 8 * column, G = 4 + 8 * row, B = 128, A = 255 (or a left/right split when
    ``alpha``); metallic-roughness: R = 0, G (roughness) = 40 + 5 * column, B (metallic) = 200 - 4 * row.
    """
    yy, xx = np.mgrid[0:TEX, 0:TEX]
    a = np.where(xx < TEX // 2, 255, 96) if alpha else np.full_like(xx, 255)
    base = np.stack([4 + 8 * xx, 4 + 8 * yy, np.full_like(xx, 128), a], axis=-1).astype(np.uint8)
    mr = np.stack([np.zeros_like(xx), 40 + 5 * xx, 200 - 4 * yy], axis=-1).astype(np.uint8)
    nmap = None
    if normal:
        nmap = np.stack([128 + 3 * (xx - 16), 128 + 2 * (yy - 16), np.full_like(xx, 240)], axis=-1).astype(np.uint8)
    occ = (255 - 3 * yy).astype(np.uint8) if occlusion else None
    return Textures(base_color=base, metallic_roughness=mr, normal=nmap, occlusion=occ)


def vertex_colors(mesh: Mesh, *, alpha: bool = False) -> np.ndarray:
    """sRGB RGBA colours in [0, 1] that vary over the mesh (alpha < 1 on the lower half when ``alpha``)."""
    p = mesh.vertices.astype(np.float64)
    span = np.ptp(p, axis=0)
    rgb = (p - p.min(axis=0)) / np.where(span > 0, span, 1.0)
    a = np.where(p[:, 1] < 0, 0.5, 1.0) if alpha else np.ones(len(p))
    return np.concatenate([rgb, a[:, None]], axis=1).astype(np.float32)


@pytest.fixture
def textured_asset() -> Asset:
    return Asset(
        mesh=make_cube(),
        material=Material(name="cube material", metallic_factor=1.0, roughness_factor=0.8),
        textures=gradient_textures(),
        name="test cube",
        extras={"meshforge": {"backend": "test", "seed": np.int64(7), "scale": np.float32(0.5)}, "sha256": "ab"},
    )


@pytest.fixture
def full_textured_asset() -> Asset:
    """All four maps, alpha in the base colour, MASK mode, double-sided."""
    return Asset(
        mesh=make_cube(),
        material=Material(
            name="full",
            base_color_factor=(0.9, 0.8, 0.7, 1.0),
            metallic_factor=0.25,
            roughness_factor=0.75,
            alpha_mode="MASK",
            alpha_cutoff=0.4,
            double_sided=True,
        ),
        textures=gradient_textures(normal=True, occlusion=True, alpha=True),
        name="full cube",
    )


@pytest.fixture
def color_asset() -> Asset:
    mesh = make_icosphere()
    return Asset(
        mesh=mesh.replace(colors=vertex_colors(mesh)),
        material=Material(name="vc", metallic_factor=0.0, roughness_factor=0.6),
        name="colour sphere",
    )


@pytest.fixture
def color_alpha_asset() -> Asset:
    mesh = make_icosphere(subdivisions=1)
    return Asset(
        mesh=mesh.replace(colors=vertex_colors(mesh, alpha=True)),
        material=Material(name="vc", metallic_factor=0.0, roughness_factor=0.6, alpha_mode="BLEND"),
        name="translucent sphere",
    )


# ---------------------------------------------------------------------------------------------------
# Independent GLB reading (struct + json only), so the tests do not trust the writer's own helpers.

_COMPONENTS = {5121: "<u1", 5123: "<u2", 5125: "<u4", 5126: "<f4"}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def parse_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Split a GLB into its JSON document and BIN chunk, checking the container layout (glTF 2.0 §4.4)."""
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF" and version == 2 and length == len(data)
    json_len, json_type = struct.unpack_from("<I4s", data, 12)
    assert json_type == b"JSON" and json_len % 4 == 0
    json_bytes = data[20 : 20 + json_len]
    doc = json.loads(json_bytes.decode("utf-8"))
    assert set(json_bytes[json_bytes.rindex(b"}") + 1 :]) <= {0x20}  # padded with spaces only
    offset = 20 + json_len
    bin_len, bin_type = struct.unpack_from("<I4s", data, offset)
    assert bin_type == b"BIN\x00" and bin_len % 4 == 0 and offset + 8 + bin_len == len(data)
    return doc, data[offset + 8 :]


def read_accessor(doc: dict[str, Any], bin_chunk: bytes, index: int) -> np.ndarray:
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    width = _WIDTH[acc["type"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    arr = np.frombuffer(bin_chunk, dtype=_COMPONENTS[acc["componentType"]], count=acc["count"] * width, offset=start)
    return arr.reshape(acc["count"], width) if width > 1 else arr


def read_image(doc: dict[str, Any], bin_chunk: bytes, texture_index: int) -> tuple[str, np.ndarray]:
    """(mimeType, decoded pixels) of a texture's image stored in a bufferView."""

    image = doc["images"][doc["textures"][texture_index]["source"]]
    view = doc["bufferViews"][image["bufferView"]]
    start = view.get("byteOffset", 0)
    png = bin_chunk[start : start + view["byteLength"]]
    return image["mimeType"], np.asarray(Image.open(io.BytesIO(png)))


@pytest.fixture(scope="session")
def shapes() -> SimpleNamespace:
    """Builders for test meshes and textures (fixtures, so test modules need not import conftest)."""
    return SimpleNamespace(
        cube=make_cube, icosphere=make_icosphere, textures=gradient_textures, vertex_colors=vertex_colors, tex=TEX
    )


@pytest.fixture(scope="session")
def glb() -> SimpleNamespace:
    """Independent GLB readers: ``parse(bytes) -> (doc, bin)``, ``accessor(doc, bin, i)``, ``image(doc, bin, t)``."""
    return SimpleNamespace(parse=parse_glb, accessor=read_accessor, image=read_image)
