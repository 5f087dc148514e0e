"""The reference's test loop (test.py of junyanz/pytorch-CycleGAN-and-pix2pix, cycle_gan model), re-enacted for
timing on our identical networks: torchvision transforms (resize to 286, crop 256), four generator calls per
A/B pair under no_grad, six PNGs written per pair with its tensor2im conversion.

    python bench/reference_test.py DATAROOT RUN_DIR RESULTS_DIR [--ngf 64] [--netG resnet_9blocks] [--num_test 50]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cyclegan_culture.accel.swap import swap_layers as use_conv_algorithm  # noqa: E402
from cyclegan_culture.models.networks import define_G  # noqa: E402


def tensor2im(t: torch.Tensor) -> np.ndarray:
    arr = t[0].cpu().float().numpy()
    return ((np.transpose(arr, (1, 2, 0)) + 1) / 2.0 * 255.0).astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dataroot")
    p.add_argument("run_dir")
    p.add_argument("results_dir")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--netG", default="resnet_9blocks")
    p.add_argument("--num_test", type=int, default=50)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    transform = T.Compose([T.Resize([286, 286], T.InterpolationMode.BICUBIC), T.RandomCrop(256), T.ToTensor(),
                           T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    nets = {}
    for name in ("G_A", "G_B"):
        net = use_conv_algorithm(define_G(3, 3, args.ngf, args.netG), "direct")  # PyTorch's convolutions only
        net.load_state_dict(torch.load(Path(args.run_dir) / f"latest_net_{name}.pth", map_location="cpu", weights_only=True))
        nets[name] = net.to(args.device)
    a_files = sorted((Path(args.dataroot) / "testA").iterdir())
    b_files = sorted((Path(args.dataroot) / "testB").iterdir())
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(min(args.num_test, len(a_files))):
        real_A = transform(Image.open(a_files[i]).convert("RGB")).unsqueeze(0).to(args.device)
        real_B = transform(Image.open(b_files[i % len(b_files)]).convert("RGB")).unsqueeze(0).to(args.device)
        with torch.no_grad():
            fake_B = nets["G_A"](real_A)
            rec_A = nets["G_B"](fake_B)
            fake_A = nets["G_B"](real_B)
            rec_B = nets["G_A"](fake_A)
        for label, t in (("real_A", real_A), ("fake_B", fake_B), ("rec_A", rec_A), ("real_B", real_B),
                         ("fake_A", fake_A), ("rec_B", rec_B)):
            Image.fromarray(tensor2im(t)).save(out / f"{a_files[i].stem}_{label}.png")


if __name__ == "__main__":
    main()
