"""PNG encoding shared by every exporter (one place, so all formats write identical texture bytes).

The texture maps of one result are encoded concurrently by :func:`encode_pngs` on a small thread pool:
Pillow releases the GIL while zlib compresses, so the maps' encodings overlap on separate cores.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np
from PIL import Image as PILImage

from meshforge.errors import InputError
from meshforge.threads import SMALL_POOL_THREADS, LazyThreadPool

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}

#: zlib strategy of the PNG streams: ``Z_RLE`` (3; zlib's ``deflateInit2``: matches at distance 1 only, i.e. runs).
#: PNG's row filters leave mostly small, repetitive residuals, and runs are most of what deflate finds in them:
#: on baked 2048² maps it encodes about a third faster than the default strategy and the files are 6–17 %
#: smaller (a uniform map 74 %); on the shared pictures 20–40 % faster, sizes −17 % to +3 %
#: (``benchmarks/results/png_strategy.md``).
ZLIB_STRATEGY = 3


def encode_png(pixels: np.ndarray, *, compress_level: int = 3, drop_opaque_alpha: bool = False) -> bytes:
    """Encode an 8-bit picture as PNG bytes with Pillow.

    Follows the PNG specification (ISO/IEC 15948, W3C PNG 2nd ed.): 8 bits per channel, colour type 0
    (greyscale), 2 (RGB) or 6 (RGBA), no interlacing, no gamma/ICC chunks (glTF 2.0 §3.8.3 says
    those must be ignored by clients anyway). The row order is the array's: row 0 is the top of the
    image, which is where glTF's UV origin (0, 0) points.

    Args:
        pixels: ``[H, W]`` (greyscale), ``[H, W, 1]``, ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA) uint8.
        compress_level: zlib level 0–9 (Pillow's ``compress_level``; with :data:`ZLIB_STRATEGY`'s runs the
            levels from 1 up give about the same size and speed; 0 stores the data uncompressed).
        drop_opaque_alpha: write RGB instead of RGBA when every alpha value is 255.

    Returns:
        The PNG file as bytes.

    Raises:
        InputError: wrong dtype or shape, an empty picture, or a compress level outside 0–9.
    """
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
        channels = 3
    image = PILImage.fromarray(np.ascontiguousarray(arr))  # mode inferred from the uint8 shape: L / RGB / RGBA
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=int(compress_level), compress_type=ZLIB_STRATEGY)
    return buf.getvalue()


#: threads of the encoding pool (one result has at most four maps)
POOL_THREADS = SMALL_POOL_THREADS
_POOL = LazyThreadPool(POOL_THREADS, "meshforge-png")


def submit_pngs(
    images: Sequence[np.ndarray], *, compress_level: int = 3, drop_opaque_alpha: bool | Sequence[bool] = False
) -> list[Future[bytes]]:
    """Start encoding pictures as PNG on the pool and return at once: one future per picture, in order,
    whose ``result()`` is :func:`encode_png`'s bytes (or raises its :class:`InputError`). Lets a writer
    build the rest of a file while the maps compress.

    Args:
        images, compress_level, drop_opaque_alpha: as :func:`encode_pngs`.

    Raises:
        InputError: the number of flags does not match the number of pictures.
    """
    flags = [drop_opaque_alpha] * len(images) if isinstance(drop_opaque_alpha, bool) else list(drop_opaque_alpha)
    if len(flags) != len(images):
        raise InputError(f"encode_pngs: {len(images)} pictures but {len(flags)} drop_opaque_alpha flags")
    pool = _POOL.get()
    return [
        pool.submit(encode_png, x, compress_level=compress_level, drop_opaque_alpha=f)
        for x, f in zip(images, flags, strict=True)
    ]


def encode_pngs(
    images: Sequence[np.ndarray], *, compress_level: int = 3, drop_opaque_alpha: bool | Sequence[bool] = False
) -> list[bytes]:
    """Encode several pictures as PNG concurrently: :func:`encode_png` of each, on a thread pool of
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
