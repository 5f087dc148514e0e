"""Training runs end to end at a tiny size, and resuming is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cyclegan_culture import options
from cyclegan_culture.runs import checkpoint
from cyclegan_culture.engine.callbacks import EvaluationCallback
from cyclegan_culture.engine.trainer import Trainer
from cyclegan_culture.eval.during_training import TrainingEvaluator
from cyclegan_culture.errors import UserError
from tests.conftest import TINY


def make_trainer(dataroot: Path, ckpt: Path, *extra: str, hooks=None) -> Trainer:
    parser = options.build_train_parser()
    argv = ["--dataroot", str(dataroot), "--name", "run", "--checkpoints_dir", str(ckpt), *TINY,
            "--n_epochs", "2", "--n_epochs_decay", "1", "--save_latest_freq", "3", "--pool_size", "2",
            "--use_dropout", "--print_freq", "2", "--display_freq", "2", "--seed", "7", *extra]
    return Trainer(options.parse(parser, argv), parser, hooks=hooks)


def weights(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {n: torch.load(run_dir / f"latest_net_{n}.pth", weights_only=True) for n in ("G_A", "G_B", "D_A", "D_B")}


def assert_identical(a: dict, b: dict) -> None:
    for net in a:
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key} differs"


def stop_at(total_iters: int):
    def hook(trainer: Trainer) -> None:
        if trainer.total_iters == total_iters:
            trainer.request_stop()
    return hook


def crash_at(total_iters: int):
    def hook(trainer: Trainer) -> None:
        if trainer.total_iters == total_iters:
            raise RuntimeError("simulated crash")
    return hook


@pytest.fixture
def reference_run(tiny_dataset, tmp_path):
    result = make_trainer(tiny_dataset, tmp_path / "uninterrupted").run()
    assert not result.interrupted and result.total_iters == 12
    return weights(result.run_dir)


@pytest.mark.parametrize("stop_iter", [1, 5, 8])
def test_stop_and_resume_is_bit_identical(tiny_dataset, tmp_path, reference_run, stop_iter):
    ckpt = tmp_path / "interrupted"
    first = make_trainer(tiny_dataset, ckpt, hooks=[stop_at(stop_iter)]).run()
    assert first.interrupted
    state = checkpoint.load_training_state(first.run_dir)
    assert state["total_iters"] == stop_iter
    resumed = make_trainer(tiny_dataset, ckpt, "--continue_train").run()
    assert not resumed.interrupted and resumed.total_iters == 12
    assert_identical(reference_run, weights(resumed.run_dir))


def test_crash_then_resume_from_last_periodic_checkpoint_is_bit_identical(tiny_dataset, tmp_path, reference_run):
    ckpt = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated"):
        make_trainer(tiny_dataset, ckpt, hooks=[crash_at(8)]).run()
    state = checkpoint.load_training_state(ckpt / "run")
    assert state["total_iters"] == 6  # the last save_latest_freq crossing before the crash
    make_trainer(tiny_dataset, ckpt, "--continue_train").run()
    assert_identical(reference_run, weights(ckpt / "run"))


def test_worker_processes_give_the_same_result(tiny_dataset, tmp_path, reference_run):
    result = make_trainer(tiny_dataset, tmp_path / "workers", "--num_threads", "2").run()
    assert_identical(reference_run, weights(result.run_dir))


def test_training_state_holds_everything_needed_to_resume(tiny_dataset, tmp_path):
    result = make_trainer(tiny_dataset, tmp_path, "--n_epochs", "1", "--n_epochs_decay", "0").run()
    state = checkpoint.load_training_state(result.run_dir)
    assert set(state["model"]["nets"]) == {"G_A", "G_B", "D_A", "D_B"}
    assert all(o["state"] for o in state["model"]["optimizers"])            # Adam moments, not just params
    assert state["model"]["optimizers"][0]["state"][0]["exp_avg"].abs().sum() > 0
    assert len(state["model"]["pools"]["fake_A"]["images"]) == 2
    assert {"python", "numpy", "torch"} <= set(state["rng"])
    assert state["epoch"] == 2 and state["batches_done"] == 0
    assert len(state["model"]["schedulers"]) == 2


def test_run_folder_has_reference_files_and_logs(tiny_dataset, tmp_path):
    result = make_trainer(tiny_dataset, tmp_path).run()
    run = result.run_dir
    for name in ("opt.txt", "opt.json", "loss_log.txt", "log.jsonl", "culture.json", "training_state.pt",
                 "web/index.html", "3_net_G_A.pth") + tuple(f"latest_net_{n}.pth" for n in ("G_A", "G_B", "D_A", "D_B")):
        assert (run / name).is_file(), name
    assert not (run / "1_net_G_A.pth").exists()  # save_epoch_freq 5: only the final epoch is kept
    opt = json.loads((run / "opt.json").read_text())
    assert opt["ngf"] == 4 and opt["netG"] == "resnet_6blocks"
    assert "[default: 64]" in (run / "opt.txt").read_text()
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["total_iters"] for r in records] == [2, 4, 6, 8, 10, 12]
    assert {"D_A", "G_A", "cycle_A", "idt_A", "lr_G", "sec_per_iter"} <= set(records[0])
    assert records[-1]["lr_G"] < records[0]["lr_G"]   # the linear decay epoch
    lines = (run / "loss_log.txt").read_text().splitlines()
    assert lines[0].startswith("================ Training Loss (")
    assert lines[1].startswith("(epoch: 1, iters: 2, time: ") and " D_A: " in lines[1] and "idt_B: " in lines[1]
    html = (run / "web" / "index.html").read_text()
    assert html.index("epoch [3]") < html.index("epoch [1]")  # newest first
    assert "epoch003_fake_B.png" in html


def test_linear_policy_keeps_lr_then_decays_to_zero(tiny_dataset, tmp_path):
    t = make_trainer(tiny_dataset, tmp_path, "--max_dataset_size", "1", "--n_epochs", "2", "--n_epochs_decay", "2")
    lrs = []
    t.hooks.append(lambda tr: lrs.append(tr.model.learning_rates()["lr_G"]))
    t.run()
    assert lrs == pytest.approx([0.0002, 0.0002, 0.0002 * 2 / 3, 0.0002 / 3])


@pytest.mark.parametrize("extra", [["--gan_mode", "wgangp"], ["--gan_mode", "hinge"], ["--gan_mode", "vanilla"],
                                   ["--norm", "batch", "--batch_size", "2"], ["--netD", "pixel"],
                                   ["--optimizer", "sgd", "--lr_policy", "step"], ["--lr_policy", "plateau"],
                                   ["--lr_policy", "cosine", "--optimizer", "adamw"], ["--upsample", "resize"],
                                   ["--pool_size", "0", "--lambda_identity", "0"], ["--direction", "BtoA"],
                                   ["--preprocess", "scale_width_and_crop"], ["--preprocess", "none"]])
def test_option_variants_train_with_finite_losses(tiny_dataset, tmp_path, extra):
    t = make_trainer(tiny_dataset, tmp_path, "--n_epochs", "1", "--n_epochs_decay", "0", *extra)
    t.run()
    assert all(torch.isfinite(torch.tensor(v)) for v in t.model.current_losses.values())


def test_fresh_run_refuses_to_overwrite_an_existing_run(tiny_dataset, tmp_path):
    make_trainer(tiny_dataset, tmp_path, "--n_epochs", "1", "--n_epochs_decay", "0").run()
    before = (tmp_path / "run" / "latest_net_G_A.pth").read_bytes()
    with pytest.raises(UserError, match="already holds a run"):
        make_trainer(tiny_dataset, tmp_path)
    assert (tmp_path / "run" / "latest_net_G_A.pth").read_bytes() == before


def test_continue_train_without_a_state_is_a_clear_error(tiny_dataset, tmp_path):
    with pytest.raises(UserError, match="no training state"):
        make_trainer(tiny_dataset, tmp_path, "--continue_train")


def test_nan_loss_stops_with_the_loss_named_and_keeps_the_last_checkpoint(tiny_dataset, tmp_path):
    def poison(trainer: Trainer) -> None:
        if trainer.total_iters == 5:
            with torch.no_grad():
                for p in trainer.model.G_A.parameters():
                    p.fill_(float("nan"))
    t = make_trainer(tiny_dataset, tmp_path, hooks=[poison])
    with pytest.raises(UserError, match=r"loss (G_A|D_A|cycle_A|idt_A|G_B|cycle_B|idt_B|D_B) became nan at epoch 2, iteration 6"):
        t.run()
    state = checkpoint.load_training_state(tmp_path / "run")
    assert state["total_iters"] == 4   # the end-of-epoch save before the poison
    assert all(torch.isfinite(v).all() for v in state["model"]["nets"]["G_A"].values())


def test_freeze_keeps_parts_fixed_and_finetune_starts_from_another_run(tiny_dataset, tmp_path):
    source = make_trainer(tiny_dataset, tmp_path / "a", "--n_epochs", "1", "--n_epochs_decay", "0").run()
    src = weights(source.run_dir)
    t = make_trainer(tiny_dataset, tmp_path / "b", "--n_epochs", "1", "--n_epochs_decay", "0",
                     "--finetune_from", str(source.run_dir), "--freeze", "G_A.encoder", "D_B")
    start = {k: v.clone() for k, v in t.model.G_A.state_dict().items()}
    assert all(torch.equal(start[k], src["G_A"][k]) for k in start)  # began from the other run's weights
    t.run()
    after = weights(t.run_dir)
    encoder = {k for k in start if int(k.split(".")[1]) < 10}  # model.0 .. model.9: before the residual blocks
    assert all(torch.equal(after["G_A"][k], src["G_A"][k]) for k in encoder)
    assert all(torch.equal(after["D_B"][k], src["D_B"][k]) for k in src["D_B"])
    assert any(not torch.equal(after["G_A"][k], src["G_A"][k]) for k in start if k not in encoder)


def test_unknown_freeze_name_is_a_clear_error(tiny_dataset, tmp_path):
    with pytest.raises(UserError, match="--freeze G_A.middle: unknown"):
        make_trainer(tiny_dataset, tmp_path, "--freeze", "G_A.middle")


def test_eval_freq_logs_metrics_keeps_best_weights_and_stops_early(tiny_dataset, tmp_path):
    t = make_trainer(tiny_dataset, tmp_path, "--n_epochs", "6", "--n_epochs_decay", "0", "--eval_freq", "1",
                     "--early_stop_patience", "2", "--early_stop_metric", "cycle_psnr")
    values = []
    evaluation = next(c for c in t.callbacks if isinstance(c, EvaluationCallback))
    original = TrainingEvaluator(t.dataset.A_paths, t.dataset.B_paths)

    class Scripted:  # a metric that peaks at epoch 2, so patience 2 stops after epoch 4
        def __call__(self, G_A, G_B, device):
            real = original(G_A, G_B, device)
            values.append(real)
            return {**real, "cycle_psnr": [1.0, 3.0, 2.0, 2.5, 9.0, 9.0][len(values) - 1]}
    evaluation.evaluator = Scripted()
    result = t.run()
    assert not result.interrupted and len(values) == 4 and result.epoch == 5
    for real in values:
        assert 0 <= real["style_score"] <= 1 and -1 <= real["content_ssim"] <= 1 and real["cycle_psnr"] > 0
    records = [json.loads(l) for l in (t.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert (t.run_dir / "best_net_G_A.pth").is_file()
    assert checkpoint.load_training_state(t.run_dir)["early_stop"]["best_epoch"] == 2
