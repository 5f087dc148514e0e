"""Every command-line flag, once.

Flag names and defaults follow junyanz/pytorch-CycleGAN-and-pix2pix so its users feel at home. The resolved
options of a run are saved beside its weights as ``opt.txt`` (the reference's format) and ``opt.json`` (read
back by ``test.py`` and the Python API).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import torch

from cyclegan_culture.accel import CONV_ALGORITHMS, ExecutionPlan, PlanError, make_plan
from cyclegan_culture.accel.autotune import MODES as AUTOTUNE_MODES, default_mode as default_autotune_mode
from cyclegan_culture.backends import BACKEND_HELP, BACKENDS
from cyclegan_culture.data.cultures import CULTURE_FILE, preset_settings
from cyclegan_culture.devices import parse_gpu_ids
from cyclegan_culture.errors import UserError
from cyclegan_culture.files import atomic_write_text
from cyclegan_culture.models.config import ModelConfig
from cyclegan_culture.models.diffaugment import parse_policy
from cyclegan_culture.models.losses import GAN_MODES, VIEW_CRITICS
from cyclegan_culture.models.registry import MODELS


NETG_CHOICES = ("resnet_9blocks", "resnet_6blocks", "unet_256", "unet_128")
NETD_CHOICES = ("basic", "n_layers", "pixel")
NORM_CHOICES = ("instance", "batch", "none")
PREPROCESS_CHOICES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")

# Flags that describe the networks: test.py reads them from the run's opt.json unless given on its command line.
MODEL_FLAGS = ModelConfig.NETWORK_FIELDS
# what --eval_freq's evaluations may keep the best weights by (eval/during_training.py computes them)
EARLY_STOP_METRICS = ("style_score", "content_ssim", "cycle_psnr", "judge_score", "judge_probability")

# `--preset cpu`: a small configuration that shows a visible culture style after about 15 minutes on a 2-core
# CPU. It trades resolution (128 px), capacity (ngf 32, 6 blocks) and training length for speed, and trains in
# bf16 (--amp), which bench/amp_vs_fp32.py checks does not change the loss curves beyond noise.
PRESETS: dict[str, dict[str, Any]] = {
    # the 15-minute demo: docs/quality.md has the A/B table behind the last three settings
    "cpu": dict(load_size=143, crop_size=128, ngf=32, ndf=32, netG="resnet_6blocks", amp=True, num_threads=1,
                n_epochs=14, n_epochs_decay=10, display_freq=85, print_freq=85, save_epoch_freq=8,
                upsample="resize", diffaugment="color,translation", ema_decay=0.999),
}
# `--preset cpu_long`: the same recipe trained 2.5x longer (40 epochs, then 20 of decay), under an hour of a
# 2-core CPU, with the edge loss at 0.5 so that the longer training keeps the photo's structure: on held-out
# photos 0.90 judged guohua at SSIM 0.582 (without the edge loss 0.99 at 0.528; cpu's 0.70 at 0.577;
# docs/quality.md section 6)
PRESETS["cpu_long"] = {**PRESETS["cpu"], "n_epochs": 40, "n_epochs_decay": 20, "save_epoch_freq": 20,
                       "lambda_edge": 0.5}


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default, as the reference's --help does (flags that are off by default,
    and those without one, say nothing more)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".lstrip()


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UserError (one line, no usage dump) instead of exiting, and takes no abbreviated
    flags (so the flags a user typed are known exactly: presets and opt.json never override them)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001 - argparse's signature
        return super().parse_known_args(None if args is None else self.spelled_as_defined(args), namespace)

    def spelled_as_defined(self, args: Sequence[str]) -> list[str]:
        """Flags use underscores (the reference's style); ``--load-size`` is accepted for ``--load_size``."""
        known = {s for a in self._actions for s in a.option_strings}
        out = []
        for i, token in enumerate(args):
            if token == "--":
                return out + list(args[i:])
            flag, eq, value = token.partition("=")
            if flag.startswith("--") and flag not in known:
                for spelling in ("--" + flag[2:].replace("-", "_"), "--" + flag[2:].replace("_", "-")):
                    if spelling in known:
                        token = spelling + eq + value
                        break
            out.append(token)
        return out


def _add_common(parser: argparse.ArgumentParser, training: bool) -> None:
    """The flags train.py and test.py share, in the same groups (the reference's names and defaults)."""
    g = parser.add_argument_group("run")
    if training:
        g.add_argument("--preset", choices=sorted(PRESETS), help="a ready configuration; explicit flags override "
                       "it. cpu (the 15-minute demo) sets: " + " ".join(f"--{k} {v}" for k, v in PRESETS["cpu"].items())
                       + "; cpu_long (under an hour) the same with --n_epochs 40 --n_epochs_decay 20 "
                       "--save_epoch_freq 20 --lambda_edge 0.5; the dataroot's culture.json may change either's loss "
                       "weights, model, GAN objective and epochs")
    g.add_argument("--dataroot", help="folder with trainA, trainB, testA, testB (e.g. datasets/photo2guohua)"
                   + ("" if training else "; default: the run's, from its opt.json. With --model test: a folder of "
                      "images"))
    g.add_argument("--name", default=None, help="run name; checkpoints go to CHECKPOINTS_DIR/NAME "
                   "(default: the dataroot's folder name)")
    g.add_argument("--suffix", default="", help="appended to --name as _SUFFIX, formatted with the options, e.g. "
                   "{netG}_size{load_size}")
    g.add_argument("--checkpoints_dir", default="./checkpoints", help="where runs are stored")
    g.add_argument("--gpu_ids", default=None, help="e.g. 0 or 0,1; -1 for CPU (default: first GPU if any, else CPU)")
    g.add_argument("--seed", type=int, default=0, help="random seed: same seed, same data and results on CPU "
                   "with the same execution plan (train.py prints the one it takes; --autotune off always takes the "
                   "built-in one; a resumed run keeps its own)")
    g.add_argument("--num_threads", type=int, default=2, help="worker processes that decode images (0: main process)")
    g.add_argument("--epoch", default="latest", help="which checkpoint to load: latest, best (kept by --eval_freq's "
                   "evaluations) or an epoch number"
                   + ("" if not training else " (with --continue_train the training state decides)"))
    g.add_argument("--load_iter", type=int, default=0, help="> 0: load the iter_<N> checkpoint (saved with "
                   "--save_by_iter) instead of --epoch")
    g.add_argument("--verbose", action="store_true", help="print the networks")
    g.add_argument("--use_wandb", action="store_true", help="accepted for the reference's scripts: Weights & Biases "
                   "needs the internet; a note says to use --tensorboard or Visdom instead")
    g.add_argument("--wandb_project_name", default="CycleGAN-and-pix2pix", help="accepted with --use_wandb (unused)")

    s = parser.add_argument_group("speed")
    s.add_argument("--amp", action="store_true", help="mixed precision: bf16 autocast on CPU, fp16 with loss "
                   "scaling on CUDA (faster; changes numerics slightly)")
    s.add_argument("--channels_last", nargs="?", const="on", default="auto", choices=["auto", "on", "off"],
                   help="NHWC memory layout; auto: on for all training on CPU and for --amp inference on CPU "
                   "(measured faster), for fp32 inference on CPU whichever the per-machine plan (--autotune) "
                   "times faster; off elsewhere (no faster on an H200 at batch 1)")
    s.add_argument("--conv_algorithm", default="auto", choices=CONV_ALGORITHMS,
                   help="how the residual blocks' 3x3 convolutions run: winograd (4x fewer multiply-adds, rounding "
                   "differs by ~1e-5; fp32 on CPU; with --amp, test.py and stylize use 2.25x fewer in bf16, with "
                   "about 2.5x direct bf16's rounding error per convolution) or direct; auto: winograd on CPU for "
                   "--amp inference from 256 channels and for fp32 256-channel feature maps of at least 24x24 in "
                   "channels_last (default generator, crops from about 96 px; 48x48 in NCHW), unless --compile. "
                   "direct also runs the generator's last convolution as PyTorch's (auto: per 2x2 output block "
                   "on CPU)")
    s.add_argument("--autotune", default=default_autotune_mode(), choices=AUTOTUNE_MODES,
                   help="with --conv_algorithm auto on CPU: time each layer's algorithms once per shape (and, for "
                   "training, whole steps with these layers or PyTorch's) on this machine and keep the fastest in a "
                   "cache file (~/.cache/cyclegan-culture, keyed by CPU, flags, "
                   "threads and torch); on: time again; off: the built-in thresholds (also CYCLEGAN_CULTURE_AUTOTUNE)")
    s.add_argument("--compile", action="store_true", help="torch.compile the networks (slow start, faster steps; "
                   "falls back to eager with a warning where it cannot compile)")
    if not training:
        s.add_argument("--backend", default="pytorch", choices=BACKENDS, help=BACKEND_HELP)

    m = parser.add_argument_group("model")
    m.add_argument("--model", default="cycle_gan", choices=sorted(MODELS) + ([] if training else ["test"]),
                   help="the model (models/registry.py)" + ("" if training else "; test: one generator "
                   "(RUN/<epoch>_net_G<MODEL_SUFFIX>.pth) on the images of --dataroot, the reference's single-"
                   "direction testing"))
    m.add_argument("--input_nc", type=int, default=3, help="channels of domain A images")
    m.add_argument("--output_nc", type=int, default=3, help="channels of domain B images")
    m.add_argument("--ngf", type=int, default=64, help="generator filters in the first conv layer")
    m.add_argument("--ndf", type=int, default=64, help="discriminator filters in the first conv layer")
    m.add_argument("--netG", default="resnet_9blocks", help="generator: " + " | ".join(NETG_CHOICES))
    m.add_argument("--netD", default="basic", help="discriminator: " + " | ".join(NETD_CHOICES))
    m.add_argument("--n_layers_D", type=int, default=3, help="layers of the n_layers discriminator")
    m.add_argument("--norm", default="instance", help="normalisation: " + " | ".join(NORM_CHOICES))
    m.add_argument("--use_dropout", action="store_true", help="dropout in the generator's residual blocks")
    m.add_argument("--no_dropout", action="store_true", help="accepted for the reference's scripts; "
                   "dropout is off unless --use_dropout")
    m.add_argument("--upsample", default="transpose", choices=["transpose", "resize"],
                   help="generator upsampling: transposed conv (reference) or resize+conv (no checkerboard)")
    if training:
        m.add_argument("--init_type", default="normal", choices=["normal", "xavier", "kaiming", "orthogonal"],
                       help="how the networks' weights are initialised")
        m.add_argument("--init_gain", type=float, default=0.02, help="scale for normal, xavier and orthogonal init")
    else:
        m.add_argument("--model_suffix", default="", help="with --model test: which generator file, "
                       "<epoch>_net_G<MODEL_SUFFIX>.pth (e.g. _A; default: G, else G_A)")
        m.add_argument("--eval", action="store_true", help="accepted for the reference's scripts: generators always "
                       "run in eval mode here")

    d = parser.add_argument_group("data")
    d.add_argument("--phase", default="train" if training else "test",
                   help="the dataset split to " + ("train on" if training else "translate") + " (DATAROOT/PHASE{A,B})")
    d.add_argument("--dataset_mode", default="unaligned" if training else None,
                   choices=["unaligned", "single", "aligned", "colorization"],
                   help="unaligned: PHASEA and PHASEB, unpaired (CycleGAN)" + ("" if training else
                   "; single: the images of --dataroot, one direction (default with --model test)")
                   + "; aligned and colorization are pix2pix's and are refused")
    d.add_argument("--direction", default="AtoB", choices=["AtoB", "BtoA"],
                   help="BtoA swaps the dataset's A and B folders (G_A then translates B images)")
    d.add_argument("--max_dataset_size", type=int, default=None, help="use at most this many images per domain")
    d.add_argument("--preprocess", default="resize_and_crop", help=" | ".join(PREPROCESS_CHOICES))
    d.add_argument("--load_size", type=int, default=286, help="scale images to this size")
    d.add_argument("--crop_size", type=int, default=256, help="then crop to this size")
    d.add_argument("--no_flip", action="store_true", help="no random horizontal flips")
    d.add_argument("--serial_batches", action="store_true", help="take images in order and pair A[i] with B[i]")
    d.add_argument("--batch_size", type=int, default=1, help="images per step (per process under torchrun)")
    d.add_argument("--display_winsize", type=int, default=256, help="the largest size images are shown at on the "
                   "HTML pages, in pixels")


def build_train_parser(prog: str = "cyclegan-culture train") -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog, description="Train a CycleGAN on unpaired images.")
    _add_common(p, training=True)

    t = p.add_argument_group("training")
    t.add_argument("--n_epochs", type=int, default=100, help="epochs at the starting learning rate")
    t.add_argument("--n_epochs_decay", type=int, default=100, help="epochs to decay the learning rate to zero")
    t.add_argument("--epoch_count", type=int, default=1, help="number of the first epoch")
    t.add_argument("--continue_train", action="store_true", help="resume from the run's full training state; flags "
                   "not given take the run's values (docs/reliability.md: which flags may change)")
    t.add_argument("--start_over", action="store_true", help="train afresh in a run folder that already holds "
                   "weights or a training state: its files are first moved into RUN/superseded-<time>/")
    t.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"],
                   help="for generators and discriminators alike")
    t.add_argument("--lr", type=float, default=0.0002, help="initial learning rate")
    t.add_argument("--beta1", type=float, default=0.5, help="Adam's beta1 (SGD's momentum)")
    t.add_argument("--weight_decay", type=float, default=0.0, help="the optimizer's weight decay")
    t.add_argument("--lr_policy", default="linear", choices=["linear", "step", "plateau", "cosine"],
                   help="linear: constant for --n_epochs, then to zero over --n_epochs_decay; step: /10 every "
                   "--lr_decay_iters epochs; plateau: x0.2 when the generator loss stalls; cosine over --n_epochs")
    t.add_argument("--lr_decay_iters", type=int, default=50, help="step policy: decay by 10x every this many epochs")
    t.add_argument("--gan_mode", default="lsgan", choices=GAN_MODES,
                   help="the adversarial loss: least squares (the reference's), cross-entropy, WGAN-GP, hinge")
    t.add_argument("--lambda_gp", type=float, default=10.0, help="gradient penalty weight for wgangp")
    t.add_argument("--lambda_r1", type=float, default=0.0, help="weight (gamma) of the R1 penalty: the "
                   "discriminators' squared gradient on real images, so that a few dozen paintings are not learnt "
                   "by heart; keep it small (at 128 px 0.001 already holds them flat) (0: off)")
    t.add_argument("--spectral_norm", action="store_true", help="spectral normalisation of the discriminators' "
                   "convolutions: another way to keep them from overfitting small datasets")
    t.add_argument("--lambda_A", type=float, default=10.0, help="weight of cycle loss A -> B -> A")
    t.add_argument("--lambda_B", type=float, default=10.0, help="weight of cycle loss B -> A -> B")
    t.add_argument("--lambda_identity", type=float, default=0.5,
                   help="identity loss weight, relative to lambda_A/lambda_B (0 disables)")
    t.add_argument("--pool_size", type=int, default=50, help="replay buffer of generated images (0 disables)")
    t.add_argument("--diffaugment", default="", help="augment every image the discriminators see, real and "
                   "generated, differentiably (DiffAugment): a comma list of color, translation, cutout; "
                   "keeps small datasets (60-800 paintings) from being memorised")
    t.add_argument("--ema_decay", type=float, default=0.0, help="keep an exponential moving average of each "
                   "generator's weights (e.g. 0.999) and translate with it: smoother, steadier results (0: off)")
    t.add_argument("--lambda_edge", type=float, default=0.0, help="weight of the edge loss: the translation keeps "
                   "the main edges of its source (Sobel, at half size) as strokes (0: off)")
    t.add_argument("--lambda_tone", type=float, default=0.0, help="weight of the tone loss: the translation keeps "
                   "which parts of its source are lighter than which (grey, at quarter size, standardised), colour "
                   "and contrast left free; unlike the edge loss it forbids inverted tones (0: off)")
    t.add_argument("--lambda_flat", type=float, default=0.0, help="weight of the flat-colour loss: small colour "
                   "steps between neighbouring pixels of the translation cost, strong ones (outlines) do not, so "
                   "areas go flat inside their lines, as in woodblock prints (0: off)")
    t.add_argument("--lambda_sky", type=float, default=0.0, help="weight of the graded-sky loss: where the photo "
                   "has sky (smooth blocks from the top down), the translation's colour should change only from row "
                   "to row, flat or graded as in a woodblock print's bokashi sky (0: off)")
    t.add_argument("--lambda_NCE", type=float, default=None, help="--model cut/fastcut: weight of the patchwise "
                   "contrastive loss that keeps the photo's content (CUT's flag; default: cut 1, fastcut 10)")
    t.add_argument("--lambda_inkwash", type=float, default=0.0, help="weight of the ink-wash discriminator (the "
                   "idea of ChipGAN): a third discriminator sees the target culture's paintings and the translations "
                   "grey and blurred, so that only how the ink spreads and grades is judged (0: off)")
    t.add_argument("--lambda_contour", type=float, default=0.0, help="weight of the contour discriminator (for "
                   "ukiyo-e): another discriminator sees only the edge maps of the target culture's paintings and of "
                   "the translations, so that thin strong outlines around flat areas are judged on their own (0: off)")
    t.add_argument("--lambda_strokes", type=float, default=0.0, help="weight of the stroke discriminator (for "
                   "impressionism): another discriminator sees only the fine colour detail (the image minus its "
                   "blur), so that the texture of broken brush strokes is judged on its own (0: off)")
    t.add_argument("--eval_freq", type=int, default=0, help="every this many epochs, measure content SSIM, style "
                   "score and cycle PSNR on a fixed subset of photos (0: never)")
    t.add_argument("--early_stop_patience", type=int, default=0, help="stop when --early_stop_metric has not "
                   "improved for this many evaluations (0: never); the best weights are kept as best_net_*.pth")
    t.add_argument("--early_stop_metric", default="style_score", choices=EARLY_STOP_METRICS,
                   help="what --eval_freq's evaluations keep the best weights by (higher is better); judge_score "
                   "and judge_probability need --judge")
    t.add_argument("--judge", default=None, help="a culture judge folder (cyclegan-culture judge train): "
                   "--eval_freq's evaluations then report judge_score and judge_probability on the dataset's testA "
                   "photos, the share of translations it takes for the culture and its mean probability of it")
    t.add_argument("--finetune_from", default=None, help="start from another run's weights (a run folder)")
    t.add_argument("--finetune_epoch", default="latest", help="which of its checkpoints: latest or an epoch")
    t.add_argument("--freeze", nargs="*", default=[], help="keep these fixed: G_A, G_B, D_A, D_B, or generator "
                   "parts G_A.encoder, G_A.blocks, G_A.decoder (and G_B.*)")

    o = p.add_argument_group("output")
    o.add_argument("--print_freq", type=int, default=100, help="log losses every this many images")
    o.add_argument("--display_freq", type=int, default=400, help="save training visuals every this many images")
    o.add_argument("--update_html_freq", type=int, default=1000, help="rewrite web/index.html every this many images")
    o.add_argument("--no_html", action="store_true", help="do not write web/index.html")
    o.add_argument("--save_latest_freq", type=int, default=5000, help="save latest weights and full state "
                   "every this many images")
    o.add_argument("--save_epoch_freq", type=int, default=5, help="keep <epoch>_net_*.pth every this many epochs")
    o.add_argument("--save_by_iter", action="store_true", help="every --save_latest_freq images, also keep the "
                   "weights as iter_<N>_net_*.pth (test.py --load_iter N loads them)")
    o.add_argument("--tensorboard", action="store_true", help="also log losses, learning rates, speed, visuals and "
                   "the options as TensorBoard event files in RUN/tensorboard (pip install tensorboard)")

    v = p.add_argument_group("live monitoring (Visdom; start the server with `cyclegan-culture visdom`)")
    v.add_argument("--display_id", type=int, default=0, help="> 0 sends losses and images to Visdom; 0 disables")
    v.add_argument("--display_server", default="http://localhost", help="the Visdom server's address")
    v.add_argument("--display_port", type=int, default=8097, help="the Visdom server's port")
    v.add_argument("--display_env", default=None, help="Visdom environment (default: the run's --name)")
    v.add_argument("--display_ncols", type=int, default=4, help="images per row in the Visdom grid")
    return p


