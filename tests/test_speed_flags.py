"""The speed flags: each runs, gives finite losses and correct shapes; layout changes do not change results."""

from __future__ import annotations

import copy

import pytest
import torch

from cyclegan_culture import options
from cyclegan_culture.errors import UserError
from cyclegan_culture.inference import translate, translate_tiled, with_shared_stats
from cyclegan_culture.accel import plan as acceleration
from cyclegan_culture.accel.swap import swap_layers
from cyclegan_culture.models import registry
from cyclegan_culture.models.base import make_optimizer
from cyclegan_culture.models.cycle_gan import CycleGANModel
from cyclegan_culture.models.networks import define_G


def tiny_model(*flags: str, seed: int = 0, device: str = "cpu") -> CycleGANModel:
    opt = options.parse(options.build_train_parser(),
                        ["--dataroot", "x", "--ngf", "4", "--ndf", "4", "--netG", "resnet_6blocks",
                         "--gpu_ids", "0" if device == "cuda" else "-1", "--channels_last", "off", *flags])
    torch.manual_seed(seed)
    return registry.build(vars(opt), torch.device(device), options.execution_plan(opt, torch.device(device), training=True),
                          training=True)


def batch(n: int = 1, size: int = 32) -> dict:
    g = torch.Generator().manual_seed(1)
    return {"A": torch.rand(n, 3, size, size, generator=g) * 2 - 1,
            "B": torch.rand(n, 3, size, size, generator=g) * 2 - 1, "A_paths": [], "B_paths": []}


@pytest.mark.parametrize("flags", [[], ["--amp"], ["--channels_last"], ["--amp", "--channels_last"],
                                   ["--amp", "--gan_mode", "wgangp"], ["--amp", "--norm", "batch", "--batch_size", "2"]])
def test_flags_train_with_finite_losses_and_shapes(flags):
    model = tiny_model(*flags)
    n = 2 if "--batch_size" in flags else 1
    for _ in range(2):
        model.set_input(batch(n))
        model.optimize_parameters()
    assert all(torch.isfinite(torch.tensor(v)) for v in model.current_losses.values())
    visuals = model.current_visuals()
    assert set(visuals) == {"real_A", "fake_B", "rec_A", "idt_B", "real_B", "fake_A", "rec_B", "idt_A"}
    assert all(v.shape == (n, 3, 32, 32) for v in visuals.values())
    assert all(p.dtype == torch.float32 for p in model.G_A.parameters())  # master weights stay fp32


def test_channels_last_with_broken_instance_norm_is_refused_with_the_flag_named(monkeypatch):
    monkeypatch.setattr(acceleration, "instance_norm_nhwc_is_correct", lambda device_type: False)
    with pytest.raises(UserError, match="--channels_last: .* wrong instance-norm gradients"):
        tiny_model("--channels_last")
    assert tiny_model("--channels_last", "off").memory_format == torch.contiguous_format


def test_our_instance_norm_passes_the_layout_probe_on_cpu_without_moving_the_seeded_stream():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert acceleration.instance_norm_nhwc_is_correct.__wrapped__("cpu")
    assert torch.equal(torch.rand(3), expected)  # same seed, same initial weights with --channels_last on


def test_amp_uses_bfloat16_on_cpu():
    model = tiny_model("--amp")
    model.set_input(batch())
    with model._autocast():
        model.forward()
    assert model.fake_B.dtype == torch.bfloat16


def test_channels_last_matches_contiguous_within_1e_5():
    # SGD: Adam's first steps are about lr * sign(grad), which would amplify rounding noise in near-zero gradients
    a = tiny_model("--optimizer", "sgd", seed=3)
    b = tiny_model("--optimizer", "sgd", "--channels_last", seed=3)
    for model in (a, b):  # one full step: forward, both backward passes, both updates
        model.set_input(batch())
        model.optimize_parameters()
    assert b.G_A.model[1].weight.is_contiguous(memory_format=torch.channels_last)
    for name in ("G_A", "G_B", "D_A", "D_B"):
        for (k, pa), pb in zip(a.nets[name].state_dict().items(), b.nets[name].state_dict().values()):
            assert torch.allclose(pa, pb, atol=1e-5, rtol=0), f"{name}.{k}"
    for label in ("fake_B", "rec_A"):
        assert torch.allclose(getattr(a, label), getattr(b, label), atol=1e-5, rtol=0)
    for name, value in a.current_losses.items():
        assert abs(value - b.current_losses[name]) < 1e-5, name


def test_batched_identity_pass_equals_separate_calls():
    model = tiny_model("--amp")
    model.set_input(batch())
    with torch.no_grad(), model._autocast():
        model.forward()
        separate = model.G_A(model.real_B), model.G_B(model.real_A), model.G_A(model.real_A)
    # bf16 arithmetic: equal up to bf16 rounding (8 bits of mantissa)
    assert torch.allclose(model.idt_A.float(), separate[0].float(), atol=2e-2)
    assert torch.allclose(model.idt_B.float(), separate[1].float(), atol=2e-2)
    assert torch.allclose(model.fake_B.float(), separate[2].float(), atol=2e-2)


