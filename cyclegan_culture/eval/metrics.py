"""Image-pair metrics in a small registry, and the metrics.jsonl log every evaluation appends to.

A metric takes two RGB float arrays in [0, 1] of the same shape and returns a number. Register new ones with
``@register("name")``; ``compute(names, a, b)`` evaluates any of them by name.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
from skimage import color, feature
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

Metric = Callable[[np.ndarray, np.ndarray], float]
REGISTRY: dict[str, Metric] = {}


def register(name: str) -> Callable[[Metric], Metric]:
    def add(fn: Metric) -> Metric:
        if name in REGISTRY:
            raise ValueError(f"metric {name!r} is registered twice")
        REGISTRY[name] = fn
        return fn
    return add


@register("ssim_grey")
def ssim_grey(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of the grey-level images: is the photo's structure still there?"""
    return float(structural_similarity(color.rgb2gray(a), color.rgb2gray(b), data_range=1.0))


@register("ssim_edges")
def ssim_edges(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of Canny edge maps (blurred): are the photo's contours kept, whatever the colours?"""
    from scipy import ndimage

    ea, eb = (ndimage.gaussian_filter(feature.canny(color.rgb2gray(x), sigma=2).astype(float), 1.5) for x in (a, b))
    return float(structural_similarity(ea, eb, data_range=max(ea.max(), eb.max(), 1e-6)))


@register("psnr")
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (for cycle reconstructions)."""
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else float(peak_signal_noise_ratio(a, b, data_range=1.0))


@register("ssim_rgb")
def ssim_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity over the three colour channels (for cycle reconstructions)."""
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=-1))


def compute(names: list[str], a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise KeyError(f"unknown metrics {unknown}; registered: {sorted(REGISTRY)}")
    return {name: REGISTRY[name](a, b) for name in names}


def append_jsonl(path: Path, record: dict) -> None:
    """Add one evaluation as one JSON line (with a timestamp); the file only ever grows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"time": time.time(), **record}, ensure_ascii=False, default=float) + "\n")
