"""How cultures' visual languages differ, in their real art and in what the models generate.

``analyze`` computes fingerprints for the photos and each culture's paintings, summarises them, measures how far
apart the cultures are, trains a cross-validated classifier on the fingerprints, and, for each model, scores its
translations of the test photos: style (does the classifier see the target culture?), movement in feature space,
content preservation and cycle reconstruction.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from cyclegan_culture.data.cultures import load_culture
from cyclegan_culture.data.images import BadImage, list_images, load_rgb, readable_images
from cyclegan_culture.errors import UserError
from cyclegan_culture.eval import fingerprints as fp
from cyclegan_culture.eval import metrics
from cyclegan_culture.eval.fid import InceptionFeatures, fid, kid
from cyclegan_culture.eval.judge import Judge
from cyclegan_culture.inference import Stylizer
from cyclegan_culture.progress import progress, say
from cyclegan_culture.runs import folder

PHOTO = "photo"


@dataclass
class Group:
    key: str                 # "photo" or the culture's domain name, e.g. "guohua"
    title: str               # what a reader sees, e.g. "Guohua (Chinese ink painting) 国画"
    files: list[Path] = field(default_factory=list)


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    files, skipped = list_images(folder)
    for path, reason in skipped:
        say(f"warning: skipped {path}: {reason}")
    return files


def gather_groups(datasets: list[Path]) -> list[Group]:
    """Photos (trainA and testA of every dataset, each file once) and one group per culture (trainB and testB)."""
    photos = Group(PHOTO, "Photos")
    seen: set[Path] = set()
    cultures: dict[str, Group] = {}
    for root in datasets:
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"--datasets {root}: folder not found")
        for split in ("trainA", "testA"):
            for f in _images(root / split):
                if f.resolve() not in seen:
                    seen.add(f.resolve())
                    photos.files.append(f)
        culture = load_culture(root)
        key = culture.domain_B or root.name
        group = cultures.setdefault(key, Group(key, culture.title()))
        for split in ("trainB", "testB"):
            group.files += _images(root / split)
        if not group.files:
            raise UserError(f"{root}: no paintings in trainB or testB")
    groups = ([photos] if photos.files else []) + list(cultures.values())
    if len(groups) < 2:
        raise UserError("--datasets: need photos and at least one culture (folders with trainA/testA and trainB/testB)")
    return groups


def fingerprint_files(files: list[Path], desc: str) -> tuple[list[dict], list[tuple[str, str]]]:
    rows, skipped = [], []
    for path in progress(files, desc=desc, unit="img", leave=False):
        try:
            rows.append({"file": str(path), **fp.fingerprint(fp.as_array(load_rgb(path)))})
        except BadImage as exc:
            skipped.append((str(path), str(exc)))
            say(f"warning: skipped {path}: {exc}")
    return rows, skipped


# --- statistics --------------------------------------------------------------------------------------------------
def summarize(values: np.ndarray) -> dict[str, float]:
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {"mean": float(values.mean()), "std": float(values.std()), "q1": float(q1), "median": float(median),
            "q3": float(q3)}


class Standardizer:
    def __init__(self, X: np.ndarray):
        self.mean = X.mean(0)
        self.std = X.std(0) + 1e-9

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.std


class SoftmaxClassifier:
    """Multinomial logistic regression on standardised fingerprints, with L2 regularisation. Small, transparent,
    and enough for a few dozen interpretable features."""

    def __init__(self, l2: float = 1e-2, steps: int = 800, lr: float = 0.5):
        self.l2, self.steps, self.lr = l2, steps, lr

    def fit(self, X: np.ndarray, y: np.ndarray, n_classes: int) -> "SoftmaxClassifier":
        self.scale = Standardizer(X)
        Z = self.scale(X)
        n, d = Z.shape
        self.W = np.zeros((d, n_classes))
        self.b = np.zeros(n_classes)
        Y = np.eye(n_classes)[y]
        counts = np.bincount(y, minlength=n_classes).astype(float)
        weights = (n / (n_classes * np.maximum(counts, 1)))[y]  # balance classes of very different sizes
        for _ in range(self.steps):
            P = self._softmax(Z @ self.W + self.b)
            G = (P - Y) * weights[:, None] / n
            self.W -= self.lr * (Z.T @ G + self.l2 * self.W)
            self.b -= self.lr * G.sum(0)
        return self

    @staticmethod
    def _softmax(logits: np.ndarray) -> np.ndarray:
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._softmax(self.scale(X) @ self.W + self.b)


def cross_validate(X: np.ndarray, y: np.ndarray, n_classes: int, folds: int = 5, seed: int = 0) -> dict:
    """Stratified k-fold accuracy and the pooled confusion matrix (rows: true class, columns: predicted)."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=int)
    for c in range(n_classes):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        fold_of[idx] = np.arange(len(idx)) % folds
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    for k in range(folds):
        test = fold_of == k
        if not test.any() or test.all():
            continue
        model = SoftmaxClassifier().fit(X[~test], y[~test], n_classes)
        pred = model.predict_proba(X[test]).argmax(1)
        for t, p in zip(y[test], pred):
            confusion[t, p] += 1
    accuracy = float(np.trace(confusion) / max(confusion.sum(), 1))
    return {"accuracy": accuracy, "folds": folds, "confusion": confusion.tolist(),
            "chance": float(np.bincount(y).max() / len(y))}


