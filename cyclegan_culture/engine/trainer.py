"""The training loop: data, steps, schedules and the training state; logging, visuals, evaluation and checkpoint
timing are callbacks (engine/callbacks.py).

Resuming is exact: the training state holds networks, optimizers, schedulers, replay buffers, counters and RNG
states, and the data order is a pure function of (seed, epoch, position). A CPU run stopped after any saved
checkpoint and resumed with ``--continue_train`` ends with the same weights, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import signal
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from cyclegan_culture import options as options_mod
from cyclegan_culture.data.cultures import CULTURE_FILE, load_culture
from cyclegan_culture.data.transforms import SIZE_PRESERVING, Preprocess
from cyclegan_culture.data.unpaired import EpochSampler, UnpairedDataset
from cyclegan_culture.engine import distributed, resume, stop_signals
from cyclegan_culture.engine.callbacks import Callback, HookCallback, LogPoint, crossed, default_callbacks
from cyclegan_culture.engine.training_plan import training_plan
from cyclegan_culture.progress import progress, say
from cyclegan_culture.runs import checkpoint, folder, guard
from cyclegan_culture.runs.lock import RunLock
from cyclegan_culture.errors import UserError, brief
from cyclegan_culture.files import atomic_write_text, inside
from cyclegan_culture.models import registry
from cyclegan_culture.outputs import refuse_inside

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    epoch: int            # the epoch the run would continue with
    total_iters: int      # images seen
    interrupted: bool
    skipped_files: int
    stop_signal: int | None = None  # the signal that stopped it (SIGINT, SIGTERM, SIGHUP), if one did


TORCHRUN_SIGNAL_ECHO_S = 2.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Set up a run from options, then ``run()`` it. ``callbacks`` (default: ``default_callbacks(opt)``) log,
    show and evaluate around the loop; ``hooks`` are plain functions called with the trainer after every
    iteration.

    Started by torchrun, each process joins the job's process group and trains data-parallel on its shard of the
    data (engine/distributed.py); rank 0 alone writes files and talks to Visdom.
    """

    def __init__(self, opt: argparse.Namespace, parser: argparse.ArgumentParser,
                 hooks: list[Callable[["Trainer"], None]] | None = None, callbacks: list[Callback] | None = None):
        options_mod.validate_run_name(opt.name)
        self.opt = opt
        self.run_dir = inside(Path(opt.checkpoints_dir), opt.name)
        self.dist, self.device = distributed.setup(opt.gpu_ids)
        self.lock = RunLock(self.run_dir)
        if self.dist.is_main:  # one live writer per run folder, before anything in it is read or moved
            self.lock.acquire()
            if self.lock.stale_owner:
                say(f"note: took over {self.lock.path} left by process {self.lock.stale_owner.get('pid')} "
                    f"on {self.lock.stale_owner.get('host')}, which is no longer running")
        weakref.finalize(self, self.lock.release)
        try:
            self._setup(opt, parser, hooks, callbacks)
        except BaseException:
            self.lock.release()
            raise

    def _setup(self, opt: argparse.Namespace, parser: argparse.ArgumentParser,
               hooks: list[Callable[["Trainer"], None]] | None, callbacks: list[Callback] | None) -> None:
        self.hooks = hooks if hooks is not None else []
        chosen = (callbacks if callbacks is not None else default_callbacks(opt)) + [HookCallback(self.hooks)]
        self.callbacks = [c for c in chosen if c.all_ranks or self.dist.is_main]
        self._stop_requested = False
        self._stop_requested_at = 0.0
        self._stop_signal: int | None = None
        self.skipped: dict[str, str] = {}
        state, changed = self._resolve_options(opt)
        self._load_data(opt, state, changed)
        self._build_model(opt, state, changed)
        self._build_loader(opt)
        self._write_run_files(opt, parser, state)
        self.early_stop = (state or {}).get("early_stop") or {"best": None, "best_epoch": None, "bad_evals": 0}
        self.early_stopped = False

    def _resolve_options(self, opt: argparse.Namespace) -> tuple[dict | None, list[str]]:
        """The state to resume (if resuming) and the flags that change on resume; all options checked."""
        state, changed = None, []
        if opt.continue_train and opt.start_over:
            raise UserError("--continue_train and --start_over contradict each other: choose one")
        if opt.continue_train:
            state = guard.load_state_to_resume(self.run_dir)
            changed = resume.resolve(opt, state.get("options") or folder.load_run_options(self.run_dir) or {})
        elif self.dist.is_main:
            guard.check_fresh_start(self.run_dir, opt.start_over)
        if not opt.dataroot:
            raise UserError("--dataroot is required: the folder holding trainA and trainB")
        options_mod.validate_train(opt)
        refuse_inside(self.run_dir, Path(opt.dataroot), "--checkpoints_dir", "the dataroot")
        return state, changed

    def _load_data(self, opt: argparse.Namespace, state: dict | None, changed: list[str]) -> None:
        self.dataset = UnpairedDataset(
            opt.dataroot, opt.phase, Preprocess(opt.preprocess, opt.load_size, opt.crop_size, not opt.no_flip,
                                                options_mod.min_image_size(opt)),
            seed=opt.seed, serial_batches=opt.serial_batches, max_dataset_size=opt.max_dataset_size)
        if opt.batch_size > 1 and opt.preprocess in SIZE_PRESERVING:
            raise UserError(f"--preprocess {opt.preprocess} gives images of different sizes, which cannot be "
                            "batched; use --batch_size 1 or a cropping --preprocess")
        for path, reason in self.dataset.listing_skipped:
            self._note_skip(str(path), reason)
        self.data_fingerprint = self.dataset.fingerprint()  # kept in the state: a moved dataroot is recognised
        if "dataroot" in changed and state.get("data_fingerprint") != self.data_fingerprint:
            raise UserError(f"--dataroot {opt.dataroot}: holds other images than the run's dataroot "
                            f"({state.get('options', {}).get('dataroot')}); resume with the run's data, or "
                            "fine-tune into a new --name with --finetune_from")
        if changed:
            say("Resuming with changed flags (docs/reliability.md): " + ", ".join(f"--{k}" for k in changed))

    def _build_model(self, opt: argparse.Namespace, state: dict | None, changed: list[str]) -> None:
        """The model (the same initial weights on every rank), then what it resumes or starts from."""
        plan = training_plan(opt, self.device, self.dist.enabled,
                             resumed_choices=state.get("plan_choices") if state is not None else None)
        seed_everything(opt.seed)
        self.model = registry.build(vars(opt), self.device, plan, training=True)
        if self.dist.rank > 0:  # each rank its own dropout noise and replay-buffer choices
            seed_everything(opt.seed + 7919 * self.dist.rank)
            self.model.pool_rng.seed(f"{opt.seed}:{self.dist.rank}")
        self.epoch, self.batches_done, self.total_iters = opt.epoch_count, 0, 0
        if state is not None:
            try:
                self.model.load_state_dict(state["model"])
            except (ValueError, KeyError) as exc:
                raise UserError(f"{self.run_dir / checkpoint.STATE_FILE}: does not match the options "
                                f"({brief(exc)}); resume with the run's own model flags") from None
            self.epoch, self.batches_done, self.total_iters = (state["epoch"], state["batches_done"],
                                                               state["total_iters"])
            self.batches_done = resume.restore_process_state(self.model, state, self.dist, self.batches_done,
                                                             opt.batch_size)
            if resume.schedule_changed(changed):
                self.model.follow_schedule(float(state.get("options", {}).get("lr", opt.lr)))
        elif opt.finetune_from:
            folder.load_finetune_weights(self.model.nets, Path(opt.finetune_from), opt.finetune_epoch)
        if opt.freeze:
            try:
                frozen = self.model.freeze(opt.freeze)
            except ValueError as exc:
                raise UserError(f"--freeze {exc}: unknown; use {', '.join(type(self.model).FREEZABLE)}") from None
            say(f"Frozen: {', '.join(opt.freeze)} ({frozen / 1e6:.2f} M parameters kept fixed)")
        if self.dist.enabled:
            self.model.distribute(self.device)
        if opt.verbose and self.dist.is_main:
            for name, net in self.model.nets.items():
                print(name, net, f"parameters: {sum(p.numel() for p in net.parameters()) / 1e6:.3f} M")

    def _build_loader(self, opt: argparse.Namespace) -> None:
        self.sampler = EpochSampler(len(self.dataset), opt.seed, shuffle=not opt.serial_batches,
                                    rank=self.dist.rank, world_size=self.dist.world_size)
        self.loader = DataLoader(self.dataset, batch_size=opt.batch_size, sampler=self.sampler,
                                 num_workers=opt.num_threads, persistent_workers=opt.num_threads > 0,
                                 worker_init_fn=stop_signals.ignore_stop_signals,
                                 pin_memory=self.device.type == "cuda",
                                 # its own generator: creating an iterator must not consume the global torch
                                 # RNG, or a resumed run would drift from an uninterrupted one
                                 generator=torch.Generator().manual_seed(opt.seed))
        self.batches_per_epoch = math.ceil(self.sampler.per_process / opt.batch_size)
        self.last_epoch = opt.n_epochs + opt.n_epochs_decay + opt.epoch_count - 1

    def _write_run_files(self, opt: argparse.Namespace, parser: argparse.ArgumentParser, state: dict | None) -> None:
        """opt.txt/opt.json, config.json and (for a new run) the culture card; a resumed run keeps its card."""
        keep_card = state is not None and (self.run_dir / CULTURE_FILE).is_file()
        self.culture = load_culture(self.run_dir) if keep_card else load_culture(opt.dataroot)
        if not self.dist.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.run_dir.glob(".*.tmp"):  # half-written files of a process killed while saving
            stale.unlink(missing_ok=True)
        options_mod.save_options(opt, parser, self.run_dir)
        folder.save_config(self.run_dir, self.model.config, self.model.schedule)
        if not keep_card:
            atomic_write_text(self.run_dir / CULTURE_FILE, json.dumps(self.culture.to_dict(), indent=2,
                                                                      ensure_ascii=False))

    # --- control ----------------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the current iteration, save the full state, and return from run()."""
        self._stop_requested = True

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        """Ctrl-C, SIGTERM (docker stop, Kubernetes, SLURM) and SIGHUP (a closed terminal): finish the iteration,
        save, exit. A second one, later, aborts without saving."""
        now = time.monotonic()
        if signum == getattr(signal, "SIGHUP", None):
            stop_signals.detach_from_closed_terminal()
        if self._stop_requested:
            # Under torchrun a signal may arrive twice: from the terminal (or kill), and forwarded by torchrun's
            # agent moments later. Only a second one, later, means "abort without saving".
            if self.dist.enabled and now - self._stop_requested_at < TORCHRUN_SIGNAL_ECHO_S:
                return
            raise KeyboardInterrupt
        name = signal.Signals(signum).name if signum != signal.SIGINT else "Ctrl-C"
        say(f"{name}: stopping after this iteration and saving the training state (again to abort)...")
        self._stop_requested_at = now
        self._stop_signal = signum
        self.request_stop()

    # --- the loop ---------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        previous_handlers = {}
        try:
            for signum in stop_signals.STOP_SIGNALS:
                previous_handlers[signum] = signal.signal(signum, self._on_stop_signal)
        except ValueError:  # not in the main thread: no signal handling
            pass
        try:
            return self._run()
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            self.lock.release()

    def _run(self) -> TrainResult:
        opt = self.opt
        remaining = self._remaining_batches()
        if remaining <= 0:
            say(f"{opt.name} is finished: it trained epochs {opt.epoch_count}..{self.epoch - 1} "
                f"({self.total_iters} images seen). To train longer, resume with a larger --n_epochs or "
                "--n_epochs_decay")
            distributed.shutdown()
            return TrainResult(self.run_dir, self.epoch, self.total_iters, False, len(self.skipped))
        say(f"Training {opt.name}: {len(self.dataset.A_paths)} A and {len(self.dataset.B_paths)} B images, "
            f"epochs {self.epoch}..{self.last_epoch}, {remaining} iterations to go on {self.device}; "
            f"checkpoints in {self.run_dir}")
        if self.dist.enabled:
            say(f"Data-parallel on {self.dist.world_size} processes ({self.dist.backend}): --batch_size "
                f"{opt.batch_size} per process, effective batch {opt.batch_size * self.dist.world_size}, "
                f"{self.batches_per_epoch} steps per epoch (docs/distributed.md on the learning rate)")
        self._seconds_per_batch: list[float] = []
        for callback in self.callbacks:
            callback.on_train_start(self)
        try:
            while self.epoch <= self.last_epoch:
                if self._run_epoch():  # stopped on request, or early
                    return self._finish(interrupted=not self.early_stopped)
            return self._finish(interrupted=False)
        finally:
            for callback in self.callbacks:
                callback.on_train_end(self)
            distributed.shutdown()

    def _remaining_batches(self) -> int:
        return (self.last_epoch - self.epoch + 1) * self.batches_per_epoch - self.batches_done

    def _run_epoch(self) -> bool:
        """One epoch (or the rest of one). Returns True when stopped early on request."""
        opt, model = self.opt, self.model
        self.sampler.set_epoch(self.epoch, start=self.batches_done * opt.batch_size)
        model.train()
        loss_G_sum, loss_G_count = 0.0, 0
        epoch_start = time.time()
        # off a terminal, the epoch's own line (_end_epoch) is the progress report: no bar lines in logs
        bar = progress(total=self.batches_per_epoch, initial=self.batches_done, plain_lines=False,
                       desc=f"epoch {self.epoch}/{self.last_epoch}", unit="it", disable=not self.dist.is_main)
        t_data_start = time.time()
        try:
            for batch in self.loader:
                t_data = time.time() - t_data_start
                t0 = time.time()
                for line in filter(None, "\n".join(batch["skipped"]).split("\n")):
                    path, reason = line.split("\t", 1)
                    self._note_skip(path, reason)
                model.set_input(batch)
                model.optimize_parameters()
                losses = model.current_losses
                self._check_finite(losses)
                t_comp = (time.time() - t0) / opt.batch_size
                self._seconds_per_batch.append(time.time() - t0 + t_data)

                before = self.total_iters
                self.batches_done += 1
                self.total_iters += batch["A"].shape[0] * self.dist.world_size  # images seen by all ranks
                loss_G_sum += float(model.loss_G.detach())
                loss_G_count += 1
                losses = self._log_and_display(before, losses, t_comp, t_data)
                bar.set_postfix_str(self._postfix(losses), refresh=False)
                bar.update(1)
                for callback in self.callbacks:
                    callback.on_step_end(self, before)
                if self.dist.any(self._stop_requested):  # Ctrl-C may reach some ranks an iteration later
                    self.save("stopped on request")
                    return True
                t_data_start = time.time()
        finally:
            bar.close()

        return self._end_epoch(loss_G_sum / max(loss_G_count, 1), epoch_start)

    def _log_and_display(self, before: int, losses: dict[str, float], t_comp: float, t_data: float
                         ) -> dict[str, float]:
        """The callbacks' logging (losses averaged over all ranks) and display points of this step."""
        opt = self.opt
        if crossed(before, self.total_iters, opt.print_freq):
            losses = dict(zip(losses, self.dist.mean(list(losses.values()))))
            epoch_iter = self.batches_done * opt.batch_size * self.dist.world_size
            point = LogPoint(epoch_iter, self.epoch + min(epoch_iter, len(self.dataset)) / len(self.dataset),
                             losses, self.model.learning_rates(), t_comp, t_data)
            for callback in self.callbacks:
                callback.on_log(self, point)
        if crossed(before, self.total_iters, opt.display_freq):
            for callback in self.callbacks:
                callback.on_display(self, before)
        return losses

    def _end_epoch(self, loss_G_mean: float, epoch_start: float) -> bool:
        """Step the schedules, keep the weights, save the state for the next epoch; True to stop."""
        model = self.model
        model.update_learning_rate(self.dist.mean([loss_G_mean])[0])
        self.dist.check_same_weights(model.nets)
        for callback in self.callbacks:
            callback.on_epoch_end(self)
        self.early_stopped = self.dist.broadcast(self.early_stopped)
        skipped_note = f", {len(self.skipped)} files skipped so far" if self.skipped else ""
        say(f"End of epoch {self.epoch}/{self.last_epoch}: {time.time() - epoch_start:.1f} s, "
            f"lr {model.learning_rates()['lr_G']:.7f}{skipped_note}")
        self.epoch += 1
        self.batches_done = 0
        self._save_state()
        if self.dist.any(self._stop_requested):  # a signal during the end-of-epoch saves: they are complete
            say(f"stopped on request: {self.run_dir}")
            return True
        return self.early_stopped

    def _postfix(self, losses: dict[str, float]) -> str:
        recent = self._seconds_per_batch[-50:]
        eta = sum(recent) / len(recent) * self._remaining_batches()
        shown = " ".join(f"{k}={v:.2f}" for k, v in losses.items() if not k.startswith("idt"))
        return f"{shown} | run ETA {_format_seconds(eta)}"

    def _check_finite(self, losses: dict[str, float]) -> None:
        for name, value in losses.items():
            if not math.isfinite(value):
                raise UserError(
                    f"loss {name} became {value} at epoch {self.epoch}, iteration {self.total_iters + 1}; stopped "
                    f"without saving, the last good checkpoint in {self.run_dir} is intact. Try a lower --lr, "
                    "then resume with --continue_train")

    def _note_skip(self, path: str, reason: str) -> None:
        if path not in self.skipped:
            self.skipped[path] = reason
            say(f"warning: skipped {path}: {reason}")

    # --- saving -----------------------------------------------------------------------------------------------
    def save(self, why: str) -> None:
        """The latest weights (main process) and the full training state, now."""
        if self.dist.is_main:
            checkpoint.save_networks(self.model.nets, self.run_dir, "latest")
        self._save_state()
        say(f"{why}: {self.run_dir}")

    def _save_state(self) -> None:
        """Write the resume file (rank 0), holding every rank's RNG states and replay buffers."""
        rng = checkpoint.capture_rng_states()
        per_rank = self.dist.gather({**self.model.process_state_dict(), "rng": rng})
        if not self.dist.is_main or per_rank is None:
            return
        checkpoint.save_training_state(self.run_dir, {
            "epoch": self.epoch, "batches_done": self.batches_done, "total_iters": self.total_iters,
            "model": self.model.state_dict(), "rng": rng, "world_size": self.dist.world_size,
            "other_ranks": per_rank[1:], "early_stop": dict(self.early_stop),
            "options": options_mod.options_dict(self.opt), "data_fingerprint": self.data_fingerprint,
            # the tuner's choices (step plan and layers) this run made: a resume makes them again (training_plan)
            "plan_choices": dict(tuner.used) if (tuner := self.model.plan.tuner) is not None else {},
        })

    def _finish(self, interrupted: bool) -> TrainResult:
        if interrupted:
            say(f"Stopped at epoch {self.epoch}, iteration {self.batches_done}. Resume with the same "
                "command plus --continue_train.")
        else:
            say(f"Training done: {self.total_iters} images seen; weights in {self.run_dir}"
                + (f"; {len(self.skipped)} files skipped" if self.skipped else ""))
            if self.early_stop.get("best_epoch") is not None:
                say(f"Best {self.opt.early_stop_metric} {self.early_stop['best']:.4f} at epoch "
                    f"{self.early_stop['best_epoch']}, kept as best_net_*.pth: translate with it by adding --epoch "
                    f"best (test.py, cyclegan-culture stylize)")
        return TrainResult(self.run_dir, self.epoch, self.total_iters, interrupted, len(self.skipped),
                           self._stop_signal if interrupted else None)


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
