"""Data-parallel scaling: the same training run as 1 process and under torchrun with N processes (gloo on CPU,
nccl on CUDA). Images per second come from the run's own log.jsonl (first logged step to last, so start-up and
warm-up are left out). Prints one JSON line per configuration. Example (about 6 minutes on 2 CPU cores)::

    python bench/ddp_scaling.py --dataroot datasets/photo2guohua --crop 128 --images 160 --amp

On CPU, N processes split the machine's cores (torchrun gives each one OMP thread unless OMP_NUM_THREADS is set),
so the comparison is 1 process with all cores against N processes with cores/N each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def images_per_second(log_file: Path) -> tuple[float, int]:
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    records = [r for r in records if "sec_per_iter" in r]
    first, last = records[0], records[-1]
    images = last["total_iters"] - first["total_iters"]
    return images / (last["time"] - first["time"]), images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", default=str(ROOT / "datasets" / "photo2guohua"))
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--netG", default="resnet_6blocks")
    p.add_argument("--ngf", type=int, default=32)
    p.add_argument("--images", type=int, default=160, help="at most this many images of each domain (--max_dataset_size)")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--amp", action="store_true")
    p.add_argument("--gpu", action="store_true", help="one GPU per process (default: CPU)")
    args = p.parse_args()

    torchrun = Path(sys.executable).with_name("torchrun")
    cores = os.cpu_count() or 1
    for n in args.procs:
        with tempfile.TemporaryDirectory() as tmp:
            flags = ["--dataroot", args.dataroot, "--name", "bench", "--checkpoints_dir", tmp, "--crop_size",
                     str(args.crop), "--load_size", str(args.crop + args.crop // 8), "--netG", args.netG, "--ngf",
                     str(args.ngf), "--ndf", str(args.ngf), "--max_dataset_size", str(args.images), "--n_epochs",
                     "1", "--n_epochs_decay", "0", "--print_freq", str(max(2 * n, 8)), "--display_id", "0",
                     "--no_html", "--num_threads", "1", "--gpu_ids", "0" if args.gpu else "-1"]
            flags += ["--amp"] * args.amp
            env = dict(os.environ)
            if n == 1:
                command = [sys.executable, str(ROOT / "train.py"), *flags]
            else:
                env.setdefault("OMP_NUM_THREADS", str(max(1, cores // n)) if not args.gpu else "1")
                command = [str(torchrun), "--standalone", f"--nproc_per_node={n}", str(ROOT / "train.py"), *flags]
            subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
            rate, images = images_per_second(Path(tmp) / "bench" / "log.jsonl")
        print(json.dumps({"processes": n, "crop": args.crop, "netG": args.netG, "ngf": args.ngf, "amp": args.amp,
                          "device": "cuda" if args.gpu else f"cpu ({cores} cores)", "images_timed": images,
                          "images_per_s": round(rate, 3)}), flush=True)


if __name__ == "__main__":
    main()