def build_test_parser(prog: str = "cyclegan-culture test") -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog, description="Translate a dataset's test images and write an HTML gallery. "
                       "With --compare first: the culture comparison page (test.py --compare --help).")
    _add_common(p, training=False)
    o = p.add_argument_group("output")
    o.add_argument("--compare", action="store_true", help="as the first flag: render photos with several runs side "
                   "by side instead (test.py --compare --models RUN... --photos DIR; see test.py --compare --help)")
    o.add_argument("--results_dir", default="./results", help="where galleries are written")
    o.add_argument("--num_test", type=int, default=None, help="translate at most this many images per domain "
                   "(default: all; the reference's: 50)")
    o.add_argument("--aspect_ratio", type=float, default=1.0, help="stretch the saved images' width by this "
                   "factor (below 1: their height by its inverse), as the reference does")
    o.add_argument("--test_preprocess", default="keep_size", choices=["keep_size", "as_train"],
                   help="keep_size: translate each image at its own size; as_train: resize/crop as in "
                   "training, as the reference does")
    return p


def _explicit_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations the user set on the command line (so presets and opt.json never override them)."""
    explicit = set()
    by_flag = {s: a.dest for a in parser._actions for s in a.option_strings}
    if isinstance(parser, ArgumentParser):
        argv = parser.spelled_as_defined(argv)
    for token in argv:
        if token.startswith("--"):
            dest = by_flag.get(token.split("=", 1)[0])
            if dest:
                explicit.add(dest)
    return explicit


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse, apply the preset, fill defaults that depend on others, and validate. Raises UserError."""
    opt = parser.parse_args(argv)
    opt._explicit = _explicit_flags(parser, argv)
    preset = getattr(opt, "preset", None)
    if preset:
        for key, value in PRESETS[preset].items():
            if key not in opt._explicit:
                setattr(opt, key, value)
        culture = preset_settings(opt.dataroot, preset) if opt.dataroot else {}
        chosen = {k: v for k, v in culture.items() if k not in opt._explicit}
        if chosen.get("model", "cycle_gan") not in MODELS:
            raise UserError(f"{Path(opt.dataroot) / CULTURE_FILE}: preset {preset} names model {chosen['model']!r}; "
                            f"choose one of: {', '.join(sorted(MODELS))}")
        if chosen.get("gan_mode", "lsgan") not in GAN_MODES:
            raise UserError(f"{Path(opt.dataroot) / CULTURE_FILE}: preset {preset} names gan_mode "
                            f"{chosen['gan_mode']!r}; choose one of: {', '.join(GAN_MODES)}")
        for key, value in chosen.items():
            setattr(opt, key, value)
        if chosen:
            print(f"--preset {preset}: {Path(opt.dataroot) / CULTURE_FILE} sets "
                  + " ".join(f"--{k} {v if isinstance(v, str) else format(v, 'g')}" for k, v in chosen.items())
                  + " for this culture")
        _drop_critics_the_model_lacks(opt, chosen)
    if opt.name is None:
        if not opt.dataroot:
            raise UserError("--name or --dataroot is required")
        opt.name = Path(opt.dataroot.rstrip("/\\")).name or "experiment"
    if opt.suffix:  # the reference's: name + "_" + suffix formatted with the options
        try:
            opt.name = f"{opt.name}_{opt.suffix.format(**vars(opt))}"
        except (KeyError, IndexError, ValueError) as exc:
            raise UserError(f"--suffix {opt.suffix!r}: cannot format it with the options ({exc}); use option "
                            "names in braces, e.g. {netG}_size{load_size}") from None
        opt.suffix = ""  # applied once: opt.json records the full name
    if opt.load_iter < 0:
        raise UserError(f"--load_iter must be 0 or more, got {opt.load_iter}")
    if opt.load_iter > 0:  # the reference's load suffix
        opt.epoch = f"iter_{opt.load_iter}"
    if "n_layers_D" in opt._explicit and getattr(opt, "netD", "n_layers") != "n_layers":
        # the reference ignores it silently; a run trained believing otherwise is an hour lost
        print(f"note: --n_layers_D {opt.n_layers_D} has no effect with --netD {opt.netD} (basic has 3 layers, "
              "pixel 1); add --netD n_layers to use it")
    if opt.use_wandb:
        print("note: --use_wandb: Weights & Biases is not supported (it needs the internet); use --tensorboard "
              "(train.py) or Visdom (--display_id 1) to watch training")
    if opt.dataset_mode in ("aligned", "colorization"):
        raise UserError(f"--dataset_mode {opt.dataset_mode}: that is pix2pix's data; CycleGAN learns from unaligned "
                        "data (PHASEA and PHASEB folders, --dataset_mode unaligned)")
    opt.gpu_ids = parse_gpu_ids(opt.gpu_ids)
    return opt


