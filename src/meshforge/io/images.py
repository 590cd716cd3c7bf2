"""Decoding input pictures into :class:`~meshforge.types.Image`.

Pillow does the decoding, restricted to a list of raster formats that need no external programs
(no EPS/Ghostscript, no WMF). Every failure becomes a one-line :class:`~meshforge.errors.InputError`
that starts with the file's name; no Pillow or ``OSError`` traceback escapes.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from ..config import InputConfig
from ..errors import InputError, one_line
from ..types import Image

__all__ = ["SUPPORTED_FORMATS", "ImageHeader", "load_image", "probe_image"]

#: Pillow format identifiers ``load_image`` accepts (intersected with what this Pillow build registers).
#: All are decoded by Pillow's own plugins or the C libraries it bundles; formats that shell out to
#: external programs (EPS via Ghostscript) or are rarely-audited containers (PSD, FITS, ...) are left out.
SUPPORTED_FORMATS: tuple[str, ...] = (
    "PNG",
    "JPEG",
    "WEBP",
    "AVIF",
    "GIF",
    "BMP",
    "DIB",
    "TIFF",
    "TGA",
    "PPM",
    "ICO",
    "JPEG2000",
    "QOI",
)

_EXIF_ORIENTATION = 0x0112

# Pillow raises a zoo of exception types on malformed data (OSError, SyntaxError, ValueError,
# struct.error, EOFError, IndexError, ...); everything except these is turned into InputError.
_PASS_THROUGH = (MemoryError, KeyboardInterrupt, SystemExit)


def _formats() -> tuple[str, ...]:
    PILImage.init()
    return tuple(f for f in SUPPORTED_FORMATS if f in PILImage.OPEN)


def load_image(
    source: str | os.PathLike[str] | bytes,
    cfg: InputConfig = InputConfig(),  # noqa: B008 - frozen dataclass, safe as a default
    *,
    name: str | None = None,
) -> Image:
    """Decode a picture file (or its bytes) into an RGBA :class:`~meshforge.types.Image`.

    Decoding is done by Pillow (formats in :data:`SUPPORTED_FORMATS`: PNG, JPEG, WebP, AVIF, GIF, BMP,
    TIFF, TGA, PNM, ICO, JPEG 2000, QOI). The EXIF orientation is applied
    (``PIL.ImageOps.exif_transpose``), and pixels are converted to 8-bit sRGB-encoded RGBA with straight
    alpha:

    * ``RGBA``, ``RGB``, ``LA``, ``L``, ``P`` (palette, with or without transparency), ``1``, ``CMYK``
      (including Adobe-inverted CMYK JPEGs, which Pillow normalises), ``YCbCr`` and ``RGBa``/``La``:
      through Pillow's conversions. No ICC colour management is done (``meta["icc_profile"]`` says
      whether the file carried a profile).
    * 16-bit greyscale (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``): ``round(v * 255 / 65535)`` with
      numpy (Pillow's own ``convert("L")`` clips instead of scaling), so 65535 -> 255 and 32768 -> 128.
    * 32-bit integer greyscale (``I``): treated as a 16-bit container (how Pillow stores 16-bit PNG/PNM
      data) when every value lies in [0, 65535]; otherwise the range min..max is stretched to 0..255.
    * float greyscale (``F``): values in [0, 1] are scaled by 255; any other range is stretched
      min..max to 0..255; NaN becomes 0.
    * 16-bit-per-channel RGB(A) PNGs are reduced to 8 bits by Pillow itself (it keeps the high byte).

    Multi-frame files (GIF, APNG, animated WebP, multi-page TIFF, MPO) use their first frame;
    ``meta["frames"]`` records how many there were.

    Args:
        source: a path, or the encoded bytes of the file.
        cfg: decoding limits (``max_bytes`` on the encoded size, ``max_pixels`` on width·height).
        name: the display name; defaults to the file stem for paths and ``"image"`` for bytes.

    Returns:
        An :class:`Image` whose ``rgba`` is ``[H, W, 4]`` uint8 (H, W after EXIF rotation). ``has_alpha``
        is True only when the source carried an alpha channel (or palette transparency) that is not
        255 everywhere. ``sha256`` is the hex digest of the encoded bytes. ``meta`` holds ``source``,
        ``format``, ``mode``, ``size`` (``[width, height]`` as stored, before EXIF rotation),
        ``exif_orientation`` (1-8, 1 when absent), ``frames`` and ``icc_profile``.

    Raises:
        InputError: with a one-line message starting with the file's name (the path as given, or
            ``name`` for bytes) and saying why: the file is missing or not a regular file, cannot be
            read, is empty or larger than ``cfg.max_bytes``, is not an image in a supported format, has
            a zero width or height, has more pixels than ``cfg.max_pixels`` (checked from the header
            before decoding; Pillow's own decompression-bomb error and warning are refused too), is
            truncated or corrupt (the whole image is decoded; truncated images are never accepted), or
            has an alpha channel that is 0 everywhere.
    """
    data, label, stem, source_desc = _read_source(source, cfg, name)
    digest = hashlib.sha256(data).hexdigest()
    rgba, has_alpha, meta = _decode(data, label, cfg)
    meta["source"] = source_desc
    return Image(rgba=rgba, name=name if name is not None else stem, sha256=digest, has_alpha=has_alpha, meta=meta)


def _read_source(
    source: str | os.PathLike[str] | bytes, cfg: InputConfig, name: str | None
) -> tuple[bytes, str, str, str]:
    """Return ``(data, label for messages, default name, source description)``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "image"
        if len(data) > cfg.max_bytes:
            raise InputError(
                f"{label}: {len(data)} bytes is larger than the limit of {cfg.max_bytes} bytes (max_bytes)"
            )
        if not data:
            raise InputError(f"{label}: empty data, not an image")
        return data, label, "image", "<bytes>"

    try:
        path = Path(os.fspath(source))
    except TypeError:
        raise InputError(f"cannot load an image from a {type(source).__name__}; give a path or bytes") from None
    label = str(path)
    try:
        if not path.exists():
            raise InputError(f"{label}: no such file")
        if not path.is_file():
            kind = "a directory" if path.is_dir() else "not a regular file"
            raise InputError(f"{label}: not a file ({kind})")
        size = path.stat().st_size
        if size > cfg.max_bytes:
            raise InputError(
                f"{label}: file is {size} bytes, larger than the limit of {cfg.max_bytes} bytes (max_bytes)"
            )
        with path.open("rb") as fh:
            data = fh.read(cfg.max_bytes + 1)
    except OSError as exc:
        reason = exc.strerror or one_line(exc)
        raise InputError(f"{label}: cannot read the file ({reason})") from None
    if len(data) > cfg.max_bytes:  # grew while we looked
        raise InputError(f"{label}: file is larger than the limit of {cfg.max_bytes} bytes (max_bytes)")
    if not data:
        raise InputError(f"{label}: empty file, not an image")
    return data, label, path.stem or "image", str(path)


@dataclass(frozen=True)
class ImageHeader:
    """What :func:`probe_image` reads from a picture's header.

    Attributes:
        format: Pillow's format identifier (one of :data:`SUPPORTED_FORMATS`, e.g. ``"PNG"``).
        width: width in pixels, as stored (before any EXIF rotation).
        height: height in pixels, as stored.
        mode: Pillow's pixel mode (``"RGB"``, ``"RGBA"``, ``"P"``, ``"I;16"``, ...).
    """

    format: str
    width: int
    height: int
    mode: str


def probe_image(
    data: bytes,
    cfg: InputConfig = InputConfig(),  # noqa: B008 - frozen dataclass, safe as a default
    *,
    name: str | None = None,
) -> ImageHeader:
    """Check a picture's header and container without decoding its pixels.

    Checked, with the same one-line messages as :func:`load_image`: the size in bytes (``cfg.max_bytes``),
    the format (:data:`SUPPORTED_FORMATS`), a zero width or height, the pixel count (``cfg.max_pixels``,
    and Pillow's decompression-bomb limit), and the container structure as far as Pillow's ``verify()``
    checks it without decoding (for PNG: every chunk's CRC-32 up to ``IEND``, so a file cut short is
    refused; for most other formats ``verify()`` checks nothing more). Memory stays in the order of the
    encoded size: the pixel data is never decompressed, so a 40 MP picture costs no more to probe than a
    small one. Corrupt pixel data (e.g. a PNG whose IDAT is not a valid zlib stream) is only found by
    :func:`load_image`.

    Args:
        data: the encoded file.
        cfg: limits (``max_bytes`` on ``len(data)``, ``max_pixels`` on width·height).
        name: the display name starting every message (``"image"`` when None).

    Returns:
        The :class:`ImageHeader` (format, width, height, mode).

    Raises:
        InputError: one line starting with the name, as documented in :func:`load_image` (except the
            checks that need decoded pixels: corrupt pixel data, a fully transparent alpha channel).
    """
    data, label, _stem, _desc = _read_source(data, cfg, name)
    with _decoder_warnings():
        with _open(data, label, cfg) as im:
            header = ImageHeader(str(im.format or "unknown"), int(im.size[0]), int(im.size[1]), str(im.mode))
            try:
                im.verify()
            except _PASS_THROUGH:
                raise
            except Exception as exc:
                raise InputError(f"{label}: truncated or corrupt {header.format} file ({one_line(exc)})") from None
    return header


@contextmanager
def _decoder_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        # Pillow warns (rather than raises) between MAX_IMAGE_PIXELS and twice that; refuse those too.
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        # Other decoder chatter (palette transparency hints, odd EXIF, ...) is not our user's business.
        warnings.filterwarnings("ignore", category=UserWarning)
        yield


def _open(data: bytes, label: str, cfg: InputConfig) -> PILImage.Image:
    """Open (header only, nothing decoded yet) and check the format, the size and the pixel count."""
    formats = _formats()
    try:
        im = PILImage.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        raise InputError(_unidentified_message(data, label, formats)) from None
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise InputError(f"{label}: refused as a decompression bomb ({one_line(exc)})") from None
    except _PASS_THROUGH:
        raise
    except Exception as exc:
        raise InputError(f"{label}: truncated or corrupt image header ({one_line(exc)})") from None
    width, height = (int(v) for v in im.size)
    if width <= 0 or height <= 0:
        im.close()
        raise InputError(f"{label}: zero-size image ({width}x{height})")
    if width * height > cfg.max_pixels:
        im.close()
        raise InputError(
            f"{label}: {width}x{height} = {width * height} pixels is more than the limit of "
            f"{cfg.max_pixels} (max_pixels)"
        )
    return im


def _decode(data: bytes, label: str, cfg: InputConfig) -> tuple[np.ndarray, bool, dict[str, Any]]:
    with _decoder_warnings():
        im = _open(data, label, cfg)
        with im:
            fmt = str(im.format or "unknown")
            mode = str(im.mode)
            width, height = (int(v) for v in im.size)
            meta: dict[str, Any] = {
                "format": fmt,
                "mode": mode,
                "size": [width, height],
                "icc_profile": bool(im.info.get("icc_profile")),
            }
            try:
                frames = int(getattr(im, "n_frames", 1) or 1)  # may walk the file: inside the guard
                meta["frames"] = frames
                if frames > 1:
                    meta["frame_used"] = 0
                im.seek(0)
                im.load()  # force the full decode: truncated or corrupt data fails here
                orientation = _orientation(im)
                oriented = ImageOps.exif_transpose(im) if orientation != 1 else im
                rgba, had_alpha = _to_rgba(oriented, label)
            except InputError:
                raise
            except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
                raise InputError(f"{label}: refused as a decompression bomb ({one_line(exc)})") from None
            except _PASS_THROUGH:
                raise
            except Exception as exc:
                raise InputError(f"{label}: truncated or corrupt image data ({one_line(exc)})") from None
    meta["exif_orientation"] = orientation
    if rgba.shape[0] == 0 or rgba.shape[1] == 0:
        raise InputError(f"{label}: zero-size image")
    has_alpha = False
    if had_alpha:
        alpha = rgba[..., 3]
        if not alpha.any():
            raise InputError(f"{label}: the alpha channel is fully transparent (alpha is 0 everywhere)")
        has_alpha = bool((alpha != 255).any())
    return rgba, has_alpha, meta


_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (8, b"WEBP", "WebP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"qoif", "QOI"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (0, b"\xffO\xffQ", "JPEG 2000"),
    (4, b"ftypavif", "AVIF"),
    (4, b"ftypavis", "AVIF"),
)
_UNSUPPORTED: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%!PS", "PostScript/EPS"),
    (0, b"%PDF", "PDF"),
    (0, b"8BPS", "Photoshop PSD"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (0, b"<svg", "SVG"),
    (0, b"<?xml", "XML/SVG"),
)


def _sniff(data: bytes, table: tuple[tuple[int, bytes, str], ...]) -> str | None:
    for offset, magic, kind in table:
        if data[offset : offset + len(magic)] == magic:
            return kind
    return None


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, BMP or PNM header, without Pillow (which refuses 0 sizes)."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
            return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
        if data[:2] == b"BM" and len(data) >= 26:
            width = int.from_bytes(data[18:22], "little", signed=True)
            height = int.from_bytes(data[22:26], "little", signed=True)
            return abs(width), abs(height)
        if data[:1] == b"P" and data[1:2] in b"123456" and len(data) > 3:
            fields = re.sub(rb"#[^\n]*", b" ", data[2:64]).split()
            if len(fields) >= 2:
                return int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return None


def _unidentified_message(data: bytes, label: str, formats: tuple[str, ...]) -> str:
    size = _declared_size(data)
    if size is not None and 0 in size:
        return f"{label}: zero-size image ({size[0]}x{size[1]})"
    kind = _sniff(data, _SIGNATURES)
    if kind is not None:
        return f"{label}: truncated or corrupt {kind} data (Pillow cannot read its header)"
    kind = _sniff(data, _UNSUPPORTED)
    if kind is not None:
        return f"{label}: {kind} files are not supported; convert it to PNG or JPEG"
    return f"{label}: not an image, or not in a supported format ({', '.join(formats)})"


def _orientation(im: PILImage.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
        value = int(value)
    except _PASS_THROUGH:
        raise
    except Exception:  # unreadable EXIF: treat as upright
        return 1
    return value if 1 <= value <= 8 else 1


def _to_rgba(im: PILImage.Image, label: str) -> tuple[np.ndarray, bool]:
    """Convert a loaded Pillow image to ``[H, W, 4]`` uint8 RGBA; also say whether it carried alpha."""
    mode = im.mode
    if mode == "RGBA":
        return np.array(im, dtype=np.uint8), True
    if mode == "RGB":
        return _grey_or_rgb_to_rgba(np.asarray(im, dtype=np.uint8)), False
    if mode == "L":
        return _grey_or_rgb_to_rgba(np.asarray(im, dtype=np.uint8)), False
    if mode == "LA":
        la = np.asarray(im, dtype=np.uint8)
        return _grey_or_rgb_to_rgba(la[..., 0], la[..., 1]), True
    if mode == "1":
        return _grey_or_rgb_to_rgba(np.asarray(im.convert("L"), dtype=np.uint8)), False
    if mode in ("P", "PA"):
        transparent = mode == "PA" or "transparency" in im.info or _palette_has_alpha(im)
        if transparent:
            return np.array(im.convert("RGBA"), dtype=np.uint8), True
        return _grey_or_rgb_to_rgba(np.asarray(im.convert("RGB"), dtype=np.uint8)), False
    if mode.startswith("I;16"):
        arr = np.asarray(im)
        return _grey_or_rgb_to_rgba(_scale16(arr.astype(np.uint32))), False
    if mode == "I":
        return _grey_or_rgb_to_rgba(_scale_int32(np.asarray(im, dtype=np.int64))), False
    if mode == "F":
        return _grey_or_rgb_to_rgba(_scale_float(np.asarray(im, dtype=np.float64))), False
    if mode in ("RGBa", "La"):
        return np.array(im.convert("RGBA"), dtype=np.uint8), True
    if mode in ("RGBX", "CMYK", "YCbCr", "HSV", "LAB"):
        return _grey_or_rgb_to_rgba(np.asarray(im.convert("RGB"), dtype=np.uint8)), False
    try:
        converted = im.convert("RGBA")
    except (ValueError, OSError):
        raise InputError(f"{label}: unsupported pixel mode {mode!r}") from None
    return np.array(converted, dtype=np.uint8), False


def _palette_has_alpha(im: PILImage.Image) -> bool:
    palette = im.palette
    return palette is not None and getattr(palette, "mode", "RGB") == "RGBA"


def _grey_or_rgb_to_rgba(color: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    if color.ndim == 2:
        color = color[..., None].repeat(3, axis=2)
    h, w = color.shape[:2]
    out = np.empty((h, w, 4), dtype=np.uint8)
    out[..., :3] = color[..., :3]
    out[..., 3] = 255 if alpha is None else alpha
    return out


def _scale16(values: np.ndarray) -> np.ndarray:
    """Map 16-bit values to 8 bits with rounding: ``round(v * 255 / 65535)``."""
    v = np.clip(values, 0, 65535).astype(np.uint32)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _scale_int32(values: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return values.astype(np.uint8)
    lo, hi = int(values.min()), int(values.max())
    if lo >= 0 and hi <= 65535:
        return _scale16(values)
    return _stretch(values.astype(np.float64), float(lo), float(hi))


def _scale_float(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    clean = np.where(finite, values, 0.0)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    lo, hi = float(clean[finite].min()), float(clean[finite].max())
    if lo >= 0.0 and hi <= 1.0:
        return np.rint(clean * 255.0).astype(np.uint8)
    out = _stretch(clean, lo, hi)
    out[~finite] = 0
    return out


def _stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint(np.clip((values - lo) * (255.0 / (hi - lo)), 0.0, 255.0)).astype(np.uint8)
