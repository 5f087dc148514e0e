"""--backend openvino / onnxruntime: the generator exported to ONNX and run by another runtime gives PyTorch's
output at the input's own size, large images keep PyTorch's tiled path, and a missing package is one line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan_culture.backends import RuntimeGenerator, on_backend
from cyclegan_culture.cli import main
from cyclegan_culture.errors import UserError
from cyclegan_culture.inference import Stylizer
from cyclegan_culture.models import networks
from tests.conftest import ROOT, TINY, make_dataset, make_run, write_image

RUNTIMES = ["openvino", "onnxruntime"]
# OpenVINO stays loaded once imported, with its own thread pool; in one pytest process with the rest of the suite
# a later Visdom training test then crashed the process (segfault). Its tests run in a child process of their own
# (test_openvino_tests_in_their_own_process); the CLI runs one command per process.
OPENVINO_CHILD = "CYCLEGAN_CULTURE_TEST_OPENVINO_CHILD"


def needs(backend: str) -> None:
    pytest.importorskip(backend)
    if backend == "openvino" and os.environ.get(OPENVINO_CHILD) != "1":
        pytest.skip("runs in its own process (test_openvino_tests_in_their_own_process)")


def test_openvino_tests_in_their_own_process():
    pytest.importorskip("openvino")
    env = {**os.environ, OPENVINO_CHILD: "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                           "openvino and not own_process"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-1000:]


def tiny_generator(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return networks.define_G(3, 3, 4, "resnet_6blocks", "instance", False, "normal", 0.02, "resize").eval()


@pytest.mark.parametrize("backend", RUNTIMES)
def test_runtime_gives_pytorchs_output_at_the_images_own_size(backend):
    needs(backend)
    image = torch.rand(1, 3, 37, 50) * 2 - 1  # not a multiple of 4: padded and cropped back
    expected = Stylizer(tiny_generator(), tile=0).stylize_tensor(image)
    stylizer = Stylizer(tiny_generator(), tile=0, backend=backend)
    assert isinstance(stylizer._whole, RuntimeGenerator)
    got = stylizer.stylize_tensor(image)
    assert got.shape == expected.shape == (1, 3, 37, 50)
    assert float((got - expected).abs().max()) < 1e-4


@pytest.mark.parametrize("backend", RUNTIMES)
def test_images_larger_than_the_tile_keep_pytorchs_tiled_path(backend):
    needs(backend)
    image = torch.rand(1, 3, 72, 90) * 2 - 1
    expected = Stylizer(tiny_generator(), tile=48, overlap=8).stylize_tensor(image)
    got = Stylizer(tiny_generator(), tile=48, overlap=8, backend=backend).stylize_tensor(image)
    assert torch.equal(got, expected)  # the same tiles with shared statistics, not the runtime's whole image


def test_openvino_runs_bf16_under_amp_and_fp32_without():
    needs("openvino")
    assert on_backend(tiny_generator(), "openvino", torch.bfloat16).precision == "bf16"
    assert on_backend(tiny_generator(), "openvino", None).precision == "f32"


def test_the_callers_network_is_not_changed_by_exporting():
    needs("onnxruntime")
    net = tiny_generator()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    kinds = [type(m) for m in net.modules()]
    on_backend(net, "onnxruntime")
    assert [type(m) for m in net.modules()] == kinds
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_a_missing_runtime_is_one_line_naming_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(UserError, match=r'pip install "cyclegan-culture\[openvino\]"'):
        on_backend(tiny_generator(), "openvino")


def test_stylize_and_test_py_take_openvino_backend(tmp_path, capsys):
    needs("openvino")
    run = make_run(tmp_path / "runs" / "ink", "ink", seed=1)
    photos = tmp_path / "photos"
    write_image(photos / "a.png", (41, 30), seed=5)
    for backend in ("pytorch", "openvino"):
        assert main(["stylize", "--model", str(run), str(photos), "--out", str(tmp_path / backend),
                     "--backend", backend, "--gpu_ids", "-1"]) == 0
    a, b = (np.asarray(Image.open(tmp_path / k / "a.png"), dtype=int) for k in ("pytorch", "openvino"))
    assert a.shape == b.shape == (30, 41, 3) and np.abs(a - b).max() <= 1

    data = make_dataset(tmp_path / "data", n_a=2, n_b=2)
    assert main(["train", "--dataroot", str(data), "--name", "r", "--checkpoints_dir", str(tmp_path / "ckpt"),
                 *TINY, "--n_epochs", "1", "--n_epochs_decay", "0"]) == 0
    pages = {}
    for backend in ("pytorch", "openvino"):
        capsys.readouterr()
        assert main(["test", "--dataroot", str(data), "--name", "r", "--checkpoints_dir", str(tmp_path / "ckpt"),
                     "--results_dir", str(tmp_path / f"results_{backend}"), "--gpu_ids", "-1",
                     "--backend", backend]) == 0
        pages[backend] = sorted((tmp_path / f"results_{backend}" / "r" / "test_latest" / "images").glob("*.png"))
    assert "with openvino" in capsys.readouterr().out
    assert [p.name for p in pages["pytorch"]] == [p.name for p in pages["openvino"]] and pages["pytorch"]
    for a, b in zip(pages["pytorch"], pages["openvino"]):
        assert np.abs(np.asarray(Image.open(a), dtype=int) - np.asarray(Image.open(b), dtype=int)).max() <= 1


def test_unknown_backend_is_refused_in_one_line(tmp_path, capsys):
    run = make_run(tmp_path / "runs" / "ink", "ink", seed=1)
    assert main(["stylize", "--model", str(run), str(tmp_path), "--out", str(tmp_path / "o"),
                 "--backend", "tensorrt"]) != 0
    err = capsys.readouterr().err
    assert "--backend" in err and "Traceback" not in err


def test_a_generator_the_exporter_cannot_trace_is_one_line(monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    import cyclegan_culture.backends as backends
    from cyclegan_culture.accel import autotune
    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path))  # nothing cached: the export runs

    def fail(*args, **kwargs):
        raise RuntimeError("Unsupported: ONNX export of operator foo")
    monkeypatch.setattr(backends, "write_onnx", fail)
    with pytest.raises(UserError, match=r"could not be exported to ONNX \(Unsupported.*use --backend pytorch"):
        on_backend(tiny_generator(), "onnxruntime")


def test_an_export_is_cached_per_weights_and_a_damaged_one_is_made_again(monkeypatch, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import cyclegan_culture.backends as backends
    from cyclegan_culture.accel import autotune
    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path / "cache"))
    image = torch.rand(1, 3, 36, 44) * 2 - 1
    with torch.inference_mode():
        expected = tiny_generator()(image)
    on_backend(tiny_generator(), "onnxruntime")
    cached = list((tmp_path / "cache" / "onnx").glob("generator-*.onnx"))
    assert len(cached) == 1 and not list((tmp_path / "cache" / "onnx").glob("*.part"))

    exports = []
    real_write = backends.write_onnx
    monkeypatch.setattr(backends, "write_onnx", lambda *a: (exports.append(a), real_write(*a)))
    again = on_backend(tiny_generator(), "onnxruntime")  # same weights: read back, not exported
    assert exports == [] and float((again(image) - expected).abs().max()) < 1e-4
    on_backend(tiny_generator(seed=1), "onnxruntime")  # other weights: a graph of their own
    assert len(exports) == 1 and len(list((tmp_path / "cache" / "onnx").glob("generator-*.onnx"))) == 2

    cached[0].write_bytes(b"not an onnx graph")
    capsys.readouterr()
    repaired = on_backend(tiny_generator(), "onnxruntime")
    assert "ignored the cached export" in capsys.readouterr().out and len(exports) == 2
    assert float((repaired(image) - expected).abs().max()) < 1e-4
    assert cached[0].stat().st_size > 1000  # replaced by a whole graph


def test_a_cache_folder_that_cannot_be_written_costs_only_a_note(monkeypatch, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from cyclegan_culture.accel import autotune
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv(autotune.CACHE_ENV, str(blocker))
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        expected = tiny_generator()(image)
    runtime = on_backend(tiny_generator(), "onnxruntime")
    assert float((runtime(image) - expected).abs().max()) < 1e-4
    assert "cannot keep the export" in capsys.readouterr().out and blocker.read_text().startswith("a file")
