"""Does --amp hurt training? Train the same run twice (fp32, then bf16 autocast) for N iterations on real data and
compare the loss curves: per-window means of every loss term, and the largest relative difference.

    python bench/amp_vs_fp32.py --dataroot datasets/photo2guohua --iters 500 [--network cpu_preset] [--out FILE.json]

Prints one JSON line; the curves go to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cyclegan_culture import options  # noqa: E402
from cyclegan_culture.engine.trainer import Trainer  # noqa: E402
from cyclegan_culture.models.cycle_gan import LOSS_NAMES  # noqa: E402

NETWORKS = {"reference": [], "cpu_preset": ["--netG", "resnet_6blocks", "--ngf", "32", "--ndf", "32"]}


def train_curve(dataroot: str, iters: int, extra: list[str], workdir: Path) -> tuple[list[dict], float]:
    parser = options.build_train_parser()
    argv = ["--dataroot", dataroot, "--name", "amp_check", "--checkpoints_dir", str(workdir), "--crop_size", "128",
            "--load_size", "143", "--n_epochs", "1000", "--n_epochs_decay", "0", "--print_freq", "1000000",
            "--display_freq", "1000000", "--save_latest_freq", "1000000", "--no_html", "--seed", "0", *extra]
    losses: list[dict] = []

    def record(trainer: Trainer) -> None:
        losses.append(dict(trainer.model.current_losses))
        if len(losses) >= iters:
            trainer.request_stop()

    start = time.time()
    Trainer(options.parse(parser, argv), parser, hooks=[record]).run()
    return losses, time.time() - start


def window_means(losses: list[dict], window: int) -> list[dict]:
    return [{k: sum(d[k] for d in losses[i:i + window]) / len(losses[i:i + window]) for k in LOSS_NAMES}
            for i in range(0, len(losses), window)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", default=str(ROOT / "datasets" / "photo2guohua"))
    p.add_argument("--iters", type=int, default=500)
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--network", default="reference", choices=sorted(NETWORKS),
                   help="reference: resnet_9blocks, ngf 64; cpu_preset: the --preset cpu network")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    extra = NETWORKS[args.network] + ["--num_threads", "1"]
    with tempfile.TemporaryDirectory() as tmp:
        fp32, t32 = train_curve(args.dataroot, args.iters, extra, Path(tmp) / "fp32")
        bf16, t16 = train_curve(args.dataroot, args.iters, extra + ["--amp"], Path(tmp) / "bf16")
    w32, w16 = window_means(fp32, args.window), window_means(bf16, args.window)
    rel = {k: max(abs(b[k] - a[k]) / abs(a[k]) for a, b in zip(w32, w16)) for k in LOSS_NAMES}
    # The sums that training optimises: the generators' total and each discriminator
    totals = [(sum(a[k] for k in LOSS_NAMES if not k.startswith("D_")),
               sum(b[k] for k in LOSS_NAMES if not k.startswith("D_"))) for a, b in zip(w32, w16)]
    result = {"iters": args.iters, "window": args.window, "network": args.network, "fp32_s": round(t32, 1),
              "bf16_s": round(t16, 1), "max_rel_diff_per_loss": {k: round(v, 4) for k, v in rel.items()},
              "max_rel_diff_total_G": round(max(abs(b - a) / a for a, b in totals), 4)}
    print(json.dumps(result), flush=True)
    if args.out:
        args.out.write_text(json.dumps({**result, "fp32_windows": w32, "bf16_windows": w16}, indent=1))


if __name__ == "__main__":
    main()
