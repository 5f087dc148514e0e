"""The execution plan: how built networks run (device, precision, layout, convolution algorithm, compilation),
decided once from the settings and applied as one swap. Speed settings that do not change what a network
computes (layout, compilation) or change it in a controlled way (mixed precision). Measured in
docs/performance.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from cyclegan_culture.accel.autotune import MODES, Autotuner, default_mode
from cyclegan_culture.accel.layers import InstanceNorm
from cyclegan_culture.accel.swap import swap_layers
CONV_ALGORITHMS = ("auto", "direct", "winograd")


class PlanError(ValueError):
    """A setting that cannot work here; ``setting`` names it (options.execution_plan turns it into the flag)."""

    def __init__(self, setting: str, message: str):
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class ExecutionPlan:
    """How a model's networks run. ``apply`` gives a built (plain) network its fast layers, device and layout;
    without a plan the networks are the reference's layers, in fp32."""

    device: torch.device
    autocast_dtype: torch.dtype | None = None   # bf16 on CPU / fp16 on CUDA under --amp
    memory_format: torch.memory_format = torch.contiguous_format
    conv_algorithm: str = "direct"              # for accel.layers.ResidualConv and OutputConv
    compile: bool = False
    fast_layers: bool = True                    # off: the reference's layers as built (a plain plan)
    # each network takes the images of a step in one batched call (a generator its translations, reconstructions
    # and identities; a discriminator real and fake); off: one call per image, as the reference's step does.
    # The same arithmetic; which is faster depends on the CPU's caches (engine/training_plan.py times both)
    batch_calls: bool = True
    tuner: Autotuner | None = field(default=None, compare=False)  # 'auto' algorithms timed per machine

    def apply(self, net: nn.Module) -> nn.Module:
        if self.fast_layers:
            net = swap_layers(net, self.conv_algorithm, self.tuner)
        return net.to(self.device, memory_format=self.memory_format)

    def compiled(self, nets: dict[str, nn.Module]) -> dict[str, nn.Module]:
        """What a training step calls: the networks, or their torch.compile versions (state dicts stay plain)."""
        return compile_nets(nets) if self.compile else dict(nets)


def make_plan(device: torch.device, amp: bool = False, channels_last: str = "auto", conv_algorithm_: str = "auto",
              compile_: bool = False, norm: str = "instance", training: bool = False,
              autotune: str | None = None) -> ExecutionPlan:
    """The plan for these settings (the --amp, --channels_last, --conv_algorithm, --compile and --autotune
    flags). With conv_algorithm 'auto' on CPU, the per-machine tuner (accel/autotune.py) picks each layer's
    algorithm unless autotune is 'off'."""
    algorithm = conv_algorithm(conv_algorithm_, device, compile_)
    mode = autotune or default_mode()
    if mode not in MODES:
        raise PlanError("autotune", f"unknown {mode!r}; use one of {', '.join(MODES)}")
    tuner = shared_tuner(mode) if algorithm == "auto" and device.type == "cpu" and mode != "off" else None
    return ExecutionPlan(device, amp_dtype(device, amp), memory_format(channels_last, device, norm, training),
                         algorithm, compile_, tuner=tuner)


