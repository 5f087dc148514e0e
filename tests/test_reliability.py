"""docs/reliability.md, one class of fault at a time: outputs never destroy inputs or each other, one writer per
run folder, signals save, damaged files recover, flags on resume, and options that cannot work fail first."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from cyclegan_culture import files, options
from cyclegan_culture.cli import main
from cyclegan_culture.runs import checkpoint
from cyclegan_culture.engine.trainer import Trainer
from cyclegan_culture.errors import UserError
from cyclegan_culture.models.networks import define_G
from tests.conftest import ROOT, TINY, make_dataset, write_image


def train_args(data: Path, ckpt: Path, *extra: str) -> list[str]:
    return ["--dataroot", str(data), "--name", "run", "--checkpoints_dir", str(ckpt), *TINY,
            "--n_epochs", "1", "--n_epochs_decay", "0", "--seed", "3", *extra]


def trainer(data: Path, ckpt: Path, *extra: str, hooks=None) -> Trainer:
    parser = options.build_train_parser()
    return Trainer(options.parse(parser, train_args(data, ckpt, *extra)), parser, hooks=hooks)


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gen") / "G.pth"
    torch.manual_seed(0)
    torch.save(define_G(3, 3, 4, "resnet_6blocks").state_dict(), path)
    return path


def stylize(generator_file: Path, *args: str) -> int:
    return main(["stylize", "--checkpoint", str(generator_file), "--netG", "resnet_6blocks", "--ngf", "4",
                 "--gpu_ids", "-1", *args])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- outputs never destroy inputs or each other ----------------------------------------------------------------
def test_output_folder_holding_the_inputs_is_refused_and_the_originals_stay(generator_file, tmp_path, capsys):
    photos = tmp_path / "photos"
    write_image(photos / "a.jpg", (20, 16), 1)
    write_image(photos / "sub" / "b.png", (20, 16), 2)
    before = snapshot(photos)
    for output in (photos, tmp_path):  # the inputs' folder, and a folder above it
        assert stylize(generator_file, str(photos), "--output", str(output)) == 2
        err = capsys.readouterr().err
        assert "holds the input folder" in err and "--suffix" in err and "Traceback" not in err
        assert snapshot(photos) == before
    assert stylize(generator_file, str(photos / "a.jpg"), "--output", str(photos)) == 2  # a file input too
    assert snapshot(photos) == before


def test_suffix_mode_writes_beside_the_inputs_and_a_rerun_never_restylizes_outputs(generator_file, tmp_path):
    photos = tmp_path / "photos"
    write_image(photos / "a.jpg", (20, 16), 1)
    write_image(photos / "b.png", (20, 16), 2)
    originals = snapshot(photos)
    for _ in range(2):
        assert stylize(generator_file, str(photos), "--output", str(photos), "--suffix", "_guohua") == 0
        images = sorted(p.name for p in photos.iterdir() if not p.name.startswith("."))
        assert images == ["a.jpg", "a_guohua.jpg", "b.png", "b_guohua.png"]
    assert all(snapshot(photos)[name] == data for name, data in originals.items())


def test_output_inside_an_input_folder_is_never_read_back(generator_file, tmp_path, capsys):
    photos = tmp_path / "photos"
    write_image(photos / "a.jpg", (20, 16), 1)
    for _ in range(2):
        assert stylize(generator_file, str(photos), "--output", str(photos / "stylized")) == 0
    assert sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*.jpg")) == ["a.jpg", "stylized/a.jpg"]
    assert "Stylized 1 image into" in capsys.readouterr().out


def test_inputs_with_one_output_name_each_get_their_own_file(generator_file, tmp_path, capsys):
    write_image(tmp_path / "d1" / "a.jpg", (20, 16), 1)
    write_image(tmp_path / "d2" / "a.jpg", (24, 16), 2)
    write_image(tmp_path / "d3" / "b.bmp", (20, 20), 3)
    write_image(tmp_path / "d3" / "b.png", (20, 24), 4)
    out = tmp_path / "out"
    inputs = [str(tmp_path / "d1" / "a.jpg"), str(tmp_path / "d2" / "a.jpg"), str(tmp_path / "d3")]
    assert stylize(generator_file, *inputs, "--output", str(out)) == 0
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert written == ["a_1.jpg", "a_2.jpg", "b_bmp.png", "b_png.png"]
    assert {Image.open(out / n).size for n in written} == {(20, 16), (24, 16), (20, 20), (20, 24)}
    assert "Stylized 4 images" in capsys.readouterr().out
    # the same inputs again: the same names, nothing added
    assert stylize(generator_file, *inputs, "--output", str(out)) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == written


def test_a_users_file_in_the_output_folder_is_never_replaced(generator_file, tmp_path, capsys):
    write_image(tmp_path / "in" / "a.jpg", (20, 16), 1)
    out = tmp_path / "out"
    (out).mkdir()
    (out / "a.jpg").write_bytes(b"the user's own file")
    assert stylize(generator_file, str(tmp_path / "in"), "--output", str(out)) == 2
    assert "did not write" in capsys.readouterr().err
    assert (out / "a.jpg").read_bytes() == b"the user's own file"


def test_path_problems_are_one_line_before_any_work(generator_file, tmp_path, capsys, monkeypatch):
    write_image(tmp_path / "in" / "a.jpg", (20, 16), 1)
    existing = tmp_path / "existing.txt"
    existing.write_text("x")
    for output in (existing, existing / "sub"):
        assert stylize(generator_file, str(tmp_path / "in"), "--output", str(output)) == 2
        err = capsys.readouterr().err
        assert "is a file, not a folder" in err and "Traceback" not in err and "stylize:" not in err
    from cyclegan_culture import outputs

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(outputs.tempfile, "mkstemp", read_only)  # (the suite may run as root)
    assert stylize(generator_file, str(tmp_path / "in"), "--output", str(tmp_path / "ro")) == 2
    assert "cannot write there (Permission denied)" in capsys.readouterr().err


def test_test_py_gives_colliding_names_their_own_images(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    write_image(data / "testA" / "sub" / "y.jpg", (20, 16), 5)
    write_image(data / "testA" / "sub__y.jpg", (24, 16), 6)
    assert main(["train", *train_args(data, tmp_path / "ckpt")]) == 0
    assert main(["test", "--dataroot", str(data), "--name", "run", "--checkpoints_dir", str(tmp_path / "ckpt"),
                 "--results_dir", str(tmp_path / "results"), "--gpu_ids", "-1"]) == 0
    assert "Translated 4 A->B" in capsys.readouterr().out
    images = tmp_path / "results" / "run" / "test_latest" / "images"
    reals = sorted(p.name for p in images.glob("*_real_A.png"))
    assert len(reals) == 4
    assert {Image.open(images / n).size for n in reals} >= {(20, 16), (24, 16)}
    page = (tmp_path / "results" / "run" / "test_latest" / "index.html").read_text(encoding="utf-8")
    assert all(f"images/{n}" in page for n in reals)


def test_test_py_results_inside_the_dataroot_are_refused(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    assert main(["train", *train_args(data, tmp_path / "ckpt")]) == 0
    before = snapshot(data)
    assert main(["test", "--dataroot", str(data), "--name", "run", "--checkpoints_dir", str(tmp_path / "ckpt"),
                 "--results_dir", str(data / "testA"), "--gpu_ids", "-1"]) == 2
    assert "inside the dataroot" in capsys.readouterr().err
    assert snapshot(data) == before


def test_export_never_replaces_the_runs_own_files(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    assert main(["train", *train_args(data, tmp_path / "ckpt")]) == 0
    weights = tmp_path / "ckpt" / "run" / "latest_net_G_A.pth"
    before = weights.read_bytes()
    assert main(["export", "--model", str(tmp_path / "ckpt" / "run"), "--format", "torchscript",
                 "--out", str(weights)]) == 2
    assert "one of the run's own files" in capsys.readouterr().err
    assert weights.read_bytes() == before


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_follow_the_umask(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        files.atomic_write_text(tmp_path / "page.html", "x")
        files.atomic_save({"w": torch.ones(1)}, tmp_path / "w.pth")
    finally:
        os.umask(old)
    assert (tmp_path / "page.html").stat().st_mode & 0o777 == expected
    assert (tmp_path / "w.pth").stat().st_mode & 0o777 == expected
    os.chmod(tmp_path / "page.html", 0o600)  # a file the user restricted keeps its mode when replaced
    files.atomic_write_text(tmp_path / "page.html", "y")
    assert (tmp_path / "page.html").stat().st_mode & 0o777 == 0o600


# --- one run folder, one writer ---------------------------------------------------------------------------------
LOCK_HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from cyclegan_culture.runs.lock import RunLock
RunLock({run!r}).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_live_owner_keeps_others_out_and_a_dead_ones_lock_is_taken_over(tiny_dataset, tmp_path, capsys):
    run = tmp_path / "ckpt" / "run"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER.format(root=str(ROOT), run=str(run))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for extra in ((), ("--continue_train",), ("--finetune_from", str(run))):
            with pytest.raises(UserError, match=f"in use by process {holder.pid} on "):
                trainer(tiny_dataset, tmp_path / "ckpt", *extra)
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock file is left, stale, and taken over with a note
    assert json.loads((run / "train.lock").read_text())["pid"] == holder.pid
    first = trainer(tiny_dataset, tmp_path / "ckpt")
    assert f"left by process {holder.pid}" in capsys.readouterr().out
    with pytest.raises(UserError, match=f"in use by process {os.getpid()}"):  # in the same process too
        trainer(tiny_dataset, tmp_path / "ckpt")
    first.run()
    assert not (run / "train.lock").exists()
    trainer(tiny_dataset, tmp_path / "ckpt", "--continue_train").run()  # released: the next one may write


def make_reference_run(run: Path) -> None:
    for name in ("G_A", "G_B"):
        torch.save(define_G(3, 3, 4, "resnet_6blocks").state_dict(), run / f"latest_net_{name}.pth")


@pytest.mark.parametrize("left", ["reference_weights", "state_new_only", "state_prev_only"])
def test_fresh_training_never_replaces_weights_or_states(tiny_dataset, tmp_path, left):
    ckpt = tmp_path / "ckpt"
    trainer(tiny_dataset, ckpt).run()
    run = ckpt / "run"
    if left == "reference_weights":
        for p in list(run.iterdir()):
            if p.is_file():
                p.unlink()
        make_reference_run(run)
    else:  # a crash between the state's write and its rename, or after the rename of the old one
        target = checkpoint.STATE_FILE + ".new" if left == "state_new_only" else checkpoint.PREVIOUS_STATE_FILE
        os.replace(run / checkpoint.STATE_FILE, run / target)
    before = snapshot(run)
    hint = "--finetune_from" if left == "reference_weights" else "--continue_train"
    with pytest.raises(UserError, match=hint):
        trainer(tiny_dataset, ckpt)
    assert snapshot(run) == before
    if left != "reference_weights":
        trainer(tiny_dataset, ckpt, "--continue_train").run()  # it resumes from what the crash left
    trainer(tiny_dataset, ckpt, "--start_over").run()
    aside = [p for p in run.iterdir() if p.name.startswith("superseded-")]
    assert len(aside) == 1 and (aside[0] / "latest_net_G_A.pth").is_file()


# --- signals --------------------------------------------------------------------------------------------------
SIGNAL_DRIVER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from cyclegan_culture.cli import main
from cyclegan_culture.runs import checkpoint
where, argv = sys.argv[1], sys.argv[2:]
if where == "epoch_end_save":  # the signal lands while the end-of-epoch weights are being written
    original = checkpoint.save_networks
    def save_and_get_signalled(nets, run_dir, epoch):
        original(nets, run_dir, epoch)
        os.kill(os.getpid(), int(os.environ["SIGNUM"]))
    checkpoint.save_networks = save_and_get_signalled
sys.exit(main(["train", *argv]))
"""


