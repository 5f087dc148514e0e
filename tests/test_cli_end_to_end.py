"""The commands a user runs: train.py then test.py on tiny data, checking files, the gallery and sizes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cyclegan_culture.cli import main
from tests.conftest import ROOT, TINY, make_dataset, write_image


def train_args(dataroot: Path, ckpt: Path, name: str = "e2e") -> list[str]:
    return ["--dataroot", str(dataroot), "--name", name, "--checkpoints_dir", str(ckpt), *TINY,
            "--n_epochs", "1", "--n_epochs_decay", "0", "--display_freq", "2"]


@pytest.fixture
def trained(tmp_path):
    dataroot = make_dataset(tmp_path / "data", test_sizes=((40, 36), (131, 77), (40, 400), (7, 5)))
    write_image(dataroot / "testA" / "<b>x.png", (20, 24), seed=9)
    (dataroot / "culture.json").write_text(json.dumps({"name": "Guohua", "native_name": "国画",
                                                       "description": "<script>alert(1)</script>"}), encoding="utf-8")
    assert main(["train", *train_args(dataroot, tmp_path / "ckpt")]) == 0
    return dataroot, tmp_path


def test_train_then_test_writes_gallery_with_exact_sizes(trained):
    dataroot, tmp = trained
    results = tmp / "results"
    # the architecture comes from the run's opt.json: no model flags needed here
    assert main(["test", "--dataroot", str(dataroot), "--name", "e2e", "--checkpoints_dir", str(tmp / "ckpt"),
                 "--results_dir", str(results), "--gpu_ids", "-1", "--num_threads", "0"]) == 0
    out = results / "e2e" / "test_latest"
    images = out / "images"
    for src in sorted((dataroot / "testA").iterdir()):
        size = Image.open(src).size
        for label in ("real_A", "fake_B", "rec_A"):
            assert Image.open(images / f"{src.stem}_{label}.png").size == size, (src.name, label)
    for src in sorted((dataroot / "testB").iterdir()):
        for label in ("real_B", "fake_A", "rec_B"):
            assert Image.open(images / f"{src.stem}_{label}.png").size == Image.open(src).size
    html = (out / "index.html").read_text(encoding="utf-8")
    rows = re.findall(r"<tr>(.*?)</tr>", html, flags=re.S)
    image_rows = [r for r in rows if "<img" in r]
    assert len(image_rows) == 5 + 4                      # every test image, both directions
    assert all(r.count("<img") == 3 for r in image_rows)  # input, translation, reconstruction
    assert "&lt;b&gt;x.png" in html and "<b>x" not in html
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert "Guohua 国画" in html


def test_test_flags_override_opt_json_and_mismatch_is_one_line(trained, capsys):
    dataroot, tmp = trained
    rc = main(["test", "--dataroot", str(dataroot), "--name", "e2e", "--checkpoints_dir", str(tmp / "ckpt"),
               "--results_dir", str(tmp / "r"), "--ngf", "8", "--gpu_ids", "-1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "latest_net_G_A.pth: does not fit --netG resnet_6blocks --ngf 8" in err


def test_num_test_limits_and_missing_epoch_is_named(trained, capsys):
    dataroot, tmp = trained
    common = ["--dataroot", str(dataroot), "--name", "e2e", "--checkpoints_dir", str(tmp / "ckpt"),
              "--results_dir", str(tmp / "r"), "--gpu_ids", "-1"]
    assert main(["test", *common, "--num_test", "2"]) == 0
    assert len(list((tmp / "r" / "e2e" / "test_latest" / "images").glob("*_fake_B.png"))) == 2
    assert main(["test", *common, "--epoch", "7"]) == 2
    err = capsys.readouterr().err
    assert "7_net_G_A.pth: checkpoint not found (available: 1, latest)" in err


def test_reference_style_run_without_opt_json_is_tested_with_flags(trained):
    dataroot, tmp = trained
    run = tmp / "ckpt" / "e2e"
    ref = tmp / "ckpt" / "from_reference"
    ref.mkdir()
    for name in ("G_A", "G_B"):
        (ref / f"latest_net_{name}.pth").write_bytes((run / f"latest_net_{name}.pth").read_bytes())
    assert main(["test", "--dataroot", str(dataroot), "--name", "from_reference", "--checkpoints_dir",
                 str(tmp / "ckpt"), "--results_dir", str(tmp / "r"), "--gpu_ids", "-1", "--netG",
                 "resnet_6blocks", "--ngf", "4", "--no_dropout"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["train", "--dataroot", "DATA", "--netG", "unet_512"], "--netG 'unet_512' is unknown"),
    (["train", "--dataroot", "DATA", "--crop_size", "300"], "--crop_size 300 is larger than --load_size 286"),
    (["train", "--dataroot", "DATA", "--load_size", "-5"], "--load_size must be a positive number"),
    (["train", "--dataroot", "DATA", "--name", "../../x"], "--name '../../x' must be a plain folder name"),
    (["train", "--dataroot", "DATA", "--continue_train", "--name", "nothing"], "no training state"),
    (["train", "--dataroot", "DATA", "--lr", "abc"], "argument --lr: invalid float value"),
    (["train", "--dataroot", "MISSING"], "folder not found"),
    (["test", "--dataroot", "DATA", "--name", "nothing"], "latest_net_G_A.pth: checkpoint not found"),
])
def test_option_errors_are_one_line_before_any_work(tmp_path, capsys, argv, message):
    data = make_dataset(tmp_path / "data")
    argv = [str(data) if a == "DATA" else str(tmp_path / "missing") if a == "MISSING" else a for a in argv]
    argv += ["--checkpoints_dir", str(tmp_path / "ckpt")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())  # not even an empty run


def test_empty_train_folder_is_named(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    for f in (data / "trainB").iterdir():
        f.unlink()
    assert main(["train", "--dataroot", str(data), "--checkpoints_dir", str(tmp_path / "c")]) == 2
    assert "trainB: no images found" in capsys.readouterr().err


def test_preset_cpu_sets_small_configuration_and_explicit_flags_win():
    from cyclegan_culture import options
    opt = options.parse(options.build_train_parser(), ["--dataroot", "x", "--preset", "cpu", "--ngf", "16"])
    assert (opt.crop_size, opt.netG, opt.ngf, opt.ndf) == (128, "resnet_6blocks", 16, 32)
    assert (opt.upsample, opt.diffaugment, opt.ema_decay) == ("resize", "color,translation", 0.999)
    assert opt.name == "x"
    long = options.parse(options.build_train_parser(), ["--dataroot", "x", "--preset", "cpu_long"])
    assert (long.n_epochs, long.n_epochs_decay, long.crop_size, long.ema_decay) == (40, 20, 128, 0.999)
    assert (long.lambda_edge, opt.lambda_edge) == (0.5, 0.0)  # the edge loss keeps structure over 60 epochs
    assert (opt.n_epochs, opt.n_epochs_decay) == (14, 10)


def test_wrappers_and_console_script_run_as_subprocesses(tmp_path):
    data = make_dataset(tmp_path / "data")
    train = subprocess.run([sys.executable, str(ROOT / "train.py"), *train_args(data, tmp_path / "ckpt", "sub")],
                           capture_output=True, text=True, cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    assert (tmp_path / "ckpt" / "sub" / "latest_net_G_A.pth").is_file()
    test = subprocess.run([sys.executable, str(ROOT / "test.py"), "--dataroot", str(data), "--name", "sub",
                           "--checkpoints_dir", str(tmp_path / "ckpt"), "--results_dir", str(tmp_path / "res"),
                           "--gpu_ids", "-1"], capture_output=True, text=True, cwd=tmp_path)
    assert test.returncode == 0, test.stderr
    assert "Gallery:" in test.stdout and (tmp_path / "res" / "sub" / "test_latest" / "index.html").is_file()
    bad = subprocess.run([sys.executable, "-m", "cyclegan_culture", "train", "--dataroot", str(tmp_path / "nope")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1


def test_hostile_strings_in_run_names_options_and_culture_are_escaped(tmp_path):
    data = make_dataset(tmp_path / "data")
    hostile = "<script>alert(1)<"
    (data / "culture.json").write_text(json.dumps({"name": hostile, "native_name": hostile, "region": hostile,
                                                   "period": hostile, "description": hostile}), encoding="utf-8")
    name = "<img src=x onerror=alert(1)>"
    assert main(["train", *train_args(data, tmp_path / "ckpt", name)]) == 0
    assert main(["test", "--dataroot", str(data), "--name", name, "--checkpoints_dir", str(tmp_path / "ckpt"),
                 "--results_dir", str(tmp_path / "res"), "--gpu_ids", "-1"]) == 0
    pages = [tmp_path / "ckpt" / name / "web" / "index.html", tmp_path / "res" / name / "test_latest" / "index.html"]
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert "<script>alert" not in html and "<img src=x" not in html, page
        assert "&lt;script&gt;alert(1)&lt;" in html
