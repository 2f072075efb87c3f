"""List the search spaces that ship with s2d-ray, or copy one to edit.

    s2d spaces ls
    s2d spaces cp miniucf_ipc1_s2d-mtt my_space.yaml
    s2d tune --space my_space.yaml --data work/mine

A space names what Optuna searches, what stays fixed, the paper's values as the first points,
the budget, the scheduler and a trial's resources (see the comments in each file).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from s2d_ray.commands.common import UsageError

SUMMARY = "list the shipped search spaces, or copy one to edit (`s2d spaces cp NAME`)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("ls", help="list every shipped space with its budget")
    cp = sub.add_parser("cp", help="copy a shipped space into a file to edit")
    cp.add_argument("name", help="a name from `s2d spaces ls`")
    cp.add_argument("dest", nargs="?", help="file or folder to write (default: ./NAME.yaml)")
    cp.add_argument("--force", action="store_true", help="overwrite an existing file")


def run(args: argparse.Namespace) -> int:
    from s2d_ray.search.spaces import find_space, load_space, shipped_spaces

    if args.action == "ls":
        print(f"{'name':36s} {'trials':>6s} {'iterations':>10s}  searches")
        for name, path in shipped_spaces().items():
            space = load_space(path)
            print(
                f"{name:36s} {space.budget.trials:6d} {space.budget.iterations:10d}  "
                f"{', '.join(space.space)}"
            )
        return 0
    source = find_space(args.name)
    dest = Path(args.dest or f"{Path(args.name).name}.yaml")
    if dest.is_dir():
        dest = dest / source.name
    if dest.exists() and not args.force:
        raise UsageError(f"{dest} exists: pass --force to overwrite it, or another destination")
    shutil.copyfile(source, dest)
    print(f"{dest}  (from {args.name}; run it with `s2d tune --space {dest}`)")
    return 0
