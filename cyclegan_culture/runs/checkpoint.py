"""Saving and loading: atomic writes, reference-format weights, one full training-state file.

Every load uses ``torch.load(weights_only=True)``: a file whose unpickling would run code is refused.
"""

from __future__ import annotations

import os
import pickle
import random
import hashlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cyclegan_culture.errors import UserError
from cyclegan_culture.files import atomic_save

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
PREVIOUS_STATE_FILE = "training_state.prev.pt"
# Every name a training state can have: the newest, one a crash left between write and rename, the previous.
STATE_FILES = (STATE_FILE, STATE_FILE + ".new", PREVIOUS_STATE_FILE)
STATE_FORMAT = 2  # {"format", "sha256", "payload": uint8 tensor holding the bytes of torch.save(state)}


def safe_load(path: Path) -> Any:
    """torch.load restricted to tensors and plain containers; a hostile or broken file gives a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"{path}: refused to load: it holds more than weights (possibly code) "
                        f"[{_first_line(exc)[:120]}]; "
                        "only load checkpoints you trust as plain state dicts") from None
    except Exception as exc:  # any decoding failure of a damaged file, whatever torch raises for it
        size = path.stat().st_size
        reason = "empty file" if size == 0 else (_first_line(exc) or type(exc).__name__)
        raise UserError(f"{path}: cannot read checkpoint ({reason}); the file is damaged or not a PyTorch "
                        "checkpoint") from None


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message ('' for an empty one), at most 160 characters."""
    lines = str(exc).strip().splitlines()
    return lines[0][:160] if lines else ""


def network_path(run_dir: Path, epoch: str | int, net_name: str) -> Path:
    return Path(run_dir) / f"{epoch}_net_{net_name}.pth"


def save_networks(nets: dict[str, torch.nn.Module], run_dir: Path, epoch: str | int) -> None:
    """``<epoch>_net_<name>.pth`` holding plain CPU state dicts, the reference's format."""
    for name, net in nets.items():
        state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
        atomic_save(state, network_path(run_dir, epoch, name))


def load_network_weights(path: Path) -> dict[str, torch.Tensor]:
    state = safe_load(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a network state dict (expected parameter names mapped to tensors)")
    return state


# --- RNG states ---------------------------------------------------------------------------------------------------
def capture_rng_states() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    states: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# --- the full training state ------------------------------------------------------------------------------------
def save_training_state(run_dir: Path, state: dict[str, Any]) -> None:
    """Write the resume file, with a SHA-256 of its contents; the one it replaces is kept as the previous good
    state."""
    run_dir = Path(run_dir)
    path = run_dir / STATE_FILE
    tmp_final = run_dir / (STATE_FILE + ".new")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    atomic_save({"format": STATE_FORMAT, "sha256": hashlib.sha256(payload).hexdigest(),
                 "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}, tmp_final)
    if path.exists():
        os.replace(path, run_dir / PREVIOUS_STATE_FILE)
    os.replace(tmp_final, path)


def _read_state(path: Path) -> dict[str, Any]:
    outer = safe_load(path)
    if not isinstance(outer, dict) or outer.get("format") != STATE_FORMAT or \
            not isinstance(outer.get("payload"), torch.Tensor):
        raise UserError(f"{path}: not a cyclegan-culture training state (format {STATE_FORMAT})")
    payload = outer["payload"].numpy().tobytes()
    if hashlib.sha256(payload).hexdigest() != outer.get("sha256"):
        raise UserError(f"{path}: checksum mismatch, the file is damaged")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refusals and decoding errors alike
        raise UserError(f"{path}: cannot read the training state ({_first_line(exc)})") from None


def load_training_state(run_dir: Path) -> dict[str, Any]:
    """The newest readable training state; falls back to the previous one if the newest is damaged."""
    run_dir = Path(run_dir)
    # A complete '.new' file is left only by a crash between its write and its rename: it is the newest.
    candidates = [run_dir / (STATE_FILE + ".new"), run_dir / STATE_FILE, run_dir / PREVIOUS_STATE_FILE]
    existing = [p for p in candidates if p.is_file()]
    if not existing:
        raise UserError(f"{run_dir}: no training state ({STATE_FILE}) to resume from; train without "
                        "--continue_train first, or check --name and --checkpoints_dir")
    problems = []
    for path in existing:
        try:
            state = _read_state(path)
        except UserError as exc:
            problems.append(str(exc))
            continue
        if problems:
            log.warning("%s; resuming from %s instead", problems[0], path.name)
        return state
    raise UserError(" | ".join(problems))
