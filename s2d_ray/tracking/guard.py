"""Run a command and take it down, with its whole process group, when the process that
started it dies: a driver killed with SIGKILL cannot stop the ``mlflow server`` it started,
and an orphaned server would hold its port and its store for ever.

    python -m s2d_ray.tracking.guard <parent pid> -- <command ...>

The guard leads the command's process group (its starter gives it a new session), so
signalling the group stops the guard and the command together, as before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

POLL_S = 1.0
GRACE_S = 15.0


def guard(parent: int, command: list[str]) -> int:
    stopping = False

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    child = subprocess.Popen(command)  # in our process group
    while True:
        try:
            return child.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            pass
        if stopping or os.getppid() != parent:  # asked to stop, or orphaned
            break
    with contextlib.suppress(ProcessLookupError):
        os.killpg(0, signal.SIGTERM)  # the command and its workers
    try:
        return child.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(0, signal.SIGKILL)
        return -signal.SIGKILL


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m s2d_ray.tracking.guard <parent pid> -- <command ...>")
        return 2
    return guard(int(args[0]), args[2:])


if __name__ == "__main__":
    sys.exit(main())
