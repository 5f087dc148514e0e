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
from cyclegan_culture.errors import UserError
from cyclegan_culture.eval.analysis import SoftmaxClassifier
from cyclegan_culture.eval.judge import Judge
from cyclegan_culture.inference import translate

# Metrics it returns, higher is better for each: content_ssim, style_score, cycle_psnr, and with a judge
# judge_score and judge_probability (--early_stop_metric)
EVAL_SIZE = 128  # longer side of the validation images
# The judge sees translations made at 256 px, nearer the size users translate at than EVAL_SIZE (its own view is
# 64 px whatever it is given); its mean probability moves in finer steps than the share of a few photos
JUDGE_EVAL_SIZE = 256


def _arrays(paths: list[Path], limit: int, size: int = EVAL_SIZE) -> list[np.ndarray]:
    return [fp.as_array(img, size) for img in itertools.islice(readable_images(paths), limit)]


class TrainingEvaluator:
    """Built once from the training folders: a fixed validation subset of photos, and a photo-vs-culture
    classifier on fingerprints of real images that judges whether translations look like the culture."""

    def __init__(self, A_paths: list[Path], B_paths: list[Path], n_val: int = 8, n_fit: int = 30,
                 judge: Judge | None = None, target: str | None = None, judge_photos: list[Path] | None = None,
                 n_judge: int = 30):
        """With a ``judge`` (eval/judge.py) and its class name ``target`` for domain B, it also reports
        judge_score (the share of translations the judge takes for the target) and judge_probability (its mean
        probability of the target), over the first ``n_judge`` of ``judge_photos`` (photos neither the model nor
        the judge trained on, such as the dataset's testA; capped so that a large test folder does not turn each
        evaluation into minutes of translating) at JUDGE_EVAL_SIZE, or the validation photos without them."""
        self.judge, self.target = judge, target
        if judge is not None and target not in judge.classes:
            raise UserError(f"--judge: it knows {', '.join(judge.classes)}, not this dataset's culture {target!r}")
        self.val = _arrays(sorted(A_paths)[:n_val], n_val)
        self.judge_val = _arrays(sorted(judge_photos), n_judge, JUDGE_EVAL_SIZE) \
            if judge is not None and judge_photos else []
        real_A = _arrays(sorted(A_paths)[n_val:], n_fit) or self.val
        real_B = _arrays(sorted(B_paths), n_fit)
        X = np.array([list(fp.fingerprint(a).values()) for a in real_A + real_B])
        y = np.array([0] * len(real_A) + [1] * len(real_B))
        self.classifier = SoftmaxClassifier().fit(X, y, 2)

    @torch.inference_mode()
    def __call__(self, G_A: torch.nn.Module, G_B: torch.nn.Module | None, device: torch.device) -> dict[str, float]:
        """The metrics of G_A's translations; cycle_psnr only with G_B (one-way models have none)."""

        nets = [net for net in (G_A, G_B) if net is not None]
        was_training = [net.training for net in nets]
        for net in nets:
            net.eval()
        ssims, psnrs, features, translations = [], [], [], []
        try:
            for photo in self.val:
                fake = translate(G_A, _tensor(photo, device))
                f_arr = _array(fake)
                ssims.append(metrics.REGISTRY["ssim_grey"](photo, f_arr))
                if G_B is not None:
                    psnrs.append(min(metrics.REGISTRY["psnr"](photo, _array(translate(G_B, fake))), 100.0))
                features.append(list(fp.fingerprint(f_arr).values()))
                translations.append(_image(f_arr))
            if self.judge_val:  # the judge rates the held-out photos' translations instead
                translations = [_image(_array(translate(G_A, _tensor(photo, device)))) for photo in self.judge_val]
        finally:
            for net, mode in zip(nets, was_training):
                net.train(mode)
        style = float((self.classifier.predict_proba(np.array(features)).argmax(1) == 1).mean())
        results = {"content_ssim": float(np.mean(ssims)), "style_score": style}
        if psnrs:
            results["cycle_psnr"] = float(np.mean(psnrs))
        if self.judge is not None:
            probabilities = self.judge.probabilities(translations)
            target = self.judge.classes.index(self.target)
            results["judge_score"] = float((probabilities.argmax(1) == target).mean())
            results["judge_probability"] = float(probabilities[:, target].mean())
        return results


def _tensor(photo: np.ndarray, device: torch.device) -> torch.Tensor:
    """An RGB array in [0, 1] as the (1, 3, H, W) batch in [-1, 1] a generator takes."""
    return pil_to_tensor(_image(photo)).unsqueeze(0).to(device)


def _array(image: torch.Tensor) -> np.ndarray:
    """A generator's (1, 3, H, W) output in [-1, 1] as an RGB array in [0, 1]."""
    return ((image[0].permute(1, 2, 0).float().cpu().numpy() + 1) / 2).clip(0, 1)


def _image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray((arr * 255).round().astype(np.uint8))
