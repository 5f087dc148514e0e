"""CycleGAN (Zhu et al., 2017): two generators, two PatchGAN discriminators, adversarial + cycle + identity losses.

The small model contract of the reference: ``set_input`` a batch, ``optimize_parameters`` one step, read
``current_losses`` and ``current_visuals``. The full training state (networks, optimizers, schedulers, replay
buffers) comes out of ``state_dict`` and goes back through ``load_state_dict``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
from typing import Any, Iterator

import torch
from torch import nn

from cyclegan_culture.models import networks, parallel
from cyclegan_culture.models.config import ModelConfig, TrainSchedule
from cyclegan_culture.models.image_pool import ImagePool
from cyclegan_culture.models.losses import GANLoss, gradient_penalty

LOSS_NAMES = ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B")
VISUAL_NAMES = ("real_A", "fake_B", "rec_A", "idt_B", "real_B", "fake_A", "rec_B", "idt_A")
NET_NAMES = ("G_A", "G_B", "D_A", "D_B")


def build_generators(config: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """G_A: A -> B and G_B: B -> A, as the configuration describes them."""
    def make(in_nc: int, out_nc: int) -> nn.Module:
        return networks.define_G(in_nc, out_nc, config.ngf, config.netG, config.norm, config.use_dropout,
                                 config.init_type, config.init_gain, config.upsample)
    return make(config.input_nc, config.output_nc), make(config.output_nc, config.input_nc)


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


def _translate(generator: nn.Module, inputs: list[torch.Tensor], separate: bool) -> list[torch.Tensor]:
    """``[generator(x) for x in inputs]``, as one batch where the inputs' image sizes match and ``separate`` is
    off."""
    if separate or len(inputs) == 1 or any(x.shape[1:] != inputs[0].shape[1:] for x in inputs):
        return [generator(x) for x in inputs]
    return list(generator(torch.cat(inputs)).split([x.shape[0] for x in inputs]))


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


class CycleGANModel:
    """``plan`` says how the networks run (an ``accel.ExecutionPlan``: ``apply`` puts a built network on its
    device with its fast layers; ``autocast_dtype``, ``memory_format``, ``compiled``); the model builds the
    reference's networks and hands each to it."""

    def __init__(self, config: ModelConfig, device: torch.device, plan: Any, schedule: TrainSchedule | None = None):
        """``schedule`` given: built for training (discriminators, optimizers, schedulers); else generators only,
        in eval mode."""
        self.config = config
        self.schedule = schedule
        self.device = device
        self.is_train = is_train = schedule is not None
        self.plan = plan
        self.amp_dtype = plan.autocast_dtype
        self.memory_format = plan.memory_format
        self.G_A, self.G_B = (plan.apply(net) for net in build_generators(config))
        self.generators = {"AtoB": "G_A", "BtoA": "G_B"}
        self.nets: dict[str, nn.Module] = {"G_A": self.G_A, "G_B": self.G_B}
        self.current_losses: dict[str, float] = {}
        if not is_train:
            for net in self.nets.values():
                net.eval()
            return
        self.D_A = plan.apply(networks.define_D(config.output_nc, config.ndf, config.netD, config.n_layers_D, config.norm,
                                                config.init_type, config.init_gain))
        self.D_B = plan.apply(networks.define_D(config.input_nc, config.ndf, config.netD, config.n_layers_D, config.norm,
                                                config.init_type, config.init_gain))
        self.nets.update(D_A=self.D_A, D_B=self.D_B)
        # What the step calls: the networks themselves, or their compiled versions (state dicts stay plain).
        self.run = plan.compiled(self.nets)
        # The discriminators as the generator step calls them (frozen there): under DDP, not through its wrapper,
        # since no gradient of theirs is computed, and each wrapper expects one backward per forward.
        self.critic_run = {name: self.run[name] for name in ("D_A", "D_B")}
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.frozen: set[int] = set()
        # One RNG for both replay buffers, so the training state can save and restore it.
        self.pool_rng = random.Random(config.seed)
        self.fake_A_pool = ImagePool(config.pool_size, self.pool_rng)
        self.fake_B_pool = ImagePool(config.pool_size, self.pool_rng)
        self.criterionGAN = GANLoss(config.gan_mode).to(device)
        self.criterionCycle = nn.L1Loss()
        self.criterionIdt = nn.L1Loss()
        self.optimizer_G = make_optimizer(itertools.chain(self.G_A.parameters(), self.G_B.parameters()), schedule,
                                          device)
        self.optimizer_D = make_optimizer(itertools.chain(self.D_A.parameters(), self.D_B.parameters()), schedule,
                                          device)
        self.optimizers = [self.optimizer_G, self.optimizer_D]
        self.schedulers = [make_scheduler(o, schedule) for o in self.optimizers]

    # --- the model contract -------------------------------------------------------------------------------
    def set_input(self, batch: dict[str, Any]) -> None:
        a_to_b = self.config.direction == "AtoB"
        self.real_A = batch["A" if a_to_b else "B"].to(self.device, non_blocking=True,
                                                       memory_format=self.memory_format)
        self.real_B = batch["B" if a_to_b else "A"].to(self.device, non_blocking=True,
                                                       memory_format=self.memory_format)
        self.image_paths = batch["A_paths" if a_to_b else "B_paths"]

    def forward(self) -> None:
        """Translations and reconstructions, plus the identity images when the identity loss is on.

        With per-sample normalisation (instance or none), the images each generator takes run as one batch:
        G_A takes real_A (and real_B for the identity), then G_B takes real_B (real_A) and fake_B, then G_A takes
        fake_A: three calls instead of six, the same arithmetic, and each convolution's weights (and, for
        Winograd, their transformed filters) prepared once per batch instead of once per image. In fp32 on CPU
        that made the step 1.19x faster at crop 128 (Winograd's filter transforms are memory-bound); in bf16
        1.02x. Batch norm keeps separate calls (batching would change its statistics). docs/performance.md has
        the measurements.
        """
        G_A, G_B = self.run["G_A"], self.run["G_B"]
        identity = self.is_train and self.config.lambda_identity > 0
        separate = self.config.norm == "batch"
        inputs_A = [self.real_A, self.real_B] if identity else [self.real_A]
        outputs_A = _translate(G_A, inputs_A, separate)
        self.fake_B = outputs_A[0]
        inputs_B = [self.real_B, self.real_A, self.fake_B] if identity else [self.real_B, self.fake_B]
        outputs_B = _translate(G_B, inputs_B, separate)
        self.fake_A, self.rec_A = outputs_B[0], outputs_B[-1]
        if identity:
            self.idt_A, self.idt_B = outputs_A[1], outputs_B[1]
        self.rec_B = G_A(self.fake_A)

    def optimize_parameters(self) -> None:
        """One training step: generators first (discriminators frozen), then both discriminators.

        Each half runs in one autocast region, so each weight is cast to low precision once per half.
        """
        D_nets = (self.D_A, self.D_B)
        self._set_requires_grad(D_nets, False)
        with self._autocast():
            self.forward()
            self.loss_G = self._generator_loss()
        self.optimizer_G.zero_grad(set_to_none=True)
        self.scaler.scale(self.loss_G).backward()
        self.scaler.step(self.optimizer_G)
        # Free the gradients once used: otherwise they live through the next forward passes and add the
        # parameters' size to the step's peak memory (about 90 MB for the default generators in fp32).
        self.optimizer_G.zero_grad(set_to_none=True)

        self._set_requires_grad(D_nets, True)
        with self._autocast():
            self.loss_D_A = self._discriminator_loss("D_A", self.real_B, self.fake_B_pool.query(self.fake_B))
            self.loss_D_B = self._discriminator_loss("D_B", self.real_A, self.fake_A_pool.query(self.fake_A))
        self.optimizer_D.zero_grad(set_to_none=True)
        self.scaler.scale(self.loss_D_A + self.loss_D_B).backward()
        self.scaler.step(self.optimizer_D)
        self.optimizer_D.zero_grad(set_to_none=True)
        self.scaler.update()
        self._release_graph()
        self.current_losses = {name: float(getattr(self, "loss_" + name)) for name in LOSS_NAMES}

    def _release_graph(self) -> None:
        """Keep the step's images and losses only as values: attributes still tied to the autograd graph hold
        its nodes alive into the next step (about 150 MB at crop 128 in fp32, measured)."""
        for name in (*VISUAL_NAMES, *("loss_" + n for n in LOSS_NAMES), "loss_G"):
            value = getattr(self, name, None)
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.detach())

    # --- losses (computed in fp32 from possibly low-precision outputs) -----------------------------------------
    def _generator_loss(self) -> torch.Tensor:
        cfg = self.config
        if cfg.lambda_identity > 0:
            self.loss_idt_A = self.criterionIdt(self.idt_A.float(), self.real_B) * cfg.lambda_B * cfg.lambda_identity
            self.loss_idt_B = self.criterionIdt(self.idt_B.float(), self.real_A) * cfg.lambda_A * cfg.lambda_identity
        else:
            self.loss_idt_A = self.loss_idt_B = torch.zeros((), device=self.device)
        self.loss_G_A = self.criterionGAN(self.critic_run["D_A"](self.fake_B), True, for_discriminator=False)
        self.loss_G_B = self.criterionGAN(self.critic_run["D_B"](self.fake_A), True, for_discriminator=False)
        self.loss_cycle_A = self.criterionCycle(self.rec_A.float(), self.real_A) * cfg.lambda_A
        self.loss_cycle_B = self.criterionCycle(self.rec_B.float(), self.real_B) * cfg.lambda_B
        return (self.loss_G_A + self.loss_G_B + self.loss_cycle_A + self.loss_cycle_B
                + self.loss_idt_A + self.loss_idt_B)

    def _discriminator_loss(self, name: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """(loss on real + loss on fake) / 2; real and fake run as one batch unless batch norm would mix them."""
        netD = self.run[name]
        fake = fake.detach()
        if self.config.norm != "batch":
            pred_real, pred_fake = netD(torch.cat([real, fake])).split([real.shape[0], fake.shape[0]])
        else:
            pred_real, pred_fake = netD(real), netD(fake)
        loss = (self.criterionGAN(pred_real, True) + self.criterionGAN(pred_fake, False)) * 0.5
        if self.config.gan_mode == "wgangp":
            # double backward: in fp32, through the eager network (compiled graphs do not support it)
            with torch.autocast(self.device.type, enabled=False):
                loss = loss + self.config.lambda_gp * gradient_penalty(self.nets[name], real, fake)
        return loss

    # --- helpers ----------------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is not None:
            return torch.autocast(self.device.type, dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def _set_requires_grad(self, nets: tuple[nn.Module, ...], requires_grad: bool) -> None:
        for net in nets:
            for p in net.parameters():
                p.requires_grad_(requires_grad and id(p) not in self.frozen)

    loss_names, visual_names = LOSS_NAMES, VISUAL_NAMES
    FREEZABLE = ("G_A", "G_B", "D_A", "D_B", "G_A.encoder", "G_A.blocks", "G_A.decoder", "G_B.encoder",
                 "G_B.blocks", "G_B.decoder")

    def freeze(self, names: list[str]) -> int:
        """Keep the named networks or generator parts fixed (no gradients, no updates). Returns how many
        parameters were frozen. Raises ValueError for an unknown name."""
        count = 0
        for name in names:
            if name not in self.FREEZABLE:
                raise ValueError(name)
            net_name, _, part = name.partition(".")
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
            for name in NET_NAMES:
                self.nets[name] = parallel.synchronize_batch_norm(self.nets[name], device)
            self.G_A, self.G_B, self.D_A, self.D_B = (self.nets[name] for name in NET_NAMES)
        wrapped = {name: parallel.data_parallel(net, device) if any(p.requires_grad for p in net.parameters())
                   else net for name, net in self.nets.items()}
        critics = {name: self.nets[name] for name in ("D_A", "D_B")}  # unwrapped: see __init__
        self.run, self.critic_run = self.plan.compiled(wrapped), self.plan.compiled(critics)

    def current_visuals(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).detach() for name in VISUAL_NAMES if hasattr(self, name)}

    def learning_rates(self) -> dict[str, float]:
        return {"lr_G": self.optimizer_G.param_groups[0]["lr"], "lr_D": self.optimizer_D.param_groups[0]["lr"]}

    def update_learning_rate(self, metric: float | None = None) -> None:
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
        for net in self.nets.values():
            net.train()

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
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, net in self.nets.items():
            networks.load_network_state(net, state["nets"][name])
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
        """What differs between data-parallel processes: the replay buffers and their RNG."""
        return {"pools": {"fake_A": self.fake_A_pool.state_dict(), "fake_B": self.fake_B_pool.state_dict()},
                "pool_rng": _python_rng_state(self.pool_rng)}

    def load_process_state_dict(self, state: dict[str, Any]) -> None:
        self.fake_A_pool.load_state_dict(state["pools"]["fake_A"], self.device)
        self.fake_B_pool.load_state_dict(state["pools"]["fake_B"], self.device)
        self.pool_rng.setstate(_python_rng_from_state(state["pool_rng"]))


def _python_rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _python_rng_from_state(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
