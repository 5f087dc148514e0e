"""test.py: translate a dataset's test images both ways and write an HTML gallery.

Unlike the reference, every image is translated (not the first 50) at its own size (no resize, no crop) by
default; ``--test_preprocess as_train`` gives the reference's resize-and-crop behaviour.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from cyclegan_culture import options as options_mod
from cyclegan_culture.accel import amp_dtype, inference_weights
from cyclegan_culture.backends import on_backend
from cyclegan_culture.data.cultures import CULTURE_FILE, Culture, load_culture
from cyclegan_culture.data.images import BadImage, load_rgb, pil_to_tensor, tensor_to_pil
from cyclegan_culture.data.transforms import Preprocess
from cyclegan_culture.data.unpaired import image_folder
from cyclegan_culture.devices import select_device
from cyclegan_culture.errors import UserError
from cyclegan_culture.files import atomic_save_image, atomic_write_text, inside
from cyclegan_culture.inference import model_config, translate
from cyclegan_culture.models.config import ModelConfig
from cyclegan_culture.outputs import prepare_output_dir, refuse_inside, unique_names
from cyclegan_culture.progress import progress, say
from cyclegan_culture.runs import folder as run_folder
from cyclegan_culture.viz.html import Cell, Section, culture_block, options_table, write_page

SHOWN_OPTIONS = ("name", "epoch", "netG", "ngf", "norm", "upsample", "direction", "dataroot", "phase",
                 "test_preprocess")


@dataclass
class TestResult:
    page: Path
    translated: dict[str, int]   # per side ('A', 'B'): images translated
    skipped: list[tuple[str, str]]


def _output_stem(path: Path, folder: Path) -> str:
    """A flat file stem: sub/folder/x.jpg -> sub__folder__x (made unique by ``unique_names``)."""
    rel = path.relative_to(folder).with_suffix("")
    return "__".join(rel.parts)


def run_test(opt: argparse.Namespace) -> TestResult:
    run_dir = inside(Path(opt.checkpoints_dir), opt.name)
    options_mod.validate_run_name(opt.name)
    if opt.aspect_ratio <= 0 or opt.display_winsize <= 0:
        raise UserError("--aspect_ratio and --display_winsize must be positive")
    if opt.eval:
        say("note: --eval: the generators always run in eval mode here (instance norm keeps no running statistics)")
    if opt.num_test is not None and opt.num_test <= 0:
        raise UserError(f"--num_test must be positive, got {opt.num_test}")
    if not opt.dataroot:  # the run's own dataset, as its opt.json records it
        opt.dataroot = (run_folder.load_run_options(run_dir) or {}).get("dataroot")
        if not opt.dataroot:
            raise UserError(f"--dataroot is required: the folder holding testA and testB ({run_dir} records none)")
        say(f"--dataroot {opt.dataroot} (from {run_dir / run_folder.OPTIONS_FILE})")
    device = select_device(opt.gpu_ids)
    dtype = amp_dtype(device, opt.amp)
    single = opt.model == "test" or opt.dataset_mode == "single"  # the reference's one-generator testing
    generators = _load_generators(opt, run_dir, device, dtype, single)
    culture = load_culture(run_dir) if (run_dir / CULTURE_FILE).is_file() else load_culture(opt.dataroot)

    out_dir = inside(Path(opt.results_dir), opt.name, f"{opt.phase}_{opt.epoch}")
    refuse_inside(out_dir, Path(opt.dataroot), "--results_dir", "the dataroot")
    sections: list[Section] = []
    skipped: list[tuple[str, str]] = []
    translated = {}
    if single:  # --dataroot is the folder of images; one direction, no reconstruction
        folder = Path(opt.dataroot)
        if not folder.is_dir():
            raise UserError(f"--dataroot {folder}: folder not found (with --model test it holds the images)")
        prepare_output_dir(out_dir, "--results_dir")
        section = Section(f"{_domain_name(culture, 'A')} -> {_domain_name(culture, 'B')}",
                          columns=("input", "translation"))
        translated["A"] = _translate_folder(opt, folder, ("A", "B"), (generators["AtoB"], None), dtype,
                                            out_dir / "images", section, skipped)
        sections.append(section)
    else:
        # direction BtoA: the model's A side was trained on the dataset's B folder.
        a_folder, b_folder = (opt.phase + "A", opt.phase + "B") if opt.direction == "AtoB" else \
            (opt.phase + "B", opt.phase + "A")
        prepare_output_dir(out_dir, "--results_dir")
        for src, dst, folder_name, forward, backward in (("A", "B", a_folder, "AtoB", "BtoA"),
                                                         ("B", "A", b_folder, "BtoA", "AtoB")):
            folder = Path(opt.dataroot) / folder_name
            if forward not in generators:  # one-way models (cut, fastcut)
                say(f"note: this run's model translates one way only; no {src} -> {dst} rows")
                continue
            if not folder.is_dir():
                say(f"warning: {folder} not found; no {src} -> {dst} translations")
                continue
            section = Section(f"{_domain_name(culture, src)} -> {_domain_name(culture, dst)}",
                              columns=("input", "translation") + (("reconstruction",) if backward in generators
                                                                  else ()))
            translated[src] = _translate_folder(opt, folder, (src, dst), (generators[forward],
                                                generators.get(backward)), dtype, out_dir / "images", section,
                                                skipped)
            sections.append(section)
    if not any(translated.values()):
        looked = opt.dataroot if single else f"{opt.phase}A and {opt.phase}B"
        raise UserError(f"--dataroot {opt.dataroot}: no test images could be translated (looked in {looked})")

    shown = {k: getattr(opt, k) for k in SHOWN_OPTIONS if hasattr(opt, k)}
    page = write_page(out_dir / "index.html", f"{opt.name}: {culture.title()} (epoch {opt.epoch})", sections,
                      intro=[culture_block(culture.to_dict()), options_table(shown)],
                      image_size=opt.display_winsize)
    atomic_write_text(out_dir / "test_opt.json",
                      json.dumps(options_mod.options_dict(opt), indent=2, ensure_ascii=False))
    run_folder.record_gallery(run_dir, opt.phase, opt.epoch, page)
    summary = ", ".join(f"{n} {k}->{'B' if k == 'A' else 'A'}" for k, n in translated.items())
    say(f"Translated {summary}" + (f"; skipped {len(skipped)} files" if skipped else "")
        + f". Gallery: {page}")
    return TestResult(page, translated, skipped)


def _load_generators(opt: argparse.Namespace, run_dir: Path, device: torch.device,
                     dtype: torch.dtype | None, single: bool = False) -> dict[str, torch.nn.Module]:
    """Direction -> generator, for each direction the run's model translates (AtoB: G_A, BtoA: G_B), built from its config.json / opt.json unless a network flag was given on the
    command line; ``opt`` then shows (and test_opt.json saves) the networks as used."""
    config = model_config(run_dir, {k: getattr(opt, k) for k in (*ModelConfig.NETWORK_FIELDS, "no_dropout")
                                    if k in opt._explicit})
    for key in ModelConfig.NETWORK_FIELDS:
        setattr(opt, key, getattr(config, key))
    plan = options_mod.execution_plan(opt, device, training=False)
    names = run_folder.generator_names(config)
    if single:
        names = {"AtoB": _single_generator_name(opt, run_dir, names)}
    else:
        missing = [n for n in names.values() if not run_folder.network_path(run_dir, opt.epoch, n).is_file()]
        if missing and len(missing) < len(names):  # e.g. a shipped culture: its forward generator only
            present = next(n for n in names.values() if n not in missing)
            raise UserError(f"{run_dir}: has {present} but no {opt.epoch}_net_{missing[0]}.pth; to translate one "
                            f"way: test.py --model test --model_suffix {present[1:]} --dataroot "
                            f"{Path(opt.dataroot) / (opt.phase + 'A')}")
    files = ", ".join(run_folder.generator_file(run_dir, opt.epoch, name).name for name in names.values())
    say(f"Loaded {run_dir} epoch {opt.epoch} ({files}): --netG {config.netG} --ngf {config.ngf} --norm "
        f"{config.norm} --upsample {config.upsample}" + (" --use_dropout" if config.use_dropout else "")
        + (f", {'bf16' if dtype == torch.bfloat16 else 'fp16'}" if dtype else ", fp32") + f" on {device}"
        + (f" with {opt.backend}" if opt.backend != "pytorch" else ""))
    if single:
        name = names["AtoB"]
        path = run_folder.generator_file(run_dir, opt.epoch, name)
        net = run_folder.load_generator_file(path, config, "BtoA" if name.startswith("G_B") else "AtoB", device, plan)
        return {"AtoB": _prepared(net, opt, dtype)}
    return {direction: _prepared(run_folder.load_generator(run_dir, opt.epoch, direction, device, plan, config),
                                 opt, dtype)
            for direction in names}


def _prepared(net: torch.nn.Module, opt: argparse.Namespace, dtype: torch.dtype | None) -> torch.nn.Module:
    """The loaded generator as --backend runs it (exported from its fp32 weights), or PyTorch's with the
    weights stored as --amp runs them."""
    if opt.backend != "pytorch":
        return on_backend(net, opt.backend, dtype)
    return inference_weights(net, dtype, opt.channels_last)


def _single_generator_name(opt: argparse.Namespace, run_dir: Path, names: dict[str, str]) -> str:
    """Which generator --model test / --dataset_mode single runs: G<MODEL_SUFFIX> (the reference's pretrained
    files are <epoch>_net_G.pth); without a suffix and without such a file, this run's --direction generator."""
    if opt.model != "test":
        return names.get(opt.direction) or names["AtoB"]
    wanted = "G" + opt.model_suffix
    if run_folder.network_path(run_dir, opt.epoch, wanted).is_file() or opt.model_suffix:
        return wanted
    fallback = names.get(opt.direction) or names["AtoB"]
    say(f"note: --model test: no {run_folder.network_path(run_dir, opt.epoch, wanted).name}; using {fallback} "
        f"(--model_suffix {fallback[1:]} says so)")
    return fallback


