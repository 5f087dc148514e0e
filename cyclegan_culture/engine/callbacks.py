"""What happens around the training loop, as callbacks: the run log, the web page of training visuals, Visdom,
evaluation with early stopping, and checkpoint timing. The loop (engine/trainer.py) does data, steps, schedule
and state, and calls these at fixed points; ``default_callbacks`` assembles them from the options.

A callback overrides the points it needs. Those with ``all_ranks`` run in every data-parallel process (their
work includes collective operations); the others run in the main process only.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from cyclegan_culture.data.cultures import load_culture
from cyclegan_culture.data.images import list_images, tensor_to_pil
from cyclegan_culture.eval.during_training import TrainingEvaluator
from cyclegan_culture.eval.judge import load_judge
from cyclegan_culture.eval.metrics import append_jsonl
from cyclegan_culture.files import atomic_save_image
from cyclegan_culture.progress import say
from cyclegan_culture.runs import checkpoint
from cyclegan_culture.viz.html import Cell, Section, culture_block, write_page
from cyclegan_culture.viz.tensorboard_log import TENSORBOARD_DIR, TensorBoardLog, options_markdown
from cyclegan_culture.viz.visdom_monitor import LossPoint, VisdomMonitor

if TYPE_CHECKING:  # for type hints only: the trainer imports this module
    from cyclegan_culture.engine.trainer import Trainer


@dataclass
class LogPoint:
    """The losses at a logged step, averaged over all processes."""
    epoch_iter: int
    epoch_frac: float
    losses: dict[str, float]
    learning_rates: dict[str, float]
    sec_per_image: float
    data_sec: float


def crossed(before: int, after: int, freq: int) -> bool:
    """True when a counter moving from ``before`` to ``after`` passes a multiple of ``freq``."""
    return after // freq > before // freq


class Callback:
    all_ranks = False

    def on_train_start(self, trainer: "Trainer") -> None:
        pass

    def on_log(self, trainer: "Trainer", point: LogPoint) -> None:
        """Every --print_freq images."""

    def on_display(self, trainer: "Trainer", before: int) -> None:
        """Every --display_freq images (``before``: the image count before this step)."""

    def on_step_end(self, trainer: "Trainer", before: int) -> None:
        pass

    def on_epoch_end(self, trainer: "Trainer") -> None:
        """After the schedules stepped, before the training state is saved."""

    def on_evaluation(self, trainer: "Trainer", results: dict[str, float]) -> None:
        pass

    def on_train_end(self, trainer: "Trainer") -> None:
        pass


class RunLogCallback(Callback):
    """loss_log.txt in the reference's line format, and log.jsonl with one JSON object per logged step."""

    def on_train_start(self, trainer: "Trainer") -> None:
        self.loss_log = trainer.run_dir / "loss_log.txt"
        self.jsonl = trainer.run_dir / "log.jsonl"
        with open(self.loss_log, "a", encoding="utf-8") as f:
            f.write(f"================ Training Loss ({time.strftime('%c')}) ================\n")

    def on_log(self, trainer: "Trainer", point: LogPoint) -> None:
        line = f"(epoch: {trainer.epoch}, iters: {point.epoch_iter}, time: {point.sec_per_image:.3f}, " \
               f"data: {point.data_sec:.3f}) " + "".join(f"{k}: {v:.3f} " for k, v in point.losses.items())
        record = {"epoch": trainer.epoch, "iters": point.epoch_iter, "epoch_frac": round(point.epoch_frac, 6),
                  "total_iters": trainer.total_iters, **point.losses, **point.learning_rates,
                  "sec_per_iter": round(point.sec_per_image, 6), "data_sec": round(point.data_sec, 6),
                  "time": time.time()}
        with open(self.loss_log, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def on_evaluation(self, trainer: "Trainer", results: dict[str, float]) -> None:
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps({"epoch": trainer.epoch, "total_iters": trainer.total_iters,
                                **{f"eval_{k}": v for k, v in results.items()}}) + "\n")


