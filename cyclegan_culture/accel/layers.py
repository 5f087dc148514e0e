"""Faster equivalents of the reference's layers, with the same parameters and state dicts.

``accel.swap.accelerate`` puts them in place of ``nn.InstanceNorm2d``, the residual blocks' ``ReflectionPad2d(1)``
+ ``Conv2d`` and the generator's last ``ReflectionPad2d(3)`` + ``Conv2d``; each computes what the layer it
replaces computes (in fp32 to rounding; in bf16 without autocast's fp32 copies). Measured in
docs/performance.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from cyclegan_culture.accel import phase_conv, winograd_f2
from cyclegan_culture.accel.winograd import (bf16_inference_conv3x3_reflect, bf16_inference_workspace_bytes,
                                             winograd_conv3x3_reflect)

if TYPE_CHECKING:
    from cyclegan_culture.accel.autotune import Autotuner


class InstanceNorm(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (same arguments and state dict) that normalises channels_last maps on CPU image by
    image through batch norm: over one image, batch norm's statistics are instance norm's (per channel, over
    height and width), and it works in the input's layout. PyTorch's instance norm first copies a channels_last
    map to NCHW (5 ms for the last 64-channel 256x256 map of a generator), and in torch 2.14 its channels_last
    backward for a single image is wrong (accel/plan.instance_norm_nhwc_is_correct); batch norm's is
    right (tests). NCHW maps, and other devices, get PyTorch's instance norm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.affine or self.track_running_stats or x.dim() != 4 or x.device.type != "cpu" or x.is_contiguous()
                or not x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x)
        if x.shape[0] == 1:
            return F.batch_norm(x, None, None, training=True, momentum=0.0, eps=self.eps)
        return _ImagewiseBatchNorm.apply(x, self.eps)


class _ImagewiseBatchNorm(torch.autograd.Function):
    """Batch norm of each image of a channels_last batch on its own (= instance norm), each image's result and
    gradient written straight into one map for the batch: per-image results joined with ``torch.cat`` cost two
    extra maps the size of the batch's at once, forward and backward, which raised a training step's peak memory
    (docs/performance.md). Twice differentiable (a gradient penalty through a discriminator): then the gradient
    is taken through PyTorch's batch norm, image by image."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, eps: float) -> torch.Tensor:
        out = torch.empty_like(x, memory_format=torch.channels_last)
        mean = x.new_empty(x.shape[0], x.shape[1])
        invstd = x.new_empty(x.shape[0], x.shape[1])
        for i in range(x.shape[0]):
            torch.ops.aten.native_batch_norm.out(x[i:i + 1], None, None, None, None, True, 0.0, eps,
                                                 out=out[i:i + 1], save_mean=mean[i], save_invstd=invstd[i])
        ctx.save_for_backward(x, mean, invstd)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, mean, invstd = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a gradient that can itself be differentiated
            with torch.enable_grad():
                out = torch.cat([F.batch_norm(image, None, None, training=True, momentum=0.0, eps=ctx.eps)
                                 for image in x.split(1)])
                return torch.autograd.grad(out, x, grad, create_graph=True)[0], None
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_x = torch.empty_like(x, memory_format=torch.channels_last)
        ones = x.new_ones(x.shape[1])  # the .out kernel wants the affine gradients' buffers defined
        unused_weight_grad, unused_bias_grad = x.new_empty(x.shape[1]), x.new_empty(x.shape[1])
        for i in range(x.shape[0]):
            torch.ops.aten.native_batch_norm_backward.out(
                grad[i:i + 1], x[i:i + 1], ones, None, None, mean[i], invstd[i], True, ctx.eps, [True, True, True],
                out0=grad_x[i:i + 1], out1=unused_weight_grad, out2=unused_bias_grad)
        return grad_x, None


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 takes no device argument
        return torch.is_autocast_cpu_enabled()


def reflect_pad(x: torch.Tensor, padding: int) -> torch.Tensor:
    """``F.pad(x, (padding,) * 4, mode='reflect')`` that keeps a bf16 activation in bf16 under CPU autocast.

    Autocast computes reflection padding in fp32, so each padded bf16 activation is cast up, padded and cast
    down again, and its gradient goes the same way back: fp32 copies of every padded map. Padding is a copy, so
    doing it in bf16 gives the same values (the gradient's reflected borders may differ by one bf16 rounding).
    Its gradient is folded back by reflect_pad_backward: PyTorch's own bf16 reflection-pad backward is several
    times slower on CPU. Measured (docs/performance.md): a bf16 training step peaks about 110 MB lower at crop
    128 and 460 MB lower at crop 256 than with autocast's padding, at the same speed."""
    if x.dtype != torch.bfloat16 or x.device.type != "cpu" or not _cpu_autocast_enabled():
        return F.pad(x, (padding,) * 4, mode="reflect")
    with torch.autocast("cpu", enabled=False):
        return _ReflectPad.apply(x, padding)


