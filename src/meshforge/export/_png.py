"""PNG encoding shared by every exporter (one place, so all formats write identical texture bytes).

The encoder is ours (the PNG specification, ISO/IEC 15948 / W3C PNG 2nd ed., and zlib): each picture's rows
are filtered with PNG's Paeth predictor (filter type 4, on every row) in numpy and deflated with Python's
zlib in horizontal *stripes* that compress independently — each stripe's raw deflate stream ends on a byte
boundary (``Z_SYNC_FLUSH``; the last with ``Z_FINISH``), so the stripes concatenate into one valid zlib stream
behind one header, with the Adler-32 checksums combined (zlib's ``adler32_combine``). This is how pigz
(Mark Adler) parallelises gzip. A stripe filters against the row above it, so the pixels decode exactly.
:func:`submit_pngs` / :func:`encode_pngs` run the stripes of all the maps of a result at once on a thread pool
(numpy and zlib release the GIL), so one 2048² map no longer takes a core's whole encoding time; the stripes
depend only on the picture's size, so the bytes are the same on every machine and thread count.
:func:`encode_png` is the same encoder on the calling thread; :func:`encode_png_pillow` (Pillow's encoder,
which filters each row adaptively) is the reference the tests decode against.
"""

from __future__ import annotations

import functools
import io
import itertools
import os
import struct
import threading
import zlib
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np
from PIL import Image as PILImage

from meshforge.errors import InputError
from meshforge.threads import LazyThreadPool

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # PNG colour types: greyscale, truecolour, truecolour with alpha

#: zlib strategy of the PNG streams: ``Z_RLE`` (3; zlib's ``deflateInit2``: matches at distance 1 only, i.e. runs).
#: PNG's row filters leave mostly small, repetitive residuals, and runs are most of what deflate finds in them:
#: on baked 2048² maps it encodes about a third faster than the default strategy and the files are 6–17 %
#: smaller (a uniform map 74 %); on the shared pictures 20–40 % faster, sizes −17 % to +3 %
#: (``benchmarks/results/png_strategy.md``).
ZLIB_STRATEGY = 3
#: a picture is cut into stripes of about this many filtered bytes (at least one stripe, at most
#: :data:`MAX_STRIPES`): a 1024² RGB map into 6, a 2048² one into 16
STRIPE_BYTES = 512 * 1024
MAX_STRIPES = 16
#: threads of the encoding pool: one per core, at most 16 (three 2048² maps are 48 stripes)
POOL_THREADS = max(1, min(16, os.cpu_count() or 1))
_POOL = LazyThreadPool(POOL_THREADS, "meshforge-png")
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ADLER_BASE = 65521


def _checked(pixels: np.ndarray, compress_level: int, drop_opaque_alpha: bool) -> np.ndarray:
    """The picture as a C-contiguous ``[H, W]`` or ``[H, W, C]`` uint8 array (C 3 or 4), or InputError."""
    if not 0 <= int(compress_level) <= 9:
        raise InputError(f"png compress level must be in 0..9, got {compress_level}")
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8:
        raise InputError(f"PNG pixels must be uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    channels = 1 if arr.ndim == 2 else (arr.shape[2] if arr.ndim == 3 else 0)
    if channels not in _MODES or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"PNG pixels must be [H, W], [H, W, 3] or [H, W, 4] with H, W > 0, got {arr.shape}")
    if channels == 4 and drop_opaque_alpha and bool(np.all(arr[..., 3] == 255)):
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


def stripes(height: int, row_bytes: int) -> list[tuple[int, int]]:
    """The row ranges ``[(r0, r1), …]`` a picture of ``height`` rows of ``row_bytes`` bytes is deflated in:
    about :data:`STRIPE_BYTES` each, at least 1 and at most :data:`MAX_STRIPES` (a function of the size only)."""
    n = max(1, min(MAX_STRIPES, height, (height * row_bytes) // STRIPE_BYTES))
    edges = [round(i * height / n) for i in range(n + 1)]
    return list(itertools.pairwise(edges))


def paeth_filter(rows: np.ndarray, above: np.ndarray, channels: int) -> np.ndarray:
    """PNG filter type 4 (Paeth) of image rows, with the filter-type byte in front of each.

    Args:
        rows: ``[n, W·C]`` uint8 raw scanlines.
        above: ``[n, W·C]`` uint8: the scanline above each (zeros above the picture's first row).
        channels: bytes per pixel ``C`` (the predictor's left neighbour is ``C`` bytes back).

    Returns:
        ``[n, 1 + W·C]`` uint8: ``4`` then ``x − PaethPredictor(a, b, c)`` (mod 256) per byte (PNG spec §9.4:
        ``a`` left, ``b`` above, ``c`` above-left; ties go to ``a``, then ``b``).
    """
    n, width = rows.shape
    a = np.zeros((n, width), dtype=np.int16)
    a[:, channels:] = rows[:, :-channels]
    b = above.astype(np.int16)
    c = np.zeros((n, width), dtype=np.int16)
    c[:, channels:] = above[:, :-channels]
    pa = np.abs(b - c)  # |p − a| with p = a + b − c
    pb = np.abs(a - c)  # |p − b|
    pc = np.abs(a + b - 2 * c)  # |p − c|
    pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c)).astype(np.uint8)
    out = np.empty((n, width + 1), dtype=np.uint8)
    out[:, 0] = 4
    np.subtract(rows, pred, out=out[:, 1:])  # uint8 arithmetic wraps modulo 256
    return out


