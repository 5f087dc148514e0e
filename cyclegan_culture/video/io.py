"""Reading and writing video files with PyAV (FFmpeg's libraries, bundled in its wheels: nothing to install
beside pip, and per-frame access to timestamps, which a frame-by-frame translator needs to keep the clip's
timing). Audio is copied packet by packet, never re-encoded."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cyclegan_culture.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


def is_video_file(path: Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise UserError('video needs PyAV: pip install "cyclegan-culture[video]" (or pip install av)') from None
    return av


@dataclass
class VideoInfo:
    width: int
    height: int
    rate: Fraction          # frames per second (average)
    frames: int             # as the container declares it, or its duration times the rate (0: unknown)
    has_audio: bool


class VideoReader:
    """Frames of a video file as RGB uint8 arrays, with their timestamps. Decoding errors past the first frame end
    the iteration and set ``damaged`` (the frames before are good)."""

    def __init__(self, path: Path):
        av = _av()
        self.path = Path(path)
        try:
            self.container = av.open(str(self.path))
            self.stream = self.container.streams.video[0]
        except (av.error.FFmpegError, IndexError, OSError) as exc:
            raise UserError(f"{self.path}: not a readable video ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:120] if str(exc) else 'no video stream'})") from None
        self.audio = self.container.streams.audio[0] if self.container.streams.audio else None
        ctx = self.stream.codec_context
        rate = Fraction(self.stream.average_rate or 24)
        frames = self.stream.frames or 0
        if not frames and self.container.duration:  # Matroska and others declare a duration, not a count
            frames = round(self.container.duration / 1_000_000 * rate)
        self.info = VideoInfo(ctx.width, ctx.height, rate, frames, self.audio is not None)
        self.damaged: str | None = None

    def frames(self) -> Iterator[tuple[np.ndarray, Any]]:
        """(rgb array (H, W, 3), the decoded frame for its timing)."""
        av = _av()
        try:
            for frame in self.container.decode(self.stream):
                yield frame.to_ndarray(format="rgb24"), frame
        except av.error.FFmpegError as exc:
            self.damaged = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"

    def audio_packets(self) -> Iterator[Any]:
        if self.audio is None:
            return
        av = _av()
        with av.open(str(self.path)) as second:  # a second demuxer: audio copied without holding decoded video
            try:
                for packet in second.demux(second.streams.audio[0]):
                    if packet.dts is not None:
                        yield packet
            except av.error.FFmpegError:
                return

    def close(self) -> None:
        self.container.close()


class VideoWriter:
    """H.264 (yuv420p; yuv444p for odd sizes, which 4:2:0 cannot hold) at the source's rate and timestamps, audio
    copied from ``audio_template``."""

    def __init__(self, path: Path, info: VideoInfo, time_base: Fraction | None, audio_template: Any = None,
                 crf: int = 18):
        av = _av()
        self.path = Path(path)
        self.container = av.open(str(self.path), "w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=info.rate)
        self.stream.width, self.stream.height = info.width, info.height
        odd = info.width % 2 or info.height % 2
        self.stream.pix_fmt = "yuv444p" if odd and codec == "libx264" else "yuv420p"
        if codec == "libx264":
            self.stream.options = {"crf": str(crf), "preset": "medium"}
        if time_base is not None:
            self.stream.time_base = time_base
        self.audio = self.container.add_stream_from_template(audio_template) if audio_template is not None else None
        self.frames = 0

    def write(self, rgb: np.ndarray, like: Any) -> None:
        av = _av()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts, frame.time_base = like.pts, like.time_base
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def copy_audio(self, packets: Iterator[Any]) -> None:
        if self.audio is None:
            return
        for packet in packets:
            packet.stream = self.audio
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()
