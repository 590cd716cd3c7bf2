"""Preprocessing: background policy and removal, then framing."""

from __future__ import annotations

from ..config import PreprocessConfig
from ..types import Image
from .background import needs_removal, remove_background
from .framing import frame

__all__ = ["frame", "needs_removal", "prepare", "remove_background"]


def prepare(image: Image, cfg: PreprocessConfig, size: int) -> Image:
    """Apply the background policy, then frame the object in a ``size × size`` square.

    The policy is :func:`needs_removal` (``cfg.background``): ``"auto"`` keeps a meaningful alpha and
    removes the background otherwise, ``"keep"`` never removes (a picture without alpha is then the
    object edge to edge), ``"remove"`` always removes, ignoring any alpha. Removal is
    :func:`remove_background` with ``cfg.engine``; framing is :func:`frame`.

    Args:
        image: ``rgba`` ``[H, W, 4]`` uint8, as :func:`meshforge.io.images.load_image` returns it.
        cfg: the preprocessing options.
        size: output side in pixels.

    Returns:
        ``[size, size, 4]`` uint8 RGBA with the object centred, its alpha the object mask and the colour
        of transparent pixels bled from the object; ``meta`` gains ``"alpha"`` (``"source"``,
        ``"removed"`` or ``"none"``), plus ``"background"`` (when removed; its ``"quality"`` says
        whether the cut-out is ``"ok"`` or ``"doubtful"``) and ``"frame"``.

    Raises:
        InputError: bad ``cfg.background``/``cfg.engine``/``rembg_model``, no object found, a refused
            cut-out (:class:`~meshforge.preprocess.background.CutoutRefused`), or nothing to frame; see
            :func:`remove_background` and :func:`frame`.
        MissingDependency: the ``rembg`` engine without the ``rembg`` package.
    """
    if needs_removal(image, cfg):
        image = remove_background(image, cfg)
        source = "removed"
    elif image.has_alpha:
        source = "source"
    else:
        source = "none"
        if not bool((image.rgba[..., 3] == 255).all()):
            # "keep" without a meaningful alpha means the whole frame is the object
            rgba = image.rgba.copy()
            rgba[..., 3] = 255
            image = image.replace(rgba=rgba)
    image = image.replace(meta={**image.meta, "alpha": source})
    return frame(image, cfg, size)
