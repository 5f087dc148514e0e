"""Build a before/after gallery for docs/quality.md: the same photos (rows) through each model (columns).

A maintainer's tool: `python tools/quality_gallery.py OUT.jpg PHOTOS_DIR LABEL=OUTPUTS_DIR ... [--rows 12]`.
Each OUTPUTS_DIR holds translations named after the photos (as `cyclegan-culture stylize` writes them); the rows
are the first ``--rows`` photos in name order, so every gallery shows the same fixed photos.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

CELL = 150  # pixels: each image is fitted into a CELL x CELL box
LABEL_HEIGHT = 22


def fitted(img: Image.Image) -> Image.Image:
    img = img.convert("RGB")
    img.thumbnail((CELL, CELL), Image.LANCZOS)
    box = Image.new("RGB", (CELL, CELL), "white")
    box.paste(img, ((CELL - img.width) // 2, (CELL - img.height) // 2))
    return box


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("photos")
    p.add_argument("columns", nargs="+", help="LABEL=FOLDER of translations")
    p.add_argument("--rows", type=int, default=12)
    p.add_argument("--transpose", action="store_true", help="photos as columns, models as rows")
    args = p.parse_args()
    photos = sorted(q for q in Path(args.photos).iterdir() if q.suffix.lower() in (".jpg", ".jpeg", ".png"))
    photos = photos[:args.rows]
    columns = [("photo", None)] + [tuple(c.split("=", 1)) for c in args.columns]
    grid = []
    for photo in photos:
        row = [fitted(Image.open(photo))]
        for _, folder in columns[1:]:
            match = sorted(Path(folder).glob(photo.stem + ".*")) + sorted(Path(folder).glob(photo.stem + "_*"))
            row.append(fitted(Image.open(match[0])) if match else Image.new("RGB", (CELL, CELL), "grey"))
        grid.append(row)
    if args.transpose:
        grid = [list(r) for r in zip(*grid)]
    n_rows, n_cols = len(grid), len(grid[0])
    labels = [c[0] for c in columns]
    left = 110 if args.transpose else 0
    top = 0 if args.transpose else LABEL_HEIGHT
    sheet = Image.new("RGB", (left + n_cols * CELL, top + n_rows * CELL), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(grid):
        for c, img in enumerate(row):
            sheet.paste(img, (left + c * CELL, top + r * CELL))
    if args.transpose:
        for r, label in enumerate(labels):
            draw.text((4, r * CELL + CELL // 2), label, fill="black")
    else:
        for c, label in enumerate(labels):
            draw.text((c * CELL + 4, 4), label, fill="black")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, quality=85)
    print(f"{args.out}: {n_rows} x {n_cols}")


if __name__ == "__main__":
    main()
