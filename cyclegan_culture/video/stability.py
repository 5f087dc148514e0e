"""Steady stylized video: frames translated one by one flicker, because instance normalisation and the generator
react to small changes between frames. Two remedies, each optional, and the measure of what they buy:

- shared statistics: every instance norm normalises a frame with the statistics pooled over the last ``window``
  frames (inference.SharedStatsInstanceNorm.window), so tones cannot jump from one frame to the next;
- flow-guided blending: the previous stylized frame, warped along the optical flow of the input frames (OpenCV's
  Farneback), is blended into the current one where the flow holds (occluded or newly seen pixels keep the new
  frame);
- ``warping_error``: the mean difference between consecutive frames after warping the earlier one along the
  input's flow, over pixels the flow explains; lower is steadier.

A hard cut (the input frames differ wholesale) resets both, so no frame of one shot leaks into the next.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import torch

from cyclegan_culture.data.images import pil_to_tensor, tensor_to_pil
from cyclegan_culture.errors import UserError
from cyclegan_culture.inference import Stylizer, translate, translate_tiled

FLOW_SIZE = 480        # optical flow is estimated on frames scaled to this longer side (speed), then scaled up
OCCLUSION_LEVEL = 0.08  # input pixels that warp with a larger error (0-1) are treated as occluded
CUT_LEVEL = 0.15        # mean absolute difference (0-1) of two small grey frames above which a shot has cut


def _cv2():
    try:
        import cv2
    except ImportError:
        raise UserError('flow-guided blending needs OpenCV: pip install "cyclegan-culture[video]" '
                        "(or pip install opencv-python-headless)") from None
    return cv2


def _grey_small(rgb: np.ndarray, size: int = FLOW_SIZE) -> tuple[np.ndarray, float]:
    cv2 = _cv2()
    h, w = rgb.shape[:2]
    scale = min(1.0, size / max(h, w))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)
    return grey, scale


def backward_flow(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """For each pixel of ``current`` (RGB uint8), where it was in ``previous``: (H, W, 2) offsets in pixels."""
    cv2 = _cv2()
    cur, scale = _grey_small(current)
    prev, _ = _grey_small(previous)
    flow = cv2.calcOpticalFlowFarneback(cur, prev, None, 0.5, 4, 21, 3, 5, 1.1, 0)
    h, w = current.shape[:2]
    if scale < 1.0:
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) / scale
    return flow


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` (H, W, C) sampled at each pixel + ``flow``: the earlier frame moved onto the current one."""
    cv2 = _cv2()
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def valid_mask(current: np.ndarray, previous: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """1 where the flow explains the current input pixel (the warped previous input matches it), else 0."""
    error = np.abs(warp(previous, flow).astype(np.float32) - current.astype(np.float32)).mean(axis=2) / 255.0
    return (error < OCCLUSION_LEVEL).astype(np.float32)


def is_cut(current: np.ndarray, previous: np.ndarray) -> bool:
    a, _ = _grey_small(current, 64)
    b, _ = _grey_small(previous, 64)
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()) / 255.0 > CUT_LEVEL


def warping_error(inputs: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """Mean |O_t - warp(O_{t-1})| (0-1) over the pixels the input's flow explains, over consecutive frames
    (pairs across a cut are left out). ``outputs = inputs`` gives the input's own figure."""
    errors = []
    for t in range(1, len(inputs)):
        if is_cut(inputs[t], inputs[t - 1]):
            continue
        flow = backward_flow(inputs[t], inputs[t - 1])
        mask = valid_mask(inputs[t], inputs[t - 1], flow)
        diff = np.abs(outputs[t].astype(np.float32) - warp(outputs[t - 1], flow).astype(np.float32)).mean(axis=2)
        if mask.sum() > 0:
            errors.append(float((diff * mask).sum() / mask.sum()) / 255.0)
    return float(np.mean(errors)) if errors else 0.0


@dataclass(frozen=True)
class StabilityOptions:
    window: int = 1          # frames whose normalisation statistics are pooled (1: each frame its own)
    blend: float = 0.0       # weight of the flow-warped previous stylized frame (0: off)

    def check(self) -> "StabilityOptions":
        if self.window < 1 or not 0.0 <= self.blend < 1.0:
            raise UserError(f"--temporal_window {self.window} / --flow_blend {self.blend}: the window must be 1 or "
                            "more and the blend in [0, 1)")
        return self


# the defaults stylize uses for video, from docs/video.md: the flow-guided blend halved the warping error of
# plain frame-by-frame translation; pooled statistics (window 8) changed it by under 1%, so they stay off
DEFAULTS = StabilityOptions(window=1, blend=0.5)


class FrameStylizer:
    """Stylize consecutive frames (RGB uint8) with a Stylizer, steadied as ``options`` say; call ``reset`` (or
    let a detected cut do it) between shots."""

    def __init__(self, stylizer: Stylizer, options: StabilityOptions):
        self.stylizer, self.options = stylizer, options.check()
        self.previous: tuple[np.ndarray, np.ndarray] | None = None  # (input, output) of the last frame
        for norm in stylizer._norms:
            norm.window = collections.deque(maxlen=options.window) if options.window > 1 else None
        self.cuts = 0

    def reset(self) -> None:
        self.previous = None
        for norm in self.stylizer._norms:
            if norm.window is not None:
                norm.window.clear()

    @torch.inference_mode()
    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        if self.previous is not None and is_cut(rgb, self.previous[0]):
            self.cuts += 1
            self.reset()
        stylizer = self.stylizer
        image = pil_to_tensor_array(rgb).to(stylizer.device)
        if stylizer.tile and max(image.shape[-2:]) > stylizer.tile:
            out = translate_tiled(stylizer._tiled, image, stylizer.tile, stylizer.overlap, stylizer.dtype,
                                  stylizer._norms)
        else:  # the copy with shareable norms (identical to the plain generator when the window is off)
            out = translate(stylizer._tiled, image, stylizer.dtype)
        result = np.asarray(tensor_to_pil(out[0]))
        if self.options.blend > 0 and self.previous is not None:
            prev_in, prev_out = self.previous
            flow = backward_flow(rgb, prev_in)
            mask = valid_mask(rgb, prev_in, flow)[..., None] * self.options.blend
            result = np.clip(result * (1 - mask) + warp(prev_out, flow) * mask + 0.5, 0, 255).astype(np.uint8)
        self.previous = (rgb, result)
        return result


def pil_to_tensor_array(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) in [-1, 1], as pil_to_tensor gives for images."""
    from PIL import Image

    return pil_to_tensor(Image.fromarray(rgb)).unsqueeze(0)
