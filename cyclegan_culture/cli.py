"""The command line: ``cyclegan-culture <command> [flags]``; train.py and test.py call into it."""

from __future__ import annotations

import logging
import sys
from typing import Callable, Sequence

from cyclegan_culture.errors import UserError


def _train(argv: list[str]) -> int:
    from cyclegan_culture import options
    from cyclegan_culture.engine.trainer import Trainer

    parser = options.build_train_parser()
    opt = options.parse(parser, argv)
    if not opt.dataroot:
        raise UserError("--dataroot is required: the folder holding trainA and trainB")
    result = Trainer(opt, parser).run()
    return 130 if result.interrupted else 0


def _test(argv: list[str]) -> int:
    from cyclegan_culture import options
    from cyclegan_culture.engine.tester import run_test

    opt = options.parse(options.build_test_parser(), argv)
    run_test(opt)
    return 0


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "train": (_train, "train a CycleGAN (same flags as train.py)"),
    "test": (_test, "translate test images and write an HTML gallery (same flags as test.py)"),
}


def _usage() -> str:
    lines = ["usage: cyclegan-culture <command> [flags]   (cyclegan-culture <command> --help for its flags)", "",
             "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; bad input ends with one line on stderr and exit status 2, never a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n{_usage()}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command][0](rest)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; the last saved checkpoint is intact", file=sys.stderr)
        return 130
    except SystemExit as exc:  # --help
        return int(exc.code or 0)


def train_main() -> int:
    return main(["train", *sys.argv[1:]])


def test_main() -> int:
    return main(["test", *sys.argv[1:]])
