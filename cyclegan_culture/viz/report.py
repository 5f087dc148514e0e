"""The analysis report: an HTML page (dominate) with plots (matplotlib, drawn off-screen) and tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from dominate import tags

from cyclegan_culture.data.images import BadImage, load_rgb
from cyclegan_culture.eval import fingerprints as fp
from cyclegan_culture.files import atomic_save_image
from cyclegan_culture.viz.html import write_page

PALETTE_SAMPLE = 24      # images per group pooled for its palette
EXAMPLES_PER_GROUP = 2


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return f"plots/{path.name}"


def plot_palettes(groups, out: Path) -> str:
    plt = _plt()
    fig, axes = plt.subplots(len(groups), 1, figsize=(7, 0.7 * len(groups) + 0.4), squeeze=False)
    for ax, group in zip(axes[:, 0], groups):
        pixels = []
        for path in group.files[:PALETTE_SAMPLE]:
            try:
                pixels.append(fp.as_array(load_rgb(path), 64).reshape(-1, 3))
            except BadImage:
                continue
        palette = fp.dominant_palette(np.concatenate(pixels)[None], k=6) if pixels else []
        left = 0.0
        for colour, share in palette:
            ax.barh(0, share, left=left, color=np.array(colour) / 255.0, edgecolor="white")
            left += share
        ax.set_xlim(0, 1)
        ax.set_yticks([])
        ax.set_xticks([])
        ax.set_ylabel(group.key, rotation=0, ha="right", va="center", fontsize=9)  # ASCII: plot fonts lack CJK
    fig.suptitle("Dominant palettes (k-means, share of pixels)", fontsize=10)
    return _save(fig, out / "plots" / "palettes.png")


def plot_distributions(groups, X: np.ndarray, y: np.ndarray, out: Path) -> str:
    plt = _plt()
    n = len(fp.FEATURES)
    cols = 4
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for j, feature in enumerate(fp.FEATURES):
        ax = axes[j // cols, j % cols]
        ax.boxplot([X[y == i, j] for i in range(len(groups))], showfliers=False)
        ax.set_xticks(range(1, len(groups) + 1), [g.key for g in groups], fontsize=7, rotation=20)
        ax.set_title(feature, fontsize=9)
    for j in range(n, rows * cols):
        axes[j // cols, j % cols].axis("off")
    fig.tight_layout()
    return _save(fig, out / "plots" / "distributions.png")


def plot_matrix(values: np.ndarray, labels: list[str], title: str, path: Path, fmt: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 2, 1.0 * len(labels) + 1.5))
    im = ax.imshow(values, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_fingerprint_bars(groups, X: np.ndarray, y: np.ndarray, out: Path) -> str:
    plt = _plt()
    Z = (X - X.mean(0)) / (X.std(0) + 1e-9)
    means = np.array([Z[y == i].mean(0) for i in range(len(groups))])
    fig, ax = plt.subplots(figsize=(12, 3.8))
    width = 0.8 / len(groups)
    for i, group in enumerate(groups):
        ax.bar(np.arange(len(fp.FEATURES)) + i * width, means[i], width, label=group.key)
    ax.set_xticks(np.arange(len(fp.FEATURES)) + 0.4 - width / 2, fp.FEATURES, rotation=45, ha="right", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylabel("standardised mean")
    ax.legend(fontsize=8)
    ax.set_title("Culture fingerprints (feature means in standard deviations from the overall mean)", fontsize=10)
    return _save(fig, out / "plots" / "fingerprints.png")


def save_examples(groups, out: Path) -> list[tuple[str, str, str, float]]:
    """(group title, image path, mask overlay path, blank share) for a few images per group."""
    examples = []
    for group in groups:
        for path in group.files[:EXAMPLES_PER_GROUP]:
            try:
                image = load_rgb(path)
            except BadImage:
                continue
            arr = fp.as_array(image)
            mask = fp.blank_space_mask(arr)
            overlay = arr.copy()
            overlay[mask] = 0.45 * overlay[mask] + 0.55 * np.array([1.0, 0.2, 0.2])
            from PIL import Image
            stem = f"{group.key}_{path.stem}"
            atomic_save_image(Image.fromarray((arr * 255).astype(np.uint8)), out / "examples" / f"{stem}.png")
            atomic_save_image(Image.fromarray((overlay * 255).astype(np.uint8)), out / "examples" / f"{stem}_blank.png")
            examples.append((group.title, f"examples/{stem}.png", f"examples/{stem}_blank.png", float(mask.mean())))
    return examples


def _table(header: list[str], rows: list[list[Any]]) -> tags.html_tag:
    table = tags.table(cls="options")
    table.add(tags.tr([tags.th(h) for h in header]))
    for row in rows:
        table.add(tags.tr([tags.td(_fmt(v)) for v in row]))
    return table


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def fid_kid_section(summary: dict) -> list[tags.html_tag]:
    """FID/KID tables when computed, else one line saying why they were skipped."""
    fk = summary["fid_kid"]
    if fk["status"] != "computed":
        return [tags.p(f"FID/KID: {fk['status']} ({fk['reason']}).")]
    titles = {g["key"]: g["title"] for g in summary["groups"]}
    section: list[tags.html_tag] = [tags.h2("Inception distances (FID / KID×1000)"),
                                    tags.p(f"Weights: {fk['weights']}. {fk['note']}.")]
    section.append(_table(["", *(titles[k] for k in fk["keys"])],
                          [[titles[a]] + [f"{fk['fid'][i][j]:.1f} / {fk['kid'][i][j] * 1000:.1f}"
                                          for j in range(len(fk["keys"]))] for i, a in enumerate(fk["keys"])]))
    models = [m for m in summary["models"] if "fid_kid" in m]
    if models:
        section.append(_table(["model", "images", "FID translations → culture", "FID photos → culture",
                               "KID×1000 translations", "KID×1000 photos"],
                              [[m["model"], m["fid_kid"]["images"],
                                m["fid_kid"]["translations_vs_culture"]["fid"], m["fid_kid"]["photos_vs_culture"]["fid"],
                                m["fid_kid"]["translations_vs_culture"]["kid_mean"] * 1000,
                                m["fid_kid"]["photos_vs_culture"]["kid_mean"] * 1000] for m in models]))
    return section


def write_report(out: Path, summary: dict, groups, X: np.ndarray, y: np.ndarray) -> Path:
    keys = summary["distance_matrix"]["keys"]
    plots = {
        "palettes": plot_palettes(groups, out),
        "fingerprints": plot_fingerprint_bars(groups, X, y, out),
        "distributions": plot_distributions(groups, X, y, out),
        "distance": plot_matrix(np.array(summary["distance_matrix"]["values"]), keys,
                                "Distance between cultures (standardised features)", out / "plots" / "distance.png",
                                ".2f"),
        "confusion": plot_matrix(np.array(summary["classifier"]["confusion"]), keys,
                                 f"Cross-validated classifier: accuracy {summary['classifier']['accuracy']:.2f}",
                                 out / "plots" / "confusion.png", "d"),
    }
    examples = save_examples(groups, out)
    body: list[tags.html_tag] = []
    body.append(tags.p(", ".join(f"{g['title']}: {g['images']} images" for g in summary["groups"])))
    for name, title in (("palettes", "Palettes"), ("fingerprints", "Fingerprints"),
                        ("distance", "How far apart the cultures are"), ("confusion", "Telling them apart"),
                        ("distributions", "Feature distributions")):
        body.append(tags.h2(title))
        body.append(tags.img(src=plots[name], alt=title, cls="plot", style="max-width:100%"))
    cv = summary["classifier"]
    body.append(tags.p(f"{cv['folds']}-fold cross-validated accuracy {cv['accuracy']:.3f} "
                       f"(always guessing the largest group: {cv['chance']:.3f})."))
    body.append(tags.h2("What separates each pair (Cohen's d)"))
    body.append(_table(["pair", "features"], [[pair, ", ".join(f"{x['feature']} ({x['cohens_d']:+.2f})" for x in feats)]
                                             for pair, feats in summary["separating_features"].items()]))
    body.append(tags.h2("Per-feature summaries (mean ± std)"))
    body.append(_table(["feature"] + [g["title"] for g in summary["groups"]],
                       [[f] + [f"{summary['feature_summaries'][g['key']][f]['mean']:.3g} ± "
                               f"{summary['feature_summaries'][g['key']][f]['std']:.2g}" for g in summary["groups"]]
                        for f in summary["features"]]))
    if summary["models"]:
        body.append(tags.h2("Models"))
        judged = any("judge_score" in m for m in summary["models"])
        body.append(_table(["model", "culture", "images", "style score", "style probability"]
                           + (["judge score"] if judged else []) + ["movement (0 photo, "
                            "1 culture)", "content SSIM grey", "content SSIM edges", "cycle PSNR dB", "cycle SSIM"],
                           [[m["model"], m["culture"], m["images"], m["style_score"], m["style_probability"]]
                            + ([m.get("judge_score")] if judged else [])
                            + [m["movement_toward_culture"], m["content_ssim_grey"], m["content_ssim_edges"],
                             m["cycle_psnr"], m["cycle_ssim"]] for m in summary["models"]]))
        for m in summary["models"]:
            body.append(tags.h3(f"{m['model']}: feature shifts (photos → translations → real {m['target']})"))
            body.append(_table(["feature", "photos", "translations", "culture"],
                               [[f, s["photos"], s["translations"], s["culture"]] for f, s in m["feature_shifts"].items()]))
    body += fid_kid_section(summary)
    body.append(tags.h2("Blank space (留白), shown in red"))
    grid = tags.table(cls="grid")
    for title, image, overlay, share in examples:
        grid.add(tags.tr(tags.td(tags.img(src=image, alt=title), tags.p(title, cls="caption")),
                         tags.td(tags.img(src=overlay, alt="blank space"),
                                 tags.p(f"blank space {share:.0%}", cls="caption"))))
    body.append(grid)
    return write_page(out / "index.html", "How the cultures' visual languages differ", [], intro=body)
