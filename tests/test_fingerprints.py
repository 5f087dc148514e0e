"""Each culture feature on a synthetic image with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from cyclegan_culture.eval import fingerprints as fp


def canvas(value: float = 1.0, size: int = 256) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.float64)


def square_on_white() -> np.ndarray:
    img = canvas(1.0)
    img[96:160, 96:160] = 0.0  # one 64x64 black square
    return img


def test_blank_space_of_a_white_canvas_with_one_black_square():
    img = square_on_white()
    mask = fp.blank_space_mask(img)
    # white area minus a band of about half the 9-px window around the square's edges
    expected = 1 - (64 + 2 * 4) ** 2 / 256 ** 2
    assert fp.blank_space(img) == pytest.approx(expected, abs=0.01)
    assert mask[0, 0] and mask[255, 255] and not mask[128, 128] and not mask[96, 128]


def test_edge_density_is_the_square_outline():
    density = fp.edge_density(square_on_white())
    outline = 4 * 64 / 256 ** 2
    assert outline <= density <= 2 * outline  # the outline, one to two pixels thick (a step between two pixels)
    assert fp.edge_density(canvas(0.5)) == 0


def test_colour_measures_on_grey_and_pure_red():
    grey, red = canvas(0.5), np.zeros((64, 64, 3))
    red[..., 0] = 1.0
    assert fp.colourfulness(grey) == pytest.approx(0, abs=1e-9)
    assert fp.colourfulness(red) == pytest.approx(0.3 * math.hypot(255, 127.5))
    assert fp.hsv_stats(grey)["saturation_mean"] == 0 and fp.hsv_stats(red)["saturation_mean"] == 1
    assert fp.lab_stats(canvas(1.0))["lightness_mean"] == pytest.approx(100, abs=0.01)
    assert fp.lab_stats(grey)["chroma_mean"] == pytest.approx(0, abs=0.01)


def test_hue_entropy_one_hue_versus_all_hues():
    red = np.zeros((32, 32, 3))
    red[..., 0] = 1.0
    assert fp.hue_entropy(red) == 0
    hsv = np.stack(np.broadcast_arrays(np.linspace(0, 1, 3600, endpoint=False)[None, :], 1.0, 1.0), -1)
    from skimage import color
    rainbow = color.hsv2rgb(hsv)
    assert fp.hue_entropy(rainbow) == pytest.approx(math.log2(36), abs=0.01)


def test_palette_finds_two_colours_in_equal_shares():
    img = np.zeros((64, 64, 3))
    img[:, :32, 0] = 1.0   # red half
    img[:, 32:, 2] = 1.0   # blue half
    palette = fp.dominant_palette(img, k=5)
    colours = {tuple(c): share for c, share in palette}
    assert colours[(255, 0, 0)] == pytest.approx(0.5, abs=0.05)
    assert colours[(0, 0, 255)] == pytest.approx(0.5, abs=0.05)


def test_orientation_entropy_of_stripes_and_of_noise():
    stripes = canvas(1.0, 128)
    stripes[:, ::8] = 0.0  # vertical lines: one orientation
    noise = np.random.default_rng(0).random((128, 128, 1)).repeat(3, -1)
    assert fp.orientation_entropy(stripes) < 0.1
    assert fp.orientation_entropy(noise) > 3.5  # close to log2(16) = 4


def test_stroke_width_of_a_six_pixel_bar():
    img = canvas(1.0, 128)
    img[60:66, 10:118] = 0.0
    widths = fp.stroke_width(img)
    assert widths["stroke_width_mean"] == pytest.approx(6, abs=1.5)


def test_texture_measures_on_flat_and_two_tone_images():
    flat = canvas(0.5, 64)
    glcm = fp.glcm_stats(flat)
    assert glcm["glcm_contrast"] == 0 and glcm["glcm_homogeneity"] == 1 and glcm["glcm_energy"] == 1
    assert fp.lbp_entropy(flat) == 0 and fp.grey_entropy(flat) == 0 and fp.wavelet_energy_entropy(flat) == 0
    half = canvas(0.0, 64)
    half[:, 32:] = 1.0
    assert fp.grey_entropy(half) == pytest.approx(1.0)
    noise = np.random.default_rng(1).random((64, 64, 1)).repeat(3, -1)
    assert fp.glcm_stats(noise)["glcm_contrast"] > fp.glcm_stats(half)["glcm_contrast"]


def test_fingerprint_has_every_feature_and_analysis_size():
    img = Image.fromarray((np.random.default_rng(2).random((300, 500, 3)) * 255).astype(np.uint8))
    arr = fp.as_array(img)
    assert arr.shape == (154, 256, 3) and arr.max() <= 1
    values = fp.fingerprint(arr)
    assert list(values) == fp.FEATURES and all(math.isfinite(v) for v in values.values())
