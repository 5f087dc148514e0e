"""The unpaired dataset: images of domain A, each paired with a random image of domain B.

Randomness is a pure function of (seed, epoch, position): the order of A comes from ``EpochSampler``, and each
sample's B partner, crop and flip from its own RNG. A run resumed in the middle of an epoch therefore sees exactly
the batches an uninterrupted run would, whatever the number of worker processes.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from cyclegan_culture.data.images import BadImage, list_images, load_rgb, pil_to_tensor
from cyclegan_culture.data.transforms import Preprocess
from cyclegan_culture.errors import UserError


def image_folder(dataroot: str | Path, folder: str) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The images of DATAROOT/folder; raises UserError naming the folder when it is missing or empty."""
    root = Path(dataroot)
    if not root.is_dir():
        raise UserError(f"--dataroot {root}: folder not found; it should hold trainA, trainB, testA, testB")
    path = root / folder
    if not path.is_dir():
        raise UserError(f"{path}: folder not found; put the {folder[-1]} images of the '{folder[:-1]}' split there")
    files, skipped = list_images(path)
    if not files:
        raise UserError(f"{path}: no images found (looked for .jpg, .png, .webp, ... files); add images to it")
    return files, skipped


class UnpairedDataset(Dataset):
    """Items are (epoch, index) pairs from EpochSampler; returns {'A', 'B', 'A_paths', 'B_paths', 'skipped'}."""

    def __init__(self, dataroot: str | Path, phase: str, preprocess: Preprocess, seed: int = 0,
                 serial_batches: bool = False, max_dataset_size: int | None = None):
        self.A_paths, skipped_A = image_folder(dataroot, phase + "A")
        self.B_paths, skipped_B = image_folder(dataroot, phase + "B")
        if max_dataset_size:
            self.A_paths, self.B_paths = self.A_paths[:max_dataset_size], self.B_paths[:max_dataset_size]
        self.listing_skipped = skipped_A + skipped_B
        self.A_root, self.B_root = Path(dataroot) / (phase + "A"), Path(dataroot) / (phase + "B")
        self.preprocess = preprocess
        self.seed = seed
        self.serial_batches = serial_batches

    def __len__(self) -> int:
        return max(len(self.A_paths), len(self.B_paths))

    def fingerprint(self) -> str:
        """A hash of the images' names relative to their folders: the same data, wherever it lies."""
        names = [f"{side}:{p.relative_to(root).as_posix()}" for side, root, paths in
                 (("A", self.A_root, self.A_paths), ("B", self.B_root, self.B_paths)) for p in paths]
        return hashlib.sha256("\n".join(names).encode()).hexdigest()

    def __getitem__(self, item: tuple[int, int] | int) -> dict:
        epoch, index = item if isinstance(item, tuple) else (0, item)
        # A string seed is hashed with SHA-512 by random.Random: stable across processes and Python runs.
        rng = random.Random(f"{self.seed}:{epoch}:{index}")
        index_B = index % len(self.B_paths) if self.serial_batches else rng.randrange(len(self.B_paths))
        skipped: list[str] = []
        A_path, A = self._load(self.A_paths, index % len(self.A_paths), rng, skipped)
        B_path, B = self._load(self.B_paths, index_B, rng, skipped)
        return {"A": A, "B": B, "A_paths": str(A_path), "B_paths": str(B_path), "skipped": "\n".join(skipped)}

    def _load(self, paths: list[Path], index: int, rng: random.Random, skipped: list[str]) -> tuple[Path, torch.Tensor]:
        """Load paths[index]; an undecodable file is noted and the next file is used instead."""
        for offset in range(len(paths)):
            path = paths[(index + offset) % len(paths)]
            try:
                img = load_rgb(path)
            except BadImage as exc:
                skipped.append(f"{path}\t{exc}")
                continue
            return path, pil_to_tensor(self.preprocess(img, rng))
        raise UserError(f"{paths[0].parent}: none of its {len(paths)} images can be decoded; replace them")


class EpochSampler(Sampler):
    """Yields (epoch, index): a fresh permutation each epoch from (seed, epoch), or in order for serial batches.

    Under data-parallel training, process ``rank`` of ``world_size`` takes positions rank, rank + world_size, ...
    of the epoch's order, padded by wrapping around so every process gets the same count (as torch's
    DistributedSampler does). So the k-th batches of all processes together hold exactly the samples of the k-th
    batch of one process with a world_size times larger batch. ``start`` skips the first positions of this
    process's share, for resuming in the middle of an epoch.
    """

    def __init__(self, length: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.length))
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.length, generator=g).tolist()

    @property
    def per_process(self) -> int:
        """How many samples each process sees per epoch."""
        return -(-self.length // self.world_size)

    def share(self, epoch: int) -> list[int]:
        """This process's indices for ``epoch``, in order."""
        order = self.order(epoch)
        padded = self.per_process * self.world_size
        order = (order * (padded // len(order) + 1))[:padded]
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.share(self.epoch)[self.start:]:
            yield (self.epoch, index)

    def __len__(self) -> int:
        return self.per_process - self.start
