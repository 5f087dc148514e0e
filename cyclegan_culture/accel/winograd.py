"""Reflection-padded 3x3 convolutions by Winograd's minimal filtering, F(4x4, 3x3), for fp32 on CPU.

The residual blocks hold 87% of a ResNet generator's arithmetic, all of it 3x3 convolutions with 256 channels,
and this CPU already runs direct convolutions at its matrix-multiply peak. Winograd's algorithm computes each
4x4 output tile from a 6x6 input tile with 36 multiplications per channel pair instead of 144, so the same
convolution needs 4x fewer multiply-adds, at the price of small linear transforms around one batched matrix
multiply (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). Forward, input gradient and
weight gradient all use it. The results differ from direct convolution by rounding only (about 1e-5 of the
output's magnitude in fp32); in bf16 that rounding grows past bf16's own precision, so bf16 training and
autocast keep direct convolution, and bf16 inference offers it only as one of the tuner's timed candidates
(``bf16_inference_conv3x3_reflect``).

Two things make it pay on this machine, both measured (docs/performance.md):
- the reflection padding is part of the operation, so only the unpadded input is kept for the backward pass
  (the block's ReLU keeps that tensor anyway), not a padded copy as ``ReflectionPad2d`` + ``Conv2d`` do: this
  saves more memory than the workspace below costs;
- intermediate tiles live in a per-thread workspace reused from call to call: fresh multi-megabyte buffers
  each call cost page faults and fragmented the heap (+20% time and +350 MB resident at crop 128).
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

OUTPUT_TILE = 4
INPUT_TILE = OUTPUT_TILE + 2
TILE_POINTS = INPUT_TILE ** 2


@functools.lru_cache(maxsize=None)
def _transforms(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kronecker products of Lavin & Gray's F(4, 3) matrices, so each 2-D tile transform is one matrix multiply:
    input (36x36, B^T (x) B^T), filter (36x9, G (x) G) and output (16x36, A^T (x) A^T)."""
    b_t = torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                        [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=torch.float64)
    g = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64)
    a_t = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                       dtype=torch.float64)
    return tuple(torch.kron(m, m).to(device, dtype) for m in (b_t, g, a_t))  # type: ignore[return-value]


