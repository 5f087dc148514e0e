"""Data-parallel training under torchrun, with gloo on CPU: two real processes at a tiny size.

Tolerance for "the same as one process with a batch of two": 1e-6 absolute on every weight after 4 SGD steps
(measured: 2e-8 with instance norm, 2e-7 with synchronised batch norm). The two runs add the same gradients in a
different order (all-reduce of two per-image gradients vs one batched backward), so they agree to float32
rounding, not bit for bit. The test uses SGD because Adam's first steps move every weight by about lr times the
sign of its gradient, which turns rounding noise in near-zero gradients into differences of lr.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cyclegan_culture import options
from cyclegan_culture.data.unpaired import EpochSampler
from cyclegan_culture.runs import checkpoint
from cyclegan_culture.engine.trainer import Trainer
from tests.conftest import ROOT, TINY, make_dataset

TORCHRUN = Path(sys.executable).with_name("torchrun")
NETS = ("G_A", "G_B", "D_A", "D_B")

# Runs train.py's command line in each rank; optionally SIGKILLs rank 1 after an iteration; saves each rank's
# final weights so the test can compare them (only rank 0 writes checkpoints).
DRIVER = '''
import os, signal, sys, time
sys.path.insert(0, {root!r})
import torch
from cyclegan_culture import cli
from cyclegan_culture.engine import trainer as trainer_mod

out, kill_at, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rank = int(os.environ["RANK"])
made = []
original_init = trainer_mod.Trainer.__init__

def die(t):
    if rank == 1 and t.total_iters == kill_at:
        with open(os.path.join(out, "killed_at"), "w") as f:
            f.write(repr(time.time()))
        os.kill(os.getpid(), signal.SIGKILL)

def slow(t):  # TEST_SLOW_ITER: make each iteration take at least this long
    time.sleep(float(os.environ.get("TEST_SLOW_ITER", "0")))

def init(self, opt, parser, hooks=None):
    original_init(self, opt, parser, hooks=[die, slow])
    made.append(self)

trainer_mod.Trainer.__init__ = init
code = cli.main(["train", *argv])
if made and code == 0:
    torch.save({{n: net.state_dict() for n, net in made[0].model.nets.items()}}, os.path.join(out, f"rank{{rank}}.pt"))
sys.exit(code)
'''

pytestmark = pytest.mark.skipif(not TORCHRUN.exists() or not torch.distributed.is_gloo_available(),
                                reason="torchrun with gloo is not available in this PyTorch")


def torchrun_command(tmp: Path, args: list[str], kill_at: int = 0) -> list[str]:
    driver = tmp / "driver.py"
    driver.write_text(DRIVER.format(root=str(ROOT)))
    return [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(driver), str(tmp), str(kill_at), *args]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def torchrun(tmp: Path, args: list[str], kill_at: int = 0, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun_command(tmp, args, kill_at), capture_output=True, text=True, timeout=timeout,
                          env=ENV)


def run_args(data: Path, ckpt: Path, *extra: str) -> list[str]:
    return ["--dataroot", str(data), "--name", "run", "--checkpoints_dir", str(ckpt), *TINY, "--display_id", "0",
            "--print_freq", "2", *extra]


def saved_weights(run: Path) -> dict:
    return {n: torch.load(run / f"latest_net_{n}.pth", weights_only=True) for n in NETS}


def max_difference(a: dict, b: dict) -> float:
    return max((a[n][k].float() - b[n][k].float()).abs().max().item() for n in a for k in a[n])


# --- the sampler ----------------------------------------------------------------------------------------------
def test_shards_are_disjoint_equal_sized_cover_the_epoch_and_reshuffle_deterministically():
    length, world = 7, 3
    shards = [EpochSampler(length, seed=5, rank=r, world_size=world).share(epoch=2) for r in range(world)]
    assert [len(s) for s in shards] == [3, 3, 3]  # padded to 9 by wrapping around
    flat = [i for s in zip(*shards) for i in s]
    assert sorted(set(flat)) == list(range(length)) and len(flat) - len(set(flat)) == 2
    assert EpochSampler(length, 5, rank=1, world_size=world).share(2) == shards[1]   # same seed, same shard
    assert EpochSampler(length, 5, rank=1, world_size=world).share(3) != shards[1]   # a new order each epoch
    assert EpochSampler(length, 6, rank=1, world_size=world).share(2) != shards[1]


def test_kth_batches_of_all_ranks_hold_the_kth_batch_of_one_process_with_a_larger_batch():
    length, world, batch = 12, 2, 3
    single = EpochSampler(length, seed=1).share(4)
    ranks = [EpochSampler(length, seed=1, rank=r, world_size=world).share(4) for r in range(world)]
    for k in range(length // (world * batch)):
        together = {i for r in ranks for i in r[k * batch:(k + 1) * batch]}
        assert together == set(single[k * world * batch:(k + 1) * world * batch])


def test_resume_start_skips_this_ranks_first_samples():
    sampler = EpochSampler(10, seed=2, rank=1, world_size=2)
    sampler.set_epoch(3, start=2)
    assert [i for _, i in sampler] == sampler.share(3)[2:] and len(sampler) == 3


# --- two processes --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_two_ranks_end_identical_and_match_one_process_with_batch_two(tmp_path, norm):
    data = make_dataset(tmp_path / "data", n_a=8, n_b=5)
    # 4 images, 2 epochs: 4 steps of 2 images. PyTorch's convolutions in NCHW throughout (--conv_algorithm direct,
    # --channels_last off), so what is compared is data parallelism and its rounding alone. Each generator call
    # batches the images it takes (CycleGANModel.forward): 3 per rank, 6 in the single process, whose weight
    # gradients oneDNN sums in another order; these tiny instance-normalised maps grow that rounding (~1e-7
    # relative) to ~6e-5 in the weights over four steps, 1/60 of how far training moved them (3.6e-3). A
    # data-parallel error (gradients summed instead of averaged, one rank's images lost) differs by about as
    # much as training moved them.
    common = ["--pool_size", "0", "--optimizer", "sgd", "--n_epochs", "1", "--n_epochs_decay", "1", "--norm", norm, "--seed", "3",
              "--max_dataset_size", "4", "--conv_algorithm", "direct", "--channels_last", "off"]
    result = torchrun(tmp_path, run_args(data, tmp_path / "ddp", *common))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "effective batch 2" in result.stdout
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert max_difference(rank0, rank1) == 0.0
    assert max_difference(rank0, saved_weights(tmp_path / "ddp" / "run")) == 0.0  # rank 0 saved what it had
    # Only rank 0 writes the log: one line per logged step, not two.
    log_lines = [line for line in (tmp_path / "ddp" / "run" / "loss_log.txt").read_text().splitlines()
                 if line.startswith("(epoch")]
    assert len(log_lines) == 4

    parser = options.build_train_parser()
    Trainer(options.parse(parser, run_args(data, tmp_path / "single", *common, "--batch_size", "2")), parser).run()
    single = saved_weights(tmp_path / "single" / "run")
    parser = options.build_train_parser()
    fresh = Trainer(options.parse(parser, run_args(data, tmp_path / "init", *common)), parser)  # not run
    initial = {n: net.state_dict() for n, net in fresh.model.nets.items()}
    moved = max((rank0[n][k] - initial[n][k]).abs().max().item() for n in NETS for k in rank0[n]
                if rank0[n][k].is_floating_point())
    assert moved > 1e-3
    assert max_difference(rank0, single) < moved / 20


@pytest.fixture(scope="module")
def resumable(tmp_path_factory):
    """A 2-process run killed on rank 1 after iteration 10 (the state was saved at image 8), and an uninterrupted
    2-process run with the same options."""
    tmp = tmp_path_factory.mktemp("ddp_resume")
    data = make_dataset(tmp / "data", n_a=6, n_b=4)
    args = ["--n_epochs", "2", "--n_epochs_decay", "2", "--pool_size", "4", "--use_dropout", "--seed", "7",
            "--save_latest_freq", "8"]
    for out in ("clean_out", "killed_out", "resumed_out"):
        (tmp / out).mkdir()
    clean = torchrun(tmp / "clean_out", run_args(data, tmp / "clean", *args))
    assert clean.returncode == 0, clean.stderr[-3000:]
    killed = torchrun(tmp / "killed_out", run_args(data, tmp / "killed", *args), kill_at=10)
    ended = time.time()
    shutil.copytree(tmp / "killed", tmp / "killed_copy")  # for resuming with another process count
    return {"tmp": tmp, "data": data, "args": args, "killed": killed, "ended": ended}


def test_killing_one_rank_stops_the_job_promptly_with_a_clear_message(resumable):
    killed = resumable["killed"]
    killed_at = float((resumable["tmp"] / "killed_out" / "killed_at").read_text())
    assert killed.returncode != 0
    assert resumable["ended"] - killed_at < 30, "the surviving rank kept the job alive"
    output = killed.stdout + killed.stderr
    # torchrun names the rank that died and why; the surviving rank says in one line why it stopped
    assert "rank: 1" in output and "SIGKILL" in output
    ours = [line for line in killed.stderr.splitlines() if line.startswith("error (rank 0 of 2)")]
    assert len(ours) <= 1 and all("another rank failed" in line for line in ours)
    # no traceback from our code (torchrun's launcher prints its own ChildFailedError report)
    assert f'File "{ROOT / "cyclegan_culture"}' not in killed.stderr
    state = checkpoint.load_training_state(resumable["tmp"] / "killed" / "run")  # intact, checksum verified
    assert state["world_size"] == 2 and state["total_iters"] == 8 and len(state["other_ranks"]) == 1


def test_resumed_two_process_run_is_bit_identical_to_an_uninterrupted_one(resumable):
    tmp = resumable["tmp"]
    resumed = torchrun(tmp / "resumed_out", run_args(resumable["data"], tmp / "killed", *resumable["args"],
                                                      "--continue_train"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert max_difference(saved_weights(tmp / "killed" / "run"), saved_weights(tmp / "clean" / "run")) == 0.0
    state = checkpoint.load_training_state(tmp / "killed" / "run")
    clean_state = checkpoint.load_training_state(tmp / "clean" / "run")
    # rank 1's replay buffer came back too (the pools differ per rank, and both match the clean run's)
    for ours, theirs in zip(state["other_ranks"][0]["pools"]["fake_A"]["images"],
                            clean_state["other_ranks"][0]["pools"]["fake_A"]["images"]):
        assert torch.equal(ours, theirs)


def test_a_two_process_state_resumes_in_one_process_from_the_same_position(resumable, capsys):
    tmp = resumable["tmp"]
    parser = options.build_train_parser()
    opt = options.parse(parser, run_args(resumable["data"], tmp / "killed_copy", *resumable["args"],
                                         "--continue_train"))
    result = Trainer(opt, parser).run()
    assert "saved with 2 process(es) and resumes with 1" in capsys.readouterr().out
    clean = checkpoint.load_training_state(tmp / "clean" / "run")
    assert not result.interrupted and result.total_iters == clean["total_iters"] == 24  # no image lost or added
    assert checkpoint.load_training_state(tmp / "killed_copy" / "run")["world_size"] == 1


def test_commands_other_than_train_refuse_to_run_under_torchrun(monkeypatch, capsys):
    from cyclegan_culture.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["test", "--dataroot", "anything"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error (rank 1 of 2): test runs in one process") and "\n" not in err


def test_two_nodes_with_c10d_rendezvous_train_like_one_node_with_two_processes(tmp_path):
    """Two torchrun launchers, as on two machines (here both on localhost), meet through c10d rendezvous."""
    import socket

    data = make_dataset(tmp_path / "data", n_a=4, n_b=3)
    args = ["--n_epochs", "1", "--n_epochs_decay", "1", "--seed", "5", "--pool_size", "2"]
    (tmp_path / "one").mkdir()
    one_node = torchrun(tmp_path / "one", run_args(data, tmp_path / "one_node", *args))
    assert one_node.returncode == 0, one_node.stderr[-3000:]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    driver = tmp_path / "one" / "driver.py"
    (tmp_path / "two").mkdir()
    launchers = [subprocess.Popen([str(TORCHRUN), "--nnodes=2", "--nproc_per_node=1", f"--node_rank={node}",
                                   "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=test",
                                   str(driver), str(tmp_path / "two"), "0",
                                   *run_args(data, tmp_path / "two_nodes", *args)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
                 for node in (0, 1)]
    outputs = [p.communicate(timeout=240) for p in launchers]
    assert all(p.returncode == 0 for p in launchers), outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert max_difference(saved_weights(tmp_path / "two_nodes" / "run"),
                          saved_weights(tmp_path / "one_node" / "run")) == 0.0


@pytest.mark.parametrize("signame, target", [("SIGINT", "group"), ("SIGTERM", "group"), ("SIGTERM", "torchrun")])
def test_ctrl_c_under_torchrun_saves_once_and_stops_every_rank(tmp_path, signame, target):
    """Ctrl-C in a terminal (and SLURM's scancel, with SIGTERM) signals the whole process group (torchrun and every
    rank, and torchrun forwards it once more); docker stop signals torchrun alone, which forwards it: either way
    the ranks agree on one iteration, save once, and stop."""
    import signal

    data = make_dataset(tmp_path / "data", n_a=4, n_b=3)
    run = tmp_path / "ckpt" / "run"
    job = subprocess.Popen(torchrun_command(tmp_path, run_args(data, tmp_path / "ckpt", "--n_epochs", "100")),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**ENV, "TEST_SLOW_ITER": "0.5"}, start_new_session=True)
    deadline = time.time() + 120
    while not (run / "training_state.pt").exists() and time.time() < deadline:  # saved after epoch 1
        time.sleep(0.2)
    time.sleep(0.7)  # now in the middle of an iteration of epoch 2
    signum = getattr(signal, signame)
    if target == "group":
        os.killpg(job.pid, signum)  # what Ctrl-C in a terminal does: the whole process group
    else:
        job.send_signal(signum)
    out, err = job.communicate(timeout=120)
    assert "stopped on request" in out, err[-3000:]
    state = checkpoint.load_training_state(run)
    assert state["epoch"] >= 2 and state["world_size"] == 2
    assert "Traceback" not in "".join(line for line in err.splitlines(True) if "cyclegan_culture" in line)


def test_torchrun_echo_of_ctrl_c_is_not_taken_for_a_second_press(tiny_dataset, tmp_path, monkeypatch):
    """The echo usually merges with the first signal, but not when it lands between two operations; then it
    must not abort the save. A real second press, later, still aborts."""
    from cyclegan_culture.engine import trainer as trainer_mod
    from cyclegan_culture.engine.distributed import Distributed

    parser = options.build_train_parser()
    trainer = Trainer(options.parse(parser, run_args(tiny_dataset, tmp_path / "ckpt")), parser)
    trainer.dist = Distributed(rank=0, world_size=2)  # as under torchrun
    clock = [100.0]
    monkeypatch.setattr(trainer_mod.time, "monotonic", lambda: clock[0])
    trainer._on_stop_signal(2, None)
    clock[0] += 0.05
    try:
        trainer._on_stop_signal(2, None)  # torchrun's forwarded copy: ignored
    except KeyboardInterrupt:
        pytest.fail("torchrun's forwarded Ctrl-C aborted the run without saving")
    assert trainer._stop_requested
    clock[0] += trainer_mod.TORCHRUN_SIGNAL_ECHO_S
    with pytest.raises(KeyboardInterrupt):
        trainer._on_stop_signal(2, None)
    trainer.dist = Distributed()  # one process: a second press aborts at once
    with pytest.raises(KeyboardInterrupt):
        trainer._on_stop_signal(2, None)
