"""How far bf16 inference (--amp) is from fp32, per convolution algorithm of the residual blocks.

Runs a generator on each photo of a folder (resized to --size) in fp32, then in bf16 with the residual blocks'
3x3 convolutions direct (oneDNN), by Winograd's F(2x2, 3x3) and by F(4x4, 3x3) (the three candidates the tuner
times for --amp inference, accel/layers.BF16_INFERENCE_CANDIDATES), and reports each one's difference from fp32
in 8-bit levels (1 level = 1/255 of the range): mean, 99.9th percentile and largest, one JSON line each.
Examples::

    python bench/bf16_error.py PHOTOS                       # the shipped cultures
    python bench/bf16_error.py PHOTOS --run checkpoints/NAME --epoch 10
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cyclegan_culture.accel import inference_weights, make_plan  # noqa: E402
from cyclegan_culture.accel.layers import BF16_INFERENCE_CANDIDATES, ResidualConv  # noqa: E402
from cyclegan_culture.accel.swap import swap_layers  # noqa: E402
from cyclegan_culture.data.images import load_rgb, pil_to_tensor  # noqa: E402
from cyclegan_culture.data.unpaired import image_folder  # noqa: E402
from cyclegan_culture.inference import translate  # noqa: E402
from cyclegan_culture.pretrained import catalog  # noqa: E402
from cyclegan_culture.runs import folder  # noqa: E402

LEVELS = 127.5  # [-1, 1] -> 8-bit levels


class _Answer:
    """A stand-in tuner that answers every bf16 residual-convolution question with one algorithm."""

    def __init__(self, answer: str):
        self.answer = answer

    def choose(self, key, candidates, default, names=None):  # noqa: ANN001, ANN201 (the Autotuner's signature)
        return self.answer if key.startswith("residual_conv") and "bfloat16" in key else default


def _generator(run: Path, epoch: str, algorithm: str | None) -> torch.nn.Module:
    """fp32 (``algorithm`` None) or bf16 with its residual convolutions by ``algorithm``; built outside inference
    mode, as test.py builds them (weights made under it would not keep their transformed filters)."""
    cpu = torch.device("cpu")
    net = folder.load_generator(run, epoch, "AtoB", cpu, make_plan(cpu, autotune="off")).eval().requires_grad_(False)
    if algorithm is None:
        return net
    net = swap_layers(inference_weights(net, torch.bfloat16), "auto")
    for module in net.modules():
        if isinstance(module, ResidualConv):
            module.tuner = _Answer(algorithm)
    return net


def errors(run: Path, epoch: str, photos: list[torch.Tensor]) -> list[dict]:
    fp32 = _generator(run, epoch, None)
    nets = {algorithm: _generator(run, epoch, algorithm) for algorithm in BF16_INFERENCE_CANDIDATES}
    rows = []
    with torch.inference_mode():
        exact = [translate(fp32, x) for x in photos]
        for algorithm, net in nets.items():
            diff = torch.cat([((translate(net, x, torch.bfloat16) - e).abs() * LEVELS).flatten()
                              for x, e in zip(photos, exact)])
            rows.append({"kind": "bf16_error", "run": str(run), "algorithm": algorithm, "photos": len(photos),
                         "mean_levels": round(diff.mean().item(), 3),
                         "p99_9_levels": round(diff.quantile(0.999).item(), 2),
                         "max_levels": round(diff.max().item(), 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", type=Path, help="a folder of photos")
    parser.add_argument("--run", type=Path, action="append", help="a run folder (default: the shipped cultures)")
    parser.add_argument("--epoch", default="latest")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--count", type=int, default=12, help="the folder's first COUNT photos")
    args = parser.parse_args()
    files, _ = image_folder(args.photos.parent, args.photos.name)
    photos = [pil_to_tensor(load_rgb(p).resize((args.size, args.size), Image.BICUBIC)).unsqueeze(0)
              for p in files[: args.count]]
    if not photos:
        raise SystemExit(f"{args.photos}: no photos")
    runs = args.run or [m.folder for _, m in sorted(catalog._models_in(catalog.SHIPPED_DIR, True).items())]
    for run in runs:
        for row in errors(run, args.epoch, photos):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
