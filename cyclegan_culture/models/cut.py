"""CUT and FastCUT (Park et al., 2020, "Contrastive Learning for Unpaired Image-to-Image Translation").

One generator and one discriminator, no cycle: the content is kept by a patchwise contrastive loss (PatchNCE) on
the generator's own encoder features. A patch of the translation, seen through the encoder and a small MLP, must
match the patch at the same place in the photo and not the other patches of that photo. No pretrained network.
CUT adds the same loss on real paintings translated by the generator (an identity term); FastCUT leaves it out
and weights the contrastive loss ten times more (the paper's settings, --model fastcut).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cyclegan_culture.models import networks
from cyclegan_culture.models.base import TranslationModel, make_optimizer
from cyclegan_culture.models.config import ModelConfig, TrainSchedule
from cyclegan_culture.models.losses import GANLoss, culture_trait_loss_names, culture_trait_losses, edge_loss, tone_loss

NUM_PATCHES = 256
TEMPERATURE = 0.07
PROJECTION = 256


def nce_layers(generator: nn.Module) -> list[int]:
    """Which layers of the generator's encoder the contrastive loss reads: the input pixels, both downsampling
    stages and two residual blocks (the paper's 0, 4, 8, 12, 16 for nine blocks)."""
    layers = list(generator.model)
    blocks = [i for i, m in enumerate(layers) if isinstance(m, networks.ResnetBlock)]
    return sorted({0, 4, 8, blocks[min(2, len(blocks) - 1)], blocks[min(6, len(blocks) - 1)]})


def encode(generator: nn.Module, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
    """The outputs of the generator's layers ``layers`` for input ``x`` (the rest of the network is not run)."""
    feats, h = [], x
    for i, layer in enumerate(generator.model):
        h = layer(h)
        if i in layers:
            feats.append(h)
        if i >= layers[-1]:
            break
    return feats


class PatchSampler(nn.Module):
    """Per layer, the features at random positions (the same positions for query and key), projected by a
    two-layer MLP and L2-normalised."""

    def __init__(self, channels: list[int], projection: int = PROJECTION):
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(c, projection), nn.ReLU(), nn.Linear(projection, projection))
                                  for c in channels)

    def forward(self, feats: list[torch.Tensor], positions: list[torch.Tensor] | None = None,
                num_patches: int = NUM_PATCHES) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        out, chosen = [], []
        for i, (feat, mlp) in enumerate(zip(feats, self.mlps)):
            n, c, h, w = feat.shape
            flat = feat.permute(0, 2, 3, 1).reshape(n, h * w, c)
            idx = positions[i] if positions is not None else \
                torch.randperm(h * w, device=feat.device)[:min(num_patches, h * w)]
            picked = mlp(flat[:, idx, :].reshape(-1, c).float())
            out.append(F.normalize(picked, dim=1).view(n, idx.numel(), -1))
            chosen.append(idx)
        return out, chosen


def patch_nce(query: torch.Tensor, key: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """InfoNCE over (N, P, D) patches: each query's positive is the key at its position, its negatives the other
    keys of the same image."""
    key = key.detach()
    positive = (query * key).sum(-1, keepdim=True)  # (N, P, 1)
    negatives = torch.bmm(query, key.transpose(1, 2))  # (N, P, P)
    diagonal = torch.eye(query.shape[1], device=query.device, dtype=torch.bool)[None]
    negatives = negatives.masked_fill(diagonal, -10.0)
    logits = torch.cat([positive, negatives], dim=2).flatten(0, 1) / temperature
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=query.device))


