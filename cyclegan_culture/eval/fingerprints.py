"""Culture fingerprints: interpretable per-image measurements of colour, blank space, line and texture.

Each function takes an RGB image as a float array in [0, 1] of shape (H, W, 3) (``as_array`` makes one from a
PIL image at the analysis size) and returns plain numbers. ``fingerprint`` collects them all into one flat dict,
the row of ``features.csv``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import color, feature, morphology

ANALYSIS_SIZE = 256  # longer side: features are comparable across image sizes and fast to compute
EPS = 1e-12


def as_array(image: Image.Image, size: int = ANALYSIS_SIZE) -> np.ndarray:
    """RGB float array in [0, 1], resized so that the longer side is ``size`` (aspect kept)."""
    image = image.convert("RGB")
    scale = size / max(image.size)
    if scale != 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.BICUBIC)
    return np.asarray(image, dtype=np.float64) / 255.0


def _entropy(hist: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram (counts or weights)."""
    p = hist.astype(np.float64).ravel()
    total = p.sum()
    if total <= 0:
        return 0.0
    p = p[p > 0] / total
    return float(-(p * np.log2(p)).sum())


def _grey(rgb: np.ndarray) -> np.ndarray:
    return color.rgb2gray(rgb)


# --- colour ------------------------------------------------------------------------------------------------------
def hsv_stats(rgb: np.ndarray) -> dict[str, float]:
    """Mean and spread of HSV saturation and value. Ink painting is low in saturation; ukiyo-e prints use flat,
    saturated colour; impressionism is bright and saturated."""
    hsv = color.rgb2hsv(rgb)
    return {"saturation_mean": float(hsv[..., 1].mean()), "saturation_std": float(hsv[..., 1].std()),
            "value_mean": float(hsv[..., 2].mean()), "value_std": float(hsv[..., 2].std())}


