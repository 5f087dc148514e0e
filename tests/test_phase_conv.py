"""The generator's last convolution per 2x2 output block: the same convolution up to rounding, in values and
gradients, used where it applies and nowhere else."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cyclegan_culture.accel import phase_conv
from cyclegan_culture.accel.swap import swap_layers
from cyclegan_culture.accel.layers import OutputConv
from cyclegan_culture.models.networks import define_G
from cyclegan_culture.accel.phase_conv import phase_conv2d


# the generator's 7x7, other kernels (an even one too), a single output channel, non-square inputs
@pytest.mark.parametrize("kernel, in_c, out_c, size", [(7, 8, 3, (14, 20)), (3, 5, 2, (6, 8)), (5, 4, 1, (10, 6)),
                                                       (1, 3, 3, (4, 2)), (4, 3, 2, (9, 7))])
@pytest.mark.parametrize("with_bias", [True, False])
def test_values_and_gradients_equal_the_convolution_in_float64(kernel, in_c, out_c, size, with_bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, in_c, *size, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(out_c, in_c, kernel, kernel, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(out_c, dtype=torch.float64, generator=g, requires_grad=True) if with_bias else None
    inputs = (x, w) if b is None else (x, w, b)
    ours, expected = phase_conv2d(x, w, b), F.conv2d(x, w, b)
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn(expected.shape, dtype=torch.float64, generator=g)
    for got, want in zip(torch.autograd.grad(ours, inputs, grad_out), torch.autograd.grad(expected, inputs, grad_out)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_bfloat16_under_autocast_stays_as_close_as_the_direct_convolution():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 70, 70, generator=g)
    w, b = torch.randn(3, 64, 7, 7, generator=g) * 0.05, torch.randn(3, generator=g)
    exact = F.conv2d(x.double(), w.double(), b.double())
    with torch.autocast("cpu", torch.bfloat16):
        ours, direct = phase_conv2d(x, w, b), F.conv2d(x, w, b)

    def err(y: torch.Tensor) -> float:
        return float((y.double() - exact).abs().max() / exact.abs().max())

    assert ours.dtype == torch.bfloat16
    assert err(ours) < 2 * err(direct) + 1e-3


def calls_to_phase_conv(monkeypatch) -> list:
    seen: list = []
    original = phase_conv.phase_conv2d
    monkeypatch.setattr(phase_conv, "phase_conv2d", lambda *a: seen.append(a) or original(*a))
    return seen


def test_generator_uses_phases_for_even_sizes_and_matches_the_plain_convolution(monkeypatch):
    seen = calls_to_phase_conv(monkeypatch)
    torch.manual_seed(0)
    net = define_G(3, 3, 8, "resnet_6blocks").eval()
    x = torch.rand(1, 3, 20, 28) * 2 - 1
    with torch.no_grad():
        net(x)
        assert not seen  # as built: PyTorch's convolution, until --conv_algorithm's setting is applied
    swap_layers(net, "auto")
    with torch.no_grad():
        phased = net(x)
        assert len(seen) == 1
        direct = swap_layers(net, "direct")(x)
        assert len(seen) == 1  # --conv_algorithm direct: PyTorch's convolution
        swap_layers(net, "auto")
        net.model[-2](torch.rand(1, 8, 27, 34))  # odd height: PyTorch's convolution
        assert len(seen) == 1
    torch.testing.assert_close(phased, direct, rtol=0, atol=1e-5)


def test_phase_kernels_are_kept_for_fixed_weights_only_and_follow_changes():
    torch.manual_seed(0)
    conv = OutputConv(4, 3, 7).requires_grad_(False)
    conv.algorithm = "auto"
    x = torch.randn(1, 4, 12, 12)
    with torch.inference_mode():
        first = conv(x)
        kept = conv.__dict__["_phase_kernel_cache"][1]
        conv(x)
        assert conv.__dict__["_phase_kernel_cache"][1] is kept
    with torch.no_grad():
        conv.weight.mul_(2)
    with torch.inference_mode():
        torch.testing.assert_close(conv(x) - conv.bias.view(1, 3, 1, 1), 2 * (first - conv.bias.view(1, 3, 1, 1)))
    training = OutputConv(4, 3, 7)
    training.algorithm = "auto"
    training(x).sum().backward()
    assert "_phase_kernel_cache" not in training.__dict__ and training.weight.grad is not None


def test_last_convolution_keeps_a_plain_convolutions_state_dict():
    net = swap_layers(define_G(3, 3, 8, "resnet_6blocks"))
    last = net.model[-2]
    assert isinstance(last, OutputConv)
    assert set(last.state_dict()) == {"weight", "bias"} and last.weight.shape == (3, 8, 7, 7)
