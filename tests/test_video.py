"""Video: a clip in, a clip out (frames, rate, size, audio), steadied over time; damaged inputs and existing
outputs handled (issue 23). Clips are generated here from synthetic photos: a slow pan and zoom, and a hard cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")
pytest.importorskip("cv2")

from cyclegan_culture.cli import main  # noqa: E402
from cyclegan_culture.inference import Stylizer  # noqa: E402
from cyclegan_culture.video.stability import FrameStylizer, StabilityOptions, warping_error  # noqa: E402
from cyclegan_culture.video.synthetic import pan_zoom_frames, write_clip  # noqa: E402
from tests.conftest import make_run  # noqa: E402


def photo(seed: int, size: tuple[int, int] = (200, 150)) -> Image.Image:
    """A smooth synthetic photo (blobs of colour), so optical flow has structure to follow."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BICUBIC)


def read_back(path: Path) -> tuple[list[np.ndarray], object, tuple[int, int], int]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
        return frames, stream.average_rate, (stream.codec_context.width, stream.codec_context.height), \
            len(c.streams.audio)


@pytest.fixture
def clip(tmp_path) -> Path:
    """2 s at 24 fps, 96x64: a pan and zoom over one photo, a hard cut, then another (with audio)."""
    frames = pan_zoom_frames(photo(1), 24, (96, 64)) + pan_zoom_frames(photo(2), 24, (96, 64))
    return write_clip(tmp_path / "clip.mp4", frames)


@pytest.fixture
def model(tmp_path) -> Path:
    return make_run(tmp_path / "run", "ink", seed=0)


def test_a_clip_keeps_its_frames_rate_size_and_audio(clip, model, tmp_path, capsys):
    assert main(["stylize", "--model", str(model), str(clip), "--out", str(tmp_path / "out"), "--gpu_ids", "-1"]) == 0
    frames, rate, size, audio = read_back(tmp_path / "out" / "clip.mp4")
    assert (len(frames), rate, size, audio) == (48, 24, (96, 64), 1)
    out = capsys.readouterr().out
    assert "48 frames at 24 fps" in out and "1 cut detected" in out
    assert not list((tmp_path / "out").glob(".*partial*"))


def test_odd_sizes_and_large_frames_through_tiles(tmp_path, model):
    clip = write_clip(tmp_path / "odd.mp4", pan_zoom_frames(photo(3, (300, 200)), 6, (130, 74)), audio=False)
    assert main(["stylize", "--model", str(model), str(clip), "--out", str(tmp_path / "o"), "--gpu_ids", "-1",
                 "--tile", "64", "--overlap", "8"]) == 0
    frames, _, size, audio = read_back(tmp_path / "o" / "odd.mp4")
    assert (len(frames), size, audio) == (6, (130, 74), 0)


def test_an_existing_output_is_kept_unless_overwrite(clip, model, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip.mp4").write_bytes(b"the user's own file")
    assert main(["stylize", "--model", str(model), str(clip), "--out", str(out), "--gpu_ids", "-1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "clip.mp4").read_bytes() == b"the user's own file"
    assert main(["stylize", "--model", str(model), str(clip), "--out", str(out), "--gpu_ids", "-1",
                 "--overwrite"]) == 0
    assert len(read_back(out / "clip.mp4")[0]) == 48
    # the input itself is never the output
    assert main(["stylize", "--model", str(model), str(clip), "--out", str(clip.parent), "--gpu_ids", "-1",
                 "--overwrite"]) == 2


def test_two_clips_of_one_name_are_refused_before_any_work(clip, model, tmp_path, capsys):
    other = tmp_path / "b"
    other.mkdir()
    (other / "clip.mp4").write_bytes(clip.read_bytes())
    assert main(["stylize", "--model", str(model), str(clip), str(other / "clip.mp4"), "--out", str(tmp_path / "o"),
                 "--gpu_ids", "-1", "--overwrite"]) == 2
    assert "both be written as clip.mp4" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_truncated_clip_gets_one_line_and_keeps_what_was_written(model, tmp_path, capsys):
    # Matroska, as a camera or a broken download leaves it: readable up to where it stops (an MP4 cut short loses
    # its index at the end and is refused whole, as the garbage file below)
    frames = pan_zoom_frames(photo(1), 24, (96, 64)) + pan_zoom_frames(photo(2), 24, (96, 64))
    data = write_clip(tmp_path / "whole.mkv", frames).read_bytes()
    damaged = tmp_path / "cut_short.mkv"
    damaged.write_bytes(data[: len(data) // 2])
    assert main(["stylize", "--model", str(model), str(damaged), "--out", str(tmp_path / "o"), "--gpu_ids", "-1"]) == 0
    captured = capsys.readouterr()
    kept = read_back(tmp_path / "o" / "cut_short.mp4")[0]
    assert 0 < len(kept) < 48
    assert "damaged or truncated" in captured.out and f"{len(kept)} frames" in captured.out
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    assert main(["stylize", "--model", str(model), str(garbage), "--out", str(tmp_path / "g"), "--gpu_ids", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "garbage.mp4" in err and "Traceback" not in err


def test_shared_statistics_and_flow_blending_steady_the_frames(model):
    frames = pan_zoom_frames(photo(4), 16, (96, 64))
    stylizer = Stylizer.from_pretrained(model, device="cpu")
    plain = [FrameStylizer(stylizer, StabilityOptions(1, 0.0))(f) for f in frames]
    runner = FrameStylizer(stylizer, StabilityOptions(8, 0.0))
    shared = [runner(f) for f in frames]
    runner = FrameStylizer(stylizer, StabilityOptions(8, 0.5))
    blended = [runner(f) for f in frames]
    e_plain, e_shared, e_blend = (warping_error(frames, x) for x in (plain, shared, blended))
    assert e_blend < e_plain and e_shared <= e_plain * 1.02
    # the first frame has nothing before it: every option gives the plain translation
    assert np.array_equal(plain[0], blended[0]) and np.array_equal(plain[0], shared[0])
    assert warping_error(frames, frames) < e_plain


def test_a_cut_resets_the_history(model):
    stylizer = Stylizer.from_pretrained(model, device="cpu")
    a, b = pan_zoom_frames(photo(5), 4, (96, 64)), pan_zoom_frames(photo(6), 1, (96, 64))
    runner = FrameStylizer(stylizer, StabilityOptions(8, 0.5))
    for f in a:
        runner(f)
    after_cut = runner(b[0])
    fresh = FrameStylizer(stylizer, StabilityOptions(8, 0.5))(b[0])
    assert runner.cuts == 1 and np.array_equal(after_cut, fresh)
