"""The training loop: epochs, schedules, logging, training visuals, checkpoints, and resuming.

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
from tqdm import tqdm

from cyclegan_culture import options as options_mod
from cyclegan_culture.data.cultures import CULTURE_FILE, load_culture
from cyclegan_culture.data.images import tensor_to_pil
from cyclegan_culture.data.transforms import SIZE_PRESERVING, Preprocess
from cyclegan_culture.data.unpaired import EpochSampler, UnpairedDataset
from cyclegan_culture.engine import checkpoint, distributed, resume, run_folder, stop_signals
from cyclegan_culture.engine.run_lock import RunLock
from cyclegan_culture.errors import UserError
from cyclegan_culture.eval.during_training import TrainingEvaluator
from cyclegan_culture.eval.metrics import append_jsonl
from cyclegan_culture.files import atomic_save_image, atomic_write_text, inside
from cyclegan_culture.models import networks
from cyclegan_culture.models.cycle_gan import LOSS_NAMES, VISUAL_NAMES, CycleGANModel
from cyclegan_culture.outputs import refuse_inside
from cyclegan_culture.viz.html import Cell, Section, culture_block, write_page
from cyclegan_culture.viz.visdom_monitor import LossPoint, VisdomMonitor

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


def _crossed(before: int, after: int, freq: int) -> bool:
    """True when a counter moving from ``before`` to ``after`` passes a multiple of ``freq``."""
    return after // freq > before // freq


class RunLog:
    """loss_log.txt in the reference's line format, and log.jsonl with one JSON object per logged step."""

    def __init__(self, run_dir: Path):
        self.loss_log = run_dir / "loss_log.txt"
        self.jsonl = run_dir / "log.jsonl"
        with open(self.loss_log, "a", encoding="utf-8") as f:
            f.write(f"================ Training Loss ({time.strftime('%c')}) ================\n")

    def write(self, epoch: int, epoch_iter: int, epoch_frac: float, total_iters: int, losses: dict[str, float],
              lrs: dict[str, float], t_comp: float, t_data: float) -> None:
        line = f"(epoch: {epoch}, iters: {epoch_iter}, time: {t_comp:.3f}, data: {t_data:.3f}) "
        line += "".join(f"{k}: {v:.3f} " for k, v in losses.items())
        record = {"epoch": epoch, "iters": epoch_iter, "epoch_frac": round(epoch_frac, 6),
                  "total_iters": total_iters, **losses, **lrs, "sec_per_iter": round(t_comp, 6),
                  "data_sec": round(t_data, 6), "time": time.time()}
        with open(self.loss_log, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


class Trainer:
    """Set up a run from options, then ``run()`` it. ``hooks`` are called after every iteration.

    Started by torchrun, each process joins the job's process group and trains data-parallel on its shard of the
    data (engine/distributed.py); rank 0 alone writes files and talks to Visdom.
    """

    def __init__(self, opt: argparse.Namespace, parser: argparse.ArgumentParser,
                 hooks: list[Callable[["Trainer"], None]] | None = None):
        options_mod.validate_run_name(opt.name)
        self.opt = opt
        self.run_dir = inside(Path(opt.checkpoints_dir), opt.name)
        self.dist, self.device = distributed.setup(opt.gpu_ids)
        self.lock = RunLock(self.run_dir)
        if self.dist.is_main:  # one live writer per run folder, before anything in it is read or moved
            self.lock.acquire()
            if self.lock.stale_owner:
                tqdm.write(f"note: took over {self.lock.path} left by process {self.lock.stale_owner.get('pid')} "
                           f"on {self.lock.stale_owner.get('host')}, which is no longer running")
        weakref.finalize(self, self.lock.release)
        try:
            self._setup(opt, parser, hooks)
        except BaseException:
            self.lock.release()
            raise

    def _setup(self, opt: argparse.Namespace, parser: argparse.ArgumentParser,
               hooks: list[Callable[["Trainer"], None]] | None) -> None:
        self.hooks = hooks or []
        self._stop_requested = False
        self._stop_requested_at = 0.0
        self._stop_signal: int | None = None
        self.skipped: dict[str, str] = {}

        state, changed = None, []
        if opt.continue_train and opt.start_over:
            raise UserError("--continue_train and --start_over contradict each other: choose one")
        if opt.continue_train:
            state = run_folder.load_state_to_resume(self.run_dir)
            changed = resume.resolve(opt, state.get("options") or options_mod.load_run_options(self.run_dir) or {})
        elif self.dist.is_main:
            run_folder.check_fresh_start(self.run_dir, opt.start_over)
        if not opt.dataroot:
            raise UserError("--dataroot is required: the folder holding trainA and trainB")
        options_mod.validate_train(opt)
        refuse_inside(self.run_dir, Path(opt.dataroot), "--checkpoints_dir", "the dataroot")

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
            tqdm.write("Resuming with changed flags (docs/reliability.md): " + ", ".join(f"--{k}" for k in changed))

        seed_everything(opt.seed)  # the same initial weights on every rank
        self.model = CycleGANModel(opt, self.device, is_train=True)
        rank, world = self.dist.rank, self.dist.world_size
        if rank > 0:  # each rank its own dropout noise and replay-buffer choices
            seed_everything(opt.seed + 7919 * rank)
            self.model.pool_rng.seed(f"{opt.seed}:{rank}")
        self.epoch = opt.epoch_count
        self.batches_done = 0
        self.total_iters = 0
        if state is not None:
            try:
                self.model.load_state_dict(state["model"])
            except (ValueError, KeyError) as exc:
                raise UserError(f"{self.run_dir / checkpoint.STATE_FILE}: does not match the options "
                                f"({str(exc)[:200]}); resume with the run's own model flags") from None
            self.epoch, self.batches_done, self.total_iters = (state["epoch"], state["batches_done"],
                                                               state["total_iters"])
            self._restore_process_state(state)
            if resume.schedule_changed(changed):
                self.model.follow_schedule(float(state.get("options", {}).get("lr", opt.lr)))
        elif opt.finetune_from:
            self._load_finetune_weights(Path(opt.finetune_from), opt.finetune_epoch)
        if opt.freeze:
            try:
                frozen = self.model.freeze(opt.freeze)
            except ValueError as exc:
                raise UserError(f"--freeze {exc}: unknown; use {', '.join(CycleGANModel.FREEZABLE)}") from None
            tqdm.write(f"Frozen: {', '.join(opt.freeze)} ({frozen / 1e6:.2f} M parameters kept fixed)")
        if self.dist.enabled:
            self.model.distribute(self.device)
        if opt.verbose and self.dist.is_main:
            for name, net in self.model.nets.items():
                print(name, net, f"parameters: {sum(p.numel() for p in net.parameters()) / 1e6:.3f} M")

        self.sampler = EpochSampler(len(self.dataset), opt.seed, shuffle=not opt.serial_batches, rank=rank,
                                    world_size=world)
        workers = opt.num_threads
        self.loader = DataLoader(self.dataset, batch_size=opt.batch_size, sampler=self.sampler,
                                 num_workers=workers, persistent_workers=workers > 0,
                                 worker_init_fn=stop_signals.ignore_stop_signals,
                                 pin_memory=self.device.type == "cuda",
                                 # its own generator: creating an iterator must not consume the global torch
                                 # RNG, or a resumed run would drift from an uninterrupted one
                                 generator=torch.Generator().manual_seed(opt.seed))
        self.batches_per_epoch = math.ceil(self.sampler.per_process / opt.batch_size)
        self.last_epoch = opt.n_epochs + opt.n_epochs_decay + opt.epoch_count - 1

        self.culture = load_culture(self.run_dir) if state is not None and (self.run_dir / CULTURE_FILE).is_file() \
            else load_culture(opt.dataroot)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.run_dir.glob(".*.tmp"):  # half-written files of a process killed while saving
                stale.unlink(missing_ok=True)
            options_mod.save_options(opt, parser, self.run_dir)
            if state is None or not (self.run_dir / CULTURE_FILE).is_file():  # a resumed run keeps its card
                atomic_write_text(self.run_dir / CULTURE_FILE,
                                  json.dumps(self.culture.to_dict(), indent=2, ensure_ascii=False))
        self.evaluator = (TrainingEvaluator(self.dataset.A_paths, self.dataset.B_paths)
                          if opt.eval_freq and self.dist.is_main else None)
        self.early_stop = (state or {}).get("early_stop") or {"best": None, "best_epoch": None, "bad_evals": 0}
        self.early_stopped = False
        self.web_dir = self.run_dir / "web"
        self.visual_epochs: list[int] = sorted(self._existing_visual_epochs(), reverse=True)

    def _load_finetune_weights(self, run: Path, epoch: str) -> None:
        """Start from another run's weights (same architecture); its optimizer state is not taken."""
        if not run.is_dir():
            raise UserError(f"--finetune_from {run}: run folder not found")
        for name, net in self.model.nets.items():
            path = checkpoint.network_path(run, epoch, name)
            if not path.is_file():
                if name.startswith("G"):
                    raise UserError(f"--finetune_from: {path} not found; check --finetune_epoch")
                tqdm.write(f"note: {path} not found; {name} starts from scratch")
                continue
            try:
                networks.load_network_state(net, checkpoint.load_network_weights(path))
            except ValueError as exc:
                raise UserError(f"--finetune_from: {path} does not fit this run's architecture ({str(exc)[:160]}); "
                                "use the same --netG/--ngf/--ndf/--norm as that run") from None
        tqdm.write(f"Fine-tuning from {run} (epoch {epoch})")

    def _restore_process_state(self, state: dict) -> None:
        """RNG states and replay buffers of this rank. Resuming with the number of processes the run was saved
        with continues exactly; with another number, the position in the epoch is kept (rounded down to whole
        steps, so a few images may be seen twice) and ranks beyond rank 0 start new RNG streams."""
        saved_world = int(state.get("world_size", 1))
        world, rank = self.dist.world_size, self.dist.rank
        if saved_world == world:
            mine = state if rank == 0 else state["other_ranks"][rank - 1]
            if rank > 0:
                self.model.load_process_state_dict(mine)
            checkpoint.restore_rng_states(mine["rng"])
            return
        if rank == 0:
            checkpoint.restore_rng_states(state["rng"])
        samples = self.batches_done * self.opt.batch_size * saved_world
        self.batches_done = samples // (self.opt.batch_size * world)
        if self.dist.is_main:
            tqdm.write(f"note: the run was saved with {saved_world} process(es) and resumes with {world}: training "
                       "continues from the same epoch position but is not bit-identical to an uninterrupted run")

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
        tqdm.write(f"{name}: stopping after this iteration and saving the training state (again to abort)...")
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
            tqdm.write(f"{opt.name} is finished: it trained epochs {opt.epoch_count}..{self.epoch - 1} "
                       f"({self.total_iters} images seen). To train longer, resume with a larger --n_epochs or "
                       "--n_epochs_decay")
            distributed.shutdown()
            return TrainResult(self.run_dir, self.epoch, self.total_iters, False, len(self.skipped))
        self.run_log = RunLog(self.run_dir) if self.dist.is_main else None
        tqdm.write(f"Training {opt.name}: {len(self.dataset.A_paths)} A and {len(self.dataset.B_paths)} B images, "
                   f"epochs {self.epoch}..{self.last_epoch}, {remaining} iterations to go on {self.device}; "
                   f"checkpoints in {self.run_dir}")
        if self.dist.enabled:
            tqdm.write(f"Data-parallel on {self.dist.world_size} processes ({self.dist.backend}): --batch_size "
                       f"{opt.batch_size} per process, effective batch {opt.batch_size * self.dist.world_size}, "
                       f"{self.batches_per_epoch} steps per epoch (docs/distributed.md on the learning rate)")
        self._seconds_per_batch: list[float] = []
        self.monitor = self._start_monitor() if opt.display_id > 0 and self.dist.is_main else None
        try:
            while self.epoch <= self.last_epoch:
                if self._run_epoch():  # stopped on request, or early
                    return self._finish(interrupted=not self.early_stopped)
            return self._finish(interrupted=False)
        finally:
            if self.monitor:
                self.monitor.close()
            distributed.shutdown()

    def _start_monitor(self) -> VisdomMonitor:
        """The Visdom monitor, seeded with the curves logged before the resumed position (if resuming)."""
        history = []
        log_file = self.run_dir / "log.jsonl"
        if self.total_iters and log_file.is_file():
            for line in log_file.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if "epoch_frac" in rec and rec.get("total_iters", 0) <= self.total_iters:
                    history.append(LossPoint(rec["epoch_frac"], {k: rec[k] for k in LOSS_NAMES if k in rec},
                                             {k: rec[k] for k in ("lr_G", "lr_D") if k in rec},
                                             rec.get("sec_per_iter", 0.0)))
        opt = self.opt
        return VisdomMonitor(opt.display_server, opt.display_port, opt.display_env or opt.name,
                             title=self.culture.title(), ncols=opt.display_ncols, history=history)

    def _remaining_batches(self) -> int:
        return (self.last_epoch - self.epoch + 1) * self.batches_per_epoch - self.batches_done

    def _run_epoch(self) -> bool:
        """One epoch (or the rest of one). Returns True when stopped early on request."""
        opt, model = self.opt, self.model
        self.sampler.set_epoch(self.epoch, start=self.batches_done * opt.batch_size)
        model.train()
        loss_G_sum, loss_G_count = 0.0, 0
        epoch_start = time.time()
        bar = tqdm(total=self.batches_per_epoch, initial=self.batches_done, mininterval=1.0, dynamic_ncols=True,
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
                epoch_iter = self.batches_done * opt.batch_size * self.dist.world_size
                if _crossed(before, self.total_iters, opt.print_freq):
                    losses = dict(zip(losses, self.dist.mean(list(losses.values()))))  # over all ranks
                    epoch_frac = self.epoch + min(epoch_iter, len(self.dataset)) / len(self.dataset)
                    if self.run_log:
                        self.run_log.write(self.epoch, epoch_iter, epoch_frac, self.total_iters, losses,
                                           model.learning_rates(), t_comp, t_data)
                    if self.monitor:
                        self.monitor.plot_losses(LossPoint(epoch_frac, losses, model.learning_rates(), t_comp))
                if _crossed(before, self.total_iters, opt.display_freq) and self.dist.is_main:
                    if not opt.no_html:
                        self._save_visuals(write_html=_crossed(before, self.total_iters, opt.update_html_freq)
                                           or len(self.visual_epochs) <= 1)
                    if self.monitor:
                        self.monitor.show_visuals({k: np.asarray(tensor_to_pil(v[0])).transpose(2, 0, 1)
                                                   for k, v in model.current_visuals().items()}, self.epoch)
                if _crossed(before, self.total_iters, opt.save_latest_freq):
                    self._save(f"saving the latest model (epoch {self.epoch}, total_iters {self.total_iters})")
                bar.set_postfix_str(self._postfix(losses), refresh=False)
                bar.update(1)
                for hook in self.hooks:
                    hook(self)
                if self.dist.any(self._stop_requested):  # Ctrl-C may reach some ranks an iteration later
                    self._save("stopped on request")
                    return True
                t_data_start = time.time()
        finally:
            bar.close()

        # End of epoch: step the schedules, keep the weights, and save the state for the next epoch.
        model.update_learning_rate(self.dist.mean([loss_G_sum / max(loss_G_count, 1)])[0])
        self.dist.check_same_weights(model.nets)
        if self.dist.is_main:
            if not opt.no_html:
                self._save_visuals(write_html=True)
            checkpoint.save_networks(model.nets, self.run_dir, "latest")
            if self.epoch % opt.save_epoch_freq == 0 or self.epoch == self.last_epoch:
                checkpoint.save_networks(model.nets, self.run_dir, self.epoch)
            if self.evaluator and self.epoch % opt.eval_freq == 0:
                self._evaluate()
        self.early_stopped = self.dist.broadcast(self.early_stopped)
        skipped_note = f", {len(self.skipped)} files skipped so far" if self.skipped else ""
        tqdm.write(f"End of epoch {self.epoch}/{self.last_epoch}: {time.time() - epoch_start:.1f} s, "
                   f"lr {model.learning_rates()['lr_G']:.7f}{skipped_note}")
        self.epoch += 1
        self.batches_done = 0
        self._save_state()
        if self.dist.any(self._stop_requested):  # a signal during the end-of-epoch saves: they are complete
            tqdm.write(f"stopped on request: {self.run_dir}")
            return True
        return self.early_stopped

    def _evaluate(self) -> None:
        """Score the generators on the fixed validation photos; keep the best weights; maybe stop early."""
        opt = self.opt
        results = self.evaluator(self.model.G_A, self.model.G_B, self.device)
        record = {"kind": "train_eval", "epoch": self.epoch, "total_iters": self.total_iters, **results}
        append_jsonl(self.run_dir / "metrics.jsonl", record)
        with open(self.run_dir / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"epoch": self.epoch, "total_iters": self.total_iters,
                                **{f"eval_{k}": v for k, v in results.items()}}) + "\n")
        if self.monitor:
            self.monitor.plot_losses(LossPoint(self.epoch + 1.0, {f"eval_{k}": v for k, v in results.items()}, {},
                                               float("nan")))
        value = results[opt.early_stop_metric]
        early = self.early_stop
        if early["best"] is None or value > early["best"]:
            early.update(best=value, best_epoch=self.epoch, bad_evals=0)
            checkpoint.save_networks(self.model.nets, self.run_dir, "best")
        else:
            early["bad_evals"] += 1
        tqdm.write("Evaluation at epoch {}: {} (best {} {:.4f} at epoch {})".format(
            self.epoch, ", ".join(f"{k} {v:.4f}" for k, v in results.items()), opt.early_stop_metric,
            early["best"], early["best_epoch"]))
        if opt.early_stop_patience and early["bad_evals"] >= opt.early_stop_patience:
            self.early_stopped = True
            tqdm.write(f"Early stop: {opt.early_stop_metric} has not improved for {early['bad_evals']} evaluations; "
                       f"the best weights (epoch {early['best_epoch']}) are best_net_*.pth")

    def _postfix(self, losses: dict[str, float]) -> str:
        recent = self._seconds_per_batch[-50:]
        eta = sum(recent) / len(recent) * self._remaining_batches()
        shown = " ".join(f"{k}={losses[k]:.2f}" for k in ("D_A", "G_A", "cycle_A", "D_B", "G_B", "cycle_B"))
        return f"{shown} | run ETA {_format_seconds(eta)}"

    def _check_finite(self, losses: dict[str, float]) -> None:
        for name in LOSS_NAMES:
            value = losses.get(name, 0.0)
            if not math.isfinite(value):
                raise UserError(
                    f"loss {name} became {value} at epoch {self.epoch}, iteration {self.total_iters + 1}; stopped "
                    f"without saving, the last good checkpoint in {self.run_dir} is intact. Try a lower --lr, "
                    "then resume with --continue_train")

    def _note_skip(self, path: str, reason: str) -> None:
        if path not in self.skipped:
            self.skipped[path] = reason
            tqdm.write(f"warning: skipped {path}: {reason}")

    # --- saving -----------------------------------------------------------------------------------------------
    def _save(self, why: str) -> None:
        if self.dist.is_main:
            checkpoint.save_networks(self.model.nets, self.run_dir, "latest")
        self._save_state()
        tqdm.write(f"{why}: {self.run_dir}")

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
        })

    def _finish(self, interrupted: bool) -> TrainResult:
        if interrupted:
            tqdm.write(f"Stopped at epoch {self.epoch}, iteration {self.batches_done}. Resume with the same "
                       "command plus --continue_train.")
        else:
            tqdm.write(f"Training done: {self.total_iters} images seen; weights in {self.run_dir}"
                       + (f"; {len(self.skipped)} files skipped" if self.skipped else ""))
        return TrainResult(self.run_dir, self.epoch, self.total_iters, interrupted, len(self.skipped),
                           self._stop_signal if interrupted else None)

    # --- training visuals (web/index.html) --------------------------------------------------------------------
    def _existing_visual_epochs(self) -> set[int]:
        images = self.web_dir / "images"
        if not images.is_dir():
            return set()
        return {int(p.name[5:8]) for p in images.glob("epoch[0-9][0-9][0-9]_real_A.png")}

    def _save_visuals(self, write_html: bool) -> None:
        visuals = self.model.current_visuals()
        for label in VISUAL_NAMES:
            if label in visuals:
                atomic_save_image(tensor_to_pil(visuals[label][0]),
                                  self.web_dir / "images" / f"epoch{self.epoch:03d}_{label}.png")
        if self.epoch not in self.visual_epochs:
            self.visual_epochs = sorted({*self.visual_epochs, self.epoch}, reverse=True)
        if write_html:
            self._write_web_page()

    def _write_web_page(self) -> None:
        labels = [label for label in VISUAL_NAMES if self.opt.lambda_identity > 0 or not label.startswith("idt")]
        sections = []
        for epoch in self.visual_epochs:  # newest first
            cells = [Cell(f"images/epoch{epoch:03d}_{label}.png", label) for label in labels
                     if (self.web_dir / "images" / f"epoch{epoch:03d}_{label}.png").exists()]
            sections.append(Section(f"epoch [{epoch}]", rows=[cells]))
        write_page(self.web_dir / "index.html", f"Experiment name = {self.opt.name}", sections,
                   intro=[culture_block(self.culture.to_dict())], refresh_seconds=60)


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def train(opt: argparse.Namespace, parser: argparse.ArgumentParser) -> TrainResult:
    return Trainer(opt, parser).run()
