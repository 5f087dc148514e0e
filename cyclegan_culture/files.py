"""Writing files so that a crash or a full disk never leaves half a file in place of a good one."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from cyclegan_culture.errors import UserError

if TYPE_CHECKING:
    from PIL import Image

# Write errors that mean "no room": a full disk, a quota, or a file-size limit (ulimit -f).
NO_ROOM = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
           errno.EFBIG: "file size limit reached (ulimit -f)"}


class _RecordingWriter:
    """A file wrapper that remembers the OSError of a failed write. torch.save reports a failed write from
    inside its zip writer as a RuntimeError ("unexpected pos"); the recorded error says what really happened."""

    def __init__(self, f: Any):
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str) -> Any:  # flush, seek, tell, fileno: the file's own
        return getattr(self._f, name)


def _new_file_mode(path: Path) -> int:
    """The mode the file would get from open(): the existing file's, or 0666 minus the umask. mkstemp creates
    0600 files, which the rename would otherwise keep (galleries a web server cannot read)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``: readers and crashes see
    either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    recorder = None
    try:
        os.chmod(tmp, _new_file_mode(path))
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            recorder = _RecordingWriter(f) if "b" in mode else None
            write(recorder if recorder is not None else f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        cause = recorder.error if recorder is not None and recorder.error is not None else exc
        if isinstance(cause, OSError) and cause.errno in NO_ROOM:
            raise UserError(f"{path}: {NO_ROOM[cause.errno]} while saving; the previous file is intact. Free "
                            "space (or raise the limit) and run the command again; training resumes with "
                            "--continue_train") from None
        raise


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save, atomically."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text, atomically."""
    _atomic_write(path, lambda f: f.write(text), mode="w")


# zlib level for PNGs: lossless at any level; level 1 writes a 256x256 image in 4.6 ms instead of Pillow's
# default 16.4 ms (level 6), for files about 5% larger. test.py writes six images per photo pair, so the
# default level cost about 6% of a whole test.py --amp run (docs/performance.md).
PNG_COMPRESS_LEVEL = 1


def atomic_save_image(img: Image.Image, path: Path) -> None:
    """Save a PIL image (format from the extension), atomically."""
    if Path(path).suffix.lower() in (".jpg", ".jpeg"):
        _atomic_write(path, lambda f: img.save(f, format="JPEG"))
    else:
        _atomic_write(path, lambda f: img.save(f, format="PNG", compress_level=PNG_COMPRESS_LEVEL))


def inside(base: Path, *parts: str) -> Path:
    """base/parts, refusing any path that would climb out of ``base`` (e.g. a name of '../../x')."""
    base = Path(base).resolve()
    target = base.joinpath(*parts).resolve()
    if target != base and base not in target.parents:
        raise UserError(f"{Path(*parts)}: would write outside {base}; use a plain name")
    return target