def _deflate_stripe(
    flat: np.ndarray, r0: int, r1: int, channels: int, level: int, last: bool
) -> tuple[bytes, int, int]:
    """Filter rows ``r0 … r1 − 1`` of the ``[H, W·C]`` scanlines and deflate them as a raw stream that ends on a
    byte boundary (``Z_FINISH`` when ``last``). Returns ``(deflate bytes, Adler-32 of the filtered bytes, their
    length)``."""
    above = flat[r0 - 1 : r1 - 1] if r0 > 0 else np.vstack([np.zeros_like(flat[:1]), flat[: r1 - 1]])
    data = paeth_filter(flat[r0:r1], above, channels).tobytes()
    deflate = zlib.compressobj(level, zlib.DEFLATED, -15, 9, ZLIB_STRATEGY)
    body = deflate.compress(data) + deflate.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    return body, zlib.adler32(data), len(data)


def adler32_combine(adler1: int, adler2: int, length2: int) -> int:
    """The Adler-32 of two byte strings one after the other, from each one's and the second's length (zlib's
    ``adler32_combine``, RFC 1950 §8)."""
    rem = length2 % _ADLER_BASE
    s1 = adler1 & 0xFFFF
    s2 = (rem * s1) % _ADLER_BASE
    s1 = (s1 + (adler2 & 0xFFFF) + _ADLER_BASE - 1) % _ADLER_BASE
    s2 = (s2 + (adler1 >> 16) + (adler2 >> 16) + _ADLER_BASE - rem) % _ADLER_BASE
    return s1 | (s2 << 16)


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))


def _assemble(shape: tuple[int, ...], level: int, parts: Sequence[tuple[bytes, int, int]]) -> bytes:
    """The PNG file: signature, IHDR, one IDAT of the stripes' deflate streams behind a zlib header and before
    the combined Adler-32 (RFC 1950), IEND."""
    height, width = shape[0], shape[1]
    channels = 1 if len(shape) == 2 else shape[2]
    cmf = 0x78  # deflate, 32 KiB window
    flg = (0 if level <= 1 else 1 if level <= 5 else 2 if level == 6 else 3) << 6  # FLEVEL: a hint only
    flg += (31 - (cmf * 256 + flg) % 31) % 31
    adler = 1
    for _, part_adler, length in parts:
        adler = adler32_combine(adler, part_adler, length)
    stream = b"".join([bytes([cmf, flg]), *(body for body, _, _ in parts), struct.pack(">I", adler)])
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPES[channels], 0, 0, 0)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


def _plan(arr: np.ndarray) -> tuple[np.ndarray, int, list[tuple[int, int]]]:
    """A checked picture's ``[H, W·C]`` scanlines, its bytes per pixel ``C`` and its stripes (:func:`stripes`)."""
    flat = arr.reshape(arr.shape[0], -1)
    return flat, 1 if arr.ndim == 2 else arr.shape[2], stripes(flat.shape[0], flat.shape[1] + 1)


def encode_png(pixels: np.ndarray, *, compress_level: int = 3, drop_opaque_alpha: bool = False) -> bytes:
    """Encode an 8-bit picture as PNG bytes, on the calling thread (the module docstring's encoder).

    Follows the PNG specification (ISO/IEC 15948, W3C PNG 2nd ed.): 8 bits per channel, colour type 0
    (greyscale), 2 (RGB) or 6 (RGBA), no interlacing, no gamma/ICC chunks (glTF 2.0 §3.8.3 says
    those must be ignored by clients anyway). The row order is the array's: row 0 is the top of the
    image, which is where glTF's UV origin (0, 0) points. The bytes equal :func:`submit_pngs`'s.

    Args:
        pixels: ``[H, W]`` (greyscale), ``[H, W, 1]``, ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA) uint8.
        compress_level: zlib level 0–9 (with :data:`ZLIB_STRATEGY`'s runs the levels from 1 up give about the
            same size and speed; 0 stores the data uncompressed).
        drop_opaque_alpha: write RGB instead of RGBA when every alpha value is 255.

    Returns:
        The PNG file as bytes.

    Raises:
        InputError: wrong dtype or shape, an empty picture, or a compress level outside 0–9.
    """
    arr = _checked(pixels, compress_level, drop_opaque_alpha)
    flat, channels, spans = _plan(arr)
    level = int(compress_level)
    parts = [_deflate_stripe(flat, r0, r1, channels, level, i == len(spans) - 1) for i, (r0, r1) in enumerate(spans)]
    return _assemble(arr.shape, level, parts)


