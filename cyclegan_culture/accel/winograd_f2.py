"""Reflection-padded 3x3 convolutions for bf16 inference in channels_last, by Winograd's F(2x2, 3x3).

bf16 inference (test.py and stylize with --amp) spends three quarters of its time in the residual blocks' 3x3
convolutions, which oneDNN already runs at this CPU's bf16 matrix-multiply peak. F(2x2, 3x3) (Lavin & Gray,
2016) computes each 2x2 output tile from a 4x4 input tile with 16 multiplications per channel pair instead of 36:
2.25x fewer multiply-adds, in one batched bf16 matrix multiply between transforms that only add and subtract.
In NHWC every transform is an elementwise operation over whole rows of channels, which PyTorch vectorises well
(in NCHW they were strided and ate the gain; docs/performance.md). The price is precision: the transformed
tiles and products are rounded to bf16, so each convolution's error is about 2.5x direct bf16's, and a default
generator's output error against fp32 1.4x (tests, docs/performance.md). Inference only (no gradients), CPU only:
under --conv_algorithm auto for 256-channel maps, forced by 'winograd', off with 'direct'.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# G of F(2x2, 3x3): the 4x4 transformed filter is G g G^T.
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def filters(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, 3, 3) -> (16, in, out) transformed filters in the weight's dtype, computed in float64."""
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    transformed = torch.einsum("ai,kcij,bj->abck", g, weight.double(), g)
    return transformed.reshape(16, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def applies(x: torch.Tensor) -> bool:
    """Whether ``x`` (the unpadded input) suits: a 4-D channels_last map on CPU of even height and width, at
    least 2x2 (reflection padding by 1 needs 2)."""
    return (x.dim() == 4 and x.device.type == "cpu" and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0
            and min(x.shape[-2:]) >= 2 and x.is_contiguous(memory_format=torch.channels_last))


def _sub_add(rows: torch.Tensor, out: torch.Tensor) -> None:
    """B^T along a tile axis already moved to the front of ``rows`` (4 entries): out[0..3] = r0 - r2,
    r1 + r2, r2 - r1, r1 - r3."""
    torch.sub(rows[0], rows[2], out=out[0])
    torch.add(rows[1], rows[2], out=out[1])
    torch.sub(rows[2], rows[1], out=out[2])
    torch.sub(rows[1], rows[3], out=out[3])


def _fold(rows: torch.Tensor, out: torch.Tensor) -> None:
    """A^T along the front axis of ``rows`` (4 entries): out[0] = r0 + r1 + r2, out[1] = r1 - r2 - r3."""
    torch.add(rows[0], rows[1], out=out[0])
    out[0] += rows[2]
    torch.sub(rows[1], rows[2], out=out[1])
    out[1] -= rows[3]


def conv3x3_reflect(x: torch.Tensor, transformed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(F.pad(x, (1, 1, 1, 1), mode='reflect'), weight, bias)`` for a channels_last ``x`` of even
    size, with ``transformed = filters(weight)``; the result is channels_last in x's dtype."""
    n, c, h, w = x.shape
    k = transformed.shape[2]
    th, tw = h // 2, w // 2
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect").permute(0, 2, 3, 1)  # (n, h+2, w+2, c), contiguous
    s_n, s_h, s_w, _ = padded.stride()
    # 4x4 input tiles at stride 2, tile row first: (row i, n, ty, tx, column j, c)
    tiles = padded.as_strided((4, n, th, tw, 4, c), (s_h, s_n, 2 * s_h, 2 * s_w, s_w, 1))
    rows_done = torch.empty((4, n, th, tw, 4, c), dtype=x.dtype)  # (a, n, ty, tx, j, c)
    _sub_add(tiles, rows_done)
    # (a, b, n, ty, tx, c), written through a (b, a, ...) view so that it is already the (16, tiles, c) batch
    v = torch.empty((4, 4, n, th, tw, c), dtype=x.dtype)
    _sub_add(rows_done.permute(4, 0, 1, 2, 3, 5), v.transpose(0, 1))
    products = torch.bmm(v.view(16, n * th * tw, c), transformed).view(4, 4, n, th, tw, k)  # (a, b, ...)
    folded_rows = torch.empty((2, 4, n, th, tw, k), dtype=x.dtype)  # (i, b, n, ty, tx, k)
    _fold(products, folded_rows)
    out = torch.empty((n, h, w, k), dtype=x.dtype)
    # output pixel (2 ty + i, 2 tx + j): a (j, i, n, ty, tx, k) view of out
    _fold(folded_rows.transpose(0, 1), out.view(n, th, 2, tw, 2, k).permute(4, 2, 0, 1, 3, 5))
    if bias is not None:
        out += bias
    return out.permute(0, 3, 1, 2)
