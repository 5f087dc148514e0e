"""`cyclegan-culture compare`: the same photos rendered by several cultures' models, side by side on one page."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dominate import tags
from PIL import Image

from cyclegan_culture.data.cultures import Culture, load_culture
from cyclegan_culture.data.images import BadImage, list_images, load_rgb
from cyclegan_culture.errors import UserError
from cyclegan_culture.files import atomic_save_image
from cyclegan_culture.inference import Stylizer
from cyclegan_culture.outputs import prepare_output_dir, refuse_holding_inputs, unique_names
from cyclegan_culture.progress import count, progress, say
from cyclegan_culture.runs import folder as run_folder
from cyclegan_culture.viz.html import Cell, Section, write_page

ROWS_PER_PAGE = 50
PHOTO_COLUMN = "input"  # the photos' folder under images/ and thumbs/, beside one folder per model
THUMB_SIZE = 256


@dataclass
class CultureModel:
    name: str             # the run folder's name
    run_dir: Path
    culture: Culture
    stylizer: Stylizer


def page_name(index: int) -> str:
    return "index.html" if index == 0 else f"page{index + 1}.html"


def _thumbnail(image: Image.Image) -> Image.Image:
    thumb = image.copy()
    thumb.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.LANCZOS)
    return thumb


def load_models(run_dirs: list[str], epoch: str, **stylizer_args: object) -> list[CultureModel]:
    models, seen = [], set()
    for raw in run_dirs:
        run_dir = Path(raw)
        if run_dir.name == PHOTO_COLUMN:
            raise UserError(f"--models {raw}: a run named {PHOTO_COLUMN!r} would share the photos' folder on the "
                            "page; rename the run folder")
        if run_dir.name in seen:
            raise UserError(f"--models: two runs are named {run_dir.name!r}; give each run its own folder name")
        seen.add(run_dir.name)
        stylizer = Stylizer.from_pretrained(run_dir, epoch=epoch, **stylizer_args)
        models.append(CultureModel(run_dir.name, run_dir, load_culture(run_dir), stylizer))
    return models


def run_compare(photos: Path, models: list[CultureModel], out: Path, results_dir: Path, epoch: str) -> Path:
    """Translate every photo with every model; write paginated pages. Returns the first page."""
    if not models:
        raise UserError("--models: give at least one run folder (e.g. checkpoints/photo2guohua)")
    if not photos.is_dir():
        raise UserError(f"--photos {photos}: folder not found")
    files, skipped = list_images(photos)
    if not files:
        raise UserError(f"--photos {photos}: no images found")
    refuse_holding_inputs(out, [photos], "--out")
    prepare_output_dir(out, "--out")
    stems = unique_names([Path("__".join(path.relative_to(photos).with_suffix("").parts)) for path in files], files)
    rows: list[list[Cell]] = []
    for path, stem in progress(list(zip(files, stems)), desc="compare", unit="photo"):
        try:
            image = load_rgb(path)
        except BadImage as exc:
            skipped.append((path, str(exc)))
            say(f"warning: skipped {path}: {exc}")
            continue
        row = [_save_pair(image, out, PHOTO_COLUMN, str(stem), path.name)]
        for model in models:
            row.append(_save_pair(model.stylizer.stylize(image), out, model.name, str(stem), ""))  # header names it
        rows.append(row)
    if not rows:
        raise UserError(f"--photos {photos}: none of the images could be read")
    columns = ["photo"] + [m.culture.title() for m in models]
    pages = [rows[i:i + ROWS_PER_PAGE] for i in range(0, len(rows), ROWS_PER_PAGE)]
    for index, page_rows in enumerate(pages):
        intro = [_model_links(models, out, results_dir, epoch), _page_links(index, len(pages))]
        write_page(out / page_name(index), f"One photo, {count(len(models), 'culture')}"
                   + (f" (page {index + 1} of {len(pages)})" if len(pages) > 1 else ""),
                   [Section(f"{len(rows)} photos", columns=columns, rows=page_rows)], intro=intro)
    say(f"Compared {count(len(rows), 'photo')} across {count(len(models), 'culture')}"
        + (f"; skipped {len(skipped)}" if skipped else "") + f". Page: {out / 'index.html'}")
    return out / "index.html"


def _save_pair(image: Image.Image, out: Path, column: str, stem: str, caption: str) -> Cell:
    full = f"images/{column}/{stem}.png"
    thumb = f"thumbs/{column}/{stem}.png"
    atomic_save_image(image, out / full)
    atomic_save_image(_thumbnail(image), out / thumb)
    return Cell(thumb, caption, link=full)


def _model_links(models: list[CultureModel], out: Path, results_dir: Path, epoch: str) -> tags.html_tag:
    """Per culture: its description and a link to that model's own test gallery, where one exists."""
    block = tags.ul()
    for model in models:
        item = tags.li(tags.b(model.culture.title()), f" — model {model.name}")
        gallery = find_gallery(model.run_dir, results_dir, epoch)
        if gallery is not None:
            item.add(" — ", tags.a("its test gallery", href=os.path.relpath(gallery, out)))
        if model.culture.description:
            item.add(tags.br(), tags.small(model.culture.description))
        block.add(item)
    return block


def find_gallery(run_dir: Path, results_dir: Path, epoch: str) -> Path | None:
    """The run's test gallery for ``epoch``: where test.py last recorded writing it (the run's galleries.json),
    else RESULTS_DIR/NAME/test_EPOCH."""
    recorded = run_folder.recorded_gallery(run_dir, "test", epoch)
    for gallery in (recorded, results_dir / run_dir.name / f"test_{epoch}" / "index.html"):
        if gallery is not None and gallery.is_file():
            return gallery
    return None


def _page_links(index: int, count: int) -> tags.html_tag:
    nav = tags.p()
    if count > 1:
        for i in range(count):
            nav.add(tags.a(f"page {i + 1}", href=page_name(i)) if i != index else tags.b(f"page {i + 1}"), " ")
    return nav
