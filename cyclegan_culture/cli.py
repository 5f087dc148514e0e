"""The command line: ``cyclegan-culture <command> [flags]``; train.py and test.py call into it."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Callable, Sequence

from cyclegan_culture.errors import UserError, error_prefix


# how the user started us, for the "see ... --help" of error lines: train.py / test.py, or the command
_PROGS = {"train": "cyclegan-culture train", "test": "cyclegan-culture test"}


def _train(argv: list[str]) -> int:
    from cyclegan_culture import options
    from cyclegan_culture.engine.trainer import Trainer

    parser = options.build_train_parser(_PROGS["train"])
    opt = options.parse(parser, argv)
    result = Trainer(opt, parser).run()
    if not result.interrupted:
        return 0
    return 128 + int(result.stop_signal) if result.stop_signal else 130  # the shell's convention for signals


def _test(argv: list[str]) -> int:
    from cyclegan_culture import options
    from cyclegan_culture.engine.tester import run_test

    if "--compare" in argv:  # test.py --compare --models ... [--photos DIR]: the culture comparison page
        rest = [a for a in argv if a != "--compare"]
        return _compare(rest, via_test=True)
    opt = options.parse(options.build_test_parser(_PROGS["test"]), argv)
    run_test(opt)
    return 0


def _inference_flags(p) -> None:
    from cyclegan_culture.backends import BACKEND_HELP, BACKENDS

    p.add_argument("--epoch", default="latest", help="which checkpoint: latest, best (kept by --eval_freq's "
                   "evaluations) or an epoch number")
    p.add_argument("--tile", type=int, default=512, help="translate large images in tiles of this many pixels "
                   "(0: whole image at once)")
    p.add_argument("--overlap", type=int, default=64, help="pixels by which tiles overlap and are blended")
    p.add_argument("--amp", action="store_true", help="bf16 on CPU / fp16 on CUDA (faster, slightly different)")
    p.add_argument("--gpu_ids", default=None, help="-1 for CPU (default: first GPU if any)")
    p.add_argument("--backend", default="pytorch", choices=BACKENDS, help=BACKEND_HELP + "; images larger than "
                   "--tile and videos run on PyTorch")


def _stylize(argv: list[str]) -> int:
    from pathlib import Path

    from cyclegan_culture.devices import device_for
    from cyclegan_culture.engine.stylize import stylize_paths
    from cyclegan_culture.engine.video import check_video_target, stylize_video, video_output
    from cyclegan_culture.inference import Stylizer
    from cyclegan_culture.options import ArgumentParser
    from cyclegan_culture.video.io import is_video_file
    from cyclegan_culture.video.stability import DEFAULTS as VIDEO_DEFAULTS, StabilityOptions

    p = ArgumentParser(prog="cyclegan-culture stylize",
                       description="Translate images (files or folders, recursively) at their own size, and video "
                                   "clips (.mp4, .mov, .mkv, ...; the [video] extra) into clips.")
    p.add_argument("inputs", nargs="+", help="image files, folders of images, video files")
    p.add_argument("--out", "--output", dest="output", required=True, help="folder for the results (relative paths are kept); it may not "
                   "hold the inputs unless --suffix is given")
    p.add_argument("--suffix", default=None, help="add this to each output's name (photo.jpg -> photo_SUFFIX.jpg); "
                   "lets --out be the inputs' own folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--culture", help="an installed culture (cyclegan-culture cultures lists them), or all: "
                     "one rendering per culture, in OUTPUT/<culture>/")
    src.add_argument("--model", help="a run folder, e.g. checkpoints/photo2guohua (options from its opt.json)")
    src.add_argument("--checkpoint", help="a bare generator file, e.g. the reference's latest_net_G_A.pth")
    p.add_argument("--direction", default="AtoB", choices=["AtoB", "BtoA"], help="AtoB uses G_A, BtoA uses G_B")
    _inference_flags(p)
    video = p.add_argument_group("video (docs/video.md)")
    video.add_argument("--temporal_window", type=int, default=VIDEO_DEFAULTS.window, help="pool the normalisation "
                       "statistics over this many frames (1: each frame its own)")
    video.add_argument("--flow_blend", type=float, default=VIDEO_DEFAULTS.blend, help="blend this much of the "
                       "previous stylized frame, moved along the optical flow, into each frame (0: off)")
    video.add_argument("--overwrite", action="store_true", help="replace an existing output video")
    model = p.add_argument_group("architecture (for --checkpoint, or to override a run's opt.json)")
    model.add_argument("--netG", help="resnet_9blocks, resnet_6blocks, unet_256 or unet_128 (default: the run's, "
                       "else resnet_9blocks)")
    model.add_argument("--ngf", type=int, help="generator filters (default: the run's, else 64)")
    model.add_argument("--norm", help="instance, batch or none (default: the run's, else instance)")
    model.add_argument("--upsample", choices=["transpose", "resize"], help="default: the run's, else transpose")
    model.add_argument("--use_dropout", action="store_true", default=None, help="the generator has dropout")
    model.add_argument("--no_dropout", action="store_true", default=None, help="it has none (the default)")
    args = p.parse_args(argv)
    flags = {k: getattr(args, k) for k in ("netG", "ngf", "norm", "upsample", "use_dropout", "no_dropout")
             if getattr(args, k) is not None}
    common = dict(device=device_for(args.gpu_ids), amp=args.amp, tile=args.tile, overlap=args.overlap,
                  backend=args.backend)
    videos = [Path(a) for a in args.inputs if Path(a).is_file() and is_video_file(Path(a))]
    images = [a for a in args.inputs if not (Path(a).is_file() and is_video_file(Path(a)))]
    stability = StabilityOptions(args.temporal_window, args.flow_blend).check()
    targets = [video_output(video, Path(args.output), args.suffix) for video in videos]
    if len(set(targets)) < len(targets):  # two clips of one name would write (with --overwrite, replace) one file
        raise UserError(f"--out {args.output}: two input videos would both be written as "
                        f"{next(t for t in targets if targets.count(t) > 1).name}; rename one or stylize them "
                        "separately (nothing was written)")
    for video, target in zip(videos, targets) if args.culture != "all" else []:  # before any work
        check_video_target(video, target, args.overwrite)

    def run(stylizer: Stylizer, output: Path) -> None:
        if images:
            stylize_paths(stylizer, images, output, args.suffix)
        for video in videos:
            stylize_video(stylizer, video, video_output(video, output, args.suffix), stability, args.overwrite)

    if args.culture:
        from cyclegan_culture.pretrained import catalog

        keys = list(catalog.installed()) if args.culture == "all" else [catalog.find(args.culture).key]
        if not keys:
            raise UserError("--culture all: no cultures are installed (cyclegan-culture cultures add NAME --model RUN)")
        for key in keys:
            stylizer = Stylizer.from_pretrained(key, epoch="latest", direction=args.direction, **common, **flags)
            run(stylizer, Path(args.output) / key if args.culture == "all" else Path(args.output))
        return 0
    if args.model:
        stylizer = Stylizer.from_pretrained(args.model, epoch=args.epoch, direction=args.direction, **common,
                                            **flags)
    else:
        stylizer = Stylizer.from_checkpoint(args.checkpoint, **common, **flags)
    run(stylizer, Path(args.output))
    return 0


def _compare(argv: list[str], via_test: bool = False) -> int:
    from pathlib import Path

    from cyclegan_culture.devices import device_for
    from cyclegan_culture.engine.compare import load_models, run_compare
    from cyclegan_culture.options import ArgumentParser

    p = ArgumentParser(prog="test.py --compare" if via_test else "cyclegan-culture compare",
                       description="Render the same photos with several cultures' models, side by side.")
    p.add_argument("--photos", default=None, help="folder of photos (default with test.py: DATAROOT/testA)")
    p.add_argument("--dataroot", default=None, help="a dataset folder whose testA holds the photos")
    p.add_argument("--models", nargs="+", required=True, help="run folders, e.g. checkpoints/photo2guohua ...")
    p.add_argument("--out", default=None, help="output folder (default: RESULTS_DIR/compare_<model names>)")
    p.add_argument("--results_dir", default="./results", help="where the models' own test galleries are")
    _inference_flags(p)
    args = p.parse_args(argv)
    photos = args.photos or (str(Path(args.dataroot) / "testA") if args.dataroot else None)
    if photos is None:
        raise UserError("--photos is required (or --dataroot, whose testA is used)")
    models = load_models(args.models, args.epoch, device=device_for(args.gpu_ids), amp=args.amp, tile=args.tile,
                         overlap=args.overlap, backend=args.backend)
    out = Path(args.out) if args.out else Path(args.results_dir) / ("compare_" + "_".join(m.name for m in models))
    run_compare(Path(photos), models, out, Path(args.results_dir), args.epoch)
    return 0


def _export(argv: list[str]) -> int:
    from pathlib import Path

    from cyclegan_culture.export import default_output, export_generator, refuse_replacing_run_files
    from cyclegan_culture.inference import Stylizer
    from cyclegan_culture.options import ArgumentParser
    from cyclegan_culture.outputs import prepare_output_dir

    p = ArgumentParser(prog="cyclegan-culture export",
                       description="Export a run's generator (ONNX, torch.export's .pt2, or TorchScript), checked "
                                   "against PyTorch.")
    p.add_argument("--model", required=True, help="a run folder, e.g. checkpoints/photo2guohua")
    p.add_argument("--format", required=True, choices=["onnx", "exported_program", "torchscript"],
                   help="onnx: for ONNX Runtime, OpenVINO and other runtimes; exported_program: torch.export's "
                   ".pt2 (torch.export.load); torchscript: deprecated by PyTorch, kept for C++ libtorch users")
    p.add_argument("--out", default=None, help="output file (default: RUN/generator.onnx, .pt2 or .pt)")
    p.add_argument("--epoch", default="latest", help="which checkpoint: latest, best (kept by --eval_freq's "
                   "evaluations) or an epoch number")
    p.add_argument("--direction", default="AtoB", choices=["AtoB", "BtoA"], help="AtoB exports G_A, BtoA G_B")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else default_output(Path(args.model), args.format)
    refuse_replacing_run_files(out, Path(args.model), default_output(Path(args.model), args.format))
    prepare_output_dir(out.parent, "--out")
    stylizer = Stylizer.from_pretrained(args.model, epoch=args.epoch, direction=args.direction, device="cpu")
    result = export_generator(stylizer.generator, args.format, out)
    print(f"Exported {result.path} ({args.format}); max abs difference from PyTorch on a "
          f"{result.checked_size[0]}x{result.checked_size[1]} image: {result.max_abs_diff:.2e}")
    return 0


def _analyze(argv: list[str]) -> int:
    from pathlib import Path

    from cyclegan_culture.eval.analysis import analyze
    from cyclegan_culture.eval.judge import load_judge
    from cyclegan_culture.viz.report import write_report
    from cyclegan_culture.options import ArgumentParser
    from cyclegan_culture.outputs import prepare_output_dir, refuse_inside

    p = ArgumentParser(prog="cyclegan-culture analyze",
                       description="Measure how cultures' visual languages differ, in real art and in models' output.")
    p.add_argument("--datasets", nargs="+", required=True, help="dataset folders, e.g. datasets/photo2guohua ...")
    p.add_argument("--models", nargs="*", default=[], help="run folders whose translations to score")
    p.add_argument("--out", default="results/analysis", help="output folder (report, features.csv, summary.json)")
    p.add_argument("--max_images", type=int, default=None, help="at most this many images per group")
    p.add_argument("--epoch", default="latest", help="which checkpoint of each model: latest, best (kept "
                   "by --eval_freq's evaluations) or an epoch number")
    p.add_argument("--inception_weights", default=None,
                   help="FID/KID: torch-fidelity's Inception-v3 weights file (pt_inception-2015-12-05-6726825d.pth, "
                   "copied here by hand; nothing is downloaded); needs pip install torch-fidelity")
    p.add_argument("--judge", default=None, help="a culture judge folder (cyclegan-culture judge train): its "
                   "verdict on each model's translations is reported beside the feature classifier's")
    args = p.parse_args(argv)
    if args.max_images is not None and args.max_images <= 0:
        raise UserError(f"--max_images must be positive, got {args.max_images}")
    for dataset in args.datasets:
        refuse_inside(Path(args.out), Path(dataset), "--out", "the dataset")
    prepare_output_dir(Path(args.out), "--out", create=False)
    judge = load_judge(args.judge) if args.judge else None
    summary = analyze([Path(d) for d in args.datasets], [Path(m) for m in args.models], Path(args.out),
                      args.max_images, args.epoch, Path(args.inception_weights) if args.inception_weights else None,
                      write_report, judge)
    print(f"Classifier accuracy {summary['classifier']['accuracy']:.3f} over {len(summary['groups'])} groups; "
          f"report: {Path(args.out) / 'index.html'}")
    return 0


def _judge(argv: list[str]) -> int:
    from cyclegan_culture.options import ArgumentParser

    p = ArgumentParser(prog="cyclegan-culture judge",
                       description="A learned culture judge: train one on real art and photos, or score translations.")
    sub = p.add_subparsers(dest="action", required=True, parser_class=ArgumentParser)
    t = sub.add_parser("train", help="train a judge from scratch (CPU, minutes)")
    t.add_argument("--datasets", nargs="+", required=True, help="dataset folders (trainA/trainB + culture.json; "
                   "their test folders validate) or image folders named after their class (e.g. pool/guohua)")
    t.add_argument("--out", required=True, help="a new folder for judge.pt and judge.json, e.g. judges/pool")
    t.add_argument("--exclude", default=None, help="a text file of image file names never to train or validate on "
                   "(held-out photos)")
    t.add_argument("--size", type=int, default=64, help="the one scale the judge sees, in pixels")
    t.add_argument("--epochs", type=int, default=30, help="training epochs (40 for the pool judge of docs/quality.md)")
    t.add_argument("--seed", type=int, default=0, help="random seed: same seed, same judge")
    t.add_argument("--members", type=int, default=1, help="an ensemble of this many nets (seeds SEED, SEED+1, ...) "
                   "whose probabilities are averaged: steadier on small classes, N times the training time (3 for "
                   "the pool judge of docs/quality.md)")
    s = sub.add_parser("score", help="score folders of translations (and the floors) with a judge")
    s.add_argument("--judge", required=True, help="a judge folder (from judge train)")
    s.add_argument("--outputs", nargs="+", required=True, help="folders of translations, one row each")
    s.add_argument("--target", required=True, help="the culture the translations aim at, e.g. guohua")
    s.add_argument("--inputs", default=None, help="the source photos: adds content SSIM and the floor rows")
    s.add_argument("--art", default=None, help="real paintings of the target culture for the floors that borrow "
                   "from art (colour transfer, cross-fade)")
    s.add_argument("--report", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.action == "train":
        return _judge_train(args)
    return _judge_score(args)


def _judge_train(args) -> int:
    from pathlib import Path

    from cyclegan_culture.eval.judge import CONFIG_FILE, gather, train_judge
    from cyclegan_culture.outputs import prepare_output_dir

    out = Path(args.out)
    if (out / CONFIG_FILE).exists():
        raise UserError(f"--out {out}: already holds a judge; choose a new folder (nothing was written)")
    if args.size < 16 or args.epochs < 1 or args.members < 1:
        raise UserError("--size must be at least 16, --epochs and --members at least 1")
    exclude = set()
    if args.exclude:
        try:
            exclude = {line.strip() for line in Path(args.exclude).read_text(encoding="utf-8").splitlines()
                       if line.strip() and not line.startswith("#")}
        except OSError as exc:
            raise UserError(f"--exclude {args.exclude}: cannot read it ({exc.strerror})") from None
    items = gather([Path(d) for d in args.datasets], exclude)
    prepare_output_dir(out, "--out")
    judge, report = train_judge(items, size=args.size, epochs=args.epochs, seed=args.seed,
                                 members=args.members)
    judge.info["datasets"] = [str(d) for d in args.datasets]
    judge.info["excluded"] = len(exclude)
    judge.save(out)
    per_class = ", ".join(f"{c} {a:.2f}" for c, a in report["per_class"].items())
    balanced = report["balanced_accuracy"]
    print(f"Judge saved to {out}; validation balanced accuracy "
          f"{'n/a' if balanced is None else f'{balanced:.3f}'} on {report['images']} images ({per_class})")
    return 0


def _judge_score(args) -> int:
    import json
    from pathlib import Path

    from cyclegan_culture.eval.judge import load_judge
    from cyclegan_culture.eval.judge_score import score, table
    from cyclegan_culture.files import atomic_write_text
    from cyclegan_culture.outputs import refuse_file_inside

    if args.report:
        report = Path(args.report)
        if report.suffix.lower() != ".json":
            raise UserError(f"--report {report}: give a .json file name (nothing was written)")
        for folder in [*args.outputs, *([args.inputs] if args.inputs else []), *([args.art] if args.art else [])]:
            refuse_file_inside(report, Path(folder), "--report", "the images it scores")
    judge = load_judge(args.judge)
    rows = score(judge, [Path(o) for o in args.outputs], args.target, Path(args.inputs) if args.inputs else None,
                 Path(args.art) if args.art else None)
    print(table(rows, args.target))
    if args.report:
        atomic_write_text(Path(args.report), json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
    return 0


def _cultures(argv: list[str]) -> int:
    from pathlib import Path

    from cyclegan_culture.options import ArgumentParser
    from cyclegan_culture.pretrained import catalog

    p = ArgumentParser(prog="cyclegan-culture cultures",
                       description="The cultures installed for stylize --culture, the app and Stylizer.from_pretrained.")
    sub = p.add_subparsers(dest="action", parser_class=ArgumentParser)
    sub.add_parser("list", help="list them (the default)")
    add = sub.add_parser("add", help="install a trained run under a name")
    add.add_argument("name", help="e.g. guohua_mine (lower-case letters, digits, - and _)")
    add.add_argument("--model", required=True, help="the run folder, e.g. checkpoints/photo2guohua")
    add.add_argument("--epoch", default="latest", help="which checkpoint: latest, best (kept by --eval_freq's "
                   "evaluations) or an epoch number")
    rm = sub.add_parser("remove", help="uninstall a culture you added")
    rm.add_argument("name", help="the name it was added under")
    args = p.parse_args(argv)
    if args.action == "add":
        model = catalog.install(args.name, Path(args.model), args.epoch)
        print(f"Installed {model.culture.title()} as {model.key!r} in {model.folder}")
        return 0
    if args.action == "remove":
        print(f"Removed {catalog.remove(args.name)}")
        return 0
    models = catalog.installed()
    if not models:
        print("No cultures installed.")
    for key, model in models.items():
        culture = model.culture
        origin = "shipped" if model.shipped else f"yours: {model.folder}"
        print(f"{key:<14} {culture.title()} ({culture.region}; {origin})\n{'':<14} {model.summary()}")
    return 0


def _app(argv: list[str]) -> int:
    from cyclegan_culture.devices import device_for
    from cyclegan_culture.options import ArgumentParser

    p = ArgumentParser(prog="cyclegan-culture app",
                       description="A local web page: drop a photo, tick cultures, see and download each rendering.")
    p.add_argument("--port", type=int, default=7860, help="the port to serve the page on")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; only this computer can reach the "
                   "default (0.0.0.0 lets others on your network in)")
    p.add_argument("--gpu_ids", default=None, help="-1 for CPU (default: first GPU if any)")
    args = p.parse_args(argv)
    try:
        from cyclegan_culture.app import server
    except ImportError as exc:
        raise UserError(f"the app needs its extra ({exc.name} is missing): pip install \"cyclegan-culture[app]\"") \
            from None
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {args.host}: other computers that can reach it can use the app")
    print(f"cyclegan-culture app on http://{'127.0.0.1' if args.host == '0.0.0.0' else args.host}:{args.port} "
          "(Ctrl+C stops it)")
    server.serve(args.port, args.host, str(device_for(args.gpu_ids)))
    return 0


def _visdom(argv: list[str]) -> int:
    from cyclegan_culture.options import ArgumentParser
    from cyclegan_culture.viz import visdom_server

    p = ArgumentParser(prog="cyclegan-culture visdom",
                       description="Start a Visdom server for live monitoring (offline: its front-end files come "
                                   "from the npm registry, installed once, never from a CDN at start).")
    p.add_argument("--port", type=int, default=8097, help="the port to serve Visdom on (train.py's --display_port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; anything but 127.0.0.1/localhost "
                   "listens on all interfaces (protect it with --enable_login)")
    p.add_argument("--env_path", default=None, help="where Visdom keeps its environments (default: ~/.visdom)")
    p.add_argument("--enable_login", action="store_true", help="require the user name and password given in "
                   "VISDOM_USERNAME and VISDOM_PASSWORD")
    p.add_argument("--install_assets", action="store_true",
                   help="install the front-end files from npm and exit")
    p.add_argument("--npm", default="npm", help="the npm command")
    args = p.parse_args(argv)
    if args.install_assets:
        print(visdom_server.install(args.npm))
        return 0
    visdom_server.serve(args.port, args.host, args.env_path, args.enable_login, args.npm)
    return 0


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "train": (_train, "train a CycleGAN (same flags as train.py)"),
    "test": (_test, "translate test images and write an HTML gallery (same flags as test.py)"),
    "stylize": (_stylize, "translate your own images, any size (files or folders)"),
    "compare": (_compare, "the same photos rendered by several cultures' models, on one page"),
    "export": (_export, "export a generator to ONNX, torch.export (.pt2) or TorchScript"),
    "analyze": (_analyze, "measure how cultures differ, in real art and in models' translations"),
    "app": (_app, "a local web page: drop a photo, see it as each culture's art"),
    "cultures": (_cultures, "the cultures ready to use by name: list, add a trained run, remove"),
    "judge": (_judge, "a learned culture judge: train it, score translations against the floors"),
    "visdom": (_visdom, "start a Visdom server for live monitoring, offline (--install_assets: only install)"),
}


def _version() -> str:
    import platform

    from cyclegan_culture import __version__

    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    return f"cyclegan-culture {__version__} (torch {torch_version}, Python {platform.python_version()})"


def _usage() -> str:
    lines = ["usage: cyclegan-culture <command> [flags]   (cyclegan-culture <command> --help for its flags)",
             "       cyclegan-culture --version", "", "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; bad input ends with one line on stderr and exit status 2, never a traceback."""
    try:
        status = _main(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # the reader went away (`cyclegan-culture train --help | head`): stop quietly, as other tools do, and
        # keep Python's final flush of the closed pipe from printing a traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the shell's status for a closed pipe


def _main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if argv and argv[0] in ("-V", "--version"):
        print(_version())
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n{_usage()}", file=sys.stderr)
        return 2
    prefix = error_prefix()  # under torchrun: which rank failed
    try:
        if prefix != "error" and command != "train":
            raise UserError(f"{command} runs in one process; start it with python (or cyclegan-culture), not "
                            "torchrun: only training is data-parallel")
        return COMMANDS[command][0](rest)
    except UserError as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted; the last saved checkpoint is intact", file=sys.stderr)
        return 130
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except Exception as exc:
        if prefix == "error":
            raise
        from cyclegan_culture.engine.distributed import is_communication_error

        if not is_communication_error(exc):
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        reason = re.sub(r"^\[[^\]]*\]\s*", "", reason).split(". ")[0][:160]  # gloo's message minus its source path
        print(f"{prefix}: stopped because another rank failed or could not be reached ({reason}); the last "
              "saved checkpoint is intact", file=sys.stderr)
        return 1


def train_main() -> int:
    _PROGS["train"] = "train.py"
    return main(["train", *sys.argv[1:]])


def test_main() -> int:
    _PROGS["test"] = "test.py"
    return main(["test", *sys.argv[1:]])
