from __future__ import annotations

import pytest
import torch

from cyclegan_culture.accel import layers
from cyclegan_culture.accel.swap import swap_layers
from cyclegan_culture.models import networks
from tests.conftest import shared_path


def read_reference(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in shared_path("reference", name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(int(x) for x in shape.strip("()").split(",") if x.strip()), dtype))
    return rows


def describe(net: torch.nn.Module) -> list[tuple[str, tuple[int, ...], str]]:
    return [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in net.state_dict().items()]


@pytest.mark.parametrize("tsv, build", [
    ("G_resnet_9blocks_ngf64_instance.tsv", lambda: networks.define_G(3, 3, 64, "resnet_9blocks", "instance")),
    ("G_resnet_9blocks_ngf64_batch.tsv", lambda: networks.define_G(3, 3, 64, "resnet_9blocks", "batch")),
    ("G_resnet_6blocks_ngf64_instance_dropout.tsv",
     lambda: networks.define_G(3, 3, 64, "resnet_6blocks", "instance", use_dropout=True)),
    ("D_basic_ndf64_instance.tsv", lambda: networks.define_D(3, 64, "basic", norm="instance")),
])
def test_state_dict_matches_reference_keys_shapes_and_order(tsv, build):
    assert describe(build()) == read_reference(tsv)


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
@pytest.mark.parametrize("size", [(32, 32), (48, 64)])
def test_generator_keeps_size_and_range(upsample, size):
    g = networks.define_G(3, 3, 8, "resnet_6blocks", "instance", upsample=upsample)
    out = g(torch.randn(2, 3, *size))
    assert out.shape == (2, 3, *size)
    assert out.abs().max() <= 1.0


def test_resize_upsampling_has_no_transposed_convolutions():
    g = networks.define_G(3, 3, 8, "resnet_6blocks", upsample="resize")
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules())
    assert sum(isinstance(m, torch.nn.ConvTranspose2d)
               for m in networks.define_G(3, 3, 8, "resnet_6blocks").modules()) == 2


@pytest.mark.parametrize("netD, n_layers, expected", [("basic", 3, (1, 1, 6, 6)), ("n_layers", 2, (1, 1, 14, 14)),
                                                      ("pixel", 3, (1, 1, 64, 64))])
def test_discriminator_patch_outputs(netD, n_layers, expected):
    d = networks.define_D(3, 8, netD, n_layers_D=n_layers)
    assert d(torch.randn(1, 3, 64, 64)).shape == expected


@pytest.mark.parametrize("init_type", ["normal", "xavier", "kaiming", "orthogonal"])
def test_init_types_set_conv_weights_and_zero_biases(init_type):
    torch.manual_seed(0)
    g = networks.define_G(3, 3, 8, "resnet_6blocks", init_type=init_type, init_gain=0.02)
    conv = g.model[1]
    assert conv.bias.abs().max() == 0
    if init_type == "normal":
        assert abs(conv.weight.std().item() - 0.02) < 0.005


def test_dropout_only_when_asked():
    assert not any(isinstance(m, torch.nn.Dropout) for m in networks.define_G(3, 3, 8, "resnet_6blocks").modules())
    g = networks.define_G(3, 3, 8, "resnet_6blocks", use_dropout=True)
    assert sum(isinstance(m, torch.nn.Dropout) for m in g.modules()) == 6


def test_load_accepts_dataparallel_prefix_and_stale_instance_norm_stats():
    src = networks.define_G(3, 3, 8, "resnet_6blocks")
    state = {"module." + k: v for k, v in src.state_dict().items()}
    state["module.model.2.running_mean"] = torch.zeros(8)  # written by PyTorch < 0.4 for InstanceNorm
    dst = networks.define_G(3, 3, 8, "resnet_6blocks")
    networks.load_network_state(dst, state)
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(src(x), dst(x))


def test_load_rejects_wrong_architecture_with_a_message():
    src = networks.define_G(3, 3, 8, "resnet_6blocks").state_dict()
    with pytest.raises(ValueError, match="missing|shape"):
        networks.load_network_state(networks.define_G(3, 3, 16, "resnet_6blocks"), src)
    with pytest.raises(ValueError, match="unexpected"):
        networks.load_network_state(networks.define_G(3, 3, 8, "resnet_6blocks"),
                                    networks.define_G(3, 3, 8, "resnet_9blocks").state_dict())


def test_generator_parts_split_encoder_blocks_decoder():
    g = networks.define_G(3, 3, 8, "resnet_6blocks")
    parts = g.parts()
    assert len(parts["blocks"]) == 6
    assert len(parts["encoder"]) + 6 + len(parts["decoder"]) == len(g.model)


def test_reflect_pad_keeps_bf16_maps_in_bf16_under_cpu_autocast():
    image = torch.randn(1, 2, 9, 7).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        padded = layers.reflect_pad(image, 3)
        full = layers.reflect_pad(image.float(), 1)
    assert padded.dtype == torch.bfloat16  # autocast alone would give fp32 here
    assert torch.equal(padded.float(), torch.nn.functional.pad(image.float(), (3,) * 4, mode="reflect"))
    assert full.dtype == torch.float32  # fp32 maps keep autocast's way
    assert layers.reflect_pad(image, 1).dtype == torch.bfloat16  # outside autocast: plain F.pad


# paddings of 1 (residual blocks) and 3 (the generator's ends), square and not, down to the smallest reflectable
@pytest.mark.parametrize("padding, size", [(1, (6, 6)), (1, (2, 5)), (3, (9, 14)), (3, (4, 4)), (2, (3, 8))])
def test_reflect_pad_backward_equals_autograd_of_reflection_padding(padding, size):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *size, dtype=torch.float64, generator=g, requires_grad=True)
    padded = torch.nn.functional.pad(x, (padding,) * 4, mode="reflect")
    grad = torch.randn(padded.shape, dtype=torch.float64, generator=g)
    expected, = torch.autograd.grad(padded, x, grad)
    torch.testing.assert_close(layers.reflect_pad_backward(grad, padding), expected, rtol=1e-12, atol=1e-12)
    image = x.detach().bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the path that uses it
        ours = layers.reflect_pad(image, padding)
    got, = torch.autograd.grad(ours, image, grad.bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=0.02 * expected.abs().max().item())


def test_generator_under_autocast_is_unchanged_by_bf16_padding(monkeypatch):
    torch.manual_seed(0)
    net = swap_layers(networks.define_G(3, 3, 4, "resnet_6blocks"))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    results = []
    for bf16_padding in (False, True):  # autocast's fp32 padding everywhere, then bf16 padding everywhere
        monkeypatch.setattr(layers, "_cpu_autocast_enabled", lambda enabled=bf16_padding: enabled)
        net.zero_grad(set_to_none=True)
        image = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(image)
        out.float().square().sum().backward()
        results.append((out.detach().float(), image.grad.clone(), net.model[1].weight.grad.clone()))
    (out_fp32_pad, gx_fp32_pad, gw_fp32_pad), (out_bf16_pad, gx_bf16_pad, gw_bf16_pad) = results
    assert torch.equal(out_fp32_pad, out_bf16_pad)  # padding is a copy: same forward values
    # gradients: reflected borders are summed in bf16 instead of fp32 (one rounding apart)
    assert torch.allclose(gx_fp32_pad, gx_bf16_pad, rtol=0, atol=0.02 * gx_fp32_pad.abs().max().item())
    assert torch.allclose(gw_fp32_pad, gw_bf16_pad, rtol=0, atol=0.02 * gw_fp32_pad.abs().max().item())
