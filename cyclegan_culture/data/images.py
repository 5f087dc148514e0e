"""Open any image file safely as RGB, and convert between PIL images and [-1, 1] tensors."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cyclegan_culture.outputs import OUTPUT_MANIFEST, read_manifest

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp", ".gif")


class BadImage(Exception):
    """A file that cannot be used as an image; the message says why."""


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMG_EXTENSIONS)


def list_images(folder: str | os.PathLike,
                outputs: list[Path] | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files under ``folder`` (recursively, sorted), and the entries skipped with the reason.

    Hidden files and folders are ignored; a link to a missing file is skipped. Files that cyclegan-culture wrote
    as outputs (listed in an output manifest of their folder or a folder above it, up to ``folder``) are never
    inputs: they are left out, and added to ``outputs`` when given.
    """
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    manifests: dict[Path, set[str]] = {}
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        root_path = Path(root)
        if OUTPUT_MANIFEST in files:
            manifests[root_path] = read_manifest(root_path)
        for name in sorted(files):
            if name.startswith(".") or not is_image_file(name):
                continue
            path = root_path / name
            if _listed_as_output(path, manifests):
                if outputs is not None:
                    outputs.append(path)
                continue
            if not path.is_file():
                skipped.append((path, "broken link or not a regular file"))
                continue
            found.append(path)
    return found, skipped


def _listed_as_output(path: Path, manifests: dict[Path, set[str]]) -> bool:
    return any(path.relative_to(folder).as_posix() in listed
               for folder, listed in manifests.items() if folder in path.parents)


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and float greyscale ('I;16', 'I', 'F') scaled to 0..255 by the value range of the mode."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16") or (img.mode == "I" and arr.max(initial=0) > 255):
        arr = arr / 65535.0 * 255.0
    elif img.mode == "F" and arr.max(initial=0) <= 1.0:
        arr = arr * 255.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def load_rgb(path: str | os.PathLike | BinaryIO) -> Image.Image:
    """Decode ``path`` fully as an 8-bit RGB image with its EXIF orientation applied.

    Greyscale, palette, RGBA (composited on white), CMYK and 16-bit images become RGB; an animated image gives
    its first frame. Raises BadImage with a short reason for anything that is not a usable image.
    """
    try:
        if isinstance(path, (str, os.PathLike)) and os.path.getsize(path) == 0:
            raise BadImage("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.seek(0)
                img.load()
                img = ImageOps.exif_transpose(img) or img
                return _as_rgb(img)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"too large to decode safely ({exc.__class__.__name__}: over Pillow's pixel limit)") from None
    except UnidentifiedImageError:
        raise BadImage("not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImage(f"cannot decode ({exc})") from None


def readable_images(paths: Iterable[Path]) -> Iterator[Image.Image]:
    """The images of ``paths`` that decode, in order; the others are passed over silently (callers that must
    report skipped files use load_rgb themselves)."""
    for path in paths:
        try:
            yield load_rgb(path)
        except BadImage:
            continue


def _as_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB uint8 image -> float tensor (3, H, W) in [-1, 1], as ToTensor + Normalize(0.5, 0.5) gives."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def tensor_to_pil(t: torch.Tensor) -> Image.Image:
    """Tensor (C, H, W) or (1, C, H, W) in [-1, 1] -> RGB image."""
    if t.dim() == 4:
        t = t[0]
    t = t.detach().float().cpu().clamp(-1, 1)
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    # Rounded (the reference truncates, which darkens by half a level on average and breaks round trips).
    arr = np.rint((t.permute(1, 2, 0).numpy() + 1.0) * 127.5).astype(np.uint8)
    return Image.fromarray(arr, mode="RGB")
