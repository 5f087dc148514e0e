"""CycleGAN (Zhu et al., 2017): two generators, two PatchGAN discriminators, adversarial + cycle + identity losses.

The small model contract of the reference: ``set_input`` a batch, ``optimize_parameters`` one step, read
``current_losses`` and ``current_visuals``. The full training state (networks, optimizers, schedulers, replay
buffers) comes out of ``state_dict`` and goes back through ``load_state_dict`` (models/base.py).
"""

from __future__ import annotations

import itertools
import random
from typing import Any, Callable

import torch
from torch import nn

from cyclegan_culture.models import networks
from cyclegan_culture.models.base import TranslationModel, make_optimizer
from cyclegan_culture.models.config import ModelConfig, TrainSchedule
from cyclegan_culture.models.image_pool import ImagePool
from cyclegan_culture.models.losses import (VIEW_CRITICS, GANLoss, culture_trait_loss_names, culture_trait_losses,
                                            edge_loss, gradient_penalty, tone_loss)

LOSS_NAMES = ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B")
EDGE_LOSS_NAMES = ("edge_A", "edge_B")
TONE_LOSS_NAMES = ("tone_A", "tone_B")
VISUAL_NAMES = ("real_A", "fake_B", "rec_A", "idt_B", "real_B", "fake_A", "rec_B", "idt_A")


