"""`cyclegan-culture stylize`: translate files and folders at their own size, keeping relative paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from cyclegan_culture.data.images import BadImage, is_image_file, list_images, load_rgb
from cyclegan_culture.errors import UserError
from cyclegan_culture.files import atomic_save_image
from cyclegan_culture.inference import Stylizer

KEPT_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")  # other formats are written as PNG


@dataclass
class StylizeResult:
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def collect_inputs(inputs: list[str]) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """(file, output path relative to the output folder) for every image in the given files and folders."""
    pairs: list[tuple[Path, Path]] = []
    skipped: list[tuple[str, str]] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files, bad = list_images(path)
            pairs += [(f, f.relative_to(path)) for f in files]
            skipped += [(str(p), r) for p, r in bad]
        elif path.is_file():
            if not is_image_file(path):
                skipped.append((str(path), "not an image file name (.jpg, .png, ...)"))
                continue
            pairs.append((path, Path(path.name)))
        else:
            raise UserError(f"{path}: no such file or folder")
    return pairs, skipped


def output_name(relative: Path) -> Path:
    return relative if relative.suffix.lower() in KEPT_SUFFIXES else relative.with_suffix(".png")


def stylize_paths(stylizer: Stylizer, inputs: list[str], output: Path) -> StylizeResult:
    pairs, skipped = collect_inputs(inputs)
    if not pairs and not skipped:
        raise UserError("no images found in the given inputs")
    result = StylizeResult(skipped=skipped)
    for path, reason in skipped:
        tqdm.write(f"warning: skipped {path}: {reason}")
    for path, relative in tqdm(pairs, desc="stylize", unit="img", dynamic_ncols=True):
        try:
            image = load_rgb(path)
        except BadImage as exc:
            result.skipped.append((str(path), str(exc)))
            tqdm.write(f"warning: skipped {path}: {exc}")
            continue
        target = output / output_name(relative)
        atomic_save_image(stylizer.stylize(image), target)
        result.written.append(target)
    tqdm.write(f"Stylized {len(result.written)} images into {output}"
               + (f"; skipped {len(result.skipped)}" if result.skipped else ""))
    return result
