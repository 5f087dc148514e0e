"""Video figures for docs/video.md: stability (warping error) of plain frame-by-frame translation, shared
normalisation statistics and flow-guided blending on a clip made from the embedded photos, the speed in frames
per second at 480p and 1080p (fp32 and --amp), and a strip of frames before and after.

    python bench/video.py stability --out results/bench/video      # figures + strip.jpg
    python bench/video.py speed --frames 12                        # frames/s, 480p and 1080p, fp32 and bf16
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cyclegan_culture.accel.autotune import machine  # noqa: E402
from cyclegan_culture.inference import Stylizer  # noqa: E402
from cyclegan_culture.video.io import VideoReader  # noqa: E402
from cyclegan_culture.video.stability import DEFAULTS, FrameStylizer, StabilityOptions, warping_error  # noqa: E402
from cyclegan_culture.video.synthetic import pan_zoom_frames, write_clip  # noqa: E402

PHOTOS = ROOT / "datasets" / "photo2guohua" / "testA"
SETTINGS = {"plain": StabilityOptions(1, 0.0), "shared statistics (window 8)": StabilityOptions(8, 0.0),
            "flow-guided blend 0.5 (the default)": StabilityOptions(1, 0.5),
            "both": StabilityOptions(8, 0.5)}


def cpu_name() -> str:
    return str(machine()["cpu"])


def clip_frames(size: tuple[int, int], per_shot: int, shots: int, noise: float = 0.0,
                encode: bool = False) -> list[np.ndarray]:
    """The clip: a pan and zoom over each of the first ``shots`` embedded test photos. ``noise``: Gaussian sensor
    noise of this standard deviation (0-255) per frame; ``encode``: through H.264 and back, as a camera's file."""
    photos = sorted(PHOTOS.iterdir())[:shots]
    frames: list[np.ndarray] = []
    for photo in photos:
        frames += pan_zoom_frames(Image.open(photo), per_shot, size)
    rng = np.random.default_rng(0)
    if noise:
        frames = [np.clip(f + rng.normal(0, noise, f.shape), 0, 255).astype(np.uint8) for f in frames]
    if encode:
        with tempfile.TemporaryDirectory() as tmp:
            reader = VideoReader(write_clip(Path(tmp) / "clip.mp4", frames, audio=False))
            frames = [rgb for rgb, _ in reader.frames()]
            reader.close()
    return frames


def stability(args: argparse.Namespace) -> None:
    frames = clip_frames((args.width, args.height), args.per_shot, args.shots, args.noise, args.encode)
    stylizer = Stylizer.from_pretrained(args.culture, device="cpu", amp=args.amp)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = {"input (no translation)": warping_error(frames, frames)}
    outputs = {}
    for name, options in SETTINGS.items():
        runner = FrameStylizer(stylizer, options)
        started = time.time()
        outputs[name] = [runner(f) for f in frames]
        rows[name] = warping_error(frames, outputs[name])
        print(json.dumps({"setting": name, "warping_error": round(rows[name], 5), "cuts": runner.cuts,
                          "seconds": round(time.time() - started, 1)}), flush=True)
    print(json.dumps({"setting": "input", "warping_error": round(rows["input (no translation)"], 5)}))
    picks = [args.per_shot // 2 + i for i in range(0, 4 * args.step, args.step)]
    rows_img = [np.concatenate([frames[i] for i in picks], axis=1)]
    rows_img += [np.concatenate([outputs[n][i] for i in picks], axis=1) for n in ("plain", "flow-guided blend 0.5 (the default)")]
    Image.fromarray(np.concatenate(rows_img, axis=0)).save(out_dir / "strip.jpg", quality=85)
    print(json.dumps({"clip": f"{len(frames)} frames {args.width}x{args.height}, noise {args.noise}, "
                      f"{'H.264 round trip' if args.encode else 'raw frames'}", "cpu": cpu_name(),
                      "threads": torch.get_num_threads(), "strip": str(out_dir / "strip.jpg")}))


def speed(args: argparse.Namespace) -> None:
    for (w, h) in ((854, 480), (1920, 1080)):
        frames = clip_frames((w, h), args.frames, 1)
        for amp in (False, True):
            stylizer = Stylizer.from_pretrained(args.culture, device="cpu", amp=amp)
            runner = FrameStylizer(stylizer, DEFAULTS)
            runner(frames[0])  # warm-up
            started = time.time()
            for f in frames[1:]:
                runner(f)
            fps = (len(frames) - 1) / (time.time() - started)
            print(json.dumps({"size": f"{w}x{h}", "precision": "bf16 (--amp)" if amp else "fp32",
                              "frames_per_s": round(fps, 2), "cpu": cpu_name(),
                              "threads": torch.get_num_threads()}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("stability")
    s.add_argument("--culture", default="guohua")
    s.add_argument("--width", type=int, default=640)
    s.add_argument("--height", type=int, default=360)
    s.add_argument("--per_shot", type=int, default=48, help="frames per photo (2 s at 24 fps)")
    s.add_argument("--shots", type=int, default=3)
    s.add_argument("--step", type=int, default=6, help="frames between the strip's pictures")
    s.add_argument("--amp", action="store_true")
    s.add_argument("--noise", type=float, default=0.0, help="sensor noise (standard deviation, 0-255)")
    s.add_argument("--encode", action="store_true", help="through H.264 and back first")
    s.add_argument("--out", default="results/bench/video")
    v = sub.add_parser("speed")
    v.add_argument("--culture", default="guohua")
    v.add_argument("--frames", type=int, default=12)
    args = p.parse_args()
    stability(args) if args.what == "stability" else speed(args)


if __name__ == "__main__":
    main()
