"""Start a local ``mlflow server``: the store to use when many processes or nodes log at once."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from s2d_ray.tracking.config import TrackingConfig, absolutize_tracking_uri


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_local_server(
    backend_uri: str,
    artifacts_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    workers: int = 1,
    timeout_s: float = 120.0,
    log_file: str | Path | None = None,
) -> tuple[str, subprocess.Popen[bytes]]:
    """Launch ``mlflow server`` and wait for ``GET /health``; returns ``(url, process)``.

    Binds 127.0.0.1 by default (the server has no auth). ``port=0`` picks a free port.
    The server runs in its own process group (uvicorn workers, job runner); stop it with
    :func:`stop_local_server`. Should this process die first, the server stops itself.
    """
    port = port or _free_port(host)
    artifacts = Path(artifacts_dir).expanduser().resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    # the guard stops the server if this process dies without stopping it (SIGKILL)
    guard = [sys.executable, "-m", "s2d_ray.tracking.guard", str(os.getpid()), "--"]
    cmd = [
        *guard,
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        absolutize_tracking_uri(backend_uri),
        "--artifacts-destination",
        str(artifacts),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    env = dict(os.environ)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    finally:
        if log_file:
            out.close()  # the child holds its own descriptor
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with code {proc.returncode}: {cmd[len(guard) :]}"
                f"{_tail(log_file)}"
            )
        try:
            with urllib.request.urlopen(url + "/health", timeout=1.0) as resp:
                if resp.status == 200:
                    return url, proc
        except OSError:  # URLError/HTTPError are OSErrors: not up yet
            pass
        time.sleep(0.3)
    stop_local_server(proc)
    raise TimeoutError(
        f"mlflow server at {url} not healthy after {timeout_s:.0f} s{_tail(log_file)}"
    )


def _tail(log_file: str | Path | None, lines: int = 20) -> str:
    if not log_file or not Path(log_file).is_file():
        return ""
    text = Path(log_file).read_text(errors="replace").splitlines()[-lines:]
    return "\n--- server log tail ---\n" + "\n".join(text)


def stop_local_server(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """Stop a server from :func:`start_local_server` and its children (its process group only).

    Signals go to the group only while its leader is unreaped, so the id cannot be reused.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout_s)


@contextlib.contextmanager
def shared_store(tracking: TrackingConfig, writers: int) -> Iterator[TrackingConfig]:
    """The tracking that ``writers`` processes logging at once should use: an sqlite store
    is served by a local ``mlflow server`` for the duration (many processes never write one
    sqlite file), anything else is used as it is. The experiment is created in the store
    first, so that its artifacts stay in the workdir's folder rather than the server's."""
    uri = tracking.uri or ""
    if writers <= 1 or not tracking.enabled or not uri.startswith("sqlite:///"):
        yield tracking
        return
    from s2d_ray.tracking.tracker import Tracker

    Tracker(tracking).experiment_id()
    folder = Path(uri.removeprefix("sqlite:///")).parent
    url, server = start_local_server(
        uri, folder / "mlartifacts", log_file=folder / "mlflow-server.log"
    )
    try:
        yield replace(tracking, uri=url, artifact_root=None)
    finally:
        stop_local_server(server)
