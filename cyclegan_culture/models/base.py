"""What every translation model shares: optimizers and schedules, the averaged generators (--ema_decay), the
discriminators' augmentation (--diffaugment), freezing, data-parallel wrapping and the full training state.

A model subclasses ``TranslationModel``, builds its networks into ``self.nets`` and names them in the class
attributes ``GENERATORS`` (direction -> generator), ``CRITICS`` (the discriminators the generator step calls
frozen) and ``FREEZABLE``; it writes ``set_input``, ``forward`` and ``optimize_parameters``. The contract it then
keeps is in models/registry.py.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import warnings
from typing import Any, Iterator

import torch
from torch import nn

from cyclegan_culture.models import networks, parallel
from cyclegan_culture.models.config import ModelConfig, TrainSchedule
from cyclegan_culture.models.diffaugment import diff_augment, parse_policy
from cyclegan_culture.models.losses import r1_penalty

R1_INTERVAL = 4  # steps between R1 penalties (each weighted this many times)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: TrainSchedule) -> Any:
    """linear: constant for n_epochs, then linear to zero over n_epochs_decay (stepped once per epoch)."""
    if schedule.lr_policy == "linear":
        def rule(epoch: int) -> float:
            return 1.0 - max(0, epoch + schedule.epoch_count - schedule.n_epochs) / float(schedule.n_epochs_decay + 1)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=rule)
    if schedule.lr_policy == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=schedule.lr_decay_iters, gamma=0.1)
    if schedule.lr_policy == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.2, threshold=0.01,
                                                          patience=5)
    if schedule.lr_policy == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=schedule.n_epochs, eta_min=0)
    raise ValueError(f"unknown lr_policy {schedule.lr_policy!r}")


def optimizer_kernels(device: torch.device) -> dict[str, bool]:
    """Which multi-tensor implementation the optimizers use. On CPU the fused kernels (one vectorised pass per
    tensor) take a step of the default networks' Adam from 66 to 11 ms (docs/performance.md); elsewhere foreach
    kernels, the setting the CUDA figures were measured with."""
    return {"fused": True, "foreach": False} if device.type == "cpu" else {"fused": False, "foreach": True}


def _match_layouts(optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> None:
    """Before a fused step: give every gradient and every per-parameter state tensor (Adam's moments, SGD's
    momentum) its parameter's strides. On CPU (torch 2.14) the fused kernels corrupt updates when these differ,
    as happens with channels_last gradients, or when a run resumes moments saved in another layout
    (tests/test_speed_flags.py)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None and p.grad.stride() != p.stride():
                p.grad = torch.empty_like(p).copy_(p.grad)
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def make_optimizer(params: Iterator[nn.Parameter], schedule: TrainSchedule, device: torch.device
                   ) -> torch.optim.Optimizer:
    """Adam (the reference's), AdamW or SGD, with multi-tensor kernels (``optimizer_kernels``) instead of a
    Python loop per tensor."""
    params = list(params)
    kernels = optimizer_kernels(device)
    if schedule.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if schedule.optimizer == "adam" else torch.optim.AdamW
        optimizer = cls(params, lr=schedule.lr, betas=(schedule.beta1, 0.999), weight_decay=schedule.weight_decay, **kernels)
    elif schedule.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=schedule.lr, momentum=schedule.beta1, weight_decay=schedule.weight_decay, **kernels)
    else:
        raise ValueError(f"unknown optimizer {schedule.optimizer!r}")
    if kernels["fused"]:
        optimizer.register_step_pre_hook(_match_layouts)
    return optimizer


