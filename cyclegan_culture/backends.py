"""Inference backends: a generator exported to ONNX (``export.py``) and run by OpenVINO or ONNX Runtime, as a
module that stands in for the PyTorch one (``--backend`` of test.py and stylize, ``Stylizer(backend=...)``).

Why: on the CPUs measured (docs/performance.md, ``bench/backends.py``) OpenVINO ran our generators in fp32 faster
than PyTorch's own convolutions, with the same output to well under one 8-bit level. Both runtimes are optional
packages; asking for a missing one is a one-line error saying what to install. They run on CPU only.

The exported graph is kept in the user's cache folder (``onnx/``, beside the execution plans), keyed by a hash of
the generator's layers and weights, so a model is exported once, not at every run (the export was 1.2-1.4 of the
1.9 seconds it took to prepare the reference's generator). A cached graph is checked against PyTorch like a new
one; a damaged one is exported again.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from cyclegan_culture.accel.autotune import cache_folder
from cyclegan_culture.errors import UserError, brief
from cyclegan_culture.export import TOLERANCE, plain_fp32, write_onnx
from cyclegan_culture.progress import say

BACKENDS = ("pytorch", "openvino", "onnxruntime")
PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime"}  # backend -> what pip installs
BACKEND_HELP = ("what runs the generators on CPU: pytorch, or openvino / onnxruntime (optional packages: pip "
                "install \"cyclegan-culture[openvino]\"; the generator is exported to ONNX once, about a second, "
                "and kept in the cache folder; openvino was the fastest measured in fp32 and runs bf16 under "
                "--amp; docs/performance.md)")


class RuntimeGenerator(nn.Module):
    """Runs like the generator it was exported from: a (N, 3, H, W) float batch in [-1, 1], H and W multiples of
    4 (``inference.translate`` pads to them), gives the same shape in fp32. ``source`` stays attached, unused by
    ``forward``, so that code asking for the generator's device or parameters keeps working."""

    def __init__(self, source: nn.Module, run: Callable[[np.ndarray], np.ndarray], backend: str, precision: str):
        super().__init__()
        self.source = source
        self._run = run
        self.backend, self.precision = backend, precision
        self.size_multiple = getattr(source, "size_multiple", 4)
        self.memory_format = torch.contiguous_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._run(x.detach().float().contiguous().cpu().numpy())
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)

    def extra_repr(self) -> str:
        return f"backend={self.backend}, precision={self.precision}"


def on_backend(net: nn.Module, backend: str, dtype: torch.dtype | None = None,
               threads: int | None = None) -> nn.Module:
    """``net`` (fp32 weights, eval mode) as ``backend`` runs it; ``pytorch`` returns ``net`` itself.

    ``dtype`` bf16 (``--amp`` on CPU) asks OpenVINO for bf16 arithmetic; ONNX Runtime's CPU kernels are fp32 only.
    The runtime's fp32 graph is checked against PyTorch (``export.TOLERANCE``); exporting takes about a second
    the first time (then the cached graph is read back), compiling a few tenths; ``net`` is not changed."""
    if backend == "pytorch":
        return net
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend!r}: use one of {', '.join(BACKENDS)}")
    device = next(net.parameters()).device
    if device.type != "cpu":
        raise UserError(f"--backend {backend} runs on CPU; on {device.type} use --backend pytorch")
    runtime = _import(backend)
    threads = threads or torch.get_num_threads()
    plain = plain_fp32(copy.deepcopy(net))  # the caller's network stays as it was

    def compile_checked(path: Path) -> Callable[[np.ndarray], np.ndarray]:
        run = _openvino(runtime, path, "f32", threads) if backend == "openvino" else \
            _onnxruntime(runtime, path, threads)
        _check(plain, run, backend)  # always in fp32, where the runtime must match PyTorch
        return run

    cached = export_cache_path(plain)
    with tempfile.TemporaryDirectory(prefix="cyclegan-culture-export-") as tmp:
        path, run = cached, None
        if cached.is_file():
            try:
                run = compile_checked(cached)
            except Exception as exc:  # damaged or from another exporter: export again
                say(f"note: ignored the cached export {cached} ({brief(exc)}); exporting again")
        if run is None:
            path = Path(tmp) / "generator.onnx"
            _export(plain, path, backend)
            run = compile_checked(path)
            _keep(path, cached)
        precision = "bf16" if backend == "openvino" and dtype == torch.bfloat16 else "f32"
        if precision == "bf16":
            run = _openvino(runtime, path, precision, threads)
    return RuntimeGenerator(net, run, backend, precision)


def export_cache_path(plain: nn.Module) -> Path:
    """Where the ONNX graph of ``plain`` is kept: named by a hash of its layers, weights and the torch version
    (the exporter), so other weights or another build never reuse it."""
    digest = hashlib.sha256(f"{torch.__version__}\n{plain!r}".encode())
    for name, tensor in plain.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return cache_folder() / "onnx" / f"generator-{digest.hexdigest()[:24]}.onnx"


def _export(plain: nn.Module, path: Path, backend: str) -> None:
    try:
        write_onnx(plain, torch.zeros(1, 3, 64, 64), path)  # a small trace: the graph is the same at any size
    except UserError:
        raise
    except Exception as exc:  # an architecture the ONNX exporter cannot trace
        raise UserError(f"--backend {backend}: the generator could not be exported to ONNX ({brief(exc)}); "
                        "use --backend pytorch") from None


def _keep(path: Path, cached: Path) -> None:
    """Copy a new export into the cache (whole or not at all); a cache folder that cannot be written only
    costs the next run an export."""
    part = cached.with_name(f"{cached.name}.{os.getpid()}.part")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, part)
        os.replace(part, cached)
    except OSError as exc:
        try:
            part.unlink(missing_ok=True)
        except OSError:
            pass
        say(f"note: cannot keep the export in {cached.parent} ({exc.strerror or exc}); it is made again next run")


def _check(plain: nn.Module, run: Callable[[np.ndarray], np.ndarray], backend: str) -> None:
    """The runtime's fp32 graph against PyTorch on one small image of another size than the trace's."""
    check = torch.rand(1, 3, 40, 52, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        expected = plain(check)
    diff = float(np.abs(run(check.numpy()) - expected.numpy()).max())
    if not diff < TOLERANCE:
        raise UserError(f"--backend {backend}: its output differs from PyTorch's by {diff:.2e} (> {TOLERANCE}); "
                        "use --backend pytorch")


def _import(backend: str):
    try:
        return __import__(PACKAGES[backend])
    except ImportError:
        raise UserError(f"--backend {backend} needs the {PACKAGES[backend]} package: pip install "
                        f"\"cyclegan-culture[{backend}]\" (or pip install {PACKAGES[backend]}); or use --backend "
                        "pytorch") from None


def _openvino(ov, path: Path, precision: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    core = ov.Core()
    # the precision is always explicit: on CPUs with bf16 OpenVINO would otherwise pick bf16 for an fp32 model
    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})[0].copy()


def _onnxruntime(ort, path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"image": x})[0]
