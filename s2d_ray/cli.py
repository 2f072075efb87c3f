"""s2d: every s2d-ray job as one command (also `python -m s2d_ray`).

    s2d prepare --dataset video-folder --root ~/videos --out work/mine --size 64
    s2d static --data work/mine --out work/static --spc 1
    s2d distill --method s2d-dm --data work/mine --static work/static --out work/s2d --ipc 1
    s2d evaluate work/s2d --data work/mine
    s2d tune --data work/mine                      # or: s2d tune --smoke-test
    s2d spaces ls

`s2d COMMAND --help` shows a command's flags and their defaults. Every command logs to the
MLflow store of its --workdir (./work) and prints how to open it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from s2d_ray import __version__
from s2d_ray.commands import COMMANDS
from s2d_ray.commands.common import HelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2d", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"s2d-ray {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"s2d_ray.commands.{name}")
        command = sub.add_parser(
            name, help=module.SUMMARY, description=module.__doc__, formatter_class=HelpFormatter
        )
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; bad input is one line naming the fix and exit code 2."""
    args = build_parser().parse_args(argv)
    quiet()
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError:  # `s2d spaces ls | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as exc:  # long work saved its state: the same command resumes
        print(f"s2d {args.command}: interrupted: {exc or 'stopped'}", file=sys.stderr)
        return 130
    except user_errors() as exc:
        print(f"s2d {args.command}: error: {describe(exc)}", file=sys.stderr)
        return 2


def user_errors() -> tuple[type[BaseException], ...]:
    """What bad input raises (a wrong flag, file or folder); anything else is a bug and
    keeps its traceback."""
    from pydantic import ValidationError

    from s2d_ray.cluster import ClusterUnreachable
    from s2d_ray.distill import DivergedError
    from s2d_ray.experts.store import StoreMismatchError
    from s2d_ray.files import StorageUnavailable
    from s2d_ray.methods.checkpoint import CheckpointMismatchError
    from s2d_ray.synthetic import NotADistilledSetError

    return (
        ValidationError,
        ValueError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        NotADistilledSetError,
        CheckpointMismatchError,
        StoreMismatchError,
        DivergedError,
        StorageUnavailable,  # a bucket that stopped answering: the URI, and run it again
        ClusterUnreachable,  # RAY_ADDRESS names a cluster that is gone: what to do instead
    )


def describe(exc: BaseException) -> str:
    """One line: a pydantic error as the flags it concerns, anything else as its message."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "not a setting of this method or command; drop it"
        where = ".".join(str(p) for p in error["loc"])
        got = error.get("input")
        shown = "" if error["type"] == "missing" or isinstance(got, dict) else f" (got {got!r})"
        parts.append(
            f"--{where.replace('_', '-').replace('.', '-')}: {message}{shown}" if where else message
        )
    return "; ".join(parts)


def quiet() -> None:
    """Quiet by default: one warning per place per process, no Ray colour codes in logs,
    Ray Data's and Ray Train's info messages off (their warnings stay)."""
    import os

    warnings.filterwarnings("once", category=UserWarning)
    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
        os.environ.setdefault("NO_COLOR", "1")
    for name in ("ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
