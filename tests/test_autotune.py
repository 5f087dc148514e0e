"""The per-machine execution plan (issue 21): choices timed once per shape, kept in a cache file keyed by the
machine, read back by later runs, ignored when damaged or foreign; numerics within the usual tolerances."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from cyclegan_culture.accel import autotune, make_plan
from cyclegan_culture.accel.layers import OutputConv, ResidualConv
from cyclegan_culture.models import networks


def test_the_faster_candidate_wins_and_is_kept_for_later_runs(tmp_path, monkeypatch):
    tuner = autotune.Autotuner("auto", tmp_path)
    choice = tuner.choose("k", {"slow": lambda: time.sleep(0.01), "fast": lambda: None}, default="slow")
    assert choice == "fast" and tuner.path.is_file()
    saved = json.loads(tuner.path.read_text())
    assert saved["choices"] == {"k": "fast"} and saved["machine"] == autotune.machine()
    # a later run reads the choice without timing anything
    monkeypatch.setattr(autotune, "_best_time", lambda run, *_: pytest.fail("timed again"))
    assert autotune.Autotuner("auto", tmp_path).choose("k", {"slow": int, "fast": int}, default="slow") == "fast"
    # off keeps the default; on times again
    assert autotune.Autotuner("off", tmp_path).choose("k", {"slow": int, "fast": int}, default="slow") == "slow"
    monkeypatch.undo()
    again = autotune.Autotuner("on", tmp_path)
    assert again.choices == {} and again.choose("k", {"slow": lambda: time.sleep(0.01), "fast": int}, "slow") == "fast"


MEASURED_OTHER_CORES = autotune.CpuLoadMeter.other_cores  # before conftest's quiet_machine replaces it


def test_a_choice_timed_on_a_busy_machine_holds_for_the_run_and_is_timed_again(tmp_path, monkeypatch, capsys):
    candidates = {"slow": lambda: time.sleep(0.01), "fast": lambda: None}
    monkeypatch.setattr(autotune.CpuLoadMeter, "other_cores", lambda self: 1.5)
    busy = autotune.Autotuner("auto", tmp_path)
    assert busy.choose("k", candidates, default="slow") == "fast"
    assert busy.choose("k", candidates, default="slow") == "fast"  # this run keeps it without timing again
    assert "other programs kept 1.5" in capsys.readouterr().out
    assert not busy.path.is_file()
    monkeypatch.setattr(autotune.CpuLoadMeter, "other_cores", lambda self: 0.1)
    busy.choose("later", candidates, default="slow")  # timed quietly: kept, and the busy key still left out
    assert json.loads(busy.path.read_text())["choices"] == {"later": "fast"}
    quiet = autotune.Autotuner("auto", tmp_path)
    assert "k" not in quiet.choices
    assert quiet.choose("k", candidates, default="slow") == "fast"
    assert json.loads(quiet.path.read_text())["choices"]["k"] == "fast"


def test_the_load_meter_sees_another_program_keep_a_core_busy():
    if autotune.machine_busy_seconds() is None:
        pytest.skip("no /proc/stat on this system")
    meter = autotune.CpuLoadMeter().start()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)  # this process idles; the spinner keeps one core busy
        others = MEASURED_OTHER_CORES(meter)
    finally:
        spinner.kill()
        spinner.wait()
    assert others is not None and others > 0.6


def test_a_damaged_or_foreign_cache_is_ignored_with_a_note(tmp_path, capsys):
    path = autotune.Autotuner("off", tmp_path).path
    path.write_text("{not json")
    tuner = autotune.Autotuner("auto", tmp_path)
    assert tuner.choices == {} and "ignored the execution plan cache" in capsys.readouterr().out
    path.write_text(json.dumps({"machine": {**autotune.machine(), "cpu": "another"}, "choices": {"k": "x"}}))
    assert autotune.Autotuner("auto", tmp_path).choices == {}
    assert "another machine" in capsys.readouterr().out


@pytest.mark.parametrize("training", [False, True])
def test_a_tuned_generator_computes_what_the_reference_layers_do(tmp_path, monkeypatch, training):
    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path))
    autotune.Autotuner("auto", tmp_path)  # the folder the plan's shared tuner will use
    torch.manual_seed(0)
    reference = networks.define_G(3, 3, 8, "resnet_6blocks").train(training)
    tuned_net = networks.define_G(3, 3, 8, "resnet_6blocks").train(training)
    tuned_net.load_state_dict(reference.state_dict())
    tuner = autotune.Autotuner("on", tmp_path)
    plan = make_plan(torch.device("cpu"), conv_algorithm_="auto", training=training, autotune="off")
    plan = type(plan)(**{**plan.__dict__, "tuner": tuner})
    tuned_net = plan.apply(tuned_net)
    x = torch.rand(1, 3, 40, 48) * 2 - 1
    with torch.set_grad_enabled(training):
        expected, got = reference(x), tuned_net(x)
    assert torch.allclose(expected, got, atol=1e-4)
    kinds = {key.split()[0] for key in tuner.choices}
    assert {"residual_conv", "output_conv"} <= kinds
    assert all(key.endswith("train" if training else "infer") for key in tuner.choices)
    for module in tuned_net.modules():
        if isinstance(module, (ResidualConv, OutputConv)):
            assert module.weight.grad is None  # timing ran on copies, never on the layer's own gradients


def test_the_flag_reaches_the_plan_and_off_means_no_tuner():
    from cyclegan_culture import options

    parser = options.build_train_parser()
    on = options.execution_plan(options.parse(parser, ["--dataroot", "x", "--autotune", "auto"]),
                                torch.device("cpu"), True)
    off = options.execution_plan(options.parse(parser, ["--dataroot", "x", "--autotune", "off"]),
                                 torch.device("cpu"), True)
    direct = options.execution_plan(options.parse(parser, ["--dataroot", "x", "--conv_algorithm", "direct"]),
                                    torch.device("cpu"), True)
    assert on.tuner is not None and off.tuner is None and direct.tuner is None


class _LayoutAnswer:
    """A tuner that answers the generator-layout question with ``answer`` (the layers' own keys: their default)."""

    def __init__(self, answer: str):
        self.answer, self.asked = answer, []

    def choose(self, key, candidates, default, names=None):
        if key.startswith("generator_layout"):
            self.asked.append(key)
            return self.answer
        return default


@pytest.mark.parametrize("answer", ["nhwc", "nchw"])
def test_fp32_inference_runs_in_the_layout_the_tuner_times_faster(answer):
    from cyclegan_culture.accel import inference_weights
    from cyclegan_culture.inference import translate
    torch.manual_seed(0)
    reference = networks.define_G(3, 3, 8, "resnet_6blocks").eval().requires_grad_(False)
    plan = make_plan(torch.device("cpu"), autotune="off")
    plan = type(plan)(**{**plan.__dict__, "conv_algorithm": "auto", "tuner": _LayoutAnswer(answer)})
    net = inference_weights(plan.apply(networks.define_G(3, 3, 8, "resnet_6blocks")).eval().requires_grad_(False),
                            None)
    net.load_state_dict(reference.state_dict())
    weight = net.model[1].weight
    assert plan.tuner.asked and weight.is_contiguous(memory_format=torch.channels_last) == (answer == "nhwc")
    x = torch.rand(1, 3, 36, 44) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(translate(net, x), reference(x), rtol=0, atol=1e-4)


def test_fp32_inference_layout_is_timed_once_and_not_without_a_tuner(tmp_path):
    from cyclegan_culture.accel import inference_weights
    tuner = autotune.Autotuner("on", tmp_path)
    plan = make_plan(torch.device("cpu"), autotune="off")
    tuned = type(plan)(**{**plan.__dict__, "conv_algorithm": "auto", "tuner": tuner})
    inference_weights(tuned.apply(networks.define_G(3, 3, 4, "resnet_6blocks")).eval(), None)
    (key,) = [k for k in tuner.choices if k.startswith("generator_layout")]
    assert set(tuner.timings[key]) == {"nchw", "nhwc"}
    tuner.timings[key] = {"marker": 0.0}  # a second network of the same kind: the kept choice, no new timing
    inference_weights(tuned.apply(networks.define_G(3, 3, 4, "resnet_6blocks")).eval(), None)
    assert tuner.timings[key] == {"marker": 0.0}
    untuned = plan.apply(networks.define_G(3, 3, 4, "resnet_6blocks")).eval()  # --autotune off
    assert inference_weights(untuned, None) is untuned and untuned.model[1].weight.is_contiguous()


def _step_timing_setup(tmp_path, monkeypatch, fastest: str):
    """A fresh shared tuner in ``tmp_path`` whose step timings make ``fastest`` ('fast_layers',
    'fast_layers_nchw', 'reference_layers' or 'reference_layers_separate_calls') win; returns the list of plans
    the timing built models with."""
    from cyclegan_culture.accel import plan as plan_mod
    from cyclegan_culture.models import registry

    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path))
    plan_mod.shared_tuner.cache_clear()
    monkeypatch.setattr(plan_mod.shared_tuner, "__wrapped__", plan_mod.shared_tuner.__wrapped__)  # restored after
    built, real_build = [], registry.build

    def build(values, device, plan, training):
        built.append(plan)
        return real_build(values, device, plan, training)

    def name_of(plan) -> str:
        if not plan.fast_layers:
            return "reference_layers" if plan.batch_calls else "reference_layers_separate_calls"
        return "fast_layers" if plan.memory_format == torch.channels_last else "fast_layers_nchw"

    def fake_time(run, repeats=3):
        run()  # the real step: it must run, and build its candidate's model
        return 0.001 if name_of(built[-1]) == fastest else 0.002
    monkeypatch.setattr(registry, "build", build)
    monkeypatch.setattr(autotune, "_best_time", fake_time)
    return built


