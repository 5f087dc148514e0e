from __future__ import annotations

import random

import torch

from cyclegan_culture.models.image_pool import ImagePool


class ScriptedRng(random.Random):
    """uniform() and randint() answer from scripts, to steer the pool."""

    def __init__(self, uniforms, ints):
        super().__init__(0)
        self.uniforms, self.ints = list(uniforms), list(ints)

    def uniform(self, a, b):
        return self.uniforms.pop(0)

    def randint(self, a, b):
        return self.ints.pop(0)


def img(value: float) -> torch.Tensor:
    return torch.full((1, 3, 2, 2), float(value))


def test_pool_size_zero_returns_input_unchanged():
    pool = ImagePool(0)
    x = img(1)
    assert pool.query(x) is x


def test_pool_stores_and_returns_until_full():
    pool = ImagePool(2)
    assert torch.equal(pool.query(img(1)), img(1))
    assert torch.equal(pool.query(img(2)), img(2))
    assert [t.mean().item() for t in pool.images] == [1, 2]


def test_full_pool_swaps_with_probability_half():
    pool = ImagePool(2, ScriptedRng(uniforms=[0.7, 0.3], ints=[1]))
    pool.query(torch.cat([img(1), img(2)]))
    # 0.7 > 0.5: return the stored image 1 (value 2) and keep the new one in its place
    out = pool.query(img(3))
    assert out.mean().item() == 2
    assert [t.mean().item() for t in pool.images] == [1, 3]
    # 0.3 <= 0.5: return the new image, pool unchanged
    out = pool.query(img(4))
    assert out.mean().item() == 4
    assert [t.mean().item() for t in pool.images] == [1, 3]


def test_pool_handles_batches_per_image_and_keeps_detached_copies():
    pool = ImagePool(3)
    x = torch.randn(2, 3, 2, 2, requires_grad=True)
    out = pool.query(x)
    assert out.shape == x.shape and not out.requires_grad
    x.data.add_(1)  # later changes to the batch must not alter what the pool stored
    assert not torch.equal(pool.images[0][0], x[0].detach())


def test_pool_state_round_trip():
    pool = ImagePool(2)
    pool.query(torch.cat([img(1), img(2)]))
    other = ImagePool(5)
    other.load_state_dict(pool.state_dict())
    assert other.pool_size == 2 and [t.mean().item() for t in other.images] == [1, 2]
