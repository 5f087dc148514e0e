"""Convolutions with few output channels, computed as one stride-2 convolution per 2x2 output block.

The generator's last convolution maps 64 channels to 3 with a 7x7 kernel. CPU convolution kernels vectorise
over output channels, so with 3 of them most of each vector is idle: it ran at 60-80 GFLOP/s in bf16 against
400 for the residual blocks. Each output pixel of a 2x2 block (phase py, px) is the same convolution read at an
offset, so all four phases are one stride-2 convolution with 4x the output channels (12) and the kernel padded
to (k+1)x(k+1), placed in the block at (py, px); ``pixel_shuffle`` interleaves the phases back into the image.
Same sums; 31% more multiplications (the padded kernels' zeros), 2.0-2.3x faster in bf16 and 1.8-2.5x in fp32,
inference and training (``python bench/step_parts.py``; docs/performance.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BLOCK = 2


def phase_weight(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, kh, kw) -> (4*out, in, kh+1, kw+1): the kernel of each output phase (py, px), channel
    4*out + 2*py + px, as ``pixel_shuffle`` expects."""
    out_c, in_c, kh, kw = weight.shape
    phases = [F.pad(weight, (px, BLOCK - 1 - px, py, BLOCK - 1 - py)) for py in range(BLOCK) for px in range(BLOCK)]
    return torch.stack(phases, 1).reshape(out_c * BLOCK * BLOCK, in_c, kh + 1, kw + 1)


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the unpadded stride-1 convolution of ``x`` by ``weight`` has an even height and width, so that
    2x2 blocks tile it."""
    out_h, out_w = x.shape[-2] - weight.shape[-2] + 1, x.shape[-1] - weight.shape[-1] + 1
    return out_h > 0 and out_w > 0 and out_h % BLOCK == 0 and out_w % BLOCK == 0


def phase_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 phase_kernel: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` (stride 1, no padding) as one stride-2 convolution over 2x2 output blocks.
    ``phase_kernel`` is ``phase_weight(weight)`` when the caller keeps it."""
    if phase_kernel is None:
        phase_kernel = phase_weight(weight)
    phase_bias = None if bias is None else bias.repeat_interleave(BLOCK * BLOCK)
    return F.pixel_shuffle(F.conv2d(x, phase_kernel, phase_bias, stride=BLOCK), BLOCK)