class TranslationModel:
    """The shared half of a model; see the module docstring."""

    GENERATORS: dict[str, str] = {}
    CRITICS: tuple[str, ...] = ()
    FREEZABLE: tuple[str, ...] = ()
    loss_names: tuple[str, ...] = ()
    visual_names: tuple[str, ...] = ()

    def __init__(self, config: ModelConfig, device: torch.device, plan: Any, schedule: TrainSchedule | None = None):
        self.config = config
        self.schedule = schedule
        self.device = device
        self.is_train = schedule is not None
        self.plan = plan
        self.amp_dtype = plan.autocast_dtype
        self.memory_format = plan.memory_format
        self.generators = self.generator_names(config)
        self.nets: dict[str, nn.Module] = {}
        self.current_losses: dict[str, float] = {}
        self.frozen: set[int] = set()
        self.ema_steps = 0
        self._r1_calls: dict[str, int] = {}
        self.augment_policy = parse_policy(config.diffaugment)
        self.pool_rng = random.Random(config.seed)  # the replay buffers' choices (models without any ignore it)
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedulers: list[Any] = []

    def _batches_calls(self) -> bool:
        """Whether a network takes several images of a step in one call: where the plan says so (its
        ``batch_calls``, default on) and the normalisation is per sample (batch norm would mix their
        statistics)."""
        return self.config.norm != "batch" and self._plan_batches_calls()

    def _plan_batches_calls(self) -> bool:
        """The plan's ``batch_calls`` alone (CUT batches its images as its authors' code does, whatever the norm)."""
        return getattr(self.plan, "batch_calls", True)

    # --- set up by subclasses' __init__ -------------------------------------------------------------------------
    def _define_critic(self, channels: int) -> nn.Module:
        """A discriminator for images of ``channels`` channels, as the configuration describes them, with the
        plan's fast layers."""
        cfg = self.config
        return self.plan.apply(networks.define_D(channels, cfg.ndf, cfg.netD, cfg.n_layers_D, cfg.norm, cfg.init_type,
                                                 cfg.init_gain, cfg.spectral_norm))

    def _finish_training_setup(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """After the networks are in ``self.nets``: the compiled step functions, the averaged generators, the
        loss scaler and the schedulers."""
        # What the step calls: the networks themselves, or their compiled versions (state dicts stay plain).
        self.run = self.plan.compiled(self.nets)
        # The discriminators as the generator step calls them (frozen there): under DDP, not through its wrapper,
        # since no gradient of theirs is computed, and each wrapper expects one backward per forward.
        self.critic_run = {name: self.run[name] for name in self.CRITICS}
        if self.config.ema_decay > 0:  # never trained, never compiled: what inference loads
            for name in sorted(set(self.GENERATORS.values())):
                self.nets[name + "_ema"] = copy.deepcopy(self.nets[name]).eval().requires_grad_(False)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.optimizers = optimizers
        self.schedulers = [make_scheduler(o, self.schedule) for o in optimizers]

    @classmethod
    def generator_names(cls, config: ModelConfig) -> dict[str, str]:
        """Direction -> the network inference loads: the averaged generator when the run keeps one."""
        suffix = "_ema" if config.ema_decay > 0 else ""
        return {direction: name + suffix for direction, name in cls.GENERATORS.items()}

    def set_input(self, batch: dict[str, Any]) -> None:
        """A batch of the unpaired dataset: real_A and real_B (swapped with --direction BtoA), on the device."""
        a_to_b = self.config.direction == "AtoB"
        self.real_A = batch["A" if a_to_b else "B"].to(self.device, non_blocking=True,
                                                       memory_format=self.memory_format)
        self.real_B = batch["B" if a_to_b else "A"].to(self.device, non_blocking=True,
                                                       memory_format=self.memory_format)
        self.image_paths = batch["A_paths" if a_to_b else "B_paths"]

    # --- pieces of a training step -----------------------------------------------------------------------------
    @torch.no_grad()
    def _update_averages(self) -> None:
        """Move each averaged generator toward its trained one. The decay ramps up from 0 (as in StyleGAN), so
        early averages are not dominated by the random initialisation."""
        if self.config.ema_decay <= 0:
            return
        self.ema_steps += 1
        decay = min(self.config.ema_decay, (1 + self.ema_steps) / (10 + self.ema_steps))
        for name in sorted(set(self.GENERATORS.values())):
            averaged, trained = self.nets[name + "_ema"], self.nets[name]
            for p_avg, p in zip(averaged.parameters(), trained.parameters()):
                p_avg.lerp_(p.detach(), 1.0 - decay)
            for b_avg, b in zip(averaged.buffers(), trained.buffers()):
                b_avg.copy_(b)

    def _critic_input(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.augment_policy) if self.augment_policy else x

    def _critic_regularisation(self, name: str, real: torch.Tensor) -> torch.Tensor:
        """What the configuration adds to critic ``name``'s loss on the (augmented) real images it saw: the R1
        penalty times ``lambda_r1 / 2`` (its usual gamma / 2), or 0. A double backward, in fp32 through the eager
        network (compiled graphs do not support it): every step it made a crop-128 step 1.4x slower, so, as
        StyleGAN2's lazy regularisation, it runs every ``R1_INTERVAL``-th call, weighted that many times (1.2x)."""
        calls = self._r1_calls[name] = self._r1_calls.get(name, 0) + 1
        if self.config.lambda_r1 <= 0 or calls % R1_INTERVAL:
            return torch.zeros((), device=self.device)
        with torch.autocast(self.device.type, enabled=False):
            return 0.5 * self.config.lambda_r1 * R1_INTERVAL * r1_penalty(self.nets[name], real.float())

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is not None:
            return torch.autocast(self.device.type, dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def _set_requires_grad(self, nets: tuple[nn.Module, ...], requires_grad: bool) -> None:
        for net in nets:
            for p in net.parameters():
                p.requires_grad_(requires_grad and id(p) not in self.frozen)

    def _release_graph(self) -> None:
        """Keep the step's images and losses only as values: attributes still tied to the autograd graph hold
        its nodes alive into the next step (about 150 MB at crop 128 in fp32, measured)."""
        for name in (*self.visual_names, *("loss_" + n for n in self.loss_names), "loss_G"):
            value = getattr(self, name, None)
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.detach())

    # --- the rest of the contract ------------------------------------------------------------------------------
    def freeze(self, names: list[str]) -> int:
        """Keep the named networks or generator parts fixed (no gradients, no updates). Returns how many
        parameters were frozen. Raises ValueError for an unknown name."""
        count = 0
        for name in names:
            if name not in self.FREEZABLE:
                raise ValueError(name)
            net_name, _, part = name.partition(".")
            if part and not hasattr(self.nets[net_name], "parts"):  # a U-Net has no encoder/blocks/decoder
                raise ValueError(name)
            modules = self.nets[net_name].parts()[part] if part else [self.nets[net_name]]
            for module in modules:
                for p in module.parameters():
                    if id(p) not in self.frozen:
                        self.frozen.add(id(p))
                        p.requires_grad_(False)
                        count += p.numel()
        return count

    def distribute(self, device: torch.device) -> None:
        """Train data-parallel (under torchrun): synchronise batch norm across processes and wrap each network
        that has trainable parameters in DistributedDataParallel. Call after ``freeze`` and loading weights."""
        if self.config.norm == "batch":
            for name in list(self.nets):
                self.nets[name] = parallel.synchronize_batch_norm(self.nets[name], device)
                setattr(self, name, self.nets[name])
        wrapped = {name: parallel.data_parallel(net, device) if any(p.requires_grad for p in net.parameters())
                   else net for name, net in self.nets.items()}
        critics = {name: self.nets[name] for name in self.CRITICS}  # unwrapped: see _finish_training_setup
        self.run, self.critic_run = self.plan.compiled(wrapped), self.plan.compiled(critics)

    def current_visuals(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).detach() for name in self.visual_names if hasattr(self, name)}

    def learning_rates(self) -> dict[str, float]:
        return {"lr_G": self.optimizers[0].param_groups[0]["lr"], "lr_D": self.optimizers[1].param_groups[0]["lr"]}

    def update_learning_rate(self, metric: float | None = None) -> None:
        with warnings.catch_warnings():
            # A run resumed at the end of an epoch steps its schedule before this process's first optimizer step;
            # across the run the order is right, so PyTorch's warning about it would only alarm.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            for scheduler in self.schedulers:
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(metric if metric is not None else 0.0)
                else:
                    scheduler.step()

    def follow_schedule(self, saved_lr: float) -> None:
        """After ``load_state_dict``: make the learning rate follow this model's schedule options (lr, n_epochs,
        n_epochs_decay, lr_decay_iters) from the current epoch on, instead of the saved schedule's."""
        for optimizer, scheduler in zip(self.optimizers, self.schedulers):
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                # no closed form: keep the reductions made so far, relative to the new starting rate
                rates = [group["lr"] * self.schedule.lr / saved_lr for group in optimizer.param_groups]
            else:
                scheduler.base_lrs = [self.schedule.lr] * len(optimizer.param_groups)
                if isinstance(scheduler, torch.optim.lr_scheduler.StepLR):
                    scheduler.step_size = self.schedule.lr_decay_iters
                    factor = scheduler.gamma ** (scheduler.last_epoch // scheduler.step_size)
                elif isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
                    scheduler.T_max = self.schedule.n_epochs
                    factor = (1 + math.cos(math.pi * scheduler.last_epoch / scheduler.T_max)) / 2
                else:  # linear: its rule reads the options
                    factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
                rates = [base * factor for base in scheduler.base_lrs]
            for group, rate in zip(optimizer.param_groups, rates):
                group["lr"] = rate
                if "initial_lr" in group:
                    group["initial_lr"] = self.schedule.lr
            scheduler._last_lr = rates

    def train(self) -> None:
        for name, net in self.nets.items():
            net.train(not name.endswith("_ema"))

    def eval(self) -> None:
        for net in self.nets.values():
            net.eval()

    # --- full training state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "nets": {name: net.state_dict() for name, net in self.nets.items()},
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            **self.process_state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "ema_steps": self.ema_steps,
            "r1_calls": dict(self._r1_calls),  # where each critic is in R1's every-4th-step cycle
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, net in self.nets.items():
            # a state saved before averaging was on: the average starts from the trained weights
            saved = state["nets"].get(name, state["nets"].get(name.removesuffix("_ema")))
            networks.load_network_state(net, saved)
        self.ema_steps = int(state.get("ema_steps", 0))
        self._r1_calls = {str(k): int(v) for k, v in state.get("r1_calls", {}).items()}
        for o, s in zip(self.optimizers, state["optimizers"]):
            o.load_state_dict(s)
            # The saved groups carry the kernel choice of the machine that saved them (foreach on a GPU, or an
            # older version of ours); use this machine's.
            for group in o.param_groups:
                group.update(optimizer_kernels(self.device))
        for sch, s in zip(self.schedulers, state["schedulers"]):
            sch.load_state_dict(s)
        self.load_process_state_dict(state)
        if state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])

    def process_state_dict(self) -> dict[str, Any]:
        """What differs between data-parallel processes (the replay buffers, for models that keep them)."""
        return {}

    def load_process_state_dict(self, state: dict[str, Any]) -> None:
        pass