def lab_stats(rgb: np.ndarray) -> dict[str, float]:
    """CIELAB lightness (0-100) and chroma: perceptual brightness and colour intensity, independent of hue."""
    lab = color.rgb2lab(rgb)
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    return {"lightness_mean": float(lab[..., 0].mean()), "lightness_std": float(lab[..., 0].std()),
            "chroma_mean": float(chroma.mean())}


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Süsstrunk's (2003) colourfulness M: sqrt(s_rg^2 + s_yb^2) + 0.3 sqrt(m_rg^2 + m_yb^2) on 0-255
    values. 0 for greyscale; around 100 for vividly coloured images. Separates monochrome ink from colour prints."""
    r, g, b = (rgb[..., i] * 255.0 for i in range(3))
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def hue_entropy(rgb: np.ndarray, bins: int = 36, min_saturation: float = 0.1) -> float:
    """Entropy (bits) of the hue histogram over pixels with some colour: 0 for one hue, log2(bins) when every
    hue is equally present. A restrained palette (ink, a few print colours) scores low."""
    hsv = color.rgb2hsv(rgb)
    mask = hsv[..., 1] > min_saturation
    if not mask.any():
        return 0.0
    hist, _ = np.histogram(hsv[..., 0][mask], bins=bins, range=(0, 1))
    return _entropy(hist)


def dominant_palette(rgb: np.ndarray, k: int = 5, iterations: int = 15, seed: int = 0) -> list[tuple[list[int], float]]:
    """The ``k`` dominant colours (k-means in RGB on up to 4096 pixels) as ([r, g, b] 0-255, share), largest
    share first: the palette a viewer would name."""
    pixels = rgb.reshape(-1, 3)
    rng = np.random.default_rng(seed)
    if len(pixels) > 4096:
        pixels = pixels[rng.choice(len(pixels), 4096, replace=False)]
    k = min(k, len(np.unique(pixels, axis=0)))
    # k-means++-style start: far-apart seeds
    centres = [pixels[rng.integers(len(pixels))]]
    for _ in range(1, k):
        d = np.min([((pixels - c) ** 2).sum(1) for c in centres], axis=0)
        centres.append(pixels[int(np.argmax(d))])
    centres = np.array(centres)
    for _ in range(iterations):
        labels = np.argmin(((pixels[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        for j in range(k):
            if (labels == j).any():
                centres[j] = pixels[labels == j].mean(0)
    labels = np.argmin(((pixels[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    shares = np.bincount(labels, minlength=k) / len(labels)
    order = np.argsort(-shares)
    return [([int(round(v * 255)) for v in centres[j]], float(shares[j])) for j in order]


# --- blank space (留白) --------------------------------------------------------------------------------------------
def blank_space_mask(rgb: np.ndarray, window: int = 9, std_threshold: float = 0.03, min_lightness: float = 0.4,
                     min_area: float = 0.002) -> np.ndarray:
    """Where the image is near-uniform, untextured, light background: local standard deviation of grey levels
    below ``std_threshold`` in a ``window``-pixel neighbourhood, grey level at least ``min_lightness`` (unpainted
    ground, not a flat dark area), in regions of at least ``min_area`` of the image.

    In Chinese ink painting the unpainted silk or paper (liubai, 留白) stands for sky, water and mist and is part
    of the composition; local-variance measures of it follow studies of blank space in ink painting.
    """
    grey = _grey(rgb)
    mean = ndimage.uniform_filter(grey, window, mode="reflect")
    sq = ndimage.uniform_filter(grey * grey, window, mode="reflect")
    local_std = np.sqrt(np.clip(sq - mean * mean, 0, None))
    mask = (local_std < std_threshold) & (grey >= min_lightness)
    min_pixels = max(1, int(min_area * mask.size))
    return morphology.remove_small_objects(mask, max_size=min_pixels - 1) if min_pixels > 1 else mask


def blank_space(rgb: np.ndarray) -> float:
    """Share of the image (0-1) that is blank space (see ``blank_space_mask``)."""
    return float(blank_space_mask(rgb).mean())


# --- line and stroke ---------------------------------------------------------------------------------------------
def edge_density(rgb: np.ndarray, sigma: float = 2.0) -> float:
    """Share of pixels on Canny edges: how much of the picture is drawn with lines (ukiyo-e key blocks score high,
    misty washes low)."""
    return float(feature.canny(_grey(rgb), sigma=sigma).mean())


def orientation_entropy(rgb: np.ndarray, bins: int = 16, min_magnitude: float = 0.05) -> float:
    """Entropy (bits) of gradient orientations weighted by gradient strength: low when strokes run in a few
    directions (architecture, rain lines), high for isotropic dabs of paint."""
    grey = _grey(rgb)
    gy, gx = ndimage.sobel(grey, 0), ndimage.sobel(grey, 1)
    magnitude = np.hypot(gx, gy)
    mask = magnitude > min_magnitude
    if not mask.any():
        return 0.0
    angle = np.mod(np.arctan2(gy[mask], gx[mask]), np.pi)  # orientation, not direction
    hist, _ = np.histogram(angle, bins=bins, range=(0, np.pi), weights=magnitude[mask])
    return _entropy(hist)


def stroke_width(rgb: np.ndarray) -> dict[str, float]:
    """Width in pixels (at the analysis size) of dark strokes: twice the distance from each stroke's skeleton to
    its edge, for pixels darker than Otsu's threshold. Brush-and-ink strokes vary in width; printed outlines are
    thin and even."""
    from skimage.filters import threshold_otsu

    grey = _grey(rgb)
    if grey.max() - grey.min() < 1e-6:
        return {"stroke_width_mean": 0.0, "stroke_width_std": 0.0}
    dark = grey < threshold_otsu(grey)
    skeleton = morphology.skeletonize(dark)
    if not skeleton.any():
        return {"stroke_width_mean": 0.0, "stroke_width_std": 0.0}
    widths = 2.0 * ndimage.distance_transform_edt(dark)[skeleton]
    return {"stroke_width_mean": float(widths.mean()), "stroke_width_std": float(widths.std())}


# --- texture and complexity --------------------------------------------------------------------------------------
def glcm_stats(rgb: np.ndarray, levels: int = 32) -> dict[str, float]:
    """Grey-level co-occurrence contrast (local intensity jumps), homogeneity (smooth areas) and energy
    (repeated, orderly texture), averaged over four directions at distance 1."""
    grey = np.clip((_grey(rgb) * levels).astype(np.uint8), 0, levels - 1)
    glcm = feature.graycomatrix(grey, distances=[1], angles=[0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
                                levels=levels, symmetric=True, normed=True)
    return {f"glcm_{p}": float(feature.graycoprops(glcm, p).mean()) for p in ("contrast", "homogeneity", "energy")}


def lbp_entropy(rgb: np.ndarray) -> float:
    """Entropy (bits) of uniform local binary patterns (8 neighbours, radius 1): the variety of micro-textures,
    high for brushwork and paper grain, low for flat printed colour."""
    grey = (_grey(rgb) * 255).astype(np.uint8)
    lbp = feature.local_binary_pattern(grey, P=8, R=1, method="uniform")[1:-1, 1:-1]  # borders see outside
    hist, _ = np.histogram(lbp, bins=10, range=(0, 10))
    return _entropy(hist)


def grey_entropy(rgb: np.ndarray) -> float:
    """Entropy (bits) of the 256-level grey histogram: how many tones the image uses."""
    hist, _ = np.histogram(_grey(rgb), bins=256, range=(0, 1))
    return _entropy(hist)


def wavelet_energy_entropy(rgb: np.ndarray, levels: int = 3) -> float:
    """Entropy (bits) of how detail energy spreads over Haar wavelet scales and orientations: low when one scale
    dominates (fine hatching or broad washes alone), high when detail is spread over scales."""
    grey = _grey(rgb)
    energies = []
    approx = grey
    for _ in range(levels):
        h, w = approx.shape[0] // 2 * 2, approx.shape[1] // 2 * 2
        if h < 2 or w < 2:
            break
        a = approx[:h, :w]
        tl, tr, bl, br = a[0::2, 0::2], a[0::2, 1::2], a[1::2, 0::2], a[1::2, 1::2]
        approx = (tl + tr + bl + br) / 2.0
        for detail in ((tl - tr + bl - br) / 2.0, (tl + tr - bl - br) / 2.0, (tl - tr - bl + br) / 2.0):
            energies.append(float((detail ** 2).sum()))
    return _entropy(np.array(energies))


# --- all of it ---------------------------------------------------------------------------------------------------
FEATURE_GROUPS = {
    "colour": ["saturation_mean", "saturation_std", "value_mean", "value_std", "lightness_mean", "lightness_std",
               "chroma_mean", "colourfulness", "hue_entropy"],
    "blank space": ["blank_space"],
    "line and stroke": ["edge_density", "orientation_entropy", "stroke_width_mean", "stroke_width_std"],
    "texture": ["glcm_contrast", "glcm_homogeneity", "glcm_energy", "lbp_entropy", "grey_entropy",
                "wavelet_entropy"],
}
FEATURES = [name for names in FEATURE_GROUPS.values() for name in names]


def fingerprint(rgb: np.ndarray) -> dict[str, float]:
    """Every feature of one image, in FEATURES order."""
    values: dict[str, float] = {}
    values.update(hsv_stats(rgb))
    values.update(lab_stats(rgb))
    values["colourfulness"] = colourfulness(rgb)
    values["hue_entropy"] = hue_entropy(rgb)
    values["blank_space"] = blank_space(rgb)
    values["edge_density"] = edge_density(rgb)
    values["orientation_entropy"] = orientation_entropy(rgb)
    values.update(stroke_width(rgb))
    values.update(glcm_stats(rgb))
    values["lbp_entropy"] = lbp_entropy(rgb)
    values["grey_entropy"] = grey_entropy(rgb)
    values["wavelet_entropy"] = wavelet_energy_entropy(rgb)
    return {name: values[name] for name in FEATURES}
