"""culture.json: who made the art of domain B (name, native name, region, period, description)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cyclegan_culture.errors import UserError

CULTURE_FILE = "culture.json"


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
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); fix it or delete it") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"].strip():
        raise UserError(f"{path}: needs a JSON object with a non-empty \"name\"; fix the file")
    fields = Culture.__dataclass_fields__
    return Culture(**{k: str(v) for k, v in data.items() if k in fields})