class CUTModel(TranslationModel):
    """``--model cut``: G_A (photo -> culture), D_A, and the patch MLPs F; one direction only."""

    GENERATORS = {"AtoB": "G_A"}
    CRITICS = ("D_A",)
    FREEZABLE = ("G_A", "D_A", "G_A.encoder", "G_A.blocks", "G_A.decoder")
    visual_names = ("real_A", "fake_B", "real_B", "idt_B")
    lambda_nce, nce_identity = 1.0, True

    def __init__(self, config: ModelConfig, device: torch.device, plan: Any, schedule: TrainSchedule | None = None):
        super().__init__(config, device, plan, schedule)
        if config.lambda_NCE is not None:  # --lambda_NCE: less keeps less of the photo, more keeps more
            self.lambda_nce = config.lambda_NCE
        self.G_A = plan.apply(networks.define_G(config.input_nc, config.output_nc, config.ngf, config.netG,
                                                config.norm, config.use_dropout, config.init_type, config.init_gain,
                                                config.upsample))
        self.nets["G_A"] = self.G_A
        names = ["D_A", "G_A", "NCE"] + (["NCE_Y"] if self.nce_identity else [])
        self.loss_names = (tuple(names) + (("edge_A",) if config.lambda_edge > 0 else ())
                           + (("tone_A",) if config.lambda_tone > 0 else ())
                           + culture_trait_loss_names(config))
        if not self.is_train:
            self.G_A.eval()
            return
        self.layers = nce_layers(self.G_A)
        with torch.no_grad():
            probe = torch.zeros(1, config.input_nc, 32, 32, device=device)
            channels = [f.shape[1] for f in encode(self.G_A, probe, self.layers)]
        self.F = PatchSampler(channels).to(device)
        networks.init_weights(self.F, "xavier", config.init_gain)
        self.D_A = self._define_critic(config.output_nc)
        self.nets.update(D_A=self.D_A, F=self.F)
        self.criterionGAN = GANLoss(config.gan_mode).to(device)
        self.optimizer_G = make_optimizer(list(self.G_A.parameters()) + list(self.F.parameters()), schedule, device)
        self.optimizer_D = make_optimizer(self.D_A.parameters(), schedule, device)
        self._finish_training_setup([self.optimizer_G, self.optimizer_D])

    def forward(self) -> None:
        G = self.run["G_A"]
        if self.is_train and self.nce_identity and self._plan_batches_calls():
            self.fake_B, self.idt_B = G(torch.cat([self.real_A, self.real_B])).split(
                [self.real_A.shape[0], self.real_B.shape[0]])
        elif self.is_train and self.nce_identity:
            self.fake_B, self.idt_B = G(self.real_A), G(self.real_B)
        else:
            self.fake_B = G(self.real_A)

    def _nce(self, source: torch.Tensor, translated: torch.Tensor) -> torch.Tensor:
        keys, positions = self.F(encode(self.G_A, source, self.layers))
        queries, _ = self.F(encode(self.G_A, translated, self.layers), positions)
        return sum(patch_nce(q, k) for q, k in zip(queries, keys)) / len(self.layers)

    def optimize_parameters(self) -> None:
        cfg = self.config
        self._set_requires_grad((self.D_A,), False)
        with self._autocast():
            self.forward()
            self.loss_G_A = self.criterionGAN(self.critic_run["D_A"](self._critic_input(self.fake_B)), True,
                                              for_discriminator=False)
            self.loss_NCE = self._nce(self.real_A, self.fake_B)
            nce = self.loss_NCE
            if self.nce_identity:
                self.loss_NCE_Y = self._nce(self.real_B, self.idt_B)
                nce = (nce + self.loss_NCE_Y) / 2
            self.loss_G = self.loss_G_A + self.lambda_nce * nce
            if cfg.lambda_edge > 0:
                self.loss_edge_A = edge_loss(self.fake_B.float(), self.real_A) * cfg.lambda_edge
                self.loss_G = self.loss_G + self.loss_edge_A
            if cfg.lambda_tone > 0:
                self.loss_tone_A = tone_loss(self.fake_B.float(), self.real_A) * cfg.lambda_tone
                self.loss_G = self.loss_G + self.loss_tone_A
            for name, term in culture_trait_losses(cfg, self.fake_B.float(), self.real_A).items():
                setattr(self, "loss_" + name, term)
                self.loss_G = self.loss_G + term
        self.optimizer_G.zero_grad(set_to_none=True)
        self.scaler.scale(self.loss_G).backward()
        self.scaler.step(self.optimizer_G)
        self._update_averages()
        self.optimizer_G.zero_grad(set_to_none=True)

        self._set_requires_grad((self.D_A,), True)
        with self._autocast():
            real, fake = self._critic_input(self.real_B), self._critic_input(self.fake_B.detach())
            if self._plan_batches_calls():
                pred_real, pred_fake = self.run["D_A"](torch.cat([real, fake])).split([real.shape[0], fake.shape[0]])
            else:
                pred_real, pred_fake = self.run["D_A"](real), self.run["D_A"](fake)
            self.loss_D_A = (self.criterionGAN(pred_real, True) + self.criterionGAN(pred_fake, False)) * 0.5
            self.loss_D_A = self.loss_D_A + self._critic_regularisation("D_A", real)
        self.optimizer_D.zero_grad(set_to_none=True)
        self.scaler.scale(self.loss_D_A).backward()
        self.scaler.step(self.optimizer_D)
        self.optimizer_D.zero_grad(set_to_none=True)
        self.scaler.update()
        self._release_graph()
        self.current_losses = {name: float(getattr(self, "loss_" + name)) for name in self.loss_names}


class FastCUTModel(CUTModel):
    """``--model fastcut``: no identity term, the contrastive loss weighted 10 (the paper's FastCUT)."""

    visual_names = ("real_A", "fake_B", "real_B")
    lambda_nce, nce_identity = 10.0, False
