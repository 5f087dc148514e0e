"""`cyclegan-culture stylize`: translate files and folders at their own size, keeping relative paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


from cyclegan_culture.data.images import BadImage, is_image_file, list_images, load_rgb
from cyclegan_culture.errors import UserError
from cyclegan_culture.files import atomic_save_image
from cyclegan_culture.inference import Stylizer
from cyclegan_culture.outputs import OutputManifest, prepare_output_dir, refuse_holding_inputs, unique_names
from cyclegan_culture.progress import count, progress, say

KEPT_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")  # other formats are written as PNG


@dataclass
class StylizeResult:
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    earlier_outputs: list[Path] = field(default_factory=list)  # left out: written by an earlier run


def collect_inputs(inputs: list[str], earlier_outputs: list[Path] | None = None
                   ) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """(file, output path relative to the output folder) for every image in the given files and folders.
    Images that cyclegan-culture wrote as outputs are left out of folders (and added to ``earlier_outputs``)."""
    pairs: list[tuple[Path, Path]] = []
    skipped: list[tuple[str, str]] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files, bad = list_images(path, earlier_outputs)
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


def output_name(relative: Path, suffix: str = "") -> Path:
    """The output's path for an input's relative path: same name (formats other than KEPT_SUFFIXES as PNG),
    with ``suffix`` added to the stem."""
    extension = relative.suffix if relative.suffix.lower() in KEPT_SUFFIXES else ".png"
    return relative.with_name(f"{relative.stem}{suffix}{extension}")


def validate_suffix(suffix: str) -> None:
    if not suffix or any(c in suffix for c in "/\\") or suffix in (".", ".."):
        raise UserError(f"--suffix {suffix!r}: give a plain text to add to each name, e.g. _guohua")


def plan_outputs(inputs: list[str], output: Path, suffix: str | None = None,
                 ) -> tuple[list[tuple[Path, Path]], StylizeResult]:
    """Every (input file, output path) pair, checked before any work: outputs never replace inputs or a user's
    files, every input has its own output, and the output folder can be written to."""
    if suffix is not None:
        validate_suffix(suffix)
    result = StylizeResult()
    pairs, result.skipped = collect_inputs(inputs, result.earlier_outputs)
    if not pairs and not result.skipped:
        raise UserError("no images found in the given inputs"
                        + (f" ({len(result.earlier_outputs)} earlier outputs of cyclegan-culture left out)"
                           if result.earlier_outputs else ""))
    if suffix is None:
        folders = [Path(raw) if Path(raw).is_dir() else Path(raw).parent for raw in inputs]
        refuse_holding_inputs(output, folders, "--out",
                              " or add --suffix _guohua to write NAME_guohua.jpg beside each input")
    targets = unique_names([output_name(relative, suffix or "") for _, relative in pairs],
                           [path for path, _ in pairs])
    sources = {path.resolve() for path, _ in pairs}
    for target in targets:
        if (output / target).resolve() in sources:
            raise UserError(f"--out {output}: {output / target} is one of the inputs and would be replaced; "
                            "choose another folder or --suffix (nothing was written)")
    prepare_output_dir(output, "--out")
    manifest = OutputManifest(output)
    manifest.refuse_foreign(targets, "--out")
    manifest.record(targets)
    return [(path, output / target) for (path, _), target in zip(pairs, targets)], result


def stylize_paths(stylizer: Stylizer, inputs: list[str], output: Path, suffix: str | None = None) -> StylizeResult:
    output = Path(output)
    jobs, result = plan_outputs(inputs, output, suffix)
    for path, reason in result.skipped:
        say(f"warning: skipped {path}: {reason}")
    if result.earlier_outputs:
        say(f"note: left out {count(len(result.earlier_outputs), 'image')} that an earlier run wrote as outputs")
    for path, target in progress(jobs, desc="stylize", unit="img"):
        try:
            image = load_rgb(path)
        except BadImage as exc:
            result.skipped.append((str(path), str(exc)))
            say(f"warning: skipped {path}: {exc}")
            continue
        atomic_save_image(stylizer.stylize(image), target)
        result.written.append(target)
    say(f"Stylized {count(len(result.written), 'image')} into {output}"
        + (f"; skipped {len(result.skipped)}" if result.skipped else ""))
    return result
