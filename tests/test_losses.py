from __future__ import annotations

import math

import pytest
import torch

from cyclegan_culture.models.losses import GANLoss, gradient_penalty


def test_lsgan_is_mean_squared_error_to_the_label():
    loss = GANLoss("lsgan")
    pred = torch.tensor([[0.5, 1.5], [1.0, 0.0]])
    assert loss(pred, True).item() == pytest.approx((0.25 + 0.25 + 0 + 1) / 4)
    assert loss(pred, False).item() == pytest.approx((0.25 + 2.25 + 1 + 0) / 4)


def test_vanilla_is_binary_cross_entropy_on_logits():
    loss = GANLoss("vanilla")
    assert loss(torch.zeros(3, 3), True).item() == pytest.approx(math.log(2))
    assert loss(torch.full((2,), 2.0), False).item() == pytest.approx(math.log(1 + math.exp(2)))


def test_wgangp_is_signed_mean():
    loss = GANLoss("wgangp")
    pred = torch.tensor([1.0, 3.0])
    assert loss(pred, True).item() == -2.0
    assert loss(pred, False).item() == 2.0


def test_hinge_differs_for_discriminator_and_generator():
    loss = GANLoss("hinge")
    pred = torch.tensor([0.5, 2.0, -1.0])
    assert loss(pred, True).item() == pytest.approx((0.5 + 0 + 2) / 3)        # relu(1 - x)
    assert loss(pred, False).item() == pytest.approx((1.5 + 3 + 0) / 3)       # relu(1 + x)
    assert loss(pred, True, for_discriminator=False).item() == pytest.approx(-0.5)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError):
        GANLoss("nope")


def test_gradient_penalty_of_a_linear_critic_is_known():
    # D(x) = sum(w * x): its gradient is w everywhere, so the penalty is (||w|| - 1)^2.
    w = torch.full((1, 2, 2, 2), 0.5)

    class Linear(torch.nn.Module):
        def forward(self, x):
            return (x * w).flatten(1).sum(1)

    real, fake = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    expected = (w.norm().item() - 1.0) ** 2
    assert gradient_penalty(Linear(), real, fake).item() == pytest.approx(expected)
