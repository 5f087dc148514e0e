"""What defines a model, and how it is trained, as small typed records built once from the options.

``ModelConfig`` is saved as ``config.json`` beside the weights (``runs.checkpoint.save_config``); ``opt.txt`` and
``opt.json`` stay for the reference's users. Defaults are the reference's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


class _Record:
    """from_dict / to_dict for the dataclasses below."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        """From options (``vars(opt)``), opt.json or config.json: known fields taken, others ignored."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelConfig(_Record):
    """The networks and the training objective of one model."""

    model: str = "cycle_gan"
    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 64
    ndf: int = 64
    netG: str = "resnet_9blocks"
    netD: str = "basic"
    n_layers_D: int = 3
    norm: str = "instance"
    use_dropout: bool = False
    upsample: str = "transpose"
    init_type: str = "normal"
    init_gain: float = 0.02
    # the objective
    gan_mode: str = "lsgan"
    lambda_A: float = 10.0
    lambda_B: float = 10.0
    lambda_identity: float = 0.5
    lambda_gp: float = 10.0
    spectral_norm: bool = False  # the discriminators' convolutions spectrally normalised
    lambda_r1: float = 0.0  # weight of the R1 penalty: the discriminators' gradient on real images
    pool_size: int = 50
    diffaugment: str = ""  # the discriminators' input augmentations, e.g. "color,translation,cutout"
    ema_decay: float = 0.0  # > 0: inference uses an exponential moving average of each generator's weights
    lambda_edge: float = 0.0  # weight of the loss that keeps the input's main edges in the translation
    lambda_tone: float = 0.0  # weight of the loss that keeps the input's light-and-dark layout (losses.tone_loss)
    lambda_flat: float = 0.0  # weight of the loss on small colour steps in the translation (flat areas: ukiyo-e)
    lambda_sky: float = 0.0  # weight of the loss on ungraded colour in the translation's sky (bokashi: ukiyo-e)
    lambda_inkwash: float = 0.0  # weight of the adversarial term of a discriminator on blurred grey images (ink wash)
    lambda_contour: float = 0.0  # ... of a discriminator on edge maps (contours and flat areas: ukiyo-e)
    lambda_strokes: float = 0.0  # ... of a discriminator on the colour detail (broken strokes: impressionism)
    lambda_NCE: float | None = None  # CUT's contrastive-loss weight; None: the model's own (cut 1, fastcut 10)
    direction: str = "AtoB"
    seed: int = 0  # the replay buffers' random choices

    # the flags that define the networks (a run's must match to load its weights)
    NETWORK_FIELDS = ("input_nc", "output_nc", "ngf", "ndf", "netG", "netD", "n_layers_D", "norm", "use_dropout",
                      "upsample", "init_type", "init_gain")


@dataclass(frozen=True)
class TrainSchedule(_Record):
    """The optimizer and the learning-rate schedule."""

    optimizer: str = "adam"
    lr: float = 0.0002
    beta1: float = 0.5
    weight_decay: float = 0.0
    lr_policy: str = "linear"
    n_epochs: int = 100
    n_epochs_decay: int = 100
    epoch_count: int = 1
    lr_decay_iters: int = 50
