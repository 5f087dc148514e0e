"""Networks, losses, the replay buffer and the CycleGAN model. Nothing here reads files or flags."""
