"""kill -9 a training run at several moments, including half-way through writing a checkpoint, resume each time
with --continue_train, and end with the same weights, bit for bit, as a run that was never interrupted."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from cyclegan_culture import options
from cyclegan_culture.runs import checkpoint
from cyclegan_culture.engine.trainer import Trainer
from tests.conftest import ROOT, TINY

DRIVER = '''
import os, signal, sys
sys.path.insert(0, {root!r})
from cyclegan_culture import files, options
from cyclegan_culture.engine.trainer import Trainer

mode, k, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
if mode == "write":  # die half-way through the k-th write of the training state
    original, count = files._atomic_write, [0]
    def dying(path, write, mode="wb"):
        if str(path).endswith("training_state.pt.new"):
            count[0] += 1
            if count[0] == k:
                def half(f):
                    write(f)
                    f.flush()
                    f.truncate(f.tell() // 2)
                    os.kill(os.getpid(), signal.SIGKILL)
                return original(path, half, mode)
        return original(path, write, mode)
    files._atomic_write = dying
hooks = []
if mode == "iter":  # die right after iteration k, wherever the last checkpoint was
    hooks.append(lambda t: os.kill(os.getpid(), signal.SIGKILL) if t.total_iters == k else None)
parser = options.build_train_parser()
Trainer(options.parse(parser, argv), parser, hooks=hooks).run()
'''


def config(dataroot: Path, ckpt: Path) -> list[str]:
    return ["--dataroot", str(dataroot), "--name", "run", "--checkpoints_dir", str(ckpt), *TINY, "--n_epochs", "3",
            "--n_epochs_decay", "2", "--save_latest_freq", "3", "--pool_size", "3", "--use_dropout", "--seed", "11",
            "--print_freq", "1000", "--display_freq", "5"]


def weights(run: Path) -> dict:
    return {n: torch.load(run / f"latest_net_{n}.pth", weights_only=True) for n in ("G_A", "G_B", "D_A", "D_B")}


def test_kill_nine_at_random_moments_then_resume_is_bit_identical(tiny_dataset, tmp_path):
    parser = options.build_train_parser()
    Trainer(options.parse(parser, config(tiny_dataset, tmp_path / "clean")), parser).run()
    expected = weights(tmp_path / "clean" / "run")

    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(root=str(ROOT)))
    ckpt = tmp_path / "killed"
    rng = random.Random(2026)
    # 20 iterations in all (4 images x 5 epochs); kills at random iterations, inside random checkpoint writes,
    # and once at a random wall-clock moment
    plan = [("write", 1), ("iter", rng.randint(2, 5)), ("write", rng.randint(1, 3)), ("iter", rng.randint(9, 12)),
            ("time", 0), ("write", rng.randint(1, 2)), ("iter", rng.randint(16, 19))]
    kills = 0
    for mode, k in plan:
        # a kill inside the first save can leave weights but no state: that needs --start_over to begin again
        resume = ["--continue_train"] if any((ckpt / "run" / name).exists() for name in checkpoint.STATE_FILES) \
            else ["--start_over"] if list((ckpt / "run").glob("*_net_*.pth")) else []
        cmd = [sys.executable, str(driver), mode, str(k), *config(tiny_dataset, ckpt), *resume]
        if mode == "time":
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 60
            while time.time() < deadline and not (ckpt / "run" / "web").exists():
                time.sleep(0.05)  # wait until it is training, then kill at a random moment
            time.sleep(rng.uniform(0.0, 0.3))
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            kills += proc.returncode == -signal.SIGKILL
            continue
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode == -signal.SIGKILL:
            kills += 1
        else:  # its kill point was already passed by an earlier resume: it ran to the end
            assert proc.returncode == 0, proc.stderr[-2000:]
    assert kills >= 5
    final = subprocess.run([sys.executable, str(driver), "none", "0", *config(tiny_dataset, ckpt), "--continue_train"],
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    got = weights(ckpt / "run")
    for net in expected:
        for key in expected[net]:
            assert torch.equal(expected[net][key], got[net][key]), f"{net}.{key} differs after kill -9 and resume"
