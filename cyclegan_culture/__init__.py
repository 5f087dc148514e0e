"""cyclegan-culture: translate photos into the art of different cultures and back (CycleGAN)."""

__version__ = "0.1.0"
