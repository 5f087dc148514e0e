"""Winograd F(4x4, 3x3) convolutions for the residual blocks: same results as direct convolution up to rounding,
in values and gradients, wherever the networks use them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cyclegan_culture import options
from cyclegan_culture.accel.plan import PlanError, conv_algorithm
from cyclegan_culture.accel.swap import swap_layers
from cyclegan_culture.models import registry
from cyclegan_culture.models.cycle_gan import CycleGANModel
from cyclegan_culture.accel.layers import ResidualConv
from cyclegan_culture.models.networks import define_G
from cyclegan_culture.accel.winograd import winograd_conv3x3_reflect, winograd_filters


def direct(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), weight, bias)


# sizes that are and are not multiples of the 4x4 tile, the smallest reflectable image, and batches that the
# implementation splits into groups (several small images per matrix multiply, with a remainder)
LAYOUTS = [torch.contiguous_format, torch.channels_last]


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 5, 9, 11), (3, 4, 7, 13), (1, 2, 2, 2), (9, 3, 4, 6)])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("layout", LAYOUTS, ids=["NCHW", "NHWC"])
def test_values_and_gradients_equal_direct_convolution_in_float64(shape, with_bias, layout):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, generator=g).contiguous(memory_format=layout).requires_grad_()
    w = torch.randn(6, shape[1], 3, 3, dtype=torch.float64, generator=g).contiguous(memory_format=layout)
    w.requires_grad_()
    b = torch.randn(6, dtype=torch.float64, generator=g, requires_grad=True) if with_bias else None
    # an NCHW output gradient into an NHWC convolution too: the backward must not assume its layout
    grad_out = torch.randn(shape[0], 6, *shape[2:], dtype=torch.float64, generator=g)
    inputs = (x, w) if b is None else (x, w, b)
    ours = winograd_conv3x3_reflect(x, w, b)
    expected = direct(x, w, b)
    assert ours.shape == expected.shape
    assert ours.is_contiguous(memory_format=layout)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)
    grads = torch.autograd.grad(ours, inputs, grad_out)
    for got, want in zip(grads, torch.autograd.grad(expected, inputs, grad_out)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # gradients in their tensors' layouts: autograd then accumulates them without copies
    assert grads[0].is_contiguous(memory_format=layout) and grads[1].is_contiguous(memory_format=layout)


@pytest.mark.parametrize("layout", LAYOUTS, ids=["NCHW", "NHWC"])
def test_float32_rounding_stays_near_direct_convolution(layout):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 64, 20, 20, generator=g).contiguous(memory_format=layout).requires_grad_()
    w = (torch.randn(64, 64, 3, 3, generator=g) * 0.05).contiguous(memory_format=layout).requires_grad_()
    grad_out = torch.randn(2, 64, 20, 20, generator=g).contiguous(memory_format=layout)
    ours, expected = winograd_conv3x3_reflect(x, w), direct(x, w, None)
    scale = expected.abs().max()
    assert (ours - expected).abs().max() < 5e-5 * scale
    for got, want in zip(torch.autograd.grad(ours, (x, w), grad_out), torch.autograd.grad(expected, (x, w), grad_out)):
        assert (got - want).abs().max() < 5e-5 * want.abs().max()


@pytest.mark.parametrize("layout", LAYOUTS, ids=["NCHW", "NHWC"])
def test_cached_filters_are_used_only_without_gradients(layout):
    g = torch.Generator().manual_seed(2)  # its own seed: the global one depends on which tests ran before
    w = torch.randn(4, 4, 3, 3, generator=g)
    x = torch.randn(1, 4, 6, 6, generator=g).contiguous(memory_format=layout)
    stale = winograd_filters(torch.zeros_like(w))  # filters of other weights: visible if used
    with torch.no_grad():
        assert winograd_conv3x3_reflect(x, w, None, stale).abs().max() == 0
    with torch.enable_grad():
        expected = direct(x, w, None)
        torch.testing.assert_close(winograd_conv3x3_reflect(x, w, None, stale), expected,
                                   rtol=0, atol=5e-5 * expected.abs().max().item())


def test_rejects_other_kernel_sizes():
    with pytest.raises(ValueError, match="3x3 kernel"):
        winograd_conv3x3_reflect(torch.randn(1, 2, 8, 8), torch.randn(2, 2, 5, 5))


def counting_winograd(monkeypatch) -> list[int]:
    calls: list[int] = []
    from cyclegan_culture.accel import layers

    def spy(*args, **kwargs):
        calls.append(1)
        return winograd_conv3x3_reflect(*args, **kwargs)

    monkeypatch.setattr(layers, "winograd_conv3x3_reflect", spy)
    return calls


def test_generator_output_matches_direct_and_auto_picks_by_feature_map_size(monkeypatch):
    calls = counting_winograd(monkeypatch)
    torch.manual_seed(0)
    net = define_G(3, 3, 8, "resnet_6blocks").eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1  # 16x16 feature maps in the residual blocks
    with torch.inference_mode():
        expected = swap_layers(net, "direct")(x)
        assert not calls
        swap_layers(net, "auto")(x)
        assert not calls  # 32 channels and 16x16 maps: below where Winograd pays
        monkeypatch.setattr(ResidualConv, "WINOGRAD_MIN_PIXELS", 16 * 16)
        net(x)
        assert not calls  # still too few channels
        monkeypatch.setattr(ResidualConv, "WINOGRAD_MIN_CHANNELS", 32)
        auto = net(x)
        assert len(calls) == 12  # two convolutions in each of six blocks
        net(torch.rand(1, 3, 60, 60))
        assert len(calls) == 12  # 15x15 maps: too small again
        forced = swap_layers(net, "winograd")(torch.rand(1, 3, 16, 16))  # 4x4 maps: forced is forced
        assert len(calls) == 24 and forced.shape == (1, 3, 16, 16)
    torch.testing.assert_close(auto, expected, rtol=0, atol=1e-5)


def test_auto_uses_winograd_from_smaller_maps_in_channels_last(monkeypatch):
    calls = counting_winograd(monkeypatch)
    conv = ResidualConv(256, True)
    conv.algorithm = "auto"
    with torch.no_grad():
        for size, layout, expected in ((24, torch.channels_last, 1), (16, torch.channels_last, 0),
                                       (24, torch.contiguous_format, 0), (48, torch.contiguous_format, 1)):
            calls.clear()
            x = torch.randn(1, 256, size, size).contiguous(memory_format=layout)
            torch.testing.assert_close(conv(x), direct(x, conv.weight, conv.bias), rtol=0, atol=1e-4)
            assert len(calls) == expected, (size, layout)


def test_autocast_and_bfloat16_keep_direct_convolution(monkeypatch):
    calls = counting_winograd(monkeypatch)
    net = swap_layers(define_G(3, 3, 4, "resnet_6blocks"), "winograd").eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net(x)
        net.to(torch.bfloat16)(x.bfloat16())
    assert not calls


def test_inference_follows_weight_changes():
    torch.manual_seed(0)
    net = swap_layers(define_G(3, 3, 4, "resnet_6blocks"), "winograd").eval().requires_grad_(False)
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        before = net(x)
    conv = next(m for m in net.modules() if isinstance(m, ResidualConv))
    with torch.no_grad():
        conv.weight.mul_(3)  # in place, as load_state_dict does
    with torch.inference_mode():
        after = net(x)
        expected = swap_layers(net, "direct")(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, rtol=0, atol=1e-5)


def _kept_bytes(net: torch.nn.Module) -> int:
    """Bytes of tensors the layers keep beside their parameters and buffers (caches of transformed weights)."""
    total = 0
    for module in net.modules():
        for value in vars(module).values():
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, torch.Tensor):
                    total += item.numel() * item.element_size()
    return total


def test_fp32_winograd_inference_keeps_no_transformed_filters():
    """Kept F(4x4, 3x3) filters are 4x the weights: they put test.py's peak memory above the reference's."""
    torch.manual_seed(0)
    net = swap_layers(define_G(3, 3, 8, "resnet_6blocks"), "winograd").eval().requires_grad_(False)
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    with torch.inference_mode():
        net(torch.rand(1, 3, 32, 32))
    assert _kept_bytes(net) <= weights


def tiny_model(algorithm: str, layout: str = "off") -> CycleGANModel:
    # SGD: Adam's first step moves every weight by about lr whatever the gradient's size, so rounding noise in
    # near-zero gradients (biases before instance norm) would become lr-sized differences.
    opt = options.parse(options.build_train_parser(),
                        ["--dataroot", "x", "--ngf", "4", "--ndf", "4", "--netG", "resnet_6blocks", "--gpu_ids", "-1",
                         "--optimizer", "sgd", "--conv_algorithm", algorithm, "--channels_last", layout])
    torch.manual_seed(0)
    return registry.build(vars(opt), torch.device("cpu"), options.execution_plan(opt, torch.device("cpu"), training=True),
                          training=True)


@pytest.mark.parametrize("layout", ["off", "on"])
def test_a_training_step_with_winograd_matches_direct(monkeypatch, layout):
    calls = counting_winograd(monkeypatch)
    g = torch.Generator().manual_seed(1)
    batch = {"A": torch.rand(1, 3, 32, 32, generator=g) * 2 - 1, "B": torch.rand(1, 3, 32, 32, generator=g) * 2 - 1,
             "A_paths": [], "B_paths": []}
    models = {name: tiny_model(name, layout) for name in ("direct", "winograd")}
    start = {name: p.detach().clone() for name, p in models["direct"].G_A.named_parameters()}
    for model in models.values():
        model.set_input(batch)
        model.optimize_parameters()
    assert calls  # the Winograd model did use it
    # One step only: this tiny network at initialisation amplifies rounding differences about 1000-fold per
    # step (instance norm over 8x8 maps of near-zero activations), so later steps compare chaos, not code.
    winograd_params = dict(models["winograd"].G_A.named_parameters())
    moved = 0.0
    for name, param in models["direct"].G_A.named_parameters():
        torch.testing.assert_close(winograd_params[name], param, rtol=0, atol=1e-6)
        moved = max(moved, (param - start[name]).abs().max().item())
    assert moved > 1e-3  # the bound above is small against how far the weights moved
    for key, value in models["direct"].current_losses.items():
        assert models["winograd"].current_losses[key] == pytest.approx(value, rel=1e-4)


def test_state_dict_keys_keep_the_reference_layout():
    keys = set(define_G(3, 3, 4, "resnet_6blocks").state_dict())
    assert {"model.10.conv_block.1.weight", "model.10.conv_block.5.weight"} <= keys
    with_dropout = set(define_G(3, 3, 4, "resnet_6blocks", use_dropout=True).state_dict())
    assert "model.10.conv_block.6.weight" in with_dropout


def test_algorithm_resolution():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert conv_algorithm("auto", cpu) == "auto"
    assert conv_algorithm("auto", cpu, compile_=True) == "direct"
    assert conv_algorithm("auto", cuda) == "direct"
    assert conv_algorithm("winograd", cpu) == "winograd"
    with pytest.raises(PlanError, match="unknown 'fft'") as refused:
        conv_algorithm("fft", cpu)
    assert refused.value.setting == "conv_algorithm"


def test_training_after_a_pass_under_inference_mode_reuses_no_inference_buffers():
    # An evaluation during training (eval/during_training.py) translates under torch.inference_mode; scratch
    # buffers grown there were inference tensors, and the next training step failed writing into them.
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 4, 3, 3, generator=g, requires_grad=True)
    with torch.inference_mode():
        winograd_conv3x3_reflect(torch.randn(1, 4, 40, 40, generator=g), w.detach(), None)
    x = torch.randn(1, 4, 16, 16, generator=g, requires_grad=True)
    out = winograd_conv3x3_reflect(x, w, None)
    out.sum().backward()
    torch.testing.assert_close(out, direct(x, w, None), rtol=1e-4, atol=1e-4)
