"""bf16 inference by Winograd's F(4x4, 3x3) (accel/winograd.bf16_inference_conv3x3_reflect): the tuner's third
candidate for --amp inference, with more rounding than F(2x2, 3x3) and direct bf16."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

from cyclegan_culture.accel import layers, make_plan, plan as acceleration, winograd
from cyclegan_culture.accel.layers import BF16_INFERENCE_CANDIDATES, ResidualConv
from cyclegan_culture.accel.swap import swap_layers
from cyclegan_culture.data.images import pil_to_tensor
from cyclegan_culture.inference import translate
from cyclegan_culture.models.networks import define_G
from cyclegan_culture.pretrained import catalog
from cyclegan_culture.runs import folder
from tests.test_winograd_f2 import assert_exact_in_float64, bf16_errors, nhwc


@pytest.mark.parametrize("n, c, k, h, w", [(1, 3, 5, 2, 2), (2, 5, 7, 6, 10), (1, 4, 4, 9, 13)])
def test_equals_reflect_padded_direct_convolution_in_float64(n, c, k, h, w):
    assert_exact_in_float64(winograd.bf16_inference_conv3x3_reflect, n, c, k, h, w)  # odd sizes too


def test_bf16_error_is_above_direct_bf16s_and_within_ten_times_it():
    direct, fast = bf16_errors(winograd.bf16_inference_conv3x3_reflect)
    assert direct < fast < 10 * direct


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


# --- the transformed filters kept for fixed weights ----------------------------------------------------------------
def counting_transforms(monkeypatch) -> list[int]:
    seen: list[int] = []
    real = winograd._filter_transform
    monkeypatch.setattr(winograd, "_filter_transform", lambda w: seen.append(1) or real(w))
    return seen


def test_fixed_weights_are_transformed_once_and_again_when_changed(monkeypatch):
    cache = winograd._FilterCache(2 ** 30)
    monkeypatch.setattr(winograd, "_bf16_filter_cache", lambda: cache)
    seen = counting_transforms(monkeypatch)
    weight = torch.randn(8, 8, 3, 3).bfloat16()
    x = nhwc(torch.randn(1, 8, 8, 8).bfloat16())
    with torch.no_grad():
        first = winograd.bf16_inference_conv3x3_reflect(x, weight)
        assert torch.equal(winograd.bf16_inference_conv3x3_reflect(x, weight), first) and len(seen) == 1
        weight.mul_(2)  # changed in place: its version moves on
        assert torch.allclose(winograd.bf16_inference_conv3x3_reflect(x, weight).float(), 2 * first.float(),
                              rtol=0.02, atol=0.05)
    assert len(seen) == 2
    with torch.no_grad():  # weights that take gradients (a model being trained) are never kept
        trained = torch.randn(8, 8, 3, 3).bfloat16().requires_grad_()
        winograd.bf16_inference_conv3x3_reflect(x, trained)
        winograd.bf16_inference_conv3x3_reflect(x, trained)
    assert len(seen) == 4


def test_the_cache_keeps_within_its_budget_dropping_the_least_recently_used(monkeypatch):
    weights = [torch.randn(4, 4, 3, 3).bfloat16() for _ in range(3)]
    one = 36 * 4 * 4 * 2  # bytes of one weight's transformed filters
    cache = winograd._FilterCache(2 * one)
    seen = counting_transforms(monkeypatch)
    with torch.no_grad():
        kept = [cache.get(w).data_ptr() for w in (weights[0], weights[1], weights[0])]
        assert cache.get(weights[2]).data_ptr() == kept[1]  # pushed the second out, into its memory
        assert len(seen) == 3 and cache.bytes == 2 * one
        cache.get(weights[0])
        cache.get(weights[2])
        assert len(seen) == 3
        cache.get(weights[1])
        assert len(seen) == 4 and cache.bytes <= 2 * one
        del weights[1:]  # a freed weight's filters go with it
        import gc
        gc.collect()
        assert cache.bytes == 0  # the first had been pushed out by the second's return
        small = winograd._FilterCache(one - 1)
        assert small.get(weights[0]) is not None and small.bytes == 0  # too big for the budget: not kept


def test_test_py_runs_each_generator_over_a_turn_of_photos(tmp_path, monkeypatch):
    """So that each generator finds its transformed filters kept (the cache holds one generator's)."""
    from cyclegan_culture.cli import main
    from cyclegan_culture.engine import tester
    from tests.conftest import make_dataset, make_run

    data = make_dataset(tmp_path / "data", test_sizes=((40, 36), (31, 45), (24, 24)))
    run = make_run(tmp_path / "ckpt" / "turns", "ink", seed=0)
    (run / "latest_net_G_B.pth").write_bytes((run / "latest_net_G_A.pth").read_bytes())
    calls: list[int] = []
    real = tester.translate
    monkeypatch.setattr(tester, "translate", lambda net, x, dtype=None: calls.append(id(net)) or real(net, x, dtype))
    assert main(["test", "--dataroot", str(data), "--name", "turns", "--checkpoints_dir", str(tmp_path / "ckpt"),
                 "--results_dir", str(tmp_path / "res"), "--gpu_ids", "-1"]) == 0
    forward_a, backward_a = calls[0], calls[3]
    assert forward_a != backward_a and calls[:6] == [forward_a] * 3 + [backward_a] * 3
    assert calls[6:] == [backward_a] * 3 + [forward_a] * 3  # B -> A and back
    page = (tmp_path / "res" / "turns" / "test_latest" / "index.html").read_text(encoding="utf-8")
    assert page.index("ta0_real_A") < page.index("ta1_real_A") < page.index("ta2_real_A")
    assert (tmp_path / "res" / "turns" / "test_latest" / "images" / "ta2_rec_A.png").is_file()


def test_not_offered_where_its_workspace_would_outgrow_the_bound(monkeypatch):
    """A whole 12-megapixel photo's maps (--tile 0) would need gigabytes of tiles: there only direct and
    F(2x2, 3x3) are timed."""
    conv = ResidualConv(8, True).bfloat16().to(memory_format=torch.channels_last).requires_grad_(False)
    conv.algorithm = "auto"
    offered = []

    class Recording:
        def choose(self, key, candidates, default, names=None):
            offered.append((names, set(candidates())))
            return default

    conv.tuner = Recording()
    x = nhwc(torch.randn(1, 8, 16, 16).bfloat16())
    monkeypatch.setattr(layers, "BF16_F4_MAX_WORKSPACE_BYTES", winograd.bf16_inference_workspace_bytes(x, 8))
    with torch.no_grad():
        conv(x)
        conv(nhwc(torch.randn(1, 8, 20, 16).bfloat16()))  # one more row of tiles: over the bound
    assert offered[0][0] == BF16_INFERENCE_CANDIDATES and offered[0][1] == set(BF16_INFERENCE_CANDIDATES)
    assert offered[1][0] == ("direct", "winograd_f2") and offered[1][1] == {"direct", "winograd_f2"}
    assert winograd.bf16_inference_workspace_bytes(torch.empty(1, 128, 750, 1000, dtype=torch.bfloat16), 128) \
        > layers.BF16_F4_MAX_WORKSPACE_BYTES  # the 4000x3000 photo's residual maps