@pytest.mark.parametrize("signum, where", [(signal.SIGTERM, "running"), (signal.SIGHUP, "running"),
                                           (signal.SIGTERM, "epoch_end_save")])
def test_sigterm_and_sighup_save_the_state_and_exit(tiny_dataset, tmp_path, signum, where):
    driver = tmp_path / "driver.py"
    driver.write_text(SIGNAL_DRIVER.format(root=str(ROOT)))
    ckpt = tmp_path / "ckpt"
    argv = train_args(tiny_dataset, ckpt, "--n_epochs", "200", "--num_threads", "1")
    proc = subprocess.Popen([sys.executable, str(driver), where, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "SIGNUM": str(int(signum))})
    if where == "running":
        deadline = time.time() + 120
        while time.time() < deadline and not (ckpt / "run" / "log.jsonl").exists():
            time.sleep(0.05)
        proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-2000:]
    assert "stopping after this iteration" in out and "Traceback" not in err
    state = checkpoint.load_training_state(ckpt / "run")
    if where == "epoch_end_save":
        assert (state["epoch"], state["batches_done"]) == (2, 0)
    assert main(["train", *train_args(tiny_dataset, ckpt, "--continue_train", "--n_epochs", str(state["epoch"]))]) == 0


# --- damaged files ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_damaged_state_falls_back_to_the_previous_one(tiny_dataset, tmp_path, caplog, damage):
    ckpt = tmp_path / "ckpt"
    trainer(tiny_dataset, ckpt, "--n_epochs", "2").run()
    path = ckpt / "run" / checkpoint.STATE_FILE
    path.write_bytes(b"" if damage == "empty" else path.read_bytes()[:1000])
    with caplog.at_level("WARNING"):
        resumed = trainer(tiny_dataset, ckpt, "--continue_train", "--n_epochs", "3")
    assert resumed.epoch == 2 and "resuming from training_state.prev.pt" in caplog.text
    resumed.run()


