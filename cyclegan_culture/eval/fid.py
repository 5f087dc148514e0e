"""FID and KID (Inception-v3 feature statistics) with Inception weights the user supplies; nothing downloads.

The feature extractor is torch-fidelity's port of the TensorFlow Inception used by the FID paper's code, so the
numbers are comparable with published ones when given torch-fidelity's weights file
(``pt_inception-2015-12-05-6726825d.pth``, from its release page, copied to this machine by hand).
FID is biased upward for small sets: compare FIDs only between sets of the same size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image

from cyclegan_culture.errors import UserError
from cyclegan_culture.progress import progress
from cyclegan_culture.runs.checkpoint import load_network_weights

KID_SUBSET_SIZE = 1000  # torch-fidelity's default, lowered to the smaller set's size for small sets
KID_SUBSETS = 100


class InceptionFeatures:
    """2048-d pool features of torch-fidelity's Inception-v3, from a local weights file."""

    def __init__(self, weights: Path):
        weights = Path(weights)
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise UserError("--inception_weights needs torch-fidelity: pip install torch-fidelity "
                            "(or pip install 'cyclegan-culture[fid]')") from None
        # torch-fidelity unpickles the file without restrictions; check first that it holds only tensors
        load_network_weights(weights)
        try:
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                   feature_extractor_weights_path=str(weights))
        except RuntimeError as exc:
            raise UserError(f"--inception_weights {weights}: not torch-fidelity's Inception-v3 weights "
                            f"({str(exc).splitlines()[0][:120]}); use pt_inception-2015-12-05-6726825d.pth") from None

    @torch.inference_mode()
    def __call__(self, images: Iterable[Image.Image], desc: str = "Inception features") -> np.ndarray:
        """One row per image; each image is resized to 299x299 inside the network, as in the reference FID."""
        rows = []
        for img in progress(images, desc=desc, unit="img", leave=False):
            x = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)[None]
            rows.append(self.net(x)[0][0].double().numpy())
        return np.stack(rows)


def fid(features_1: np.ndarray, features_2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (lower: closer distributions)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    stats = [fid_features_to_statistics(torch.from_numpy(f)) for f in (features_1, features_2)]
    return float(fid_statistics_to_metric(stats[0], stats[1], verbose=False)["frechet_inception_distance"])


def kid(features_1: np.ndarray, features_2: np.ndarray, seed: int = 2020) -> dict[str, float]:
    """Kernel Inception Distance (unbiased MMD with a cubic polynomial kernel), mean and std over subsets of
    min(1000, smaller set size) images; unbiased, so usable on small sets, unlike FID."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    subset = min(KID_SUBSET_SIZE, len(features_1), len(features_2))
    if subset < 2:
        raise UserError("KID needs at least 2 images in each set")
    out = kid_features_to_metric(torch.from_numpy(features_1), torch.from_numpy(features_2), kid_subsets=KID_SUBSETS,
                                 kid_subset_size=subset, verbose=False, rng_seed=seed)
    return {"kid_mean": out["kernel_inception_distance_mean"], "kid_std": out["kernel_inception_distance_std"],
            "kid_subset_size": subset}