class WebVisualsCallback(Callback):
    """web/index.html: the current visuals of each epoch, newest first (the reference's training page)."""

    def __init__(self, update_html_freq: int):
        self.update_html_freq = update_html_freq

    def on_train_start(self, trainer: "Trainer") -> None:
        self.web_dir = trainer.run_dir / "web"
        images = self.web_dir / "images"
        found = {int(p.name[5:8]) for p in images.glob("epoch[0-9][0-9][0-9]_real_A.png")} if images.is_dir() \
            else set()
        self.visual_epochs = sorted(found, reverse=True)

    def on_display(self, trainer: "Trainer", before: int) -> None:
        self._save(trainer, crossed(before, trainer.total_iters, self.update_html_freq)
                   or len(self.visual_epochs) <= 1)

    def on_epoch_end(self, trainer: "Trainer") -> None:
        self._save(trainer, write_html=True)

    def _save(self, trainer: "Trainer", write_html: bool) -> None:
        images = self.web_dir / "images"
        for label, tensor in trainer.model.current_visuals().items():
            atomic_save_image(tensor_to_pil(tensor[0]), images / f"epoch{trainer.epoch:03d}_{label}.png")
        if trainer.epoch not in self.visual_epochs:
            self.visual_epochs = sorted({*self.visual_epochs, trainer.epoch}, reverse=True)
        if write_html:
            self._write_page(trainer)

    def _write_page(self, trainer: "Trainer") -> None:
        labels = [label for label in trainer.model.visual_names
                  if trainer.opt.lambda_identity > 0 or not label.startswith("idt")]
        sections = []
        for epoch in self.visual_epochs:  # newest first
            cells = [Cell(f"images/epoch{epoch:03d}_{label}.png", label) for label in labels
                     if (self.web_dir / "images" / f"epoch{epoch:03d}_{label}.png").exists()]
            sections.append(Section(f"epoch [{epoch}]", rows=[cells]))
        write_page(self.web_dir / "index.html", f"Experiment name = {trainer.opt.name}", sections,
                   intro=[culture_block(trainer.culture.to_dict())], refresh_seconds=60,
                   image_size=trainer.opt.display_winsize)


class VisdomCallback(Callback):
    """Losses, learning rates, speed and the current visuals in Visdom; a resumed run shows its earlier curves."""

    def __init__(self, server: str, port: int, env: str, ncols: int):
        self.server, self.port, self.env, self.ncols = server, port, env, ncols
        self.monitor: VisdomMonitor | None = None

    def on_train_start(self, trainer: "Trainer") -> None:
        history = []
        log_file = trainer.run_dir / "log.jsonl"
        if trainer.total_iters and log_file.is_file():
            for line in log_file.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if "epoch_frac" in rec and rec.get("total_iters", 0) <= trainer.total_iters:
                    history.append(LossPoint(rec["epoch_frac"], {k: rec[k] for k in trainer.model.loss_names if k in rec},
                                             {k: rec[k] for k in ("lr_G", "lr_D") if k in rec},
                                             rec.get("sec_per_iter", 0.0)))
        self.monitor = VisdomMonitor(self.server, self.port, self.env, title=trainer.culture.title(),
                                     ncols=self.ncols, history=history)
        say(f"Visdom: sending this run's plots to {self.monitor.address}")

    def on_log(self, trainer: "Trainer", point: LogPoint) -> None:
        self.monitor.plot_losses(LossPoint(point.epoch_frac, point.losses, point.learning_rates, point.sec_per_image))

    def on_display(self, trainer: "Trainer", before: int) -> None:
        self.monitor.show_visuals({k: np.asarray(tensor_to_pil(v[0])).transpose(2, 0, 1)
                                   for k, v in trainer.model.current_visuals().items()}, trainer.epoch)

    def on_evaluation(self, trainer: "Trainer", results: dict[str, float]) -> None:
        self.monitor.plot_losses(LossPoint(trainer.epoch + 1.0, {f"eval_{k}": v for k, v in results.items()}, {},
                                           float("nan")))

    def on_train_end(self, trainer: "Trainer") -> None:
        if self.monitor:
            self.monitor.close()


class CheckpointCallback(Callback):
    """The latest weights and full state every --save_latest_freq images; at each epoch's end the latest weights
    and, every --save_epoch_freq epochs and at the last, <epoch>_net_*.pth."""

    all_ranks = True  # saving the state gathers every process's RNG states and replay buffers

    def __init__(self, save_latest_freq: int, save_epoch_freq: int, save_by_iter: bool = False):
        self.save_latest_freq, self.save_epoch_freq = save_latest_freq, save_epoch_freq
        self.save_by_iter = save_by_iter  # the reference's iter_<N>_net_*.pth, kept beside latest

    def on_step_end(self, trainer: "Trainer", before: int) -> None:
        if crossed(before, trainer.total_iters, self.save_latest_freq):
            trainer.save(f"saving the latest model (epoch {trainer.epoch}, total_iters {trainer.total_iters})")
            if self.save_by_iter and trainer.dist.is_main:
                checkpoint.save_networks(trainer.model.nets, trainer.run_dir, f"iter_{trainer.total_iters}")

    def on_epoch_end(self, trainer: "Trainer") -> None:
        if trainer.dist.is_main:
            checkpoint.save_networks(trainer.model.nets, trainer.run_dir, "latest")
            if trainer.epoch % self.save_epoch_freq == 0 or trainer.epoch == trainer.last_epoch:
                checkpoint.save_networks(trainer.model.nets, trainer.run_dir, trainer.epoch)