def _drop_critics_the_model_lacks(opt: argparse.Namespace, chosen: dict) -> None:
    """A culture's preset is written for its own model family: guohua's ink-wash critic is CycleGAN's, so a --model
    cut typed over it trains without it (with a note) instead of failing. A weight the user typed is still refused
    by validate_train."""
    model = MODELS.get(getattr(opt, "model", "cycle_gan"))
    if model is None or "BtoA" in model.GENERATORS:
        return
    for critic in VIEW_CRITICS:
        if chosen.get(critic.weight):
            setattr(opt, critic.weight, 0.0)
            print(f"note: --model {opt.model} has no discriminator for {critic.trait}, so the preset's "
                  f"--{critic.weight} is left out")


def validate_model(opt: argparse.Namespace) -> None:
    """Check the network flags; every message names the flag and the accepted values."""
    if opt.netG not in NETG_CHOICES:
        raise UserError(f"--netG {opt.netG!r} is unknown; choose one of: {', '.join(NETG_CHOICES)}")
    if opt.netD not in NETD_CHOICES:
        raise UserError(f"--netD {opt.netD!r} is unknown; choose one of: {', '.join(NETD_CHOICES)}")
    if opt.norm not in NORM_CHOICES:
        raise UserError(f"--norm {opt.norm!r} is unknown; choose one of: {', '.join(NORM_CHOICES)}")
    for flag in ("ngf", "ndf", "n_layers_D", "input_nc", "output_nc"):
        if getattr(opt, flag) <= 0:
            raise UserError(f"--{flag} must be a positive number, got {getattr(opt, flag)}")
    for flag in ("input_nc", "output_nc"):
        if getattr(opt, flag) != 3:
            raise UserError(f"--{flag} {getattr(opt, flag)}: only RGB images (3 channels) are supported; "
                            "greyscale photos are read as RGB, so leave it at 3")


