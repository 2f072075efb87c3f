"""Start a local ``mlflow server``: the store to use when many processes or nodes log at once."""

from __future__ import annotations

import contextlib
import os
import secrets
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
    auth: bool = False,
) -> tuple[str, subprocess.Popen[bytes]]:
    """Launch ``mlflow server`` and wait for ``GET /health``; returns ``(url, process)``.

    Binds 127.0.0.1 by default (no auth unless ``auth``). ``port=0`` picks a free port.
    The server runs in its own process group (uvicorn workers, job runner); stop it with
    :func:`stop_local_server`. Should this process die first, the server stops itself.

    ``auth``: MLflow's basic-auth app, for a server other processes reach (a cluster's head):
    every request but ``/health`` needs a user; the admin is the user named by
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (:func:`auth_env`).
    """
    port = port or _free_port(host)
    artifacts = str(artifacts_dir)
    if "://" not in artifacts:  # a bucket (s3://...) is used as it is: boto3 in the server
        local = Path(artifacts).expanduser().resolve()
        local.mkdir(parents=True, exist_ok=True)
        artifacts = str(local)
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
        artifacts,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    env = dict(os.environ)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if auth:
        cmd += ["--app-name", "basic-auth"]
        env |= auth_env(backend_uri)
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


def auth_env(backend_uri: str) -> dict[str, str]:
    """The basic-auth app's settings for a server on the sqlite store ``backend_uri``: its
    users beside the store (``mlflow-auth.db``), nobody allowed anything by default, and the
    admin from the environment (never from a file, never on a command line)."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if not user or not password:
        raise ValueError(
            "an authenticated MLflow server needs MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD in the environment (its admin, and what clients send)"
        )
    uri = absolutize_tracking_uri(backend_uri)
    if not uri.startswith("sqlite:///"):
        raise ValueError(f"basic auth here keeps its users beside an sqlite store, not {uri}")
    folder = Path(uri.removeprefix("sqlite:///")).parent
    config = folder / "mlflow-auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{folder / 'mlflow-auth.db'}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
    )
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_USERNAME": user,
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        # the app's CSRF protection signs with it; one per server start is enough
        "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get(
            "MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32)
        ),
    }


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
