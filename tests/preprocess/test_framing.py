"""Tests for meshforge.preprocess.framing.frame and meshforge.preprocess.prepare."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from meshforge.config import PreprocessConfig
from meshforge.errors import InputError
from meshforge.io.images import load_image
from meshforge.preprocess import frame, prepare
from meshforge.preprocess.framing import ALPHA_THRESHOLD, object_bbox
from meshforge.types import Image

OBJECT = (200, 50, 30)
GREEN = (0, 255, 0)  # garish "background" colour hidden under the transparent pixels


def rect_image(width: int = 300, height: int = 200, box: tuple[int, int, int, int] = (40, 120, 100, 160)) -> Image:
    """A transparent picture with an opaque rectangle ``box = (x0, y0, x1, y1)``; green RGB elsewhere."""
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[..., :3] = GREEN
    x0, y0, x1, y1 = box
    rgba[y0:y1, x0:x1, :3] = OBJECT
    rgba[y0:y1, x0:x1, 3] = 255
    return Image(rgba=rgba, name="rect", has_alpha=True)


def bbox_stats(rgba: np.ndarray) -> tuple[int, float, float]:
    box = object_bbox(rgba[..., 3])
    assert box is not None
    x0, y0, x1, y1 = box
    return max(x1 - x0, y1 - y0), (x0 + x1) / 2.0, (y0 + y1) / 2.0


@pytest.mark.parametrize(("size", "ratio"), [(256, 0.8), (512, 0.85), (64, 1.0), (128, 0.3)])
def test_object_is_scaled_and_centred(size: int, ratio: float) -> None:
    out = frame(rect_image(), PreprocessConfig(foreground_ratio=ratio), size)
    assert out.rgba.shape == (size, size, 4) and out.rgba.dtype == np.uint8
    long_side, cx, cy = bbox_stats(out.rgba)
    assert abs(long_side - ratio * size) <= 1.5
    assert abs(cx - size / 2) <= 1.0 and abs(cy - size / 2) <= 1.0


def test_meta_records_crop_scale_and_padding() -> None:
    size, ratio = 256, 0.8
    out = frame(rect_image(), PreprocessConfig(foreground_ratio=ratio), size)
    info = out.meta["frame"]
    assert info["crop_box"] == [40, 120, 100, 160]
    assert info["scale"] == pytest.approx(ratio * size / 60)
    assert info["size"] == size and info["foreground_ratio"] == ratio and info["alpha_threshold"] == ALPHA_THRESHOLD
    left, top, right, bottom = info["padding"]
    assert left == pytest.approx(right) and top == pytest.approx(bottom)
    assert left == pytest.approx((1 - ratio) / 2 * size)
    # out = src * scale + offset maps the crop box onto the measured object box
    ox, oy = info["offset"]
    x0, y0, x1, y1 = object_bbox(out.rgba[..., 3])  # type: ignore[misc]
    assert abs(40 * info["scale"] + ox - x0) <= 1 and abs(100 * info["scale"] + ox - x1) <= 1
    assert abs(120 * info["scale"] + oy - y0) <= 1 and abs(160 * info["scale"] + oy - y1) <= 1


def test_no_background_fringe() -> None:
    """Transparent pixels' green must not bleed into the object or its surroundings."""
    out = frame(rect_image(), PreprocessConfig(foreground_ratio=0.8), 200)
    rgb = out.rgba[..., :3].astype(int)
    # every pixel, transparent or not, carries the object's colour (bled outward), never green
    assert np.abs(rgb - OBJECT).max() <= 2
    alpha = out.rgba[..., 3]
    assert (alpha == 0).any() and ((alpha > 0) & (alpha < 255)).any()


def test_upscaling_small_object_keeps_color() -> None:
    img = rect_image(64, 64, (27, 30, 37, 36))  # 10 x 6 px object, scaled up ~44x
    out = frame(img, PreprocessConfig(foreground_ratio=0.85), 512)
    long_side, cx, cy = bbox_stats(out.rgba)
    # Lanczos ringing at the corners of so coarse a source widens the box by a few output pixels
    assert abs(long_side - 0.85 * 512) <= 0.01 * 512 and abs(cx - 256) <= 1 and abs(cy - 256) <= 1
    assert np.abs(out.rgba[..., :3].astype(int) - OBJECT).max() <= 2


