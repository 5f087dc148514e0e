"""Live monitoring in Visdom that never slows down or stops training.

The training thread only puts small records on a bounded queue (dropping the oldest image update when it is
full); one background thread talks to the server, with a timeout on every request. When the server is dead or
restarting, training goes on, one warning says so, and monitoring resumes when the server answers again: every
plot is re-sent whole, so nothing logged in between is lost. Training never starts a server.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from cyclegan_culture.progress import say



@dataclass
class LossPoint:
    epoch_frac: float
    losses: dict[str, float]
    lrs: dict[str, float]
    sec_per_iter: float


@dataclass
class History:
    """Everything plotted so far: x (fractional epoch) and one series per loss term, learning rate and speed."""
    x: list[float] = field(default_factory=list)
    series: dict[str, list[float]] = field(default_factory=dict)

    def add(self, point: LossPoint) -> None:
        self.x.append(point.epoch_frac)
        values = {**point.losses, **point.lrs, "sec_per_iter": point.sec_per_iter}
        for key, value in values.items():
            self.series.setdefault(key, [float("nan")] * (len(self.x) - 1)).append(value)
        for key, values_so_far in self.series.items():
            if len(values_so_far) < len(self.x):
                values_so_far.append(float("nan"))


class VisdomMonitor:
    """Send loss curves and image grids to a Visdom server from a background thread."""

    def __init__(self, server: str, port: int, env: str, title: str, ncols: int = 4, timeout: float = 5.0,
                 queue_size: int = 16, client_factory: Callable[..., Any] | None = None,
                 history: list[LossPoint] | None = None):
        self.server, self.port, self.env, self.title = server, port, env, title
        self.ncols = ncols
        self.timeout = timeout
        self._client_factory = client_factory or _make_client
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._history = History()
        for point in history or []:
            self._history.add(point)
        self._client = None
        self._warned = False
        self._connected_once = False
        self.sent = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="visdom-monitor", daemon=True)
        self._thread.start()
        if self._history.x:  # resumed run: show the curves so far at once
            self._put(("lines", None))

    # --- called from the training thread: never blocks -------------------------------------------------------
    def plot_losses(self, point: LossPoint) -> None:
        with self._lock:  # the history lives here, so a full queue never loses a point
            self._history.add(point)
        self._put(("lines", None))

    def show_visuals(self, visuals: dict[str, np.ndarray], epoch: int) -> None:
        """``visuals``: label -> uint8 array (3, H, W)."""
        self._put(("images", (visuals, epoch)))

    def close(self, timeout: float = 5.0) -> None:
        """Let the thread send what is queued, for at most ``timeout`` seconds."""
        self._put(("stop", None))
        self._thread.join(timeout)

    def _put(self, item: tuple) -> None:
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                try:  # drop the oldest request: lines are re-sent whole, images superseded by newer ones
                    self._queue.get_nowait()
                except queue.Empty:
                    pass

    # --- the background thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            pending = [self._queue.get()]
            while True:  # coalesce whatever else is waiting into one send of each kind
                try:
                    pending.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            kinds = {kind for kind, _ in pending}
            images = [payload for kind, payload in pending if kind == "images"]
            if "lines" in kinds:
                self._send_safely(self._send_lines)
            if images:
                self._send_safely(lambda: self._send_images(*images[-1]))
            if "stop" in kinds:
                return

    @property
    def address(self) -> str:
        """The page that shows this run (the server's root opens an empty 'main' environment)."""
        server = self.server if self.server.startswith("http") else f"http://{self.server}"
        return f"{server}:{self.port}/env/{self.env}"

    def _send_safely(self, send: Callable[[], None]) -> None:
        # messages go through tqdm.write (say): a logging line would be glued onto the progress bar's line
        try:
            if self._client is None:
                self._client = self._client_factory(self.server, self.port, self.env, self.timeout)
                if self._connected_once:
                    say(f"Visdom server at {self.server}:{self.port} answers again; monitoring resumed")
                    self._send_lines()  # a restarted server has lost its windows: re-send every curve
                else:
                    say(f"Visdom: connected; this run's plots are at {self.address}")
                self._connected_once = True
            send()
            self.sent += 1
        except Exception as exc:  # any failure of the monitor must never reach training
            self.failures += 1
            self._client = None
            self._connected_once = True
            if not self._warned:
                self._warned = True
                say(f"warning: Visdom server at {self.server}:{self.port} is unreachable ({exc.__class__.__name__}); "
                    "training continues and monitoring resumes by itself when it answers. Start it with: "
                    f"cyclegan-culture visdom --port {self.port}")

    def _send_lines(self) -> None:
        with self._lock:
            x = np.asarray(self._history.x)
            series = {k: np.asarray(v, dtype=float) for k, v in self._history.series.items()}
        if not len(x):
            return
        for key, y in series.items():
            # short titles: the environment already names the run, and the image grid names the culture
            title = "seconds per iteration" if key == "sec_per_iter" else \
                ("learning rate " if key.startswith("lr_") else "" if key.startswith("eval_") else "loss ") + key
            self._client.line(X=x, Y=y, win=f"plot_{key}", env=self.env,
                              opts={"title": title, "xlabel": "epoch", "ylabel": key})

    def _send_images(self, visuals: dict[str, np.ndarray], epoch: int) -> None:
        labels = list(visuals)
        grid = np.stack([visuals[k] for k in labels])
        self._client.images(grid, nrow=self.ncols, win="visuals", env=self.env, padding=2,
                            opts={"title": f"{self.title}, epoch {epoch}: " + " ".join(labels),
                                  "caption": " | ".join(labels), **pane_size(grid.shape, self.ncols)})


def pane_size(shape: tuple[int, ...], ncols: int, padding: int = 2) -> dict[str, int]:
    """The image pane's width and height in pixels, so the whole grid shows at full size: Visdom's default
    pane cut off the fourth column and the second row. Its frame and title bar take about 20 and 60 px."""
    n, _, h, w = shape
    cols = max(1, min(ncols, n))
    rows = -(-n // cols)
    return {"width": cols * (w + padding) + padding + 20, "height": rows * (h + padding) + padding + 60}


def _make_client(server: str, port: int, env: str, timeout: float) -> Any:
    """A visdom client that raises on failure, never waits on a socket, and times out every request."""
    import visdom

    logging.getLogger("visdom").setLevel(logging.ERROR)  # its per-session chatter would bury our one warning

    class TimedVisdom(visdom.Visdom):
        def _handle_post(self, url, data=None):  # noqa: ANN001 - visdom's signature
            # as visdom's own, plus a timeout (a hung server must not hold this thread forever); HTTP error
            # codes are not raised, since visdom's env endpoint answers 500 to its own client's first request
            return self.session.post(url, data=data or {}, timeout=timeout).text

    server = server if server.startswith("http") else f"http://{server}"
    return TimedVisdom(server=server, port=port, env=env, raise_exceptions=True, use_incoming_socket=False)
