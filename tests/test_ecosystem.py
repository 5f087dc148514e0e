"""Fitting in: packaging, the reference's command lines and flags, TensorBoard, help and messages, logs that
read well in a file, and pages (issue 22)."""

from __future__ import annotations

import argparse
import json
import re
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from cyclegan_culture import cli, options
from cyclegan_culture.errors import brief
from cyclegan_culture.models import networks
from cyclegan_culture.progress import PlainProgress, count
from tests.conftest import ROOT, TINY, make_dataset, write_image


def run(argv: list[str]) -> int:
    return cli.main(argv)


# --- packaging -------------------------------------------------------------------------------------------------
def test_version_and_closed_pipe_need_no_traceback():
    out = subprocess.run([sys.executable, "-m", "cyclegan_culture", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and re.match(r"cyclegan-culture \d+\.\d+\.\d+ \(torch ", out.stdout)
    # `cyclegan-culture train --help | head`: the reader is gone before the help is written
    proc = subprocess.Popen([sys.executable, "-m", "cyclegan_culture", "train", "--help"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.communicate(timeout=120)[1].decode()
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_package_metadata_has_a_licence_and_an_index_page_without_dead_links(monkeypatch):
    import setuptools

    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
    runpy.run_path(str(ROOT / "setup.py"))
    assert captured["license"] == "MIT" and (ROOT / "LICENSE").is_file()
    page = captured["long_description"]
    assert "## Quick start" in page
    assert not re.search(r"\]\((?!https?://|#)", page), "a relative link or image would break on a package index"
    assert "tensorboard" in captured["extras_require"]


def test_missing_visdom_message_gives_the_pip_commands_that_work(monkeypatch):
    import importlib.util

    from cyclegan_culture.errors import UserError
    from cyclegan_culture.viz import visdom_assets

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError) as err:
        visdom_assets.visdom_static_dir()
    assert "PIP_CONSTRAINT=" in str(err.value) and "setuptools<81" in str(err.value)
    assert "cyclegan-culture[visdom]" in str(err.value)
    assert 'PIP_CONSTRAINT="$PWD/build-constraints.txt" pip install' in (ROOT / "README.md").read_text(encoding="utf-8")


# --- the reference's users ---------------------------------------------------------------------------------------
def _tiny_train(dataroot: Path, ckpt: Path, *extra: str) -> list[str]:
    return ["train", "--dataroot", str(dataroot), "--checkpoints_dir", str(ckpt), *TINY, "--n_epochs", "1",
            "--n_epochs_decay", "0", "--display_freq", "100", *extra]


def test_reference_command_lines_train_test_continue_and_pretrained_test(tmp_path, capsys):
    """The CycleGAN commands of the reference's README and tips, on tiny data."""
    data = make_dataset(tmp_path / "horse2zebra")
    ckpt, results = tmp_path / "checkpoints", tmp_path / "results"
    # python train.py --dataroot ./datasets/horse2zebra --name horse2zebra_cyclegan --model cycle_gan
    assert run(_tiny_train(data, ckpt, "--name", "horse2zebra_cyclegan", "--model", "cycle_gan",
                           "--dataset_mode", "unaligned", "--display_winsize", "256", "--use_wandb")) == 0
    assert "Weights & Biases is not supported" in capsys.readouterr().out
    # python test.py --dataroot ./datasets/horse2zebra --name horse2zebra_cyclegan --model cycle_gan
    assert run(["test", "--dataroot", str(data), "--name", "horse2zebra_cyclegan", "--model", "cycle_gan",
                "--checkpoints_dir", str(ckpt), "--results_dir", str(results), "--gpu_ids", "-1", "--eval",
                "--num_test", "50", "--phase", "test", "--aspect_ratio", "1.0", "--num_threads", "0"]) == 0
    assert (results / "horse2zebra_cyclegan" / "test_latest" / "index.html").is_file()
    # continue: --continue_train --epoch_count N, with more epochs
    assert run(_tiny_train(data, ckpt, "--name", "horse2zebra_cyclegan", "--continue_train", "--n_epochs", "2")) == 0
    assert (ckpt / "horse2zebra_cyclegan" / "2_net_G_A.pth").is_file()
    # pretrained: python test.py --dataroot datasets/horse2zebra/testA --name horse2zebra_pretrained --model test
    #   --no_dropout, with the reference's file name latest_net_G.pth
    pretrained = ckpt / "horse2zebra_pretrained"
    pretrained.mkdir()
    torch.save(torch.load(ckpt / "horse2zebra_cyclegan" / "latest_net_G_A.pth"), pretrained / "latest_net_G.pth")
    capsys.readouterr()
    assert run(["test", "--dataroot", str(data / "testA"), "--name", "horse2zebra_pretrained", "--model", "test",
                "--no_dropout", "--checkpoints_dir", str(ckpt), "--results_dir", str(results), "--gpu_ids", "-1",
                "--netG", "resnet_6blocks", "--ngf", "4"]) == 0
    out = capsys.readouterr().out
    assert "latest_net_G.pth" in out  # it says which checkpoint it loaded
    images = results / "horse2zebra_pretrained" / "test_latest" / "images"
    for src in (data / "testA").iterdir():
        assert Image.open(images / f"{src.stem}_fake_B.png").size == Image.open(src).size
    assert not list(images.glob("*rec_*")) and not list(images.glob("*_B_fake*"))
    # --model test --model_suffix _A on our own run folder
    assert run(["test", "--dataroot", str(data / "testB"), "--name", "horse2zebra_cyclegan", "--model", "test",
                "--model_suffix", "_A", "--checkpoints_dir", str(ckpt), "--results_dir", str(results / "s"),
                "--gpu_ids", "-1"]) == 0


def test_save_by_iter_load_iter_suffix_and_aspect_ratio(tmp_path, capsys):
    data = make_dataset(tmp_path / "d")
    ckpt, results = tmp_path / "ck", tmp_path / "res"
    assert run(_tiny_train(data, ckpt, "--name", "run", "--suffix", "{netG}_s{load_size}", "--save_by_iter",
                           "--save_latest_freq", "2")) == 0
    run_dir = ckpt / "run_resnet_6blocks_s36"
    assert (run_dir / "iter_2_net_G_A.pth").is_file() and (run_dir / "iter_4_net_G_B.pth").is_file()
    assert (run_dir / "latest_net_G_A.pth").is_file()  # kept too: resuming needs it
    capsys.readouterr()
    # test.py without --dataroot: the run's opt.json has it
    assert run(["test", "--name", run_dir.name, "--checkpoints_dir", str(ckpt), "--results_dir", str(results),
                "--load_iter", "2", "--aspect_ratio", "2.0", "--gpu_ids", "-1"]) == 0
    out = capsys.readouterr().out
    assert "iter_2_net_G_A.pth" in out and f"--dataroot {data}" in out
    images = results / run_dir.name / "test_iter_2" / "images"
    src = next((data / "testA").iterdir())
    w, h = Image.open(src).size
    assert Image.open(images / f"{src.stem}_fake_B.png").size == (2 * w, h)
    assert run(["test", "--name", "run", "--suffix", "{nope}", "--checkpoints_dir", str(ckpt)]) == 2
    assert "--suffix" in capsys.readouterr().err


@pytest.mark.parametrize("netG,levels,millions", [("unet_256", 8, 54.414), ("unet_128", 7, 41.829)])
def test_unet_generators_have_the_references_size_and_keep_any_image_size(netG, levels, millions):
    # the reference prints 54.414 M (unet_256) and 41.829 M (unet_128) parameters for ngf 64, batch norm
    net = networks.define_G(3, 3, 64, netG, "batch")
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 3) == millions
    keys = list(net.state_dict())
    assert keys[0] == "model.model.0.weight" and "model.model.1.model.1.weight" in keys
    tiny = networks.define_G(3, 3, 2, netG, "instance").eval()
    from cyclegan_culture.inference import translate

    with torch.no_grad():
        out = translate(tiny, torch.rand(1, 3, 37, 300))
    assert out.shape == (1, 3, 37, 300) and tiny.size_multiple == 2 ** levels


def test_unet_trains_and_bad_unet_crops_are_one_line(tmp_path, capsys):
    data = make_dataset(tmp_path / "d", size=(130, 130))
    flags = ["--netG", "unet_128", "--load_size", "128", "--crop_size", "128", "--norm", "batch"]
    argv = _tiny_train(data, tmp_path / "ck", "--name", "u")  # TINY's --netG is overridden by the later one
    assert run([*argv, *flags]) == 0
    assert run([*argv, "--netG", "unet_128", "--load_size", "100", "--crop_size", "96", "--name", "v"]) == 2
    assert "multiple of 128" in capsys.readouterr().err


def test_train_refuses_pix2pix_data_and_single_mode(tmp_path, capsys):
    data = make_dataset(tmp_path / "d")
    for mode in ("aligned", "single"):
        assert run(_tiny_train(data, tmp_path / "ck", "--name", mode, "--dataset_mode", mode)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--dataset_mode {mode}" in err


# --- monitoring: TensorBoard and Visdom ---------------------------------------------------------------------------
def test_tensorboard_event_files_hold_losses_rates_speed_visuals_and_options(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = make_dataset(tmp_path / "d")
    assert run(_tiny_train(data, tmp_path / "ck", "--name", "tb", "--tensorboard", "--print_freq", "1",
                           "--display_freq", "2")) == 0
    events = EventAccumulator(str(tmp_path / "ck" / "tb" / "tensorboard"), size_guidance={"images": 0}).Reload()
    scalars = events.Tags()["scalars"]
    assert {"loss/G_A", "loss/D_A", "loss/cycle_A", "learning_rate/lr_G", "speed/sec_per_image"} <= set(scalars)
    assert len(events.Scalars("loss/G_A")) == 4  # every logged step (4 images, print_freq 1)
    assert "visuals/fake_B" in events.Tags()["images"]
    text = events.Tensors("options/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| crop_size | 32 |" in text


def test_visdom_pane_fits_the_grid_and_messages_start_their_own_line(capsys):
    from cyclegan_culture.viz.visdom_monitor import VisdomMonitor, pane_size

    size = pane_size((8, 3, 128, 128), ncols=4)
    assert size["width"] >= 4 * 128 and size["height"] >= 2 * 128
    monitor = VisdomMonitor("http://localhost", 1, "myrun", "Guohua",
                            client_factory=lambda *a: (_ for _ in ()).throw(ConnectionError("down")))
    monitor.plot_losses(__import__("cyclegan_culture.viz.visdom_monitor", fromlist=["LossPoint"]).LossPoint(
        0.1, {"G_A": 1.0}, {}, 0.1))
    monitor.close()
    out = capsys.readouterr().out
    assert monitor.address == "http://localhost:1/env/myrun"
    assert re.search(r"(^|\n)warning: Visdom server at http://localhost:1 is unreachable", out), out


# --- help, names, messages -----------------------------------------------------------------------------------------
def _parsers() -> dict[str, argparse.ArgumentParser]:
    return {"train": options.build_train_parser(), "test": options.build_test_parser()}


def test_every_flag_has_help_and_train_and_test_group_them_alike():
    parsers = _parsers()
    for name, parser in parsers.items():
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings[0]} has no help"
        groups = {g.title: {a.dest for a in g._group_actions} for g in parser._action_groups}
        assert "phase" in groups["data"] and "dataroot" in groups["run"]
    train_groups = {g.title for g in parsers["train"]._action_groups}
    assert {"run", "speed", "model", "data"} <= train_groups
    test_flags = {a.dest for a in parsers["test"]._actions}
    assert not {"n_epochs", "lr", "init_type", "preset", "continue_train"} & test_flags
    assert {"compare", "aspect_ratio", "model_suffix", "eval", "load_iter", "display_winsize"} <= test_flags
    assert "preset" in {a.dest for g in parsers["train"]._action_groups if g.title == "run" for a in g._group_actions}
    help_text = parsers["train"].format_help()
    assert "(default: 0.0002)" in help_text and "--ema_decay 0.999" in help_text  # the preset says what it sets


def test_every_reference_flag_is_accepted():
    # the reference's base, train and test options for CycleGAN (pytorch-CycleGAN-and-pix2pix/options/*.py)
    base = ["dataroot", "name", "use_wandb", "wandb_project_name", "gpu_ids", "checkpoints_dir", "model", "input_nc",
            "output_nc", "ngf", "ndf", "netD", "netG", "n_layers_D", "norm", "init_type", "init_gain", "no_dropout",
            "dataset_mode", "direction", "serial_batches", "num_threads", "batch_size", "load_size", "crop_size",
            "max_dataset_size", "preprocess", "no_flip", "display_winsize", "epoch", "load_iter", "verbose", "suffix"]
    train = ["display_freq", "display_ncols", "display_id", "display_server", "display_env", "display_port",
             "update_html_freq", "print_freq", "no_html", "save_latest_freq", "save_epoch_freq", "save_by_iter",
             "continue_train", "epoch_count", "phase", "n_epochs", "n_epochs_decay", "beta1", "lr", "gan_mode",
             "pool_size", "lr_policy", "lr_decay_iters", "lambda_A", "lambda_B", "lambda_identity"]
    test = ["results_dir", "aspect_ratio", "phase", "eval", "num_test", "model_suffix"]
    parsers = _parsers()
    train_flags = {a.dest for a in parsers["train"]._actions}
    test_flags = {a.dest for a in parsers["test"]._actions}
    assert not (set(base) | set(train)) - train_flags
    assert not ((set(base) - {"init_type", "init_gain"}) | set(test)) - test_flags


def test_hyphenated_spellings_and_output_aliases_are_accepted(tmp_path):
    parser = options.build_train_parser()
    opt = options.parse(parser, ["--dataroot", "x", "--load-size", "100", "--crop-size=96", "--name", "my-run"])
    assert (opt.load_size, opt.crop_size, opt.name) == (100, 96, "my-run")
    assert {"load_size", "crop_size"} <= opt._explicit
    help_text = subprocess.run([sys.executable, "-m", "cyclegan_culture", "analyze", "--help"], capture_output=True,
                               text=True).stdout
    assert "--inception_weights" in help_text
    assert "--install_assets" in subprocess.run([sys.executable, "-m", "cyclegan_culture", "visdom", "--help"],
                                                capture_output=True, text=True).stdout


def test_messages_count_correctly_and_quote_errors_with_closed_brackets():
    assert count(1, "image") == "1 image" and count(2, "culture") == "2 cultures"
    text = brief(RuntimeError("Error(s) in loading state_dict for ResnetGenerator: Missing key(s) in state_dict: "
                              + ", ".join(f'"model.{i}.weight"' for i in range(60))))
    assert text.count("(") == text.count(")") and len(text) < 200
    assert brief(ValueError("size mismatch (a [3, 4")) == "size mismatch (a [3, 4])"


def test_stylize_says_one_image_and_a_finished_run_says_so(tmp_path, capsys):
    from tests.conftest import make_run

    run_dir = make_run(tmp_path / "r", "ink", seed=0)
    photo = write_image(tmp_path / "p" / "a.png", (20, 16), 1)
    assert run(["stylize", "--model", str(run_dir), str(photo), "--out", str(tmp_path / "o")]) == 0
    assert "Stylized 1 image into" in capsys.readouterr().out
    data = make_dataset(tmp_path / "d")
    assert run(_tiny_train(data, tmp_path / "ck", "--name", "f")) == 0
    capsys.readouterr()
    assert run(_tiny_train(data, tmp_path / "ck", "--name", "f", "--continue_train")) == 0
    out = capsys.readouterr().out
    assert "is finished" in out and "iterations to go" not in out


def test_train_py_errors_point_to_train_py_help(tmp_path):
    out = subprocess.run([sys.executable, "train.py", "--bogus"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "(see train.py --help)" in out.stderr


# --- logs in files ----------------------------------------------------------------------------------------------------
def test_progress_off_a_terminal_is_plain_lines_with_eta(capsys):
    items = list(PlainProgress(range(20), desc="stylize", unit="img", every=5))
    err = capsys.readouterr().err
    assert items == list(range(20)) and "\r" not in err and "%|" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("stylize: 5/20 img") and "left" in lines[0]
    assert lines[-1].startswith("stylize: 20/20 img")


def test_training_log_redirected_to_a_file_has_no_carriage_returns(tmp_path):
    data = make_dataset(tmp_path / "d")
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", "cyclegan_culture", *_tiny_train(data, tmp_path / "ck", "--name",
                             "l", "--n_epochs", "2")], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    raw = log.read_bytes()  # bytes: reading text would turn carriage returns into newlines
    assert rc == 0 and b"\r" not in raw, raw[-500:]
    text = raw.decode()
    assert "End of epoch 1/2" in text and "End of epoch 2/2" in text


def test_torchscript_export_shows_no_deprecation_warnings_and_exported_program_works(tmp_path, capsys):
    from tests.conftest import make_run

    run_dir = make_run(tmp_path / "r", "ink", seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run(["export", "--model", str(run_dir), "--format", "torchscript"]) == 0
    assert not [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))
                and "jit" in str(w.message)]
    assert run(["export", "--model", str(run_dir), "--format", "exported_program"]) == 0
    program = torch.export.load(str(run_dir / "generator.pt2")).module()
    assert program(torch.rand(1, 3, 40, 24)).shape == (1, 3, 40, 24)


# --- pages --------------------------------------------------------------------------------------------------------------
@pytest.fixture
def two_cultures_compared(tmp_path):
    """test.py galleries for two tiny runs written to a custom --results_dir, then compare with the default one."""
    data = make_dataset(tmp_path / "d")
    for name, culture in (("ink_run", "Impressionnisme"), ("print_run", "Ukiyo-e")):
        (data / "culture.json").write_text(json.dumps({"name": culture, "domain_B": culture.lower()}))
        assert run(_tiny_train(data, tmp_path / "ck", "--name", name)) == 0
        assert run(["test", "--name", name, "--checkpoints_dir", str(tmp_path / "ck"), "--results_dir",
                    str(tmp_path / "galleries"), "--gpu_ids", "-1"]) == 0
    out = tmp_path / "cmp"
    assert run(["compare", "--photos", str(data / "testA"), "--models", str(tmp_path / "ck" / "ink_run"),
                str(tmp_path / "ck" / "print_run"), "--out", str(out), "--gpu_ids", "-1"]) == 0
    return tmp_path, out


def test_gallery_and_compare_pages_caption_only_what_headers_do_not_say(two_cultures_compared):
    tmp, out = two_cultures_compared
    gallery = (tmp / "galleries" / "ink_run" / "test_latest" / "index.html").read_text(encoding="utf-8")
    assert not re.search(r'class="caption">(fake|rec)_[AB]<', gallery)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.count('class="caption">Impressionnisme<') == 0 and page.count("<th>Impressionnisme</th>") == 1
    assert "break-all" not in page
    # the galleries went to a custom --results_dir; compare (default --results_dir) still links to them
    assert page.count("its test gallery") == 2


def test_compare_page_in_a_browser_breaks_no_word(two_cultures_compared, browser):
    tmp, out = two_cultures_compared
    browser.call("Page.enable")
    browser.call("Emulation.setDeviceMetricsOverride", width=700, height=900, deviceScaleFactor=1, mobile=False)
    browser.call("Page.navigate", url=(out / "index.html").as_uri())
    browser.wait_for("document.readyState === 'complete' && document.images.length > 0 && "
                     "[...document.images].every(i => i.complete)")
    broken = browser.evaluate("""(() => {
        const broken = [];
        for (const el of document.querySelectorAll('th, p.caption, li b')) {
          const text = el.firstChild;
          if (!text || text.nodeType !== 3) continue;
          for (const m of text.data.matchAll(/\\S+/g)) {
            const r = document.createRange();
            r.setStart(text, m.index); r.setEnd(text, m.index + m[0].length);
            if (r.getClientRects().length > 1) broken.push(m[0]);
          }
        }
        return broken; })()""")
    assert broken == [], broken
    shot = browser.call("Page.captureScreenshot", format="png")["data"]
    assert len(shot) > 1000
