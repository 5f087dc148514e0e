"""`cyclegan-culture export`: a run's generator as ONNX, torch.export's ExportedProgram (.pt2) or TorchScript,
checked against PyTorch. TorchScript is deprecated in PyTorch: its warnings are silenced here (the user can do
nothing about them) and the command's help points to the other two.

The exported graph takes a (N, 3, H, W) float tensor in [-1, 1] with H and W multiples of 4 (pad and crop back
as ``inference.translate`` does) and returns the same shape; height and width are dynamic.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cyclegan_culture.accel import swap_layers
from cyclegan_culture.errors import UserError
from cyclegan_culture.files import inside

TOLERANCE = 1e-4
FORMATS = {"onnx": "onnx", "exported_program": "pt2", "torchscript": "pt"}  # format -> file extension


@dataclass
class ExportResult:
    path: Path
    max_abs_diff: float
    checked_size: tuple[int, int]


def export_generator(net: nn.Module, fmt: str, out: Path, check_size: tuple[int, int] = (200, 300)) -> ExportResult:
    """Export ``net`` (in eval mode, fp32, CPU) and check it on a random image of ``check_size``, which differs
    from the tracing size so that dynamic height and width are exercised."""
    net = plain_fp32(net)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(1, 3, 256, 256) * 2 - 1
    check = torch.rand(1, 3, *check_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        expected = net(check)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        if fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.* is deprecated": see the module doc
                warnings.simplefilter("ignore", DeprecationWarning)
                with torch.no_grad():
                    traced = torch.jit.trace(net, example)
                traced.save(str(tmp))
                loaded = torch.jit.load(str(tmp))
            with torch.inference_mode():
                got = loaded(check)
        elif fmt == "exported_program":
            got = _export_program(net, tmp, check)
        elif fmt == "onnx":
            got = torch.from_numpy(_export_onnx(net, example, tmp, check))
        else:
            raise UserError(f"--format {fmt!r}: use {', '.join(FORMATS)}")
        diff = float((got - expected).abs().max())
        if not diff < TOLERANCE:
            raise UserError(f"exported {fmt} differs from PyTorch by {diff:.2e} (> {TOLERANCE}); not written")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(out, diff, check_size)


def _export_program(net: nn.Module, path: Path, check: torch.Tensor) -> torch.Tensor:
    """torch.export with dynamic batch, height and width (multiples of 4); load it back as users would."""
    dims = torch.export.Dim
    shapes = {"x": {0: dims("batch", min=1, max=1024), 2: 4 * dims("height4", min=2, max=4096),
                    3: 4 * dims("width4", min=2, max=4096)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing notes about parameters that require gradients
        # an example batch of two: a batch of one would be specialised to a constant
        program = torch.export.export(net.requires_grad_(False), (torch.rand(2, 3, 64, 64) * 2 - 1,),
                                      dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    with torch.inference_mode():
        return torch.export.load(str(path)).module()(check)


def _export_onnx(net: nn.Module, example: torch.Tensor, path: Path, check: torch.Tensor):
    try:
        import onnxruntime
    except ImportError:
        raise UserError("ONNX export is checked with onnxruntime: pip install \"cyclegan-culture[export]\" "
                        "(or pip install onnx onnxruntime)") from None
    write_onnx(net, example, path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": check.numpy()})[0]


def write_onnx(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The graph of ``net`` (plain convolutions, fp32, NCHW: what ``export_generator`` prepares) traced on
    ``example``, with dynamic batch, height and width; input "image", output "translated"."""
    if importlib.util.find_spec("onnx") is None:  # torch.onnx needs it, and says so less clearly
        raise UserError("ONNX export needs the onnx package: pip install \"cyclegan-culture[export]\" "
                        "(or pip install onnx)")
    with warnings.catch_warnings():  # the exporter's notes on instance norm and slicing are expected here
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), str(path), input_names=["image"], output_names=["translated"],
                          dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                        "translated": {0: "batch", 2: "height", 3: "width"}},
                          opset_version=17, dynamo=False)


def plain_fp32(net: nn.Module) -> nn.Module:
    """``net`` with standard convolutions, fp32, NCHW, in eval mode, on CPU (changed in place): exported graphs
    hold standard convolutions and the runtime picks its own algorithms."""
    return swap_layers(net.float().cpu().eval().to(memory_format=torch.contiguous_format), "direct")


def default_output(run_dir: Path, fmt: str) -> Path:
    return inside(run_dir, f"generator.{FORMATS.get(fmt, 'onnx')}")


def refuse_replacing_run_files(out: Path, run_dir: Path, default: Path) -> None:
    """An export may replace an earlier export, never a folder or one of the run's own files (its weights,
    training state, options)."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; give a file name, e.g. {out / default.name}")
    resolved, run = out.resolve(), Path(run_dir).resolve()
    if out.exists() and run in resolved.parents and resolved != Path(default).resolve():
        raise UserError(f"--out {out}: is one of the run's own files and would be replaced; choose another "
                        f"name (the default is {default})")
