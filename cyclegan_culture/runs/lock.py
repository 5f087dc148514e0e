"""One live writer per run folder: a lock file holding the owner's pid and host.

The lock is an advisory ``flock`` on ``RUN/train.lock``, held while the process lives: the kernel drops it
when the owner dies, however it dies (kill -9 included), so a lock left by a dead process is stale by
construction and is taken over with a note. The file's contents (pid, host, start time, command) are only
there to tell the user who holds it. Where ``fcntl`` does not exist (Windows), the pid is checked instead.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from cyclegan_culture.errors import UserError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = "train.lock"


class RunLock:
    """``RunLock(run_dir).acquire()`` or a UserError naming the owner; ``release()`` when done."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None
        self.stale_owner: dict | None = None  # the previous owner when a stale lock was taken over
        self._made_folder = False

    def acquire(self) -> "RunLock":
        self._made_folder = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            previous = _read_owner(fd)
            if not _try_lock(fd, previous):
                os.close(fd)
                raise UserError(f"{self.path.parent}: in use by {_describe(previous)}; wait for it to finish, "
                                "stop it, or train under another --name (if that process is gone, delete "
                                f"{self.path})")
            try:  # the file may have been removed (and recreated) by its owner between our open and our lock
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self._fd = fd
        self.stale_owner = previous or None
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(owner).encode())
        os.fsync(fd)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked, so nobody takes over a file about to vanish
        except OSError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None
        if self._made_folder:  # a run refused before writing anything leaves no empty folder behind
            try:
                self.path.parent.rmdir()  # only if empty
            except OSError:
                pass


def _read_owner(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _try_lock(fd: int, owner: dict) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False
    # No flock (Windows): the owner counts as alive while its pid runs on this host; one on another host, or
    # this very process, always does.
    pid = owner.get("pid")
    if not pid:
        return True
    if owner.get("host") != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass
    return False


def _describe(owner: dict) -> str:
    if not owner:
        return "another process"
    started = f", started {owner['started']}" if owner.get("started") else ""
    command = f": {owner['command']}" if owner.get("command") else ""
    return f"process {owner.get('pid', '?')} on {owner.get('host', '?')}{started}{command}"
