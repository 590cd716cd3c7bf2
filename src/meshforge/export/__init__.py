"""Exporters: an :class:`~meshforge.types.Asset` to GLB, OBJ (+MTL+PNG), PLY or STL bytes.

* ``glb`` – binary glTF 2.0 with embedded PNG textures, validator-clean (:mod:`meshforge.export.glb`).
* ``obj`` – Wavefront OBJ + MTL + texture PNGs (:mod:`meshforge.export.obj`); :func:`export` returns
  them as one ZIP archive.
* ``ply`` – binary little-endian PLY with per-vertex sRGB colours (:mod:`meshforge.export.ply`).
* ``stl`` – binary STL, geometry only (:mod:`meshforge.export.stl`).

All writers take the canonical frame (+Y up, metres, counter-clockwise front faces) and write positions
unchanged.
"""

from __future__ import annotations

import io
import zipfile

from meshforge.errors import InputError
from meshforge.export._common import safe_stem
from meshforge.export.glb import write_glb
from meshforge.export.obj import write_obj_files
from meshforge.export.ply import write_ply
from meshforge.export.stl import write_stl
from meshforge.types import Asset

FORMATS: tuple[str, ...] = ("glb", "obj", "ply", "stl")

# A fixed timestamp makes the OBJ archive byte-for-byte reproducible.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _normalise_format(fmt: str) -> str:
    key = str(fmt).strip().lower().lstrip(".")
    if key not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    return key


def zip_files(files: dict[str, bytes]) -> bytes:
    """Pack ``{name: bytes}`` into a reproducible ZIP archive (PKWARE APPNOTE; fixed timestamps).

    Text files are deflated; PNGs are stored (they are already compressed).
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED if name.lower().endswith(".png") else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def export_files(asset: Asset, fmt: str, stem: str, *, png_compress_level: int = 3) -> dict[str, bytes]:
    """Export an asset as the separate files of a format.

    Args:
        asset: the asset (see :mod:`meshforge.types` for frame and colour conventions).
        fmt: one of :data:`FORMATS` (case-insensitive, a leading dot is ignored).
        stem: base file name without extension; made file-safe (characters outside
            ``[A-Za-z0-9._-]`` become ``_``).
        png_compress_level: zlib level 0–9 for PNG textures (glb, obj).

    Returns:
        ``{file name: bytes}``: for ``obj`` ``<stem>.obj``, ``<stem>.mtl`` and the texture PNGs
        (``<stem>_basecolor.png``, ``<stem>_metallicroughness.png``, ``<stem>_normal.png`` as present);
        for the others the single file ``<stem>.<fmt>``.

    Raises:
        InputError: unknown format (the message lists the choices), or an asset the writers cannot
            write (empty mesh, non-finite values, out-of-range indices or factors, textures without UVs).
    """
    key = _normalise_format(fmt)
    stem = safe_stem(stem)
    if key == "obj":
        return write_obj_files(asset, stem, png_compress_level=png_compress_level)
    if key == "glb":
        data = write_glb(asset, png_compress_level=png_compress_level)
    elif key == "ply":
        data = write_ply(asset)
    else:
        data = write_stl(asset)
    return {f"{stem}.{key}": data}


def export(asset: Asset, fmt: str, *, png_compress_level: int = 3) -> bytes:
    """Export an asset to one blob of bytes.

    Args:
        asset: the asset (see :mod:`meshforge.types` for frame and colour conventions).
        fmt: one of :data:`FORMATS` (case-insensitive, a leading dot is ignored).
        png_compress_level: zlib level 0–9 for PNG textures (glb, obj).

    Returns:
        The file's bytes; for ``obj`` a ZIP archive holding ``<name>.obj``, ``<name>.mtl`` and the
        texture PNG(s), where ``<name>`` is the asset name made file-safe.

    Raises:
        InputError: see :func:`export_files`.
    """
    key = _normalise_format(fmt)
    files = export_files(asset, key, asset.name, png_compress_level=png_compress_level)
    if key == "obj":
        return zip_files(files)
    return next(iter(files.values()))


__all__ = ["FORMATS", "export", "export_files", "zip_files"]
