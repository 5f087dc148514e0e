"""The replay buffer of generated images (Shrivastava et al., 2017) as CycleGAN uses it."""

from __future__ import annotations

import random

import torch


class ImagePool:
    """Show the discriminator a history of generated images, not only the newest ones.

    While the pool holds fewer than ``pool_size`` images, each new image is stored and returned. Once full, each
    image is, with probability 0.5, swapped for a random stored one (which is returned), else returned as is.
    ``pool_size`` 0 disables the buffer. Randomness comes from ``rng`` (python's ``random`` by default), whose
    state the training checkpoint saves.
    """

    def __init__(self, pool_size: int, rng: random.Random | None = None):
        self.pool_size = pool_size
        self.images: list[torch.Tensor] = []
        self.rng = rng if rng is not None else random.Random()

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.pool_size == 0:
            return images
        returned = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                returned.append(image)
            elif self.rng.uniform(0, 1) > 0.5:
                idx = self.rng.randint(0, self.pool_size - 1)
                returned.append(self.images[idx].clone())
                self.images[idx] = image.clone()
            else:
                returned.append(image)
        return torch.cat(returned, 0)

    def state_dict(self) -> dict:
        return {"pool_size": self.pool_size, "images": [im.cpu() for im in self.images]}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.pool_size = int(state["pool_size"])
        self.images = [im.to(device) for im in state["images"]]
