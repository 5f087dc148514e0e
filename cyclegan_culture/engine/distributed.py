"""Where a process runs: its device, and under torchrun its place in the process group and the few collectives
the trainer needs.

``torchrun --nproc_per_node=N train.py ...`` starts N copies of train.py with RANK, WORLD_SIZE and LOCAL_RANK in
their environment; ``setup`` joins them into one process group (nccl on CUDA, gloo on CPU). Without torchrun
(WORLD_SIZE unset or 1) nothing here does any communication, and training is exactly single-process training.
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cyclegan_culture.devices import select_device
from cyclegan_culture.errors import UserError


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in the job. The default is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs, web pages and Visdom updates, and shows the progress bar."""
        return self.rank == 0

    # --- collectives (no-ops for a single process); every rank must call them in the same order --------------
    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on at least one (e.g. Ctrl-C reached only some ranks)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def mean(self, values: list[float]) -> list[float]:
        """The element-wise mean of ``values`` over all ranks."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64 if self.backend == "gloo" else torch.float32,
                         device=self._device())
        dist.all_reduce(t)
        return (t / self.world_size).tolist()

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere)."""
        if not self.enabled:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def check_same_weights(self, nets: dict[str, torch.nn.Module]) -> None:
        """Raise when the ranks' weights differ: gradients are averaged every step, so after an identical start
        they stay identical, and a difference means a rank computed something the others did not."""
        if not self.enabled:
            return
        digest = hashlib.sha256()
        for name, net in sorted(nets.items()):
            for key, value in net.state_dict().items():
                digest.update(key.encode())
                digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digests = self.gather(digest.hexdigest())
        if self.is_main and len(set(digests or [])) > 1:
            differing = [r for r, d in enumerate(digests or []) if d != digests[0]]
            raise UserError(f"the ranks' weights differ (ranks {differing} from rank 0); this should not happen, "
                            "please report it with your torchrun command")

    def _device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")


def from_environment() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) as torchrun sets them; (0, 1, 0) outside torchrun."""
    def read(name: str, default: int) -> int:
        value = os.environ.get(name, "")
        try:
            return int(value) if value else default
        except ValueError:
            raise UserError(f"environment variable {name}={value!r} is not a number; start training with "
                            "torchrun, or unset it") from None
    return read("RANK", 0), read("WORLD_SIZE", 1), read("LOCAL_RANK", 0)


def setup(gpu_ids: list[int], timeout_minutes: float = 30.0) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun prepared (if any) and pick this process's device.

    On CUDA each process takes the GPU of its local rank (``--gpu_ids`` lists the GPUs to use on each machine; by
    default all of them, in order). Ranks other than 0 stop printing to stdout: they stay quiet except for errors.
    """
    rank, world_size, local_rank = from_environment()
    if world_size <= 1:
        return Distributed(), select_device(gpu_ids)
    if gpu_ids:
        if not dist.is_nccl_available():
            raise UserError("this PyTorch has no NCCL for multi-GPU training; install a CUDA build of PyTorch, "
                            "or train on CPU with --gpu_ids -1")
        available = list(range(torch.cuda.device_count())) if len(gpu_ids) == 1 else gpu_ids
        if local_rank >= len(available):
            raise UserError(f"rank {rank}: local rank {local_rank} has no GPU (this machine has "
                            f"{len(available)} to use); start at most that many processes per node")
        device = select_device(available, local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    extra = {}
    if backend == "nccl" and "device_id" in inspect.signature(dist.init_process_group).parameters:
        extra["device_id"] = device  # binds the communicator to this GPU at once (torch >= 2.3)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes), **extra)
    if rank != 0:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # quiet; errors still go to stderr
    return Distributed(rank, world_size, local_rank, backend), device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_communication_error(exc: BaseException) -> bool:
    """An error raised by a collective because another rank died or the connection to it broke."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(s in text for s in (
        "Connection closed by peer", "Connection reset by peer", "Broken pipe", "ProcessGroupGloo",
        "NCCL", "Timed out", "connection refused", "Socket Timeout"))