class EvaluationCallback(Callback):
    """Every --eval_freq epochs: content SSIM, style score and cycle PSNR on fixed photos; the best weights kept as
    best_net_*.pth; with --early_stop_patience, stop when the metric stalls. Its record of the best lives in the
    trainer's ``early_stop``, which the training state keeps."""

    def __init__(self, eval_freq: int, metric: str, patience: int, judge: str | None = None):
        self.eval_freq, self.metric, self.patience, self.judge = eval_freq, metric, patience, judge
        self.evaluator: Callable[..., dict[str, float]] | None = None  # a TrainingEvaluator, built at the start

    def on_train_start(self, trainer: "Trainer") -> None:
        if self.evaluator is None:
            judge = load_judge(self.judge) if self.judge else None
            culture = load_culture(trainer.opt.dataroot)
            # the dataset's test photos: neither the model nor a judge trained on the dataset has seen them
            test_photos = Path(trainer.opt.dataroot) / "testA"
            self.evaluator = TrainingEvaluator(trainer.dataset.A_paths, trainer.dataset.B_paths, judge=judge,
                                               target=culture.domain_B or culture.name,
                                               judge_photos=list_images(test_photos)[0] if test_photos.is_dir()
                                               else None)

    def on_epoch_end(self, trainer: "Trainer") -> None:
        if trainer.epoch % self.eval_freq:
            return
        model = trainer.model
        forward, backward = (model.nets.get(model.generators.get(d, "")) for d in ("AtoB", "BtoA"))
        results = self.evaluator(forward, backward, trainer.device)
        append_jsonl(trainer.run_dir / "metrics.jsonl",
                     {"kind": "train_eval", "epoch": trainer.epoch, "total_iters": trainer.total_iters, **results})
        for callback in trainer.callbacks:
            callback.on_evaluation(trainer, results)
        value, early = results[self.metric], trainer.early_stop
        if early["best"] is None or value > early["best"]:
            early.update(best=value, best_epoch=trainer.epoch, bad_evals=0)
            checkpoint.save_networks(trainer.model.nets, trainer.run_dir, "best")
        else:
            early["bad_evals"] += 1
        say("Evaluation at epoch {}: {} (best {} {:.4f} at epoch {})".format(
            trainer.epoch, ", ".join(f"{k} {v:.4f}" for k, v in results.items()), self.metric, early["best"],
            early["best_epoch"]))
        if self.patience and early["bad_evals"] >= self.patience:
            trainer.early_stopped = True
            say(f"Early stop: {self.metric} has not improved for {early['bad_evals']} evaluations; the best "
                f"weights (epoch {early['best_epoch']}) are best_net_*.pth")


class TensorBoardCallback(Callback):
    """--tensorboard: event files in RUN/tensorboard/ (losses, learning rates, speed, evaluations, the current
    visuals, the resolved options as text), read with `tensorboard --logdir checkpoints`."""

    def on_train_start(self, trainer: "Trainer") -> None:
        self.log = TensorBoardLog(trainer.run_dir / TENSORBOARD_DIR, purge_step=trainer.total_iters or None)
        if not trainer.total_iters:
            self.log.text("options", options_markdown(vars(trainer.opt)), 0)
        say(f"TensorBoard: event files in {self.log.folder} (tensorboard --logdir {trainer.run_dir.parent})")

    def on_log(self, trainer: "Trainer", point: LogPoint) -> None:
        step = trainer.total_iters
        self.log.scalars("loss", point.losses, step)
        self.log.scalars("learning_rate", point.learning_rates, step)
        self.log.scalars("speed", {"sec_per_image": point.sec_per_image, "data_sec": point.data_sec}, step)

    def on_display(self, trainer: "Trainer", before: int) -> None:
        for label, tensor in trainer.model.current_visuals().items():
            self.log.image(f"visuals/{label}", np.asarray(tensor_to_pil(tensor[0])), trainer.total_iters)

    def on_evaluation(self, trainer: "Trainer", results: dict[str, float]) -> None:
        self.log.scalars("eval", results, trainer.total_iters)

    def on_epoch_end(self, trainer: "Trainer") -> None:
        self.log.flush()

    def on_train_end(self, trainer: "Trainer") -> None:
        self.log.close()


class HookCallback(Callback):
    """Plain functions called after every iteration with the trainer (tests stop or crash runs with these)."""

    all_ranks = True

    def __init__(self, hooks: list[Callable[["Trainer"], None]]):
        self.hooks = hooks

    def on_step_end(self, trainer: "Trainer", before: int) -> None:
        for hook in self.hooks:
            hook(trainer)


def default_callbacks(opt: argparse.Namespace) -> list[Callback]:
    """The callbacks the options ask for, in the order they run at each point."""
    callbacks: list[Callback] = [RunLogCallback()]
    if not opt.no_html:
        callbacks.append(WebVisualsCallback(opt.update_html_freq))
    if opt.display_id > 0:
        callbacks.append(VisdomCallback(opt.display_server, opt.display_port, opt.display_env or opt.name,
                                        opt.display_ncols))
    if opt.tensorboard:
        callbacks.append(TensorBoardCallback())
    callbacks.append(CheckpointCallback(opt.save_latest_freq, opt.save_epoch_freq, opt.save_by_iter))
    if opt.eval_freq:
        callbacks.append(EvaluationCallback(opt.eval_freq, opt.early_stop_metric, opt.early_stop_patience, opt.judge))
    return callbacks
