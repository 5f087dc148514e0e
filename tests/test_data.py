from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan_culture.data.cultures import load_culture
from cyclegan_culture.data.images import BadImage, list_images, load_rgb, pil_to_tensor, tensor_to_pil
from cyclegan_culture.data.transforms import Preprocess
from cyclegan_culture.data.unpaired import EpochSampler, UnpairedDataset
from cyclegan_culture.errors import UserError
from tests.conftest import make_dataset, write_image


# --- reading odd images ----------------------------------------------------------------------------------------
def test_greyscale_rgba_palette_cmyk_become_rgb(tmp_path):
    base = np.zeros((10, 12, 3), dtype=np.uint8)
    base[..., 0] = 200
    Image.fromarray(base).convert("L").save(tmp_path / "grey.png")
    rgba = Image.new("RGBA", (12, 10), (255, 0, 0, 0))  # fully transparent red -> white background
    rgba.save(tmp_path / "rgba.png")
    pal = Image.new("P", (12, 10), 0)
    pal.putpalette([10, 20, 30] + [0] * 765)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    Image.fromarray(base).convert("CMYK").save(tmp_path / "cmyk.jpg")
    for name in ("grey.png", "rgba.png", "pal.png", "cmyk.jpg"):
        img = load_rgb(tmp_path / name)
        assert img.mode == "RGB" and img.size == (12, 10), name
    assert load_rgb(tmp_path / "rgba.png").getpixel((0, 0)) == (255, 255, 255)
    assert load_rgb(tmp_path / "pal.png").getpixel((0, 0)) == (255, 255, 255)
    assert load_rgb(tmp_path / "cmyk.jpg").getpixel((0, 0))[0] > 150


def test_sixteen_bit_png_is_scaled_to_eight_bit(tmp_path):
    arr = np.full((8, 8), 65535, dtype=np.uint16)
    arr[0, 0] = 0
    Image.fromarray(arr).save(tmp_path / "deep.png")
    img = load_rgb(tmp_path / "deep.png")
    assert img.getpixel((1, 1)) == (255, 255, 255) and img.getpixel((0, 0)) == (0, 0, 0)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (30, 10), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_rgb(tmp_path / "rot.jpg").size == (10, 30)


@pytest.mark.parametrize("content, reason", [(b"", "empty"), (b"not an image at all", "not an image"),
                                             (None, "decode")])
def test_bad_files_raise_bad_image_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content is None:  # a truncated JPEG
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
        content = buf.getvalue()[:300]
    path.write_bytes(content)
    with pytest.raises(BadImage, match=reason):
        load_rgb(path)


def test_listing_skips_hidden_and_broken_links_and_walks_subfolders(tmp_path):
    write_image(tmp_path / "a.png", (8, 8), 0)
    write_image(tmp_path / "sub" / "b.png", (8, 8), 1)
    write_image(tmp_path / ".hidden.png", (8, 8), 2)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "gone.png").symlink_to(tmp_path / "missing.png")
    found, skipped = list_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.png", "sub/b.png"]
    assert [p.name for p, _ in skipped] == ["gone.png"]


def test_tensor_round_trip_is_exact_for_uint8():
    arr = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
    img = Image.fromarray(np.stack([arr] * 3, -1))
    t = pil_to_tensor(img)
    assert t.min() == -1 and t.max() == 1
    assert np.array_equal(np.asarray(tensor_to_pil(t)), np.asarray(img))


# --- preprocessing sizes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, src, expected", [
    ("resize_and_crop", (300, 200), (256, 256)),
    ("crop", (300, 280), (256, 256)),
    ("crop", (100, 50), (256, 256)),            # smaller than the crop: enlarged, not a crash
    # height kept at least crop_size, as the reference; then both sides rounded to a multiple of 4, which the
    # generator needs (the reference trains on 286 and fails at the first cycle loss)
    ("scale_width", (572, 300), (288, 256)),
    ("scale_width", (200, 400), (288, 572)),
    ("scale_width_and_crop", (572, 600), (256, 256)),
    ("none", (101, 59), (100, 60)),             # rounded to multiples of 4
])
def test_preprocess_sizes_match_the_reference(mode, src, expected):
    out = Preprocess(mode, 286, 256, flip=False)(Image.new("RGB", src), random.Random(0))
    assert out.size == expected


