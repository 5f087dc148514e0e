"""Acceleration as one swap: the reference's layers in a built network are given the forward of their fast
equivalents (accel/layers.py), in place. Parameters, buffers, state-dict keys and the random numbers drawn at
initialisation are untouched, so checkpoints load either way; removing all acceleration is not calling this."""

from __future__ import annotations

from typing import Any

from torch import nn

from cyclegan_culture.accel.layers import InstanceNorm, OutputConv, ReflectionPad, ResidualConv
from cyclegan_culture.models.networks import ResnetBlock, ResnetGenerator


def _recast(module: nn.Module, fast: type[nn.Module]) -> None:
    # Each fast class subclasses the layer it replaces and adds no state: changing the class changes only its
    # forward, keeps the very same Parameter objects, and draws no new random initialisation.
    module.__class__ = fast


def swap_layers(net: nn.Module, conv_algorithm: str = "direct", tuner: Any = None) -> nn.Module:
    """``net`` with its instance norms, residual convolutions (their reflection padding folded in) and the
    generator's last padding and convolution swapped for accel.layers' equivalents; ``conv_algorithm`` (auto,
    direct, winograd) says how the convolutions are computed. Applying it twice only resets the algorithm."""
    for module in list(net.modules()):
        if type(module) is nn.InstanceNorm2d:
            _recast(module, InstanceNorm)
        elif isinstance(module, ResnetBlock):
            layers = module.conv_block
            for i in range(len(layers) - 1):
                if type(layers[i]) is nn.ReflectionPad2d and tuple(layers[i].padding) == (1, 1, 1, 1) \
                        and type(layers[i + 1]) is nn.Conv2d:
                    layers[i] = nn.Identity()  # ResidualConv pads itself (Winograd keeps only the unpadded input)
                    _recast(layers[i + 1], ResidualConv)
        elif isinstance(module, ResnetGenerator):
            pad, conv = module.model[-3], module.model[-2]
            if type(pad) is nn.ReflectionPad2d and type(conv) is nn.Conv2d:
                _recast(pad, ReflectionPad)
                _recast(conv, OutputConv)
    for module in net.modules():
        if isinstance(module, (ResidualConv, OutputConv)):
            module.algorithm = conv_algorithm
            module.tuner = tuner
    return net
