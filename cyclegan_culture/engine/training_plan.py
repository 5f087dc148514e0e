"""The training step's execution plan, chosen by timing whole steps on this machine.

The per-layer tuner (accel/autotune.py) picks each convolution's fastest algorithm, but a step is more than its
convolutions, and the fast layers can lose as a whole where each looked faster on its own: on an AMD EPYC (Zen 5)
the fp32 crop-128 step with them was 0.92x the reference's (docs/performance.md). So, once per machine and
configuration, a few steps of each candidate plan are timed on random images of the run's size, and the fastest is
kept in the same plan cache: the fast layers as the flags ask, the same in NCHW where the layout is 'auto', the
reference's own layers in NCHW, and those layers with one call per image (no batching of a step's images, the
reference's own order of work: on a Zen 5 EPYC the batched maps outgrew its 1 MB L2 cache and fp32 training was
0.92x the reference, 0.98x in separate calls). With nothing faster than the reference's way of running, the step
runs that way, so no machine trains slower than the reference's step by more than the timing's noise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, replace
from typing import Callable

import torch

from cyclegan_culture import options as options_mod
from cyclegan_culture.accel import ExecutionPlan
from cyclegan_culture.models import registry
from cyclegan_culture.models.config import ModelConfig
from cyclegan_culture.progress import say

STEP_REPEATS = 2  # timed steps per candidate after one warm-up step (which also runs the per-layer timing)
# in the key, so that a cache timed over fewer candidates (before separate calls were one) is timed again
CANDIDATES_VERSION = 2


def candidate_plans(plan: ExecutionPlan, channels_last: str) -> dict[str, ExecutionPlan]:
    """The plans worth timing for a training step, by name; the first is the flags' own plan."""
    candidates = {"fast_layers": plan}
    if channels_last == "auto" and plan.memory_format == torch.channels_last:
        candidates["fast_layers_nchw"] = replace(plan, memory_format=torch.contiguous_format)
    if channels_last != "on":  # PyTorch's own instance norm is wrong in NHWC for single images (accel/plan.py)
        reference = replace(plan, fast_layers=False, memory_format=torch.contiguous_format)
        candidates["reference_layers"] = reference
        candidates["reference_layers_separate_calls"] = replace(reference, batch_calls=False)
    return candidates


def step_key(opt: argparse.Namespace, plan: ExecutionPlan) -> str:
    """What a step's cost depends on: the model's configuration, the batch, the image size and the precision."""
    config = json.dumps(asdict(ModelConfig.from_dict(vars(opt))), sort_keys=True, default=str)
    digest = hashlib.sha1(config.encode()).hexdigest()[:12]
    dtype = str(plan.autocast_dtype or torch.float32).replace("torch.", "")
    return (f"training_step v{CANDIDATES_VERSION} {getattr(opt, 'model', 'cycle_gan')} {digest} "
            f"{opt.batch_size}x{opt.crop_size} "
            f"{dtype} layout {getattr(opt, 'channels_last', 'off')}")


def training_plan(opt: argparse.Namespace, device: torch.device, distributed: bool = False,
                  resumed_choices: dict[str, str] | None = None) -> ExecutionPlan:
    """The plan a training run's networks get: the flags' plan, or, where the per-machine tuner is on (CPU,
    ``--conv_algorithm auto``, ``--autotune`` not off) and the run is not distributed (its processes must agree),
    the candidate whose whole step this machine runs fastest. Timed once; later runs read the choice back.
    ``resumed_choices``: the tuner's choices a resumed run recorded (``Autotuner.used``); they hold again, step
    and layers, so a resume computes what the uninterrupted run would have, whatever the machine's load now."""
    plan = options_mod.execution_plan(opt, device, True)
    if plan.tuner is not None and isinstance(resumed_choices, dict):  # states before this have none
        plan.tuner.pin(resumed_choices)
    if plan.tuner is None or distributed:
        return plan
    candidates = candidate_plans(plan, getattr(opt, "channels_last", "off"))
    key = step_key(opt, plan)
    if plan.tuner.pinned.get(key) in candidates:
        choice = plan.tuner.choose(key, {}, "fast_layers", tuple(candidates))
        say(f"Resuming with the run's own execution plan: the {choice.replace('_', ' ')}")
        return candidates[choice]
    timed_now = key not in plan.tuner.choices
    with torch.random.fork_rng(devices=[]):  # timing must not move the run's random streams
        choice = plan.tuner.choose(key, lambda: _step_timers(opt, device, candidates), "fast_layers",
                                   tuple(candidates), repeats=STEP_REPEATS)
    if timed_now and key in plan.tuner.timings:
        times = ", ".join(f"{name.replace('_', ' ')} {ms / 1000:.2f} s"
                          for name, ms in plan.tuner.timings[key].items())
        kept = ("not kept: the machine was busy" if key in plan.tuner.unkept
                else f"once; kept in {plan.tuner.path}")
        say(f"Timed a training step on this machine ({kept}): {times}; training with the {choice.replace('_', ' ')}")
    return candidates.get(choice, plan)


def _step_timers(opt: argparse.Namespace, device: torch.device,
                 candidates: dict[str, ExecutionPlan]) -> dict[str, Callable[[], object]]:
    """One training step per call for each candidate, on a model built at its first call; only one candidate's
    model is alive at a time, so timing costs no more memory than the run."""
    alive: dict[str, object] = {}

    def timer(name: str, plan: ExecutionPlan) -> Callable[[], object]:
        def step() -> object:
            if name not in alive:
                alive.clear()
                model = registry.build(vars(opt), device, plan, training=True)
                size = (opt.batch_size, opt.crop_size, opt.crop_size)
                model.set_input({"A": torch.rand(size[0], opt.input_nc, *size[1:]) * 2 - 1,
                                 "B": torch.rand(size[0], opt.output_nc, *size[1:]) * 2 - 1,
                                 "A_paths": ["timing"] * size[0], "B_paths": ["timing"] * size[0]})
                alive[name] = model
            alive[name].optimize_parameters()
            return None
        return step

    return {name: timer(name, plan) for name, plan in candidates.items()}
