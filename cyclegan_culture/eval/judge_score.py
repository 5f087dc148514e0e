"""Score translations with a culture judge, beside the floors that a model must beat.

For each folder of outputs: the share the judge classifies as the target culture, its mean probability, the
histogram of classes, and the grey-level SSIM to the source photos (outputs are paired with photos by name:
``x.jpg`` with ``x.png`` or ``x_guohua.png``). With the photos, the same figures for each floor filter; a model
beats the floors when no floor reaches both its share and its SSIM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cyclegan_culture.data.images import BadImage, list_images, load_rgb
from cyclegan_culture.errors import UserError
from cyclegan_culture.eval import metrics
from cyclegan_culture.eval.floors import FLOORS, NEEDS_ART, apply_floor
from cyclegan_culture.eval.judge import Judge
from cyclegan_culture.progress import progress, say

SSIM_SIDE = 256  # SSIM is measured with the longer side at this size (the figures do not depend on input size)


@dataclass
class ScoreRow:
    name: str
    kind: str  # "model" or "floor"
    images: int
    share: float  # classified as the target
    probability: float  # mean probability of the target
    ssim: float | None  # grey-level SSIM to the source photos (None without them)
    histogram: dict[str, float] = field(default_factory=dict)
    beats_floors: bool | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _read(paths: list[Path], what: str) -> list[tuple[Path, Image.Image]]:
    out = []
    for path in progress(paths, desc=f"reading {what}", unit="img", leave=False):
        try:
            out.append((path, load_rgb(path)))
        except BadImage as exc:
            say(f"skipped {path}: {exc}")
    return out


def _folder_images(folder: Path, option: str) -> list[Path]:
    """The images in ``folder``, including those cyclegan-culture wrote there (stylize's outputs)."""
    if not folder.is_dir():
        raise UserError(f"{option} {folder}: no such folder")
    ours: list[Path] = []
    files = sorted(list_images(folder, ours)[0] + ours)
    if not files:
        raise UserError(f"{option} {folder}: no images in it")
    return files


def pair_by_name(outputs: list[Path], photos: list[Path]) -> dict[Path, Path]:
    """Each output's source photo: the same stem, or the longest photo stem followed by '_' (a --suffix)."""
    by_stem = {p.stem: p for p in photos}
    pairs = {}
    for out in outputs:
        if out.stem in by_stem:
            pairs[out] = by_stem[out.stem]
            continue
        parts = out.stem.split("_")
        for cut in range(len(parts) - 1, 0, -1):
            stem = "_".join(parts[:cut])
            if stem in by_stem:
                pairs[out] = by_stem[stem]
                break
    return pairs


def _ssim(a: Image.Image, b: Image.Image) -> float:
    scale = SSIM_SIDE / max(a.size)
    size = (max(7, round(a.width * scale)), max(7, round(a.height * scale)))
    arr = [np.asarray(img.resize(size, Image.BILINEAR), dtype=np.float64) / 255.0 for img in (a, b)]
    return metrics.REGISTRY["ssim_grey"](*arr)


def _row(judge: Judge, name: str, kind: str, images: list[Image.Image], target: str,
         sources: list[Image.Image | None]) -> ScoreRow:
    proba = judge.probabilities(images)
    t = judge.classes.index(target)
    predicted = proba.argmax(1)
    histogram = {c: float((predicted == i).mean()) for i, c in enumerate(judge.classes)}
    ssims = [_ssim(src, img) for src, img in zip(sources, images) if src is not None]
    return ScoreRow(name, kind, len(images), float((predicted == t).mean()), float(proba[:, t].mean()),
                    float(np.mean(ssims)) if ssims else None, histogram)


def score(judge: Judge, outputs: list[Path], target: str, photos: Path | None = None, art: Path | None = None,
          floors: list[str] | None = None) -> list[ScoreRow]:
    """One row per outputs folder, then (with ``photos``) one per floor filter applied to the paired photos."""
    if target not in judge.classes:
        raise UserError(f"--target {target}: this judge knows {', '.join(judge.classes)}")
    photo_files = _read(_folder_images(photos, "--inputs"), "photos") if photos else []
    photo_by_path = dict(photo_files)
    rows = []
    for folder in outputs:
        files = _folder_images(folder, "--outputs")
        pairs = pair_by_name(files, list(photo_by_path)) if photos else {}
        if photos and not pairs:
            raise UserError(f"--outputs {folder}: no output's name matches a photo in {photos} (x.jpg pairs with "
                            "x.png or x_SUFFIX.png)")
        loaded = _read(files, folder.name)
        sources = [photo_by_path.get(pairs.get(path)) if photos else None for path, _ in loaded]
        rows.append(_row(judge, folder.name, "model", [img for _, img in loaded], target, sources))
    if photos:
        art_images = [img for _, img in _read(_folder_images(art, "--art"), "paintings")] if art else []
        for name in floors or list(FLOORS):
            if name in NEEDS_ART and not art_images:
                continue
            filtered = [apply_floor(name, img, art_images[i % len(art_images)] if art_images else None)
                        for i, (_, img) in enumerate(photo_files)]
            rows.append(_row(judge, name, "floor", filtered, target, [img for _, img in photo_files]))
    floor_rows = [r for r in rows if r.kind == "floor"]
    for row in rows:
        if row.kind == "model" and row.ssim is not None and floor_rows:
            row.beats_floors = not any(f.share >= row.share and f.ssim >= row.ssim for f in floor_rows)
    return rows


def table(rows: list[ScoreRow], target: str) -> str:
    """The rows as a Markdown table."""
    lines = [f"| outputs | kind | images | judged {target} | mean p({target}) | SSIM grey | beats floors |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        ssim = "" if r.ssim is None else f"{r.ssim:.3f}"
        beats = "" if r.beats_floors is None else ("yes" if r.beats_floors else "no")
        lines.append(f"| {r.name} | {r.kind} | {r.images} | {r.share:.2f} | {r.probability:.2f} | {ssim} | {beats} |")
    return "\n".join(lines)
