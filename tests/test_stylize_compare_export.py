"""After training: stylize any image at its size, compare cultures on one page, load reference checkpoints,
export to TorchScript and ONNX."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import numpy as np
import torch
from PIL import Image

from cyclegan_culture.cli import main
from cyclegan_culture.inference import Stylizer, tile_starts, translate, translate_tiled, with_shared_stats
from cyclegan_culture.models.networks import define_G
from tests.conftest import TINY, make_dataset, write_image


def train_tiny(tmp: Path, name: str, culture: dict) -> Path:
    data = make_dataset(tmp / f"data_{name}")
    (data / "culture.json").write_text(json.dumps(culture, ensure_ascii=False), encoding="utf-8")
    assert main(["train", "--dataroot", str(data), "--name", name, "--checkpoints_dir", str(tmp / "ckpt"), *TINY,
                 "--n_epochs", "1", "--n_epochs_decay", "0"]) == 0
    return tmp / "ckpt" / name


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    guohua = train_tiny(tmp, "photo2guohua", {"name": "Guohua", "native_name": "国画"})
    ukiyoe = train_tiny(tmp, "photo2ukiyoe", {"name": "Ukiyo-e", "native_name": "浮世絵",
                                              "description": "<script>x</script> prints"})
    return tmp, guohua, ukiyoe


@pytest.mark.parametrize("size", [(131, 77), (40, 400), (400, 40), (5, 3), (64, 64)])
def test_stylize_keeps_exact_size(two_runs, size):
    _, guohua, _ = two_runs
    stylizer = Stylizer.from_pretrained(guohua, device="cpu", tile=0)
    out = stylizer.stylize(Image.new("RGB", size, (200, 30, 30)))
    assert out.size == size and out.mode == "RGB"


def test_stylize_command_walks_folders_and_keeps_relative_paths(two_runs, tmp_path):
    _, guohua, _ = two_runs
    inputs = tmp_path / "in"
    write_image(inputs / "a.jpg", (131, 77), 1)
    write_image(inputs / "sub" / "b.png", (40, 400), 2)
    write_image(inputs / "sub" / "c.bmp", (33, 35), 3)
    (inputs / "broken.png").write_bytes(b"nope")
    single = write_image(tmp_path / "single.png", (20, 24), 4)
    assert main(["stylize", "--model", str(guohua), str(inputs), str(single), "--output", str(tmp_path / "out"),
                 "--gpu_ids", "-1"]) == 0
    out = tmp_path / "out"
    assert Image.open(out / "a.jpg").size == (131, 77)
    assert Image.open(out / "sub" / "b.png").size == (40, 400)
    assert Image.open(out / "sub" / "c.png").size == (33, 35)   # BMP written as PNG
    assert Image.open(out / "single.png").size == (20, 24)
    assert not (out / "broken.png").exists()


def test_tiled_output_matches_untiled_closely():
    torch.manual_seed(0)
    net = define_G(3, 3, 8, "resnet_6blocks").eval()
    x = torch.rand(1, 3, 96, 120) * 2 - 1
    shared_net, norms = with_shared_stats(net)
    with torch.inference_mode():
        whole = translate(net, x)
        tiled = translate_tiled(shared_net, x, tile=64, overlap=16, shared_norms=norms)
        naive = translate_tiled(net, x, tile=64, overlap=16)
    shared_err = (tiled - whole).abs().mean().item()
    naive_err = (naive - whole).abs().mean().item()
    # measured: shared statistics ~0.01 mean abs difference on a [-1, 1] scale, per-tile statistics several times more
    assert shared_err < 0.05
    assert shared_err < naive_err
    assert tiled.shape == whole.shape


def test_tiles_cover_the_image_with_the_requested_overlap():
    starts = tile_starts(1000, 256, 64)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 256 - 64 for a, b in zip(starts, starts[1:]))
    assert tile_starts(100, 256, 64) == [0]


def test_bare_reference_checkpoint_loads_with_flags(two_runs, tmp_path):
    _, guohua, _ = two_runs
    state = torch.load(guohua / "latest_net_G_A.pth", weights_only=True)
    bare = tmp_path / "latest_net_G_A.pth"
    torch.save({"module." + k: v for k, v in state.items()}, bare)  # as DataParallel saved it
    stylizer = Stylizer.from_checkpoint(bare, device="cpu", netG="resnet_6blocks", ngf=4, norm="instance")
    reference = Stylizer.from_pretrained(guohua, device="cpu")
    # a textured image: on a flat one, instance norm divides rounding residue by sqrt(eps) and amplifies it
    image = Image.open(write_image(tmp_path / "in.png", (48, 40), 3))
    ours = np.asarray(stylizer.stylize(image), dtype=int)
    theirs = np.asarray(reference.stylize(image), dtype=int)
    assert np.abs(ours - theirs).max() <= 1  # the same weights
    torch.manual_seed(123)
    other = np.asarray(Stylizer(define_G(3, 3, 4, "resnet_6blocks").eval()).stylize(image), dtype=int)
    assert np.abs(ours - other).max() > 10  # other weights differ by far more than rounding
    out = tmp_path / "o"
    assert main(["stylize", "--checkpoint", str(bare), "--netG", "resnet_6blocks", "--ngf", "4", "--norm",
                 "instance", str(write_image(tmp_path / "p.png", (30, 22), 5)), "--output", str(out)]) == 0
    assert Image.open(out / "p.png").size == (30, 22)


def test_wrong_flags_for_a_bare_checkpoint_are_one_line(two_runs, tmp_path, capsys):
    _, guohua, _ = two_runs
    rc = main(["stylize", "--checkpoint", str(guohua / "latest_net_G_A.pth"), "--ngf", "64",
               str(write_image(tmp_path / "p.png", (30, 22), 5)), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "does not fit --netG resnet_9blocks --ngf 64" in err


def test_compare_page_has_a_row_per_photo_and_a_column_per_culture(two_runs, tmp_path):
    tmp, guohua, ukiyoe = two_runs
    photos = tmp_path / "photos"
    for i, size in enumerate([(40, 30), (31, 45), (64, 20)]):
        write_image(photos / f"p{i}.jpg", size, 10 + i)
    out = tmp_path / "cmp"
    assert main(["compare", "--photos", str(photos), "--models", str(guohua), str(ukiyoe), "--out", str(out),
                 "--gpu_ids", "-1"]) == 0
    html = (out / "index.html").read_text(encoding="utf-8")
    assert re.search(r"<th>photo</th>\s*<th>Guohua 国画</th>\s*<th>Ukiyo-e 浮世絵</th>", html)
    rows = [r for r in re.findall(r"<tr>(.*?)</tr>", html, flags=re.S) if "<img" in r]
    assert len(rows) == 3 and all(r.count("<img") == 3 for r in rows)
    assert 'href="images/photo2ukiyoe/p1.png"' in html and 'src="thumbs/photo2ukiyoe/p1.png"' in html
    assert Image.open(out / "images" / "photo2guohua" / "p2.png").size == (64, 20)
    assert "&lt;script&gt;" in html and "<script>x" not in html


def test_compare_paginates_past_fifty_rows(two_runs, tmp_path):
    _, guohua, _ = two_runs
    photos = tmp_path / "photos"
    for i in range(51):
        write_image(photos / f"p{i:02d}.png", (8, 8), i)
    out = tmp_path / "cmp"
    assert main(["compare", "--photos", str(photos), "--models", str(guohua), "--out", str(out)]) == 0
    first, second = (out / "index.html").read_text(), (out / "page2.html").read_text()
    assert first.count("<img") == 100 and second.count("<img") == 2
    assert 'href="page2.html"' in first and 'href="index.html"' in second


def test_test_py_compare_uses_the_dataroot_photos(two_runs, tmp_path):
    tmp, guohua, ukiyoe = two_runs
    data = tmp / "data_photo2guohua"
    out = tmp_path / "cmp"
    assert main(["test", "--compare", "--dataroot", str(data), "--models", str(guohua), str(ukiyoe),
                 "--out", str(out)]) == 0
    assert (out / "index.html").read_text().count("<img") == 2 * 3


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_matches_pytorch(two_runs, tmp_path, fmt, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="onnxruntime is installed with the test extras")
        pytest.importorskip("onnx", reason="onnx is installed with the test extras")
    _, guohua, _ = two_runs
    out = tmp_path / f"g.{fmt}"
    assert main(["export", "--model", str(guohua), "--format", fmt, "--out", str(out)]) == 0
    message = capsys.readouterr().out
    diff = float(re.search(r"difference from PyTorch on a 200x300 image: ([0-9.e+-]+)", message).group(1))
    assert out.is_file() and diff < 1e-4
