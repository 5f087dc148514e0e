"""A per-machine execution plan: the first time a layer meets a shape, its candidate algorithms are timed on this
machine and the fastest is kept, in a small JSON file in the user's cache folder; later runs read it back. The
layout of fp32 inference (NCHW or NHWC, accel/plan.py) and the training step's plan (engine/training_plan.py) are
timed and kept the same way.

Fixed thresholds tuned on one CPU were wrong on another (issue 21: the Winograd paths that paid on one Intel
Xeon bought nothing on an AMD EPYC). Like cuDNN's benchmark mode, but persistent, so that a resumed run, and every
run of a machine, makes the same choices (numerics differ between algorithms at rounding level, and resuming is
bit-identical only when they do not change). The cache is keyed by the CPU model, its flags, the thread count
and the torch version; a damaged or foreign file is ignored with a note. ``--autotune off`` (or
CYCLEGAN_CULTURE_AUTOTUNE=off) keeps the built-in thresholds; ``on`` times everything again.

Timings taken while other programs keep the machine's cores busy say little about a quiet machine (two trainings
started at once once timed our layers 1.4-1.7x slower than alone, docs/performance.md), so a choice timed then
holds for the run that made it and is not kept: the next run times it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from cyclegan_culture.files import atomic_write_text

MODES = ("auto", "on", "off")
MODE_ENV = "CYCLEGAN_CULTURE_AUTOTUNE"
CACHE_ENV = "CYCLEGAN_CULTURE_CACHE"
REPEATS = 3  # timed runs per candidate after one warm-up; the fastest counts
# Other programs' average use of cores while candidates are timed above which the choice is not kept: half a core,
# or a tenth of the cores of a large machine (where a background service costs the timings little).
BUSY_CORES = 0.5


def cache_folder() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cyclegan-culture"


def machine() -> dict[str, object]:
    """What the timings depend on."""
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")) and not flags:
                flags = " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    return {"cpu": model, "flags": hashlib.sha1(flags.encode()).hexdigest()[:16], "threads": torch.get_num_threads(),
            "torch": torch.__version__}


class CpuLoadMeter:
    """How many cores other programs kept busy, on average, between ``start`` and ``other_cores``: the machine's
    busy time (/proc/stat) less this process's own CPU time, over the wall time. None where there is no
    /proc/stat or the window is too short for its 10-ms ticks."""

    MIN_WINDOW_S = 0.2

    def start(self) -> "CpuLoadMeter":
        self.machine_busy, self.own, self.wall = machine_busy_seconds(), time.process_time(), time.perf_counter()
        return self

    def other_cores(self) -> float | None:
        busy, wall = machine_busy_seconds(), time.perf_counter() - self.wall
        if busy is None or self.machine_busy is None or wall < self.MIN_WINDOW_S:
            return None
        others = (busy - self.machine_busy) - (time.process_time() - self.own)
        return max(0.0, others) / wall


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores have spent on anything but idling and waiting since boot, or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_threshold() -> float:
    return max(BUSY_CORES, 0.1 * usable_cores())


class Autotuner:
    """Chooses among candidate implementations by timing them once per key on this machine."""

    def __init__(self, mode: str = "auto", folder: Path | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown autotune mode {mode!r}; use one of {', '.join(MODES)}")
        self.mode = mode
        self.machine = machine()
        digest = hashlib.sha1(json.dumps(self.machine, sort_keys=True).encode()).hexdigest()[:12]
        self.path = (folder or cache_folder()) / f"plan-{digest}.json"
        self.choices: dict[str, str] = {}
        self.timings: dict[str, dict[str, float]] = {}
        self.unkept: set[str] = set()  # keys timed while the machine was busy: this process's choice only
        # a resumed run's own earlier choices: they win over the cache and are never written to it, so a run keeps
        # its numerics across a resume even where the machine would now choose otherwise
        self.pinned: dict[str, str] = {}
        self.used: dict[str, str] = {}  # what this process chose, key -> name: what a run records to resume with
        self.note: str | None = None
        self.busy_note: str | None = None
        if mode == "auto":
            self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("machine") != self.machine:
                raise ValueError("made on another machine or torch version")
            self.choices = {str(k): str(v) for k, v in data["choices"].items()}
            self.timings = data.get("timings_ms", {})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.note = f"note: ignored the execution plan cache {self.path} ({exc}); timing afresh"
            print(self.note)
            self.choices, self.timings = {}, {}

    def choose(self, key: str, candidates: dict[str, Callable[[], object]] | Callable[[], dict[str, Callable]],
               default: str, names: tuple[str, ...] | None = None, repeats: int = REPEATS) -> str:
        """The fastest of ``candidates`` (name -> a function to time) for ``key``, timed now if not known, or
        ``default`` when off. ``candidates`` may be a function that builds them, with their ``names``: it is
        called only when timing is needed, so a known key costs a dictionary lookup. Each candidate runs once to
        warm up, then ``repeats`` timed times."""
        names = names or tuple(candidates)  # type: ignore[arg-type]
        if self.mode == "off" or len(names) < 2:
            return default
        known = self.pinned.get(key, self.choices.get(key))
        if known in names:
            self.used[key] = known
            return known
        if callable(candidates):
            candidates = candidates()
        meter = CpuLoadMeter().start()
        times = {name: _best_time(run, repeats) for name, run in candidates.items()}
        self.choices[key] = min(times, key=times.get)
        self.timings[key] = {name: round(t * 1000, 3) for name, t in times.items()}
        others = meter.other_cores()
        if others is not None and others > busy_threshold():
            self.unkept.add(key)
            if self.busy_note is None:
                self.busy_note = (f"note: other programs kept {others:.1f} of this machine's {usable_cores()} cores "
                                  "busy while the fastest way to run was being timed; the choice holds for this run "
                                  "only and is timed again by the next (--autotune on re-times on a quiet machine)")
                print(self.busy_note)
        else:
            self.unkept.discard(key)
            self._save()
        self.used[key] = self.choices[key]
        return self.choices[key]

    def pin(self, choices: dict[str, str]) -> None:
        """Make ``choices`` (a run's recorded ``used``) this process's answers for their keys, untimed and unsaved."""
        self.pinned.update({str(key): str(name) for key, name in choices.items()})

    def _save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            kept = {key: value for key, value in self.choices.items() if key not in self.unkept}
            timings = {key: value for key, value in self.timings.items() if key not in self.unkept}
            atomic_write_text(self.path, json.dumps({"machine": self.machine, "choices": kept,
                                                     "timings_ms": timings}, indent=1, sort_keys=True) + "\n")
        except OSError as exc:  # a read-only home: the choices still hold for this process
            if self.note is None:
                self.note = f"note: cannot write the execution plan cache {self.path} ({exc.strerror})"
                print(self.note)


def _best_time(run: Callable[[], object], repeats: int = REPEATS) -> float:
    run()  # warm-up: first-call allocations and oneDNN primitive creation
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def default_mode() -> str:
    mode = os.environ.get(MODE_ENV, "auto")
    return mode if mode in MODES else "auto"
