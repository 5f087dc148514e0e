"""Train a CycleGAN: python train.py --dataroot datasets/photo2guohua (see --help)."""
from cyclegan_culture.cli import train_main

raise SystemExit(train_main())