def reflect_pad_backward(grad: torch.Tensor, padding: int) -> torch.Tensor:
    """The gradient of ``F.pad(x, (padding,) * 4, mode='reflect')`` with respect to x: the padded gradient's
    centre, plus each border strip added, mirrored, onto the rows and columns it copied (padded row i < p holds
    x's row p - i)."""
    p = padding
    height, width = grad.shape[-2] - 2 * p, grad.shape[-1] - 2 * p
    out = grad[..., p:p + height, p:p + width].clone()

    def fold_columns(strip: torch.Tensor) -> torch.Tensor:  # a full-width strip of rows -> x's width
        folded = strip[..., p:p + width].clone()
        folded[..., 1:p + 1] += strip[..., :p].flip(-1)
        folded[..., width - 1 - p:width - 1] += strip[..., p + width:].flip(-1)
        return folded

    out[..., 1:p + 1, :] += fold_columns(grad[..., :p, :]).flip(-2)  # the corners come with the row strips
    out[..., height - 1 - p:height - 1, :] += fold_columns(grad[..., p + height:, :]).flip(-2)
    out[..., :, 1:p + 1] += grad[..., p:p + height, :p].flip(-1)
    out[..., :, width - 1 - p:width - 1] += grad[..., p:p + height, p + width:].flip(-1)
    return out


class _ReflectPad(torch.autograd.Function):
    """Reflection padding with reflect_pad_backward as its backward: in bf16 on CPU, PyTorch's
    reflection_pad2d_backward took 2.3 ms for a [2, 256, 66, 66] gradient and this 1.0 ms (9.1 vs 2.2 ms for
    the [2, 64, 262, 262] one before the last convolution at crop 256; ``python bench/step_parts.py``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, padding: int) -> torch.Tensor:
        ctx.padding = padding
        return F.pad(x, (padding,) * 4, mode="reflect")

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return reflect_pad_backward(grad, ctx.padding), None


class ReflectionPad(nn.ReflectionPad2d):
    """``nn.ReflectionPad2d(padding)`` (the same parameterless module; equal padding on all sides) that pads
    through reflect_pad."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reflect_pad(x, self.padding[0])


# What the tuner times for a bf16 inference convolution (--amp in test.py, stylize, analyze): PyTorch's, and
# Winograd's F(2x2, 3x3) and F(4x4, 3x3), the last with the most rounding (accel/winograd.py).
BF16_INFERENCE_CANDIDATES = ("direct", "winograd_f2", "winograd_f4")
# F(4x4, 3x3) is offered only where its tile workspace stays below this: for a whole 4000x3000 photo (--tile 0)
# it took 4.9 GB against direct's 4.0 for 7% less time per convolution; up to 1024-px photos it costs 40-200 MB
# (docs/performance.md)
BF16_F4_MAX_WORKSPACE_BYTES = 128 * 2 ** 20


