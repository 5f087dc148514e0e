"""The training loop, testing, and checkpoints."""
