"""Does memory stay flat over a long run? Train a tiny network for N iterations at crop 32 and report the resident
set size (RSS) after warm-up and at the end.

    python bench/memory_soak.py [--iters 5000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cyclegan_culture import options  # noqa: E402
from cyclegan_culture.engine.trainer import Trainer  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--iters", type=int, default=5000)
    p.add_argument("--warmup", type=int, default=200)
    args = p.parse_args()
    samples: list[tuple[int, float]] = []

    def watch(trainer: Trainer) -> None:
        n = trainer.total_iters
        if n == args.warmup or n % 1000 == 0:
            samples.append((n, round(rss_mb(), 1)))
        if n >= args.iters:
            trainer.request_stop()

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for side in ("trainA", "trainB"):
            (Path(tmp) / "data" / side).mkdir(parents=True)
            for i in range(20):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(Path(tmp) / "data" / side / f"{i}.png")
        parser = options.build_train_parser()
        opt = options.parse(parser, ["--dataroot", str(Path(tmp) / "data"), "--name", "soak", "--checkpoints_dir",
                                     str(Path(tmp) / "ckpt"), "--load_size", "36", "--crop_size", "32", "--ngf", "8",
                                     "--ndf", "8", "--netG", "resnet_6blocks", "--n_epochs", "100000",
                                     "--n_epochs_decay", "0", "--print_freq", "100", "--display_freq", "500",
                                     "--save_latest_freq", "1000", "--num_threads", "1", "--gpu_ids", "-1"])
        Trainer(opt, parser, hooks=[watch]).run()
    start, end = samples[0][1], samples[-1][1]
    print(json.dumps({"kind": "memory_soak", "iters": args.iters, "rss_mb_after_warmup": start, "rss_mb_end": end,
                      "growth_mb": round(end - start, 1), "samples": samples}))


if __name__ == "__main__":
    main()
