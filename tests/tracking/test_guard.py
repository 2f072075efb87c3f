"""The guard takes a command down with its starter: a SIGKILLed driver leaves no server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

STARTER = """
import os, signal, subprocess, sys
guard = subprocess.Popen(
    [sys.executable, "-m", "s2d_ray.tracking.guard", str(os.getpid()), "--",
     sys.executable, "-c", "import time; time.sleep(300)"],
    start_new_session=True,
)
print(guard.pid, flush=True)
if sys.argv[1] == "die":
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind
os.killpg(guard.pid, signal.SIGTERM)  # the orderly stop: the group, as stop_local_server
print(guard.wait(timeout=30), flush=True)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead
        return stat.read().split()[2] != "Z"


def group_members(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and alive(int(entry)):
                    pids.append(int(entry))
            except (ProcessLookupError, FileNotFoundError):
                continue
    return pids


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
@pytest.mark.parametrize("how", ["die", "stop"])
def test_the_guarded_command_goes_when_its_starter_dies_or_stops_it(how):
    starter = subprocess.run(
        [sys.executable, "-c", STARTER, how], capture_output=True, text=True, timeout=60
    )
    guard_pid = int(starter.stdout.split()[0])
    if how == "die":
        assert starter.returncode == -signal.SIGKILL
    else:
        assert starter.returncode == 0 and starter.stdout.split()[1] in ("0", "-15")
    deadline = time.monotonic() + 20
    while group_members(guard_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert group_members(guard_pid) == []  # the guard, the command: all gone
