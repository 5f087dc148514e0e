"""A learned culture judge: a compact CNN, trained from scratch on CPU, that tells photos from each culture's art.

It is built to be hard to fool. It sees every image at one fixed small scale (so resolution and JPEG traces are
no shortcut); every class gets the same augmentations (crops, flips, slight colour jitter, blur, JPEG
re-encoding), and cheap filters that imitate a style (greyscale, a duotone tint, a strong blur) are applied to
every class and labelled as what the image was before the filter, so a filtered photo is still a photo. Photos
are also cross-faded with a painting of another class and still labelled photo: a photo showing through a
ghosted painting has not been translated (without this, a 50% cross-fade with a Monet passed for impressionism
83% of the time; docs/quality.md). Classes are sampled evenly, and the validation split is fixed (a dataset's
test folders, or every fifth image of each source) and reported per class and per source.

A judge can be an ensemble: ``members`` nets trained alike from consecutive seeds, whose class probabilities
are averaged. One net's errors on 20 paintings of a class depend on its seed; the average of three depends on
it less (docs/quality.md, "The judge").
"""

from __future__ import annotations

import io
import json
import math
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageOps

from cyclegan_culture.data.cultures import CULTURE_FILE, load_culture
from cyclegan_culture.data.images import BadImage, list_images, load_rgb
from cyclegan_culture.errors import UserError
from cyclegan_culture.files import atomic_save, atomic_write_text
from cyclegan_culture.progress import progress

WEIGHTS_FILE = "judge.pt"
CONFIG_FILE = "judge.json"
STORE_SIDE = 96  # images are kept in memory with this shorter side; crops of it are resized to the judge's size
PHOTO_CLASS = "photo"  # the class cross-fades are labelled as (a dataset's domain_A is "photo" unless it says)
CROSS_FADE_SHARE = 0.15  # of the photo class's training views
CROSS_FADE_ART = (0.3, 0.65)  # the painting's weight in a cross-fade


