"""fp32 inference of one image, alternating in one process: the reference's layers against ours in NCHW and in
NHWC (the choice accel/plan.py's _tuned_fp32_layout times per machine). Prints one JSON line (medians in ms).

    python bench/inference_layout.py [--size 256] [--iters 8]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cyclegan_culture.accel import make_plan  # noqa: E402
from cyclegan_culture.models import networks  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--iters", type=int, default=8)
    args = p.parse_args()
    torch.manual_seed(0)
    reference = networks.define_G(3, 3, 64, "resnet_9blocks").eval().requires_grad_(False)
    plan = make_plan(torch.device("cpu"))  # the tuner picks each layer's algorithm, as test.py's plan does
    ours = plan.apply(copy.deepcopy(reference)).eval().requires_grad_(False)
    x = torch.rand(1, 3, args.size, args.size) * 2 - 1
    variants = {"reference": (reference, torch.contiguous_format), "ours_nchw": (ours, torch.contiguous_format),
                "ours_nhwc": (ours, torch.channels_last)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for i in range(args.iters + 2):
            for name, (net, layout) in variants.items():
                net.to(memory_format=layout)
                inp = x.contiguous(memory_format=layout)
                started = time.perf_counter()
                net(inp)
                if i >= 2:
                    times[name].append(time.perf_counter() - started)
    print(json.dumps({"size": args.size, "threads": torch.get_num_threads(),
                      **{f"{name}_ms": round(statistics.median(t) * 1000, 1) for name, t in times.items()}}))


if __name__ == "__main__":
    main()
