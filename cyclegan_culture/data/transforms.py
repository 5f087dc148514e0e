"""Training-time preprocessing, with the sizes the reference computes, driven by an explicit RNG.

Each sample draws its crop and flip from its own ``random.Random``, so results do not depend on worker
processes or on where a resumed run starts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image

SIZE_PRESERVING = ("none", "scale_width")  # these give images of varying size: batch size 1 only


@dataclass(frozen=True)
class Preprocess:
    preprocess: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True
    min_size: int = 8  # size-preserving modes enlarge smaller images to this (options.min_image_size)

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        mode = self.preprocess
        if mode == "resize_and_crop":
            img = img.resize((self.load_size, self.load_size), Image.BICUBIC)
        elif mode in ("scale_width", "scale_width_and_crop"):
            img = scale_width(img, self.load_size, self.crop_size)
        if mode in SIZE_PRESERVING:  # sizes the networks can take: a multiple of 4, at least min_size
            img = make_multiple(upscale_to_fit(img, self.min_size), 4)
        if "crop" in mode:
            img = random_crop(upscale_to_fit(img, self.crop_size), self.crop_size, rng)
        if self.flip and rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return img


def scale_width(img: Image.Image, target_width: int, crop_size: int) -> Image.Image:
    """Width to ``target_width``, keeping the aspect ratio, but at least ``crop_size`` high (as the reference)."""
    ow, oh = img.size
    if ow == target_width and oh >= crop_size:
        return img
    h = int(max(target_width * oh / ow, crop_size))
    return img.resize((target_width, h), Image.BICUBIC)


def make_multiple(img: Image.Image, base: int) -> Image.Image:
    """Round width and height to the nearest multiple of ``base`` (at least ``base``)."""
    ow, oh = img.size
    w, h = max(base, int(round(ow / base) * base)), max(base, int(round(oh / base) * base))
    return img if (w, h) == (ow, oh) else img.resize((w, h), Image.BICUBIC)


def upscale_to_fit(img: Image.Image, size: int) -> Image.Image:
    """An image smaller than the crop is enlarged (aspect kept) so the crop fits, instead of failing."""
    w, h = img.size
    if w >= size and h >= size:
        return img
    scale = size / min(w, h)
    return img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)


def random_crop(img: Image.Image, size: int, rng: random.Random) -> Image.Image:
    w, h = img.size
    x = rng.randint(0, w - size)
    y = rng.randint(0, h - size)
    return img.crop((x, y, x + size, y + size))
