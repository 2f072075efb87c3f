"""Tracking configuration and URI resolution; importing this module never imports MLflow."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_DB_NAME = "mlflow.db"
ARTIFACTS_DIR_NAME = "mlartifacts"
_DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")
# Stores whose artifact root defaults to ./mlruns relative to the *current* cwd (wrong in Ray
# workers and Tune trials); for these we pin an absolute artifact root under the workdir.
_LOCAL_ARTIFACT_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "file", "")


def is_http_uri(uri: str | None) -> bool:
    return bool(uri) and urlsplit(uri or "").scheme in ("http", "https")


def _uri_scheme(uri: str) -> str:
    return urlsplit(uri).scheme.split("+", 1)[0]


def absolutize_tracking_uri(uri: str, base: str | Path | None = None) -> str:
    """Make local-store URIs absolute.

    Tune and Ray workers run with another cwd; a relative ``sqlite:///x.db`` would silently
    create one new database per process.
    """
    base_dir = Path(base) if base is not None else Path.cwd()
    scheme = _uri_scheme(uri)
    if scheme == "sqlite":
        prefix, sep, rest = uri.partition(":///")
        if not sep:  # "sqlite://" = in-memory: nothing to fix
            return uri
        path, qsep, query = rest.partition("?")
        if path in ("", ":memory:") or path.startswith("/"):
            return uri
        abs_path = (base_dir / path).resolve()
        return f"{prefix}:///{abs_path}{qsep}{query}"
    if scheme == "file":
        path = uri[len("file:") :]
        if path.startswith("//"):  # file:///abs or file://host/...
            return uri
        return (base_dir / path).resolve().as_uri()
    if scheme == "" and uri:
        # A bare path: a database file is meant as sqlite, anything else as a file store.
        path = (base_dir / uri).resolve()
        if path.suffix in _DB_SUFFIXES:
            return f"sqlite:///{path}"
        return str(path)
    return uri


def resolve_tracking_uri(cli_uri: str | None, workdir: str | Path) -> str:
    """``--mlflow-uri`` first, then ``$MLFLOW_TRACKING_URI``, else ``<workdir>/mlflow.db``.

    Resolved once in the driver so every Ray worker gets the same absolute store.
    """
    work = Path(workdir).expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    uri = cli_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    uri = uri.strip()
    if not uri:
        return f"sqlite:///{work / DEFAULT_DB_NAME}"
    # Relative paths in a user-given URI are relative to where the user typed them (the cwd).
    return absolutize_tracking_uri(uri)


def default_artifact_root(uri: str, workdir: str | Path) -> str | None:
    """Absolute ``file://`` artifact root for local/DB stores; None lets a server decide."""
    if _uri_scheme(uri) not in _LOCAL_ARTIFACT_SCHEMES:
        return None
    return (Path(workdir).expanduser().resolve() / ARTIFACTS_DIR_NAME).as_uri()


def experiment_for(dataset: str, smoke: bool = False) -> str:
    """One MLflow experiment per dataset; smoke runs apart, so they never mix with real ones."""
    return f"s2d/{dataset}/smoke" if smoke else f"s2d/{dataset}"


@dataclass(frozen=True)
class TrackingConfig:
    """What a process needs to log to the project's MLflow store; small and picklable for Ray.

    ``experiment`` is one experiment per dataset. Build it in the driver with :meth:`create`
    so the URI is absolute before it is shipped to workers.
    """

    uri: str | None
    enabled: bool = True
    experiment: str = "s2d"
    artifact_root: str | None = None

    def __post_init__(self) -> None:
        if not self.experiment:
            raise ValueError("TrackingConfig.experiment must be a non-empty name")
        if self.enabled and not self.uri:
            raise ValueError("an enabled TrackingConfig needs a uri (use TrackingConfig.create)")
        if self.uri:
            object.__setattr__(self, "uri", absolutize_tracking_uri(self.uri))

    @classmethod
    def create(
        cls,
        workdir: str | Path,
        experiment: str,
        *,
        cli_uri: str | None = None,
        enabled: bool = True,
    ) -> TrackingConfig:
        """Resolve URI and artifact root from CLI/env/workdir; ``enabled=False`` touches nothing."""
        if not enabled:
            return cls.disabled(experiment)
        uri = resolve_tracking_uri(cli_uri, workdir)
        return cls(
            uri=uri,
            enabled=True,
            experiment=experiment,
            artifact_root=default_artifact_root(uri, workdir),
        )

    @classmethod
    def disabled(cls, experiment: str = "s2d") -> TrackingConfig:
        """``--no-mlflow``: every tracker call becomes a no-op."""
        return cls(uri=None, enabled=False, experiment=experiment)

    def with_experiment(self, experiment: str) -> TrackingConfig:
        return replace(self, experiment=experiment)