def test_an_empty_weights_file_in_test_py_is_one_line(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    assert main(["train", *train_args(data, tmp_path / "ckpt")]) == 0
    (tmp_path / "ckpt" / "run" / "latest_net_G_A.pth").write_bytes(b"")
    assert main(["test", "--dataroot", str(data), "--name", "run", "--checkpoints_dir", str(tmp_path / "ckpt"),
                 "--results_dir", str(tmp_path / "results"), "--gpu_ids", "-1"]) == 2
    err = capsys.readouterr().err
    assert "latest_net_G_A.pth: cannot read checkpoint (empty file)" in err and "Traceback" not in err


FILE_SIZE_LIMIT = """
import resource, sys
sys.path.insert(0, {root!r})
import torch
from cyclegan_culture import files
from cyclegan_culture.errors import UserError
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))  # ulimit -f 1024
try:
    files.atomic_save({{"w": torch.zeros(1 << 20)}}, sys.argv[1])  # 4 MB: fails inside torch.save's writes
except UserError as exc:
    print(exc)
"""


def test_a_file_size_limit_during_torch_save_is_a_clear_message(tmp_path):
    script = tmp_path / "limit.py"
    script.write_text(FILE_SIZE_LIMIT.format(root=str(ROOT)))
    target = tmp_path / "w.pth"
    target.write_bytes(b"old")
    proc = subprocess.run([sys.executable, str(script), str(target)], capture_output=True, text=True, timeout=120)
    assert "file size limit reached (ulimit -f) while saving; the previous file is intact" in proc.stdout, proc.stderr
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["limit.py", "w.pth"]


def test_a_disk_that_fills_during_torch_save_is_a_clear_message(tmp_path, monkeypatch):
    real_fdopen = os.fdopen

    class FillingFile:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(files.os, "fdopen", lambda *a, **k: FillingFile(real_fdopen(*a, **k)))
    with pytest.raises(UserError, match="disk full while saving; the previous file is intact"):
        files.atomic_save({"w": torch.zeros(100_000)}, tmp_path / "w.pth")
    assert list(tmp_path.iterdir()) == []


# --- resume with changed flags ----------------------------------------------------------------------------------
def lr_in_force(run: Path) -> float:
    return checkpoint.load_training_state(run)["model"]["optimizers"][0]["param_groups"][0]["lr"]


def test_more_epochs_on_a_finished_run_train_at_the_new_schedules_rate(tiny_dataset, tmp_path):
    ckpt = tmp_path / "ckpt"
    trainer(tiny_dataset, ckpt).run()
    run = ckpt / "run"
    assert lr_in_force(run) == 0.0  # the linear schedule ended at zero
    before = torch.load(run / "latest_net_G_A.pth", weights_only=True)
    resumed = trainer(tiny_dataset, ckpt, "--continue_train", "--n_epochs", "2")
    assert resumed.model.learning_rates()["lr_G"] == pytest.approx(0.0002)
    resumed.run()
    after = torch.load(run / "latest_net_G_A.pth", weights_only=True)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert json.loads((run / "opt.json").read_text())["n_epochs"] == 2


def test_a_new_lr_on_resume_takes_effect_and_opt_json_records_it(tiny_dataset, tmp_path):
    ckpt = tmp_path / "ckpt"
    trainer(tiny_dataset, ckpt, "--n_epochs", "3", "--n_epochs_decay", "2").run()
    resumed = trainer(tiny_dataset, ckpt, "--continue_train", "--n_epochs", "5", "--n_epochs_decay", "2", "--lr",
                      "0.01")
    # epoch 6 of 3 + 2 -> 5 + 2: the new schedule's rate there, 0.01 * (1 - 1/3)
    expected = pytest.approx(0.01 * 2 / 3)
    assert resumed.model.learning_rates() == {"lr_G": expected, "lr_D": expected}
    assert json.loads((ckpt / "run" / "opt.json").read_text())["lr"] == 0.01


def test_flags_not_given_on_resume_keep_the_runs_values(tiny_dataset, tmp_path):
    ckpt = tmp_path / "ckpt"
    first = trainer(tiny_dataset, ckpt, "--n_epochs", "3", "--lambda_A", "4", hooks=[
        lambda t: t.request_stop() if t.total_iters == 2 else None])
    first.run()
    parser = options.build_train_parser()  # only the run's name and --continue_train
    resumed = Trainer(options.parse(parser, ["--name", "run", "--checkpoints_dir", str(ckpt), "--continue_train",
                                             "--gpu_ids", "-1", "--num_threads", "0"]), parser)
    assert (resumed.opt.n_epochs, resumed.opt.lambda_A, resumed.opt.crop_size) == (3, 4.0, 32)
    assert resumed.opt.dataroot == str(tiny_dataset)


@pytest.mark.parametrize("flag, value, message", [
    ("--batch_size", "2", "--batch_size 2: the run was trained with --batch_size 1"),
    ("--seed", "4", "it fixes the data order"),
    ("--optimizer", "sgd", "the optimizer's state was built for it"),
    ("--norm", "none", "it defines the networks"),
    ("--upsample", "resize", "it defines the networks"),
])
def test_flags_that_cannot_change_mid_run_are_refused(tiny_dataset, tmp_path, flag, value, message):
    ckpt = tmp_path / "ckpt"
    trainer(tiny_dataset, ckpt, "--n_epochs", "2", hooks=[
        lambda t: t.request_stop() if t.total_iters == 2 else None]).run()
    with pytest.raises(UserError, match=message):
        trainer(tiny_dataset, ckpt, "--continue_train", "--n_epochs", "2", flag, value)


def test_another_dataroot_on_resume_needs_the_same_images(tiny_dataset, tmp_path):
    import shutil

    ckpt = tmp_path / "ckpt"
    trainer(tiny_dataset, ckpt, "--n_epochs", "2", hooks=[
        lambda t: t.request_stop() if t.total_iters == 2 else None]).run()
    card = (ckpt / "run" / "culture.json").read_bytes()
    other = make_dataset(tmp_path / "other", n_a=5)
    (other / "culture.json").write_text('{"name": "Other"}')
    with pytest.raises(UserError, match="holds other images than the run's dataroot"):
        trainer(other, ckpt, "--continue_train", "--n_epochs", "2")
    moved = tmp_path / "moved"
    shutil.copytree(tiny_dataset, moved)  # the same images, moved: accepted
    trainer(moved, ckpt, "--continue_train", "--n_epochs", "2").run()
    assert (ckpt / "run" / "culture.json").read_bytes() == card


def test_resuming_a_finished_run_says_it_is_finished(tiny_dataset, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    trainer(tiny_dataset, ckpt).run()
    result = trainer(tiny_dataset, ckpt, "--continue_train").run()
    assert not result.interrupted and "run is finished" in capsys.readouterr().out


# --- options that would fail late -------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (["--crop_size", "30"], "--crop_size 30 must be a multiple of 4"),
    (["--crop_size", "16", "--load_size", "16"], "--crop_size 16 is too small for --netD basic: use at least 24"),
    (["--netD", "n_layers", "--n_layers_D", "5"], "too small for --netD n_layers --n_layers_D 5: use at least 96"),
    (["--input_nc", "1", "--lambda_identity", "0"], "--input_nc 1: only RGB images"),
    (["--epoch_count", "0"], "--epoch_count must be 1 or more"),
    (["--continue_train", "--start_over"], "contradict each other"),
])
def test_options_that_cannot_work_are_refused_before_training(tiny_dataset, tmp_path, capsys, extra, message):
    assert main(["train", *train_args(tiny_dataset, tmp_path / "ckpt", *extra)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list((tmp_path / "ckpt").rglob("*.pth"))


@pytest.mark.parametrize("extra", [["--preprocess", "scale_width", "--load_size", "30"],
                                   ["--preprocess", "none", "--netD", "n_layers", "--n_layers_D", "4"]])
def test_size_preserving_preprocessing_gives_sizes_the_networks_take(tiny_dataset, tmp_path, extra):
    assert main(["train", *train_args(tiny_dataset, tmp_path / "ckpt", *extra)]) == 0
