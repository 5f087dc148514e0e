"""Culture models usable by name: those shipped inside the package, and runs a user installed under a name.

An installed culture is a minimal run folder, so everything that reads run folders reads it: ``config.json``
(the model configuration), ``culture.json`` (who made the art), ``latest_net_G_A.pth`` (the photo -> culture
generator; half precision where its outputs stay within 1/255 of full precision) and ``MODEL_CARD.md``.
Shipped ones live in ``pretrained/cultures/``; user ones in ``$CYCLEGAN_CULTURE_HOME/cultures`` (default
``~/.local/share/cyclegan-culture/cultures``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from cyclegan_culture.accel import make_plan
from cyclegan_culture.data.cultures import CULTURE_FILE, Culture, load_culture
from cyclegan_culture.data.images import load_rgb, pil_to_tensor
from cyclegan_culture.errors import UserError
from cyclegan_culture.files import atomic_save, atomic_write_text
from cyclegan_culture.runs import folder
from cyclegan_culture.runs.checkpoint import load_network_weights

SHIPPED_DIR = Path(__file__).resolve().parent / "cultures"
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
HOME_ENV = "CYCLEGAN_CULTURE_HOME"
WEIGHTS_FILE = "latest_net_G_A.pth"
CARD_FILE = "MODEL_CARD.md"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
HALF_TOLERANCE = 1.0 / 255.0  # in [0, 1] image units


@dataclass(frozen=True)
class CultureModel:
    key: str
    folder: Path
    shipped: bool

    @property
    def culture(self) -> Culture:
        return load_culture(self.folder, self.key)

    def summary(self) -> str:
        """The description's first sentence."""
        text = self.culture.description.strip()
        return re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0] if text else ""


def user_dir() -> Path:
    home = os.environ.get(HOME_ENV)
    base = Path(home) if home else Path.home() / ".local" / "share" / "cyclegan-culture"
    return base / "cultures"


def _models_in(base: Path, shipped: bool) -> dict[str, CultureModel]:
    if not base.is_dir():
        return {}
    return {p.name: CultureModel(p.name, p, shipped) for p in sorted(base.iterdir())
            if (p / WEIGHTS_FILE).is_file() and (p / folder.CONFIG_FILE).is_file()}


def installed() -> dict[str, CultureModel]:
    """Shipped cultures first, then the user's (a user culture never hides a shipped one of the same name)."""
    models = _models_in(SHIPPED_DIR, True)
    for key, model in _models_in(user_dir(), False).items():
        models.setdefault(key, model)
    return models


def find(key: str) -> CultureModel:
    models = installed()
    if key not in models:
        names = ", ".join(models) or "none"
        raise UserError(f"{key!r} is neither a run folder nor an installed culture (installed: {names}; "
                        "cyclegan-culture cultures lists them)")
    return models[key]


def examples() -> list[Path]:
    """The example photos shipped with the package (clean-licence photos from datasets/photo)."""
    return sorted(p for p in EXAMPLES_DIR.glob("*.jpg")) if EXAMPLES_DIR.is_dir() else []


def _half_is_faithful(state: dict[str, torch.Tensor], run: Path) -> bool:
    """Whether rounding the weights to fp16 keeps a generator's output on an example photo within 1/255."""
    config = folder.read_model_config(run)
    plan = make_plan(torch.device("cpu"), norm=config.norm, training=False)
    from_state = folder.generator_from_state(state, config, plan)
    half = folder.generator_from_state({k: v.half().float() if v.is_floating_point() else v
                                        for k, v in state.items()}, config, plan)
    photos = examples()
    if photos:
        img = load_rgb(photos[0]).resize((128, 96), Image.BILINEAR)
        x = pil_to_tensor(img).unsqueeze(0)
    else:
        x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        diff = (from_state(x) - half(x)).abs().max().item() / 2  # [-1, 1] -> [0, 1] units
    return diff <= HALF_TOLERANCE


def install(key: str, run: Path, epoch: str = "latest", card: str | None = None,
            base: Path | None = None) -> CultureModel:
    """Copy a run's photo -> culture generator (its averaged weights where it keeps them) under ``key``, into
    the user's cultures (``base``: elsewhere; tools/ship_culture.py ships one into the package)."""
    if not NAME_PATTERN.match(key):
        raise UserError(f"culture name {key!r}: use lower-case letters, digits, - and _ (e.g. guohua_mine)")
    if key in installed():
        where = "shipped with cyclegan-culture" if installed()[key].shipped else str(installed()[key].folder)
        raise UserError(f"culture {key!r} is already installed ({where}); choose another name or remove it first")
    if not run.is_dir():
        raise UserError(f"--model {run}: run folder not found")
    config = folder.read_model_config(run)
    name = folder.generator_names(config)["AtoB"]
    state = load_network_weights(folder.generator_file(run, epoch, name))
    half = _half_is_faithful(state, run)
    target = (base or user_dir()) / key
    if target.exists():
        raise UserError(f"{target} exists but is not an installed culture; move it away first")
    staging = target.with_name(f".{key}.installing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    atomic_save({k: v.half() if half and v.is_floating_point() else v for k, v in state.items()},
                staging / WEIGHTS_FILE)
    plain = {**config.to_dict(), "ema_decay": 0.0}  # the file holds the averaged weights themselves
    atomic_write_text(staging / folder.CONFIG_FILE, json.dumps({"model": config.model, "model_config": plain},
                                                               indent=2) + "\n")
    culture = load_culture(run, key)
    atomic_write_text(staging / CULTURE_FILE, json.dumps(culture.to_dict(), indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(staging / CARD_FILE, card or (
        f"# {culture.title()} ({key})\n\nInstalled with `cyclegan-culture cultures add {key} --model {run}` on "
        f"{time.strftime('%Y-%m-%d')} from epoch {epoch} of that run; weights in "
        f"{'half' if half else 'full'} precision.\n"))
    staging.rename(target)
    return CultureModel(key, target, base == SHIPPED_DIR)


def remove(key: str) -> Path:
    models = installed()
    if key not in models:
        raise UserError(f"culture {key!r} is not installed (cyclegan-culture cultures lists them)")
    if models[key].shipped:
        raise UserError(f"culture {key!r} ships with cyclegan-culture and cannot be removed")
    shutil.rmtree(models[key].folder)
    return models[key].folder
