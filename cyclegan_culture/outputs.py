"""Where outputs go: checked before any work, one file per input, and never read back as inputs.

Every command that writes images (stylize, test.py, compare) goes through here:

- ``prepare_output_dir``: the folder exists or can be made, and can be written to; else one line, before work.
- ``refuse_holding_inputs``: an output folder that is, or contains, a folder the inputs come from is refused
  (its outputs would replace the inputs or be read back as inputs on the next run).
- ``unique_names``: inputs that would map to one output name (``d1/a.jpg`` and ``d2/a.jpg``; ``b.bmp`` and
  ``b.png`` both written as PNG; ``a.JPG`` and ``a.jpg`` on a case-insensitive disk) get distinct names, the
  same on every run.
- ``OutputManifest``: a hidden file in the output folder listing what cyclegan-culture wrote there. Listing
  images for input skips the files a manifest lists (``data.images.list_images``), and a file already in the
  folder that no manifest lists is the user's: it is never replaced.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from cyclegan_culture.errors import UserError
from cyclegan_culture.files import atomic_write_text

# The hidden file listing what cyclegan-culture wrote in an output folder; listing images for input skips the
# files it names.
OUTPUT_MANIFEST = ".cyclegan-culture-outputs.json"


def prepare_output_dir(path: Path, flag: str, create: bool = True) -> Path:
    """Make ``path`` (and its parents) and check it can be written to, or raise one line naming ``flag``. With
    ``create`` off, only check that it could be made (nothing appears on disk before the work succeeds)."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents, Path(".")) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder; choose a folder path")
    if not create:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"{flag} {path}: cannot write in {existing} (permission denied); choose a writable "
                            "folder")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write there ({exc.strerror or exc}); choose a writable "
                        "folder") from None
    return path


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def refuse_holding_inputs(output: Path, input_folders: Iterable[Path], flag: str, hint: str = "") -> None:
    """Refuse an output folder that is an input folder or contains one (nothing is written before this)."""
    out = Path(output).resolve()
    for folder in input_folders:
        folder = Path(folder).resolve()
        if _within(folder, out):
            raise UserError(f"{flag} {output}: holds the input folder {folder}; outputs there would replace "
                            f"or be read back as inputs. Choose another folder{hint}")


def refuse_inside(output: Path, folder: Path, flag: str, what: str) -> None:
    """Refuse an output folder inside ``folder`` (e.g. a dataroot that training or test.py reads)."""
    out, root = Path(output).resolve(), Path(folder).resolve()
    if _within(out, root) or _within(root, out):
        raise UserError(f"{flag} {output}: is inside {what} {folder} (or holds it), so its outputs would be read "
                        "as inputs on the next run; choose a folder outside it")


def refuse_file_inside(file: Path, folder: Path, flag: str, what: str) -> None:
    """Refuse a single output file (a report) inside ``folder``; a folder that merely holds ``folder`` is fine,
    since one named file cannot replace or be read back as the images there."""
    if _within(Path(file).resolve().parent, Path(folder).resolve()):
        raise UserError(f"{flag} {file}: is inside {what} {folder}; write it outside that folder")


def unique_names(wanted: list[Path], sources: list[Path]) -> list[Path]:
    """``wanted`` output paths (relative), made distinct without changing the names that are already unique.

    Colliding names (compared case-insensitively) get the source's extension added when the sources' extensions
    differ (b.bmp, b.png -> b_bmp.png, b_png.png), else a number in the order of the sources' paths; the result
    depends only on the inputs, so a rerun writes the same names.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(wanted):
        groups[str(name).lower()].append(i)
    result = list(wanted)
    taken = {key for key, members in groups.items() if len(members) == 1}
    for key in sorted(k for k, members in groups.items() if len(members) > 1):
        members = sorted(groups[key], key=lambda i: str(sources[i]))
        by_extension = len({sources[i].suffix.lower() for i in members}) == len(members)
        for number, i in enumerate(members, 1):
            name = wanted[i]
            tag = sources[i].suffix.lower().lstrip(".") if by_extension else str(number)
            candidate, extra = name.with_name(f"{name.stem}_{tag}{name.suffix}"), 1
            while str(candidate).lower() in taken:
                extra += 1
                candidate = name.with_name(f"{name.stem}_{tag}_{extra}{name.suffix}")
            taken.add(str(candidate).lower())
            result[i] = candidate
    return result


class OutputManifest:
    """The files cyclegan-culture wrote in a folder (paths relative to it), kept in a hidden JSON file."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / OUTPUT_MANIFEST
        self.files: set[str] = read_manifest(self.folder)

    def refuse_foreign(self, targets: Iterable[Path], flag: str) -> None:
        """Refuse before any work if a target exists but was not written by us (it is the user's file)."""
        for target in targets:
            full = self.folder / target
            if full.exists() and target.as_posix() not in self.files:
                kind = "a folder" if full.is_dir() else "a file that cyclegan-culture did not write"
                raise UserError(f"{flag} {self.folder}: {full} already exists and is {kind}; choose another "
                                "output folder (nothing was written)")

    def record(self, targets: Iterable[Path]) -> None:
        """Add ``targets`` and save, before they are written: a run stopped halfway leaves them listed."""
        self.files |= {t.as_posix() for t in targets}
        atomic_write_text(self.path, json.dumps({"written_by": "cyclegan-culture", "files": sorted(self.files)},
                                                indent=0, ensure_ascii=False))


def read_manifest(folder: Path) -> set[str]:
    """The relative paths listed in ``folder``'s manifest; an unreadable manifest lists nothing."""
    path = Path(folder) / OUTPUT_MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(f) for f in data["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()
