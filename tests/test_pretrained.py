"""Culture models by name: the shipped ones, installing a run under a name, stylize --culture, and the Python
API's input types."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan_culture import cli
from cyclegan_culture.errors import UserError
from cyclegan_culture.inference import Stylizer
from cyclegan_culture.pretrained import catalog
from cyclegan_culture.runs import folder
from tests.conftest import ROOT, make_run, write_image

REFERENCE_OUTPUTS = ROOT / "tests" / "data" / "shipped"


def test_install_list_and_remove(tiny_culture_home, tmp_path, capsys):
    assert {"ink", "print"} <= set(catalog.installed())
    assert cli.main(["cultures"]) == 0
    out = capsys.readouterr().out
    assert "ink" in out and "Ink 文化" in out and "Art of ink." in out and "More words" not in out
    with pytest.raises(UserError, match="already installed"):
        catalog.install("ink", tmp_path / "runs" / "ink")
    with pytest.raises(UserError, match="lower-case"):
        catalog.install("Bad Name", tmp_path / "runs" / "ink")
    with pytest.raises(UserError, match="run folder not found"):
        catalog.install("other", tmp_path / "missing")
    assert cli.main(["cultures", "remove", "print"]) == 0
    assert "print" not in catalog.installed()
    assert cli.main(["cultures", "remove", "print"]) == 2
    assert "not installed" in capsys.readouterr().err


def test_install_takes_the_averaged_weights_in_half_precision_when_faithful(tiny_culture_home, tmp_path):
    run = make_run(tmp_path / "runs" / "avg", "avg", seed=3, ema=True)
    model = catalog.install("avg", run)
    stored = torch.load(model.folder / catalog.WEIGHTS_FILE, weights_only=True)
    source = torch.load(run / "latest_net_G_A_ema.pth", weights_only=True)
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    assert all(torch.allclose(stored[k].float(), source[k], atol=1e-2, rtol=1e-2) for k in source)
    assert folder.read_model_config(model.folder).ema_decay == 0.0


def test_from_pretrained_by_name_and_clear_errors(tiny_culture_home):
    stylizer = Stylizer.from_pretrained("ink")
    assert stylizer.stylize(Image.new("RGB", (30, 22), "white")).size == (30, 22)
    with pytest.raises(UserError, match="neither a run folder nor an installed culture.*ink"):
        Stylizer.from_pretrained("no_such_culture")
    with pytest.raises(UserError, match="run folder not found"):
        Stylizer.from_pretrained("checkpoints/no_such_run")
    with pytest.raises(UserError, match="only its photo -> culture generator"):
        Stylizer.from_pretrained("ink", direction="BtoA")


def test_stylize_returns_the_kind_it_was_given(tiny_culture_home, tmp_path):
    stylizer = Stylizer.from_pretrained("ink")
    path = write_image(tmp_path / "p.png", (26, 18), seed=1)
    pil = Image.open(path).convert("RGB")
    from_path, from_pil = stylizer.stylize(str(path)), stylizer.stylize(pil)
    assert isinstance(from_path, Image.Image) and from_path.size == (26, 18)
    assert np.array_equal(np.asarray(from_path), np.asarray(from_pil))
    assert isinstance(stylizer.stylize(Path(path)), Image.Image)
    arr = np.asarray(pil)
    out8 = stylizer.stylize(arr)
    assert out8.dtype == np.uint8 and out8.shape == arr.shape and np.array_equal(out8, np.asarray(from_pil))
    outf = stylizer.stylize(arr / 255.0)
    assert outf.dtype == np.float64 and np.abs(outf * 255 - out8).max() <= 1
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255
    out_t = stylizer.stylize(t)
    assert out_t.shape == t.shape and out_t.dtype == torch.float32 and 0 <= out_t.min() and out_t.max() <= 1
    assert (out_t * 255 - torch.from_numpy(out8).permute(2, 0, 1)).abs().max() <= 1
    assert stylizer.stylize(t.unsqueeze(0).repeat(2, 1, 1, 1)).shape == (2, 3, 18, 26)
    as_uint8 = stylizer.stylize(torch.from_numpy(arr.copy()).permute(2, 0, 1))
    assert as_uint8.dtype == torch.uint8 and torch.equal(as_uint8.permute(1, 2, 0), torch.from_numpy(out8))
    with pytest.raises(UserError, match="not int"):
        stylizer.stylize(3)
    with pytest.raises(UserError, match="shape"):
        stylizer.stylize(np.zeros((4, 4, 7)))
    with pytest.raises(UserError, match="missing.png"):
        stylizer.stylize(tmp_path / "missing.png")


def test_stylize_culture_all_writes_one_rendering_per_culture(tiny_culture_home, tmp_path, capsys):
    photos = tmp_path / "photos"
    write_image(photos / "a.jpg", (33, 21), seed=2)
    assert cli.main(["stylize", "--culture", "all", str(photos), "--output", str(tmp_path / "out")]) == 0
    for key in catalog.installed():
        assert Image.open(tmp_path / "out" / key / "a.jpg").size == (33, 21)
    assert cli.main(["stylize", "--culture", "ink", str(photos / "a.jpg"), "--output", str(tmp_path / "one")]) == 0
    assert (tmp_path / "one" / "a.jpg").is_file()
    capsys.readouterr()
    assert cli.main(["stylize", "--culture", "zzz", str(photos), "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "zzz" in err and err.count("\n") == 0


# --- the models shipped in the package --------------------------------------------------------------------------
SHIPPED = sorted(catalog._models_in(catalog.SHIPPED_DIR, True))


def _probe() -> Image.Image:
    return Image.open(catalog.examples()[0]).convert("RGB").resize((96, 64), Image.BILINEAR)


@pytest.mark.parametrize("key", SHIPPED or [pytest.param("none", marks=pytest.mark.skip("no shipped cultures"))])
def test_shipped_culture_loads_and_translates_deterministically(key):
    model = catalog.find(key)
    state = torch.load(model.folder / catalog.WEIGHTS_FILE, weights_only=True)  # plain tensors only
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert (model.folder / catalog.CARD_FILE).is_file() and model.culture.native_name
    stylizer = Stylizer.from_pretrained(key, device="cpu")
    first, second = (np.asarray(stylizer.stylize(_probe())) for _ in range(2))
    assert hashlib.sha256(first.tobytes()).hexdigest() == hashlib.sha256(second.tobytes()).hexdigest()
    reference = np.asarray(Image.open(REFERENCE_OUTPUTS / f"{key}.png"))
    diff = np.abs(first.astype(int) - reference.astype(int))
    assert diff.max() <= 3 and diff.mean() < 0.5  # other CPUs round a few pixels differently
