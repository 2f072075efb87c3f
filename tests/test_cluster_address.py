"""Joining a cluster that is gone (issue 40, item 6): a head killed without ``ray stop``
leaves Ray's record of it behind, and a bare ``ray.init()`` then retries "Failed to connect
to GCS" for minutes. ``cluster.checked_address`` looks first."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from s2d_ray.cluster import ClusterUnreachable, checked_address


def dead_address() -> str:
    """A local port that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_a_stale_record_starts_a_local_instance_and_says_why(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    record = tmp_path / "ray_current_cluster"
    record.write_text(dead_address())
    assert checked_address(str(record), timeout=0.5) == "local"
    said = capsys.readouterr().err
    assert str(record) in said and "does not answer" in said and "`ray stop`" in said


def test_a_live_record_or_none_is_left_to_ray(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert checked_address(str(tmp_path / "missing")) is None
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        record = tmp_path / "ray_current_cluster"
        record.write_text(f"127.0.0.1:{server.getsockname()[1]}")
        assert checked_address(str(record)) is None


def test_a_dead_ray_address_is_an_error_naming_it_and_the_way_out(monkeypatch, tmp_path):
    address = dead_address()
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(ClusterUnreachable, match=f"RAY_ADDRESS={address}.*RAY_ADDRESS=local"):
        checked_address(timeout=0.5)
    cli = subprocess.run(  # one line, no traceback
        [
            sys.executable,
            "-m",
            "s2d_ray",
            "tune",
            "--smoke-test",
            "--workdir",
            str(tmp_path),
            "--no-mlflow",
        ],
        env={**os.environ, "RAY_ADDRESS": address},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode != 0 and "Traceback" not in cli.stderr, cli.stderr[-2000:]
    assert f"RAY_ADDRESS={address}: no Ray cluster answers there" in cli.stderr
    for kept in ("local", "auto", "ray://head:10001", "http://127.0.0.1:8265"):
        monkeypatch.setenv("RAY_ADDRESS", kept)
        assert checked_address(timeout=0.5) is None


@pytest.mark.slow
def test_a_command_after_a_killed_head_starts_instead_of_hanging():
    """The stale record as a killed head leaves it, in Ray's own place for it (a private
    RAY_TMPDIR): Ray starts locally within the timeout (a bare ray.init() retried for
    minutes) and the run says what it found."""
    with tempfile.TemporaryDirectory(prefix="s2d", dir="/tmp") as temp:  # short socket paths
        (Path(temp) / "ray").mkdir()
        (Path(temp) / "ray" / "ray_current_cluster").write_text(dead_address())
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["RAY_TMPDIR"] = temp
        code = (
            "from s2d_ray.cluster import init_ray; import ray; "
            "init_ray(num_cpus=1, include_dashboard=False); "
            "print('cpus', ray.cluster_resources()['CPU']); ray.shutdown()"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cpus 1.0" in done.stdout
    assert "does not answer" in done.stderr and "starting a local Ray instance" in done.stderr
