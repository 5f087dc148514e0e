"""CUT and FastCUT: the contrastive loss, training and resuming through the shared contract, one-way inference."""

from __future__ import annotations

import json

import pytest
import torch

from cyclegan_culture import cli
from cyclegan_culture.models.cut import PatchSampler, encode, nce_layers, patch_nce
from cyclegan_culture.models.networks import define_G
from tests.conftest import TINY
from tests.test_train_resume import assert_identical, make_trainer, stop_at


def test_patch_nce_is_low_when_each_patch_matches_its_own_position():
    torch.manual_seed(0)
    keys = torch.nn.functional.normalize(torch.randn(2, 64, 16), dim=2)
    matched = patch_nce(keys.clone(), keys)
    shuffled = patch_nce(keys[:, torch.randperm(64)], keys)
    assert matched < 0.1 < shuffled


def test_encoder_features_and_patch_sampler_shapes():
    net = define_G(3, 3, 8, "resnet_6blocks", "instance", False, "normal", 0.02)
    layers = nce_layers(net)
    assert layers[:3] == [0, 4, 8] and len(layers) == 5
    feats = encode(net, torch.randn(2, 3, 32, 32), layers)
    sampler = PatchSampler([f.shape[1] for f in feats])
    out, positions = sampler(feats, num_patches=10)
    assert [o.shape for o in out] == [(2, min(10, f.shape[2] * f.shape[3]), 256) for f in feats]
    again, _ = sampler(feats, positions)
    assert all(torch.equal(a, b) for a, b in zip(out, again))  # the same positions give the same patches


def weights(run_dir):
    return {n: torch.load(run_dir / f"latest_net_{n}.pth", weights_only=True) for n in ("G_A", "D_A", "F")}


@pytest.mark.parametrize("model", ["cut", "fastcut"])
def test_cut_trains_and_resumes_bit_identically(tiny_dataset, tmp_path, model):
    reference = make_trainer(tiny_dataset, tmp_path / "straight", "--model", model).run()
    assert not reference.interrupted
    stopped = make_trainer(tiny_dataset, tmp_path / "resumed", "--model", model, hooks=[stop_at(5)]).run()
    assert stopped.interrupted
    make_trainer(tiny_dataset, tmp_path / "resumed", "--model", model, "--continue_train").run()
    assert_identical(weights(reference.run_dir), weights(tmp_path / "resumed" / "run"))
    assert not (reference.run_dir / "latest_net_G_B.pth").exists()


def test_one_way_model_in_test_stylize_and_analyze(tiny_dataset, tmp_path, capsys):
    (tiny_dataset / "culture.json").write_text(json.dumps({"name": "Art", "domain_B": "art"}))
    assert cli.main(["train", "--dataroot", str(tiny_dataset), "--name", "c", "--checkpoints_dir", str(tmp_path / "ck"),
                     *TINY, "--model", "cut", "--n_epochs", "1", "--n_epochs_decay", "0"]) == 0
    assert cli.main(["test", "--dataroot", str(tiny_dataset), "--name", "c", "--checkpoints_dir", str(tmp_path / "ck"),
                     "--results_dir", str(tmp_path / "res")]) == 0
    images = {p.name for p in (tmp_path / "res" / "c" / "test_latest" / "images").iterdir()}
    assert {"ta0_real_A.png", "ta0_fake_B.png"} <= images and not any("rec_A" in n or "fake_A" in n for n in images)
    capsys.readouterr()
    rc = cli.main(["stylize", "--model", str(tmp_path / "ck" / "c"), str(tiny_dataset / "testB"), "--output",
                   str(tmp_path / "out"), "--direction", "BtoA"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "translates only AtoB" in err and err.count("\n") == 0
    assert cli.main(["analyze", "--datasets", str(tiny_dataset), "--models", str(tmp_path / "ck" / "c"), "--out",
                     str(tmp_path / "an")]) == 0
    model = json.loads((tmp_path / "an" / "summary.json").read_text())["models"][0]
    assert model["images"] == 2 and 0 <= model["style_score"] <= 1


def test_cut_refuses_what_it_cannot_do(tiny_dataset, tmp_path, capsys):
    for flags, words in ((["--gan_mode", "wgangp"], "wgangp"),
                         (["--eval_freq", "1", "--early_stop_metric", "cycle_psnr"], "no way back")):
        rc = cli.main(["train", "--dataroot", str(tiny_dataset), "--checkpoints_dir", str(tmp_path), "--model", "cut",
                       *flags])
        assert rc == 2 and words in capsys.readouterr().err


def test_lambda_nce_sets_the_contrastive_weight_and_is_refused_where_there_is_none(tiny_dataset, tmp_path, capsys):
    from tests.test_speed_flags import batch, tiny_model

    assert (tiny_model("--model", "cut").lambda_nce, tiny_model("--model", "fastcut").lambda_nce) == (1.0, 10.0)
    model = tiny_model("--model", "cut", "--lambda_NCE", "0.5")
    model.set_input(batch())
    model.optimize_parameters()
    nce = (float(model.loss_NCE) + float(model.loss_NCE_Y)) / 2
    assert float(model.loss_G) == pytest.approx(float(model.loss_G_A) + 0.5 * nce, rel=1e-4)
    for flags, words in ((["--lambda_NCE", "0.5"], "--model cycle_gan has no contrastive loss"),
                         (["--model", "cut", "--lambda_NCE", "0"], "--lambda_NCE must be positive")):
        rc = cli.main(["train", "--dataroot", str(tiny_dataset), "--checkpoints_dir", str(tmp_path), *flags])
        assert rc == 2 and words in capsys.readouterr().err
