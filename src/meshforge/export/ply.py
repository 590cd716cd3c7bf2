"""Binary little-endian PLY writer with per-vertex colours.

Format reference: Greg Turk, "The PLY Polygon File Format" (Stanford, 1994;
https://paulbourke.net/dataformats/ply/), ``format binary_little_endian 1.0``.
"""

from __future__ import annotations

import numpy as np

from meshforge._version import __version__
from meshforge.export._common import check_asset, unit_normals, vertex_colors_srgb
from meshforge.types import Asset


def write_ply(asset: Asset) -> bytes:
    """Write an asset as a binary little-endian PLY file that always carries vertex colours.

    Layout: ``element vertex V`` with ``float x y z`` (metres, canonical +Y-up frame, unchanged),
    ``float nx ny nz`` when the mesh has normals (re-normalised), ``uchar red green blue alpha``
    (sRGB-encoded, straight alpha); ``element face F`` with ``property list uchar int vertex_indices``
    (always 3, counter-clockwise seen from outside). Colours come from, in order: the base-colour
    texture sampled bilinearly (clamp-to-edge) at each vertex's UV, the mesh's vertex colours, or white;
    then multiplied by the material's base colour factor in linear space (see
    ``export._common.vertex_colors_srgb``). Sampling at vertices loses texture detail inside faces.

    Args:
        asset: the asset to write.

    Returns:
        The PLY bytes (ASCII header, then binary little-endian records).

    Raises:
        InputError: the asset fails the common checks (see ``export._common.check_asset``).
    """
    check_asset(asset)
    mesh = asset.mesh
    colors = vertex_colors_srgb(asset)
    fields: list[tuple[str, str, tuple[int, ...]]] = [("xyz", "<f4", (3,))]
    props = ["property float x", "property float y", "property float z"]
    if mesh.normals is not None:
        fields.append(("n", "<f4", (3,)))
        props += ["property float nx", "property float ny", "property float nz"]
    fields.append(("rgba", "u1", (4,)))
    props += ["property uchar red", "property uchar green", "property uchar blue", "property uchar alpha"]

    vertex = np.zeros(mesh.n_vertices, dtype=np.dtype(fields))
    vertex["xyz"] = mesh.vertices
    if mesh.normals is not None:
        vertex["n"] = unit_normals(mesh.normals, mesh.vertices, mesh.faces)
    vertex["rgba"] = colors

    face = np.zeros(mesh.n_faces, dtype=np.dtype([("count", "u1"), ("idx", "<i4", (3,))]))
    face["count"] = 3
    face["idx"] = mesh.faces

    header = "\n".join(
        [
            "ply",
            "format binary_little_endian 1.0",
            f"comment meshforge {__version__}",
            f"element vertex {mesh.n_vertices}",
            *props,
            f"element face {mesh.n_faces}",
            "property list uchar int vertex_indices",
            "end_header",
        ]
    )
    return (header + "\n").encode("ascii") + vertex.tobytes() + face.tobytes()