class _Workspace(threading.local):
    """Named scratch buffers, grown as needed and reused; one set per thread. Each name's buffer is held at the
    largest size asked for (tens of MB for 256-channel layers at 64x64)."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        size = 1
        for n in shape:
            size *= n
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < size or buf.dtype != like.dtype or buf.device != like.device \
                or buf.is_inference():
            # Never an inference tensor: one made under torch.inference_mode (a test pass, an evaluation during
            # training) cannot be written outside it, and the next training step would fail.
            with torch.inference_mode(False):
                buf = self.buffers[name] = torch.empty(size, dtype=like.dtype, device=like.device)
        return buf[:size].view(shape)


_workspace = _Workspace()


class _Geometry:
    """Sizes for images of C x H x W: outputs are H x W (reflection padding of 1), computed in th x tw tiles of
    4x4; the padded input is extended with zeros to 4 * th + 2 rows and 4 * tw + 2 columns. Images go through
    in groups of about TILES_PER_GROUP tiles: one 64x64 image alone, four 32x32 ones together (fewer tiles per
    matrix multiply ran it well below the CPU's peak; more made them outgrow the caches; both measured)."""

    TILES_PER_GROUP = 256

    def __init__(self, x: torch.Tensor):
        self.channels, self.height, self.width = x.shape[1:]
        if self.height < 2 or self.width < 2:
            raise ValueError(f"reflection padding needs at least 2x2 inputs, got {self.height}x{self.width}")
        self.tiles_h, self.tiles_w = -(-self.height // OUTPUT_TILE), -(-self.width // OUTPUT_TILE)
        self.tiles = self.tiles_h * self.tiles_w
        self.padded_h, self.padded_w = self.tiles_h * OUTPUT_TILE + 2, self.tiles_w * OUTPUT_TILE + 2
        self.group = max(1, self.TILES_PER_GROUP // self.tiles)


def _reflect_pad(images: torch.Tensor, geo: _Geometry, padded: torch.Tensor | None = None) -> torch.Tensor:
    """images [G, C, H, W] -> [G, C, 4 th + 2, 4 tw + 2], reflection-padded by 1, then zeros: into ``padded``
    (any layout) or the workspace."""
    h, w = geo.height, geo.width
    if padded is None:
        padded = _workspace.get("padded", (images.shape[0], geo.channels, geo.padded_h, geo.padded_w), images)
    if geo.padded_h > h + 2:
        padded[:, :, h + 2:].zero_()
    if geo.padded_w > w + 2:
        padded[:, :, :, w + 2:].zero_()
    padded[:, :, 1:h + 1, 1:w + 1] = images
    padded[:, :, 0, 1:w + 1] = images[:, :, 1]
    padded[:, :, h + 1, 1:w + 1] = images[:, :, h - 2]
    padded[:, :, :h + 2, 0] = padded[:, :, :h + 2, 2]
    padded[:, :, :h + 2, w + 1] = padded[:, :, :h + 2, w - 1]
    return padded


def _input_tiles(images: torch.Tensor, geo: _Geometry) -> torch.Tensor:
    """images [G, C, H, W] -> their transformed 6x6 tiles B^T D B, [36, C, G * tiles] (workspace).

    Transformed channel by channel ([C] x (36x36 @ 36 x tiles)), then transposed to the tile-point-major layout
    the batched multiply needs: about 1.6x faster at 64x64 than gathering tile-point-major first and
    transforming in one wide multiply, whose gather strides across all channels (measured)."""
    group, channels = images.shape[0], geo.channels
    columns = group * geo.tiles
    padded = _reflect_pad(images, geo)
    tiles = _workspace.get("tiles", (channels, INPUT_TILE, INPUT_TILE, group, geo.tiles_h, geo.tiles_w), images)
    tiles.copy_(padded.unfold(2, INPUT_TILE, OUTPUT_TILE).unfold(3, INPUT_TILE, OUTPUT_TILE)
                .permute(1, 4, 5, 0, 2, 3))
    by_channel = _workspace.get("input_tiles_by_channel", (channels, TILE_POINTS, columns), images)
    torch.matmul(_transforms(images.device, images.dtype)[0], tiles.view(channels, TILE_POINTS, columns),
                 out=by_channel)
    transformed = _workspace.get("input_tiles", (TILE_POINTS, channels, columns), images)
    transformed.copy_(by_channel.transpose(0, 1))
    return transformed


def _filter_transform(weight: torch.Tensor) -> torch.Tensor:
    """[O, C, 3, 3] -> G g G^T, [36, O, C] (workspace)."""
    out_channels, in_channels = weight.shape[:2]
    flat = _workspace.get("weights", (3, 3, out_channels, in_channels), weight)
    flat.copy_(weight.permute(2, 3, 0, 1))
    filters = _workspace.get("filters", (TILE_POINTS, out_channels * in_channels), weight)
    torch.mm(_transforms(weight.device, weight.dtype)[1], flat.view(9, -1), out=filters)
    return filters.view(TILE_POINTS, out_channels, in_channels)


def _forward(x: torch.Tensor, filters: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    geo = _Geometry(x)
    out_channels = filters.shape[1]
    output_transform = _transforms(x.device, x.dtype)[2]
    y = x.new_empty(x.shape[0], out_channels, geo.height, geo.width)
    for images, out in zip(x.split(geo.group), y.split(geo.group)):
        group = images.shape[0]
        products = _workspace.get("products", (TILE_POINTS, out_channels, group * geo.tiles), x)
        outputs = _workspace.get("outputs", (OUTPUT_TILE ** 2, out_channels * group * geo.tiles), x)
        torch.bmm(filters, _input_tiles(images, geo), out=products)
        torch.mm(output_transform, products.view(TILE_POINTS, -1), out=outputs)
        tiled = outputs.view(OUTPUT_TILE, OUTPUT_TILE, out_channels, group, geo.tiles_h, geo.tiles_w)
        tiled = tiled.permute(3, 2, 4, 0, 5, 1).reshape(group, out_channels, geo.tiles_h * OUTPUT_TILE,
                                                       geo.tiles_w * OUTPUT_TILE)
        out.copy_(tiled[:, :, :geo.height, :geo.width])
    return y if bias is None else y.add_(bias.view(1, -1, 1, 1))


def _output_gradient_tiles(grad: torch.Tensor, geo: _Geometry) -> torch.Tensor:
    """A group's output gradient [G, O, H, W] -> its 4x4 tiles E taken back through the output transform,
    A E A^T, as [36, O, G * tiles] (workspace); channel by channel, as in _input_tiles."""
    group, out_channels = grad.shape[:2]
    columns = group * geo.tiles
    if geo.tiles_h * OUTPUT_TILE != geo.height or geo.tiles_w * OUTPUT_TILE != geo.width:
        grad = F.pad(grad, (0, geo.tiles_w * OUTPUT_TILE - geo.width, 0, geo.tiles_h * OUTPUT_TILE - geo.height))
    tiles = _workspace.get("grad_tiles", (out_channels, OUTPUT_TILE, OUTPUT_TILE, group, geo.tiles_h, geo.tiles_w),
                           grad)
    tiles.copy_(grad.view(group, out_channels, geo.tiles_h, OUTPUT_TILE, geo.tiles_w, OUTPUT_TILE)
                .permute(1, 3, 5, 0, 2, 4))
    by_channel = _workspace.get("grad_tiles_by_channel", (out_channels, TILE_POINTS, columns), grad)
    torch.matmul(_transforms(grad.device, grad.dtype)[2].t(), tiles.view(out_channels, OUTPUT_TILE ** 2, columns),
                 out=by_channel)
    transformed = _workspace.get("grad_transformed", (TILE_POINTS, out_channels, columns), grad)
    transformed.copy_(by_channel.transpose(0, 1))
    return transformed


def _input_gradient(tile_products: torch.Tensor, geo: _Geometry) -> torch.Tensor:
    """Gradients of the transformed input tiles [36, C, G * tiles] -> the gradient of the zero-extended padded
    input, [G, C, 4 th + 2, 4 tw + 2]: each tile through B (channel by channel), overlapping tiles summed."""
    channels, columns = tile_products.shape[1:]
    group = columns // geo.tiles
    by_channel = _workspace.get("tile_products_by_channel", (channels, TILE_POINTS, columns), tile_products)
    by_channel.copy_(tile_products.transpose(0, 1))
    tile_grads = _workspace.get("tile_grads", (channels, TILE_POINTS, columns), tile_products)
    torch.matmul(_transforms(tile_products.device, tile_products.dtype)[0].t(), by_channel, out=tile_grads)
    if group > 1:
        tile_grads = tile_grads.view(channels * TILE_POINTS, group, geo.tiles).transpose(0, 1)
    return F.fold(tile_grads.reshape(group, channels * TILE_POINTS, geo.tiles), (geo.padded_h, geo.padded_w),
                  INPUT_TILE, stride=OUTPUT_TILE)


def _reflect_pad_backward(grad_padded: torch.Tensor, geo: _Geometry) -> torch.Tensor:
    """Fold the gradient of the padded input [G, C, >= H+2, >= W+2] back onto the images [G, C, H, W] (in
    place)."""
    h, w = geo.height, geo.width
    g = grad_padded[:, :, :h + 2, :w + 2]
    g[:, :, :, 2] += g[:, :, :, 0]
    g[:, :, :, w - 1] += g[:, :, :, w + 1]
    g[:, :, 2] += g[:, :, 0]
    g[:, :, h - 1] += g[:, :, h + 1]
    return g[:, :, 1:h + 1, 1:w + 1]


class _WinogradConv3x3(torch.autograd.Function):
    """Both gradients read the forward's bilinear algorithm backwards (transposition principle): with E a 4x4
    tile of the output gradient and D the matching 6x6 input tile, the weight gradient is
    G^T [ (A E A^T) * (B^T D B) ] G summed over tiles, and each input tile's gradient is B [ U^T (A E A^T) ] B^T,
    overlapping tiles summed; A E A^T is computed once for both."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _forward(x, _filter_transform(weight), bias)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_out = grad_out.contiguous()
        geo = _Geometry(x)
        out_channels, in_channels = weight.shape[:2]
        filter_transform = _transforms(x.device, x.dtype)[1]
        grad_x = torch.empty_like(x) if need_x else None
        if need_w:
            weight_products = _workspace.get("weight_products", (TILE_POINTS, out_channels, in_channels), x)
        if need_x:
            filters_t = _filter_transform(weight).transpose(1, 2)
        for index, (images, grad) in enumerate(zip(x.split(geo.group), grad_out.split(geo.group))):
            group = images.shape[0]
            grad_tiles = _output_gradient_tiles(grad, geo)
            if need_w:
                input_tiles = _input_tiles(images, geo).transpose(1, 2)
                if index == 0:
                    torch.bmm(grad_tiles, input_tiles, out=weight_products)
                else:
                    weight_products.baddbmm_(grad_tiles, input_tiles)
            if need_x:
                tile_products = _workspace.get("tile_products", (TILE_POINTS, in_channels, group * geo.tiles), x)
                torch.bmm(filters_t, grad_tiles, out=tile_products)
                padded = _input_gradient(tile_products, geo)
                grad_x[index * geo.group:index * geo.group + group] = _reflect_pad_backward(padded, geo)
        grad_w = grad_b = None
        if need_w:
            flat = _workspace.get("weights", (9, out_channels * x.shape[1]), x)  # done with the weights' copy
            torch.mm(filter_transform.t(), weight_products.view(TILE_POINTS, -1), out=flat)
            grad_w = flat.view(3, 3, out_channels, in_channels).permute(2, 3, 0, 1).contiguous()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b


# --- channels_last ------------------------------------------------------------------------------------------
# In NHWC the channels are the innermost dimension, so a tile transform is one matrix multiply over whole rows of
# channels ([36, 36] @ [36, tiles x C]) with no transposes, and the 36 tile points come out as the batch of the
# multiply directly. That cut the transforms' cost enough to pay at 32x32 maps (crop 128), where the NCHW version
# above did not (docs/performance.md). The forward pass and the backward pass reuse the same four workspace
# buffers (by input tile, input points, output points, by output tile), each at one time for one thing.

def _nhwc_input_tiles(x: torch.Tensor, geo: _Geometry) -> torch.Tensor:
    """x [N, C, H, W] (channels_last) -> its transformed 6x6 tiles B^T D B, [36, N * tiles, C] (workspace): the
    reflection-padded input, zero-extended to whole tiles, gathered tile-point-major and transformed in one
    multiply."""
    n, channels = x.shape[:2]
    tiles_h, tiles_w = geo.tiles_h, geo.tiles_w
    # padded in a workspace too (fresh maps per call fragment the heap), NHWC, filled through an NCHW view
    padded = _workspace.get("nhwc_padded", (n, geo.padded_h, geo.padded_w, channels), x)
    _reflect_pad(x, geo, padded.permute(0, 3, 1, 2))
    s_n, s_h, s_w, _ = padded.stride()
    tiles = _workspace.get("nhwc_by_input_tile", (INPUT_TILE, INPUT_TILE, n, tiles_h, tiles_w, channels), x)
    tiles.copy_(padded.as_strided(tiles.shape, (s_h, s_w, s_n, OUTPUT_TILE * s_h, OUTPUT_TILE * s_w, 1)))
    transformed = _workspace.get("nhwc_input_points", (TILE_POINTS, n * tiles_h * tiles_w, channels), x)
    torch.mm(_transforms(x.device, x.dtype)[0], tiles.view(TILE_POINTS, -1), out=transformed.view(TILE_POINTS, -1))
    return transformed


def _nhwc_forward(x: torch.Tensor, filters: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [N, C, H, W] channels_last, filters [36, O, C] -> the convolution, [N, O, H, W] channels_last."""
    n, _, height, width = x.shape
    out_channels = filters.shape[1]
    geo = _Geometry(x)
    tiles_h, tiles_w = geo.tiles_h, geo.tiles_w
    products = _workspace.get("nhwc_output_points", (TILE_POINTS, n * geo.tiles, out_channels), x)
    torch.bmm(_nhwc_input_tiles(x, geo), filters.transpose(1, 2), out=products)
    outputs = _workspace.get("nhwc_by_output_tile", (OUTPUT_TILE, OUTPUT_TILE, n, tiles_h, tiles_w, out_channels), x)
    torch.mm(_transforms(x.device, x.dtype)[2], products.view(TILE_POINTS, -1), out=outputs.view(OUTPUT_TILE ** 2, -1))
    tiled = outputs.permute(2, 3, 0, 4, 1, 5).reshape(n, tiles_h * OUTPUT_TILE, tiles_w * OUTPUT_TILE, out_channels)
    tiled = tiled[:, :height, :width]
    y = torch.empty(n, height, width, out_channels, dtype=x.dtype, device=x.device)
    if bias is None:
        y.copy_(tiled)
    else:
        torch.add(tiled, bias, out=y)
    return y.permute(0, 3, 1, 2)


def _nhwc_input_gradient(grad_tiles: torch.Tensor, filters: torch.Tensor, x: torch.Tensor,
                         geo: _Geometry) -> torch.Tensor:
    """The input's gradient from the output gradient's transformed tiles A E A^T [36, N * tiles, O]: through the
    filters, back through B to 6x6 tiles, overlapping tiles summed onto the padded map, reflection folded in."""
    n, channels = x.shape[:2]
    tiles_h, tiles_w = geo.tiles_h, geo.tiles_w
    tile_products = _workspace.get("nhwc_input_points", (TILE_POINTS, grad_tiles.shape[1], channels), x)
    torch.bmm(grad_tiles, filters, out=tile_products)
    tile_grads = _workspace.get("nhwc_by_input_tile", (INPUT_TILE, INPUT_TILE, n, tiles_h, tiles_w, channels), x)
    torch.mm(_transforms(x.device, x.dtype)[0].t(), tile_products.view(TILE_POINTS, -1),
             out=tile_grads.view(TILE_POINTS, -1))
    rows, cols = tiles_h * OUTPUT_TILE, tiles_w * OUTPUT_TILE
    padded = _workspace.get("nhwc_by_output_tile", (n, rows + 2, cols + 2, channels), x)  # done with the tiles
    padded[:, rows:].zero_()
    padded[:, :rows, cols:].zero_()
    # each tile's first 4x4 points tile the map without overlap; its last two rows and columns overlap the next
    # tile's first two and are added
    padded[:, :rows, :cols].view(n, tiles_h, OUTPUT_TILE, tiles_w, OUTPUT_TILE, channels).copy_(
        tile_grads[:OUTPUT_TILE, :OUTPUT_TILE].permute(2, 3, 0, 4, 1, 5))
    for i in range(OUTPUT_TILE, INPUT_TILE):
        padded[:, i:i + rows:OUTPUT_TILE, :cols].view(n, tiles_h, tiles_w, OUTPUT_TILE, channels).add_(
            tile_grads[i, :OUTPUT_TILE].permute(1, 2, 3, 0, 4))
    for j in range(OUTPUT_TILE, INPUT_TILE):
        for i in range(INPUT_TILE):
            padded[:, i:i + rows:OUTPUT_TILE, j:j + cols:OUTPUT_TILE] += tile_grads[i, j]
    grad_x = torch.empty_like(x, memory_format=torch.channels_last)
    return grad_x.copy_(_reflect_pad_backward(padded.permute(0, 3, 1, 2), geo))


class _WinogradConv3x3ChannelsLast(torch.autograd.Function):
    """_WinogradConv3x3 for channels_last maps. The input's transformed tiles are recomputed for the weight
    gradient rather than kept (2.25x the input's size per convolution)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _nhwc_forward(x, _filter_transform(weight), bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n, _, height, width = x.shape
        out_channels = weight.shape[0]
        geo = _Geometry(x)
        tiles_h, tiles_w = geo.tiles_h, geo.tiles_w
        _, filter_transform, output_transform = _transforms(x.device, x.dtype)
        grad = grad_out.permute(0, 2, 3, 1)
        if tiles_h * OUTPUT_TILE != height or tiles_w * OUTPUT_TILE != width:
            grad = F.pad(grad, (0, 0, 0, tiles_w * OUTPUT_TILE - width, 0, tiles_h * OUTPUT_TILE - height))
        grad = grad.contiguous()
        s_n, s_h, s_w, _ = grad.stride()
        tiles = _workspace.get("nhwc_by_output_tile", (OUTPUT_TILE, OUTPUT_TILE, n, tiles_h, tiles_w, out_channels),
                               x)
        tiles.copy_(grad.as_strided(tiles.shape, (s_h, s_w, s_n, OUTPUT_TILE * s_h, OUTPUT_TILE * s_w, 1)))
        grad_tiles = _workspace.get("nhwc_output_points", (TILE_POINTS, n * geo.tiles, out_channels), x)
        torch.mm(output_transform.t(), tiles.view(OUTPUT_TILE ** 2, -1), out=grad_tiles.view(TILE_POINTS, -1))
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = _nhwc_input_gradient(grad_tiles, _filter_transform(weight), x, geo)
        if need_w:
            # the filters' buffer: the input gradient is done with them
            weight_products = _workspace.get("filters", (TILE_POINTS, out_channels, x.shape[1]), x)
            torch.bmm(grad_tiles.transpose(1, 2), _nhwc_input_tiles(x, geo), out=weight_products)
            flat = _workspace.get("weights", (9, out_channels * x.shape[1]), x)  # done with the weights' copy
            torch.mm(filter_transform.t(), weight_products.view(TILE_POINTS, -1), out=flat)
            grad_w = torch.empty_like(weight)  # in the weight's layout: no copy when autograd accumulates it
            grad_w.copy_(flat.view(3, 3, out_channels, -1).permute(2, 3, 0, 1))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b


def _is_channels_last(x: torch.Tensor) -> bool:
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def winograd_filters(weight: torch.Tensor) -> torch.Tensor:
    """The transformed filters of a 3x3 convolution, [36, O, C], for ``winograd_conv3x3_reflect(filters=...)``:
    for inference with fixed weights, where computing them once saves a pass over 4x the weights' size per call."""
    _check_kernel(weight)
    return _filter_transform(weight).clone()


class _FilterCache:
    """Transformed filters of fixed weights (bf16 inference), kept within a memory budget, the least recently used
    dropped first. A default generator's 18 residual convolutions need 85 MB of them (4x their bf16 weights), so
    the budget holds one generator's: test.py runs a batch of photos through one generator, then the other
    (engine/tester.py), and each of its generators finds its filters kept for all but the batch's first photo.
    Entries follow their weight: a weight changed in place (its version) is transformed again, a freed one's
    entry is dropped."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[int, tuple[weakref.ref, tuple[int, int], torch.Tensor]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def keeps(weight: torch.Tensor) -> bool:
        """Only weights that cannot change unseen: no gradients, and a version counter (not an inference
        tensor)."""
        return not weight.requires_grad and not torch.is_grad_enabled() and not weight.is_inference()

    def get(self, weight: torch.Tensor) -> torch.Tensor:
        stamp = (weight.data_ptr(), weight._version)
        with self._lock:
            entry = self._entries.get(id(weight))
            if entry is not None and entry[0]() is weight and entry[1] == stamp:
                self._entries.move_to_end(id(weight))
                return entry[2]
        filters = _filter_transform(weight)  # a workspace view
        size = filters.numel() * filters.element_size()
        if size > self.budget_bytes:
            return filters
        with self._lock:
            self._drop(id(weight))
            reused = None
            while self._entries and self._bytes + size > self.budget_bytes:
                dropped = self._drop(next(iter(self._entries)))
                if reused is None and dropped is not None and dropped.shape == filters.shape \
                        and dropped.dtype == filters.dtype:
                    reused = dropped
            # the dropped entry's memory, where it fits: fresh multi-megabyte tensors at every turn of test.py's
            # generators fragmented the heap (its peak memory moved by 60 MB from run to run)
            kept = reused.copy_(filters) if reused is not None else filters.clone()
            key = id(weight)
            self._entries[key] = (weakref.ref(weight, lambda _, key=key: self.forget(key)), stamp, kept)
            self._bytes += size
        return kept

    def forget(self, key: int) -> None:
        with self._lock:
            self._drop(key)

    def _drop(self, key: int) -> torch.Tensor | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self._bytes -= entry[2].numel() * entry[2].element_size()
        return entry[2]

    @property
    def bytes(self) -> int:
        return self._bytes


# one generator's worth (85 MB for the default generator's bf16 filters), so test.py's peak memory stays below
# the reference's (docs/performance.md)
BF16_FILTER_CACHE_BYTES = 96 * 2 ** 20
_thread_caches = threading.local()


def _bf16_filter_cache() -> _FilterCache:
    """This thread's cache: one per thread, as for the workspace, so a dropped entry's memory can be reused
    while no other thread is computing with it."""
    cache = getattr(_thread_caches, "cache", None)
    if cache is None:
        cache = _thread_caches.cache = _FilterCache(BF16_FILTER_CACHE_BYTES)
    return cache


def bf16_inference_workspace_bytes(x: torch.Tensor, out_channels: int) -> int:
    """The largest of ``bf16_inference_conv3x3_reflect``'s tile buffers for input ``x``: 36 points per 4x4 tile
    for every channel (2.25x the map), in x's dtype."""
    n, channels, height, width = x.shape
    tiles = -(-height // OUTPUT_TILE) * -(-width // OUTPUT_TILE)
    return TILE_POINTS * n * tiles * max(channels, out_channels) * x.element_size()


def bf16_inference_conv3x3_reflect(x: torch.Tensor, weight: torch.Tensor,
                                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """bf16 inference by F(4x4, 3x3): ``F.conv2d(F.pad(x, (1, 1, 1, 1), mode='reflect'), weight, bias)`` for a
    channels_last ``x`` in the weight's dtype, without gradients.

    36 multiplications per 4x4 output tile where direct convolution needs 144 and F(2x2, 3x3)
    (accel/winograd_f2.py) 64: a 256-channel 64x64 convolution took 6.8 ms against 9.3 and 11.4 on a Zen 4
    (docs/performance.md). The transforms' coefficients are exact in bf16 except the filter transform's
    (1/6, 1/24), and each matrix multiply sums in fp32, but the transformed filters, tiles and products are
    each rounded to bf16 and the output transform (weights up to 64) amplifies that rounding: one
    convolution's mean error is about 10x direct bf16's, a trained generator's output about 1.3-1.8x direct
    bf16's against fp32 (docs/performance.md). So bf16 inference (--amp) uses it only where the tuner times it
    fastest, and never in training. The transformed filters of fixed weights are kept within a budget
    (_FilterCache: all of them for test.py's two default generators, 170 MB, put its peak memory above the
    reference's); the others are transformed on every call (0.6-1 ms for 256 channels)."""
    _check_kernel(weight)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        raise ValueError("bf16_inference_conv3x3_reflect is for inference: no gradients")
    if not _is_channels_last(x) or min(x.shape[-2:]) < 2:
        raise ValueError(f"F(4x4, 3x3) inference needs a channels_last map of at least 2x2, got {tuple(x.shape)}")
    filters = _bf16_filter_cache().get(weight) if _FilterCache.keeps(weight) else _filter_transform(weight)
    return _nhwc_forward(x, filters, bias)


def winograd_conv3x3_reflect(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                             filters: torch.Tensor | None = None) -> torch.Tensor:
    """Same as ``F.conv2d(F.pad(x, (1, 1, 1, 1), mode='reflect'), weight, bias)`` for a 3x3 kernel, up to
    rounding. x: [N, C, H, W] with H, W >= 2, in NCHW or channels_last (the result has x's layout).
    ``filters`` (from ``winograd_filters(weight)``) is used where no gradient is computed."""
    _check_kernel(weight)
    channels_last = _is_channels_last(x)
    if filters is not None and not torch.is_grad_enabled():
        return _nhwc_forward(x, filters, bias) if channels_last else _forward(x, filters, bias)
    if channels_last:
        return _WinogradConv3x3ChannelsLast.apply(x, weight, bias)
    return _WinogradConv3x3.apply(x, weight, bias)


def _check_kernel(weight: torch.Tensor) -> None:
    if weight.shape[2:] != (3, 3):
        raise ValueError(f"Winograd F(4x4, 3x3) needs a 3x3 kernel, got {tuple(weight.shape[2:])}")
