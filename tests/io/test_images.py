"""Tests for meshforge.io.images.load_image: modes, EXIF orientation, refusals, real files."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageFile

from meshforge.config import InputConfig
from meshforge.errors import InputError
from meshforge.io.images import load_image

CUTOUTS = [
    "triposr__chair.png",
    "triposr__robot.png",
    "triposr__hamburger.png",
    "trellis__typical_misc_lantern.png",
    "trellis2__typewriter_65433d02.webp",
]


def encode(im: PILImage.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- pixel modes -------------------------------------------------------------------------------------


def test_rgba_png_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    path = write(tmp_path, "rgba.png", encode(PILImage.fromarray(arr), "PNG"))
    img = load_image(path)
    assert img.rgba.shape == (7, 5, 4) and img.rgba.dtype == np.uint8
    np.testing.assert_array_equal(img.rgba, arr)
    assert img.has_alpha
    assert img.meta["mode"] == "RGBA" and img.meta["format"] == "PNG" and img.meta["size"] == [5, 7]


def test_rgba_all_opaque_is_not_meaningful_alpha(tmp_path: Path) -> None:
    arr = np.full((4, 4, 4), 200, np.uint8)
    arr[..., 3] = 255
    img = load_image(write(tmp_path, "opaque.png", encode(PILImage.fromarray(arr), "PNG")))
    assert not img.has_alpha
    assert (img.rgba[..., 3] == 255).all()


def test_rgb_png(tmp_path: Path) -> None:
    arr = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3) * 7
    img = load_image(write(tmp_path, "rgb.png", encode(PILImage.fromarray(arr), "PNG")))
    np.testing.assert_array_equal(img.rgba[..., :3], arr)
    assert (img.rgba[..., 3] == 255).all() and not img.has_alpha


def test_la_png(tmp_path: Path) -> None:
    grey = np.array([[0, 100], [200, 255]], np.uint8)
    alpha = np.array([[255, 0], [128, 255]], np.uint8)
    im = PILImage.merge("LA", [PILImage.fromarray(grey), PILImage.fromarray(alpha)])
    img = load_image(write(tmp_path, "la.png", encode(im, "PNG")))
    assert img.meta["mode"] == "LA"
    for c in range(3):
        np.testing.assert_array_equal(img.rgba[..., c], grey)
    np.testing.assert_array_equal(img.rgba[..., 3], alpha)
    assert img.has_alpha


def test_l_png(tmp_path: Path) -> None:
    grey = np.array([[0, 1, 127], [128, 254, 255]], np.uint8)
    img = load_image(write(tmp_path, "l.png", encode(PILImage.fromarray(grey), "PNG")))
    assert img.meta["mode"] == "L"
    np.testing.assert_array_equal(img.rgba[..., :3], np.repeat(grey[..., None], 3, axis=2))
    assert not img.has_alpha


def _palette_image() -> PILImage.Image:
    im = PILImage.new("P", (3, 2))
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    im.putdata([0, 1, 2, 2, 1, 0])
    return im


def test_palette_without_transparency(tmp_path: Path) -> None:
    img = load_image(write(tmp_path, "p.png", encode(_palette_image(), "PNG")))
    assert img.meta["mode"] == "P"
    assert img.rgba[0, 0].tolist() == [255, 0, 0, 255]
    assert img.rgba[0, 1].tolist() == [0, 255, 0, 255]
    assert img.rgba[0, 2].tolist() == [0, 0, 255, 255]
    assert not img.has_alpha


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency(tmp_path: Path, fmt: str) -> None:
    data = encode(_palette_image(), fmt, transparency=1)
    img = load_image(write(tmp_path, f"pt.{fmt.lower()}", data))
    assert img.has_alpha
    alpha = img.rgba[..., 3]
    np.testing.assert_array_equal(alpha, np.array([[255, 0, 255], [255, 0, 255]]))
    assert img.rgba[0, 0, :3].tolist() == [255, 0, 0]
    assert img.rgba[0, 2, :3].tolist() == [0, 0, 255]


def test_bilevel_mode_1(tmp_path: Path) -> None:
    bits = np.array([[0, 1, 1], [1, 0, 0]], bool)
    im = PILImage.fromarray(bits.astype(np.uint8) * 255).convert("1")
    img = load_image(write(tmp_path, "bw.png", encode(im, "PNG")))
    assert img.meta["mode"] == "1"
    np.testing.assert_array_equal(img.rgba[..., 0], bits.astype(np.uint8) * 255)
    assert (img.rgba[..., 3] == 255).all()


SIXTEEN = np.array([[0, 257, 32768, 65535]], np.uint16)
SIXTEEN_8 = [0, 1, 128, 255]


def test_16bit_grey_png(tmp_path: Path) -> None:
    im = PILImage.fromarray(SIXTEEN)
    img = load_image(write(tmp_path, "g16.png", encode(im, "PNG")))
    assert img.meta["mode"].startswith("I;16")
    assert img.rgba[0, :, 0].tolist() == SIXTEEN_8
    assert img.rgba[0, :, 2].tolist() == SIXTEEN_8


def test_16bit_big_endian_tiff(tmp_path: Path) -> None:
    im = PILImage.frombytes("I;16B", (4, 1), SIXTEEN.astype(">u2").tobytes())
    img = load_image(write(tmp_path, "g16b.tif", encode(im, "TIFF")))
    assert img.meta["mode"] == "I;16B"
    assert img.rgba[0, :, 1].tolist() == SIXTEEN_8


def test_16bit_pgm_opens_as_mode_i(tmp_path: Path) -> None:
    header = b"P5\n4 1\n65535\n"
    img = load_image(write(tmp_path, "g16.pgm", header + SIXTEEN.astype(">u2").tobytes()))
    assert img.meta["mode"] in ("I", "I;16", "I;16B")
    assert img.rgba[0, :, 0].tolist() == SIXTEEN_8


def test_32bit_int_out_of_16bit_range_is_stretched(tmp_path: Path) -> None:
    im = PILImage.fromarray(np.array([[-100, 0, 100, 100_000 - 100]], np.int32))
    img = load_image(write(tmp_path, "i32.tif", encode(im, "TIFF")))
    assert img.meta["mode"] == "I"
    values = img.rgba[0, :, 0].tolist()
    assert values[0] == 0 and values[-1] == 255 and values == sorted(values)


def test_float_unit_range(tmp_path: Path) -> None:
    im = PILImage.fromarray(np.array([[0.0, 0.25, 0.5, 1.0]], np.float32))
    img = load_image(write(tmp_path, "f.tif", encode(im, "TIFF")))
    assert img.meta["mode"] == "F"
    assert img.rgba[0, :, 0].tolist() == [0, 64, 128, 255]


def test_float_other_range_is_stretched(tmp_path: Path) -> None:
    im = PILImage.fromarray(np.array([[-1.0, 1.0, 3.0]], np.float32))
    img = load_image(write(tmp_path, "f2.tif", encode(im, "TIFF")))
    assert img.rgba[0, :, 0].tolist() == [0, 128, 255]


def test_16bit_rgba_png(tmp_path: Path) -> None:
    arr = np.zeros((2, 2, 4), np.uint16)
    arr[..., 3] = 65535
    arr[0, 0] = (65535, 32768, 0, 32768)
    ok, enc = cv2.imencode(".png", arr[..., [2, 1, 0, 3]])  # OpenCV writes BGRA
    assert ok
    img = load_image(write(tmp_path, "rgba16.png", enc.tobytes()))
    assert img.rgba[0, 0].tolist() == [255, 128, 0, 128]
    assert img.rgba[1, 1].tolist() == [0, 0, 0, 255]
    assert img.has_alpha


def test_16bit_rgb_png(tmp_path: Path) -> None:
    arr = np.zeros((2, 2, 3), np.uint16)
    arr[0, 1] = (65535, 32768, 257 * 10)
    ok, enc = cv2.imencode(".png", arr[..., ::-1])
    assert ok
    img = load_image(write(tmp_path, "rgb16.png", enc.tobytes()))
    assert img.rgba[0, 1].tolist() == [255, 128, 10, 255]
    assert not img.has_alpha


def test_cmyk_jpeg_adobe_inverted(tmp_path: Path) -> None:
    # Pillow writes CMYK JPEGs with an Adobe APP14 marker and inverted (Photoshop-style) samples.
    im = PILImage.new("CMYK", (16, 16), (255, 0, 0, 0))
    data = encode(im, "JPEG", quality=95)
    with PILImage.open(io.BytesIO(data)) as check:
        assert "adobe" in check.info
    img = load_image(write(tmp_path, "cmyk.jpg", data))
    assert img.meta["mode"] == "CMYK"
    r, g, b = img.rgba[8, 8, :3].astype(int)
    assert r < 10 and g > 245 and b > 245  # pure cyan


def test_cmyk_tiff(tmp_path: Path) -> None:
    im = PILImage.new("CMYK", (4, 4), (0, 255, 0, 0))
    img = load_image(write(tmp_path, "cmyk.tif", encode(im, "TIFF")))
    assert img.rgba[0, 0].tolist() == [255, 0, 255, 255]  # magenta


def test_rgb_jpeg(tmp_path: Path) -> None:
    im = PILImage.new("RGB", (16, 16), (200, 30, 60))
    img = load_image(write(tmp_path, "rgb.jpg", encode(im, "JPEG", quality=95)))
    assert np.abs(img.rgba[8, 8, :3].astype(int) - [200, 30, 60]).max() <= 3
    assert img.meta["format"] == "JPEG" and not img.has_alpha


def test_lossless_webp_rgba(tmp_path: Path) -> None:
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[2:6, 2:6] = (10, 200, 30, 255)
    img = load_image(write(tmp_path, "a.webp", encode(PILImage.fromarray(arr), "WEBP", lossless=True)))
    assert img.has_alpha
    np.testing.assert_array_equal(img.rgba[2:6, 2:6], arr[2:6, 2:6])
    assert (img.rgba[0, 0, 3] == 0) and img.meta["format"] == "WEBP"


def test_multiframe_gif_uses_first_frame(tmp_path: Path) -> None:
    frames = [PILImage.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    img = load_image(write(tmp_path, "anim.gif", buf.getvalue()))
    assert img.meta["frames"] == 2 and img.meta["frame_used"] == 0
    assert img.rgba[3, 3, :3].tolist() == [255, 0, 0]


# -- EXIF orientation --------------------------------------------------------------------------------


def _quadrants(h: int, w: int) -> np.ndarray:
    arr = np.zeros((h, w, 3), np.uint8)
    arr[: h // 2, : w // 2] = (255, 0, 0)
    arr[: h // 2, w // 2 :] = (0, 255, 0)
    arr[h // 2 :, : w // 2] = (0, 0, 255)
    arr[h // 2 :, w // 2 :] = (255, 255, 0)
    return arr


def _oriented(arr: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows for stored pixels ``arr`` under EXIF orientation 1-8 (TIFF/EXIF 2.3 spec)."""
    transpose = np.transpose(arr, (1, 0, 2))
    return {
        1: arr,
        2: arr[:, ::-1],
        3: arr[::-1, ::-1],
        4: arr[::-1],
        5: transpose,
        6: np.rot90(arr, k=-1),  # rotate 90° clockwise
        7: transpose[::-1, ::-1],
        8: np.rot90(arr, k=1),  # rotate 90° counter-clockwise
    }[orientation]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg(tmp_path: Path, orientation: int) -> None:
    stored = _quadrants(32, 48)
    im = PILImage.fromarray(stored)
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    img = load_image(write(tmp_path, f"o{orientation}.jpg", encode(im, "JPEG", quality=95, exif=exif.tobytes())))
    expected = _oriented(stored, orientation)
    assert img.rgba.shape[:2] == expected.shape[:2]
    assert img.meta["exif_orientation"] == orientation
    assert img.meta["size"] == [48, 32]
    h, w = expected.shape[:2]
    for y in (h // 4, 3 * h // 4):
        for x in (w // 4, 3 * w // 4):
            diff = np.abs(img.rgba[y, x, :3].astype(int) - expected[y, x].astype(int)).max()
            assert diff <= 12, (orientation, y, x, img.rgba[y, x], expected[y, x])


# -- provenance --------------------------------------------------------------------------------------


def test_sha256_name_and_bytes_input(tmp_path: Path) -> None:
    data = encode(PILImage.new("RGB", (3, 3), (1, 2, 3)), "PNG")
    path = write(tmp_path, "my_object.png", data)
    img = load_image(path)
    assert img.sha256 == hashlib.sha256(data).hexdigest()
    assert img.name == "my_object"
    assert img.meta["source"] == str(path)
    assert load_image(path, name="other").name == "other"
    from_bytes = load_image(data)
    assert from_bytes.sha256 == img.sha256 and from_bytes.name == "image" and from_bytes.meta["source"] == "<bytes>"
    np.testing.assert_array_equal(from_bytes.rgba, img.rgba)


# -- refusals ----------------------------------------------------------------------------------------


def refuse(source: object, reason: str, label: str, cfg: InputConfig | None = None, **kw: object) -> str:
    with pytest.raises(InputError) as info:
        load_image(source, cfg or InputConfig(), **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(label), message
    assert reason in message, message
    return message


def test_refuses_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.png"
    refuse(path, "no such file", str(path))


def test_refuses_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.png"
    folder.mkdir()
    refuse(folder, "not a file", str(folder))


def test_refuses_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.png", b"")
    refuse(path, "empty", str(path))


def test_refuses_file_larger_than_max_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "big.png", encode(PILImage.new("RGB", (64, 64)), "PNG"))
    refuse(path, "larger than the limit", str(path), InputConfig(max_bytes=50))
    refuse(path.read_bytes(), "larger than the limit", "big.png", InputConfig(max_bytes=50), name="big.png")


def test_refuses_non_image(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.txt", b"this is not a picture at all\n" * 4)
    refuse(path, "not an image", str(path))


def test_refuses_unsupported_format_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, "doc.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n")
    refuse(path, "PDF files are not supported", str(path))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_refuses_truncated(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(1)
    im = PILImage.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    if fmt == "GIF":
        im = im.convert("P")
    data = encode(im, fmt)
    path = write(tmp_path, f"cut.{fmt.lower()}", data[: len(data) // 2])
    refuse(path, "truncated", str(path))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_refuses_truncated_header(tmp_path: Path) -> None:
    data = encode(PILImage.new("RGB", (8, 8)), "PNG")
    path = write(tmp_path, "head.png", data[:30])
    refuse(path, "truncated or corrupt PNG", str(path))


def test_refuses_corrupt_png_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    data = bytearray(encode(PILImage.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "PNG"))
    idat = data.index(b"IDAT")
    for i in range(idat + 20, idat + 400, 7):  # scramble the compressed stream, keep the length
        data[i] ^= 0x5A
    path = write(tmp_path, "scrambled.png", bytes(data))
    refuse(path, "corrupt", str(path))


def test_refuses_too_many_pixels_before_decoding(tmp_path: Path) -> None:
    path = write(tmp_path, "wide.png", encode(PILImage.new("RGB", (100, 20)), "PNG"))
    refuse(path, "more than the limit of 1999", str(path), InputConfig(max_pixels=1999))


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_refuses_pillow_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
    cfg = InputConfig(max_pixels=10**12)
    error = write(tmp_path, "bomb.png", _png_header_only(100, 100))  # > 2 x limit: Pillow raises
    refuse(error, "decompression bomb", str(error), cfg)
    warn = write(tmp_path, "bomb_warning.png", encode(PILImage.new("L", (50, 30)), "PNG"))  # 1500: Pillow warns
    refuse(warn, "decompression bomb", str(warn), cfg)


def test_refuses_zero_size(tmp_path: Path) -> None:
    path = write(tmp_path, "zero.png", _png_header_only(0, 10))
    refuse(path, "zero-size", str(path))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_refuses_fully_transparent(tmp_path: Path, mode: str) -> None:
    im = PILImage.new(mode, (8, 8), (200, 0, 0, 0) if mode == "RGBA" else (200, 0))
    path = write(tmp_path, f"clear_{mode}.png", encode(im, "PNG"))
    refuse(path, "fully transparent", str(path))


def test_bytes_refusal_uses_given_name() -> None:
    refuse(b"GIF89a\x01", "truncated or corrupt GIF", "upload.gif", name="upload.gif")


# -- real images -------------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", CUTOUTS)
def test_real_cutouts_keep_alpha(shared_images: Path, filename: str) -> None:
    img = load_image(shared_images / filename)
    assert img.has_alpha
    with PILImage.open(shared_images / filename) as ref:
        expected = np.asarray(ref.convert("RGBA"))
    np.testing.assert_array_equal(img.rgba[..., 3], expected[..., 3])
    solid = expected[..., 3] > 0
    np.testing.assert_array_equal(img.rgba[solid], expected[solid])
    assert 0.05 < float((img.rgba[..., 3] > 127).mean()) < 0.95


@pytest.mark.parametrize(
    ("filename", "size"), [("triposr__teapot_graybg.png", (874, 874)), ("skimage__coffee_photo.png", (400, 600))]
)
def test_real_opaque_photos(shared_images: Path, filename: str, size: tuple[int, int]) -> None:
    img = load_image(shared_images / filename)
    assert img.rgba.shape[:2] == size
    assert not img.has_alpha and (img.rgba[..., 3] == 255).all()
    assert img.meta["mode"] == "RGB"
