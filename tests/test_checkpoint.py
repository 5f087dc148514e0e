from __future__ import annotations

import errno
import os
import pickle

import pytest
import torch

from cyclegan_culture.runs import checkpoint
from cyclegan_culture.errors import UserError
from cyclegan_culture.files import atomic_save, atomic_save_image, atomic_write_text, inside


def test_failed_write_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "w.pth"
    atomic_save({"a": torch.ones(2)}, path)

    class Exploding:
        def __reduce__(self):
            raise RuntimeError("boom mid-write")

    with pytest.raises(RuntimeError):
        atomic_save({"a": torch.zeros(2), "b": Exploding()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["w.pth"]  # no temporary left behind


def test_disk_full_is_a_clear_message_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "opt.txt"
    atomic_write_text(path, "old")
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match="disk full while saving; the previous file is intact"):
        atomic_write_text(path, "new")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert path.read_text() == "old"


class Payload:
    def __reduce__(self):
        return (open, ("PWNED_MARKER", "w"))


def test_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"model.1.weight": Payload()}, f, pickle_module=pickle)
    with pytest.raises(UserError, match="refused to load"):
        checkpoint.load_network_weights(path)
    assert not (tmp_path / "PWNED_MARKER").exists()


def test_damaged_training_state_falls_back_to_the_previous_one(tmp_path, caplog):
    checkpoint.save_training_state(tmp_path, {"epoch": 1})
    checkpoint.save_training_state(tmp_path, {"epoch": 2})
    assert checkpoint.load_training_state(tmp_path)["epoch"] == 2
    data = (tmp_path / checkpoint.STATE_FILE).read_bytes()
    (tmp_path / checkpoint.STATE_FILE).write_bytes(data[: len(data) // 2])  # truncated
    assert checkpoint.load_training_state(tmp_path)["epoch"] == 1
    assert "resuming from training_state.prev.pt instead" in caplog.text


def test_flipped_bits_inside_the_training_state_are_detected(tmp_path, caplog):
    import torch
    checkpoint.save_training_state(tmp_path, {"epoch": 1, "w": torch.zeros(1000)})
    checkpoint.save_training_state(tmp_path, {"epoch": 2, "w": torch.ones(1000)})
    path = tmp_path / checkpoint.STATE_FILE
    data = bytearray(path.read_bytes())
    ones = bytes(torch.ones(1).numpy().tobytes())
    at = data.index(ones * 4)          # inside the tensor data: the zip structure stays valid
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    state = checkpoint.load_training_state(tmp_path)
    assert state["epoch"] == 1
    assert "checksum mismatch" in caplog.text


def test_paths_cannot_escape_their_base(tmp_path):
    assert inside(tmp_path, "run") == (tmp_path / "run").resolve()
    with pytest.raises(UserError, match="outside"):
        inside(tmp_path, "..", "x")


def test_images_are_written_losslessly_as_png_and_lossy_only_as_jpeg(tmp_path):
    import numpy as np
    from PIL import Image

    pixels = torch.randint(0, 256, (24, 40, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    image = Image.fromarray(pixels.numpy())
    atomic_save_image(image, tmp_path / "a.png")
    atomic_save_image(image, tmp_path / "a.jpg")
    with Image.open(tmp_path / "a.png") as png, Image.open(tmp_path / "a.jpg") as jpg:
        assert png.format == "PNG" and jpg.format == "JPEG"
        assert torch.equal(torch.from_numpy(np.array(png.convert("RGB"))), pixels)
