"""Shared fixtures: tiny synthetic datasets and tiny-network options, so the suite stays fast."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
# The per-machine tuner times algorithms and would make choices (and rounding) depend on timing noise: the suite
# runs with the built-in thresholds, and tests/test_autotune.py switches it on with a cache of its own.
os.environ.setdefault("CYCLEGAN_CULTURE_AUTOTUNE", "off")
# Nothing the suite caches (plans, --backend exports) lands in the user's cache folder; child processes inherit it.
if "CYCLEGAN_CULTURE_CACHE" not in os.environ:
    os.environ["CYCLEGAN_CULTURE_CACHE"] = tempfile.mkdtemp(prefix="cyclegan-culture-test-cache-")
    atexit.register(shutil.rmtree, os.environ["CYCLEGAN_CULTURE_CACHE"], True)  # the process that made it
SHARED = ROOT.parent / "shared"

# Flags for a network small enough to train for a few iterations in well under a second.
TINY = ["--load_size", "36", "--crop_size", "32", "--ngf", "4", "--ndf", "4", "--netG", "resnet_6blocks",
        "--num_threads", "0", "--gpu_ids", "-1"]


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test: users and plain clones do not have it."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not present (it exists only on the developers' machines)")
    return path


def write_image(path: Path, size: tuple[int, int], seed: int, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    w, h = size
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert(mode).save(path)
    return path


def make_dataset(root: Path, n_a: int = 4, n_b: int = 3, size: tuple[int, int] = (40, 36),
                 test_sizes: tuple[tuple[int, int], ...] = ((40, 36), (31, 45))) -> Path:
    for i in range(n_a):
        write_image(root / "trainA" / f"a{i}.png", size, seed=i)
    for i in range(n_b):
        write_image(root / "trainB" / f"b{i}.jpg", size, seed=100 + i)
    for i, s in enumerate(test_sizes):
        write_image(root / "testA" / f"ta{i}.png", s, seed=200 + i)
        write_image(root / "testB" / f"tb{i}.png", s, seed=300 + i)
    return root


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch):
    """The tuner keeps no choice timed while other programs load the machine (accel/autotune.py); what a test sees
    kept must not depend on what else runs beside the suite. tests/test_autotune.py measures the real meter."""
    from cyclegan_culture.accel import autotune
    monkeypatch.setattr(autotune.CpuLoadMeter, "other_cores", lambda self: None)


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


def make_run(run_dir: Path, culture: str, seed: int, ema: bool = False) -> Path:
    """A run folder with an untrained tiny generator (enough to test loading and installing)."""
    from cyclegan_culture.models import networks
    from cyclegan_culture.models.config import ModelConfig

    torch.manual_seed(seed)
    config = ModelConfig(ngf=4, netG="resnet_6blocks", ema_decay=0.99 if ema else 0.0)
    net = networks.define_G(3, 3, config.ngf, config.netG, config.norm, False, config.init_type, config.init_gain)
    run_dir.mkdir(parents=True)
    name = "G_A_ema" if ema else "G_A"
    torch.save(net.state_dict(), run_dir / f"latest_net_{name}.pth")
    (run_dir / "config.json").write_text(json.dumps({"model": "cycle_gan", "model_config": config.to_dict()}))
    (run_dir / "culture.json").write_text(json.dumps({"name": culture.title(), "native_name": "文化",
                                                       "region": "Somewhere", "description": f"Art of {culture}. "
                                                       "More words.", "domain_B": culture}))
    return run_dir


@pytest.fixture
def tiny_culture_home(tmp_path, monkeypatch):
    """Two user cultures (ink, print) installed into a temporary home."""
    from cyclegan_culture.pretrained import catalog

    monkeypatch.setenv(catalog.HOME_ENV, str(tmp_path / "home"))
    for i, key in enumerate(("ink", "print")):
        catalog.install(key, make_run(tmp_path / "runs" / key, key, seed=i))
    return tmp_path / "home"


# --- headless Chromium, driven through the DevTools protocol (page checks) -------------------------------------
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevTools:
    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str, await_promise: bool = False):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=await_promise)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 90.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {expression}")


@pytest.fixture
def browser(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; CI installs it)")
    pytest.importorskip("websocket")
    port = free_port()
    proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--remote-debugging-port={port}",
                             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        targets = None
        for _ in range(300):
            try:
                targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2).read())
                if any(t["type"] == "page" for t in targets):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        page = next(t for t in targets or [] if t["type"] == "page")
        yield DevTools(page["webSocketDebuggerUrl"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
