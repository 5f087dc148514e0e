"""Cheap evaluation during training (--eval_freq): content kept, style reached, cycle closed, on a fixed subset."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cyclegan_culture.data.images import pil_to_tensor, readable_images
from cyclegan_culture.eval import fingerprints as fp
from cyclegan_culture.eval import metrics
from cyclegan_culture.eval.analysis import SoftmaxClassifier
from cyclegan_culture.inference import translate

# Metrics it returns, higher is better for each: content_ssim, style_score, cycle_psnr (--early_stop_metric)
EVAL_SIZE = 128  # longer side of the validation images


def _arrays(paths: list[Path], limit: int) -> list[np.ndarray]:
    return [fp.as_array(img, EVAL_SIZE) for img in itertools.islice(readable_images(paths), limit)]


class TrainingEvaluator:
    """Built once from the training folders: a fixed validation subset of photos, and a photo-vs-culture
    classifier on fingerprints of real images that judges whether translations look like the culture."""

    def __init__(self, A_paths: list[Path], B_paths: list[Path], n_val: int = 8, n_fit: int = 30):
        self.val = _arrays(sorted(A_paths)[:n_val], n_val)
        real_A = _arrays(sorted(A_paths)[n_val:], n_fit) or self.val
        real_B = _arrays(sorted(B_paths), n_fit)
        X = np.array([list(fp.fingerprint(a).values()) for a in real_A + real_B])
        y = np.array([0] * len(real_A) + [1] * len(real_B))
        self.classifier = SoftmaxClassifier().fit(X, y, 2)

    @torch.inference_mode()
    def __call__(self, G_A: torch.nn.Module, G_B: torch.nn.Module, device: torch.device) -> dict[str, float]:

        was_training = G_A.training, G_B.training
        G_A.eval(), G_B.eval()
        ssims, psnrs, features = [], [], []
        try:
            for photo in self.val:
                x = pil_to_tensor(Image.fromarray((photo * 255).round().astype(np.uint8))).unsqueeze(0).to(device)
                fake = translate(G_A, x)
                rec = translate(G_B, fake)
                f_arr = ((fake[0].permute(1, 2, 0).cpu().numpy() + 1) / 2).clip(0, 1)
                r_arr = ((rec[0].permute(1, 2, 0).cpu().numpy() + 1) / 2).clip(0, 1)
                ssims.append(metrics.REGISTRY["ssim_grey"](photo, f_arr))
                psnrs.append(min(metrics.REGISTRY["psnr"](photo, r_arr), 100.0))
                features.append(list(fp.fingerprint(f_arr).values()))
        finally:
            G_A.train(was_training[0])
            G_B.train(was_training[1])
        style = float((self.classifier.predict_proba(np.array(features)).argmax(1) == 1).mean())
        return {"content_ssim": float(np.mean(ssims)), "style_score": style, "cycle_psnr": float(np.mean(psnrs))}
