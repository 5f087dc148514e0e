"""Generators and discriminators of the published CycleGAN.

Module layouts follow junyanz/pytorch-CycleGAN-and-pix2pix exactly, so state-dict keys and shapes match and
``latest_net_G_A.pth`` files trained with it load here without conversion (tests check this against
``shared/reference/*.tsv``). Models know nothing of files, flags or HTML, and nothing of speed: these are the
reference's layers, and ``cyclegan_culture.accel.accelerate`` swaps in faster equivalents of the same state.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn
from torch.nn import init

NormFactory = Callable[[int], nn.Module]


def get_norm_layer(norm: str) -> NormFactory:
    """instance: no affine parameters and no running statistics (as the reference); batch: affine with stats."""
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "none":
        return lambda channels: nn.Identity()
    raise ValueError(f"unknown norm {norm!r}")


def _conv_bias(norm: str) -> bool:
    # The reference gives convolutions a bias only before instance norm (batch norm has its own shift; with
    # norm 'none' the reference also omits it, and we keep that so its checkpoints load).
    return norm == "instance"


class ResnetBlock(nn.Module):
    """Two 3x3 convolutions with reflection padding and a skip connection."""

    def __init__(self, dim: int, norm_layer: NormFactory, use_dropout: bool, use_bias: bool):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, padding=0, bias=use_bias),
                                   norm_layer(dim), nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, padding=0, bias=use_bias), norm_layer(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, two stride-2 downsamplings, n residual blocks, two upsamplings, c7s1-3, tanh.

    ``upsample='resize'`` replaces each transposed convolution by nearest-neighbour resizing and a 3x3
    convolution, which avoids checkerboard artifacts (Odena et al., 2016); its weights are not the reference's.
    """

    N_DOWNSAMPLING = 2
    size_multiple = 4  # sizes divisible by this come back unchanged

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
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7, padding=0), nn.Tanh()]
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


class UnetSkipConnectionBlock(nn.Module):
    """One level of the U-Net: a stride-2 4x4 convolution down, the inner levels, a transposed convolution up,
    and the level's input concatenated to its output (the skip connection), in the reference's module order."""

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False, innermost: bool = False,
                 norm_layer: NormFactory = nn.BatchNorm2d, use_bias: bool = False, use_dropout: bool = False):
        super().__init__()
        self.outermost = outermost
        down_conv = nn.Conv2d(input_nc or outer_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
        if outermost:
            layers = [down_conv, submodule, nn.ReLU(True),
                      nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1), nn.Tanh()]
        elif innermost:
            layers = [nn.LeakyReLU(0.2, True), down_conv, nn.ReLU(True),
                      nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=use_bias),
                      norm_layer(outer_nc)]
        else:
            layers = [nn.LeakyReLU(0.2, True), down_conv, norm_layer(inner_nc), submodule, nn.ReLU(True),
                      nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=use_bias),
                      norm_layer(outer_nc)] + ([nn.Dropout(0.5)] if use_dropout else [])
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """The reference's U-Net (unet_128: 7 levels, unet_256: 8): sizes must be multiples of 2^levels, so
    ``size_multiple`` tells inference how far to pad."""

    def __init__(self, input_nc: int = 3, output_nc: int = 3, num_downs: int = 8, ngf: int = 64,
                 norm: str = "batch", use_dropout: bool = False):
        super().__init__()
        norm_layer, use_bias = get_norm_layer(norm), _conv_bias(norm)
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, norm_layer=norm_layer, use_bias=use_bias, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm_layer=norm_layer,
                                            use_bias=use_bias, use_dropout=use_dropout)
        for outer in (4, 2, 1):
            block = UnetSkipConnectionBlock(ngf * outer, ngf * outer * 2, submodule=block, norm_layer=norm_layer,
                                            use_bias=use_bias)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True,
                                             norm_layer=norm_layer, use_bias=use_bias)
        self.size_multiple = 2 ** num_downs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


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
             upsample: str = "transpose") -> nn.Module:
    blocks = {"resnet_9blocks": 9, "resnet_6blocks": 6}
    levels = {"unet_128": 7, "unet_256": 8}
    if netG in blocks:
        net: nn.Module = ResnetGenerator(input_nc, output_nc, ngf, norm, use_dropout, blocks[netG], upsample)
    elif netG in levels:
        if upsample != "transpose":
            raise ValueError(f"netG {netG} upsamples by transposed convolutions only (upsample {upsample!r})")
        net = UnetGenerator(input_nc, output_nc, levels[netG], ngf, norm, use_dropout)
    else:
        raise ValueError(f"unknown netG {netG!r}")
    init_weights(net, init_type, init_gain)
    return net


def define_D(input_nc: int, ndf: int, netD: str, n_layers_D: int = 3, norm: str = "instance",
             init_type: str = "normal", init_gain: float = 0.02, spectral_norm: bool = False) -> nn.Module:
    """The reference's discriminators; ``spectral_norm``: each convolution's weight divided by its largest
    singular value (Miyato et al., 2018), which bounds how sharply the discriminator can react to a small change
    of its input, a known cure for a discriminator that memorises a few dozen paintings."""
    if netD == "basic":
        net: nn.Module = NLayerDiscriminator(input_nc, ndf, 3, norm)
    elif netD == "n_layers":
        net = NLayerDiscriminator(input_nc, ndf, n_layers_D, norm)
    elif netD == "pixel":
        net = PixelDiscriminator(input_nc, ndf, norm)
    else:
        raise ValueError(f"unknown netD {netD!r}")
    init_weights(net, init_type, init_gain)
    if spectral_norm:  # after the initialisation, so the random numbers drawn for it are the reference's
        for module in list(net.modules()):
            if isinstance(module, nn.Conv2d):
                nn.utils.parametrizations.spectral_norm(module)
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
