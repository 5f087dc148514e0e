"""A run folder's description and its weights: opt.json (the resolved flags, the reference's way), config.json
(the typed model configuration), which epochs are saved, ``load_generator`` — the one way test, stylize,
compare, analyze and export load a trained generator — and the weights fine-tuning starts from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cyclegan_culture.errors import UserError, brief
from cyclegan_culture.files import atomic_write_text
from cyclegan_culture.models import networks, registry
from cyclegan_culture.models.config import ModelConfig, TrainSchedule
from cyclegan_culture.progress import say
from cyclegan_culture.runs.checkpoint import load_network_weights, network_path

CONFIG_FILE = "config.json"
OPTIONS_FILE = "opt.json"


def load_run_options(run_dir: Path | None) -> dict[str, Any] | None:
    """The flags a run was trained with, or None for a run without opt.json (e.g. trained by the reference)."""
    if run_dir is None:
        return None
    path = Path(run_dir) / OPTIONS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the run's options ({exc}); fix or delete the file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of options; fix or delete the file")
    return data


def save_config(run_dir: Path, config: ModelConfig, schedule: TrainSchedule) -> None:
    atomic_write_text(Path(run_dir) / CONFIG_FILE, json.dumps(
        {"model": config.model, "model_config": config.to_dict(), "schedule": schedule.to_dict()}, indent=2))


def read_model_config(run_dir: Path | None, overrides: dict[str, Any] | None = None) -> ModelConfig:
    """A run's model configuration: its config.json, else the network flags of its opt.json, else the
    reference's defaults (a bare or reference-trained checkpoint); ``overrides`` on top."""
    values: dict[str, Any] = {}
    path = Path(run_dir) / CONFIG_FILE if run_dir is not None else None
    if path is not None and path.is_file():
        try:
            values = dict(json.loads(path.read_text(encoding="utf-8"))["model_config"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path}: cannot read the model configuration ({exc}); fix or delete it") from None
    else:
        saved = load_run_options(run_dir) or {}
        values = {k: saved[k] for k in (*ModelConfig.NETWORK_FIELDS, "model") if k in saved}
    return ModelConfig.from_dict({**values, **(overrides or {})})


GALLERIES_FILE = "galleries.json"


def record_gallery(run_dir: Path, phase: str, epoch: str, page: Path) -> None:
    """Note where test.py wrote this run's gallery (so compare can link to it wherever --results_dir was)."""
    path = Path(run_dir) / GALLERIES_FILE
    try:
        known = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        known = {}  # a damaged note only loses links; it is rewritten whole
    if not isinstance(known, dict):
        known = {}
    known[f"{phase}_{epoch}"] = str(Path(page).resolve())
    try:
        atomic_write_text(path, json.dumps(known, indent=2, ensure_ascii=False) + "\n")
    except OSError:
        pass  # a read-only run folder: compare then looks under --results_dir only


def recorded_gallery(run_dir: Path, phase: str, epoch: str) -> Path | None:
    try:
        known = json.loads((Path(run_dir) / GALLERIES_FILE).read_text(encoding="utf-8"))
        return Path(known[f"{phase}_{epoch}"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def available_epochs(run_dir: Path) -> list[str]:
    return sorted({p.name.split("_net_")[0] for p in Path(run_dir).glob("*_net_G_A.pth")})


def generator_file(run_dir: Path, epoch: str, name: str) -> Path:
    path = network_path(run_dir, epoch, name)
    if not path.is_file():
        found = available_epochs(run_dir)
        hint = f"available: {', '.join(found)}" if found else "train the model first, or check the run folder"
        raise UserError(f"{path}: checkpoint not found ({hint}); set --epoch or the run folder")
    return path


def generator_from_state(state: dict[str, torch.Tensor], config: ModelConfig, plan: Any,
                         direction: str = "AtoB") -> nn.Module:
    """A generator of ``direction`` (AtoB: input_nc -> output_nc) built as ``config`` describes, holding
    ``state``, run as ``plan`` (an accel.ExecutionPlan) says, in eval mode. Raises ValueError if it does not fit."""
    in_nc, out_nc = (config.input_nc, config.output_nc) if direction == "AtoB" else \
        (config.output_nc, config.input_nc)
    net = networks.define_G(in_nc, out_nc, config.ngf, config.netG, config.norm, config.use_dropout,
                            config.init_type, config.init_gain, config.upsample)
    networks.load_network_state(net, state)
    return plan.apply(net).eval().requires_grad_(False)


def load_generator_file(path: Path, config: ModelConfig, direction: str, device: torch.device,
                        plan: Any) -> nn.Module:
    """The generator of ``direction`` from a state-dict file (ours or the reference's); see generator_from_state."""
    try:
        return generator_from_state(load_network_weights(path), config, plan, direction)
    except ValueError as exc:
        raise UserError(f"{path}: does not fit --netG {config.netG} --ngf {config.ngf} --norm {config.norm} "
                        f"({brief(exc)}); pass the flags the model was trained with") from None


def generator_names(config: ModelConfig) -> dict[str, str]:
    """Direction -> the network file inference loads (e.g. G_A, or G_A_ema for a run that averages)."""
    return registry.model_class(config.model).generator_names(config)


def load_generator(run_dir: Path, epoch: str, direction: str, device: torch.device, plan: Any,
                   config: ModelConfig | None = None) -> nn.Module:
    """A run's generator for ``direction`` at ``epoch`` (G_A for AtoB, G_B for BtoA)."""
    config = config or read_model_config(run_dir)
    names = generator_names(config)
    if direction not in names:
        raise UserError(f"{run_dir}: a {config.model} model translates only {', '.join(names)}; use --direction "
                        f"{next(iter(names))}")
    name = names[direction]
    return load_generator_file(generator_file(run_dir, str(epoch), name), config, direction, device, plan)


def load_finetune_weights(nets: dict[str, nn.Module], run: Path, epoch: str) -> None:
    """Another run's weights into ``nets`` (same architecture), for --finetune_from; generators are required,
    a missing discriminator starts from scratch with a note."""
    if not run.is_dir():
        raise UserError(f"--finetune_from {run}: run folder not found")
    for name, net in nets.items():
        path = network_path(run, epoch, name)
        if not path.is_file() and name.endswith("_ema"):  # a run without averages: start them from its weights
            path = network_path(run, epoch, name.removesuffix("_ema"))
        if not path.is_file():
            if name.startswith("G"):
                raise UserError(f"--finetune_from: {path} not found; check --finetune_epoch")
            say(f"note: {path} not found; {name} starts from scratch")
            continue
        try:
            networks.load_network_state(net, load_network_weights(path))
        except ValueError as exc:
            raise UserError(f"--finetune_from: {path} does not fit this run's architecture ({brief(exc)}); "
                            "use the same --netG/--ngf/--ndf/--norm as that run") from None
    say(f"Fine-tuning from {run} (epoch {epoch})")
