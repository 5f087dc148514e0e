"""The analysis: a classifier on two synthetic "cultures", and an end-to-end analyze run on tiny data."""

from __future__ import annotations

import csv
import json

import numpy as np
from PIL import Image

from cyclegan_culture.cli import main
from cyclegan_culture.eval import metrics
from cyclegan_culture.eval.analysis import SoftmaxClassifier, cross_validate
from tests.conftest import TINY, write_image


def test_classifier_separates_two_synthetic_cultures():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (40, 6))
    b = rng.normal(0, 1, (40, 6))
    b[:, 2] += 3.0  # the one feature that differs
    X, y = np.vstack([a, b]), np.array([0] * 40 + [1] * 40)
    cv = cross_validate(X, y, 2)
    assert cv["accuracy"] > 0.9 and np.array(cv["confusion"]).sum() == 80
    model = SoftmaxClassifier().fit(X, y, 2)
    assert abs(model.W[2, 1] - model.W[2, 0]) > max(abs(model.W[i, 1] - model.W[i, 0]) for i in (0, 1, 3, 4, 5))
    noise = cross_validate(rng.normal(0, 1, (80, 6)), y, 2)
    assert noise["accuracy"] < 0.75  # no signal, no accuracy


def test_metrics_registry_and_log():
    img = np.random.default_rng(1).random((32, 32, 3))
    values = metrics.compute(["ssim_grey", "psnr"], img, img)
    assert values["ssim_grey"] == 1.0 and values["psnr"] == float("inf")
    assert metrics.compute(["ssim_grey"], img, 1 - img)["ssim_grey"] < 0.5


