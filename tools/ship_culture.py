"""Ship a trained run as one of the package's culture models (a maintainer's tool).

`python tools/ship_culture.py KEY RUN --card CARD.md` copies RUN's photo -> culture generator into
cyclegan_culture/pretrained/cultures/KEY/ (fp16 where faithful, with config.json, culture.json and the model card),
adds `example.jpg` there (the first example photo beside its rendering, for the card), and writes the
reference output the tests compare against (tests/data/shipped/KEY.png). Only runs trained on the embedded
datasets may be shipped: their licences allow redistributing derived weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cyclegan_culture.inference import Stylizer  # noqa: E402
from cyclegan_culture.pretrained import catalog  # noqa: E402


def probe() -> Image.Image:
    """The image tests/test_pretrained.py translates (keep the two in step)."""
    return Image.open(catalog.examples()[0]).convert("RGB").resize((96, 64), Image.BILINEAR)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("key")
    p.add_argument("run")
    p.add_argument("--card", required=True, help="the model card (Markdown)")
    p.add_argument("--epoch", default="latest")
    args = p.parse_args()
    model = catalog.install(args.key, Path(args.run), args.epoch, Path(args.card).read_text(encoding="utf-8"),
                            base=catalog.SHIPPED_DIR)
    stylizer = Stylizer.from_pretrained(args.key, device="cpu")
    photo = Image.open(catalog.examples()[0]).convert("RGB")
    rendering = stylizer.stylize(photo)
    sheet = Image.new("RGB", (photo.width * 2, photo.height), "white")
    sheet.paste(photo, (0, 0))
    sheet.paste(rendering, (photo.width, 0))
    sheet.thumbnail((640, 640))
    sheet.save(model.folder / "example.jpg", quality=85)
    reference = ROOT / "tests" / "data" / "shipped" / f"{args.key}.png"
    reference.parent.mkdir(parents=True, exist_ok=True)
    stylizer.stylize(probe()).save(reference)
    size = sum(f.stat().st_size for f in model.folder.iterdir())
    print(f"shipped {args.key}: {model.folder} ({size / 1e6:.1f} MB), reference {reference}")


if __name__ == "__main__":
    main()