def separating_features(Z: np.ndarray, y: np.ndarray, keys: list[str], top: int = 3) -> dict[str, list]:
    """For each pair of groups, the features with the largest standardised mean difference (Cohen's d)."""
    out = {}
    for a, b in combinations(range(len(keys)), 2):
        za, zb = Z[y == a], Z[y == b]
        pooled = np.sqrt((za.var(0) + zb.var(0)) / 2) + 1e-9
        d = (za.mean(0) - zb.mean(0)) / pooled
        order = np.argsort(-np.abs(d))[:top]
        out[f"{keys[a]} vs {keys[b]}"] = [{"feature": fp.FEATURES[i], "cohens_d": round(float(d[i]), 3)} for i in order]
    return out


# --- models --------------------------------------------------------------------------------------------------------
def _translate_photos(files: list[Path], forward: Stylizer, backward: Stylizer | None, keep_images: bool, desc: str
                      ) -> tuple[list[dict], list[dict], dict[str, list[Image.Image]]]:
    """Each photo translated and back: the translations' fingerprint rows, the content and cycle metrics per
    pair, and (with ``keep_images``) the photos and translations themselves."""
    rows, pair_metrics = [], []
    kept: dict[str, list[Image.Image]] = {"photos": [], "translations": []}
    for path in progress(files, desc=desc, unit="img", leave=False):
        try:
            photo = fp.as_array(load_rgb(path))
        except BadImage:
            continue
        photo_img = Image.fromarray((photo * 255).round().astype(np.uint8))
        translated = forward.stylize(photo_img)
        t_arr = np.asarray(translated, dtype=np.float64) / 255.0
        rows.append({"file": str(path), **fp.fingerprint(t_arr)})
        if keep_images:
            kept["photos"].append(photo_img)
            kept["translations"].append(translated)
        content = metrics.compute(["ssim_grey", "ssim_edges"], photo, t_arr)
        if backward is None:  # one-way models (cut, fastcut): no reconstruction
            pair_metrics.append({**content, "cycle_psnr": float("nan"), "cycle_ssim": float("nan")})
            continue
        r_arr = np.asarray(backward.stylize(translated), dtype=np.float64) / 255.0
        cycle = metrics.compute(["psnr", "ssim_rgb"], photo, r_arr)
        pair_metrics.append({**content, "cycle_psnr": cycle["psnr"], "cycle_ssim": cycle["ssim_rgb"]})
    return rows, pair_metrics, kept


