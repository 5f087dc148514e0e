"""Would the residual convolutions' bf16 *weight gradient* run faster as nine matrix multiplies? A trial, kept so
the answer can be re-measured on another CPU (docs/performance.md, "Re-measured on an AMD EPYC (Zen 4)").

In a bf16 training step the residual blocks' 3x3 convolutions run forward at the chip's matrix-multiply rate but
their backward at about 80% of it, and oneDNN's weight gradient is the slower half. The weight gradient of a 3x3
convolution over a padded map is, for each of the nine taps, the output gradient times the input shifted by that
tap. Laid out channels-first with each image's padded rows back to back (the output gradient padded to the same
row width with zeros, so the products that wrap around a row's end are zero), every shifted input is a plain
strided view of one buffer: nine large matrix multiplies with no copies but the two layout changes.

Prints, per shape, oneDNN's weight-gradient time and the nine multiplies' (median ms), and both errors against
float32 (largest absolute error over the largest value).

    python bench/weight_grad_gemm.py [--shapes 3x256x64 1x256x64 3x256x32 1x256x32] [--iters 10]
"""

from __future__ import annotations

import argparse
import json

import torch
from winograd_f2_training import median_ms  # this folder is on the path when a bench script runs


def weight_grad_by_taps(padded: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """d(loss)/d(weight) of a 3x3, stride-1 convolution of ``padded`` [N, C, W, W] (already padded by 1) whose output
    gradient is ``grad_out`` [N, O, W-2, W-2]: nine multiplies over a channels-first flat layout."""
    n, channels, width, _ = padded.shape
    out_channels, size = grad_out.shape[1], grad_out.shape[-1]
    length = n * width * width
    flat = padded.new_zeros(channels, length + 2 * width + 2)  # room for the last tap's shift
    flat[:, :length].view(channels, n, width * width).copy_(padded.reshape(n, channels, -1).transpose(0, 1))
    grad = grad_out.new_zeros(out_channels, n, width, width)  # zero where a shifted row wraps around
    grad[:, :, :size, :size].copy_(grad_out.transpose(0, 1))
    grad = grad.view(out_channels, length)
    taps = [grad @ flat[:, ky * width + kx: ky * width + kx + length].t() for ky in range(3) for kx in range(3)]
    return torch.stack(taps, -1).view(out_channels, channels, 3, 3)


def onednn_weight_grad(padded: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    channels = weight.shape[0]
    return torch.ops.aten.convolution_backward(grad_out, padded, weight, [channels], [1, 1], [0, 0], [1, 1], False,
                                               [0, 0], 1, [False, True, False])[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["3x256x64", "1x256x64", "3x256x32", "1x256x32"],
                   help="NxCxH: images, channels, map size")
    p.add_argument("--iters", type=int, default=10)
    args = p.parse_args()
    torch.manual_seed(0)
    for shape in args.shapes:
        n, channels, size = (int(v) for v in shape.split("x"))
        padded = torch.randn(n, channels, size + 2, size + 2).bfloat16()
        weight = (torch.randn(channels, channels, 3, 3) * 0.02).bfloat16()
        grad_out = torch.randn(n, channels, size, size).bfloat16()
        exact = onednn_weight_grad(padded.float(), grad_out.float(), weight.float())

        def error(grad: torch.Tensor) -> float:
            return float((grad.float() - exact).abs().max() / exact.abs().max())

        onednn = median_ms(lambda: onednn_weight_grad(padded, grad_out, weight), args.iters)
        taps = median_ms(lambda: weight_grad_by_taps(padded, grad_out), args.iters)
        print(json.dumps({"shape": shape, "onednn_ms": onednn, "taps_ms": taps,
                          "speedup": round(onednn / taps, 3),
                          "error_onednn": round(error(onednn_weight_grad(padded, grad_out, weight)), 5),
                          "error_taps": round(error(weight_grad_by_taps(padded, grad_out)), 5),
                          "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
