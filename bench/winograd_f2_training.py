"""Would Winograd's F(2x2, 3x3) pay for bf16 *training* convolutions? A trial, kept so the answer can be re-measured
on another CPU (docs/performance.md, "Re-measured on an AMD EPYC (Zen 4)").

bf16 inference already runs the residual blocks by F(2x2, 3x3) (accel/winograd_f2.py): 2.25x fewer multiplies.
Here the same algorithm gets both gradients, written with the same PyTorch operations:

- input gradient: the same algorithm over the output gradient zero-padded by 2, with the filters flipped and
  transposed, gives the gradient of the padded input; the reflection is folded back (layers.reflect_pad_backward);
- weight gradient: the input's transformed tiles times the output gradient taken back through the output
  transform, summed over tiles, back through the filter transform.

Prints, per shape, the error of each against float64 (largest absolute error over the largest value) beside
direct bf16's, and the median times (ms) of direct and F(2x2, 3x3) for a forward pass alone and for forward plus
both gradients; with ``--compiled``, also the forward with its tile transforms compiled by torch.compile.

    python bench/winograd_f2_training.py [--shapes 1x256x32 3x256x32 1x256x64] [--iters 10] [--compiled]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cyclegan_culture.accel import winograd_f2  # noqa: E402
from cyclegan_culture.accel.layers import reflect_pad_backward  # noqa: E402


def input_points(padded: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """A zero- or reflection-padded NHWC map (n, H + 2, W + 2, c), H and W even -> its transformed 4x4 tiles
    B^T d B, (16, tiles, c), and (n, tiles high, tiles wide)."""
    n, padded_h, padded_w, c = padded.shape
    th, tw = (padded_h - 2) // 2, (padded_w - 2) // 2
    s_n, s_h, s_w, _ = padded.stride()
    tiles = padded.as_strided((4, n, th, tw, 4, c), (s_h, s_n, 2 * s_h, 2 * s_w, s_w, 1))
    rows = torch.empty((4, n, th, tw, 4, c), dtype=padded.dtype)
    winograd_f2._sub_add(tiles, rows)
    points = torch.empty((4, 4, n, th, tw, c), dtype=padded.dtype)
    winograd_f2._sub_add(rows.permute(4, 0, 1, 2, 3, 5), points.transpose(0, 1))
    return points.view(16, n * th * tw, c), (n, th, tw)


def output_tiles(products: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """(16, tiles, k) products -> the output A^T m A, NHWC (n, 2 th, 2 tw, k)."""
    n, th, tw = grid
    k = products.shape[-1]
    rows = torch.empty((2, 4, n, th, tw, k), dtype=products.dtype)
    winograd_f2._fold(products.view(4, 4, n, th, tw, k), rows)
    out = torch.empty((n, 2 * th, 2 * tw, k), dtype=products.dtype)
    winograd_f2._fold(rows.transpose(0, 1), out.view(n, th, 2, tw, 2, k).permute(4, 2, 0, 1, 3, 5))
    return out


def _unfold_rows(rows: torch.Tensor, out: torch.Tensor) -> None:
    """A along the front axis (the output transform's transpose): 2 rows -> 4, d0, d0 + d1, d0 - d1, -d1."""
    out[0].copy_(rows[0])
    torch.add(rows[0], rows[1], out=out[1])
    torch.sub(rows[0], rows[1], out=out[2])
    torch.neg(rows[1], out=out[3])


def filter_points(weight: torch.Tensor) -> torch.Tensor:
    """(k, c, 3, 3) -> G g G^T as (16, c, k) bf16, computed in fp32 (the weights change every step)."""
    g = torch.tensor(winograd_f2._G, dtype=torch.float32)
    transformed = torch.einsum("ai,kcij,bj->abck", g, weight.float(), g)
    return transformed.reshape(16, weight.shape[1], weight.shape[0]).to(torch.bfloat16).contiguous()


class F2Conv3x3Reflect(torch.autograd.Function):
    """reflection pad 1 + 3x3 convolution of a channels_last bf16 map by F(2x2, 3x3), with both gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        points, grid = input_points(F.pad(x, (1, 1, 1, 1), mode="reflect").permute(0, 2, 3, 1))
        out = output_tiles(torch.bmm(points, filter_points(weight)), grid)
        if bias is not None:
            out += bias
        return out.permute(0, 3, 1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_nhwc = grad.permute(0, 2, 3, 1)
        n, height, width, k = grad_nhwc.shape
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            points, grid = input_points(F.pad(grad_nhwc, (0, 0, 2, 2, 2, 2)).contiguous())
            flipped = weight.transpose(0, 1).flip(2, 3)
            grad_padded = output_tiles(torch.bmm(points, filter_points(flipped)), grid)
            grad_x = reflect_pad_backward(grad_padded.permute(0, 3, 1, 2), 1).contiguous(
                memory_format=torch.channels_last)
        if ctx.needs_input_grad[1]:
            th, tw = height // 2, width // 2
            tiles = grad_nhwc.contiguous().view(n, th, 2, tw, 2, k).permute(2, 4, 0, 1, 3, 5)
            rows = torch.empty((4, 2, n, th, tw, k), dtype=grad.dtype)
            _unfold_rows(tiles, rows)
            grad_points = torch.empty((4, 4, n, th, tw, k), dtype=grad.dtype)
            _unfold_rows(rows.transpose(0, 1), grad_points.transpose(0, 1))
            points, _ = input_points(F.pad(x, (1, 1, 1, 1), mode="reflect").permute(0, 2, 3, 1))
            products = torch.bmm(points.transpose(1, 2), grad_points.view(16, -1, k))  # (16, c, k)
            g = torch.tensor(winograd_f2._G, dtype=torch.float32)
            grad_w = torch.einsum("ai,abck,bj->kcij", g, products.float().view(4, 4, *products.shape[1:]),
                                  g).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b


def direct(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), weight, bias)


def errors(n: int, c: int, size: int) -> dict[str, float]:
    """Largest error over the largest value, against float64, of direct bf16 and F(2x2, 3x3) bf16."""
    gen = torch.Generator().manual_seed(0)
    x64 = torch.randn(n, c, size, size, generator=gen, dtype=torch.float64)
    w64 = torch.randn(c, c, 3, 3, generator=gen, dtype=torch.float64) / (3 * c ** 0.5)
    b64 = torch.randn(c, generator=gen, dtype=torch.float64)
    g64 = torch.randn(n, c, size, size, generator=gen, dtype=torch.float64)

    def run(conv: Callable, dtype: torch.dtype) -> list[torch.Tensor]:
        x = x64.to(dtype).clone(memory_format=torch.channels_last).requires_grad_()
        w, b = w64.to(dtype).clone().requires_grad_(), b64.to(dtype).clone().requires_grad_()
        y = conv(x, w, b)
        y.backward(g64.to(dtype).contiguous(memory_format=torch.channels_last))
        return [t.detach().double() for t in (y, x.grad, w.grad)]

    exact = run(direct, torch.float64)
    result = {}
    for name, conv in (("direct", direct), ("f2", F2Conv3x3Reflect.apply)):
        for part, got, want in zip(("out", "grad_x", "grad_w"), run(conv, torch.bfloat16), exact):
            result[f"{name}_{part}_error"] = round(float((got - want).abs().max() / want.abs().max()), 4)
    return result


def median_ms(run: Callable[[], object], iters: int) -> float:
    run()
    run()
    times = []
    for _ in range(iters):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


def timings(n: int, c: int, size: int, iters: int, compiled: bool) -> dict[str, float]:
    x = torch.randn(n, c, size, size).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = (torch.randn(c, c, 3, 3) / 50).to(torch.bfloat16).requires_grad_()
    b = torch.zeros(c, dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(n, c, size, size).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    result = {}
    for name, conv in (("direct", direct), ("f2", F2Conv3x3Reflect.apply)):
        def forward(conv: Callable = conv) -> object:
            with torch.no_grad():
                return conv(x, w, b)

        def train(conv: Callable = conv) -> object:
            conv(x, w, b).backward(grad)
            return None
        result[f"{name}_forward_ms"] = median_ms(forward, iters)
        result[f"{name}_train_ms"] = median_ms(train, iters)
    if compiled:
        points = torch.compile(lambda padded: input_points(padded)[0], dynamic=False)
        outputs = torch.compile(output_tiles, dynamic=False)
        filters = filter_points(w.detach())
        grid = (n, size // 2, size // 2)

        def compiled_forward() -> object:
            with torch.no_grad():
                padded = F.pad(x, (1, 1, 1, 1), mode="reflect").permute(0, 2, 3, 1)
                return outputs(torch.bmm(points(padded), filters), grid)
        result["f2_compiled_forward_ms"] = median_ms(compiled_forward, iters)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["1x256x32", "3x256x32", "1x256x64"],
                   help="IMAGESxCHANNELSxSIZE (even sizes)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--compiled", action="store_true", help="also the forward with torch.compile'd transforms")
    args = p.parse_args()
    for shape in args.shapes:
        n, c, size = (int(v) for v in shape.split("x"))
        print(json.dumps({"kind": "winograd_f2_training", "shape": [n, c, size, size], "threads":
                          torch.get_num_threads(), **errors(n, c, size),
                          **timings(n, c, size, args.iters, args.compiled)}), flush=True)


if __name__ == "__main__":
    main()