def test_translate_with_amp_returns_fp32_of_the_input_size():
    g = define_G(3, 3, 4, "resnet_6blocks").eval()
    x = torch.rand(1, 3, 37, 51) * 2 - 1
    with torch.inference_mode():
        full, low = translate(g, x), translate(g, x, torch.bfloat16)
    assert full.shape == low.shape == x.shape and low.dtype == torch.float32
    assert (full - low).abs().max() < 0.1


def inference_generator() -> torch.nn.Module:
    torch.manual_seed(0)
    return swap_layers(define_G(3, 3, 8, "resnet_6blocks"), "auto").eval().requires_grad_(False)


def test_bf16_weights_for_inference_give_the_same_outputs_as_autocast_casting_them():
    fp32 = inference_generator()
    stored = acceleration.inference_weights(copy.deepcopy(fp32), torch.bfloat16, "off")
    assert {p.dtype for p in stored.parameters()} == {torch.bfloat16}
    assert stored.model[1].weight.is_contiguous()  # 'off' keeps NCHW
    assert acceleration.inference_weights(fp32, None) is fp32 and fp32.model[1].weight.dtype == torch.float32
    x = torch.rand(1, 3, 76, 92) * 2 - 1
    shared = [with_shared_stats(net) for net in (fp32, stored)]  # tiles with the whole image's statistics
    with torch.inference_mode():
        assert torch.equal(translate(fp32, x, torch.bfloat16), translate(stored, x, torch.bfloat16))
        tiled = [translate_tiled(net, x, 48, 8, torch.bfloat16, norms) for net, norms in shared]
    assert torch.equal(*tiled)
    with torch.inference_mode():  # weights made here are inference tensors: no version counter to cache by
        made_here = acceleration.inference_weights(copy.deepcopy(fp32), torch.bfloat16, "off")
        assert torch.equal(translate(made_here, x, torch.bfloat16), translate(stored, x, torch.bfloat16))


@pytest.mark.parametrize("n", [1, 3])
def test_bf16_inference_in_channels_last_is_as_close_to_fp32_as_nchw(n):
    fp32 = inference_generator()
    nhwc = acceleration.inference_weights(copy.deepcopy(fp32), torch.bfloat16)
    assert nhwc.model[1].weight.is_contiguous(memory_format=torch.channels_last)
    nchw = acceleration.inference_weights(copy.deepcopy(fp32), torch.bfloat16, "off")
    x = torch.rand(n, 3, 76, 92) * 2 - 1
    with torch.inference_mode():
        exact = translate(fp32, x)
        errors = [(translate(net, x, torch.bfloat16) - exact).abs() for net in (nchw, nhwc)]
    assert errors[1].shape == x.shape
    # measured: mean 0.0077 both ways on the default generator; the largest values 0.068 and 0.084
    assert errors[1].mean() < 1.5 * errors[0].mean() and errors[1].max() < 2 * errors[0].max() + 0.02


