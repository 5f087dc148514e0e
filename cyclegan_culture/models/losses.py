"""GAN objectives (lsgan, the CycleGAN default; vanilla, wgangp with gradient penalty, hinge), the R1 penalty, the
culture-aware losses (edge, tone, flat colour, graded sky) and the views that the culture-aware discriminators see
(``VIEW_CRITICS``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

GAN_MODES = ("lsgan", "vanilla", "wgangp", "hinge")


class GANLoss(nn.Module):
    """The adversarial loss for one prediction map.

    ``for_discriminator`` matters only for hinge, whose discriminator and generator objectives differ.
    """

    def __init__(self, gan_mode: str = "lsgan", real_label: float = 1.0, fake_label: float = 0.0):
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise ValueError(f"unknown gan_mode {gan_mode!r}")
        self.gan_mode = gan_mode
        self.register_buffer("real_label", torch.tensor(real_label))
        self.register_buffer("fake_label", torch.tensor(fake_label))

    def forward(self, prediction: torch.Tensor, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        prediction = prediction.float()  # losses in fp32 even under autocast
        if self.gan_mode in ("lsgan", "vanilla"):
            target = (self.real_label if target_is_real else self.fake_label).expand_as(prediction)
            if self.gan_mode == "lsgan":
                return nn.functional.mse_loss(prediction, target)
            return nn.functional.binary_cross_entropy_with_logits(prediction, target)
        if self.gan_mode == "wgangp":
            return -prediction.mean() if target_is_real else prediction.mean()
        # hinge
        if not for_discriminator:
            return -prediction.mean()
        if target_is_real:
            return torch.relu(1.0 - prediction).mean()
        return torch.relu(1.0 + prediction).mean()


def gradient_penalty(netD: nn.Module, real: torch.Tensor, fake: torch.Tensor, constant: float = 1.0) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al., 2017): (||grad D(x_hat)||_2 - constant)^2 on random interpolates."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    interpolates = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = netD(interpolates)
    grads = torch.autograd.grad(outputs=out, inputs=interpolates, grad_outputs=torch.ones_like(out),
                                create_graph=True, retain_graph=True, only_inputs=True)[0]
    grads = grads.reshape(real.shape[0], -1)
    return ((grads.float().norm(2, dim=1) - constant) ** 2).mean()


def r1_penalty(netD: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al., 2018): the squared norm of the discriminator's gradient at real images, averaged
    over the batch. Each patch prediction counts as one logit (the gradient of their sum), as StyleGAN's one
    logit per image does. It keeps the discriminator flat around the paintings it has seen, so a few dozen of
    them are not learnt by heart."""
    real = real.detach().requires_grad_(True)
    out = netD(real)
    grads = torch.autograd.grad(outputs=out.sum(), inputs=real, create_graph=True, only_inputs=True)[0]
    return grads.float().square().reshape(real.shape[0], -1).sum(dim=1).mean()


def edge_map(x: torch.Tensor) -> torch.Tensor:
    """The main edges of images in [-1, 1]: Sobel gradient magnitude of the grey image at half resolution
    (fine texture left out), divided by each image's mean magnitude (so a translation may change the overall
    contrast, only not where the edges are)."""
    grey = x.mean(dim=1, keepdim=True)
    grey = torch.nn.functional.avg_pool2d(grey, 2, ceil_mode=True) if min(grey.shape[-2:]) >= 8 else grey
    return relative_sobel_magnitude(grey)


def relative_sobel_magnitude(grey: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of one-channel images, divided by each image's mean magnitude."""
    kernel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], device=grey.device,
                          dtype=grey.dtype)
    weights = torch.stack([kernel, kernel.t()]).unsqueeze(1)
    grad = torch.nn.functional.conv2d(torch.nn.functional.pad(grey, [1, 1, 1, 1], mode="replicate"), weights)
    magnitude = (grad.pow(2).sum(dim=1, keepdim=True) + 1e-6).sqrt()
    return magnitude / (magnitude.mean(dim=(2, 3), keepdim=True) + 1e-3)


