"""Mean fingerprint features of folders of images, as a Markdown table (a maintainer's tool for docs/quality.md).

`python tools/fingerprint_table.py LABEL=FOLDER ... [--features saturation_mean edge_density blank_space]`
shows how a model's translations move the analysis features (eval/fingerprints.py) from the photos toward the
real paintings: put the photos, the translations and the paintings side by side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cyclegan_culture.data.images import list_images, readable_images  # noqa: E402
from cyclegan_culture.eval import fingerprints as fp  # noqa: E402

DEFAULT = ["saturation_mean", "lightness_mean", "edge_density", "blank_space", "stroke_width_mean", "lbp_entropy"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("columns", nargs="+", help="LABEL=FOLDER")
    p.add_argument("--features", nargs="+", default=DEFAULT)
    p.add_argument("--max_images", type=int, default=60)
    args = p.parse_args()
    unknown = [f for f in args.features if f not in fp.FEATURES]
    if unknown:
        sys.exit(f"unknown features {unknown}; known: {', '.join(fp.FEATURES)}")
    print("| feature | " + " | ".join(c.split("=", 1)[0] for c in args.columns) + " |")
    print("|---|" + "---:|" * len(args.columns))
    means = []
    for column in args.columns:
        ours: list[Path] = []
        files = sorted(list_images(column.split("=", 1)[1], ours)[0] + ours)[:args.max_images]
        rows = [fp.fingerprint(fp.as_array(img)) for img in readable_images(files)]
        means.append({f: float(np.mean([r[f] for r in rows])) for f in args.features})
    for f in args.features:
        print(f"| {f} | " + " | ".join(f"{m[f]:.3f}" for m in means) + " |")


if __name__ == "__main__":
    main()