def _translate_folder(opt: argparse.Namespace, folder: Path, sides: tuple[str, str],
                      generators: tuple[torch.nn.Module, torch.nn.Module | None], dtype: torch.dtype | None,
                      images_dir: Path, section: Section, skipped: list[tuple[str, str]]) -> int:
    """Translate one folder's images and back (without a backward generator: only there), each into its own
    files, in turns of up to TURN_IMAGES photos; rows go into ``section``. Returns how many were translated."""
    src, dst = sides
    files, listing_skipped = image_folder(folder.parent, folder.name)
    for path, reason in listing_skipped:
        skipped.append((str(path), reason))
        say(f"warning: skipped {path}: {reason}")
    files = files[: opt.num_test] if opt.num_test else files
    stems = unique_names([Path(_output_stem(path, folder)) for path in files], files)
    as_train = Preprocess(opt.preprocess, opt.load_size, opt.crop_size, flip=False)
    device = next(generators[0].parameters()).device
    count, batch, batch_values = 0, [], 0
    for path, stem in progress(list(zip(files, stems)), desc=f"{src} -> {dst}", unit="img"):
        try:
            img = load_rgb(path)
        except BadImage as exc:
            skipped.append((str(path), str(exc)))
            say(f"warning: skipped {path}: {exc}")
            continue
        if opt.test_preprocess == "as_train":
            img = as_train(img, random.Random(f"{opt.seed}:test:{path.name}"))
        batch.append((path, stem, pil_to_tensor(img).unsqueeze(0).to(device)))
        batch_values += batch[-1][2].numel()
        if len(batch) == TURN_IMAGES or batch_values >= TURN_VALUES:
            count += _translate_turn(opt, batch, sides, generators, dtype, images_dir, section)
            batch, batch_values = [], 0
    return count + _translate_turn(opt, batch, sides, generators, dtype, images_dir, section)