class JudgeNet(nn.Module):
    """Five 3x3 convolution stages (four of them halving), global average pooling, one linear layer."""

    def __init__(self, n_classes: int, widths: tuple[int, ...] = (32, 64, 128, 192, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(in_ch, width, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(in_ch, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


# --- which images, which class, which split ----------------------------------------------------------------------
@dataclass
class LabelledImage:
    path: Path
    label: str
    source: str  # the file name's prefix (cprland_0001.jpg -> cprland): where the image came from
    validation: bool


def source_of(path: Path) -> str:
    return re.sub(r"[_-]?\d+$", "", path.stem) or path.stem


def gather(datasets: list[Path], exclude: set[str] | None = None) -> list[LabelledImage]:
    """Images and labels from each folder. A dataset folder (trainA/trainB, culture.json) gives its photo
    domain and its culture, with testA/testB as validation; any other folder is one class named after it, with
    every fifth image of each source as validation. File names in ``exclude`` are left out (held-out photos)."""
    exclude = exclude or set()
    found: dict[tuple[str, str], LabelledImage] = {}

    def add(folder: Path, label: str, validation: bool | None) -> None:
        files = [p for p in list_images(folder)[0] if p.name not in exclude]
        per_source: dict[str, int] = {}
        for path in files:
            src = source_of(path)
            index = per_source[src] = per_source.get(src, -1) + 1
            val = validation if validation is not None else index % 5 == 4
            found.setdefault((label, path.name), LabelledImage(path, label, src, val))

    for folder in datasets:
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"--datasets {folder}: no such folder")
        if (folder / "trainA").is_dir() and (folder / "trainB").is_dir():
            culture = load_culture(folder)
            names = (culture.domain_A or "photo", culture.domain_B or culture.name)
            if not (folder / CULTURE_FILE).is_file():
                raise UserError(f"--datasets {folder}: a dataset folder needs {CULTURE_FILE} naming its domains "
                                "(domain_A, domain_B); or pass its image folders themselves")
            for side, label in zip("AB", names):
                add(folder / f"train{side}", label, False)
                if (folder / f"test{side}").is_dir():
                    add(folder / f"test{side}", label, True)
        else:
            add(folder, folder.name, None)
    items = sorted(found.values(), key=lambda it: (it.label, it.path.name))
    labels = sorted({it.label for it in items})
    if len(labels) < 2:
        raise UserError(f"--datasets: need images of at least two classes, found {labels or 'none'}")
    return items


# --- augmentation: the same for every class ---------------------------------------------------------------------
def _stored(img: Image.Image) -> Image.Image:
    scale = STORE_SIDE / min(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _duotone(img: Image.Image, rng: random.Random) -> Image.Image:
    dark = tuple(rng.randrange(0, 90) for _ in range(3))
    light = tuple(rng.randrange(170, 256) for _ in range(3))
    return ImageOps.colorize(img.convert("L"), dark, light)


def _wash(img: Image.Image, rng: random.Random) -> Image.Image:
    """The image blended toward a flat paper or silk colour (a GAN's cheapest way to look old and painted)."""
    paper = (rng.randrange(170, 250), rng.randrange(150, 235), rng.randrange(110, 210))
    return Image.blend(img, Image.new("RGB", img.size, paper), rng.uniform(0.25, 0.6))


def _grid(img: Image.Image, rng: random.Random) -> Image.Image:
    """A faint periodic texture, as transposed convolutions leave (checkerboard artifacts)."""
    period = rng.choice((2, 3, 4))
    h, w = img.height, img.width
    yy, xx = np.mgrid[0:h, 0:w]
    pattern = (((yy // max(1, period // 2)) + (xx // max(1, period // 2))) % 2) * 2.0 - 1.0
    arr = np.asarray(img, dtype=np.float32) + rng.uniform(4, 16) * pattern[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def augment(img: Image.Image, size: int, rng: random.Random) -> Image.Image:
    """A random crop (a third of the area or more) at ``size``, a flip, slight colour jitter, sometimes blur
    or JPEG, and sometimes a style-imitating filter (greyscale, duotone, a paper-coloured wash, a checkerboard
    texture, strong blur): every class alike, labelled as what it was before."""
    w, h = img.size
    area = w * h * rng.uniform(0.35, 1.0)
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw, ch = min(w, round(math.sqrt(area * aspect))), min(h, round(math.sqrt(area / aspect)))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    out = img.crop((x, y, x + cw, y + ch)).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    arr = np.asarray(out, dtype=np.float32)
    arr = (arr - arr.mean()) * rng.uniform(0.85, 1.15) + arr.mean() * rng.uniform(0.9, 1.1)  # contrast, brightness
    grey = arr.mean(axis=2, keepdims=True)
    arr = grey + (arr - grey) * rng.uniform(0.8, 1.2)  # saturation
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    roll = rng.random()
    if roll < 0.12:
        out = out.convert("L").convert("RGB")
    elif roll < 0.2:
        out = _duotone(out, rng)
    elif roll < 0.35:
        out = _wash(out, rng)
    elif roll < 0.42:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 3.0)))
    elif roll < 0.55:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    if rng.random() < 0.15:
        out = _grid(out, rng)
    if rng.random() < 0.3:
        out = _jpeg(out, rng.randint(30, 90))
    return out


def _cross_faded(photo: Image.Image, art: Image.Image, rng: random.Random) -> Image.Image:
    """A photo with a painting faded over it (the painting's weight in ``CROSS_FADE_ART``), still a photo."""
    return Image.blend(photo, art, rng.uniform(*CROSS_FADE_ART))


def centre_view(img: Image.Image, size: int) -> Image.Image:
    """The judge's view of an image at evaluation: the shorter side at ``size``, the centre square."""
    scale = size / min(img.size)
    img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))), Image.BILINEAR)
    x, y = (img.width - size) // 2, (img.height - size) // 2
    return img.crop((x, y, x + size, y + size))


def _batch(images: list[Image.Image]) -> torch.Tensor:
    arr = np.stack([np.asarray(img, dtype=np.uint8) for img in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


# --- the judge: train, save, load, predict ----------------------------------------------------------------------
@dataclass
class Judge:
    nets: list[JudgeNet]  # one, or the members of an ensemble (their probabilities are averaged)
    classes: list[str]
    size: int
    info: dict = field(default_factory=dict)

    @torch.inference_mode()
    def probabilities(self, images: list[Image.Image], batch_size: int = 64) -> np.ndarray:
        """(n, classes) class probabilities, each the mean over the members, the centre view and its mirror."""
        for net in self.nets:
            net.eval()
        out = []
        for start in range(0, len(images), batch_size):
            views = [centre_view(img, self.size) for img in images[start:start + batch_size]]
            x = _batch(views)
            p = sum(F.softmax(net(x), 1) + F.softmax(net(torch.flip(x, dims=[3])), 1) for net in self.nets)
            out.append((p / (2 * len(self.nets))).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        states = [{k: v.detach().cpu() for k, v in net.state_dict().items()} for net in self.nets]
        # one net is stored as its state dict, as judges were before ensembles, so older folders still load
        atomic_save(states[0] if len(states) == 1 else states, folder / WEIGHTS_FILE)
        config = {"classes": self.classes, "size": self.size, "widths": list(self.widths),
                  "members": len(self.nets), **self.info}
        atomic_write_text(folder / CONFIG_FILE, json.dumps(config, indent=2, ensure_ascii=False) + "\n")

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(m.out_channels for m in self.nets[0].features if isinstance(m, nn.Conv2d))


def load_judge(folder: str | Path) -> Judge:
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise UserError(f"--judge {folder}: not a judge folder (needs {CONFIG_FILE} and {WEIGHTS_FILE}; make one "
                        "with cyclegan-culture judge train)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        stored = torch.load(weights_path, map_location="cpu", weights_only=True)
        states = stored if isinstance(stored, list) else [stored]
        if len(states) != int(config.get("members", 1)):
            raise ValueError(f"{len(states)} nets stored, {config.get('members', 1)} in {CONFIG_FILE}")
        nets = []
        for state in states:
            net = JudgeNet(len(config["classes"]), tuple(config["widths"]))
            net.load_state_dict(state)
            nets.append(net.eval())
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"--judge {folder}: cannot load it ({str(exc).splitlines()[0][:160]}); retrain it") from None
    info = {k: v for k, v in config.items() if k not in ("classes", "size", "widths", "members")}
    return Judge(nets, list(config["classes"]), int(config["size"]), info)


def _load_all(items: list[LabelledImage]) -> tuple[list[Image.Image], list[LabelledImage], list[str]]:
    images, kept, skipped = [], [], []
    for item in progress(items, desc="reading images", unit="img", leave=False):
        try:
            images.append(_stored(load_rgb(item.path)))
            kept.append(item)
        except BadImage as exc:
            skipped.append(f"{item.path}: {exc}")
    return images, kept, skipped


def validation_report(judge: Judge, images: list[Image.Image], items: list[LabelledImage]) -> dict:
    """Accuracy per class and per (class, source), and the balanced accuracy (mean over classes)."""
    if not images:
        return {"balanced_accuracy": None, "per_class": {}, "per_source": {}, "images": 0}
    predicted = judge.probabilities(images).argmax(1)
    truth = np.array([judge.classes.index(it.label) for it in items])
    correct = predicted == truth
    per_class = {c: float(correct[truth == i].mean()) for i, c in enumerate(judge.classes) if (truth == i).any()}
    per_source: dict[str, dict] = {}
    for key in sorted({(it.label, it.source) for it in items}):
        mask = np.array([(it.label, it.source) == key for it in items])
        per_source[f"{key[0]}/{key[1]}"] = {"accuracy": float(correct[mask].mean()), "images": int(mask.sum())}
    return {"balanced_accuracy": float(np.mean(list(per_class.values()))), "per_class": per_class,
            "per_source": per_source, "images": len(items)}


def train_judge(items: list[LabelledImage], size: int = 64, epochs: int = 30, batch_size: int = 48,
                lr: float = 3e-3, seed: int = 0, steps_per_epoch: int | None = None,
                cross_fades: float = CROSS_FADE_SHARE, members: int = 1) -> tuple[Judge, dict]:
    """Train a judge on the training split of ``items``; returns it and its validation report. ``cross_fades``:
    the share of photo views cross-faded with a painting (there is a ``PHOTO_CLASS``). ``members`` > 1: an
    ensemble of nets trained from seeds ``seed``, ``seed + 1``, ... (member k is the judge ``seed + k`` alone
    would give)."""
    images, items, skipped = _load_all(items)
    classes = sorted({it.label for it in items})
    train_idx = [i for i, it in enumerate(items) if not it.validation]
    val_idx = [i for i, it in enumerate(items) if it.validation]
    by_class = {c: [i for i in train_idx if items[i].label == c] for c in classes}
    art = [i for i in train_idx if items[i].label != PHOTO_CLASS] if PHOTO_CLASS in classes else []
    empty = [c for c, idx in by_class.items() if not idx]
    if empty:
        raise UserError(f"--datasets: no training images for {', '.join(empty)}")
    steps = steps_per_epoch or max(30, len(train_idx) // batch_size)  # small datasets: more views per epoch
    val_images, val_items = [images[i] for i in val_idx], [items[i] for i in val_idx]
    started = time.time()
    nets, member_accuracy = [], []
    with progress(total=members * epochs * steps, desc="training the judge", unit="step") as bar:
        for member_seed in range(seed, seed + members):
            rng = random.Random(member_seed)
            torch.manual_seed(member_seed)
            net = JudgeNet(len(classes))
            optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps)
            for _ in range(epochs):
                net.train()
                for _ in range(steps):
                    picks = [rng.choice(by_class[rng.choice(classes)]) for _ in range(batch_size)]  # balanced
                    views = [augment(images[i], size, rng) for i in picks]
                    for k, i in enumerate(picks):
                        if art and items[i].label == PHOTO_CLASS and rng.random() < cross_fades:
                            views[k] = _cross_faded(views[k], augment(images[rng.choice(art)], size, rng), rng)
                    x = _batch(views)
                    y = torch.tensor([classes.index(items[i].label) for i in picks])
                    loss = F.cross_entropy(net(x), y, label_smoothing=0.05)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3f}")
            nets.append(net)
            if members > 1:
                member_accuracy.append(validation_report(Judge([net], classes, size), val_images, val_items)
                                       ["balanced_accuracy"])
    judge = Judge(nets, classes, size)
    report = validation_report(judge, val_images, val_items)
    judge.info = {
        "trained_on": {c: len(idx) for c, idx in by_class.items()},
        "validated_on": {c: sum(items[i].label == c for i in val_idx) for c in classes},
        "recipe": {"size": size, "epochs": epochs, "steps_per_epoch": steps, "batch_size": batch_size, "lr": lr,
                   "seed": seed, "members": members, "cross_fades": cross_fades if art else 0.0},
        "training_seconds": round(time.time() - started, 1),
        "skipped": skipped,
        "validation": report,
    }
    if members > 1:
        judge.info["member_balanced_accuracy"] = member_accuracy
    return judge, report