@pytest.mark.parametrize("fastest", ["reference_layers", "fast_layers_nchw", "reference_layers_separate_calls"])
def test_training_runs_the_plan_whose_whole_step_this_machine_times_fastest(tmp_path, monkeypatch, fastest):
    from cyclegan_culture import options
    from cyclegan_culture.accel import plan as plan_mod
    from cyclegan_culture.engine.trainer import Trainer
    from tests.conftest import TINY, make_dataset

    built = _step_timing_setup(tmp_path / "cache", monkeypatch, fastest)
    parser = options.build_train_parser()
    argv = ["--dataroot", str(make_dataset(tmp_path / "data")), "--name", "run", "--checkpoints_dir",
            str(tmp_path / "ckpt"), *TINY, "--n_epochs", "1", "--n_epochs_decay", "0", "--autotune", "on"]
    trainer = Trainer(options.parse(parser, argv), parser)
    assert len(built) == 5  # four candidates timed, each on its own model, then the run's
    layers = {type(m) for m in trainer.model.G_A.modules()}
    assert (ResidualConv in layers) == fastest.startswith("fast_layers")
    assert trainer.model.memory_format == torch.contiguous_format
    # the images per network call: a step's batched (up to three for a generator, real and fake for a
    # discriminator), or one per call as in the reference's step
    calls = []
    for name in ("G_A", "G_B", "D_A", "D_B"):
        trainer.model.nets[name].register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    trainer.run()
    tuner = plan_mod.shared_tuner("on")
    (key,) = [k for k in tuner.choices if k.startswith("training_step")]
    assert tuner.choices[key] == fastest and set(tuner.timings[key]) == {
        "fast_layers", "fast_layers_nchw", "reference_layers", "reference_layers_separate_calls"}
    assert calls and (max(calls) == 1) == (fastest == "reference_layers_separate_calls")
    plan_mod.shared_tuner.cache_clear()


