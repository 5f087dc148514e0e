"""culture.json: who made the art of domain B (name, native name, region, period, description), and what a preset
should use for it: loss weights, the model family and the adversarial objective ("presets": {"cpu_long": {"model":
"cut", "lambda_tone": 0.5}})."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cyclegan_culture.errors import UserError

CULTURE_FILE = "culture.json"
# What a culture may change in a preset: the weights of the losses that keep the photo (identity, edge, tone and the
# cycle's), which decide how far a translation may move from it, and whose best values differ by culture
# (docs/quality.md sections 9 and 10), and of the culture-specific ones (the ink wash, section 11).
PRESET_KEYS = ("lambda_identity", "lambda_edge", "lambda_tone", "lambda_flat", "lambda_sky", "lambda_A",
               "lambda_B", "lambda_inkwash", "lambda_contour", "lambda_strokes", "lambda_NCE")
# ... and which model family it trains ("model": "cut"): the one-generator CUT, with less of its contrastive weight,
# brings impressionism at a structure CycleGAN's cycle trades away (section 13); and the adversarial objective
# ("gan_mode": "hinge"), which brings ukiyo-e where no loss weight did (section 19). Both are checked by options.py
# (against the model registry and the GAN objectives), since the data layer does not import the models.
PRESET_NAMES = ("model", "gan_mode")
# ... and how long it trains (whole epochs): with the hinge objective ukiyo-e reads best after about 10 epochs and
# then trades the photo for texture (section 19), so its presets stop there rather than run the preset's hour.
PRESET_EPOCHS = ("n_epochs", "n_epochs_decay")


@dataclass
class Culture:
    name: str
    native_name: str = ""
    region: str = ""
    period: str = ""
    description: str = ""
    domain_A: str = "photo"
    domain_B: str = ""

    def title(self) -> str:
        """'Guohua 国画' or just the name."""
        return f"{self.name} {self.native_name}".strip()

    def to_dict(self) -> dict:
        return asdict(self)


def load_culture(folder: str | Path, fallback_name: str | None = None) -> Culture:
    """The culture described in ``folder/culture.json``; without the file, one named after the folder."""
    folder = Path(folder)
    path = folder / CULTURE_FILE
    if not path.is_file():
        name = fallback_name or folder.name
        return Culture(name=name, domain_B=name)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"].strip():
        raise UserError(f"{path}: needs a JSON object with a non-empty \"name\"; fix the file")
    fields = Culture.__dataclass_fields__
    return Culture(**{k: str(v) for k, v in data.items() if k in fields})


def preset_settings(folder: str | Path, preset: str) -> dict[str, float | int | str]:
    """What ``folder/culture.json`` gives ``preset``: loss weights (floats), a model name, a GAN objective and the
    epochs (ints) ({} without the file or an entry)."""
    path = Path(folder) / CULTURE_FILE
    if not path.is_file():
        return {}
    data = _read_json(path)
    presets = data.get("presets", {}) if isinstance(data, dict) else None
    entry = presets.get(preset, {}) if isinstance(presets, dict) else None

    def is_setting(key: str, value: object) -> bool:
        if key in PRESET_NAMES:
            return isinstance(value, str) and bool(value)
        if key in PRESET_EPOCHS:
            return isinstance(value, int) and not isinstance(value, bool) and value >= (key == "n_epochs")
        return key in PRESET_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    if not isinstance(entry, dict) or not all(is_setting(k, v) for k, v in entry.items()):
        raise UserError(f"{path}: \"presets\" must map a preset name to weights ({', '.join(PRESET_KEYS)}) of 0 "
                        "or more, optionally a \"model\" and a \"gan_mode\" name and whole epochs (n_epochs 1 or "
                        "more, n_epochs_decay 0 or more); fix the file")
    return {k: v if k in PRESET_NAMES + PRESET_EPOCHS else float(v) for k, v in entry.items()}


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); fix it or delete it") from None