def test_flip_is_random_and_off_with_no_flip():
    img = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    flipped = sum(np.array_equal(np.asarray(Preprocess("none", 4, 4, True, min_size=4)(img, random.Random(s))),
                                 np.asarray(img)[:, ::-1]) for s in range(40))
    assert 5 < flipped < 35
    assert all(np.array_equal(np.asarray(Preprocess("none", 4, 4, False, min_size=4)(img, random.Random(s))), np.asarray(img))
               for s in range(10))


# --- the unpaired dataset ---------------------------------------------------------------------------------------
def test_random_pairing_varies_and_serial_pairing_is_in_order(tmp_path):
    root = make_dataset(tmp_path, n_a=6, n_b=3)
    pre = Preprocess("resize_and_crop", 36, 32)
    ds = UnpairedDataset(root, "train", pre, seed=1)
    assert len(ds) == 6
    partners = {Path(ds[(e, 0)]["B_paths"]).name for e in range(20)}
    assert len(partners) > 1
    assert ds[(3, 2)]["B_paths"] == ds[(3, 2)]["B_paths"]  # deterministic for (epoch, index)
    serial = UnpairedDataset(root, "train", pre, serial_batches=True)
    assert [Path(serial[(0, i)]["B_paths"]).name for i in range(4)] == ["b0.jpg", "b1.jpg", "b2.jpg", "b0.jpg"]
    item = serial[(0, 1)]
    assert item["A"].shape == (3, 32, 32) and Path(item["A_paths"]).name == "a1.png"


def test_undecodable_file_is_skipped_and_named(tmp_path):
    root = make_dataset(tmp_path, n_a=2, n_b=2)
    (root / "trainA" / "a0.png").write_bytes(b"garbage")
    ds = UnpairedDataset(root, "train", Preprocess("resize_and_crop", 36, 32), serial_batches=True)
    item = ds[(0, 0)]
    assert Path(item["A_paths"]).name == "a1.png"
    assert "a0.png" in item["skipped"] and "not an image" in item["skipped"]


@pytest.mark.parametrize("remove, message", [("trainA", "trainA: folder not found"), ("trainB", "trainB")])
def test_missing_or_empty_folders_stop_with_the_folder_named(tmp_path, remove, message):
    root = make_dataset(tmp_path)
    for f in (root / remove).iterdir():
        f.unlink()
    with pytest.raises(UserError, match="no images found"):
        UnpairedDataset(root, "train", Preprocess())
    (root / remove).rmdir()
    with pytest.raises(UserError, match=message):
        UnpairedDataset(root, "train", Preprocess())


def test_sampler_reshuffles_each_epoch_and_resumes_mid_epoch():
    s = EpochSampler(10, seed=3)
    s.set_epoch(1)
    e1 = [i for _, i in s]
    s.set_epoch(2)
    e2 = [i for _, i in s]
    assert sorted(e1) == list(range(10)) and e1 != e2
    s.set_epoch(1, start=4)
    assert [i for _, i in s] == e1[4:] and len(s) == 6


def test_culture_json_is_read_and_validated(tmp_path):
    (tmp_path / "culture.json").write_text('{"name": "Guohua", "native_name": "国画", "extra": 1}', encoding="utf-8")
    c = load_culture(tmp_path)
    assert c.title() == "Guohua 国画"
    (tmp_path / "culture.json").write_text("{oops")
    with pytest.raises(UserError, match="culture.json"):
        load_culture(tmp_path)
    assert load_culture(tmp_path / "nothing").name == "nothing"


