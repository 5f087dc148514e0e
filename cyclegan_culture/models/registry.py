"""``--model NAME`` -> a model class, and the small contract every model keeps.

The contract (junyanz's, typed): a model is built as ``Model(config, device, plan, schedule)`` from a
``ModelConfig`` and, for training, a ``TrainSchedule`` (``plan`` is an ``accel.ExecutionPlan``, applied to every
network it builds). The trainer, tester and exporter use only:

- ``set_input(batch)``, ``optimize_parameters()``, ``current_losses`` (name -> float), ``loss_G`` (a tensor),
  ``current_visuals()`` (name -> image tensor), ``loss_names``, ``visual_names``;
- ``nets`` (name -> network: what is saved as ``<epoch>_net_<name>.pth``) and ``generators`` (direction ->
  network name, e.g. {"AtoB": "G_A", "BtoA": "G_B"}: what inference loads);
- ``state_dict()`` / ``load_state_dict()`` (everything to resume), ``process_state_dict()`` /
  ``load_process_state_dict()`` (what differs between data-parallel processes);
- ``learning_rates()``, ``update_learning_rate(metric)``, ``follow_schedule(saved_lr)``;
- ``train()``, ``eval()``, ``freeze(names)`` with ``FREEZABLE``, ``distribute(device)``, ``pool_rng``.

Subclassing ``models.base.TranslationModel`` gives all but the first line; a model then writes ``set_input``,
``forward`` and ``optimize_parameters`` and names its networks in ``GENERATORS`` (direction -> generator; a
one-way model such as cut names only AtoB), ``CRITICS`` and ``FREEZABLE``.

To add a model: write its class (models/NAME.py) and add one line to ``MODELS``.
"""

from __future__ import annotations

from typing import Any

import torch

from cyclegan_culture.models.config import ModelConfig, TrainSchedule
from cyclegan_culture.models.cut import CUTModel, FastCUTModel
from cyclegan_culture.models.cycle_gan import CycleGANModel

MODELS: dict[str, type] = {
    "cycle_gan": CycleGANModel,
    "cut": CUTModel,
    "fastcut": FastCUTModel,
}


def model_class(name: str) -> type:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build(values: dict[str, Any], device: torch.device, plan: Any, training: bool) -> Any:
    """The model named by ``values["model"]`` (default cycle_gan), configured from ``values`` (options as a dict,
    or a run's opt.json / config.json)."""
    config = ModelConfig.from_dict(values)
    return model_class(config.model)(config, device, plan, TrainSchedule.from_dict(values) if training else None)
