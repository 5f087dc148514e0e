"""Which device to run on: the one helper every command uses (--gpu_ids, and the Python API's default)."""

from __future__ import annotations

import torch

from cyclegan_culture.errors import UserError


def parse_gpu_ids(text: str | None) -> list[int]:
    """'0,1' -> [0, 1]; '-1' -> [] (CPU); None -> the first GPU if one exists, else CPU."""
    if text is None:
        return [0] if torch.cuda.is_available() else []
    try:
        ids = [int(x) for x in str(text).split(",") if x.strip() != ""]
    except ValueError:
        raise UserError(f"--gpu_ids {text!r}: give comma-separated GPU numbers, or -1 for CPU") from None
    ids = [i for i in ids if i >= 0]
    if ids and not torch.cuda.is_available():
        raise UserError(f"--gpu_ids {text}: no CUDA GPU is available here; use --gpu_ids -1 for CPU")
    return ids


def select_device(gpu_ids: list[int], index: int = 0) -> torch.device:
    """GPU ``gpu_ids[index]``, or the CPU when ``gpu_ids`` is empty. On CUDA, cuDNN picks the fastest convolution
    algorithms for the (fixed) training and test shapes; exact resume is promised on CPU only."""
    if not gpu_ids:
        return torch.device("cpu")
    torch.backends.cudnn.benchmark = True
    return torch.device(f"cuda:{gpu_ids[index]}")


def device_for(gpu_ids: str | None) -> torch.device:
    """The device a --gpu_ids value (or None: the first GPU, else the CPU) names."""
    return select_device(parse_gpu_ids(gpu_ids))
