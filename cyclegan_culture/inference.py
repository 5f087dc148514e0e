"""Translate images of any size with trained generators: padding, tiling, and the ``Stylizer`` API.

    from cyclegan_culture.inference import Stylizer
    stylizer = Stylizer.from_pretrained("checkpoints/photo2guohua")
    painting = stylizer.stylize(PIL.Image.open("photo.jpg"))
"""

from __future__ import annotations

import collections
import copy
import math
from pathlib import Path
from typing import Iterable, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cyclegan_culture import options as options_mod
from cyclegan_culture.accel import ExecutionPlan, amp_dtype, inference_weights, make_plan
from cyclegan_culture.backends import on_backend
from cyclegan_culture.data.images import BadImage, load_rgb, pil_to_tensor, tensor_to_pil
from cyclegan_culture.devices import device_for
from cyclegan_culture.errors import UserError
from cyclegan_culture.models.config import ModelConfig
from cyclegan_culture.pretrained import catalog
from cyclegan_culture.runs import folder

SIZE_MULTIPLE = 4  # two stride-2 downsamplings: sizes divisible by 4 come back unchanged
MIN_SIZE = 8  # the residual blocks' reflection padding needs at least 2x2 at the bottleneck
STATS_SIZE = 512  # longer side of the downscaled image whose instance-norm statistics all tiles share


def translate(net: nn.Module, image: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Run ``net`` on a (N, C, H, W) batch of any H and W; the output has the input's exact size.

    The input is padded (reflection where the image is large enough, else replication) to a multiple of 4 (at
    least 8), translated, and cropped back: no resizing, no cropping of content. ``dtype`` (bf16 or fp16) runs it
    under autocast; the result is always fp32.
    """
    h, w = image.shape[-2:]
    multiple = getattr(net, "size_multiple", SIZE_MULTIPLE)  # a U-Net needs 2^levels
    pad_h = max(MIN_SIZE, multiple, h + (-h) % multiple) - h
    pad_w = max(MIN_SIZE, multiple, w + (-w) % multiple) - w
    if pad_h or pad_w:
        mode = "reflect" if h > pad_h and w > pad_w else "replicate"
        image = F.pad(image, (0, pad_w, 0, pad_h), mode=mode)
    image = image.contiguous(memory_format=_memory_format_of(net))
    with torch.autocast(image.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        out = net(image)
    return out[..., :h, :w].float()


def _memory_format_of(net: nn.Module) -> torch.memory_format:
    if hasattr(net, "memory_format"):  # a backends.RuntimeGenerator: what its runtime takes
        return net.memory_format
    weight = next(p for p in net.parameters() if p.dim() == 4)
    return torch.channels_last if weight.is_contiguous(memory_format=torch.channels_last) and \
        not weight.is_contiguous() else torch.contiguous_format


# --- tiling ---------------------------------------------------------------------------------------------------------
class SharedStatsInstanceNorm(nn.Module):
    """Instance norm whose statistics can be recorded once and reused.

    Tiles normalised each with their own mean and variance come out in different tones (a sky tile and a tree
    tile are shifted towards the same grey). Recording the statistics on a downscaled copy of the whole image and
    applying them to every tile keeps the tone of the full image in each tile.
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.mode = "own"  # own | record | shared
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None
        # video: the statistics of the last frames (a deque; None: off); each frame is normalised with their
        # pooled mean and variance, so a frame's tone cannot jump with a small change of content
        self.window: collections.deque | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "shared" and self.mean is not None:
            mean, var = self.mean, self.var
        else:
            var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, unbiased=False)
            if self.window is not None:
                if self.window and self.window[-1][0].shape != mean.shape:
                    self.window.clear()
                self.window.append((mean, var))
                mean = torch.stack([m for m, _ in self.window]).mean(0)
                var = (torch.stack([v + m * m for m, v in self.window]).mean(0) - mean * mean).clamp_min(0)
            if self.mode == "record":
                self.mean, self.var = mean, var
        return ((x.float() - mean) * torch.rsqrt(var + self.eps)).to(x.dtype)