def tone_map(x: torch.Tensor) -> torch.Tensor:
    """The light-and-dark layout of images in [-1, 1]: the grey image at a quarter of the size (brush texture left
    out), standardised per image (so a translation may change brightness, contrast and colour, only not which
    parts are lighter than which)."""
    grey = x.mean(dim=1, keepdim=True)
    grey = torch.nn.functional.avg_pool2d(grey, 4, ceil_mode=True) if min(grey.shape[-2:]) >= 16 else grey
    centred = grey - grey.mean(dim=(2, 3), keepdim=True)
    return centred / (centred.pow(2).mean(dim=(2, 3), keepdim=True).sqrt() + 1e-3)


def tone_loss(translated: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """L1 between the tone maps of a translation and its source. The edge loss compares gradient magnitudes and
    so lets a translation invert its tones (without the identity loss, ukiyo-e and impressionism runs did, the
    cycle undoing it); this one does not, and leaves colour free as the identity loss does not."""
    return torch.nn.functional.l1_loss(tone_map(translated), tone_map(source))


FLAT_STEP = 0.1  # colour steps between neighbours above this (a twentieth of the [-1, 1] range) cost nothing more


def flat_colour_loss(translated: torch.Tensor) -> torch.Tensor:
    """How much small colour change a translation has between neighbouring pixels: the mean of each horizontal and
    vertical step, capped at FLAT_STEP. Under the cap each step costs its size, so the fine texture and gentle
    shading inside an area go; above it a step costs the same however strong, so the outlines that separate
    areas stay free. A woodblock print is flat colour inside key-block lines; a photo (and the soft painted light
    ukiyo-e models drifted to) changes a little everywhere (docs/quality.md section 15)."""
    steps_x = (translated[..., :, 1:] - translated[..., :, :-1]).abs().clamp(max=FLAT_STEP)
    steps_y = (translated[..., 1:, :] - translated[..., :-1, :]).abs().clamp(max=FLAT_STEP)
    return (steps_x.mean() + steps_y.mean()) / 2


SKY_TEXTURE = 0.04  # mean fine detail (grey, [-1, 1]) of an 8x8 block above which it is not sky
SKY_BLOCK = 8


def sky_mask(photo: torch.Tensor) -> torch.Tensor:
    """Where a photo has sky, as a (N, 1, H, W) 0/1 mask: in each column, the blocks of 8x8 pixels from the top down
    to the first one with fine texture (the mean of the grey image minus its 1-pixel Gaussian blur above
    SKY_TEXTURE). Clouds, sunsets and night skies are smooth at that scale even where their edges are strong;
    foliage, rock, buildings and water are not, and the first of them ends the sky (docs/quality.md section 17)."""
    grey = photo.mean(dim=1, keepdim=True)
    detail = (grey - gaussian_blur(grey, 1.0)).abs()
    textured = torch.nn.functional.avg_pool2d(detail, SKY_BLOCK, ceil_mode=True) > SKY_TEXTURE
    below_ground = textured.to(photo.dtype).cummax(dim=2).values
    return torch.nn.functional.interpolate(1 - below_ground, size=photo.shape[-2:], mode="nearest")


def graded_sky_loss(translated: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """How far the translation's sky (``sky_mask`` of the source photo) is from graded colour: the mean distance of
    each sky pixel from its row's mean sky colour. A woodblock print's sky is flat or graded band by band (bokashi:
    colour fading from the top); the models painted photos' clouds as soft swirls that the judge took for
    impressionism (docs/quality.md section 16). Rows without sky, and photos without any, cost nothing."""
    mask = sky_mask(source)
    row_pixels = mask.sum(dim=3, keepdim=True)
    row_mean = (translated * mask).sum(dim=3, keepdim=True) / row_pixels.clamp(min=1)
    distance = (translated - row_mean).abs().mean(dim=1, keepdim=True) * mask
    return distance.sum() / mask.sum().clamp(min=1)


def edge_loss(translated: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """L1 between the edge maps of a translation and its source: the photo's main edges kept as strokes (the
    idea of ChipGAN's brush-stroke loss, without its pretrained edge detector)."""
    return torch.nn.functional.l1_loss(edge_map(translated), edge_map(source))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each channel under a separable Gaussian blur of ``sigma`` pixels, borders reflected."""
    radius = min(int(2 * sigma + 0.5), (min(x.shape[-2:]) - 1))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-offsets.pow(2) / (2 * sigma * sigma))
    kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, -1)
    padded = torch.nn.functional.pad(x, [radius, radius, radius, radius], mode="reflect")
    blurred = torch.nn.functional.conv2d(padded, kernel.unsqueeze(2), groups=x.shape[1])
    return torch.nn.functional.conv2d(blurred, kernel.unsqueeze(3), groups=x.shape[1])


def ink_wash_view(x: torch.Tensor) -> torch.Tensor:
    """What ChipGAN's ink-wash discriminator sees (Xue et al., 2018, for the idea): the grey image under a
    Gaussian blur of a fortieth of its width (3.2 px at 128 px), so that a discriminator judges only how the ink
    spreads and grades (the wash), not the colour or the strokes, which the main discriminator judges."""
    return gaussian_blur(x.mean(dim=1, keepdim=True), max(x.shape[-1] / 40.0, 0.5))


def contour_view(x: torch.Tensor) -> torch.Tensor:
    """Where the lines are, and how flat the areas between them: the Sobel magnitude of the grey image at full
    resolution, divided by its mean (so contrast is left free), squashed into [-1, 1). A woodblock print's
    key-block outlines are thin, strong and sparse, flat colour between them; a photo's edges are many, soft and
    everywhere. Colour is left to the main discriminator."""
    return 2 * torch.tanh(relative_sobel_magnitude(x.mean(dim=1, keepdim=True)) / 4) - 1


def stroke_view(x: torch.Tensor) -> torch.Tensor:
    """The paint's texture without the picture: the colour image minus its Gaussian blur of a sixty-fourth of its
    width (2 px at 128 px), amplified and squashed into (-1, 1). Impressionist broken strokes are small dabs of
    unmixed colour everywhere; a photo's fine detail sits at its edges, smooth between them."""
    detail = x - gaussian_blur(x, max(x.shape[-1] / 64.0, 0.5))
    return torch.tanh(4 * detail)


@dataclass(frozen=True)
class ViewCritic:
    """An extra discriminator that sees one view of the target culture's paintings and of the translations into
    it, so that one trait of the culture is judged on its own (the main discriminator judges all at once)."""
    name: str  # its network's name (files *_net_<name>.pth); its losses are logged as <name> and G_<name[2:]>
    weight: str  # the ModelConfig field (and training flag) that weights it; 0 leaves it out
    view: Callable[[torch.Tensor], torch.Tensor]
    channels: int  # of the view
    trait: str  # what it judges, for help and errors

    @property
    def generator_loss_name(self) -> str:
        return "G_" + self.name[2:]


VIEW_CRITICS = (
    ViewCritic("D_ink", "lambda_inkwash", ink_wash_view, 1, "ink wash (guohua)"),
    ViewCritic("D_line", "lambda_contour", contour_view, 1, "contours and flat areas (ukiyo-e)"),
    ViewCritic("D_stroke", "lambda_strokes", stroke_view, 3, "broken brush strokes (impressionism)"),
)


# The losses on G_A's translations alone that bring one trait of the target culture (B), not the photo: the flat
# areas and graded skies of a woodblock print. (loss name, ModelConfig weight, loss of (translation, photo))
CULTURE_TRAIT_LOSSES: tuple[tuple[str, str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]], ...] = (
    ("flat_A", "lambda_flat", lambda translated, source: flat_colour_loss(translated)),
    ("sky_A", "lambda_sky", graded_sky_loss),
)


def culture_trait_losses(config: Any, translated: torch.Tensor, source: torch.Tensor) -> dict[str, torch.Tensor]:
    """The weighted ``CULTURE_TRAIT_LOSSES`` that ``config`` turns on, by loss name."""
    return {name: loss(translated, source) * getattr(config, weight)
            for name, weight, loss in CULTURE_TRAIT_LOSSES if getattr(config, weight) > 0}


def culture_trait_loss_names(config: Any) -> tuple[str, ...]:
    """The names (for logs) of the ``CULTURE_TRAIT_LOSSES`` that ``config`` turns on."""
    return tuple(name for name, weight, _ in CULTURE_TRAIT_LOSSES if getattr(config, weight) > 0)
