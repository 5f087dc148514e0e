"""bf16 inference by Winograd's F(4x4, 3x3) (accel/winograd.bf16_inference_conv3x3_reflect): the tuner's third
candidate for --amp inference, with more rounding than F(2x2, 3x3) and direct bf16."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cyclegan_culture.accel import layers, make_plan, plan as acceleration, winograd
from cyclegan_culture.accel.layers import BF16_INFERENCE_CANDIDATES, ResidualConv
from cyclegan_culture.accel.swap import swap_layers
from cyclegan_culture.data.images import pil_to_tensor
from cyclegan_culture.inference import translate
from cyclegan_culture.models.networks import define_G
from cyclegan_culture.pretrained import catalog
from cyclegan_culture.runs import folder


def nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("n, c, k, h, w", [(1, 3, 5, 2, 2), (2, 5, 7, 6, 10), (1, 4, 4, 9, 13)])
def test_equals_reflect_padded_direct_convolution_in_float64(n, c, k, h, w):
    gen = torch.Generator().manual_seed(n * 100 + h)
    x = nhwc(torch.randn(n, c, h, w, generator=gen, dtype=torch.float64))
    weight = torch.randn(k, c, 3, 3, generator=gen, dtype=torch.float64)
    bias = torch.randn(k, generator=gen, dtype=torch.float64)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), weight, bias)
    with torch.no_grad():
        out = winograd.bf16_inference_conv3x3_reflect(x, weight, bias)
    assert out.shape == expected.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, expected, atol=1e-10, rtol=0)


def test_bf16_error_is_above_direct_bf16s_and_within_ten_times_it():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 16, 16, generator=gen)
    weight = torch.randn(64, 64, 3, 3, generator=gen) * 0.05
    exact = F.conv2d(F.pad(x.double(), (1, 1, 1, 1), mode="reflect"), weight.double())
    xb, wb = nhwc(x.bfloat16()), weight.bfloat16()
    direct = F.conv2d(F.pad(xb, (1, 1, 1, 1), mode="reflect"), wb)
    with torch.no_grad():
        fast = winograd.bf16_inference_conv3x3_reflect(xb, wb)

    def error(y: torch.Tensor) -> float:
        return ((y.double() - exact).abs().mean() / exact.abs().mean()).item()

    assert fast.dtype == torch.bfloat16
    assert error(direct) < error(fast) < 10 * error(direct)


def test_refuses_gradients_and_nchw_maps():
    weight = torch.randn(4, 4, 3, 3, requires_grad=True)
    with pytest.raises(ValueError, match="no gradients"):
        winograd.bf16_inference_conv3x3_reflect(nhwc(torch.randn(1, 4, 8, 8)), weight)
    with torch.no_grad(), pytest.raises(ValueError, match="channels_last"):
        winograd.bf16_inference_conv3x3_reflect(torch.randn(1, 4, 8, 8), weight)


class _Answer:
    """A tuner that answers every bf16 residual-convolution question with ``answer`` and records the candidates
    it was offered."""

    def __init__(self, answer: str):
        self.answer, self.offered = answer, []

    def choose(self, key, candidates, default, names=None):
        if key.startswith("residual_conv") and "bfloat16" in key:
            self.offered.append(names)
            return self.answer
        return default


def _bf16_errors(fp32: torch.nn.Module, x: torch.Tensor, monkeypatch) -> tuple[float, float, int]:
    """Mean absolute error against fp32 of the bf16 generator with its residual convolutions direct and with
    them by F(4x4, 3x3) (the tuner's answer), and how many F(4x4, 3x3) calls the second made."""
    calls: list[int] = []
    real = layers.bf16_inference_conv3x3_reflect
    monkeypatch.setattr(layers, "bf16_inference_conv3x3_reflect",
                        lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    outputs = {}
    with torch.inference_mode():
        exact = translate(fp32, x)
        for answer in ("direct", "winograd_f4"):
            net = swap_layers(acceleration.inference_weights(copy.deepcopy(fp32), torch.bfloat16), "auto")
            tuner = _Answer(answer)
            for module in net.modules():
                if isinstance(module, ResidualConv):
                    module.tuner = tuner
            outputs[answer] = translate(net, x, torch.bfloat16)
            assert tuner.offered and tuner.offered[0] == BF16_INFERENCE_CANDIDATES
            if answer == "direct":
                assert not calls
    assert outputs["winograd_f4"].shape == x.shape and not torch.equal(outputs["winograd_f4"], outputs["direct"])
    return ((outputs["direct"] - exact).abs().mean().item(), (outputs["winograd_f4"] - exact).abs().mean().item(),
            len(calls))


def test_a_shipped_generator_by_it_stays_within_twice_direct_bf16s_error(monkeypatch):
    run = catalog._models_in(catalog.SHIPPED_DIR, True)["ukiyoe"].folder
    fp32 = folder.load_generator(run, "latest", "AtoB", torch.device("cpu"),
                                 make_plan(torch.device("cpu"), autotune="off")).eval().requires_grad_(False)
    photo = Image.open(catalog.examples()[0]).convert("RGB").resize((128, 96), Image.BILINEAR)
    x = pil_to_tensor(photo).unsqueeze(0)
    direct, f4, calls = _bf16_errors(fp32, x, monkeypatch)
    assert calls == 12  # six blocks, two convolutions each
    # measured on 12 held-out photos at 256x256: 0.24 of 255 levels mean error against direct bf16's 0.18
    assert f4 < 2 * direct


def test_a_random_default_generator_by_it_stays_within_four_times_direct_bf16s_error(monkeypatch):
    torch.manual_seed(0)
    fp32 = define_G(3, 3, 64, "resnet_6blocks").eval().requires_grad_(False)  # 256-channel blocks
    direct, f4, calls = _bf16_errors(fp32, torch.rand(1, 3, 24, 32) * 2 - 1, monkeypatch)
    assert calls == 12
    # untrained weights amplify rounding most: 2.8x here; trained generators 1.3-1.7x (docs/performance.md)
    assert f4 < 4 * direct
