"""The glTF 2.0 container: GLB chunks, the JSON document, buffers, bufferViews and accessors.

:class:`GltfDocument` reads the binary side of a glTF file for :class:`~.gltf_reader.GltfReader`: the GLB
container (glTF 2.0 §4.4: header, JSON and BIN chunks), the JSON (glTF 2.0 only), buffers from the BIN chunk,
``data:`` URIs or files beside a ``.gltf`` (never outside its folder, each within ``max_bytes``), bufferViews with
their byte strides, and accessors (§3.6.2: component types, normalized integers, sparse accessors) decoded to
NumPy arrays. Every malformed or truncated piece becomes a one-line :class:`~meshforge.errors.InputError` that
starts with the file's name.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from ..errors import InputError, one_line
from ..gltf import (
    CHUNK_BIN,
    CHUNK_JSON,
    COMPONENT_DTYPES,
    GLB_MAGIC,
    TYPE_WIDTHS,
    UNSIGNED_BYTE,
    UNSIGNED_INT,
    UNSIGNED_SHORT,
)

__all__ = ["GltfDocument"]


class GltfDocument:
    """A parsed GLB or .gltf document and its binary data: JSON, buffers, bufferViews and accessors.

    Args:
        data: the file's bytes.
        kind: ``"glb"`` or ``"gltf"``.
        label: the file's name, which starts every error message.
        path: the file's path (external resources are read from its folder, never outside it), or None.
        max_bytes: limit on each external resource and on zero-filled (sparse-only) accessors.
        notes: the load's warnings, appended to.
        meta: facts about the file, updated by the reader.

    Raises:
        InputError: not a GLB/glTF 2.0 file, bad GLB header or chunk lengths, invalid JSON.
    """

    def __init__(
        self,
        data: bytes,
        kind: str,
        label: str,
        path: Path | None,
        max_bytes: int,
        notes: list[str],
        meta: dict[str, Any],
    ) -> None:
        self.label = label
        self.base_dir = path.parent if path is not None else None
        self.max_bytes = max_bytes
        self.notes = notes
        self.meta = meta
        self.external_bytes = 0
        if kind == "glb":
            self.doc, self.bin_chunk = self._parse_glb(data)
        else:
            self.doc, self.bin_chunk = self._parse_json(data), None
        self._buffers: dict[int, bytes] = {}
        self._accessors: dict[int, np.ndarray] = {}

    # -- errors ---------------------------------------------------------------------------------------

    def _corrupt(self, why: str) -> InputError:
        return InputError(f"{self.label}: corrupt glTF file ({why})")

    def _list(self, key: str) -> list[Any]:
        value = self.doc.get(key, [])
        if not isinstance(value, list):
            raise self._corrupt(f"'{key}' is not a list")
        return value

    def _item(self, key: str, index: Any) -> dict[str, Any]:
        items = self._list(key)
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(items):
            raise self._corrupt(f"{key} index {index!r} out of range (0..{len(items) - 1})")
        item = items[index]
        if not isinstance(item, dict):
            raise self._corrupt(f"{key}[{index}] is not an object")
        return item

    # -- container ------------------------------------------------------------------------------------

    def _parse_glb(self, data: bytes) -> tuple[dict[str, Any], bytes | None]:
        if len(data) < 12:
            raise InputError(f"{self.label}: not a GLB file (only {len(data)} bytes)")
        magic, version, length = struct.unpack_from("<III", data, 0)
        if magic != GLB_MAGIC:
            raise InputError(f"{self.label}: not a GLB file (bad magic bytes)")
        if version != 2:
            raise InputError(f"{self.label}: GLB version {version} is not supported (only glTF 2.0)")
        if length > len(data):
            raise InputError(f"{self.label}: truncated GLB file (header says {length} bytes, file has {len(data)})")
        offset = 12
        doc: dict[str, Any] | None = None
        bin_chunk: bytes | None = None
        while offset + 8 <= length:
            chunk_len, chunk_type = struct.unpack_from("<II", data, offset)
            start, end = offset + 8, offset + 8 + chunk_len
            if end > length:
                raise InputError(f"{self.label}: truncated GLB file (a chunk runs past the end)")
            if doc is None:
                if chunk_type != CHUNK_JSON:
                    raise InputError(f"{self.label}: corrupt GLB file (the first chunk is not JSON)")
                doc = self._parse_json(data[start:end])
            elif chunk_type == CHUNK_BIN and bin_chunk is None:
                bin_chunk = data[start:end]
            offset = end + (-end % 4 if end % 4 else 0)
        if doc is None:
            raise InputError(f"{self.label}: truncated GLB file (no JSON chunk)")
        return doc, bin_chunk

    def _parse_json(self, raw: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise InputError(f"{self.label}: not a glTF file (invalid JSON: {one_line(exc)})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("asset"), dict):
            raise InputError(f"{self.label}: not a glTF file (no 'asset' object)")
        version = str(doc["asset"].get("version", ""))
        if not version.startswith("2."):
            raise InputError(f"{self.label}: glTF version {version or '?'} is not supported (only glTF 2.0)")
        return doc

    def _resource(self, uri: str, what: str) -> bytes:
        """Bytes of a buffer/image URI: a ``data:`` URI or a relative file inside the .gltf's folder."""
        if uri.startswith("data:"):
            header, _, payload = uri.partition(",")
            try:
                raw = (
                    base64.b64decode(payload, validate=False)
                    if header.endswith(";base64")
                    else unquote(payload).encode()
                )
            except (binascii.Error, ValueError) as exc:
                raise self._corrupt(f"{what} has an invalid data URI ({one_line(exc)})") from None
            return raw
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", uri) and not re.match(r"^[a-zA-Z]:[\\/]", uri):
            raise InputError(f"{self.label}: {what} refers to {uri!r}; only relative files and data: URIs are read")
        if self.base_dir is None:
            raise InputError(f"{self.label}: {what} is an external file ({uri!r}), which cannot be read from bytes")
        base = self.base_dir.resolve()
        target = (base / unquote(uri)).resolve()
        if base != target and base not in target.parents:
            raise InputError(f"{self.label}: {what} ({uri!r}) lies outside the glTF file's folder; refused")
        try:
            size = target.stat().st_size
            if size > self.max_bytes or self.external_bytes + size > 4 * self.max_bytes:
                raise InputError(f"{self.label}: {what} ({uri!r}) is {size} bytes, more than the limit (max_bytes)")
            raw = target.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{self.label}: {what} file {uri!r} not found beside it") from None
        except OSError as exc:
            raise InputError(f"{self.label}: cannot read {what} {uri!r} ({one_line(exc)})") from None
        self.external_bytes += len(raw)
        return raw

    def _buffer(self, index: int) -> bytes:
        if index in self._buffers:
            return self._buffers[index]
        buf = self._item("buffers", index)
        declared = buf.get("byteLength", 0)
        if "uri" in buf:
            data = self._resource(str(buf["uri"]), f"buffer {index}")
        elif index == 0 and self.bin_chunk is not None:
            data = self.bin_chunk
        else:
            raise self._corrupt(f"buffer {index} has no uri and there is no BIN chunk")
        if not isinstance(declared, int) or len(data) < declared:
            raise InputError(f"{self.label}: truncated glTF data (buffer {index} has {len(data)} of {declared} bytes)")
        self._buffers[index] = data
        return data

    def _view_bytes(self, index: int) -> tuple[bytes, int, int, int | None]:
        """``(buffer, start, end, byteStride)`` of a bufferView, bounds-checked."""
        view = self._item("bufferViews", index)
        data = self._buffer(view.get("buffer", -1))
        start = view.get("byteOffset", 0)
        length = view.get("byteLength", -1)
        if not isinstance(start, int) or not isinstance(length, int) or start < 0 or length < 0:
            raise self._corrupt(f"bufferView {index} has an invalid offset or length")
        if start + length > len(data):
            raise InputError(f"{self.label}: truncated glTF data (bufferView {index} runs past its buffer)")
        stride = view.get("byteStride")
        return data, start, start + length, stride if isinstance(stride, int) and stride > 0 else None

    def _read_array(
        self, view_index: int, byte_offset: int, count: int, dtype: np.dtype[Any], width: int, what: str
    ) -> np.ndarray:
        data, start, end, stride = self._view_bytes(view_index)
        item = dtype.itemsize * width
        stride = stride or item
        begin = start + byte_offset
        if count == 0:
            return np.zeros((0, width), dtype=dtype)
        last = begin + stride * (count - 1) + item
        if byte_offset < 0 or last > end:
            raise InputError(f"{self.label}: corrupt glTF file ({what} reads past the end of its bufferView)")
        arr = np.ndarray((count, width), dtype=dtype, buffer=data, offset=begin, strides=(stride, dtype.itemsize))
        return np.array(arr)  # copy: contiguous, aligned, writable

    def accessor(self, index: Any, *, normalize_ints: bool = True) -> np.ndarray:
        """Decode an accessor to ``[count, width]`` (float64 when normalized or float, else int64)."""
        if isinstance(index, int) and index in self._accessors:
            return self._accessors[index]
        acc = self._item("accessors", index)
        what = f"accessor {index}"
        ctype = acc.get("componentType")
        if ctype not in COMPONENT_DTYPES or acc.get("type") not in TYPE_WIDTHS:
            raise self._corrupt(f"{what} has an unknown componentType or type")
        dtype = np.dtype(COMPONENT_DTYPES[ctype])
        width = TYPE_WIDTHS[acc["type"]]
        count = acc.get("count", -1)
        if not isinstance(count, int) or count < 0:
            raise self._corrupt(f"{what} has an invalid count")
        # Buffer-backed data is bounds-checked against its bufferView; zero-filled (sparse-only) data is not.
        if "bufferView" not in acc and count * width * dtype.itemsize > self.max_bytes:
            raise InputError(f"{self.label}: {what} is too large ({count} elements, more than max_bytes)")
        if "bufferView" in acc:
            arr = self._read_array(acc["bufferView"], acc.get("byteOffset", 0), count, dtype, width, what)
        else:
            arr = np.zeros((count, width), dtype=dtype)
        sparse = acc.get("sparse")
        if isinstance(sparse, dict):
            n = sparse.get("count", 0)
            ind, val = sparse.get("indices", {}), sparse.get("values", {})
            if ind.get("componentType") not in (UNSIGNED_BYTE, UNSIGNED_SHORT, UNSIGNED_INT):
                raise self._corrupt(f"{what} has invalid sparse indices")
            idt = np.dtype(COMPONENT_DTYPES[ind["componentType"]])
            idx = self._read_array(ind.get("bufferView", -1), ind.get("byteOffset", 0), n, idt, 1, what)[:, 0]
            values = self._read_array(val.get("bufferView", -1), val.get("byteOffset", 0), n, dtype, width, what)
            if idx.size and int(idx.max()) >= count:
                raise self._corrupt(f"{what} has sparse indices out of range")
            arr[idx.astype(np.int64)] = values
        out: np.ndarray
        if dtype.kind == "f":
            out = arr.astype(np.float64)
        elif acc.get("normalized", False) and normalize_ints:
            # glTF 2.0 §3.11 (animation) / §3.6.2.2: normalized integer → float.
            maxval = float(np.iinfo(dtype).max)
            out = np.maximum(arr.astype(np.float64) / maxval, -1.0)
        else:
            out = arr.astype(np.int64)
        if isinstance(index, int):
            self._accessors[index] = out
        return out
