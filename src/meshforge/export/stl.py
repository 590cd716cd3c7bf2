"""Binary STL writer.

Format reference: 3D Systems, "StereoLithography Interface Specification" (1989/1998), binary form:
an 80-byte header, a uint32 triangle count, then per triangle 12 little-endian float32 (normal, three
vertices) and a uint16 attribute byte count (0). See https://en.wikipedia.org/wiki/STL_(file_format).
"""

from __future__ import annotations

import struct

import numpy as np

from meshforge._version import __version__
from meshforge.export._common import check_asset, unit_normals
from meshforge.geometry.normals import face_normals
from meshforge.types import Asset

_RECORD = np.dtype([("normal", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])


def write_stl(asset: Asset) -> bytes:
    """Write an asset's geometry as a binary STL file (no colours, no UVs).

    Each triangle gets its unit face normal from the right-hand rule on its counter-clockwise vertex
    order (so outward for a closed mesh with outward winding). A degenerate (zero-area) triangle gets
    the normalised mean of its vertex normals when the mesh has normals, else ``(0, 0, 0)`` ("compute
    it yourself", as readers treat it). Vertex positions are written in the canonical frame (metres,
    +Y up) unchanged; STL has no units or up axis of its own. The header starts with
    ``"meshforge <version> binary STL"`` (never ``"solid"``, which would suggest ASCII STL).

    Args:
        asset: the asset to write; only ``asset.mesh`` is used.

    Returns:
        The STL bytes: ``84 + 50 * F`` long.

    Raises:
        InputError: the asset fails the common checks (see ``export._common.check_asset``).
    """
    check_asset(asset)
    mesh = asset.mesh
    _, normals = face_normals(mesh.vertices, mesh.faces)
    degenerate = np.linalg.norm(normals, axis=1) == 0
    if np.any(degenerate) and mesh.normals is not None:
        vn = unit_normals(mesh.normals, mesh.vertices, mesh.faces).astype(np.float64)
        mean = vn[mesh.faces[degenerate]].mean(axis=1)
        length = np.linalg.norm(mean, axis=1, keepdims=True)
        normals[degenerate] = np.divide(mean, length, out=np.zeros_like(mean), where=length > 1e-12)
    records = np.zeros(mesh.n_faces, dtype=_RECORD)
    records["normal"] = normals
    records["v"] = mesh.vertices[mesh.faces]
    header = f"meshforge {__version__} binary STL".encode("ascii")[:80].ljust(80, b" ")
    return header + struct.pack("<I", mesh.n_faces) + records.tobytes()
