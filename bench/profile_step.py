"""Where a training step's time goes: torch.profiler over a few steps of our step (the plan train.py would take
on this machine), operators grouped by input shape, the largest first. Used for docs/performance.md's "bf16
against the chip" paragraphs.

    python bench/profile_step.py [--crop 128] [--amp] [--steps 3] [--rows 25]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))
import bench  # noqa: E402
from cyclegan_culture.engine.training_plan import training_plan  # noqa: E402
from cyclegan_culture.models import registry  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--steps", type=int, default=3, help="profiled steps, after two warm-up steps")
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args()
    settings = argparse.Namespace(crop=args.crop, netG="resnet_9blocks", ngf=64, ndf=64, batch_size=1, amp=args.amp,
                                  channels_last="auto", compile=False, conv_algorithm="auto", autotune="auto",
                                  device="cpu")
    opt = bench.model_opt(settings)
    device = torch.device("cpu")
    model = registry.build(vars(opt), device, training_plan(opt, device), training=True)
    size = (1, 3, args.crop, args.crop)
    batch = {"A": torch.rand(size) * 2 - 1, "B": torch.rand(size) * 2 - 1, "A_paths": ["a"], "B_paths": ["b"]}
    for _ in range(2):
        model.set_input(batch)
        model.optimize_parameters()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.steps):
            model.set_input(batch)
            model.optimize_parameters()
    print(f"{bench.machine()}, crop {args.crop}, {'bf16' if args.amp else 'fp32'}, {args.steps} steps")
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=args.rows,
                                                             max_name_column_width=32, max_shapes_column_width=90))


if __name__ == "__main__":
    main()
