"""Floors: cheap image filters that imitate a culture without learning anything.

A model shows real transfer only where no floor reaches its judged share at its content SSIM. Each floor takes
the source photo and (for those that borrow from art) a real painting of the target culture.
"""

from __future__ import annotations

import warnings

from typing import Callable

import numpy as np
from PIL import Image, ImageFilter, ImageOps
from skimage import color

Floor = Callable[[Image.Image, "Image.Image | None"], Image.Image]
FLOORS: dict[str, Floor] = {}
NEEDS_ART = {"colour_transfer", "cross_fade"}


def _floor(name: str) -> Callable[[Floor], Floor]:
    def add(fn: Floor) -> Floor:
        FLOORS[name] = fn
        return fn
    return add


def _cover(art: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The painting scaled to cover ``size`` and centre-cropped to it."""
    return ImageOps.fit(art, size, Image.BILINEAR)


@_floor("identity")
def identity(photo: Image.Image, art: Image.Image | None = None) -> Image.Image:
    return photo.copy()


@_floor("greyscale")
def greyscale(photo: Image.Image, art: Image.Image | None = None) -> Image.Image:
    return photo.convert("L").convert("RGB")


@_floor("sepia")
def sepia(photo: Image.Image, art: Image.Image | None = None) -> Image.Image:
    arr = np.asarray(photo, dtype=np.float32)
    matrix = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], dtype=np.float32)
    return Image.fromarray(np.clip(arr @ matrix.T, 0, 255).astype(np.uint8))


@_floor("colour_transfer")
def colour_transfer(photo: Image.Image, art: Image.Image | None) -> Image.Image:
    """Reinhard et al. (2001): the photo's Lab means and spreads matched to the painting's."""
    src = color.rgb2lab(np.asarray(photo, dtype=np.float64) / 255.0)
    ref = color.rgb2lab(np.asarray(art, dtype=np.float64) / 255.0)
    axes = (0, 1)
    out = (src - src.mean(axes)) / (src.std(axes) + 1e-6) * ref.std(axes) + ref.mean(axes)
    with warnings.catch_warnings():  # out-of-gamut colours are clipped on purpose: no warning per photo
        warnings.simplefilter("ignore", UserWarning)
        rgb = color.lab2rgb(out)
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))


@_floor("fake_ink")
def fake_ink(photo: Image.Image, art: Image.Image | None = None) -> Image.Image:
    """A classic "ink" filter: dark edges as strokes over a softened grey wash on warm paper."""
    edges = np.asarray(photo.convert("L").filter(ImageFilter.FIND_EDGES), dtype=np.float32) / 255.0
    wash = np.asarray(photo.convert("L").filter(ImageFilter.GaussianBlur(2)), dtype=np.float32) / 255.0
    ink = np.clip(0.35 + 0.65 * wash - 1.6 * edges, 0, 1)
    paper = np.array([236, 224, 196], dtype=np.float32)
    return Image.fromarray(np.clip(ink[..., None] * paper, 0, 255).astype(np.uint8))


@_floor("cross_fade")
def cross_fade(photo: Image.Image, art: Image.Image | None) -> Image.Image:
    """Half photo, half a real painting."""
    return Image.blend(photo, _cover(art, photo.size), 0.5)


def apply_floor(name: str, photo: Image.Image, art: Image.Image | None) -> Image.Image:
    if name in NEEDS_ART and art is None:
        raise ValueError(f"floor {name} needs a painting")
    return FLOORS[name](photo, art)