def test_the_step_choice_is_kept_and_not_made_when_off_or_forced(tmp_path, monkeypatch):
    from cyclegan_culture import options
    from cyclegan_culture.accel import plan as plan_mod
    from cyclegan_culture.engine.training_plan import candidate_plans, training_plan
    from tests.conftest import TINY

    built = _step_timing_setup(tmp_path, monkeypatch, "reference_layers")
    parser = options.build_train_parser()
    opt = options.parse(parser, ["--dataroot", "x", *TINY, "--autotune", "auto"])
    state = torch.random.get_rng_state()
    assert not training_plan(opt, torch.device("cpu")).fast_layers and len(built) == 4
    assert torch.equal(torch.random.get_rng_state(), state)  # timing leaves the run's random stream alone
    plan_mod.shared_tuner.cache_clear()  # a later run: reads the kept choice, times nothing
    monkeypatch.setattr(autotune, "_best_time", lambda run, *_: pytest.fail("timed again"))
    assert not training_plan(opt, torch.device("cpu")).fast_layers
    off = options.parse(parser, ["--dataroot", "x", *TINY, "--autotune", "off"])
    assert training_plan(off, torch.device("cpu")).fast_layers  # off: the flags' plan, untimed
    assert training_plan(opt, torch.device("cpu"), distributed=True).fast_layers  # processes must agree
    forced = options.execution_plan(options.parse(parser, ["--dataroot", "x", *TINY, "--channels_last", "on"]),
                                    torch.device("cpu"), True)
    assert list(candidate_plans(forced, "on")) == ["fast_layers"]  # PyTorch's NHWC instance norm is wrong
    plan_mod.shared_tuner.cache_clear()