def evaluate_model(run_dir: Path, groups: list[Group], classifier: SoftmaxClassifier, scale: Standardizer,
                   group_means_z: np.ndarray, epoch: str = "latest", max_images: int | None = None,
                   photos_dir: Path | None = None, keep_images: bool = False) -> dict:
    """Translate the model's test photos (at the analysis size) and score the translations. With
    ``keep_images``, the result's "kept_images" holds the photos and their translations (for FID/KID)."""
    run_dir = Path(run_dir)
    saved = folder.load_run_options(run_dir) or {}
    culture = load_culture(run_dir)
    keys = [g.key for g in groups]
    target = culture.domain_B or culture.name
    if target not in keys:
        raise UserError(f"--models {run_dir}: its culture {target!r} is not among the analysed datasets; add its "
                        "dataset to --datasets")
    photos_dir = photos_dir or (Path(saved["dataroot"]) / "testA" if saved.get("dataroot") else None)
    if photos_dir is None or not photos_dir.is_dir():
        raise UserError(f"--models {run_dir}: its test photos ({photos_dir}) are not there; pass the dataset")
    forward = Stylizer.from_pretrained(run_dir, epoch=epoch, direction="AtoB", device="cpu", tile=0)
    backward = Stylizer.from_pretrained(run_dir, epoch=epoch, direction="BtoA", device="cpu", tile=0) \
        if "BtoA" in folder.generator_names(folder.read_model_config(run_dir)) else None
    files = list_images(photos_dir)[0][:max_images]
    rows, pair_metrics, kept = _translate_photos(files, forward, backward, keep_images, f"model {run_dir.name}")
    if not rows:
        raise UserError(f"{photos_dir}: no photos could be read for {run_dir}")
    X = np.array([[r[f] for f in fp.FEATURES] for r in rows])
    proba = classifier.predict_proba(X)
    t_index = keys.index(target)
    p_index = keys.index(PHOTO) if PHOTO in keys else None
    Z = scale(X)
    movement = None
    if p_index is not None:
        d = group_means_z[t_index] - group_means_z[p_index]
        movement = float(((Z - group_means_z[p_index]) @ d / (d @ d + 1e-12)).mean())
    finite = lambda vals: [v for v in vals if np.isfinite(v)]  # noqa: E731 - identical images give inf PSNR
    return {
        "model": run_dir.name, "culture": culture.title(), "target": target, "images": len(rows),
        "style_score": float((proba.argmax(1) == t_index).mean()),
        "style_probability": float(proba[:, t_index].mean()),
        "predicted_as": {keys[i]: int(c) for i, c in enumerate(np.bincount(proba.argmax(1), minlength=len(keys)))},
        "movement_toward_culture": movement,
        "content_ssim_grey": float(np.mean([m["ssim_grey"] for m in pair_metrics])),
        "content_ssim_edges": float(np.mean([m["ssim_edges"] for m in pair_metrics])),
        "cycle_psnr": float(np.mean(finite([m["cycle_psnr"] for m in pair_metrics]) or [float("inf")])),
        "cycle_ssim": float(np.mean([m["cycle_ssim"] for m in pair_metrics])),
        "translation_means": {f: float(X[:, i].mean()) for i, f in enumerate(fp.FEATURES)},
        "rows": rows,
        **({"kept_images": kept} if keep_images else {}),
    }


# --- the whole analysis ------------------------------------------------------------------------------------------
def _with_models_datasets(datasets: list[Path], models: list[Path]) -> list[Path]:
    """The datasets, plus each model's own dataset (from its opt.json) where it is not among them."""
    for run_dir in models:
        saved = folder.load_run_options(Path(run_dir)) or {}
        root = Path(saved.get("dataroot", ""))
        if saved.get("dataroot") and root.is_dir() and root.resolve() not in {Path(d).resolve() for d in datasets}:
            datasets.append(root)
    return datasets


def _fingerprint_groups(groups: list[Group], max_images: int | None
                        ) -> tuple[list[dict], list[tuple[str, str]], np.ndarray, np.ndarray]:
    """Per image: its fingerprint row (with its group); the files skipped; features X and group indices y."""
    keys = [g.key for g in groups]
    all_rows: list[dict] = []
    skipped: list[tuple[str, str]] = []
    for group in groups:
        rows, bad = fingerprint_files(group.files[:max_images], desc=group.key)
        skipped += bad
        for r in rows:
            r["group"] = group.key
        all_rows += rows
    X = np.array([[r[f] for f in fp.FEATURES] for r in all_rows])
    y = np.array([keys.index(r["group"]) for r in all_rows])
    for gi, group in enumerate(groups):
        if not (y == gi).any():
            raise UserError(f"{group.title}: none of its images could be read")
    return all_rows, skipped, X, y


def judge_scores(judge: Judge, translations: list[Image.Image], target: str) -> dict:
    """The learned judge's verdict beside the feature classifier's: share taken for the target, mean probability."""
    if target not in judge.classes:
        return {"judge_score": None, "judge_note": f"the judge does not know {target!r}"}
    proba = judge.probabilities(translations)
    t = judge.classes.index(target)
    return {"judge_score": float((proba.argmax(1) == t).mean()), "judge_probability": float(proba[:, t].mean())}


