"""Progress for long work: a tqdm bar on a terminal; plain lines when the output goes to a file or a pipe.

A bar redrawn with carriage returns fills a log file (``make demo > log 2>&1``) with thousands of partial lines,
so where stderr is not a terminal the same call prints one plain line every ``every`` items (about a tenth of
the work by default) with the rate and the time left, and training prints only its one line per epoch.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator

from tqdm import tqdm


def interactive() -> bool:
    """Whether progress goes to a terminal (tqdm writes to stderr)."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def say(message: str) -> None:
    """Print a line without breaking a bar that is being drawn (tqdm.write; stdout)."""
    tqdm.write(message)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class PlainProgress:
    """tqdm's interface as used here (iteration, update, set_postfix_str, close, a context), writing one line
    every ``every`` items and at the end, each a complete line."""

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, every: int | None = None, quiet: bool = False):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.n, self.start_n = desc, unit, initial, initial
        self.every = every or (max(1, self.total // 10) if self.total else 100)
        self.quiet = quiet  # count only (training: its epoch line says it all)
        self.postfix = ""
        self.start = time.time()
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        before = self.n
        self.n += n
        if self.n // self.every > before // self.every and self.n != self.total:
            self._line()

    def _line(self) -> None:
        if self.quiet:
            return
        elapsed = time.time() - self.start
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and rate > 0 and self.n < self.total:
            eta = f", {_clock((self.total - self.n) / rate)} left"
        postfix = f" ({self.postfix})" if self.postfix else ""
        print(f"{self.desc}: {self.n}{of} {self.unit}, {rate:.2f} {self.unit}/s, {_clock(elapsed)} elapsed{eta}"
              f"{postfix}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n > self.start_n:
                self._line()


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", initial: int = 0, leave: bool = True, every: int | None = None,
             plain_lines: bool = True, disable: bool = False) -> Any:
    """A tqdm bar (with ETA) on a terminal; elsewhere a PlainProgress, printing a line every ``every`` items
    unless ``plain_lines`` is False (the caller prints its own summary lines)."""
    if interactive() or disable:
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, mininterval=1.0,
                    dynamic_ncols=True, disable=disable)
    return PlainProgress(iterable, total, desc, unit, initial, every, quiet=not plain_lines)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 image', '2 images' (messages that count things)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