def test_embedded_datasets_are_complete():
    root = Path(__file__).resolve().parent.parent / "datasets"
    for culture in ("guohua", "ukiyoe", "impressionism"):
        ds = root / f"photo2{culture}"
        counts = {split: len(list_images(ds / split)[0]) for split in ("trainA", "testA", "trainB", "testB")}
        assert counts == {"trainA": 85, "testA": 15, "trainB": 60, "testB": 10}, culture
        assert load_culture(ds).native_name
    assert (root / "PROVENANCE.csv").read_text(encoding="utf-8").count("\n") == 311
    assert torch.is_tensor(pil_to_tensor(load_rgb(next((root / "photo" / "train").iterdir()))))


def test_a_cultures_preset_weights_apply_under_the_flags_the_user_typed(tmp_path, capsys):
    from cyclegan_culture import options
    from cyclegan_culture.data.cultures import preset_settings

    record = {"name": "Ukiyo-e", "presets": {"cpu_long": {"lambda_identity": 0, "lambda_tone": 0.5, "lambda_A": 5},
                                             "cpu": {"lambda_inkwash": 1}}}
    (tmp_path / "culture.json").write_text(json.dumps(record), encoding="utf-8")
    parser = options.build_train_parser()
    opt = options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu_long", "--lambda_tone", "0.7"])
    assert (opt.lambda_identity, opt.lambda_edge, opt.lambda_tone) == (0.0, 0.5, 0.7)  # edge: the preset's own
    assert (opt.lambda_A, opt.lambda_B) == (5.0, 10.0)  # a cycle weight too; B keeps the default
    assert "sets --lambda_identity 0 --lambda_A 5 for this culture" in capsys.readouterr().out
    cpu = options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu"])
    assert (cpu.lambda_tone, cpu.lambda_inkwash) == (0.0, 1.0)  # cpu's own, not cpu_long's
    assert options.parse(parser, ["--dataroot", str(tmp_path)]).lambda_identity == 0.5  # no preset, no change
    assert preset_settings(tmp_path / "nothing", "cpu_long") == {}
    for bad in ({"cpu_long": {"lr": 1}}, {"cpu_long": {"lambda_tone": -1}}, {"cpu_long": 3}, [1]):
        (tmp_path / "culture.json").write_text(json.dumps({**record, "presets": bad}), encoding="utf-8")
        with pytest.raises(UserError, match=r"culture.json: \"presets\" must map"):
            options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu_long"])
    shipped = Path(__file__).resolve().parent.parent / "datasets"
    assert preset_settings(shipped / "photo2ukiyoe", "cpu_long")["lambda_tone"] > 0
    assert preset_settings(shipped / "photo2guohua", "cpu_long")["model"] == "cut"  # holds on cprland_ too
    assert preset_settings(shipped / "photo2guohua", "cpu")["model"] == "cut"  # the demo's (quality.md section 20)


def test_a_cut_typed_over_a_preset_with_a_cyclegan_critic_trains_without_it(tmp_path, capsys):
    from cyclegan_culture import options

    record = {"name": "Guohua", "presets": {"cpu_long": {"lambda_inkwash": 1, "lambda_tone": 0.2}}}
    (tmp_path / "culture.json").write_text(json.dumps(record), encoding="utf-8")
    parser = options.build_train_parser()
    opt = options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu_long", "--model", "cut"])
    options.validate_train(opt)  # guohua's ink-wash critic is CycleGAN's: left out, not an error
    assert (opt.lambda_inkwash, opt.lambda_tone) == (0, 0.2)
    assert "--lambda_inkwash is left out" in capsys.readouterr().out
    assert options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu_long"]).lambda_inkwash == 1
    typed = options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu_long", "--model", "cut",
                                   "--lambda_inkwash", "1"])
    with pytest.raises(UserError, match="--lambda_inkwash: --model cut has no discriminator"):
        options.validate_train(typed)