def build_generators(config: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """G_A: A -> B and G_B: B -> A, as the configuration describes them."""
    def make(in_nc: int, out_nc: int) -> nn.Module:
        return networks.define_G(in_nc, out_nc, config.ngf, config.netG, config.norm, config.use_dropout,
                                 config.init_type, config.init_gain, config.upsample)
    return make(config.input_nc, config.output_nc), make(config.output_nc, config.input_nc)


def _translate(generator: nn.Module, inputs: list[torch.Tensor], separate: bool) -> list[torch.Tensor]:
    """``[generator(x) for x in inputs]``, as one batch where the inputs' image sizes match and ``separate`` is
    off."""
    if separate or len(inputs) == 1 or any(x.shape[1:] != inputs[0].shape[1:] for x in inputs):
        return [generator(x) for x in inputs]
    return list(generator(torch.cat(inputs)).split([x.shape[0] for x in inputs]))


class CycleGANModel(TranslationModel):
    """``plan`` says how the networks run (an ``accel.ExecutionPlan``: ``apply`` puts a built network on its
    device with its fast layers; ``autocast_dtype``, ``memory_format``, ``compiled``); the model builds the
    reference's networks and hands each to it. The shared machinery (optimizers, schedules, averaged generators,
    augmentation, freezing, the training state) is in models/base.py."""

    GENERATORS = {"AtoB": "G_A", "BtoA": "G_B"}
    CRITICS = ("D_A", "D_B")
    FREEZABLE = ("G_A", "G_B", "D_A", "D_B", "G_A.encoder", "G_A.blocks", "G_A.decoder", "G_B.encoder",
                 "G_B.blocks", "G_B.decoder")
    visual_names = VISUAL_NAMES

    def __init__(self, config: ModelConfig, device: torch.device, plan: Any, schedule: TrainSchedule | None = None):
        """``schedule`` given: built for training (discriminators, optimizers, schedulers); else generators only,
        in eval mode."""
        super().__init__(config, device, plan, schedule)
        self.G_A, self.G_B = (plan.apply(net) for net in build_generators(config))
        self.nets.update(G_A=self.G_A, G_B=self.G_B)
        # the culture-aware discriminators that this configuration weights (ink wash, contours, strokes)
        self.view_critics = tuple(critic for critic in VIEW_CRITICS if getattr(config, critic.weight) > 0)
        self.loss_names = (LOSS_NAMES + (EDGE_LOSS_NAMES if config.lambda_edge > 0 else ())
                           + (TONE_LOSS_NAMES if config.lambda_tone > 0 else ())
                           + culture_trait_loss_names(config)
                           + tuple(name for critic in self.view_critics
                                   for name in (critic.name, critic.generator_loss_name)))
        if not self.is_train:
            for net in self.nets.values():
                net.eval()
            return
        self.D_A = self._define_critic(config.output_nc)
        self.D_B = self._define_critic(config.input_nc)
        self.nets.update(D_A=self.D_A, D_B=self.D_B)
        for critic in self.view_critics:  # each judges B's side only: the culture's paintings, G_A's translations
            self.nets[critic.name] = self._define_critic(critic.channels)
            self.CRITICS = (*self.CRITICS, critic.name)
        # One RNG for both replay buffers, so the training state can save and restore it.
        self.fake_A_pool = ImagePool(config.pool_size, self.pool_rng)
        self.fake_B_pool = ImagePool(config.pool_size, self.pool_rng)
        self.criterionGAN = GANLoss(config.gan_mode).to(device)
        self.criterionCycle = nn.L1Loss()
        self.criterionIdt = nn.L1Loss()
        self.optimizer_G = make_optimizer(itertools.chain(self.G_A.parameters(), self.G_B.parameters()), schedule,
                                          device)
        self.optimizer_D = make_optimizer(itertools.chain(*(self.nets[name].parameters() for name in self.CRITICS)),
                                          schedule, device)
        self._finish_training_setup([self.optimizer_G, self.optimizer_D])

    # --- the model contract -------------------------------------------------------------------------------
    def forward(self) -> None:
        """Translations and reconstructions, plus the identity images when the identity loss is on.

        With per-sample normalisation (instance or none), the images each generator takes run as one batch:
        G_A takes real_A (and real_B for the identity), then G_B takes real_B (real_A) and fake_B, then G_A takes
        fake_A: three calls instead of six, the same arithmetic, and each convolution's weights (and, for
        Winograd, their transformed filters) prepared once per batch instead of once per image. In fp32 on CPU
        that made the step 1.19x faster at crop 128 (Winograd's filter transforms are memory-bound); in bf16
        1.02x. Batch norm keeps separate calls (batching would change its statistics), and so does a plan whose
        ``batch_calls`` is off (on some CPUs the larger maps outgrow the caches). docs/performance.md has the
        measurements.
        """
        G_A, G_B = self.run["G_A"], self.run["G_B"]
        identity = self.is_train and self.config.lambda_identity > 0
        separate = not self._batches_calls()
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
        D_nets = tuple(self.nets[name] for name in self.CRITICS)
        self._set_requires_grad(D_nets, False)
        with self._autocast():
            self.forward()
            self.loss_G = self._generator_loss()
        self.optimizer_G.zero_grad(set_to_none=True)
        self.scaler.scale(self.loss_G).backward()
        self.scaler.step(self.optimizer_G)
        self._update_averages()
        # Free the gradients once used: otherwise they live through the next forward passes and add the
        # parameters' size to the step's peak memory (about 90 MB for the default generators in fp32).
        self.optimizer_G.zero_grad(set_to_none=True)

        self._set_requires_grad(D_nets, True)
        with self._autocast():
            pooled_fake_B = self.fake_B_pool.query(self.fake_B)
            self.loss_D_A = self._discriminator_loss("D_A", self.real_B, pooled_fake_B)
            self.loss_D_B = self._discriminator_loss("D_B", self.real_A, self.fake_A_pool.query(self.fake_A))
            loss_D = self.loss_D_A + self.loss_D_B
            for critic in self.view_critics:
                loss = self._discriminator_loss(critic.name, self.real_B, pooled_fake_B, critic.view)
                setattr(self, "loss_" + critic.name, loss)
                loss_D = loss_D + loss
        self.optimizer_D.zero_grad(set_to_none=True)
        self.scaler.scale(loss_D).backward()
        self.scaler.step(self.optimizer_D)
        self.optimizer_D.zero_grad(set_to_none=True)
        self.scaler.update()
        self._release_graph()
        self.current_losses = {name: float(getattr(self, "loss_" + name)) for name in self.loss_names}

    # --- losses (computed in fp32 from possibly low-precision outputs) -----------------------------------------
    def _generator_loss(self) -> torch.Tensor:
        cfg = self.config
        if cfg.lambda_identity > 0:
            self.loss_idt_A = self.criterionIdt(self.idt_A.float(), self.real_B) * cfg.lambda_B * cfg.lambda_identity
            self.loss_idt_B = self.criterionIdt(self.idt_B.float(), self.real_A) * cfg.lambda_A * cfg.lambda_identity
        else:
            self.loss_idt_A = self.loss_idt_B = torch.zeros((), device=self.device)
        critic_A, critic_B = self.critic_run["D_A"], self.critic_run["D_B"]
        self.loss_G_A = self.criterionGAN(critic_A(self._critic_input(self.fake_B)), True, for_discriminator=False)
        self.loss_G_B = self.criterionGAN(critic_B(self._critic_input(self.fake_A)), True, for_discriminator=False)
        self.loss_cycle_A = self.criterionCycle(self.rec_A.float(), self.real_A) * cfg.lambda_A
        self.loss_cycle_B = self.criterionCycle(self.rec_B.float(), self.real_B) * cfg.lambda_B
        loss = (self.loss_G_A + self.loss_G_B + self.loss_cycle_A + self.loss_cycle_B
                + self.loss_idt_A + self.loss_idt_B)
        if cfg.lambda_edge > 0:
            self.loss_edge_A = edge_loss(self.fake_B.float(), self.real_A) * cfg.lambda_edge
            self.loss_edge_B = edge_loss(self.fake_A.float(), self.real_B) * cfg.lambda_edge
            loss = loss + self.loss_edge_A + self.loss_edge_B
        if cfg.lambda_tone > 0:
            self.loss_tone_A = tone_loss(self.fake_B.float(), self.real_A) * cfg.lambda_tone
            self.loss_tone_B = tone_loss(self.fake_A.float(), self.real_B) * cfg.lambda_tone
            loss = loss + self.loss_tone_A + self.loss_tone_B
        for name, term in culture_trait_losses(cfg, self.fake_B.float(), self.real_A).items():
            setattr(self, "loss_" + name, term)
            loss = loss + term
        for critic in self.view_critics:
            seen = critic.view(self._critic_input(self.fake_B))
            term = self.criterionGAN(self.critic_run[critic.name](seen), True, for_discriminator=False)
            term = term * getattr(cfg, critic.weight)
            setattr(self, "loss_" + critic.generator_loss_name, term)
            loss = loss + term
        return loss

    def _discriminator_loss(self, name: str, real: torch.Tensor, fake: torch.Tensor,
                            view: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """(loss on real + loss on fake) / 2; real and fake run as one batch where ``_batches_calls``.
        ``view``: what the discriminator sees of each (augmented) image, e.g. its ink wash (``VIEW_CRITICS``)."""
        netD = self.run[name]
        fake = fake.detach()
        real, fake = self._critic_input(real), self._critic_input(fake)
        if view is not None:
            real, fake = view(real), view(fake)
        if self._batches_calls():
            pred_real, pred_fake = netD(torch.cat([real, fake])).split([real.shape[0], fake.shape[0]])
        else:
            pred_real, pred_fake = netD(real), netD(fake)
        loss = (self.criterionGAN(pred_real, True) + self.criterionGAN(pred_fake, False)) * 0.5
        loss = loss + self._critic_regularisation(name, real)
        if self.config.gan_mode == "wgangp":
            # double backward: in fp32, through the eager network (compiled graphs do not support it)
            with torch.autocast(self.device.type, enabled=False):
                loss = loss + self.config.lambda_gp * gradient_penalty(self.nets[name], real, fake)
        return loss

    # --- what differs between data-parallel processes -------------------------------------------------------------
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