def min_image_size(opt: argparse.Namespace) -> int:
    """The smallest training image the networks can take: the generator's two stride-2 steps and the reflection
    padding of its bottleneck need 8 px; a PatchGAN of n stride-2 layers followed by two 4x4 stride-1 layers
    needs 3 * 2^n px, or its last normalised map has a single value."""
    if opt.netD == "pixel":
        return 8
    return max(8, 3 * 2 ** (opt.n_layers_D if opt.netD == "n_layers" else 3))


def validate_data(opt: argparse.Namespace) -> None:
    if opt.preprocess not in PREPROCESS_CHOICES:
        raise UserError(f"--preprocess {opt.preprocess!r} is unknown; choose one of: {', '.join(PREPROCESS_CHOICES)}")
    for flag in ("load_size", "crop_size", "batch_size"):
        if getattr(opt, flag) <= 0:
            raise UserError(f"--{flag} must be a positive number, got {getattr(opt, flag)}")
    if opt.num_threads < 0:
        raise UserError(f"--num_threads must be 0 or more, got {opt.num_threads}")
    if opt.max_dataset_size is not None and opt.max_dataset_size <= 0:
        raise UserError(f"--max_dataset_size must be a positive number, got {opt.max_dataset_size}")
    levels = {"unet_128": 7, "unet_256": 8}.get(opt.netG)
    if levels and "crop" in opt.preprocess and opt.crop_size % 2 ** levels:
        raise UserError(f"--crop_size {opt.crop_size}: --netG {opt.netG} halves images {levels} times, so crops must "
                        f"be a multiple of {2 ** levels} (e.g. --crop_size {2 ** levels})")
    if levels and getattr(opt, "upsample", "transpose") != "transpose":
        raise UserError(f"--upsample {opt.upsample}: --netG {opt.netG} upsamples by transposed convolutions only; "
                        "drop --upsample or use a resnet generator")
    if "crop" in opt.preprocess and opt.crop_size % 4:
        raise UserError(f"--crop_size {opt.crop_size} must be a multiple of 4 (the generator halves it twice); "
                        f"use {opt.crop_size - opt.crop_size % 4 or 4} or {opt.crop_size + 4 - opt.crop_size % 4}")
    if "crop" in opt.preprocess and opt.crop_size < min_image_size(opt):
        raise UserError(f"--crop_size {opt.crop_size} is too small for --netD {opt.netD}"
                        + (f" --n_layers_D {opt.n_layers_D}" if opt.netD == "n_layers" else "")
                        + f": use at least {min_image_size(opt)}")
    if "crop" in opt.preprocess and opt.preprocess != "crop" and opt.crop_size > opt.load_size:
        raise UserError(f"--crop_size {opt.crop_size} is larger than --load_size {opt.load_size} with "
                        f"--preprocess {opt.preprocess}; make --load_size at least --crop_size")
    validate_run_name(opt.name)