def test_a_resumed_run_keeps_the_plan_it_was_timed_with_on_a_busy_machine(tmp_path, monkeypatch, capsys):
    """A plan timed while the machine was busy holds for that run only; its resume must not time afresh and
    train on with other layers (other rounding), or the resumed run is no longer the run it continues."""
    from cyclegan_culture import options
    from cyclegan_culture.accel import plan as plan_mod
    from cyclegan_culture.engine.trainer import Trainer
    from tests.conftest import TINY, make_dataset

    def trainer(*extra: str) -> Trainer:
        parser = options.build_train_parser()
        argv = ["--dataroot", str(data), "--name", "run", "--checkpoints_dir", str(tmp_path / "ckpt"), *TINY,
                "--n_epochs", "1", "--n_epochs_decay", "0", "--autotune", "auto", *extra]
        return Trainer(options.parse(parser, argv), parser)

    data = make_dataset(tmp_path / "data")
    _step_timing_setup(tmp_path / "cache", monkeypatch, "reference_layers")
    monkeypatch.setattr(autotune.CpuLoadMeter, "other_cores", lambda self: 1.5)  # busy: nothing kept
    first = trainer()
    assert ResidualConv not in {type(m) for m in first.model.G_A.modules()}
    first.run()
    # a new process on the machine, quiet now, where the fast layers would win
    _step_timing_setup(tmp_path / "cache", monkeypatch, "fast_layers")
    monkeypatch.setattr(autotune.CpuLoadMeter, "other_cores", lambda self: 0.0)
    monkeypatch.setattr(autotune, "_best_time", lambda run, *_: pytest.fail("a resumed run timed its step again"))
    resumed = trainer("--continue_train", "--n_epochs", "2")
    assert ResidualConv not in {type(m) for m in resumed.model.G_A.modules()}
    assert "Resuming with the run's own execution plan: the reference layers" in capsys.readouterr().out
    plan_mod.shared_tuner.cache_clear()
    cache = autotune.Autotuner("auto", tmp_path / "cache").path
    kept = json.loads(cache.read_text())["choices"] if cache.is_file() else {}
    assert not any(key.startswith("training_step") for key in kept)  # the busy choice is still this run's alone


@pytest.mark.parametrize("model_name", ["cycle_gan", "cut"])
def test_one_call_per_image_computes_what_the_batched_step_does(model_name):
    """The step plan's 'separate calls' candidate changes only how the images meet the networks: the same losses
    over two steps, and the same translations after them."""
    from dataclasses import replace

    from cyclegan_culture import options
    from cyclegan_culture.models import registry
    from tests.conftest import TINY

    opt = options.parse(options.build_train_parser(),
                        ["--dataroot", "x", *TINY, "--model", model_name, "--autotune", "off"])
    batched = options.execution_plan(opt, torch.device("cpu"), True)
    gen = torch.Generator().manual_seed(3)
    batch = {"A": torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1, "B": torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1,
             "A_paths": ["a"], "B_paths": ["b"]}
    results = []
    for plan in (batched, replace(batched, batch_calls=False)):
        torch.manual_seed(0)
        model = registry.build(vars(opt), torch.device("cpu"), plan, training=True)
        for _ in range(2):
            model.set_input(batch)
            model.optimize_parameters()
        with torch.no_grad():  # compared by output: the biases before instance norm have no true gradient, so
            translated = model.nets["G_A"](batch["A"])  # Adam moves them by rounding noise alone
        results.append((model.current_losses, translated))
    (losses_a, translated_a), (losses_b, translated_b) = results
    assert losses_a.keys() == losses_b.keys()
    for name in losses_a:
        assert losses_a[name] == pytest.approx(losses_b[name], rel=1e-4, abs=1e-5), name
    assert torch.allclose(translated_a, translated_b, atol=1e-4)