def with_shared_stats(net: nn.Module) -> tuple[nn.Module, list[SharedStatsInstanceNorm]]:
    """A copy of ``net`` whose InstanceNorm layers (affine-free, as CycleGAN's) can share recorded statistics.
    The state dict is unchanged: these layers have no parameters."""
    net = copy.deepcopy(net)
    norms = []
    for parent in net.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.InstanceNorm2d) and not child.affine:
                replacement = SharedStatsInstanceNorm(child.eps)
                setattr(parent, name, replacement)
                norms.append(replacement)
    return net, norms


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of ``tile`` overlapping by at least ``overlap``."""
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _blend_window(h: int, w: int, overlap: int, device: torch.device) -> torch.Tensor:
    """Weights that fall smoothly (raised cosine) to near zero over ``overlap`` pixels at each edge."""
    def ramp(n: int) -> torch.Tensor:
        r = torch.ones(n, device=device)
        k = min(overlap, n // 2)
        if k > 0:
            edge = 0.5 - 0.5 * torch.cos(torch.linspace(0, math.pi, k + 2, device=device)[1:-1])
            r[:k] = edge
            r[-k:] = edge.flip(0)
        return r
    return ramp(h)[:, None] * ramp(w)[None, :]


def translate_tiled(net: nn.Module, image: torch.Tensor, tile: int, overlap: int, dtype: torch.dtype | None = None,
                    shared_norms: list[SharedStatsInstanceNorm] | None = None) -> torch.Tensor:
    """Translate a (1, C, H, W) image tile by tile, blending overlaps; memory is bounded by the tile size.

    With ``shared_norms`` (from ``with_shared_stats``), instance-norm statistics come from a copy of the image
    downscaled to STATS_SIZE on its longer side, so all tiles share the tone of the whole.
    """
    _, c, h, w = image.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return translate(net, image, dtype)
    if overlap < 0 or overlap >= tile // 2:
        raise UserError(f"--overlap {overlap} must be at least 0 and less than half of --tile {tile}")
    if shared_norms:
        scale = min(1.0, STATS_SIZE / max(h, w))
        small = F.interpolate(image, size=(max(MIN_SIZE, round(h * scale)), max(MIN_SIZE, round(w * scale))),
                              mode="area")
        for norm in shared_norms:
            norm.mode = "record"
        translate(net, small, dtype)
        for norm in shared_norms:
            norm.mode = "shared"
    out = torch.zeros(1, c, h, w, device=image.device)
    weight = torch.zeros(1, 1, h, w, device=image.device)
    try:
        for y in tile_starts(h, tile, overlap):
            for x in tile_starts(w, tile, overlap):
                th, tw = min(tile, h - y), min(tile, w - x)
                result = translate(net, image[..., y:y + th, x:x + tw], dtype)
                win = _blend_window(th, tw, overlap, image.device)
                out[..., y:y + th, x:x + tw] += result * win
                weight[..., y:y + th, x:x + tw] += win
    finally:
        for norm in shared_norms or []:
            norm.mode, norm.mean, norm.var = "own", None, None
    return out / weight.clamp_min(1e-8)


# --- the Python API ------------------------------------------------------------------------------------------------
class Stylizer:
    """Translate PIL images with one generator of a trained run, at their own size.

    ``tile`` (pixels; 0 disables) bounds memory for large images; tiles overlap by ``overlap`` pixels and share
    the instance-norm statistics of the whole image. ``backend`` (``backends.BACKENDS``) runs whole images with
    OpenVINO or ONNX Runtime on CPU; tiles (their shared statistics need PyTorch's layers) and video stay on
    PyTorch.
    """

    def __init__(self, generator: nn.Module, device: torch.device | str = "cpu", amp: bool = False,
                 tile: int = 512, overlap: int = 64, backend: str = "pytorch"):
        self.device = torch.device(device)
        self.dtype = amp_dtype(self.device, amp)
        generator = generator.to(self.device).eval()
        # exported from the fp32 weights, before --amp stores PyTorch's copy in bf16
        runtime = on_backend(generator, backend, self.dtype) if backend != "pytorch" else None
        self.generator = inference_weights(generator, self.dtype)
        self._whole = self.generator if runtime is None else runtime
        self.tile, self.overlap = tile, overlap
        self._tiled, self._norms = with_shared_stats(self.generator)
        if tile and (overlap < 0 or overlap >= tile // 2):
            raise UserError(f"--overlap {overlap} must be at least 0 and less than half of --tile {tile}")

    @classmethod
    def from_pretrained(cls, name_or_run: str | Path, epoch: str = "latest", direction: str = "AtoB",
                        device: torch.device | str | None = None, amp: bool = False, tile: int = 512,
                        overlap: int = 64, backend: str = "pytorch", **model_flags: object) -> "Stylizer":
        """Load an installed culture by name (``"guohua"``; ``cyclegan-culture cultures`` lists them), or G_A
        (direction AtoB) or G_B (BtoA) of a run folder; the architecture comes from its config.json / opt.json,
        and ``model_flags`` (netG=..., ngf=..., norm=...) override it, e.g. for runs trained by the reference."""
        run_dir = Path(name_or_run)
        if not run_dir.is_dir():
            if isinstance(name_or_run, Path) or any(sep in str(name_or_run) for sep in ("/", "\\")):
                raise UserError(f"{run_dir}: run folder not found")
            run_dir = catalog.find(str(name_or_run)).folder
            if direction != "AtoB":
                raise UserError(f"culture {name_or_run!r} holds only its photo -> culture generator; use "
                                "direction AtoB, or a run folder for BtoA")
        if direction not in ("AtoB", "BtoA"):
            raise UserError(f"--direction {direction!r}: use AtoB or BtoA")
        config = model_config(run_dir, model_flags)
        device = torch.device(device) if device else device_for(None)
        net = folder.load_generator(run_dir, str(epoch), direction, device, inference_plan(device, config), config)
        return cls(net, device, amp, tile, overlap, backend)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: torch.device | str | None = None, amp: bool = False,
                        tile: int = 512, overlap: int = 64, backend: str = "pytorch",
                        **model_flags: object) -> "Stylizer":
        """Load a bare generator file such as the reference's latest_net_G_A.pth, built as ``model_flags`` say
        (netG, ngf, norm, use_dropout, upsample; the reference's defaults otherwise)."""
        config = model_config(None, model_flags)
        device = torch.device(device) if device else device_for(None)
        net = folder.load_generator_file(Path(path), config, "AtoB", device, inference_plan(device, config))
        return cls(net, device, amp, tile, overlap, backend)

    @torch.inference_mode()
    def stylize_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """(1, C, H, W) in [-1, 1] -> the same size, translated."""
        image = image.to(self.device)
        if self.tile and max(image.shape[-2:]) > self.tile:
            return translate_tiled(self._tiled, image, self.tile, self.overlap, self.dtype, self._norms)
        return translate(self._whole, image, self.dtype)

    def stylize(self, image: ImageLike) -> ImageLike:
        """Translate one image at its own size, returned as the kind it came in: a PIL image gives a PIL image; a
        numpy array (H, W, 3), uint8 or float in [0, 1], the same; a tensor (3, H, W) or (N, 3, H, W) in [0, 1]
        (torchvision's convention), the same; a file path gives a PIL image."""
        if isinstance(image, (str, Path)):
            try:
                return self.stylize(load_rgb(image))
            except BadImage as exc:
                raise UserError(f"{image}: {exc}") from None
        if isinstance(image, Image.Image):
            return tensor_to_pil(self.stylize_tensor(pil_to_tensor(image.convert("RGB")).unsqueeze(0)))
        if isinstance(image, np.ndarray):
            return _stylize_array(self, image)
        if isinstance(image, torch.Tensor):
            return _stylize_unit_tensor(self, image)
        raise UserError(f"stylize() takes a file path, a PIL image, a numpy array or a tensor, not "
                        f"{type(image).__name__}")

    def stylize_batch(self, images: Iterable[Image.Image]) -> list[Image.Image]:
        """Several images (any sizes); same-size images go through the network together."""
        images = [im.convert("RGB") for im in images]
        results: list[Image.Image | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            by_size.setdefault(im.size, []).append(i)
        for size, idx in by_size.items():
            if self.tile and max(size) > self.tile:
                for i in idx:
                    results[i] = self.stylize(images[i])
                continue
            batch = torch.stack([pil_to_tensor(images[i]) for i in idx]).to(self.device)
            with torch.inference_mode():
                out = translate(self._whole, batch, self.dtype)
            for i, t in zip(idx, out):
                results[i] = tensor_to_pil(t)
        return results  # type: ignore[return-value]


ImageLike = Union[str, Path, Image.Image, np.ndarray, torch.Tensor]


def _stylize_array(stylizer: Stylizer, arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise UserError(f"stylize(): a numpy image must be (H, W, 3), got shape {arr.shape}")
    floating = np.issubdtype(arr.dtype, np.floating)
    as_uint8 = np.clip(np.rint(arr[:, :, :3] * 255), 0, 255).astype(np.uint8) if floating else \
        arr[:, :, :3].astype(np.uint8)
    out = np.asarray(stylizer.stylize(Image.fromarray(as_uint8)))
    return (out.astype(arr.dtype) / 255.0) if floating else out.astype(arr.dtype)


def _stylize_unit_tensor(stylizer: Stylizer, t: torch.Tensor) -> torch.Tensor:
    batched = t.dim() == 4
    if t.dim() not in (3, 4) or t.shape[-3] != 3:
        raise UserError(f"stylize(): a tensor image must be (3, H, W) or (N, 3, H, W), got {tuple(t.shape)}")
    x = (t if batched else t.unsqueeze(0)).float()
    if not t.is_floating_point():  # uint8 images: 0..255 in, 0..255 out
        x = x / 255.0
    out = torch.cat([stylizer.stylize_tensor(x[i:i + 1].to(stylizer.device) * 2 - 1) for i in range(x.shape[0])])
    out = (out.float().clamp(-1, 1) + 1) / 2
    out = out.to(t.device, t.dtype) if t.is_floating_point() else (out * 255).round().to(t.device, t.dtype)
    return out if batched else out[0]


def model_config(run_dir: Path | None, overrides: dict[str, object]) -> ModelConfig:
    """The model configuration of a run (config.json or opt.json, else the reference's defaults), with
    ``overrides`` (network flags: netG=..., ngf=..., no_dropout=True, ...) applied and checked."""
    unknown = [key for key in overrides if key not in (*ModelConfig.NETWORK_FIELDS, "no_dropout")]
    if unknown:
        raise UserError(f"{unknown[0]!r} is not a model option; use one of: {', '.join(ModelConfig.NETWORK_FIELDS)}")
    values = {k: v for k, v in overrides.items() if k != "no_dropout"}
    if overrides.get("no_dropout"):
        values["use_dropout"] = False
    config = folder.read_model_config(run_dir, values)
    options_mod.validate_model(config)
    return config


def inference_plan(device: torch.device, config: ModelConfig) -> ExecutionPlan:
    """How the API runs a generator: fast layers, NCHW, fp32 weights (``Stylizer`` stores them in bf16 under
    ``amp``)."""
    return make_plan(device, norm=config.norm, training=False)