def test_object_touching_the_border_is_padded_with_transparency() -> None:
    img = rect_image(100, 50, (0, 0, 100, 50))  # the object fills the picture
    out = frame(img, PreprocessConfig(foreground_ratio=0.5), 100)
    long_side, cx, cy = bbox_stats(out.rgba)
    assert abs(long_side - 50) <= 1 and abs(cx - 50) <= 1 and abs(cy - 50) <= 1
    assert out.rgba[0, 0, 3] == 0 and out.rgba[50, 50, 3] == 255


def test_opaque_picture_is_the_object() -> None:
    rgba = np.full((30, 60, 4), 255, np.uint8)
    out = frame(Image(rgba=rgba, name="plain"), PreprocessConfig(foreground_ratio=0.9), 120)
    long_side, _, cy = bbox_stats(out.rgba)
    assert abs(long_side - 108) <= 1 and abs(cy - 60) <= 1


def test_refuses_nothing_to_frame() -> None:
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 3] = 100  # everything under half opacity
    with pytest.raises(InputError) as info:
        frame(Image(rgba=rgba, name="ghost"), PreprocessConfig(), 64)
    assert str(info.value).startswith("ghost:") and "nothing to frame" in str(info.value)


def test_refuses_bad_size() -> None:
    with pytest.raises(InputError, match="size"):
        frame(rect_image(), PreprocessConfig(), 0)


# -- real images -------------------------------------------------------------------------------------


def ring_outside(alpha: np.ndarray, width: int = 3) -> np.ndarray:
    solid = alpha >= ALPHA_THRESHOLD
    return ndi.binary_dilation(solid, iterations=width) & ~solid


@pytest.mark.parametrize("filename", ["triposr__chair.png", "triposr__robot.png"])
def test_real_cutout_framing(shared_images: Path, filename: str) -> None:
    src = load_image(shared_images / filename)
    out = prepare(src, PreprocessConfig(), 256)
    assert out.meta["alpha"] == "source" and "background" not in out.meta
    long_side, cx, cy = bbox_stats(out.rgba)
    assert abs(long_side - 0.85 * 256) <= 1.5 and abs(cx - 128) <= 1 and abs(cy - 128) <= 1
    # the cut-outs hide black under their transparent pixels: none of it may surround the silhouette
    alpha = out.rgba[..., 3]
    ring = ring_outside(alpha)
    solid = alpha >= ALPHA_THRESHOLD
    _, (iy, ix) = ndi.distance_transform_edt(~solid, return_indices=True)
    nearest = out.rgba[iy, ix, :3].astype(int)
    np.testing.assert_array_equal(out.rgba[ring][:, :3], nearest[ring])
    transparent = alpha == 0
    assert np.array_equal(out.rgba[transparent][:, :3], nearest[transparent])


def test_prepare_teapot_removes_grey(shared_images: Path) -> None:
    src = load_image(shared_images / "triposr__teapot_graybg.png")
    out = prepare(src, PreprocessConfig(), 320)
    assert out.meta["alpha"] == "removed" and out.meta["background"]["engine"] == "grabcut"
    long_side, cx, cy = bbox_stats(out.rgba)
    assert abs(long_side - 0.85 * 320) <= 1.5 and abs(cx - 160) <= 1 and abs(cy - 160) <= 1
    rgb = out.rgba[..., :3].astype(int)
    grey = np.abs(rgb - 127).max(axis=2) <= 6
    # neither the object nor the pixels just outside its silhouette carry the grey backdrop
    alpha = out.rgba[..., 3]
    assert np.count_nonzero(grey & (alpha >= ALPHA_THRESHOLD)) < 0.01 * np.count_nonzero(alpha >= ALPHA_THRESHOLD)
    ring = ring_outside(alpha)
    assert np.count_nonzero(grey & ring) < 0.01 * np.count_nonzero(ring)
    assert np.count_nonzero(grey) < 0.01 * grey.size


def test_prepare_keep_uses_whole_frame(shared_images: Path) -> None:
    src = load_image(shared_images / "skimage__coffee_photo.png")
    out = prepare(src, PreprocessConfig(background="keep", foreground_ratio=1.0), 300)
    assert out.meta["alpha"] == "none" and "background" not in out.meta
    x0, y0, x1, y1 = object_bbox(out.rgba[..., 3])  # type: ignore[misc]
    assert (x0, x1) == (0, 300) and abs((y1 - y0) - 200) <= 1  # the 3:2 photo fills the width


def test_prepare_remove_overrides_alpha(shared_images: Path) -> None:
    src = load_image(shared_images / "triposr__hamburger.png")
    out = prepare(src, PreprocessConfig(background="remove"), 128)
    assert out.meta["alpha"] == "removed" and out.rgba.shape == (128, 128, 4)