def make_culture_dataset(root, name, colour, seed, photos_from=None):
    rng = np.random.default_rng(seed)
    for split, n in (("trainA", 6), ("testA", 3)):
        if photos_from is not None:  # share the photos, as the embedded datasets do
            root.mkdir(parents=True, exist_ok=True)
            (root / split).symlink_to(photos_from / split)
            continue
        for i in range(n):
            write_image(root / split / f"p{i}.png", (48, 40), seed * 10 + i)
    for split, n in (("trainB", 6), ("testB", 3)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            arr = np.full((40, 48, 3), colour, np.uint8)
            arr[10:20, 5:40] = rng.integers(0, 80, 3)  # a dark stroke on a flat ground
            Image.fromarray(arr).save(root / split / f"{name}{i}.png")
    (root / "culture.json").write_text(json.dumps({"name": name.title(), "native_name": "<b>x</b>",
                                                   "domain_B": name}), encoding="utf-8")
    return root


def test_analyze_end_to_end_writes_every_output(tmp_path):
    ink = make_culture_dataset(tmp_path / "photo2ink", "ink", (235, 228, 210), 1)
    pop = make_culture_dataset(tmp_path / "photo2pop", "pop", (250, 40, 140), 2, photos_from=ink)
    assert main(["train", "--dataroot", str(ink), "--name", "ink_model", "--checkpoints_dir", str(tmp_path / "ckpt"),
                 *TINY, "--n_epochs", "1", "--n_epochs_decay", "0"]) == 0
    out = tmp_path / "analysis"
    assert main(["analyze", "--datasets", str(ink), str(pop), "--models", str(tmp_path / "ckpt" / "ink_model"),
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [g["key"] for g in summary["groups"]] == ["photo", "ink", "pop"]
    assert summary["groups"][0]["images"] == 9  # the shared photo folders are counted once per file
    assert summary["classifier"]["accuracy"] > 0.8
    assert len(summary["distance_matrix"]["values"]) == 3
    assert summary["fid_kid"]["status"] == "skipped"
    model = summary["models"][0]
    assert model["images"] == 3 and 0 <= model["style_score"] <= 1 and -1 <= model["content_ssim_grey"] <= 1
    assert set(model["feature_shifts"]["blank_space"]) == {"photos", "translations", "culture"}
    with open(out / "features.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 + 9 + 9 + 3 and "blank_space" in rows[0]
    for plot in ("palettes", "fingerprints", "distributions", "distance", "confusion"):
        assert (out / "plots" / f"{plot}.png").stat().st_size > 1000
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "plots/confusion.png" in html
    assert len((tmp_path / "ckpt" / "ink_model" / "metrics.jsonl").read_text().splitlines()) == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_report_renders_every_plot_in_headless_chromium(tmp_path):
    import shutil
    import subprocess

    import pytest
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; CI installs it)")
    ink = make_culture_dataset(tmp_path / "photo2ink", "ink", (235, 228, 210), 1)
    pop = make_culture_dataset(tmp_path / "photo2pop", "pop", (250, 40, 140), 2, photos_from=ink)
    out = tmp_path / "analysis"
    assert main(["analyze", "--datasets", str(ink), str(pop), "--out", str(out)]) == 0
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--window-size=1200,2400", "--allow-file-access-from-files"]
    # a script in the page reports, after load, how many images actually decoded with a non-zero size
    probe = out / "probe.html"
    probe.write_text("<iframe id=f src='index.html' width=1200 height=2400></iframe><script>"
                     "onload=()=>{const d=document.getElementById('f').contentDocument;"
                     "const imgs=[...d.images];document.title=imgs.filter(i=>i.complete&&i.naturalWidth>0).length"
                     "+'/'+imgs.length;}</script>")
    dom = subprocess.run([chromium, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    loaded, total = map(int, dom.split("<title>")[1].split("</title>")[0].split("/"))
    assert total >= 5 + 2 * 3 and loaded == total  # five plots, and every example image with its mask
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", (out / "index.html").as_uri()], capture_output=True,
                   timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10


def random_inception_weights(path, monkeypatch):
    """A weights file with the keys and shapes of torch-fidelity's Inception but random values: the real file
    cannot be downloaded here, and the test checks the plumbing, not the published numbers."""
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    empty = path.parent / "empty.pt"
    torch.save({}, empty)
    with monkeypatch.context() as m:
        m.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        torch.manual_seed(0)
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    for module in net.modules():  # keep activations alive through 90 layers (default init shrinks them to ~0)
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)
    return path


def test_fid_and_kid_are_zero_for_a_set_against_itself_and_grow_with_a_shift():
    pytest = __import__("pytest")
    pytest.importorskip("torch_fidelity")
    from cyclegan_culture.eval.fid import fid, kid

    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (40, 16))
    b = rng.normal(0, 1, (40, 16))
    assert abs(fid(a, a)) < 1e-6
    # moving every one of 16 means by 2 adds |shift|^2 = 64 to the FID (up to the samples' own mean differences)
    assert abs(fid(a, b + 2.0) - fid(a, b) - 64) < 8
    small = kid(a[:7], b)
    assert small["kid_subset_size"] == 7  # adapted to the smaller set instead of failing
    assert kid(a, b + 2.0)["kid_mean"] > small["kid_mean"]


def test_analyze_with_inception_weights_reports_fid_and_kid(tmp_path, monkeypatch):
    import pytest
    pytest.importorskip("torch_fidelity")
    weights = random_inception_weights(tmp_path / "inception.pth", monkeypatch)
    ink = make_culture_dataset(tmp_path / "photo2ink", "ink", (235, 228, 210), 1)
    pop = make_culture_dataset(tmp_path / "photo2pop", "pop", (250, 40, 140), 2, photos_from=ink)
    assert main(["train", "--dataroot", str(ink), "--name", "ink_model", "--checkpoints_dir", str(tmp_path / "ckpt"),
                 *TINY, "--n_epochs", "1", "--n_epochs_decay", "0"]) == 0
    out = tmp_path / "analysis"
    assert main(["analyze", "--datasets", str(ink), str(pop), "--models", str(tmp_path / "ckpt" / "ink_model"),
                 "--out", str(out), "--inception-weights", str(weights)]) == 0
    fk = json.loads((out / "summary.json").read_text())["fid_kid"]
    assert fk["status"] == "computed" and fk["keys"] == ["photo", "ink", "pop"]
    matrix = np.array(fk["fid"])
    assert np.allclose(matrix, matrix.T) and np.all(np.diag(matrix) == 0) and np.all(matrix[~np.eye(3, dtype=bool)] > 0)
    record = json.loads((tmp_path / "ckpt" / "ink_model" / "metrics.jsonl").read_text().splitlines()[-1])
    scored = record["fid_kid"]
    assert scored["images"] == 3 and scored["translations_vs_culture"]["kid_subset_size"] == 3
    assert np.isfinite(scored["translations_vs_culture"]["fid"]) and np.isfinite(scored["photos_vs_culture"]["fid"])
    assert "Inception distances" in (out / "index.html").read_text(encoding="utf-8")


def test_inception_weights_that_are_not_plain_tensors_or_not_inception_are_refused(tmp_path, capsys):
    import pytest
    import torch
    pytest.importorskip("torch_fidelity")
    ink = make_culture_dataset(tmp_path / "photo2ink", "ink", (235, 228, 210), 1)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    assert main(["analyze", "--datasets", str(ink), "--out", str(tmp_path / "a"), "--inception-weights",
                 str(wrong)]) == 2
    assert "not torch-fidelity's Inception-v3 weights" in capsys.readouterr().err
    hostile = tmp_path / "hostile.pth"
    torch.save({"x": Image.new("RGB", (1, 1))}, hostile)  # unpickling it would construct an arbitrary object
    assert main(["analyze", "--datasets", str(ink), "--out", str(tmp_path / "b"), "--inception-weights",
                 str(hostile)]) == 2
    assert "refused to load" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
