"""Inference backends side by side: PyTorch (our plan, fp32 and --amp) against ONNX Runtime and OpenVINO.

Each backend runs the same generator on the same image at each size, whole (no tiling), for ``--iters`` timed
runs after a warm-up; the output is compared with PyTorch fp32 in 8-bit levels (1 level = 1/255 of the range),
since a backend is only usable where it stays within 2 levels. One JSON line per (size, backend), and a markdown
table with ``--markdown FILE``. Examples::

    python bench/backends.py                          # the shipped guohua model, 256 and 1024 px
    python bench/backends.py --model reference        # the reference's default generator (resnet_9blocks, ngf 64)
    python bench/backends.py --sizes 256 --iters 3

ONNX Runtime and OpenVINO are optional: ``pip install onnxruntime openvino``; a missing one is skipped.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cyclegan_culture.accel.autotune import machine  # noqa: E402
from cyclegan_culture.backends import on_backend  # noqa: E402
from cyclegan_culture.errors import UserError  # noqa: E402
from cyclegan_culture.inference import Stylizer, inference_plan, model_config  # noqa: E402
from cyclegan_culture.models import networks  # noqa: E402
from cyclegan_culture.pretrained import catalog  # noqa: E402

LEVELS = 127.5  # [-1, 1] -> 8-bit levels

Runner = Callable[[np.ndarray], np.ndarray]


def generator(kind: str) -> torch.nn.Module:
    """The shipped guohua generator, or the reference's default one (random weights: timing only)."""
    if kind == "guohua":
        return Stylizer.from_pretrained("guohua", device="cpu").generator.float()
    config = model_config(None, {})
    torch.manual_seed(0)
    net = networks.define_G(config.input_nc, config.output_nc, config.ngf, config.netG, config.norm,
                            config.use_dropout, config.init_type, config.init_gain, config.upsample)
    return inference_plan(torch.device("cpu"), config).apply(net.eval())


def photo(size: int) -> np.ndarray:
    """An example photo that ships with the package, resized: real content, so output differences are typical."""
    from PIL import Image
    examples = sorted(catalog.EXAMPLES_DIR.glob("*.jpg"))
    image = Image.open(examples[0]).convert("RGB").resize((size, size), Image.BICUBIC)
    return (np.asarray(image, dtype=np.float32)[None].transpose(0, 3, 1, 2) / 127.5 - 1).copy()


def torch_runner(net: torch.nn.Module, amp: bool) -> Runner:
    stylizer = Stylizer(copy.deepcopy(net), "cpu", amp=amp, tile=0)  # --amp stores the weights in bf16

    def run(x: np.ndarray) -> np.ndarray:
        return stylizer.stylize_tensor(torch.from_numpy(x)).numpy()
    return run


def runtime_runner(net: torch.nn.Module, backend: str, dtype: torch.dtype | None) -> Runner | None:
    try:
        runtime = on_backend(net, backend, dtype)
    except UserError as exc:  # not installed
        print(json.dumps({"backend": backend, "skipped": str(exc)}), flush=True)
        return None
    return lambda x: runtime(torch.from_numpy(x)).numpy()


def timed(run: Runner, x: np.ndarray, warmup: int, iters: int) -> tuple[list[float], np.ndarray]:
    out = None
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        out = run(x)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="guohua", choices=["guohua", "reference"])
    parser.add_argument("--sizes", default="256,1024")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--markdown", default=None, help="append the table to this file")
    args = parser.parse_args()

    net = generator(args.model)
    rows = []
    backends: dict[str, Runner | None] = {
        "pytorch fp32": torch_runner(net, amp=False),
        "pytorch --amp (bf16)": torch_runner(net, amp=True),
        "onnxruntime fp32": runtime_runner(net, "onnxruntime", None),
        "openvino fp32": runtime_runner(net, "openvino", None),
        "openvino bf16": runtime_runner(net, "openvino", torch.bfloat16),
    }
    for size in (int(s) for s in args.sizes.split(",")):
        x = photo(size)
        reference_out = None
        base = None
        for name, run in backends.items():
            if run is None:
                print(json.dumps({"size": size, "backend": name, "skipped": "not installed"}), flush=True)
                continue
            times, out = timed(run, x, args.warmup, args.iters)
            median = statistics.median(times)
            if reference_out is None:
                reference_out, base = out, median
            diff = np.abs(out.astype(np.float32) - reference_out) * LEVELS
            row = {"model": args.model, "size": size, "backend": name, "median_s": round(median, 4),
                   "img_per_s": round(1 / median, 3), "vs_pytorch_fp32": round(base / median, 2),
                   "max_diff_levels": round(float(diff.max()), 2),
                   "p999_diff_levels": round(float(np.quantile(diff, 0.999)), 2),
                   "mean_diff_levels": round(float(diff.mean()), 3), "within_2_levels": bool(diff.max() <= 2),
                   "machine": f"{machine()['cpu']}, {torch.get_num_threads()} threads", "torch": torch.__version__}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.markdown:
        lines = ["| model | size | backend | s/image | vs PyTorch fp32 | max diff (levels) | 99.9% | mean |",
                 "|---|---:|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['size']} | {r['backend']} | {r['median_s']} | {r['vs_pytorch_fp32']}x | "
                  f"{r['max_diff_levels']} | {r['p999_diff_levels']} | {r['mean_diff_levels']} |" for r in rows]
        with open(args.markdown, "a") as f:
            f.write(f"\n{rows[0]['machine']}, torch {torch.__version__}\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
