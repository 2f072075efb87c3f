"""What every ``s2d`` subcommand shares: the help layout, one flag name per concept, the
MLflow store of a workdir, and bad input turned into one line that names the fix."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import ClassVar

from s2d_ray.tracking import TrackingConfig
from s2d_ray.tracking.config import experiment_for

DEFAULT_WORKDIR = "work"
MICRO_BATCH_HELP = "clips per forward/backward: auto (by clip size), all, or a number"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written (it holds examples), every flag's default shown; a flag
    without a fixed default says in its own help what it falls back to."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown = "%(default)" in text or "default" in text.lower()
        silent = default is None or isinstance(default, bool) or default in ([], argparse.SUPPRESS)
        if shown or not action.option_strings or silent:  # a switch's default is its absence
            return text
        return f"{text} (default: %(default)s)"


class UsageError(ValueError):
    """A command line that cannot work as given; the message names the flag and the fix."""


def micro_batch_arg(value: str) -> int | str | None:
    """``--micro-batch`` values: "auto", "all" (None: never split) or a clip count."""
    if value in ("auto", "all"):
        return None if value == "all" else value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, all or a number: {value!r}") from None


class _EarlierSpelling(argparse.Action):
    """A flag's earlier name (DESIGN.md: a flag, once shipped, keeps working): it sets what
    the current flag sets and says once, on stderr, which flag replaced it."""

    told: ClassVar[set[str]] = set()  # each earlier spelling is pointed out once per process

    def __init__(self, option_strings, dest, current: str, **kwargs) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.current = current

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if option_string not in self.told:
            self.told.add(option_string)
            print(
                f"{parser.prog}: note: {option_string} is now {self.current}; the earlier "
                "spelling still works",
                file=sys.stderr,
            )
        setattr(namespace, self.dest, values)


def add_earlier_spellings(p: argparse.ArgumentParser, spellings: dict[str, str]) -> None:
    """Each earlier flag name of ``spellings`` (old -> current) accepted as the current one
    (same destination and type), hidden from --help."""
    actions = {o: a for a in p._actions for o in a.option_strings}
    for old, current in spellings.items():
        action = actions[current]
        p.add_argument(
            old,
            dest=action.dest,
            type=action.type,
            action=_EarlierSpelling,
            current=current,
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )


def add_data(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--data",
        required=required,
        help="clip shards: the folder (or s3://... URI) that `s2d prepare --out` wrote",
    )


def add_device_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1")
    p.add_argument("--seed", type=int, default=0, help="the same seed reproduces the result")


def add_tracking(p: argparse.ArgumentParser, workdir: str = DEFAULT_WORKDIR) -> None:
    p.add_argument(
        "--workdir",
        default=workdir,
        help="this machine's working folder; its mlflow.db is the MLflow store every "
        "command of a project logs to",
    )
    p.add_argument(
        "--mlflow-uri",
        help="MLflow store or server (default: $MLFLOW_TRACKING_URI, else <workdir>/mlflow.db)",
    )
    p.add_argument("--no-mlflow", action="store_true", help="log nothing to MLflow")


def add_eval(p: argparse.ArgumentParser, *, repeats: int = 3) -> None:
    """The evaluation protocol's flags, named alike wherever a command evaluates."""
    p.add_argument(
        "--eval-epochs",
        type=int,
        help="epochs each evaluation network trains (default: 500, or the set's own: FRePo "
        "1000; 100 on a cross-architecture network)",
    )
    p.add_argument(
        "--eval-lr",
        type=float,
        help="evaluation learning rate (default: 0.01, or the set's own: MTT's learnt syn_lr, "
        "FRePo 1e-4; 0.01 on a cross-architecture network)",
    )
    p.add_argument(
        "--eval-repeats",
        type=int,
        default=repeats,
        help="fresh networks trained per evaluation (mean ± std over them)",
    )
    p.add_argument(
        "--eval-micro-batch", type=micro_batch_arg, default="auto", help=MICRO_BATCH_HELP
    )
    p.add_argument(
        "--eval-max-grad-norm",
        type=float,
        metavar="NORM",
        help="cap each update's gradient L2 norm (e.g. 20: sets of a few clips, where one "
        "full-batch step an epoch can run away to NaN); default: unbounded, the reference's",
    )


def workdir_of(args: argparse.Namespace) -> Path:
    return Path(os.path.expanduser(getattr(args, "workdir", None) or DEFAULT_WORKDIR)).resolve()


def tracking_for(args: argparse.Namespace, dataset: str) -> TrackingConfig:
    """The workdir's store (or the one given) for ``dataset``'s experiment."""
    return TrackingConfig.create(
        workdir_of(args),
        experiment_for(dataset, getattr(args, "smoke_test", False)),
        cli_uri=args.mlflow_uri,
        enabled=not args.no_mlflow,
    )


def dataset_name(data: str) -> str:
    from s2d_ray.data.stream import ClipShards

    return ClipShards(data).manifest["dataset"]


def print_tracking(tracking: TrackingConfig, run_id: str | None, what: str = "run") -> None:
    """Where the run is and how to open it: the store, the `mlflow ui` command, the URL."""
    from s2d_ray.tracking import ui_hint

    for line in ui_hint(tracking, run_id, what):
        print(line)