@functools.lru_cache(maxsize=None)
def shared_tuner(mode: str) -> Autotuner:
    """One tuner per process and mode: every network of a run shares its choices and its cache file."""
    return Autotuner(mode)


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype for --amp: bf16 on CPU (native on AVX-512 BF16, no loss scaling needed), fp16 on CUDA
    (with loss scaling); None for full precision."""
    if not amp:
        return None
    return torch.bfloat16 if device.type == "cpu" else torch.float16


def inference_weights(net: nn.Module, dtype: torch.dtype | None, layout: str = "auto") -> nn.Module:
    """``net`` (fixed weights, about to run under ``autocast(dtype)``) prepared for inference where that is
    faster: in fp32 under 'auto', the layout the per-machine tuner finds faster (_tuned_fp32_layout); on CPU
    with bf16, its weights stored in bf16 once and, unless ``layout`` (--channels_last) is 'off', in
    channels_last. Autocast keeps its casts only for weights that require gradients, so a loaded generator's
    fp32 weights (11M for the default) were cast again on every call; storing them gives bit-identical outputs.
    In NHWC, oneDNN's bf16 convolutions of one image ran faster and without the layout copies NCHW costs
    (accel.layers.InstanceNorm keeps the maps in NHWC); the outputs differ from NCHW's by bf16 rounding only
    (tests/test_speed_flags.py), and there the residual blocks run by Winograd's F(2x2, 3x3) or F(4x4, 3x3),
    as the tuner times them (accel.layers.ResidualConv). A 256x256 default generator call: 274 ms with autocast
    casting, 267 with bf16 weights, 252 with NHWC as well, 194 with F(2x2, 3x3) on the machine of those figures;
    on a Zen 4 234-244 with F(2x2, 3x3), 185-201 with F(4x4, 3x3) (docs/performance.md). CUDA's fp16 keeps fp32 weights: not
    measured there."""
    weight = next((p for p in net.parameters() if p.is_floating_point()), None)
    if dtype is None and weight is not None and weight.dtype == torch.float32 and layout == "auto":
        return _tuned_fp32_layout(net, weight)
    if dtype != torch.bfloat16 or weight is None or weight.device.type != "cpu":
        return net
    if layout == "off":
        return net.to(torch.bfloat16)
    return net.to(torch.bfloat16, memory_format=torch.channels_last)


LAYOUT_SAMPLE = (1, 3, 256, 256)  # the size fp32 inference layouts are timed at: test.py's and the presets' scale


def _tuned_fp32_layout(net: nn.Module, weight: torch.Tensor) -> nn.Module:
    """fp32 inference on CPU in the layout this machine runs it faster in, timed once per network (its class and
    size) at LAYOUT_SAMPLE by the tuner its swapped layers carry (none: NCHW, as built). On an Intel Xeon with
    AMX, a default generator's 256x256 call took 631 ms in NCHW and 483 in NHWC (the reference's layers 792;
    bench/inference_layout.py); other CPUs differ, hence the timing (docs/performance.md)."""
    tuner = next((m.tuner for m in net.modules() if getattr(m, "tuner", None) is not None), None)
    if tuner is None or weight.device.type != "cpu" or not weight.is_contiguous():
        return net
    size = sum(p.numel() for p in net.parameters())
    key = f"generator_layout {type(net).__name__} {size} params float32 {'x'.join(map(str, LAYOUT_SAMPLE))} infer"

    def candidates() -> dict[str, Callable[[], object]]:
        sample = torch.rand(LAYOUT_SAMPLE, device=weight.device) * 2 - 1

        def run(layout: torch.memory_format) -> Callable[[], object]:
            def call() -> object:
                with torch.inference_mode():
                    return net.to(memory_format=layout)(sample.contiguous(memory_format=layout))
            return call
        return {"nchw": run(torch.contiguous_format), "nhwc": run(torch.channels_last)}

    choice = tuner.choose(key, candidates, "nchw", ("nchw", "nhwc"))
    return net.to(memory_format=torch.channels_last if choice == "nhwc" else torch.contiguous_format)


def memory_format(setting: str, device: torch.device, norm: str = "instance",
                  training: bool = False) -> torch.memory_format:
    """The networks' layout. 'on' is NHWC; 'auto' is NHWC for training on CPU, else NCHW.

    Measured on CPU (docs/performance.md), alternating in one process: with accel.layers.InstanceNorm keeping
    channels_last maps in place, bf16 steps were 3% (crop 128) and 6% (crop 256) faster in NHWC; fp32 steps,
    with the residual blocks by Winograd in NHWC (accel/winograd.py), 1.42x faster than in NCHW at crop 128
    and as fast at crop 256, for 110 MB less peak memory there. Inference layouts are inference_weights' choice.
    On CUDA NHWC was no faster for the default batch of one (H200), so 'auto' is NCHW there."""
    if setting == "off" or (setting == "auto" and (device.type != "cpu" or not training)):
        return torch.contiguous_format
    if norm == "instance" and not instance_norm_nhwc_is_correct(device.type):
        raise PlanError("channels_last", f"this PyTorch ({torch.__version__}) computes wrong instance-norm "
                        f"gradients for single images in channels_last layout on {device.type}; use "
                        "channels_last off (or auto)")
    return torch.channels_last


@functools.lru_cache(maxsize=None)
def instance_norm_nhwc_is_correct(device_type: str) -> bool:
    """Probe a known PyTorch bug (seen in 2.14 on CPU): instance norm's backward in channels_last layout with a
    batch of one gives wrong weight gradients upstream. Probes our networks' instance norm (accel.layers.InstanceNorm,
    which avoids PyTorch's on CPU), against NCHW on a tiny network, in float64 so that rounding (TF32
    convolutions on CUDA, algorithms that differ by layout) cannot pass for the bug."""
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):  # the layers' initialisation must not move the global seed's stream
        conv1, conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3)
    x = torch.randn(1, 3, 8, 8, generator=gen)
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last):
        net = nn.Sequential(conv1, InstanceNorm(4), conv2).to(device_type, torch.float64, memory_format=layout)
        net.zero_grad(set_to_none=True)
        out = net(x.to(device_type, torch.float64).contiguous(memory_format=layout))
        (out * out).sum().backward()
        grads.append(conv1.weight.grad.detach().float().cpu().clone())
    conv1.to(memory_format=torch.contiguous_format)
    return torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-3)


def conv_algorithm(setting: str, device: torch.device, compile_: bool = False) -> str:
    """The residual blocks' convolution algorithm (accel.layers.ResidualConv). 'auto' stays 'auto' on CPU, where
    each convolution picks Winograd for fp32 feature maps of 256 channels and at least 24x24 in channels_last
    (48x48 in NCHW; measured faster there), and is 'direct' on CUDA, whose libraries pick their own
    algorithms, and under --compile, which generates its own convolution code."""
    if setting not in CONV_ALGORITHMS:
        raise PlanError("conv_algorithm", f"unknown {setting!r}; use one of {', '.join(CONV_ALGORITHMS)}")
    if setting == "auto" and (device.type != "cpu" or compile_):
        return "direct"
    return setting


def compile_nets(nets: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """torch.compile each network; where compilation fails, dynamo falls back to eager with a warning."""
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    return {name: torch.compile(net, dynamic=False) for name, net in nets.items()}
