"""What each flag means when a run resumes (``--continue_train``), decided once per flag.

- Flags not on the command line take the run's own values (from its training state), so
  ``--continue_train --name RUN`` alone continues the run as it was.
- ``FIXED`` flags define the networks, the data order or the optimizer's state; they cannot change in the
  middle of a run, and a different value is refused with one line naming the run's value.
- ``SCHEDULE`` flags (``--n_epochs``, ``--n_epochs_decay``, ``--lr``, ``--lr_decay_iters``) take effect: the
  learning rate follows the schedule they describe from the epoch the run resumes at, so more epochs on a
  finished run train at the rate that schedule gives there (docs/reliability.md).
- Every other flag (loss weights, crop sizes, output frequencies, speed flags, ...) takes effect from the
  next iteration.

The resolved options are what ``opt.json`` then records: always what is in force.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


from cyclegan_culture.errors import UserError
from cyclegan_culture.models.losses import VIEW_CRITICS
from cyclegan_culture.options import MODEL_FLAGS
from cyclegan_culture.progress import say
from cyclegan_culture.runs import checkpoint

# Why each fixed flag cannot change mid-run (the reason goes into the one-line refusal).
FIXED: dict[str, str] = {
    **{flag: "it defines the networks" for flag in (*MODEL_FLAGS, "model")},
    "phase": "it selects the training data", "seed": "it fixes the data order",
    "serial_batches": "it fixes the data order", "max_dataset_size": "it fixes the data order",
    "batch_size": "the position in the epoch and the replay buffers are counted in its batches",
    "epoch_count": "the run's epoch counter comes from its training state",
    "optimizer": "the optimizer's state was built for it", "beta1": "the optimizer's state was built for it",
    "weight_decay": "the optimizer's state was built for it", "lr_policy": "the schedule's state was built for it",
    "pool_size": "the replay buffers were built for it", "ema_decay": "the averaged generators were built for it",
    "spectral_norm": "the discriminators' weights were built for it",
    **{critic.weight: f"the discriminator for {critic.trait} is built or not for it" for critic in VIEW_CRITICS},
    "preset": "the run's flags come from its training state",
}
SCHEDULE = ("n_epochs", "n_epochs_decay", "lr", "lr_decay_iters")
# Never taken from the run: where it is, how this invocation started, and this machine's devices.
NOT_INHERITED = ("name", "checkpoints_dir", "continue_train", "start_over", "finetune_from", "finetune_epoch",
                 "gpu_ids", "dataroot")


def resolve(opt: argparse.Namespace, saved: dict[str, Any]) -> list[str]:
    """Fill ``opt`` with the run's values for the flags not given, refuse changes that cannot take effect, and
    return the names of the flags that change (for a note)."""
    explicit = opt._explicit
    if "finetune_from" in explicit:
        raise UserError("--finetune_from cannot be used with --continue_train: a resumed run's weights come from its "
                        "own training state; fine-tune into a new --name instead")
    changed = []
    for key, value in saved.items():
        if key in NOT_INHERITED or not hasattr(opt, key):
            continue
        if key not in explicit:
            setattr(opt, key, value)
            continue
        new = getattr(opt, key)
        if _same(new, value):
            continue
        if key in FIXED:
            was = f"with --{key} {_show(value)}" if value is not None else f"without --{key}"
            raise UserError(f"--{key} {_show(new)}: the run was trained {was} and it cannot change on resume "
                            f"({FIXED[key]}); resume {was}, or fine-tune into a new --name with --finetune_from")
        changed.append(key)
    if "dataroot" not in explicit or not opt.dataroot:
        opt.dataroot = saved.get("dataroot", opt.dataroot)
    elif not _same_path(opt.dataroot, saved.get("dataroot")):
        changed.append("dataroot")  # accepted only if it holds the same images (checked by the trainer)
    return changed


def schedule_changed(changed: list[str]) -> bool:
    return any(flag in SCHEDULE for flag in changed)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    if isinstance(a, float) or isinstance(b, float):
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return False
    return a == b


def _same_path(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or "(none)"
    return str(value)


def restore_process_state(model: Any, state: dict[str, Any], dist: Any, batches_done: int, batch_size: int) -> int:
    """RNG states and replay buffers of this rank; returns the batches done in the epoch, in this run's steps.
    Resuming with the number of processes the run was saved with continues exactly; with another number, the
    position in the epoch is kept (rounded down to whole steps, so a few images may be seen twice) and ranks
    beyond rank 0 start new RNG streams."""
    saved_world = int(state.get("world_size", 1))
    world, rank = dist.world_size, dist.rank
    if saved_world == world:
        mine = state if rank == 0 else state["other_ranks"][rank - 1]
        if rank > 0:
            model.load_process_state_dict(mine)
        checkpoint.restore_rng_states(mine["rng"])
        return batches_done
    if rank == 0:
        checkpoint.restore_rng_states(state["rng"])
    if dist.is_main:
        say(f"note: the run was saved with {saved_world} process(es) and resumes with {world}: training "
            "continues from the same epoch position but is not bit-identical to an uninterrupted run")
    return batches_done * batch_size * saved_world // (batch_size * world)
