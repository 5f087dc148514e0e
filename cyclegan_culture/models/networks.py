"""Generators and discriminators of the published CycleGAN.

Module layouts follow junyanz/pytorch-CycleGAN-and-pix2pix exactly, so state-dict keys and shapes match and
``latest_net_G_A.pth`` files trained with it load here without conversion (tests check this against
``shared/reference/*.tsv``). Models know nothing of files, flags or HTML.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import init

from cyclegan_culture.models import phase_conv, winograd_f2
from cyclegan_culture.models.winograd import winograd_conv3x3_reflect, winograd_filters

NormFactory = Callable[[int], nn.Module]


def get_norm_layer(norm: str) -> NormFactory:
    """instance: no affine parameters and no running statistics (as the reference); batch: affine with stats."""
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "instance":
        return functools.partial(InstanceNorm, affine=False, track_running_stats=False)
    if norm == "none":
        return lambda channels: nn.Identity()
    raise ValueError(f"unknown norm {norm!r}")


class InstanceNorm(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (same arguments and state dict) that normalises channels_last maps on CPU image by
    image through batch norm: over one image, batch norm's statistics are instance norm's (per channel, over
    height and width), and it works in the input's layout. PyTorch's instance norm first copies a channels_last
    map to NCHW (5 ms for the last 64-channel 256x256 map of a generator), and in torch 2.14 its channels_last
    backward for a single image is wrong (models/acceleration.instance_norm_nhwc_is_correct); batch norm's is
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


def _conv_bias(norm: str) -> bool:
    # The reference gives convolutions a bias only before instance norm (batch norm has its own shift; with
    # norm 'none' the reference also omits it, and we keep that so its checkpoints load).
    return norm == "instance"


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


class ResidualConv(nn.Conv2d):
    """The residual blocks' 3x3 convolution with its reflection padding of 1 (the reference's
    ``ReflectionPad2d(1)`` followed by an unpadded ``Conv2d``). A plain ``nn.Conv2d`` in its parameters and
    state dict. ``algorithm`` says how it is computed: 'direct' (PyTorch's padding and convolution), 'winograd'
    (models/winograd.py) or 'auto' (Winograd for feature maps of at least WINOGRAD_MIN_CHANNELS channels and
    WINOGRAD_MIN_PIXELS pixels, WINOGRAD_MIN_PIXELS_CHANNELS_LAST in channels_last). Winograd applies to fp32
    on CPU outside autocast; elsewhere it would not pay (GPU libraries choose their own algorithms), and the
    convolution is direct, except for bf16 inference in channels_last (test.py and stylize with --amp on CPU),
    which runs by F(2x2, 3x3) (models/winograd_f2.py: faster, with more rounding) where 'winograd' forces it
    and, under 'auto', from 256 channels."""

    algorithm = "direct"
    # Where 'auto' uses Winograd, measured (docs/performance.md): from 256 channels (the default generator's
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
        if self._uses_winograd(x):
            return winograd_conv3x3_reflect(x, self.weight, self.bias, self._inference_filters())
        if self._uses_winograd_f2(x):
            transformed = fixed_weight_cache(self, "_winograd_f2_cache", winograd_f2.filters)
            if transformed is not None and transformed.dtype == x.dtype:  # bf16 inference with fixed weights
                with torch.autocast("cpu", enabled=False):  # autocast would pad in fp32
                    return winograd_f2.conv3x3_reflect(x, transformed, self.bias)
        return super().forward(reflect_pad(x, 1))

    def _uses_winograd_f2(self, x: torch.Tensor) -> bool:
        """bf16 inference in channels_last (models/acceleration.inference_weights): F(2x2, 3x3) where forced,
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

    def _inference_filters(self) -> torch.Tensor | None:
        """Transformed filters kept between calls where the weights are fixed: 4x the weights' memory (170 MB
        for a default generator) for about 5% of inference time."""
        return fixed_weight_cache(self, "_winograd_cache", winograd_filters)


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
    (models/phase_conv.py), which gives the convolution enough output channels to fill the CPU's vectors: about
    2x faster there in bf16 and fp32, forward and backward (docs/performance.md). Elsewhere, for odd output
    sizes and with ``algorithm`` 'direct' (the default until models/acceleration.use_conv_algorithm sets it from
    --conv_algorithm, as for ResidualConv), it is PyTorch's convolution."""

    algorithm = "direct"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.algorithm == "direct" or x.device.type != "cpu" or not phase_conv.applies(x, self.weight):
            return super().forward(x)
        kernel = fixed_weight_cache(self, "_phase_kernel_cache", phase_conv.phase_weight)
        return phase_conv.phase_conv2d(x, self.weight, self.bias, kernel)


class ResnetBlock(nn.Module):
    """Two 3x3 convolutions with reflection padding and a skip connection."""

    def __init__(self, dim: int, norm_layer: NormFactory, use_dropout: bool, use_bias: bool):
        super().__init__()
        # The reference pads with a ReflectionPad2d module before each convolution; here the convolution pads
        # (so Winograd can keep only the unpadded input), and a parameterless placeholder keeps each
        # convolution at the reference's index, so state-dict keys (conv_block.1, conv_block.5) match.
        layers: list[nn.Module] = [nn.Identity(), ResidualConv(dim, use_bias), norm_layer(dim), nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.Identity(), ResidualConv(dim, use_bias), norm_layer(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, two stride-2 downsamplings, n residual blocks, two upsamplings, c7s1-3, tanh.

    ``upsample='resize'`` replaces each transposed convolution by nearest-neighbour resizing and a 3x3
    convolution, which avoids checkerboard artifacts (Odena et al., 2016); its weights are not the reference's.
    """

    N_DOWNSAMPLING = 2

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, norm: str = "instance",
                 use_dropout: bool = False, n_blocks: int = 9, upsample: str = "transpose"):
        super().__init__()
        norm_layer = get_norm_layer(norm)
        use_bias = _conv_bias(norm)
        model: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, padding=0, bias=use_bias),
                                  norm_layer(ngf), nn.ReLU(True)]
        for i in range(self.N_DOWNSAMPLING):
            mult = 2 ** i
            model += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=use_bias),
                      norm_layer(ngf * mult * 2), nn.ReLU(True)]
        mult = 2 ** self.N_DOWNSAMPLING
        model += [ResnetBlock(ngf * mult, norm_layer, use_dropout, use_bias) for _ in range(n_blocks)]
        for i in range(self.N_DOWNSAMPLING):
            mult = 2 ** (self.N_DOWNSAMPLING - i)
            out = ngf * mult // 2
            if upsample == "resize":
                up: nn.Module = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(ngf * mult, out, 3, padding=1, bias=use_bias))
            else:
                up = nn.ConvTranspose2d(ngf * mult, out, 3, stride=2, padding=1, output_padding=1, bias=use_bias)
            model += [up, norm_layer(out), nn.ReLU(True)]
        model += [ReflectionPad(3), OutputConv(ngf, output_nc, 7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*model)
        self.n_blocks = n_blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def parts(self) -> dict[str, list[nn.Module]]:
        """encoder / blocks / decoder, for freezing parts of a generator."""
        layers = list(self.model)
        start = [i for i, m in enumerate(layers) if isinstance(m, ResnetBlock)]
        first, last = start[0], start[-1] + 1
        return {"encoder": layers[:first], "blocks": layers[first:last], "decoder": layers[last:]}


class NLayerDiscriminator(nn.Module):
    """PatchGAN: classifies overlapping patches (70x70 for n_layers=3) as real or fake."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance"):
        super().__init__()
        norm_layer = get_norm_layer(norm)
        use_bias = _conv_bias(norm)
        kw, padw = 4, 1
        seq: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_prev, nf_mult = nf_mult, min(2 ** n, 8)
            seq += [nn.Conv2d(ndf * nf_prev, ndf * nf_mult, kw, stride=2, padding=padw, bias=use_bias),
                    norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
        nf_prev, nf_mult = nf_mult, min(2 ** n_layers, 8)
        seq += [nn.Conv2d(ndf * nf_prev, ndf * nf_mult, kw, stride=1, padding=padw, bias=use_bias),
                norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True),
                nn.Conv2d(ndf * nf_mult, 1, kw, stride=1, padding=padw)]
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN: judges each pixel's colour alone."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, norm: str = "instance"):
        super().__init__()
        norm_layer = get_norm_layer(norm)
        use_bias = _conv_bias(norm)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, 1, stride=1, padding=0), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 1, stride=1, padding=0, bias=use_bias), norm_layer(ndf * 2),
            nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * 2, 1, 1, stride=1, padding=0, bias=use_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def init_weights(net: nn.Module, init_type: str = "normal", init_gain: float = 0.02) -> None:
    """Initialise conv/linear weights and batch-norm scales as the reference does."""

    def init_func(m: nn.Module) -> None:
        classname = m.__class__.__name__
        if hasattr(m, "weight") and m.weight is not None and ("Conv" in classname or "Linear" in classname):
            if init_type == "normal":
                init.normal_(m.weight.data, 0.0, init_gain)
            elif init_type == "xavier":
                init.xavier_normal_(m.weight.data, gain=init_gain)
            elif init_type == "kaiming":
                init.kaiming_normal_(m.weight.data, a=0, mode="fan_in")
            elif init_type == "orthogonal":
                init.orthogonal_(m.weight.data, gain=init_gain)
            else:
                raise ValueError(f"unknown init_type {init_type!r}")
            if getattr(m, "bias", None) is not None:
                init.constant_(m.bias.data, 0.0)
        elif "BatchNorm2d" in classname:
            init.normal_(m.weight.data, 1.0, init_gain)
            init.constant_(m.bias.data, 0.0)

    net.apply(init_func)


