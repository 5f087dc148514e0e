"""Live monitoring: a real offline Visdom server, a tiny training run, a server killed mid-run, and the page in
headless Chromium. The monitor's non-blocking behaviour is checked with a fake client."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from cyclegan_culture import options
from cyclegan_culture.engine.trainer import Trainer
from cyclegan_culture.viz.visdom_monitor import LossPoint, VisdomMonitor
from tests.conftest import TINY


# --- the monitor alone --------------------------------------------------------------------------------------------
class FakeClient:
    def __init__(self, gate: threading.Event | None = None):
        self.gate = gate
        self.lines: dict[str, tuple] = {}
        self.images: list = []

    def line(self, X, Y, win, env, opts):
        if self.gate:
            self.gate.wait()
        self.lines[win] = (list(X), list(Y))

    def images(self, grid, nrow, win, env, padding, opts):
        self.images.append((grid.shape, opts["title"]))


def point(i: int) -> LossPoint:
    return LossPoint(1 + i / 10, {"D_A": float(i), "G_A": 2.0 * i}, {"lr_G": 0.0002}, 0.1)


def test_monitor_never_blocks_training_when_the_server_hangs():
    gate = threading.Event()
    client = FakeClient(gate)
    monitor = VisdomMonitor("http://x", 1, "env", "t", client_factory=lambda *a: client)
    done = threading.Event()

    def training():
        for i in range(500):
            monitor.plot_losses(point(i))
            monitor.show_visuals({"real_A": np.zeros((3, 8, 8), np.uint8)}, 1)
        done.set()

    worker = threading.Thread(target=training)
    worker.start()
    worker.join(timeout=30)
    finished = done.is_set()
    gate.set()  # let the "server" answer
    monitor.close()
    assert finished, "the training thread waited on the monitor"
    x, y = client.lines["plot_D_A"]
    assert len(x) == 500 and y[-1] == 499.0  # nothing lost although the queue overflowed


def test_monitor_warns_once_and_resumes_with_the_full_history(capsys):
    state = {"up": False}
    client = FakeClient()

    def factory(*args):
        if not state["up"]:
            raise ConnectionError("refused")
        return client

    monitor = VisdomMonitor("http://x", 1, "env", "t", client_factory=factory)
    for i in range(5):
        monitor.plot_losses(point(i))
        time.sleep(0.02)
    state["up"] = True
    monitor.plot_losses(point(5))
    monitor.close()
    out = capsys.readouterr().out  # printed as lines of their own (tqdm.write), not glued to a progress bar
    assert out.count("is unreachable") == 1
    assert len(client.lines["plot_G_A"][0]) == 6
    assert "monitoring resumed" in out


def test_resumed_run_seeds_the_plots_from_log_jsonl(tiny_dataset, tmp_path):
    def run(*extra, hooks=()):
        parser = options.build_train_parser()
        opt = options.parse(parser, ["--dataroot", str(tiny_dataset), "--name", "r", "--checkpoints_dir",
                                     str(tmp_path), *TINY, "--n_epochs", "1", "--n_epochs_decay", "1",
                                     "--print_freq", "2", "--save_latest_freq", "2", *extra])
        return Trainer(opt, parser, hooks=list(hooks)).run()

    import cyclegan_culture.viz.visdom_monitor as vm
    fake = FakeClient()
    real_factory = vm._make_client
    vm._make_client = lambda *a: fake
    try:
        run("--display_id", "0", hooks=[lambda t: t.request_stop() if t.total_iters == 6 else None])
        run("--display_id", "1", "--continue_train")
    finally:
        vm._make_client = real_factory
    x, _ = fake.lines["plot_D_A"]
    assert x == sorted(x) and len(x) == 4  # 3 points from before the stop, 1 after: one curve, not a restart
    assert x[0] == pytest.approx(1.5)


# --- a real server ----------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(port: int, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"visdom server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("visdom server did not start")


def _start_server(port: int, env_path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "cyclegan_culture", "visdom", "--port", str(port),
                             "--env_path", str(env_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    _wait_until_up(port, proc)
    return proc


@pytest.fixture
def visdom_server(tmp_path):
    pytest.importorskip("visdom", reason="visdom is not installed (make install adds it)")
    from cyclegan_culture.viz.visdom_assets import missing_assets, visdom_static_dir
    if missing_assets(visdom_static_dir()):
        pytest.skip("Visdom's front-end files are not installed: run `cyclegan-culture visdom --install-assets`")
    port = _free_port()
    env_path = tmp_path / "visdom_env"
    proc = _start_server(port, env_path)
    server = {"port": port, "proc": proc, "env_path": env_path}
    yield server
    server["proc"].terminate()
    server["proc"].wait(10)


def _train(dataroot: Path, ckpt: Path, port: int, hooks=()) -> Trainer:
    parser = options.build_train_parser()
    opt = options.parse(parser, ["--dataroot", str(dataroot), "--name", "live", "--checkpoints_dir", str(ckpt), *TINY,
                                 "--n_epochs", "2", "--n_epochs_decay", "1", "--print_freq", "2",
                                 "--display_freq", "2", "--display_id", "1", "--display_port", str(port)])
    trainer = Trainer(opt, parser, hooks=list(hooks))
    trainer.run()
    return trainer


def _client(port: int):
    import visdom
    return visdom.Visdom(server="http://127.0.0.1", port=port, env="live", use_incoming_socket=False,
                         raise_exceptions=True)


def test_training_plots_reach_a_real_server(tiny_dataset, tmp_path, visdom_server):
    _train(tiny_dataset, tmp_path / "ckpt", visdom_server["port"])
    client = _client(visdom_server["port"])
    for loss in ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B", "lr_G", "sec_per_iter"):
        assert client.win_exists(f"plot_{loss}", env="live"), loss
    data = json.loads(client.get_window_data("plot_cycle_A", env="live"))
    assert len(data["content"]["data"][0]["x"]) == 6       # 12 iterations, logged every 2
    logged = [json.loads(l)["cycle_A"] for l in (tmp_path / "ckpt" / "live" / "log.jsonl").read_text().splitlines()]
    assert data["content"]["data"][0]["y"] == pytest.approx(logged)
    assert client.win_exists("visuals", env="live")
    assert "epoch 3" in json.loads(client.get_window_data("visuals", env="live"))["title"]


def test_server_killed_mid_run_training_completes_and_monitoring_resumes(tiny_dataset, tmp_path, visdom_server,
                                                                          capsys):
    def chaos(trainer: Trainer) -> None:
        if trainer.total_iters == 4:
            visdom_server["proc"].terminate()
            visdom_server["proc"].wait(10)
        if trainer.total_iters == 8:
            visdom_server["proc"] = _start_server(visdom_server["port"], visdom_server["env_path"])

    trainer = _train(tiny_dataset, tmp_path / "ckpt", visdom_server["port"], hooks=[chaos])
    out = capsys.readouterr().out
    assert trainer.total_iters == 12
    run = tmp_path / "ckpt" / "live"
    for net in ("G_A", "G_B", "D_A", "D_B"):
        assert torch.load(run / f"latest_net_{net}.pth", weights_only=True)
    assert out.count("is unreachable") == 1 and "/env/live" in out
    data = json.loads(_client(visdom_server["port"]).get_window_data("plot_G_A", env="live"))
    assert len(data["content"]["data"][0]["x"]) == 6  # the points logged while it was down came back too


def test_page_renders_plots_in_headless_chromium(tiny_dataset, tmp_path, visdom_server):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; CI installs it)")
    _train(tiny_dataset, tmp_path / "ckpt", visdom_server["port"])
    url = f"http://127.0.0.1:{visdom_server['port']}/env/live"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-quic", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=15000", "--window-size=1400,1000"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "js-plotly-plot" in dom and "main-svg" in dom  # plotly drew its SVG plots
    shot = tmp_path / "visdom.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    from PIL import Image
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10  # not a blank page
