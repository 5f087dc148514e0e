"""Translate test images and write an HTML gallery: python test.py --dataroot datasets/photo2guohua."""
from cyclegan_culture.cli import test_main

raise SystemExit(test_main())