def define_G(input_nc: int, output_nc: int, ngf: int, netG: str, norm: str = "instance",
             use_dropout: bool = False, init_type: str = "normal", init_gain: float = 0.02,
             upsample: str = "transpose") -> ResnetGenerator:
    blocks = {"resnet_9blocks": 9, "resnet_6blocks": 6}
    if netG not in blocks:
        raise ValueError(f"unknown netG {netG!r}")
    net = ResnetGenerator(input_nc, output_nc, ngf, norm, use_dropout, blocks[netG], upsample)
    init_weights(net, init_type, init_gain)
    return net


def define_D(input_nc: int, ndf: int, netD: str, n_layers_D: int = 3, norm: str = "instance",
             init_type: str = "normal", init_gain: float = 0.02) -> nn.Module:
    if netD == "basic":
        net: nn.Module = NLayerDiscriminator(input_nc, ndf, 3, norm)
    elif netD == "n_layers":
        net = NLayerDiscriminator(input_nc, ndf, n_layers_D, norm)
    elif netD == "pixel":
        net = PixelDiscriminator(input_nc, ndf, norm)
    else:
        raise ValueError(f"unknown netD {netD!r}")
    init_weights(net, init_type, init_gain)
    return net


def load_network_state(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a state dict saved by us or by the reference, strictly.

    Drops a DataParallel 'module.' prefix and the InstanceNorm running-stat entries that PyTorch < 0.4 wrote
    (the reference patches those away too); any other mismatch raises ValueError naming the keys.
    """
    expected = net.state_dict()
    cleaned = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        stale_norm_stat = key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
        if key not in expected and stale_norm_stat:
            continue
        cleaned[key] = value
    missing = [k for k in expected if k not in cleaned]
    unexpected = [k for k in cleaned if k not in expected]
    wrong_shape = [k for k in expected if k in cleaned and tuple(cleaned[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if wrong_shape:
            k = wrong_shape[0]
            parts.append(f"{k} has shape {tuple(cleaned[k].shape)}, the network expects {tuple(expected[k].shape)}")
        raise ValueError("; ".join(parts))
    net.load_state_dict(cleaned, strict=True)
