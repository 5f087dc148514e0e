"""What a run folder may hold before training starts in it: never another run's files, unless moved aside."""

from __future__ import annotations

import os
import time
from pathlib import Path


from cyclegan_culture.progress import say
from cyclegan_culture.runs import checkpoint
from cyclegan_culture.runs.lock import LOCK_FILE
from cyclegan_culture.errors import UserError


def load_state_to_resume(run_dir: Path) -> dict:
    """The newest readable training state; a folder with weights but no state says how to build on them."""
    if not any((run_dir / name).is_file() for name in checkpoint.STATE_FILES) and \
            any(run_dir.glob("*_net_*.pth")):
        raise UserError(f"{run_dir}: holds weights but no training state (trained by the reference, or "
                        "stopped before its first save), so it cannot resume exactly; build on the weights in a "
                        f"new run with --name NEW --finetune_from {run_dir}")
    return checkpoint.load_training_state(run_dir)


def check_fresh_start(run_dir: Path, start_over: bool) -> None:
    """A fresh run never replaces another's files: refused, or with --start_over moved aside first."""
    states = [name for name in checkpoint.STATE_FILES if (run_dir / name).is_file()]
    weights = sorted(p.name for p in run_dir.glob("*_net_*.pth"))
    if not states and not weights:
        return
    if start_over:
        aside = run_dir / time.strftime("superseded-%Y%m%d-%H%M%S")
        aside.mkdir()
        for entry in run_dir.iterdir():
            if entry.name != LOCK_FILE and not entry.name.startswith("superseded-"):
                os.replace(entry, aside / entry.name)
        say(f"--start_over: the earlier run's files are now in {aside}")
        return
    if states:
        raise UserError(f"{run_dir}: already holds a run ({states[0]}); resume it with --continue_train, "
                        "start it again with --start_over (its files are kept in a subfolder), or choose "
                        "another --name (nothing was changed)")
    raise UserError(f"{run_dir}: already holds weights ({', '.join(weights[:2])}"
                    f"{', ...' if len(weights) > 2 else ''}) but no training state; to build on them train "
                    f"under another --name with --finetune_from {run_dir}, or pass --start_over to move "
                    "them into a subfolder and train afresh (nothing was changed)")