def encode_png_pillow(pixels: np.ndarray, *, compress_level: int = 3, drop_opaque_alpha: bool = False) -> bytes:
    """The reference encoder: the same picture through Pillow's PNG writer (adaptive row filters, one zlib
    stream, :data:`ZLIB_STRATEGY`). Arguments and errors as :func:`encode_png`; decodes to the same pixels."""
    arr = _checked(pixels, compress_level, drop_opaque_alpha)
    image = PILImage.fromarray(arr)  # mode inferred from the uint8 shape: L / RGB / RGBA
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=int(compress_level), compress_type=ZLIB_STRATEGY)
    return buf.getvalue()


def _submit_one(arr: np.ndarray, level: int) -> Future[bytes]:
    """Start one picture's stripes on the pool; the returned future is completed by the last stripe to finish
    (its thread assembles the file), so no pool thread ever waits on another."""
    flat, channels, spans = _plan(arr)
    out: Future[bytes] = Future()
    parts: list[tuple[bytes, int, int] | None] = [None] * len(spans)
    left = [len(spans)]
    lock = threading.Lock()

    def done(i: int, f: Future[tuple[bytes, int, int]]) -> None:
        exc = f.exception()
        with lock:
            if out.done():
                return
            if exc is not None:
                out.set_exception(exc)
                return
            parts[i] = f.result()
            left[0] -= 1
            finished = left[0] == 0
        if finished:
            try:
                out.set_result(_assemble(arr.shape, level, [p for p in parts if p is not None]))
            except Exception as err:  # pragma: no cover - assembly of checked stripes does not fail
                out.set_exception(err)

    pool = _POOL.get()
    for i, (r0, r1) in enumerate(spans):
        f = pool.submit(_deflate_stripe, flat, r0, r1, channels, level, i == len(spans) - 1)
        f.add_done_callback(functools.partial(done, i))
    return out


def submit_pngs(
    images: Sequence[np.ndarray], *, compress_level: int = 3, drop_opaque_alpha: bool | Sequence[bool] = False
) -> list[Future[bytes]]:
    """Start encoding pictures as PNG on the pool and return at once: one future per picture, in order,
    whose ``result()`` is :func:`encode_png`'s bytes. Every stripe of every picture is a task of its own, so
    the pictures' encodings overlap each other and a large one spreads over the pool's threads. Lets a writer
    build the rest of a file while the maps compress.

    Args:
        images, compress_level, drop_opaque_alpha: as :func:`encode_pngs`.

    Raises:
        InputError: as :func:`encode_png`, for the first bad picture in the input order (before any encoding
            starts); or a number of flags that does not match the number of pictures.
    """
    flags = [drop_opaque_alpha] * len(images) if isinstance(drop_opaque_alpha, bool) else list(drop_opaque_alpha)
    if len(flags) != len(images):
        raise InputError(f"encode_pngs: {len(images)} pictures but {len(flags)} drop_opaque_alpha flags")
    arrays = [_checked(x, compress_level, f) for x, f in zip(images, flags, strict=True)]
    return [_submit_one(arr, int(compress_level)) for arr in arrays]


def encode_pngs(
    images: Sequence[np.ndarray], *, compress_level: int = 3, drop_opaque_alpha: bool | Sequence[bool] = False
) -> list[bytes]:
    """Encode several pictures as PNG concurrently: :func:`encode_png` of each, their stripes on a thread pool of
    :data:`POOL_THREADS` threads; the bytes are exactly the sequential ones, in the input order.

    Args:
        images: uint8 pictures, each as :func:`encode_png` takes it.
        compress_level: zlib level 0–9 for all of them.
        drop_opaque_alpha: one flag for all, or one per picture.

    Returns:
        One PNG file (bytes) per picture.

    Raises:
        InputError: as :func:`encode_png`, for the first bad picture in the input order; or a number of
            flags that does not match the number of pictures.
    """
    return [f.result() for f in submit_pngs(images, compress_level=compress_level, drop_opaque_alpha=drop_opaque_alpha)]
