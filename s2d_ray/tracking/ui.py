"""Where a run can be seen: the store, the command that opens it, the run's page."""

from __future__ import annotations

import shlex

from s2d_ray.tracking.config import TrackingConfig, is_http_uri

UI_HOST, UI_PORT = "127.0.0.1", 5000


def ui_base(tracking: TrackingConfig) -> str:
    """The MLflow UI's address: the server itself, or the one `mlflow ui` opens locally."""
    return tracking.uri.rstrip("/") if is_http_uri(tracking.uri) else f"http://{UI_HOST}:{UI_PORT}"


def ui_command(tracking: TrackingConfig) -> str | None:
    """The `mlflow ui` command for a local store (None: a server is already the UI)."""
    if not tracking.uri or is_http_uri(tracking.uri):
        return None
    return (
        f"mlflow ui --backend-store-uri {shlex.quote(tracking.uri)} "
        f"--host {UI_HOST} --port {UI_PORT}"
    )


def run_url(tracking: TrackingConfig, experiment_id: str | None, run_id: str | None) -> str:
    base = ui_base(tracking)
    if not experiment_id:
        return f"{base}/#/experiments"
    if not run_id:
        return f"{base}/#/experiments/{experiment_id}"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def ui_hint(tracking: TrackingConfig, run_id: str | None, what: str = "run") -> list[str]:
    """Lines a job prints at its end so the user opens the right page."""
    if not tracking.enabled or not run_id:
        return []
    from s2d_ray.tracking.tracker import Tracker

    experiment_id = Tracker(tracking).experiment_of(run_id)
    lines = [f"MLflow {what} {run_id} in {tracking.uri} (experiment {tracking.experiment})"]
    command = ui_command(tracking)
    if command:
        lines.append(f"  open it: {command}")
    lines.append(f"  then: {run_url(tracking, experiment_id, run_id)}")
    return lines