def analyze(datasets: list[Path], models: list[Path], out: Path, max_images: int | None = None,
            epoch: str = "latest", inception_weights: Path | None = None,
            write_report: Callable[..., None] | None = None, judge: Judge | None = None) -> dict:
    """Fingerprint the datasets' groups and the models' translations; write features.csv, summary.json and
    metrics.jsonl into ``out``, and the page through ``write_report(out, summary, groups, X, y)``
    (viz.report.write_report, passed in by the caller so that eval does not depend on viz)."""
    inception = InceptionFeatures(inception_weights) if inception_weights else None  # fail before the long work
    groups = gather_groups(_with_models_datasets(list(datasets), models))
    keys = [g.key for g in groups]
    all_rows, skipped, X, y = _fingerprint_groups(groups, max_images)
    scale = Standardizer(X)
    Z = scale(X)
    means_z = np.array([Z[y == gi].mean(0) for gi in range(len(groups))])
    distance = np.sqrt(((means_z[:, None, :] - means_z[None, :, :]) ** 2).sum(-1))
    cv = cross_validate(X, y, len(groups))
    classifier = SoftmaxClassifier().fit(X, y, len(groups))
    summary = {
        "groups": [{"key": g.key, "title": g.title, "images": int((y == i).sum())} for i, g in enumerate(groups)],
        "features": fp.FEATURES,
        "feature_summaries": {g.key: {f: summarize(X[y == i, j]) for j, f in enumerate(fp.FEATURES)}
                              for i, g in enumerate(groups)},
        "distance_matrix": {"keys": keys, "values": distance.round(4).tolist(),
                            "note": "Euclidean distance between group means of standardised features"},
        "classifier": cv,
        "separating_features": separating_features(Z, y, keys),
        "skipped": len(skipped),
    }
    if inception:
        summary["fid_kid"], inception_by_group = group_inception_distances(inception, Path(inception_weights),
                                                                           groups, max_images)
    else:
        summary["fid_kid"] = {"status": "skipped", "reason": "no --inception_weights file given; nothing is "
                                                             "downloaded"}
    model_results = []
    for run_dir in models:
        result = evaluate_model(Path(run_dir), groups, classifier, scale, means_z, epoch, max_images,
                                keep_images=inception is not None or judge is not None)
        if judge is not None:
            result.update(judge_scores(judge, result["kept_images"]["translations"], result["target"]))
            if inception is None:
                result.pop("kept_images")
        if inception:
            result["fid_kid"] = model_inception_distances(inception, result.pop("kept_images"),
                                                          inception_by_group[result["target"]], result["model"])
        for r in result.pop("rows"):
            all_rows.append({**r, "group": f"{result['model']} (translations)"})
        result["feature_shifts"] = {
            f: {"photos": summary["feature_summaries"].get(PHOTO, {}).get(f, {}).get("mean"),
                "translations": result["translation_means"][f],
                "culture": summary["feature_summaries"][result["target"]][f]["mean"]} for f in fp.FEATURES}
        metrics.append_jsonl(Path(run_dir) / "metrics.jsonl", {"kind": "analyze", **{k: v for k, v in result.items()
                                                                                  if k != "translation_means"}})
        model_results.append(result)
    summary["models"] = model_results
    out.mkdir(parents=True, exist_ok=True)
    write_features_csv(out / "features.csv", all_rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False, default=float),
                                      encoding="utf-8")
    metrics.append_jsonl(out / "metrics.jsonl", {"kind": "analyze", "accuracy": cv["accuracy"],
                                                 "groups": keys, "models": [m["model"] for m in model_results]})
    if write_report is not None:
        write_report(out, summary, groups, X, y)
    return summary


def group_inception_distances(inception: InceptionFeatures, weights: Path, groups: list[Group],
                              max_images: int | None) -> tuple[dict, dict[str, np.ndarray]]:
    """FID and KID between every pair of groups' real images; also returns each group's features."""
    features = {g.key: inception(list(readable_images(g.files[:max_images])), desc=f"Inception {g.key}") for g in groups}
    keys = [g.key for g in groups]
    n = len(keys)
    fid_matrix, kid_matrix = np.zeros((n, n)), np.zeros((n, n))
    for a, b in combinations(range(n), 2):
        fid_matrix[a, b] = fid_matrix[b, a] = fid(features[keys[a]], features[keys[b]])
        kid_matrix[a, b] = kid_matrix[b, a] = kid(features[keys[a]], features[keys[b]])["kid_mean"]
    return {"status": "computed", "weights": weights.name, "keys": keys, "fid": fid_matrix.round(3).tolist(),
            "kid": kid_matrix.round(5).tolist(),
            "note": "FID is biased upward for small sets: compare values only between sets of similar size; KID "
                    "is unbiased (mean over subsets of min(1000, smaller set) images)"}, features


def model_inception_distances(inception: InceptionFeatures, images: dict[str, list[Image.Image]],
                              culture_features: np.ndarray, model: str) -> dict:
    """A model's translations and the untranslated test photos, each against its culture's real images."""
    scored = {}
    for name in ("translations", "photos"):
        f = inception(images[name], desc=f"Inception {model} {name}")
        scored[name] = {"fid": fid(f, culture_features), **kid(f, culture_features)}
    return {"translations_vs_culture": scored["translations"], "photos_vs_culture": scored["photos"],
            "images": len(images["translations"])}


def write_features_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["group", "file", *fp.FEATURES])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in ["group", "file", *fp.FEATURES]})
