"""A messy corpus, made at test time: every command processes each odd file or skips it with one line naming it
and the reason; never a traceback; summaries count what was skipped."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, TINY, write_image



def _jpeg_bytes(size=(64, 48), seed=0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def build_corpus(folder: Path) -> dict[str, bool]:
    """At least 20 kinds of bad or odd input in one folder."""
    folder.mkdir(parents=True, exist_ok=True)
    expect: dict[str, bool] = {}

    def add(name: str, ok: bool, write) -> None:
        write(folder / name)
        expect[name] = ok

    add("zero_bytes.jpg", False, lambda p: p.write_bytes(b""))
    add("truncated.jpg", False, lambda p: p.write_bytes(_jpeg_bytes()[:400]))
    add("random_bytes.jpg", False, lambda p: p.write_bytes(np.random.default_rng(1).bytes(3000)))
    add("text_named.png", False, lambda p: p.write_text("this is not a picture"))
    add("deep16.png", True, lambda p: Image.fromarray(np.full((40, 50), 40000, np.uint16)).save(p))
    add("cmyk.jpg", True, lambda p: Image.new("CMYK", (50, 40), (0, 255, 255, 0)).save(p))

    def palette(p):
        im = Image.new("P", (50, 40), 1)
        im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
        im.save(p, transparency=0)
    add("palette_transparent.png", True, palette)

    def gif(p):
        frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 255, 0))]
        frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    add("animated.gif", True, gif)

    def exif(p):
        e = Image.Exif()
        e[0x0112] = 8
        Image.new("RGB", (60, 20), (0, 0, 200)).save(p, exif=e)
    add("exif_rotated.jpg", True, exif)
    add("one_pixel.png", True, lambda p: Image.new("RGB", (1, 1), (9, 9, 9)).save(p))
    add("smaller_than_crop.png", True, lambda p: write_image(p, (12, 9), 3))
    add("bomb.png", False, lambda p: Image.new("1", (14000, 14000)).save(p))
    add("grey.png", True, lambda p: Image.new("L", (50, 40), 128).save(p))
    add("rgba.png", True, lambda p: Image.new("RGBA", (50, 40), (0, 255, 0, 128)).save(p))
    add("photo.webp", True, lambda p: Image.new("RGB", (50, 40), (1, 2, 3)).save(p, "WEBP"))
    add("name with spaces.png", True, lambda p: write_image(p, (40, 36), 4))
    add("名前_ünïcode.png", True, lambda p: write_image(p, (40, 36), 5))
    add("<b>&'x\".png", True, lambda p: write_image(p, (40, 36), 6))
    add("dangling_link.png", False, lambda p: os.symlink(folder / "does_not_exist.png", p))
    (folder / ".hidden.jpg").write_bytes(_jpeg_bytes(seed=7))            # ignored: hidden
    (folder / "notes.txt").write_text("not an image name")               # ignored: not an image name
    write_image(folder / "subfolder" / "nested.png", (40, 36), 8)        # processed: subfolders are read
    expect["nested.png"] = True
    return expect


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    data = root / "data"
    expect = build_corpus(data / "trainA")
    build_corpus(data / "testA")
    for i in range(3):
        write_image(data / "trainB" / f"b{i}.png", (40, 36), 50 + i)
        write_image(data / "testB" / f"tb{i}.png", (40, 36), 60 + i)
    return root, data, expect


def assert_each_file_handled(output: str, expect: dict[str, bool], times: int = 1) -> None:
    assert "Traceback" not in output
    skipped_lines = [l for l in output.splitlines() if l.startswith("warning: skipped ")]
    for name, ok in expect.items():
        named = [l for l in skipped_lines if name in l]
        if ok:
            assert not named, f"{name} should have been processed: {named}"
        else:
            assert len(named) == times, f"{name} should be skipped {times}x with a reason, got {named}"
            assert all(line.split(name, 1)[1].startswith(": ") and len(line.split(name, 1)[1]) > 4 for line in named)
    assert not any(".hidden" in l or "notes.txt" in l for l in skipped_lines)


def test_training_skips_bad_files_with_a_reason_and_counts_them(messy):
    root, data, expect = messy
    proc = run(str(ROOT / "train.py"), "--dataroot", str(data), "--name", "messy", "--checkpoints_dir",
               str(root / "ckpt"), *TINY, "--n_epochs", "1", "--n_epochs_decay", "0", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert_each_file_handled(output, expect)
    n_bad = sum(not ok for ok in expect.values())
    assert f"{n_bad} files skipped" in output


def test_testing_translates_the_good_files_at_their_size_and_skips_the_rest(messy):
    root, data, expect = messy
    if not (root / "ckpt" / "messy" / "latest_net_G_A.pth").exists():
        pytest.skip("needs the training test's run")
    proc = run(str(ROOT / "test.py"), "--dataroot", str(data), "--name", "messy", "--checkpoints_dir",
               str(root / "ckpt"), "--results_dir", str(root / "results"), cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert_each_file_handled(output, expect)
    images = root / "results" / "messy" / "test_latest" / "images"
    assert Image.open(images / "exif_rotated_fake_B.png").size == (20, 60)    # rotated by EXIF, then kept
    assert Image.open(images / "one_pixel_fake_B.png").size == (1, 1)
    assert Image.open(images / "subfolder__nested_fake_B.png").size == (40, 36)
    html = (root / "results" / "messy" / "test_latest" / "index.html").read_text(encoding="utf-8")
    assert "&lt;b&gt;&amp;'x&quot;.png</p>" in html and "<b>&" not in html  # shown as text, not markup
    assert f"skipped {sum(not ok for ok in expect.values())} files" in output


def test_stylize_handles_the_corpus(messy):
    root, data, expect = messy
    if not (root / "ckpt" / "messy" / "latest_net_G_A.pth").exists():
        pytest.skip("needs the training test's run")
    proc = run("-m", "cyclegan_culture", "stylize", "--model", str(root / "ckpt" / "messy"), str(data / "testA"),
               "--output", str(root / "styled"), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_each_file_handled(proc.stdout + proc.stderr, expect)
    assert (root / "styled" / "animated.png").exists() and (root / "styled" / "subfolder" / "nested.png").exists()


def test_analyze_handles_the_corpus(messy):
    root, data, expect = messy
    proc = run("-m", "cyclegan_culture", "analyze", "--datasets", str(data), "--out", str(root / "analysis"),
               cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert_each_file_handled(output, expect, times=2)  # trainA and testA hold the same corpus
    summary = __import__("json").loads((root / "analysis" / "summary.json").read_text())
    assert summary["skipped"] == 2 * sum(not ok and name != "dangling_link.png" for name, ok in expect.items())


@pytest.mark.parametrize("layout, message", [
    ("empty_trainA", "trainA: no images found"),
    ("missing_dataroot", "folder not found"),
    ("only_testA", "trainA: folder not found"),
])
def test_broken_dataset_layouts_stop_with_one_line(tmp_path, layout, message):
    data = tmp_path / "data"
    if layout == "empty_trainA":
        (data / "trainA").mkdir(parents=True)
        write_image(data / "trainB" / "b.png", (40, 36), 1)
    elif layout == "only_testA":
        write_image(data / "testA" / "a.png", (40, 36), 1)
    proc = run(str(ROOT / "train.py"), "--dataroot", str(data), "--checkpoints_dir", str(tmp_path / "c"), *TINY,
               cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert message in proc.stderr


def test_test_py_with_only_test_a_translates_a_and_says_b_is_missing(messy, tmp_path):
    root, data, _ = messy
    if not (root / "ckpt" / "messy" / "latest_net_G_A.pth").exists():
        pytest.skip("needs the training test's run")
    only_a = tmp_path / "only_a"
    write_image(only_a / "testA" / "a.png", (30, 20), 1)
    proc = run(str(ROOT / "test.py"), "--dataroot", str(only_a), "--name", "messy", "--checkpoints_dir",
               str(root / "ckpt"), "--results_dir", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 0 and "testB not found" in proc.stdout + proc.stderr


def test_n_layers_d_without_the_n_layers_discriminator_says_it_is_ignored(capsys):
    from cyclegan_culture import options
    parser = options.build_train_parser()
    options.parse(parser, ["--dataroot", "x", "--n_layers_D", "2"])
    assert "--n_layers_D 2 has no effect with --netD basic" in capsys.readouterr().out
    options.parse(parser, ["--dataroot", "x", "--netD", "n_layers", "--n_layers_D", "2"])
    options.parse(parser, ["--dataroot", "x"])
    assert "n_layers_D" not in capsys.readouterr().out
