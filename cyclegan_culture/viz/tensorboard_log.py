"""TensorBoard event files for a run (train.py --tensorboard): a thin writer over torch.utils.tensorboard, which
needs the ``tensorboard`` package (the [tensorboard] extra) and works offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_culture.errors import UserError

TENSORBOARD_DIR = "tensorboard"


def options_markdown(options: dict[str, Any]) -> str:
    """The resolved options as a two-column markdown table (TensorBoard's text tab renders markdown)."""
    rows = [f"| {key} | {value} |" for key, value in sorted(options.items()) if not key.startswith("_")]
    return "| option | value |\n|---|---|\n" + "\n".join(rows)


class TensorBoardLog:
    def __init__(self, folder: Path, purge_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package: pip install \"cyclegan-culture[tensorboard]\" "
                            "(or pip install tensorboard)") from None
        self.folder = Path(folder)
        # purge_step: a resumed run drops events an interrupted run logged after its last saved state
        self.writer = SummaryWriter(str(self.folder), purge_step=purge_step)

    def scalars(self, group: str, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"{group}/{key}", float(value), step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """``image``: uint8 (H, W, 3)."""
        self.writer.add_image(tag, image, step, dataformats="HWC")

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