def validate_train(opt: argparse.Namespace) -> None:
    validate_model(opt)
    validate_data(opt)
    if opt.dataset_mode != "unaligned":
        raise UserError(f"--dataset_mode {opt.dataset_mode}: training needs unaligned data (PHASEA and PHASEB "
                        "folders); single is for test.py")
    if opt.eval_freq < 0 or opt.early_stop_patience < 0:
        raise UserError("--eval_freq and --early_stop_patience must be 0 or more")
    one_way = "BtoA" not in MODELS[opt.model].GENERATORS
    if one_way and opt.gan_mode == "wgangp":
        raise UserError(f"--model {opt.model} trains with lsgan, vanilla or hinge; --gan_mode wgangp is CycleGAN's only")
    for critic in VIEW_CRITICS:
        if one_way and getattr(opt, critic.weight):
            raise UserError(f"--{critic.weight}: --model {opt.model} has no discriminator for {critic.trait}; it is "
                            "CycleGAN's only")
    if one_way and opt.early_stop_metric == "cycle_psnr":
        raise UserError(f"--early_stop_metric cycle_psnr: --model {opt.model} has no way back (no cycle); use "
                        "style_score, content_ssim or judge_score")
    if opt.early_stop_metric.startswith("judge_") and not opt.judge:
        raise UserError(f"--early_stop_metric {opt.early_stop_metric} needs --judge (a folder from cyclegan-culture "
                        "judge train)")
    if opt.early_stop_patience and not opt.eval_freq:
        raise UserError("--early_stop_patience needs --eval_freq (how often to evaluate)")
    for flag in ("n_epochs", "n_epochs_decay", "pool_size", "print_freq", "display_freq", "update_html_freq",
                 "save_latest_freq", "save_epoch_freq", "lr_decay_iters"):
        value = getattr(opt, flag)
        if value < 0 or (value == 0 and flag not in ("n_epochs_decay", "pool_size")):
            raise UserError(f"--{flag} must be {'0 or more' if flag in ('n_epochs_decay', 'pool_size') else 'positive'}"
                            f", got {value}")
    if opt.epoch_count < 1:
        raise UserError(f"--epoch_count must be 1 or more (the number of the first epoch), got {opt.epoch_count}")
    if opt.n_epochs + opt.n_epochs_decay < 1:
        raise UserError("--n_epochs plus --n_epochs_decay must be at least 1")
    if opt.lr <= 0:
        raise UserError(f"--lr must be positive, got {opt.lr}")
    if opt.lambda_A < 0 or opt.lambda_B < 0 or opt.lambda_identity < 0:
        raise UserError("--lambda_A, --lambda_B and --lambda_identity must be 0 or more")
    for flag in ("lambda_edge", "lambda_tone", "lambda_flat", "lambda_sky", "lambda_r1",
                 *(critic.weight for critic in VIEW_CRITICS)):
        if getattr(opt, flag) < 0:
            raise UserError(f"--{flag} must be 0 or more (0: off), got {getattr(opt, flag)}")
    if opt.lambda_NCE is not None and opt.lambda_NCE <= 0:
        raise UserError(f"--lambda_NCE must be positive (it keeps the photo's content), got {opt.lambda_NCE}")
    # typed only: a culture's preset may give CUT's weight and still be trained with a --model cycle_gan the user typed
    if "lambda_NCE" in getattr(opt, "_explicit", ()) and not hasattr(MODELS[opt.model], "lambda_nce"):
        raise UserError(f"--lambda_NCE: --model {opt.model} has no contrastive loss; it is CUT's and FastCUT's")
    if not 0 <= opt.ema_decay < 1:
        raise UserError(f"--ema_decay must be in [0, 1), e.g. 0.999, got {opt.ema_decay}")
    try:
        parse_policy(opt.diffaugment)
    except ValueError as exc:
        raise UserError(f"--diffaugment: {exc}") from None