class ResidualConv(nn.Conv2d):
    """The residual blocks' 3x3 convolution with its reflection padding of 1 (the reference's
    ``ReflectionPad2d(1)`` followed by an unpadded ``Conv2d``). A plain ``nn.Conv2d`` in its parameters and
    state dict. ``algorithm`` says how it is computed: 'direct' (PyTorch's padding and convolution), 'winograd'
    (accel/winograd.py) or 'auto' (Winograd for feature maps of at least WINOGRAD_MIN_CHANNELS channels and
    WINOGRAD_MIN_PIXELS pixels, WINOGRAD_MIN_PIXELS_CHANNELS_LAST in channels_last). Winograd applies to fp32
    on CPU outside autocast; elsewhere it would not pay (GPU libraries choose their own algorithms), and the
    convolution is direct, except for bf16 inference in channels_last (test.py and stylize with --amp on CPU),
    which runs by F(2x2, 3x3) (accel/winograd_f2.py: faster, with more rounding) where 'winograd' forces it
    and, under 'auto', from 256 channels; with a tuner, 'auto' times direct, F(2x2, 3x3) and F(4x4, 3x3)
    (BF16_INFERENCE_CANDIDATES) and takes the fastest."""

    algorithm = "direct"
    tuner: "Autotuner | None" = None  # under 'auto': times the candidates once per shape (accel/autotune.py)
    # Where 'auto' uses Winograd without a tuner (--autotune off), measured (docs/performance.md): from 256 channels (the default generator's
    # blocks; with 128, as in --preset cpu, test.py was no faster and used more memory; with 64, slower), and
    # from 48x48 pixels per feature map in NCHW (crops from about 192 px; at 32x32 its strided tile transforms
    # left the step only 1.06x faster, for more memory), from 24x24 in channels_last, whose transforms are plain
    # matrix multiplies (a 256-channel training convolution 1.13x faster at 24x24, 1.25x at 32x32, 0.75x at
    # 16x16; bench/winograd_conv.py --channels_last).
    WINOGRAD_MIN_CHANNELS = 256
    WINOGRAD_MIN_PIXELS = 48 * 48
    WINOGRAD_MIN_PIXELS_CHANNELS_LAST = 24 * 24

    def __init__(self, dim: int, use_bias: bool):
        super().__init__(dim, dim, 3, padding=0, bias=use_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        winograd, f2, f4 = self._uses_winograd(x), self._uses_winograd_f2(x), False
        if self.algorithm == "auto" and self.tuner is not None and (winograd or f2 or self._could_use_winograd(x)):
            choice = self._tuned(x, "winograd" if winograd else "winograd_f2" if f2 else "direct")
            winograd, f2, f4 = choice == "winograd", choice == "winograd_f2", choice == "winograd_f4"
        if winograd:
            # The filters are transformed on every call, also for fixed weights: keeping them cost 4x the weights
            # (170 MB for a default generator), which put test.py's peak above the reference's, for about 5% of
            # its inference time (docs/performance.md)
            return winograd_conv3x3_reflect(x, self.weight, self.bias)
        if f4 and self.weight.dtype == x.dtype:  # bf16 inference (the tuner offers it only without gradients)
            with torch.autocast("cpu", enabled=False):
                return bf16_inference_conv3x3_reflect(x, self.weight, self.bias)
        if f2:
            transformed = fixed_weight_cache(self, "_winograd_f2_cache", winograd_f2.filters)
            if transformed is not None and transformed.dtype == x.dtype:  # bf16 inference with fixed weights
                with torch.autocast("cpu", enabled=False):  # autocast would pad in fp32
                    return winograd_f2.conv3x3_reflect(x, transformed, self.bias)
        return super().forward(reflect_pad(x, 1))

    def _could_use_winograd(self, x: torch.Tensor) -> bool:
        """Where a Winograd path applies at all (below the thresholds too): the tuner decides there."""
        if x.device.type != "cpu":
            return False
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32 and not _cpu_autocast_enabled():
            return True
        return x.dtype == torch.bfloat16 and not torch.is_grad_enabled() and winograd_f2.applies(x)

    def _tuned(self, x: torch.Tensor, default: str) -> str:
        """The tuner's choice for this input's shape, precision, layout and pass (training or inference), timed
        on detached copies (the layer's own gradients and caches are untouched)."""
        training, key = _tuning_key("residual_conv", x, self.weight)
        if x.dtype == torch.bfloat16:  # inference in bf16: direct, F(2x2, 3x3) or F(4x4, 3x3)
            # the candidates are part of the key: plans made before F(4x4, 3x3) was one are timed again
            key = f"{key} {'|'.join(BF16_INFERENCE_CANDIDATES)}"
            with_f4 = bf16_inference_workspace_bytes(x, self.out_channels) <= BF16_F4_MAX_WORKSPACE_BYTES
            names = BF16_INFERENCE_CANDIDATES if with_f4 else BF16_INFERENCE_CANDIDATES[:2]
            return self.tuner.choose(key, lambda: self._bf16_candidates(x, with_f4), default, names)
        with torch.enable_grad() if training else torch.no_grad():
            return self.tuner.choose(key, lambda: self._fp32_candidates(x, training), default, ("direct", "winograd"))

    def _bf16_candidates(self, x: torch.Tensor, with_f4: bool = True) -> dict[str, Callable[[], object]]:
        sample = torch.randn_like(x)
        w = self.weight.detach().to(torch.bfloat16)
        b = None if self.bias is None else self.bias.detach().to(torch.bfloat16)
        f2_filters = winograd_f2.filters(w)

        def direct() -> object:
            with torch.autocast("cpu", enabled=False):
                return F.conv2d(reflect_pad(sample, 1), w, b)

        def f2() -> object:
            with torch.autocast("cpu", enabled=False):
                return winograd_f2.conv3x3_reflect(sample, f2_filters, b)

        def f4() -> object:
            with torch.autocast("cpu", enabled=False):
                return bf16_inference_conv3x3_reflect(sample, w, b)
        return {"direct": direct, "winograd_f2": f2, **({"winograd_f4": f4} if with_f4 else {})}

    def _fp32_candidates(self, x: torch.Tensor, training: bool) -> dict[str, Callable[[], object]]:
        sample = torch.randn_like(x)
        weight, bias = self.weight.detach().clone(), None if self.bias is None else self.bias.detach().clone()

        def run(winograd: bool) -> Callable[[], object]:
            def step() -> object:
                inp = sample.detach().requires_grad_(training)
                w = weight.detach().requires_grad_(training)
                out = winograd_conv3x3_reflect(inp, w, bias) if winograd else F.conv2d(reflect_pad(inp, 1), w, bias)
                return torch.autograd.grad(out.sum(), (inp, w)) if training else out
            return step
        return {"direct": run(False), "winograd": run(True)}

    def _uses_winograd_f2(self, x: torch.Tensor) -> bool:
        """bf16 inference in channels_last (accel/plan.inference_weights): F(2x2, 3x3) where forced,
        and under 'auto' from WINOGRAD_MIN_CHANNELS (1.2-1.3x per 256-channel convolution, 1.1x at 128)."""
        if self.algorithm == "direct" or x.dtype != torch.bfloat16 or torch.is_grad_enabled():
            return False
        return (self.algorithm == "winograd" or x.shape[-3] >= self.WINOGRAD_MIN_CHANNELS) and winograd_f2.applies(x)

    def _uses_winograd(self, x: torch.Tensor) -> bool:
        if self.algorithm == "direct" or x.device.type != "cpu" or x.dtype != torch.float32 \
                or self.weight.dtype != torch.float32 or _cpu_autocast_enabled():
            return False
        channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        min_pixels = self.WINOGRAD_MIN_PIXELS_CHANNELS_LAST if channels_last else self.WINOGRAD_MIN_PIXELS
        return self.algorithm == "winograd" or (x.shape[-3] >= self.WINOGRAD_MIN_CHANNELS
                                                and x.shape[-2] * x.shape[-1] >= min_pixels)


def _tuning_key(kind: str, x: torch.Tensor, weight: torch.Tensor) -> tuple[bool, str]:
    """Whether this call is a training pass, and the tuner's key for it: the layer kind, input shape, dtype,
    autocast, layout and pass (the timings differ along each)."""
    training = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return training, (f"{kind} {tuple(x.shape)} {str(x.dtype).replace('torch.', '')}"
                      f"{' autocast' if _cpu_autocast_enabled() else ''} {'nhwc' if channels_last else 'nchw'} "
                      f"{'train' if training else 'infer'}")


def fixed_weight_cache(conv: nn.Conv2d, slot: str,
                       transform: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor | None:
    """``transform(conv.weight)``, kept between calls where the weights are fixed (requires_grad off, as for
    the loaded generators of test, stylize and analyze, and no gradient taken); None where they are not.
    Recomputed when the weights change; weights created under inference mode carry no version counter to tell
    that, so they are not kept."""
    if conv.weight.requires_grad or torch.is_grad_enabled() or conv.weight.is_inference():
        return None
    key = (conv.weight.data_ptr(), conv.weight._version)
    cached = conv.__dict__.get(slot)
    if cached is None or cached[0] != key:
        cached = conv.__dict__[slot] = (key, transform(conv.weight))
    return cached[1]


class OutputConv(nn.Conv2d):
    """The generator's last convolution (ngf channels to the image's 3, 7x7, unpadded): a plain ``nn.Conv2d``
    in its parameters and state dict. On CPU it runs as one stride-2 convolution per 2x2 output block
    (accel/phase_conv.py), which gives the convolution enough output channels to fill the CPU's vectors: about
    2x faster there in bf16 and fp32, forward and backward (docs/performance.md). Elsewhere, for odd output
    sizes and with ``algorithm`` 'direct' (the default until accel.swap.accelerate sets it from
    the plan's conv_algorithm, as for ResidualConv), it is PyTorch's convolution."""

    algorithm = "direct"
    tuner: "Autotuner | None" = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.algorithm == "direct" or x.device.type != "cpu" or not phase_conv.applies(x, self.weight):
            return super().forward(x)
        if self.algorithm == "auto" and self.tuner is not None and self._tuned(x) == "direct":
            return super().forward(x)
        kernel = fixed_weight_cache(self, "_phase_kernel_cache", phase_conv.phase_weight)
        return phase_conv.phase_conv2d(x, self.weight, self.bias, kernel)

    def _tuned(self, x: torch.Tensor) -> str:
        training, key = _tuning_key("output_conv", x, self.weight)
        with torch.enable_grad() if training else torch.no_grad():
            return self.tuner.choose(key, lambda: self._candidates(x, training), "phase", ("direct", "phase"))

    def _candidates(self, x: torch.Tensor, training: bool) -> dict[str, Callable[[], object]]:
        sample = torch.randn_like(x)
        weight = self.weight.detach().clone()
        bias = None if self.bias is None else self.bias.detach().clone()

        def run(phase: bool) -> Callable[[], object]:
            def step() -> object:
                inp = sample.detach().requires_grad_(training)
                w = weight.detach().requires_grad_(training)
                out = phase_conv.phase_conv2d(inp, w, bias, None) if phase else F.conv2d(inp, w, bias)
                return torch.autograd.grad(out.float().sum(), (inp, w)) if training else out
            return step
        return {"direct": run(False), "phase": run(True)}
