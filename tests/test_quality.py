"""The quality tools: differentiable augmentation, averaged generators, the edge loss, the culture judge, floors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan_culture import cli
from cyclegan_culture.errors import UserError
from cyclegan_culture.eval import floors
from cyclegan_culture.eval.judge import gather, load_judge, source_of, train_judge
from cyclegan_culture.eval.judge_score import pair_by_name, score
from cyclegan_culture.models.diffaugment import cutout, diff_augment, parse_policy, translation
from cyclegan_culture.models import networks
from cyclegan_culture.models.losses import (contour_view, edge_loss, edge_map, flat_colour_loss, graded_sky_loss,
                                            gaussian_blur, ink_wash_view, r1_penalty, sky_mask, stroke_view, tone_loss,
                                            tone_map)
from cyclegan_culture.runs import folder
from tests.test_train_resume import assert_identical, make_trainer, stop_at, weights


# --- DiffAugment -------------------------------------------------------------------------------------------------
def test_translation_shifts_content_and_fills_with_zeros():
    torch.manual_seed(0)
    x = torch.ones(16, 1, 8, 8)
    y = translation(x, ratio=0.25)
    assert y.shape == x.shape
    zero_share = (y == 0).float().mean(dim=(1, 2, 3))
    assert (zero_share > 0).any() and (zero_share <= 1 - 0.75 * 0.75 + 1e-6).all()
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(16, 1, 8, 8).contiguous()
    shifted = translation(ramp, ratio=0.25)
    kept = shifted[shifted != 0]
    assert set(kept.unique().tolist()) <= set(range(8))  # values are moved, never blended


def test_cutout_blanks_a_quarter_inside_the_image():
    torch.manual_seed(0)
    y = cutout(torch.ones(32, 3, 16, 16), ratio=0.5)
    share = (y == 0).float().mean(dim=(1, 2, 3))
    assert (share > 0).all() and (share <= 0.25 + 1e-6).all()
    assert (share == 0.25).any()


def test_diffaugment_passes_gradients_and_refuses_unknown_names():
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    diff_augment(x, parse_policy("color,translation,cutout")).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert parse_policy("") == []
    with pytest.raises(ValueError, match="colour"):
        parse_policy("color,colour")


def test_bad_diffaugment_flag_is_one_line(tiny_dataset, tmp_path, capsys):
    rc = cli.main(["train", "--dataroot", str(tiny_dataset), "--checkpoints_dir", str(tmp_path), "--diffaugment",
                   "flip"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--diffaugment" in err and "flip" in err


# --- the edge loss -----------------------------------------------------------------------------------------------
def test_edge_loss_keeps_where_edges_are_not_their_contrast():
    x = torch.zeros(1, 3, 32, 32)
    x[..., 10:22, 10:22] = 1.0
    assert edge_loss(x * 0.3, x).item() < 0.02  # weaker contrast, same edges: (almost) no loss
    moved = torch.roll(x, shifts=6, dims=3)
    assert edge_loss(moved, x).item() > 0.5
    assert edge_map(x).shape == (1, 1, 16, 16)


def test_tone_loss_forbids_inverted_tones_and_leaves_colour_and_contrast_free():
    torch.manual_seed(0)
    photo = torch.rand(1, 3, 32, 32) * 2 - 1
    photo[..., :16, :] -= 0.8  # a dark upper half
    photo = photo.clamp(-1, 1)
    tinted = (photo * 0.4 + torch.tensor([0.3, -0.1, -0.4]).view(1, 3, 1, 1)).clamp(-1, 1)  # weaker, coloured
    inverted = -photo
    assert tone_loss(tinted, photo).item() < 0.05
    assert tone_loss(inverted, photo).item() > 1.0
    assert edge_loss(inverted, photo).item() < 0.05  # what the edge loss lets through
    assert tone_map(photo).shape == (1, 1, 8, 8)


def test_the_tone_loss_is_trained_and_logged_when_weighted(tiny_dataset, tmp_path):
    run = make_trainer(tiny_dataset, tmp_path / "ck", "--lambda_tone", "2", hooks=[stop_at(2)]).run()
    logged = (run.run_dir / "loss_log.txt").read_text()
    assert "tone_A" in logged and "tone_B" in logged
    with pytest.raises(UserError, match="--lambda_tone must be 0 or more"):
        make_trainer(tiny_dataset, tmp_path / "ck2", "--lambda_tone", "-1")


def test_the_flat_colour_loss_costs_texture_and_shading_not_outlines():
    torch.manual_seed(0)
    flat = torch.full((1, 3, 32, 32), -0.5)
    flat[..., 16:, :] = 0.7  # two flat areas and one strong outline between them
    textured = flat + 0.06 * torch.randn(1, 3, 32, 32)  # the same areas with fine photo-like texture
    shaded = flat + torch.linspace(0, 0.5, 32).view(1, 1, 1, 32)  # a gentle gradient across both
    outlined = flat.clone()
    outlined[..., :, 8] = -1.0  # one more dark line inside an area: two capped steps, whatever its darkness
    assert flat_colour_loss(flat).item() < 0.01
    assert flat_colour_loss(textured).item() > 5 * flat_colour_loss(flat).item()
    assert flat_colour_loss(shaded).item() > flat_colour_loss(flat).item()
    # a strong step costs the cap however strong: twice the outline's contrast, the same loss
    stronger = flat.clone()
    stronger[..., 16:, :] = 1.0
    stronger[..., :16, :] = -1.0
    assert flat_colour_loss(stronger).item() == pytest.approx(flat_colour_loss(flat).item())
    assert flat_colour_loss(outlined).item() < flat_colour_loss(textured).item()


def test_the_flat_colour_loss_is_trained_logged_and_refused_below_zero(tiny_dataset, tmp_path):
    run = make_trainer(tiny_dataset, tmp_path / "ck", "--lambda_flat", "1", hooks=[stop_at(2)]).run()
    logged = (run.run_dir / "loss_log.txt").read_text()
    assert "flat_A" in logged
    cut = make_trainer(tiny_dataset, tmp_path / "ck3", "--model", "cut", "--lambda_flat", "1", hooks=[stop_at(2)]).run()
    assert "flat_A" in (cut.run_dir / "loss_log.txt").read_text()
    with pytest.raises(UserError, match="--lambda_flat must be 0 or more"):
        make_trainer(tiny_dataset, tmp_path / "ck2", "--lambda_flat", "-1")


def landscape(size: int = 64, sky_rows: int = 32) -> torch.Tensor:
    """A photo-like test image: a smooth sky with one strong soft-edged cloud above textured ground."""
    generator = torch.Generator().manual_seed(0)
    photo = torch.zeros(1, 3, size, size)
    rows = torch.linspace(-0.2, 0.6, sky_rows).view(1, 1, sky_rows, 1)
    photo[..., :sky_rows, :] = rows
    cloud = torch.zeros(1, 1, size, size)
    cloud[..., 4:14, 20:44] = 1.0
    photo[..., :sky_rows, :] += 0.8 * gaussian_blur(cloud, 3.0)[..., :sky_rows, :]  # bright, strong, smooth
    photo[..., sky_rows:, :] = -0.3 + 0.3 * torch.randn(1, 3, size - sky_rows, size, generator=generator)
    return photo.clamp(-1, 1)


def test_the_sky_mask_holds_smooth_skies_with_clouds_down_to_the_first_textured_block():
    photo = landscape()
    mask = sky_mask(photo)
    assert mask.shape == (1, 1, 64, 64)
    assert mask[..., :24, :].min() == 1  # the sky, its cloud included ...
    assert mask[..., 32:, :].max() == 0  # ... not the ground (the block at the horizon may go either way)
    # a textured block in the sky (a tree top) ends the sky in its columns only, the blocks under it too
    tree = photo.clone()
    tree[..., 8:16, 8:16] = 0.3 * torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    treed = sky_mask(tree)
    assert treed[..., 8:, 8:16].max() == 0 and treed[..., :8, 8:16].min() == 1
    assert torch.equal(treed[..., 16:], mask[..., 16:])
    # ground from the top: no sky at all
    assert sky_mask(torch.flip(photo, dims=[2])).sum() == 0


def test_the_graded_sky_loss_costs_swirls_in_the_sky_not_bands_or_the_ground():
    photo = landscape()
    bands = torch.zeros(1, 3, 64, 64)
    bands[..., :32, :] = torch.linspace(-1, 0.5, 32).view(1, 1, 32, 1)  # a bokashi: colour graded row by row
    bands[..., 32:, :] = torch.rand(1, 3, 32, 64)  # whatever the ground, it costs nothing
    assert graded_sky_loss(bands, photo).item() < 1e-6
    swirled = bands.clone()
    swirled[..., :32, :] += 0.3 * torch.sin(torch.arange(64.0) / 3).view(1, 1, 1, 64)  # colour across a row
    assert graded_sky_loss(swirled, photo).item() > 0.1
    # the photo itself, its cloud soft across the rows it is in, costs something, but less than swirls
    assert 0 < graded_sky_loss(photo, photo).item() < graded_sky_loss(swirled, photo).item()
    # a photo without sky: nothing to grade
    assert graded_sky_loss(swirled, torch.flip(photo, dims=[2])).item() == 0


def test_the_graded_sky_loss_is_trained_logged_by_both_models_and_refused_below_zero(tiny_dataset, tmp_path):
    for model in ("cycle_gan", "cut"):
        run = make_trainer(tiny_dataset, tmp_path / model, "--model", model, "--lambda_sky", "1",
                           hooks=[stop_at(2)]).run()
        assert "sky_A" in (run.run_dir / "loss_log.txt").read_text()
    with pytest.raises(UserError, match="--lambda_sky must be 0 or more"):
        make_trainer(tiny_dataset, tmp_path / "ck2", "--lambda_sky", "-1")


# --- the ink-wash discriminator ----------------------------------------------------------------------------------
def test_the_ink_wash_view_keeps_the_wash_and_drops_colour_and_fine_strokes():
    layout = torch.full((1, 3, 64, 64), -0.6)
    layout[..., :, 32:] = 0.6  # a dark left half, a light right half
    strokes = torch.zeros(1, 3, 64, 64)
    strokes[..., ::2, :] = 0.8  # one-pixel lines, a fine grid such as a checkerboard artefact
    tint = torch.tensor([0.4, 0.0, -0.4]).view(1, 3, 1, 1)  # red vs blue: the same grey
    view = ink_wash_view(layout)
    assert view.shape == (1, 1, 64, 64)
    assert view[..., 10].mean() < -0.5 and view[..., 54].mean() > 0.5  # the layout kept
    assert ink_wash_view(strokes).std() < 0.05 * strokes.mean(dim=1).std()  # fine strokes blurred away
    assert torch.allclose(ink_wash_view(layout + tint), ink_wash_view(layout - tint), atol=1e-6)


def test_the_ink_wash_discriminator_is_trained_saved_logged_and_fixed_on_resume(tiny_dataset, tmp_path):
    run = make_trainer(tiny_dataset, tmp_path / "ck", "--lambda_inkwash", "1", hooks=[stop_at(2)]).run()
    logged = (run.run_dir / "loss_log.txt").read_text()
    assert "D_ink" in logged and "G_ink" in logged
    critic = torch.load(run.run_dir / "latest_net_D_ink.pth", weights_only=True)
    first = next(v for k, v in critic.items() if k.endswith("weight"))
    assert first.shape[1] == 1  # it sees grey images
    resumed = make_trainer(tiny_dataset, tmp_path / "ck", "--lambda_inkwash", "1", "--continue_train").run()
    assert not resumed.interrupted  # the training state carries it
    with pytest.raises(UserError, match="--lambda_inkwash 0"):
        make_trainer(tiny_dataset, tmp_path / "ck", "--lambda_inkwash", "0", "--continue_train")
    plain = make_trainer(tiny_dataset, tmp_path / "ck2", hooks=[stop_at(1)]).run()
    assert not (plain.run_dir / "latest_net_D_ink.pth").exists()
    with pytest.raises(UserError, match="--lambda_inkwash must"):
        make_trainer(tiny_dataset, tmp_path / "ck3", "--lambda_inkwash", "-1")
    with pytest.raises(UserError, match="CycleGAN's only"):
        make_trainer(tiny_dataset, tmp_path / "ck4", "--lambda_inkwash", "1", "--model", "cut")


def test_the_contour_view_shows_thin_outlines_and_flat_areas_and_ignores_colour_and_contrast():
    print_like = torch.full((1, 3, 64, 64), 0.5)
    print_like[..., 31:33, :] = -0.8  # one dark key-block line across flat colour
    photo_like = torch.linspace(-1, 1, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64).clone()
    photo_like = photo_like + 0.2 * torch.sin(torch.arange(64.0) * 1.7).view(1, 1, 64, 1)  # soft texture everywhere
    view = contour_view(print_like)
    assert view.shape == (1, 1, 64, 64) and view.min() >= -1 and view.max() < 1
    assert view[..., 10, :].max() <= -0.99 and view[..., 31, :].mean() > 0.5  # flat stays flat, the line stands out
    assert (contour_view(photo_like) > -0.9).float().mean() > 0.9  # a photo's edges are everywhere
    tint = torch.tensor([0.2, 0.0, -0.2]).view(1, 3, 1, 1)
    assert torch.allclose(contour_view(print_like + tint), view, atol=1e-5)  # colour is the main critic's
    assert torch.allclose(contour_view(0.5 * print_like), view, atol=1e-2)  # contrast left free


def test_the_stroke_view_keeps_fine_colour_texture_and_drops_the_layout():
    layout = torch.full((1, 3, 64, 64), -0.6)
    layout[..., :, 32:] = 0.6
    dabs = torch.zeros(1, 3, 64, 64)
    dabs[:, 0, ::3, ::3] = 0.5  # small dabs of one colour
    assert stroke_view(layout)[..., 4:28].abs().max() < 1e-4  # broad areas vanish, only the boundary remains
    texture = stroke_view(layout + dabs) - stroke_view(layout)
    assert texture[:, 0].abs().mean() > 10 * texture[:, 1].abs().mean()  # the dabs kept, in their colour
    assert stroke_view(layout).shape == (1, 3, 64, 64) and stroke_view(layout + 5 * dabs).abs().max() < 1


@pytest.mark.parametrize("flag, critic", [("--lambda_contour", "D_line"), ("--lambda_strokes", "D_stroke")])
def test_each_culture_critic_is_trained_saved_and_fixed_on_resume(tiny_dataset, tmp_path, flag, critic):
    run = make_trainer(tiny_dataset, tmp_path / "ck", flag, "0.5", hooks=[stop_at(2)]).run()
    logged = (run.run_dir / "loss_log.txt").read_text()
    assert f"{critic}:" in logged and f"G_{critic[2:]}:" in logged
    assert (run.run_dir / f"latest_net_{critic}.pth").exists()
    with pytest.raises(UserError, match=f"{flag} 0"):
        make_trainer(tiny_dataset, tmp_path / "ck", flag, "0", "--continue_train")
    with pytest.raises(UserError, match=f"{flag} must be 0 or more"):
        make_trainer(tiny_dataset, tmp_path / "ck3", flag, "-1")
    with pytest.raises(UserError, match="CycleGAN's only"):
        make_trainer(tiny_dataset, tmp_path / "ck4", flag, "1", "--model", "cut")


# --- regularised discriminators (R1, spectral norm) -------------------------------------------------------------
def test_r1_is_the_squared_input_gradient_of_the_patch_sum_and_trains_the_discriminator():
    critic = torch.nn.Conv2d(3, 1, 1, bias=True)  # linear: each patch's gradient is the weight vector
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1))
    real = torch.randn(2, 3, 8, 8)
    penalty = r1_penalty(critic, real)
    assert penalty.item() == pytest.approx(8 * 8 * (1 + 4 + 0.25))  # per image, whatever the images
    penalty.backward()  # twice differentiable: the penalty moves the discriminator's weights
    assert critic.weight.grad.abs().sum() > 0 and not real.requires_grad


def test_spectral_norm_bounds_each_discriminator_convolution_and_is_off_by_default():
    plain = networks.define_D(3, 8, "basic")
    bounded = networks.define_D(3, 8, "basic", spectral_norm=True)
    assert not any("parametrizations" in key for key in plain.state_dict())  # the reference's keys
    for _ in range(20):  # training-mode calls run the power iteration
        bounded(torch.randn(1, 3, 32, 32))
    convs = [m for m in bounded.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5
    for conv in convs:
        assert torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2).item() == pytest.approx(1.0, abs=0.05)


def test_r1_runs_every_fourth_step_in_both_models(tiny_dataset, tmp_path):
    def critic_after(steps: int, model: str, *flags: str) -> dict[str, torch.Tensor]:
        run = make_trainer(tiny_dataset, tmp_path / f"{model}{steps}{len(flags)}", "--model", model, *flags,
                           "--pool_size", "0", hooks=[stop_at(steps)]).run()
        return torch.load(run.run_dir / "latest_net_D_A.pth", weights_only=True)

    for model in ("cycle_gan", "cut"):
        plain, penalised = critic_after(3, model), critic_after(3, model, "--lambda_r1", "10")
        assert all(torch.equal(plain[k], penalised[k]) for k in plain)  # steps 1-3: no penalty
        plain, penalised = critic_after(4, model), critic_after(4, model, "--lambda_r1", "10")
        assert any(not torch.equal(plain[k], penalised[k]) for k in plain)  # step 4: penalised


def test_a_run_with_r1_resumed_mid_cycle_is_bit_identical(tiny_dataset, tmp_path):
    flags = ("--lambda_r1", "10")
    whole = make_trainer(tiny_dataset, tmp_path / "whole", *flags).run()
    stopped = make_trainer(tiny_dataset, tmp_path / "parts", *flags, hooks=[stop_at(6)]).run()
    assert stopped.interrupted  # 6 steps: the next penalty is 2 steps away, not 4
    resumed = make_trainer(tiny_dataset, tmp_path / "parts", "--continue_train").run()
    assert_identical(weights(whole.run_dir), weights(resumed.run_dir))


def test_spectral_norm_trains_resumes_and_cannot_be_switched_on_mid_run(tiny_dataset, tmp_path):
    run = make_trainer(tiny_dataset, tmp_path / "sn", "--spectral_norm", "--lambda_r1", "0.01",
                       hooks=[stop_at(4)]).run()
    assert any("parametrizations" in key for key in torch.load(run.run_dir / "latest_net_D_A.pth",
                                                                   weights_only=True))
    assert not make_trainer(tiny_dataset, tmp_path / "sn", "--continue_train").run().interrupted  # inherits it
    make_trainer(tiny_dataset, tmp_path / "plain", hooks=[stop_at(2)]).run()
    with pytest.raises(UserError, match="--spectral_norm on: the run was trained with --spectral_norm off"):
        make_trainer(tiny_dataset, tmp_path / "plain", "--spectral_norm", "--continue_train")
    with pytest.raises(UserError, match="--lambda_r1 must be 0 or more"):
        make_trainer(tiny_dataset, tmp_path / "ck", "--lambda_r1", "-1")


# --- averaged generators -----------------------------------------------------------------------------------------
def test_ema_generators_are_saved_loaded_for_inference_and_resumed(tiny_dataset, tmp_path):
    flags = ("--ema_decay", "0.9", "--diffaugment", "color,translation,cutout", "--lambda_edge", "1")
    run = make_trainer(tiny_dataset, tmp_path / "ck", *flags, hooks=[stop_at(5)]).run()
    assert run.interrupted
    resumed = make_trainer(tiny_dataset, tmp_path / "ck", *flags, "--continue_train").run()
    assert not resumed.interrupted
    run_dir = resumed.run_dir
    trained = torch.load(run_dir / "latest_net_G_A.pth", weights_only=True)
    averaged = torch.load(run_dir / "latest_net_G_A_ema.pth", weights_only=True)
    assert trained.keys() == averaged.keys()
    assert any(not torch.equal(trained[k], averaged[k]) for k in trained)
    net = folder.load_generator(run_dir, "latest", "AtoB", torch.device("cpu"), _plain_plan())
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], averaged[k]) for k in averaged)


def _plain_plan():
    from cyclegan_culture.accel import make_plan

    return make_plan(torch.device("cpu"), training=False)


# --- the judge ---------------------------------------------------------------------------------------------------
def _flat(path: Path, rgb: tuple[int, int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(rgb)[None, None] + rng.normal(0, 6, (40, 48, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _noisy(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def judge_data(tmp_path):
    for i in range(10):
        _noisy(tmp_path / "photo" / f"cam_{i:03d}.png", i)
        _flat(tmp_path / "ink" / f"scroll_{i:03d}.png", (200, 190, 160), i)
    return tmp_path


def test_gather_labels_folders_and_fixes_a_validation_split(judge_data, tiny_dataset):
    (tiny_dataset / "culture.json").write_text(json.dumps({"name": "Ink", "domain_A": "photo", "domain_B": "ink"}))
    items = gather([judge_data / "photo", judge_data / "ink"], exclude={"cam_000.png"})
    assert {it.label for it in items} == {"photo", "ink"}
    assert "cam_000.png" not in {it.path.name for it in items}
    ink = [it for it in items if it.label == "ink"]
    assert [it.path.name for it in ink if it.validation] == ["scroll_004.png", "scroll_009.png"]
    assert source_of(Path("cprland_0001.jpg")) == "cprland"
    from_dataset = gather([tiny_dataset])
    assert {(it.label, it.validation) for it in from_dataset} == {("photo", False), ("photo", True),
                                                                  ("ink", False), ("ink", True)}
    assert all(it.validation == ("test" in it.path.parent.name) for it in from_dataset)


def test_judge_learns_saves_loads_and_scores_against_floors(judge_data, tmp_path):
    torch.set_num_threads(1)
    items = gather([judge_data / "photo", judge_data / "ink"])
    judge, report = train_judge(items, size=16, epochs=4, batch_size=16, lr=5e-3, steps_per_epoch=8)
    assert report["balanced_accuracy"] == 1.0
    assert set(report["per_source"]) == {"ink/scroll", "photo/cam"}
    judge.save(tmp_path / "judge")
    again = load_judge(tmp_path / "judge")
    imgs = [Image.open(p).convert("RGB") for p in sorted((judge_data / "ink").iterdir())[:3]]
    assert np.allclose(judge.probabilities(imgs), again.probabilities(imgs), atol=1e-6)
    # translations named after their photos (one with a --suffix); the floors computed from the photos
    outputs = tmp_path / "out"
    for i, p in enumerate(sorted((judge_data / "photo").iterdir())[:4]):
        _flat(outputs / (p.stem + ("_ink.png" if i == 0 else ".png")), (200, 190, 160), 50 + i)
    rows = score(again, [outputs], "ink", photos=judge_data / "photo", art=judge_data / "ink")
    model, *floor_rows = rows
    assert model.kind == "model" and model.share == 1.0 and model.images == 4 and model.ssim is not None
    assert {r.name for r in floor_rows} == set(floors.FLOORS)
    identity = next(r for r in floor_rows if r.name == "identity")
    assert identity.share == 0.0 and identity.ssim == pytest.approx(1.0)
    assert model.beats_floors == (not any(f.share >= model.share and f.ssim >= model.ssim for f in floor_rows))


def test_a_judge_ensemble_averages_members_that_are_the_single_judges_of_their_seeds(judge_data, tmp_path):
    torch.set_num_threads(1)
    items = gather([judge_data / "photo", judge_data / "ink"])
    recipe = dict(size=16, epochs=2, batch_size=8, lr=5e-3, steps_per_epoch=4)
    ensemble, _ = train_judge(items, seed=3, members=2, **recipe)
    singles = [train_judge(items, seed=seed, **recipe)[0] for seed in (3, 4)]
    imgs = [Image.open(p).convert("RGB") for p in sorted((judge_data / "photo").iterdir())[:3]]
    mean = (singles[0].probabilities(imgs) + singles[1].probabilities(imgs)) / 2
    assert np.allclose(ensemble.probabilities(imgs), mean, atol=1e-6)
    assert not np.allclose(singles[0].probabilities(imgs), singles[1].probabilities(imgs), atol=1e-4)
    assert len(ensemble.info["member_balanced_accuracy"]) == 2 and ensemble.info["recipe"]["members"] == 2
    ensemble.save(tmp_path / "ensemble")
    again = load_judge(tmp_path / "ensemble")
    assert len(again.nets) == 2 and np.allclose(again.probabilities(imgs), mean, atol=1e-6)
    # a judge.json that disagrees with the weights file is a one-line error, not a half-loaded judge
    singles[0].save(tmp_path / "single")
    config = json.loads((tmp_path / "single" / "judge.json").read_text())
    (tmp_path / "single" / "judge.json").write_text(json.dumps({**config, "members": 2}))
    with pytest.raises(UserError, match="1 nets stored, 2 in judge.json"):
        load_judge(tmp_path / "single")


def test_judge_cli_refuses_reuse_and_unknown_targets(judge_data, tmp_path, capsys):
    out = tmp_path / "j"
    (out).mkdir()
    (out / "judge.json").write_text("{}")
    rc = cli.main(["judge", "train", "--datasets", str(judge_data / "photo"), str(judge_data / "ink"), "--out",
                   str(out)])
    assert rc == 2 and "already holds a judge" in capsys.readouterr().err
    rc = cli.main(["judge", "score", "--judge", str(tmp_path / "nothing"), "--outputs", str(judge_data / "ink"),
                   "--target", "ink"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "not a judge folder" in err and err.count("\n") == 0


def test_pairing_by_name_takes_the_longest_matching_stem():
    photos = [Path("p/a.jpg"), Path("p/a_b.jpg")]
    pairs = pair_by_name([Path("o/a_b_guohua.png"), Path("o/a.png"), Path("o/zz.png")], photos)
    assert pairs == {Path("o/a_b_guohua.png"): Path("p/a_b.jpg"), Path("o/a.png"): Path("p/a.jpg")}


def test_floors_keep_the_size_and_colour_transfer_takes_the_paintings_palette():
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    art = Image.new("RGB", (50, 50), (180, 150, 90))
    for name in floors.FLOORS:
        out = floors.apply_floor(name, photo, art)
        assert out.size == photo.size and out.mode == "RGB"
    moved = np.asarray(floors.apply_floor("colour_transfer", photo, art), dtype=float).mean(axis=(0, 1))
    assert np.abs(moved - [180, 150, 90]).max() < 20
    with pytest.raises(ValueError):
        floors.apply_floor("cross_fade", photo, None)


# --- the judge inside analyze and training ----------------------------------------------------------------------
def test_judge_scores_models_in_analyze_and_keeps_the_best_weights_in_training(tmp_path, capsys):
    from tests.conftest import TINY
    from tests.test_analysis import make_culture_dataset

    torch.set_num_threads(1)
    ink = make_culture_dataset(tmp_path / "photo2ink", "ink", (235, 228, 210), 1)
    judge, _ = train_judge(gather([ink]), size=16, epochs=2, batch_size=8, steps_per_epoch=4)
    judge.save(tmp_path / "judge")
    assert cli.main(["train", "--dataroot", str(ink), "--name", "m", "--checkpoints_dir", str(tmp_path / "ck"), *TINY,
                     "--n_epochs", "2", "--n_epochs_decay", "0", "--eval_freq", "1", "--judge",
                     str(tmp_path / "judge"), "--early_stop_metric", "judge_probability"]) == 0
    records = [json.loads(line) for line in (tmp_path / "ck" / "m" / "metrics.jsonl").read_text().splitlines()]
    assert [0 <= r["judge_score"] <= 1 and 0 <= r["judge_probability"] <= 1 for r in records] == [True, True]
    assert (tmp_path / "ck" / "m" / "best_net_G_A.pth").is_file()
    best = max(records, key=lambda r: r["judge_probability"])["epoch"]  # the first of equals: kept only if better
    assert f"at epoch {best}, kept as best_net_*.pth: translate with it by adding --epoch best" in \
        capsys.readouterr().out
    out = tmp_path / "analysis"
    assert cli.main(["analyze", "--datasets", str(ink), "--models", str(tmp_path / "ck" / "m"), "--out", str(out),
                     "--judge", str(tmp_path / "judge")]) == 0
    model = json.loads((out / "summary.json").read_text())["models"][0]
    assert 0 <= model["judge_score"] <= 1 and 0 <= model["judge_probability"] <= 1
    assert "judge score" in (out / "index.html").read_text(encoding="utf-8")


def test_the_judge_sees_the_held_out_photos_translated_at_256_px(tmp_path):
    from cyclegan_culture.eval.during_training import JUDGE_EVAL_SIZE, TrainingEvaluator

    class RecordingJudge:
        classes = ["photo", "ink"]

        def __init__(self):
            self.sizes = []

        def probabilities(self, images):
            self.sizes.append([im.size for im in images])
            return np.array([[0.25, 0.75]] * len(images))

    def photos(folder, n, size):
        folder.mkdir()
        for i in range(n):
            Image.new("RGB", size, (40 * i, 90, 120)).save(folder / f"p{i}.png")
        return sorted(folder.iterdir())

    train, test = photos(tmp_path / "trainA", 10, (40, 30)), photos(tmp_path / "testA", 3, (400, 300))
    art = photos(tmp_path / "trainB", 4, (40, 30))
    judge = RecordingJudge()
    evaluator = TrainingEvaluator(train, art, judge=judge, target="ink", judge_photos=test)
    net = torch.nn.Conv2d(3, 3, 1)  # any generator: the sizes are what this test is about
    results = evaluator(net, None, torch.device("cpu"))
    assert judge.sizes == [[(JUDGE_EVAL_SIZE, JUDGE_EVAL_SIZE * 3 // 4)] * 3]  # the 3 test photos, not trainA's 8
    assert results["judge_score"] == 1.0 and results["judge_probability"] == pytest.approx(0.75)
    without = RecordingJudge()
    TrainingEvaluator(train, art, judge=without, target="ink")(net, None, torch.device("cpu"))
    assert len(without.sizes[0]) == 8  # no test folder: the validation photos
    capped = RecordingJudge()  # a large test folder: only the first n_judge photos each evaluation
    TrainingEvaluator(train, art, judge=capped, target="ink", judge_photos=test, n_judge=2)(net, None, "cpu")
    assert len(capped.sizes[0]) == 2


def test_judge_score_metric_needs_a_judge(tiny_dataset, tmp_path, capsys):
    rc = cli.main(["train", "--dataroot", str(tiny_dataset), "--checkpoints_dir", str(tmp_path), "--eval_freq", "1",
                   "--early_stop_metric", "judge_score"])
    assert rc == 2 and "needs --judge" in capsys.readouterr().err


def test_judge_score_report_never_lands_on_the_images_it_scores(judge_data, tmp_path, capsys):
    (tmp_path / "j").mkdir()
    for report in (judge_data / "ink" / "scroll_000.png", judge_data / "ink" / "report.json"):
        before = sorted(p.name for p in (judge_data / "ink").iterdir())
        rc = cli.main(["judge", "score", "--judge", str(tmp_path / "j"), "--outputs", str(judge_data / "ink"),
                       "--target", "ink", "--report", str(report)])
        assert rc == 2 and "--report" in capsys.readouterr().err
        assert sorted(p.name for p in (judge_data / "ink").iterdir()) == before
    # beside the scored folder (here: in the folder that holds it) is where a report belongs: not refused
    rc = cli.main(["judge", "score", "--judge", str(tmp_path / "j"), "--outputs", str(judge_data / "ink"),
                   "--target", "ink", "--report", str(judge_data / "report.json")])
    assert "--report" not in capsys.readouterr().err


def test_judge_takes_a_photo_cross_faded_with_a_painting_for_a_photo(tmp_path):
    # a cross-fade is a floor, not a translation: trained with cross-faded photos labelled photo, the judge says
    # photo for a new photo with 65% of a painting over it; trained without them, it takes the blend for the art
    torch.set_num_threads(1)
    for i in range(12):
        _flat(tmp_path / "photo" / f"cam_{i:03d}.png", (40, 60, 160), i)
        _flat(tmp_path / "ink" / f"scroll_{i:03d}.png", (210, 200, 170), i)
    items = gather([tmp_path / "photo", tmp_path / "ink"])
    fades = [Image.blend(Image.open(tmp_path / "photo" / f"cam_{i:03d}.png").convert("RGB"),
                         Image.open(tmp_path / "ink" / f"scroll_{i:03d}.png").convert("RGB"), 0.65) for i in (4, 9)]
    judged_photo = {}
    for share in (0.0, 0.5):
        judge, report = train_judge(items, size=16, epochs=4, batch_size=16, lr=5e-3, steps_per_epoch=8,
                                    cross_fades=share)
        assert report["balanced_accuracy"] == 1.0  # real photos and paintings still told apart
        assert judge.info["recipe"]["cross_fades"] == share
        judged_photo[share] = float(judge.probabilities(fades)[:, judge.classes.index("photo")].mean())
    assert judged_photo[0.0] < 0.5 < judged_photo[0.5]
