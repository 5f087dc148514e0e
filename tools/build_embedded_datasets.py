"""Build datasets/photo2{guohua,ukiyoe,impressionism} from the clean-licence embedded subset.

A maintainer's tool, run once: `python tools/build_embedded_datasets.py PATH/TO/data/embedded`. Users never need
it; the datasets it writes are committed. The 100 photos are stored once, in datasets/photo/{train,test}, and each
photo2<culture>/trainA and testA is a relative symbolic link to them. Splits are about 85/15, fixed by seed 0.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import sys
from pathlib import Path

CULTURES = {
    "guohua": {
        "name": "Guohua (Chinese ink painting)",
        "native_name": "国画",
        "region": "China",
        "period": "mostly Ming and Qing dynasties (14th-19th century)",
        "description": (
            "Landscape painting (shanshui, 山水) in ink and light colour on silk or paper. Mountains, water and "
            "mist are built from brush strokes and washes rather than outlines and shading; large areas are left "
            "unpainted (liubai, 留白) to stand for sky, water and cloud. The palette is restrained: ink greys, "
            "ochres and mineral blue-greens on an aged, warm ground."),
    },
    "ukiyoe": {
        "name": "Ukiyo-e (Japanese woodblock prints)",
        "native_name": "浮世絵",
        "region": "Japan",
        "period": "Edo and Meiji periods (17th-19th century)",
        "description": (
            "'Pictures of the floating world': colour woodblock prints of landscapes, actors and daily life. "
            "Bold black key-block outlines enclose flat areas of colour, often Prussian blue and vermilion, with "
            "gradated skies (bokashi), high horizons and strong diagonal compositions."),
        # --preset cpu_long's losses that keep the photo, measured for this culture (docs/quality.md section 9)
        "presets": {"cpu_long": {"lambda_identity": 0, "lambda_edge": 0, "lambda_tone": 0.5}},
    },
    "impressionism": {
        "name": "Impressionism (Claude Monet)",
        "native_name": "Impressionnisme",
        "region": "France",
        "period": "1860s-1920s",
        "description": (
            "Oil paintings made outdoors to catch light and atmosphere: short, broken brush strokes of bright, "
            "unmixed colour placed side by side, soft edges, coloured shadows and an overall texture of visible "
            "paint instead of fine detail."),
        "presets": {"cpu_long": {"lambda_identity": 0, "lambda_edge": 0, "lambda_tone": 0.3}},
    },
}
SPLIT_SEED = 0
TEST_SHARE = 0.15


def split(files: list[str]) -> tuple[list[str], list[str]]:
    files = sorted(files)
    random.Random(SPLIT_SEED).shuffle(files)
    n_test = round(len(files) * TEST_SHARE)
    return sorted(files[n_test:]), sorted(files[:n_test])


def copy_all(src: Path, names: list[str], dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(src / name, dst / name)


def main(embedded: Path, out: Path) -> None:
    if out.exists():
        for child in out.iterdir():
            if child.name.startswith("photo"):
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    photos_train, photos_test = split(os.listdir(embedded / "photo"))
    copy_all(embedded / "photo", photos_train, out / "photo" / "train")
    copy_all(embedded / "photo", photos_test, out / "photo" / "test")
    for culture, info in CULTURES.items():
        ds = out / f"photo2{culture}"
        ds.mkdir(parents=True)
        train, test = split(os.listdir(embedded / culture))
        copy_all(embedded / culture, train, ds / "trainB")
        copy_all(embedded / culture, test, ds / "testB")
        os.symlink("../photo/train", ds / "trainA")
        os.symlink("../photo/test", ds / "testA")
        record = {**info, "domain_A": "photo", "domain_B": culture}
        (ds / "culture.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"{ds}: trainA {len(photos_train)}, testA {len(photos_test)}, trainB {len(train)}, testB {len(test)}")
    with open(embedded / "PROVENANCE.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    shipped = {"photo", *CULTURES}
    with open(out / "PROVENANCE.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(r for r in rows if r["domain"] in shipped)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tools/build_embedded_datasets.py PATH/TO/data/embedded")
    main(Path(sys.argv[1]), Path(__file__).resolve().parent.parent / "datasets")