def validate_run_name(name: str) -> None:
    """A run name is one folder name: it may not climb out of --checkpoints_dir or --results_dir."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise UserError(f"--name {name!r} must be a plain folder name (no '/', '\\', or leading '.')")


def options_dict(opt: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in sorted(vars(opt).items()) if not k.startswith("_")}


def format_options(opt: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """The reference's opt.txt layout, marking values that differ from the default."""
    lines = ["----------------- Options ---------------"]
    for key, value in options_dict(opt).items():
        default = parser.get_default(key)
        note = f"\t[default: {default}]" if value != default and default is not None else ""
        lines.append(f"{key:>25}: {str(value):<30}{note}")
    lines.append("----------------- End -------------------")
    return "\n".join(lines) + "\n"


def execution_plan(opt: argparse.Namespace, device: torch.device, training: bool) -> ExecutionPlan:
    """The one place where the speed flags become an execution plan (cyclegan_culture.accel)."""
    try:
        return make_plan(device, getattr(opt, "amp", False), getattr(opt, "channels_last", "off"),
                         getattr(opt, "conv_algorithm", "auto"), getattr(opt, "compile", False), opt.norm, training,
                         getattr(opt, "autotune", None))
    except PlanError as exc:
        raise UserError(f"--{exc.setting}: {exc}") from None


def save_options(opt: argparse.Namespace, parser: argparse.ArgumentParser, run_dir: Path,
                 prefix: str = "") -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / f"{prefix}opt.txt", format_options(opt, parser))
    atomic_write_text(run_dir / f"{prefix}opt.json", json.dumps(options_dict(opt), indent=2, ensure_ascii=False))


