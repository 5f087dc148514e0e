"""Translate images of any size with trained generators."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cyclegan_culture.engine import checkpoint
from cyclegan_culture.errors import UserError
from cyclegan_culture.models import networks
from cyclegan_culture.models.acceleration import amp_dtype, memory_format
from cyclegan_culture.models.cycle_gan import build_generators

SIZE_MULTIPLE = 4  # two stride-2 downsamplings: sizes divisible by 4 come back unchanged
MIN_SIZE = 8  # the residual blocks' reflection padding needs at least 2x2 at the bottleneck


def available_epochs(run_dir: Path) -> list[str]:
    return sorted({p.name.split("_net_")[0] for p in Path(run_dir).glob("*_net_G_A.pth")})


def load_generators(opt: argparse.Namespace, run_dir: Path, epoch: str, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """G_A and G_B of a run (ours or the reference's) at ``epoch``, in eval mode."""
    G_A, G_B = build_generators(opt)
    for name, net in (("G_A", G_A), ("G_B", G_B)):
        path = checkpoint.network_path(run_dir, epoch, name)
        if not path.is_file():
            found = available_epochs(run_dir)
            hint = f"available: {', '.join(found)}" if found else "train the model first, or check --name"
            raise UserError(f"{path}: checkpoint not found ({hint}); set --epoch or --checkpoints_dir")
        try:
            networks.load_network_state(net, checkpoint.load_network_weights(path))
        except ValueError as exc:
            raise UserError(f"{path}: does not fit --netG {opt.netG} --ngf {opt.ngf} --norm {opt.norm} "
                            f"({str(exc)[:200]}); pass the flags the model was trained with") from None
        layout = memory_format(getattr(opt, "channels_last", "off"), device, getattr(opt, "amp", False), opt.norm)
        net.to(device, memory_format=layout).eval()
    return G_A, G_B


def translate(net: nn.Module, image: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Run ``net`` on a (N, C, H, W) batch of any H and W; the output has the input's exact size.

    The input is padded (reflection where the image is large enough, else replication) to a multiple of 4 (at
    least 8),
    translated, and cropped back: no resizing, no cropping of content. ``dtype`` (bf16 or fp16) runs it under
    autocast; the result is always fp32.
    """
    h, w = image.shape[-2:]
    pad_h = max(MIN_SIZE, h + (-h) % SIZE_MULTIPLE) - h
    pad_w = max(MIN_SIZE, w + (-w) % SIZE_MULTIPLE) - w
    if pad_h or pad_w:
        mode = "reflect" if h > pad_h and w > pad_w else "replicate"
        image = F.pad(image, (0, pad_w, 0, pad_h), mode=mode)
    image = image.contiguous(memory_format=_memory_format_of(net))
    with torch.autocast(image.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        out = net(image)
    return out[..., :h, :w].float()


def _memory_format_of(net: nn.Module) -> torch.memory_format:
    weight = next(p for p in net.parameters() if p.dim() == 4)
    return torch.channels_last if weight.is_contiguous(memory_format=torch.channels_last) and \
        not weight.is_contiguous() else torch.contiguous_format
