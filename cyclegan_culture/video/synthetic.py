"""A clip made from still photos: a slow pan and zoom over each, hard cuts between them, an optional tone as
audio. For demos, the tests and bench/video.py (video made from the embedded photos may ship; none other)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from cyclegan_culture.video.io import _av


def pan_zoom_frames(photo: Image.Image, frames: int, size: tuple[int, int]) -> list[np.ndarray]:
    """``frames`` views of ``photo`` at ``size`` (w, h): the window moves across and closes in by a fifth."""
    photo = photo.convert("RGB")
    w, h = size
    pw, ph = photo.size
    base = min(pw / w, ph / h)  # the largest window of the output's aspect ratio
    views = []
    for i in range(frames):
        t = i / max(1, frames - 1)
        scale = base * (1.0 - 0.2 * t)
        cw, ch = w * scale, h * scale
        x0 = (pw - cw) * (0.2 + 0.6 * t)
        y0 = (ph - ch) * (0.5 + 0.2 * np.sin(np.pi * t))
        box = (x0, y0, x0 + cw, y0 + ch)
        views.append(np.asarray(photo.resize((w, h), Image.BICUBIC, box=box)))
    return views


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 24, audio: bool = True) -> Path:
    """H.264 frames (and a quiet 440 Hz AAC tone as long as the clip) into ``path``."""
    av = _av()
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        sound = out.add_stream("aac", rate=44100) if audio else None
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if sound is not None:
            samples = int(44100 * len(frames) / fps)
            tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(samples) / 44100)).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = tone[start:start + 1024][None, :]
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = 44100, start, Fraction(1, 44100)
                for packet in sound.encode(frame):
                    out.mux(packet)
            for packet in sound.encode(None):
                out.mux(packet)
    return Path(path)
