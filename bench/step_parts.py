"""Parts of a step, each as we run it against the way PyTorch runs it by default, alternating A/B in one
process. Prints one JSON line per comparison (medians in ms):

- ``last_conv``: the generator's last convolution (ngf -> 3, 7x7) as PyTorch's convolution against one
  stride-2 convolution per 2x2 output block (accel/phase_conv.py); inference and training (forward and all
  gradients), bf16 under autocast and fp32.
- ``pad_backward``: the gradient of a bf16 reflection padding, PyTorch's reflection_pad2d_backward against
  layers.reflect_pad_backward.
- ``optimizer``: one Adam step over the default CycleGAN's parameters, foreach against fused kernels.
- ``png``: writing a 256x256 image as PNG at Pillow's default zlib level and at ours (files.PNG_COMPRESS_LEVEL).

    python bench/step_parts.py [--iters 15]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cyclegan_culture.files import PNG_COMPRESS_LEVEL  # noqa: E402
from cyclegan_culture.accel import layers  # noqa: E402
from cyclegan_culture.models import networks  # noqa: E402
from cyclegan_culture.accel.phase_conv import phase_conv2d  # noqa: E402


def alternate(variants: dict[str, Callable[[], object]], iters: int, warmup: int = 3) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(warmup + iters):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: round(statistics.median(t) * 1000, 3) for name, t in times.items()}


def last_conv(crop: int, batch: int, precision: str, training: bool, iters: int) -> dict:
    torch.manual_seed(0)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    x = torch.randn(batch, 64, crop + 6, crop + 6).to(dtype).requires_grad_(training)
    w = (torch.randn(3, 64, 7, 7) * 0.05).requires_grad_(training)
    b = torch.randn(3).requires_grad_(training)
    grad = torch.randn(batch, 3, crop, crop, dtype=dtype)

    def run(conv: Callable) -> Callable[[], object]:
        def step() -> object:
            with torch.set_grad_enabled(training), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                y = conv(x, w, b)
            return torch.autograd.grad(y, (x, w, b), grad) if training else y
        return step

    ms = alternate({"pytorch": run(F.conv2d), "ours": run(phase_conv2d)}, iters)
    return {"part": "last_conv", "crop": crop, "batch": batch, "precision": precision,
            "pass": "training" if training else "inference", **ms, "speedup": round(ms["pytorch"] / ms["ours"], 2)}


def pad_backward(shape: tuple[int, ...], padding: int, iters: int) -> dict:
    x = torch.randn(*shape).bfloat16()
    grad = torch.randn(*shape[:2], shape[2] + 2 * padding, shape[3] + 2 * padding).bfloat16()
    ms = alternate({"pytorch": lambda: torch.ops.aten.reflection_pad2d_backward(grad, x, (padding,) * 4),
                    "ours": lambda: layers.reflect_pad_backward(grad, padding)}, iters)
    return {"part": "pad_backward", "shape": list(grad.shape), **ms, "speedup": round(ms["pytorch"] / ms["ours"], 2)}


def optimizer(iters: int) -> dict:
    torch.manual_seed(0)
    nets = [networks.define_G(3, 3, 64, "resnet_9blocks") for _ in range(2)] + \
        [networks.define_D(3, 64, "basic") for _ in range(2)]
    params = [p for net in nets for p in net.parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    kinds = {"foreach": {"foreach": True}, "fused": {"fused": True}}
    steps = {name: torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999), **kw).step for name, kw in kinds.items()}
    ms = alternate(steps, iters)
    return {"part": "optimizer", "parameters": sum(p.numel() for p in params), **ms,
            "speedup": round(ms["foreach"] / ms["fused"], 2)}


def png(iters: int) -> dict:
    import numpy as np
    from PIL import Image

    # a guohua painting of the embedded demo data (noise would compress like no picture does)
    paintings = sorted((ROOT / "datasets" / "photo2guohua" / "testB").glob("*.jpg"))
    if paintings:
        image = Image.open(paintings[0]).convert("RGB").resize((256, 256), Image.BICUBIC)
    else:
        yy, xx = np.mgrid[0:256, 0:256]
        image = Image.fromarray(np.stack([xx, yy, (xx + yy) // 2], -1).astype(np.uint8))
    sizes = {}

    def write(level: int | None) -> Callable[[], object]:
        def save() -> object:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", **({} if level is None else {"compress_level": level}))
            sizes[level] = buffer.tell()
        return save

    ms = alternate({"pillow_default": write(None), "ours": write(PNG_COMPRESS_LEVEL)}, iters)
    return {"part": "png", "image": paintings[0].name if paintings else "gradient", **ms,
            "bytes_default": sizes[None], "bytes_ours": sizes[PNG_COMPRESS_LEVEL],
            "speedup": round(ms["pillow_default"] / ms["ours"], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iters", type=int, default=15)
    args = p.parse_args()
    rows = [last_conv(crop, batch, precision, training, args.iters)
            for crop, batch in ((128, 2), (256, 1)) for precision in ("bf16", "fp32") for training in (False, True)]
    rows += [pad_backward((2, 256, 64, 64), 1, args.iters), pad_backward((2, 256, 32, 32), 1, args.iters),
             pad_backward((2, 64, 256, 256), 3, args.iters), optimizer(args.iters), png(args.iters)]
    for row in rows:
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
