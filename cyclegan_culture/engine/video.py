"""`cyclegan-culture stylize CLIP.mp4`: a video translated frame by frame into a video of the same frame count,
rate and size, audio copied, steadied over time (video/stability.py), with progress and ETA.

The output is written to a hidden partial file beside it and renamed when complete. A damaged or truncated input
ends the clip early with one line, and the frames translated so far are kept as a playable video. An existing
output is replaced only with --overwrite.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cyclegan_culture.errors import UserError
from cyclegan_culture.inference import Stylizer
from cyclegan_culture.progress import count, progress, say
from cyclegan_culture.video.io import VideoReader, VideoWriter
from cyclegan_culture.video.stability import FrameStylizer, StabilityOptions


@dataclass
class VideoResult:
    path: Path
    frames: int
    seconds: float
    damaged: str | None = None
    cuts: int = 0


def video_output(path: Path, output: Path, suffix: str | None) -> Path:
    """OUT/<name><suffix>.mp4 for a clip (H.264 in MP4 whatever the input's container)."""
    return output / f"{path.stem}{suffix or ''}.mp4"


def check_video_target(source: Path, target: Path, overwrite: bool) -> None:
    if target.resolve() == source.resolve():
        raise UserError(f"--out: {target} is the input video and would be replaced; choose another folder or "
                        "--suffix (nothing was written)")
    if target.exists() and not overwrite:
        raise UserError(f"{target} already exists; pass --overwrite to replace it, or choose another --out "
                        "(nothing was written)")


def stylize_video(stylizer: Stylizer, source: Path, target: Path, options: StabilityOptions,
                  overwrite: bool = False) -> VideoResult:
    check_video_target(source, target, overwrite)
    reader = VideoReader(source)
    info = reader.info
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.stem}.partial{target.suffix}")
    frames = FrameStylizer(stylizer, options)
    writer = VideoWriter(partial, info, reader.stream.time_base, reader.audio)
    started = time.time()
    try:
        bar = progress(total=info.frames or None, desc=f"stylize {source.name}", unit="frame")
        for rgb, frame in reader.frames():
            writer.write(frames(rgb), frame)
            bar.update(1)
        bar.close()
        writer.copy_audio(reader.audio_packets())
    finally:
        writer.close()
        reader.close()
    if writer.frames == 0:
        partial.unlink(missing_ok=True)
        raise UserError(f"{source}: no frame could be decoded ({reader.damaged or 'empty video'}); nothing written")
    partial.replace(target)
    result = VideoResult(target, writer.frames, time.time() - started, reader.damaged, frames.cuts)
    if reader.damaged or (info.frames and writer.frames < info.frames - 1):  # a duration may round up by one
        say(f"warning: {source} is damaged or truncated after frame {writer.frames}"
            + (f" of {info.frames}" if info.frames else "") + f" ({reader.damaged or 'stream ended early'}); "
            f"the {count(writer.frames, 'frame')} before it are in {target}")
    say(f"Stylized {source.name}: {count(writer.frames, 'frame')} at {float(info.rate):.3g} fps, "
        f"{info.width}x{info.height}" + (", audio copied" if info.has_audio else "")
        + (f", {count(frames.cuts, 'cut')} detected" if frames.cuts else "")
        + f", in {result.seconds:.1f} s -> {target}")
    return result