# Photos translated per turn of each generator (all forward, then all back), at most TURN_VALUES values of
# them: a generator's bf16 inference keeps its transformed filters only while it runs (accel/winograd.py's
# budget holds one generator's), so alternating generators photo by photo would transform them every call.
# Each turn holds its translations until they go back (8 photos at 256 px: 6 MB).
TURN_IMAGES = 8
TURN_VALUES = TURN_IMAGES * 3 * 256 * 256


def _translate_turn(opt: argparse.Namespace, batch: list[tuple[Path, str, torch.Tensor]], sides: tuple[str, str],
                    generators: tuple[torch.nn.Module, torch.nn.Module | None], dtype: torch.dtype | None,
                    images_dir: Path, section: Section) -> int:
    """Translate the loaded photos of ``batch`` (emptied: each photo is written and let go as soon as it is
    translated) one by one with the forward generator, then back, writing each one's files; their rows go into
    ``section`` in order. Returns how many."""
    (src, dst), (forward, backward) = sides, generators
    rows, fakes = [], []

    def save(stem: str, label: str, tensor: torch.Tensor, caption: str) -> Cell:
        atomic_save_image(_stretched(tensor_to_pil(tensor), opt.aspect_ratio), images_dir / f"{stem}_{label}.png")
        return Cell(f"images/{stem}_{label}.png", caption)

    # the columns' headers say translation / reconstruction; only the input is captioned (its file name)
    while batch:
        path, stem, real = batch.pop(0)
        with torch.inference_mode():
            fake = translate(forward, real, dtype)
        rows.append((stem, [save(stem, f"real_{src}", real, path.name), save(stem, f"fake_{dst}", fake, "")]))
        fakes.append(fake)
    for (stem, row), fake in zip(rows, fakes):
        if backward is not None:
            with torch.inference_mode():
                rec = translate(backward, fake, dtype)
            row.append(save(stem, f"rec_{src}", rec, ""))
        section.rows.append(row)
    return len(rows)


def _stretched(image: Image.Image, aspect_ratio: float) -> Image.Image:
    """--aspect_ratio: wider by the factor above 1, taller by its inverse below 1 (the reference's save_image)."""
    if aspect_ratio == 1.0:
        return image
    w, h = image.size
    size = (round(w * aspect_ratio), h) if aspect_ratio > 1 else (w, round(h / aspect_ratio))
    return image.resize(size, Image.BICUBIC)


def _domain_name(culture: Culture, side: str) -> str:
    if side == "A":
        return culture.domain_A or "A"
    return culture.title() if culture.name else (culture.domain_B or "B")
