"""The signals that stop training with a save: Ctrl-C; SIGTERM from SLURM, docker stop and Kubernetes; SIGHUP
from a closed terminal. The trainer's handler lives with the trainer; these are the process-level pieces."""

from __future__ import annotations

import os
import signal

# Signals that mean "stop": Ctrl-C; SLURM, docker stop and Kubernetes; a closed terminal.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def ignore_stop_signals(worker_id: int) -> None:
    """In data-loading workers: a signal sent to the whole process group (SLURM, a closed terminal) must not kill
    them under the main process, which stops them itself after saving."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def detach_from_closed_terminal() -> None:
    """After SIGHUP the terminal is gone and writing to it fails (EIO), which would crash the save; send what
    went to it to /dev/null instead, as nohup does."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        try:
            if os.isatty(fd):
                os.dup2(devnull, fd)
        except OSError:
            pass
    os.close(devnull)
