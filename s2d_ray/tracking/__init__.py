"""MLflow tracking for every job: one experiment per dataset, runs by explicit id.

Single machine: the default sqlite store ``<workdir>/mlflow.db`` (absolute, so Ray workers and
Tune trials with another cwd share it). Parallel or multi-node logging: run ``mlflow server``
(:func:`start_local_server`) and pass ``--mlflow-uri http://host:port``. ``--no-mlflow``
(``TrackingConfig.disabled()``) makes everything a no-op without importing MLflow.
"""

from s2d_ray.tracking.config import (
    TrackingConfig,
    absolutize_tracking_uri,
    default_artifact_root,
    resolve_tracking_uri,
)
from s2d_ray.tracking.server import shared_store, start_local_server, stop_local_server
from s2d_ray.tracking.tracker import (
    PARENT_RUN_TAG,
    RESUME_KEY_TAG,
    RunHandle,
    Tracker,
    TrackingWarning,
    probe_http_store,
)
from s2d_ray.tracking.ui import run_url, ui_command, ui_hint
from s2d_ray.tracking.usage import Usage

__all__ = [
    "PARENT_RUN_TAG",
    "RESUME_KEY_TAG",
    "RunHandle",
    "Tracker",
    "TrackingConfig",
    "TrackingWarning",
    "Usage",
    "absolutize_tracking_uri",
    "default_artifact_root",
    "probe_http_store",
    "resolve_tracking_uri",
    "run_url",
    "shared_store",
    "start_local_server",
    "stop_local_server",
    "ui_command",
    "ui_hint",
]
