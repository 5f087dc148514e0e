"""bf16 inference convolutions by Winograd's F(2x2, 3x3) in channels_last (accel/winograd_f2.py)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from cyclegan_culture.accel import plan as acceleration, winograd_f2
from cyclegan_culture.accel.layers import ResidualConv
from cyclegan_culture.accel.swap import swap_layers
from cyclegan_culture.inference import Stylizer, translate
from cyclegan_culture.models.networks import define_G


def nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def assert_exact_in_float64(conv, n: int, c: int, k: int, h: int, w: int) -> None:
    """``conv(x, weight, bias)`` on float64 channels_last maps equals PyTorch's reflect-padded convolution up to
    float64 rounding, and keeps the layout (shared by the bf16 algorithms' tests)."""
    gen = torch.Generator().manual_seed(n * 100 + h)
    x = nhwc(torch.randn(n, c, h, w, generator=gen, dtype=torch.float64))
    weight = torch.randn(k, c, 3, 3, generator=gen, dtype=torch.float64)
    bias = torch.randn(k, generator=gen, dtype=torch.float64)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), weight, bias)
    with torch.no_grad():
        out = conv(x, weight, bias)
    assert out.shape == expected.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("n, c, k, h, w", [(1, 3, 5, 2, 2), (2, 5, 7, 6, 8), (1, 4, 4, 10, 4)])
def test_equals_reflect_padded_direct_convolution_in_float64(n, c, k, h, w):
    assert_exact_in_float64(lambda x, weight, bias: winograd_f2.conv3x3_reflect(x, winograd_f2.filters(weight), bias),
                            n, c, k, h, w)


def bf16_errors(conv) -> tuple[float, float]:
    """Mean error against float64, relative to the output's mean size, of direct bf16 convolution and of
    ``conv(x, weight)`` in bf16 on the same 64-channel map (shared by the bf16 algorithms' tests)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 16, 16, generator=gen)
    weight = torch.randn(64, 64, 3, 3, generator=gen) * 0.05
    exact = F.conv2d(F.pad(x.double(), (1, 1, 1, 1), mode="reflect"), weight.double())
    xb, wb = nhwc(x.bfloat16()), weight.bfloat16()
    direct = F.conv2d(F.pad(xb, (1, 1, 1, 1), mode="reflect"), wb)
    with torch.no_grad():
        fast = conv(xb, wb)
    assert fast.dtype == torch.bfloat16

    def error(y: torch.Tensor) -> float:
        return ((y.double() - exact).abs().mean() / exact.abs().mean()).item()

    return error(direct), error(fast)


def test_bf16_error_stays_within_three_times_direct_bf16s():
    direct, fast = bf16_errors(lambda x, weight: winograd_f2.conv3x3_reflect(x, winograd_f2.filters(weight), None))
    # measured on 256-channel maps: 0.0028 direct, 0.0071 Winograd
    assert fast < 3 * direct


def test_applies_only_to_even_channels_last_maps_on_cpu():
    x = nhwc(torch.randn(1, 4, 6, 8))
    assert winograd_f2.applies(x)
    assert not winograd_f2.applies(nhwc(torch.randn(1, 4, 6, 7)))
    assert not winograd_f2.applies(torch.randn(1, 4, 6, 8))  # NCHW


def calls(monkeypatch) -> list[int]:
    seen: list[int] = []
    real = winograd_f2.conv3x3_reflect

    def counting(*args, **kwargs):
        seen.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(winograd_f2, "conv3x3_reflect", counting)
    return seen


@pytest.mark.parametrize("algorithm, expected_calls", [("auto", 12), ("winograd", 12), ("direct", 0)])
def test_default_generator_uses_it_for_bf16_inference_as_the_algorithm_says(monkeypatch, algorithm,
                                                                             expected_calls):
    torch.manual_seed(0)
    fp32 = define_G(3, 3, 64, "resnet_6blocks").eval().requires_grad_(False)  # 256-channel blocks
    net = swap_layers(acceleration.inference_weights(copy.deepcopy(fp32), torch.bfloat16),
                                          algorithm)
    reference = swap_layers(
        acceleration.inference_weights(copy.deepcopy(fp32), torch.bfloat16), "direct")
    x = torch.rand(1, 3, 24, 32) * 2 - 1
    seen = calls(monkeypatch)
    with torch.inference_mode():
        exact = translate(fp32, x)
        out = translate(net, x, torch.bfloat16)
        direct = translate(reference, x, torch.bfloat16)
    assert len(seen) == expected_calls
    assert out.shape == x.shape
    # measured on the default generator at 256x256: mean error against fp32 0.0108 against direct's 0.0077
    assert (out - exact).abs().mean() < 2 * (direct - exact).abs().mean()


def test_not_used_with_gradients_in_fp32_or_for_odd_maps(monkeypatch):
    conv = ResidualConv(256, True).bfloat16().to(memory_format=torch.channels_last).requires_grad_(False)
    conv.algorithm = "winograd"
    seen = calls(monkeypatch)
    conv(nhwc(torch.randn(1, 256, 6, 6).bfloat16()))  # gradients enabled here
    with torch.no_grad():
        conv(nhwc(torch.randn(1, 256, 5, 6).bfloat16()))
        conv.float()(nhwc(torch.randn(1, 256, 6, 6)))
    assert seen == []
    with torch.no_grad():
        conv.bfloat16()(nhwc(torch.randn(1, 256, 6, 6).bfloat16()))
    assert seen == [1]


def test_stylizer_with_amp_translates_tiled_and_whole_images_in_nhwc(monkeypatch):
    """The --amp inference path end to end: bf16 NHWC weights, Winograd in the 256-channel blocks, tiles sharing
    the whole image's instance-norm statistics; each as close to the same fp32 computation as bf16 allows."""
    torch.manual_seed(0)
    net = define_G(3, 3, 64, "resnet_6blocks").eval().requires_grad_(False)
    fp32 = Stylizer(copy.deepcopy(net), tile=48, overlap=8)
    bf16 = Stylizer(swap_layers(net, "auto"), amp=True, tile=48, overlap=8)
    assert bf16.generator.model[1].weight.dtype == torch.bfloat16
    x = torch.rand(1, 3, 64, 80) * 2 - 1  # even maps at the bottleneck, whole and in tiles
    seen = calls(monkeypatch)
    tiled = [s.stylize_tensor(x) for s in (fp32, bf16)]
    assert len(seen) > 0
    fp32.tile = bf16.tile = 0
    whole = [s.stylize_tensor(x) for s in (fp32, bf16)]
    assert tiled[1].shape == whole[1].shape == x.shape
    # bf16 with Winograd against fp32: ~0.01 mean on the default generator
    assert (whole[1] - whole[0]).abs().mean() < 0.05
    assert (tiled[1] - tiled[0]).abs().mean() < 0.05
