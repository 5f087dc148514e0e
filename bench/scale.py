"""The cost of scale: `cyclegan-culture stylize` on one very large photo and on a folder of 1024-px photos.

Each configuration runs the real command in a fresh process (so peak memory is its own) and reports the wall
time of the whole command (loading, decoding, translating, writing), images/s and the process's peak RSS::

    python bench/scale.py large                       # one 4000x3000 photo: default tiles, --amp, --tile 0
    python bench/scale.py folder --images 1000        # 1000 photos at 1024x1024
    python bench/scale.py folder --images 100 --flags "--backend openvino --tile 0"

The photos are the package's example photos resized (real content), written once into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cyclegan_culture.accel.autotune import machine  # noqa: E402
from cyclegan_culture.pretrained import catalog  # noqa: E402

CONFIGS = {"large": ["", "--amp", "--tile 0", "--amp --tile 0", "--backend openvino --tile 0"],
           "folder": ["", "--amp", "--tile 0 --amp", "--backend openvino --tile 0",
                      "--backend openvino --tile 0 --amp"]}


def make_photos(folder: Path, count: int, size: tuple[int, int]) -> None:
    from PIL import Image
    examples = [Image.open(p).convert("RGB") for p in sorted(catalog.EXAMPLES_DIR.glob("*.jpg"))]
    folder.mkdir(parents=True)
    for i in range(count):
        base = examples[i % len(examples)]
        # a different crop of the example for each file, so no two inputs are the same image
        w, h = base.size
        dx, dy = (i * 7) % max(1, w // 8), (i * 5) % max(1, h // 8)
        image = base.crop((dx, dy, w - (w // 8 - dx), h - (h // 8 - dy))).resize(size, Image.BICUBIC)
        image.save(folder / f"photo_{i:04d}.jpg", quality=92)


def child(args: argparse.Namespace) -> None:
    """One stylize command in this process; prints wall time and this process's peak RSS."""
    from cyclegan_culture.cli import main
    t0 = time.perf_counter()
    rc = main(["stylize", "--culture", args.culture, args.photos, "--out", args.out, *shlex.split(args.flags)])
    wall = time.perf_counter() - t0
    print(json.dumps({"rc": rc, "wall_s": round(wall, 2),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["large", "folder", "child"])
    parser.add_argument("--images", type=int, default=1000, help="folder: how many photos")
    parser.add_argument("--side", type=int, default=1024, help="folder: their width and height")
    parser.add_argument("--culture", default="guohua")
    parser.add_argument("--flags", default=None, help="one configuration's stylize flags (default: the set above)")
    parser.add_argument("--photos", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.what == "child":
        return child(args)
    count, size = (1, (4000, 3000)) if args.what == "large" else (args.images, (args.side, args.side))
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        make_photos(photos, count, size)
        for i, flags in enumerate([args.flags] if args.flags is not None else CONFIGS[args.what]):
            out = Path(tmp) / f"out{i}"
            proc = subprocess.run([sys.executable, __file__, "child", "--culture", args.culture, "--photos",
                                   str(photos), "--out", str(out), f"--flags={flags}"], capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-2000:])
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            print(json.dumps({"what": args.what, "images": count, "size": f"{size[0]}x{size[1]}",
                              "culture": args.culture, "flags": flags or "(defaults)", **result,
                              "img_per_s": round(count / result["wall_s"], 3),
                              "machine": f"{machine()['cpu']}, {machine()['threads']} threads"}), flush=True)


if __name__ == "__main__":
    main()