def test_a_cultures_preset_may_choose_the_model_family_unless_the_user_typed_one(tmp_path, capsys):
    from cyclegan_culture import options

    preset = {"model": "cut", "lambda_tone": 0.3, "lambda_NCE": 0.25}
    record = {"name": "Impressionism", "presets": {"cpu_long": preset}}
    (tmp_path / "culture.json").write_text(json.dumps(record), encoding="utf-8")
    parser = options.build_train_parser()
    opt = options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu_long"])
    assert (opt.model, opt.lambda_tone, opt.lambda_NCE) == ("cut", 0.3, 0.25)
    assert "sets --model cut --lambda_tone 0.3 --lambda_NCE 0.25 for this culture" in capsys.readouterr().out
    typed = options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu_long", "--model", "cycle_gan"])
    assert typed.model == "cycle_gan"
    options.validate_train(typed)  # the culture's CUT weight is no error for the CycleGAN the user typed
    assert options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu"]).model == "cycle_gan"
    for bad, message in (("pix2pix", "names model 'pix2pix'; choose one of: .*cut"), (3, "must map")):
        record["presets"]["cpu_long"]["model"] = bad
        (tmp_path / "culture.json").write_text(json.dumps(record), encoding="utf-8")
        with pytest.raises(UserError, match=message):
            options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu_long"])


def test_a_cultures_preset_may_choose_the_gan_objective_unless_the_user_typed_one(tmp_path, capsys):
    from cyclegan_culture import options

    record = {"name": "Ukiyo-e", "presets": {"cpu_long": {"gan_mode": "hinge", "lambda_A": 5}}}
    (tmp_path / "culture.json").write_text(json.dumps(record), encoding="utf-8")
    parser = options.build_train_parser()
    opt = options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu_long"])
    assert (opt.gan_mode, opt.lambda_A) == ("hinge", 5.0)
    assert "sets --gan_mode hinge --lambda_A 5 for this culture" in capsys.readouterr().out
    typed = options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu_long", "--gan_mode", "lsgan"])
    assert typed.gan_mode == "lsgan"
    assert options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu"]).gan_mode == "lsgan"
    for bad, message in (("softplus", "names gan_mode 'softplus'; choose one of: .*hinge"), (1, "must map")):
        record["presets"]["cpu_long"]["gan_mode"] = bad
        (tmp_path / "culture.json").write_text(json.dumps(record), encoding="utf-8")
        with pytest.raises(UserError, match=message):
            options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu_long"])


def test_a_cultures_preset_may_set_how_many_epochs_it_trains(tmp_path, capsys):
    from cyclegan_culture import options

    record = {"name": "Ukiyo-e", "presets": {"cpu_long": {"n_epochs": 5, "n_epochs_decay": 5}}}
    (tmp_path / "culture.json").write_text(json.dumps(record), encoding="utf-8")
    parser = options.build_train_parser()
    opt = options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu_long"])
    assert (opt.n_epochs, opt.n_epochs_decay) == (5, 5) and isinstance(opt.n_epochs, int)
    assert "sets --n_epochs 5 --n_epochs_decay 5 for this culture" in capsys.readouterr().out
    typed = options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu_long", "--n_epochs", "40"])
    assert (typed.n_epochs, typed.n_epochs_decay) == (40, 5)
    assert options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu"]).n_epochs == 14  # the preset's
    for bad in ({"n_epochs": 0}, {"n_epochs": 2.5}, {"n_epochs_decay": -1}, {"n_epochs": True}):
        (tmp_path / "culture.json").write_text(json.dumps({"name": "U", "presets": {"cpu_long": bad}}), "utf-8")
        with pytest.raises(UserError, match=r"whole epochs"):
            options.parse(parser, ["--dataroot", str(tmp_path), "--preset", "cpu_long"])
