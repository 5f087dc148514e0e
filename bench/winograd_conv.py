"""One residual-block convolution (reflection padding + 3x3), direct against Winograd, alternating A/B in one
process with a few different inputs and weights in turn (so caches are not unrealistically warm). Prints one
JSON line per configuration: inference (no gradients; Winograd with transformed filters kept, as test.py runs
it) and training (forward and both gradients), in NCHW or, with ``--channels_last``, in NHWC (as CPU training
runs them).

    python bench/winograd_conv.py [--shapes 256x64x64 256x32x32 128x64x64 ...] [--iters 20] [--channels_last]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cyclegan_culture.accel.winograd import winograd_conv3x3_reflect, winograd_filters  # noqa: E402


def direct(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, filters: torch.Tensor | None = None) -> torch.Tensor:
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), w, b)


def measure(channels: int, height: int, width: int, iters: int, training: bool, channels_last: bool = False) -> dict:
    variants = 4
    layout = torch.channels_last if channels_last else torch.contiguous_format
    xs = [torch.randn(1, channels, height, width).contiguous(memory_format=layout).requires_grad_(training)
          for _ in range(variants)]
    ws = [(torch.randn(channels, channels, 3, 3) * 0.02).contiguous(memory_format=layout).requires_grad_(training)
          for _ in range(variants)]
    b = torch.randn(channels, requires_grad=training)
    filters = [None if training else winograd_filters(w) for w in ws]
    grad = torch.randn(1, channels, height, width).contiguous(memory_format=layout)
    times: dict[str, list[float]] = {"direct": [], "winograd": []}
    warmup = 3
    with torch.set_grad_enabled(training):
        for i in range(warmup + iters):
            for name, fn in (("direct", direct), ("winograd", winograd_conv3x3_reflect)):
                x, w = xs[i % variants], ws[i % variants]
                t0 = time.perf_counter()
                y = fn(x, w, b, filters[i % variants])
                if training:
                    torch.autograd.grad(y, (x, w, b), grad)
                if i >= warmup:
                    times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    return {"channels": channels, "height": height, "width": width, "layout": "NHWC" if channels_last else "NCHW",
            "pass": "training" if training else "inference",
            "direct_ms": round(med["direct"], 2), "winograd_ms": round(med["winograd"], 2),
            "speedup": round(med["direct"] / med["winograd"], 2), "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["256x64x64", "256x72x100", "256x32x32", "128x64x64",
                                                   "128x72x100", "64x64x64"], help="CHANNELSxHEIGHTxWIDTH")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--channels_last", action="store_true", help="NHWC inputs and weights")
    args = p.parse_args()
    for shape in args.shapes:
        channels, height, width = (int(v) for v in shape.split("x"))
        for training in (False, True):
            print(json.dumps(measure(channels, height, width, args.iters, training, args.channels_last)), flush=True)


if __name__ == "__main__":
    main()
