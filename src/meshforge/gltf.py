"""glTF 2.0 constants shared by the reader (:mod:`meshforge.io.gltf_document`) and the writer
(:mod:`meshforge.export.glb`), and the JSON value conversion both use (Khronos glTF 2.0 specification,
https://registry.khronos.org/glTF/specs/2.0/glTF-2.0.html; section numbers below refer to it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# glTF 2.0 §3.6.2.2 accessor component types and §3.6.1.2 bufferView targets.
BYTE = 5120
UNSIGNED_BYTE = 5121
SHORT = 5122
UNSIGNED_SHORT = 5123
UNSIGNED_INT = 5125
FLOAT = 5126
ARRAY_BUFFER = 34962
ELEMENT_ARRAY_BUFFER = 34963
# §3.8.4 sampler constants.
LINEAR = 9729
LINEAR_MIPMAP_LINEAR = 9987
CLAMP_TO_EDGE = 33071
REPEAT = 10497  # the default wrap mode
MIRRORED_REPEAT = 33648
# §4.4 GLB container.
GLB_MAGIC = 0x46546C67  # "glTF"
GLB_VERSION = 2
CHUNK_JSON = 0x4E4F534A  # "JSON"
CHUNK_BIN = 0x004E4942  # "BIN\0"

#: accessor component type → little-endian numpy dtype (§3.6.2.2)
COMPONENT_DTYPES: dict[int, str] = {
    BYTE: "<i1",
    UNSIGNED_BYTE: "<u1",
    SHORT: "<i2",
    UNSIGNED_SHORT: "<u2",
    UNSIGNED_INT: "<u4",
    FLOAT: "<f4",
}
#: accessor type → number of components (§3.6.2.2)
TYPE_WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
#: material alpha modes (§3.9.4)
ALPHA_MODES = ("OPAQUE", "MASK", "BLEND")


def jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and paths into plain JSON values (recursively).

    Non-finite floats become ``None`` (JSON has no NaN/Infinity, RFC 8259 §6); keys become strings;
    anything else unknown becomes its ``str()``.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)