@pytest.mark.parametrize("n", [1, 3])
def test_instance_norm_of_channels_last_maps_goes_through_batch_norm_with_right_gradients(n):
    norm = swap_layers(define_G(3, 3, 4, "resnet_6blocks")).model[2]
    gen = torch.Generator().manual_seed(n)
    x = (torch.randn(n, 4, 9, 7, generator=gen, dtype=torch.float64) * 3 + 1)
    grad = torch.randn(n, 4, 9, 7, generator=gen, dtype=torch.float64)
    nchw = x.clone().requires_grad_()
    expected = torch.nn.functional.instance_norm(nchw)
    expected.backward(grad)
    nhwc = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    fast = norm(nhwc)
    assert fast.is_contiguous(memory_format=torch.channels_last)  # PyTorch's instance norm returns NCHW
    fast.backward(grad.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(fast, expected, atol=1e-12)
    # PyTorch's own channels_last backward for n = 1 is off by the gradient's size (torch 2.14, CPU)
    assert torch.allclose(nhwc.grad, nchw.grad, atol=1e-12)
    # and twice differentiable, as a gradient penalty through a discriminator needs
    first = [torch.autograd.grad(f(v), v, grad, create_graph=True)[0]
             for f, v in ((norm, nhwc), (torch.nn.functional.instance_norm, nchw))]
    second = [torch.autograd.grad((g * g).sum(), v)[0] for g, v in zip(first, (nhwc, nchw))]
    assert torch.allclose(second[0], second[1], atol=1e-10)


class CountingGenerator(torch.nn.Module):
    """Records the batch size of each call."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net, self.batches = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return self.net(x)


@pytest.mark.parametrize("identity", [0.5, 0.0])
def test_each_generator_takes_its_images_as_one_batch_with_the_same_results(identity):
    model = tiny_model("--lambda_identity", str(identity))
    model.run = {name: CountingGenerator(net) if name.startswith("G") else net for name, net in model.run.items()}
    model.set_input(batch(n=2))
    model.forward()
    # G_A: real_A (+ real_B), G_B: real_B (+ real_A) + fake_B, then G_A: fake_A
    assert model.run["G_A"].batches == ([4, 2] if identity else [2, 2])
    assert model.run["G_B"].batches == ([6] if identity else [4])
    G_A, G_B = model.G_A, model.G_B
    with torch.no_grad():
        expected = {"fake_B": G_A(model.real_A), "fake_A": G_B(model.real_B)}
        expected.update(rec_A=G_B(expected["fake_B"]), rec_B=G_A(expected["fake_A"]))
        if identity:
            expected.update(idt_A=G_A(model.real_B), idt_B=G_B(model.real_A))
    for name, value in expected.items():
        torch.testing.assert_close(getattr(model, name), value, rtol=0, atol=1e-5)


def test_batch_norm_and_unequal_image_sizes_keep_separate_generator_calls():
    model = tiny_model("--norm", "batch")
    model.run = {name: CountingGenerator(net) if name.startswith("G") else net for name, net in model.run.items()}
    model.set_input(batch())
    model.forward()
    assert model.run["G_A"].batches == [1, 1, 1] and model.run["G_B"].batches == [1, 1, 1]
    model = tiny_model()
    model.run = {name: CountingGenerator(net) if name.startswith("G") else net for name, net in model.run.items()}
    model.set_input({**batch(), "B": torch.rand(1, 3, 24, 32) * 2 - 1})
    model.forward()
    assert model.run["G_A"].batches == [1, 1, 1] and model.idt_A.shape == (1, 3, 24, 32)


def test_auto_layout_is_nhwc_for_cpu_training_where_measured_faster():
    cpu = torch.device("cpu")
    assert acceleration.memory_format("auto", cpu, training=True) == torch.channels_last
    assert acceleration.memory_format("auto", cpu) == torch.contiguous_format  # not training
    assert acceleration.memory_format("off", cpu, training=True) == torch.contiguous_format
    assert tiny_model("--channels_last", "auto", "--amp").memory_format == torch.channels_last
    assert tiny_model("--channels_last", "auto", "--crop_size", "256").memory_format == torch.channels_last


def test_auto_layout_is_nchw_on_cuda_and_on_is_refused_where_nhwc_instance_norm_is_wrong(monkeypatch):
    cuda = torch.device("cuda")  # only its type is read: no GPU needed
    monkeypatch.setattr(acceleration, "instance_norm_nhwc_is_correct", lambda device_type: True)
    assert acceleration.memory_format("auto", cuda, training=True) == torch.contiguous_format
    assert acceleration.memory_format("on", cuda) == torch.channels_last
    monkeypatch.setattr(acceleration, "instance_norm_nhwc_is_correct", lambda device_type: False)
    assert acceleration.memory_format("on", cuda, norm="batch") == torch.channels_last
    with pytest.raises(acceleration.PlanError, match="wrong instance-norm"):
        acceleration.memory_format("on", cuda)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_fused_cpu_update_equals_foreach_when_gradient_or_state_layout_differs(name):
    """The fused CPU kernels (the default there) must update like foreach kernels, also when a gradient's or a
    moment's layout differs from its parameter's, which torch 2.14's fused kernels get wrong on their own."""
    opt = options.parse(options.build_train_parser(), ["--dataroot", "x", "--optimizer", name, "--lr", "0.1"])
    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        weight = torch.nn.Parameter(torch.randn(8, 16, 3, 3).contiguous(memory_format=torch.channels_last))
        optimizer = make_optimizer([weight], opt, torch.device("cpu"))
        assert optimizer.param_groups[0]["fused"]
        if not fused:  # the reference: the same optimizer with foreach kernels
            optimizer.param_groups[0].update(fused=False, foreach=True)
        for step in range(3):
            weight.grad = torch.randn(8, 16, 3, 3)  # contiguous: not the parameter's layout
            optimizer.step()
            if step == 0:  # moments as resumed from a run in the other layout
                state = optimizer.state[weight]
                for key in [k for k, v in state.items() if torch.is_tensor(v) and v.dim() == 4]:
                    state[key] = state[key].contiguous()
        results.append(weight.detach().clone())
    assert torch.allclose(results[0], results[1], atol=1e-6)


def test_resumed_optimizers_use_this_machines_kernels():
    model = tiny_model()
    state = model.state_dict()
    for saved in state["optimizers"]:  # as saved on a GPU, or by a version that used foreach kernels
        for group in saved["param_groups"]:
            group.update(fused=None, foreach=True)
    resumed = tiny_model()
    resumed.load_state_dict(state)
    assert all(g["fused"] and not g["foreach"] for o in resumed.optimizers for g in o.param_groups)
    resumed.set_input(batch())
    resumed.optimize_parameters()
    assert all(torch.isfinite(torch.tensor(v)) for v in resumed.current_losses.values())
