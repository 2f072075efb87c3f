"""The project's one MLflow layer.

Design choices (why):

* ``MlflowClient`` with explicit run ids, never the fluent active-run stack: many runs can be
  open at once in one process, and threads or Ray workers cannot clobber each other's run.
* Nesting is just the ``mlflow.parentRunId`` tag, so a Ray worker can create the child of a
  run that the driver created: ship ``TrackingConfig`` + ``parent.run_id`` (both picklable).
* Tracking never loses the work: every call is guarded; the first failure warns once (naming
  the URI and the fix) and the tracker turns into a no-op for the rest of the process.
* sqlite is fine for one machine, including a few local Ray workers ("database is locked" is
  retried with backoff). For parallel or multi-node logging run ``mlflow server`` (see
  :func:`s2d_ray.tracking.start_local_server`) and pass its ``http://`` URI; never put sqlite
  on NFS.
* MLflow is imported lazily, so ``--no-mlflow`` costs no MLflow import.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import sqlite3
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from s2d_ray import files
from s2d_ray.tracking.config import TrackingConfig, is_http_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)
T = TypeVar("T")

RESUME_KEY_TAG = "s2d.key"
PARENT_RUN_TAG = "mlflow.parentRunId"
# MLflow 3's UI opens an experiment without this tag in its GenAI view (traces, "No data");
# this value opens the runs table, charts and artefacts of model training.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
HEALTH_TIMEOUT_S = 2.0
# Retries after the first attempt. MLflow already sets a 20 s sqlite busy timeout per session;
# our retries cover the immediate SQLITE_BUSY that SQLite returns on lock-upgrade deadlocks
# between processes, which no busy timeout waits out. Backoff 0.25 s, doubling.
LOCK_RETRIES = 3
_LOCK_MARKERS = ("database is locked", "database table is locked", "database is busy")
# MlflowException codes that concern one bad request (e.g. a changed param value), not the
# store: warn about that call and keep tracking.
_CALL_ERROR_CODES = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"})
_MAX_BATCH = 100  # MLflow's per-request limit for params/tags (metrics allow 1000)
_MAX_PARAM_LEN = 6000


class TrackingWarning(UserWarning):
    """Tracking was disabled for this process after a failure; the job itself goes on."""


def set_mlflow_env_defaults(uri: str | None = None) -> None:
    """Process-wide defaults that keep MLflow quiet and fast to fail; user values win."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # not its table-creation notes
    # nor its "View run at <url>" per run: a trial's URL names a server gone with the search;
    # every job prints the store and the URL to open at its end
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if is_http_uri(uri):
        # MLflow's defaults (7 retries with backoff, 120 s timeout) stall a job for minutes on a
        # dead server; the health probe already screened the server, so keep these short.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


set_mlflow_env_defaults()


def probe_http_store(uri: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Raise within ``timeout`` if nothing answers ``GET <uri>/health``.

    Any HTTP answer counts as reachable (a proxy may guard /health); MLflow judges the rest.
    """
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return


def _check_sqlite_path(db_path: str) -> None:
    """Fail fast on an unusable sqlite path.

    MLflow retries engine creation for ~100 s on such errors before giving up.
    """
    if not db_path or db_path == ":memory:":
        return
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db_path, timeout=5.0)
    try:
        con.execute("PRAGMA user_version").fetchone()
    finally:
        con.close()


def _is_lock_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = str(cur).lower()
        if any(marker in text for marker in _LOCK_MARKERS):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _is_call_error(exc: BaseException) -> bool:
    """A problem with one request's content (caller's data), not with the store."""
    if isinstance(exc, TypeError | ValueError | FileNotFoundError | IsADirectoryError):
        return True
    return getattr(exc, "error_code", None) in _CALL_ERROR_CODES


def _short(exc: BaseException, limit: int = 300) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    if len(first) > limit:
        first = first[:limit] + "..."
    return f"{type(exc).__name__}: {first}"


def _quote_filter_value(value: str) -> str:
    if '"' not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    raise ValueError(f"resume key {value!r} must not contain both quote characters")


class Tracker:
    """Thread-safe, picklable handle on the MLflow store described by a :class:`TrackingConfig`.

    In a Ray worker, build a new ``Tracker(config)`` (or unpickle one): the client is created
    lazily in each process.
    """

    def __init__(self, config: TrackingConfig) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._failed = False
        self._call_warned: set[tuple[str, str, str | None]] = set()

    # -- pickling: ship config and failure state, never a live client ------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "failed": self._failed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])
        self._failed = state["failed"]

    def __repr__(self) -> str:
        cfg = self.config
        return f"Tracker(uri={cfg.uri!r}, experiment={cfg.experiment!r}, active={self.active})"

    @property
    def active(self) -> bool:
        """False when disabled by config or after a tracking failure."""
        return self.config.enabled and not self._failed

    @property
    def uri(self) -> str | None:
        return self.config.uri

    # -- failure policy -----------------------------------------------------------------------
    def _disable(self, exc: BaseException, what: str) -> None:
        with self._lock:
            if self._failed:
                return
            self._failed = True
        fix = (
            "start the server (`mlflow server --backend-store-uri sqlite:////abs/mlflow.db "
            "--host 127.0.0.1 --port 5000`) or pass a reachable --mlflow-uri"
            if is_http_uri(self.config.uri)
            else "check that the store path is writable and not locked by another program, "
            "use `mlflow server` for parallel/multi-node logging, or pass another --mlflow-uri"
        )
        warnings.warn(
            f"MLflow tracking at {self.config.uri!r} failed during {what} ({_short(exc)}). "
            f"The run continues WITHOUT tracking for the rest of this process. To fix: {fix}; "
            "or pass --no-mlflow to turn tracking off.",
            TrackingWarning,
            stacklevel=4,
        )

    def _with_retries(self, fn: Callable[[], T]) -> T:
        delay = 0.25
        for attempt in range(LOCK_RETRIES + 1):
            try:
                return fn()
            except Exception as exc:
                if attempt == LOCK_RETRIES or not _is_lock_error(exc):
                    raise
                log.debug("MLflow store locked (attempt %d), retrying in %.2fs", attempt + 1, delay)
                time.sleep(delay * (1 + 0.25 * random.random()))
                delay = min(delay * 2, 4.0)
        raise AssertionError("unreachable")

    def _get_client(self) -> MlflowClient:
        with self._lock:
            if self._client is None:
                uri = self.config.uri
                set_mlflow_env_defaults(uri)
                if is_http_uri(uri):
                    probe_http_store(uri)
                elif uri and uri.startswith("sqlite:///"):
                    _check_sqlite_path(uri[len("sqlite:///") :].partition("?")[0])
                from mlflow import MlflowClient

                client = MlflowClient(tracking_uri=uri)
                # Touch the store now so connection/schema errors surface here, not mid-run.
                self._with_retries(lambda: client.search_experiments(max_results=1))
                self._client = client
            return self._client

    def call(
        self,
        what: str,
        fn: Callable[[MlflowClient], T],
        default: T = None,  # type: ignore[assignment]
        *,
        lenient: bool = False,
    ) -> T:
        """Run ``fn(client)`` under the failure policy; ``default`` when inactive or failed.

        ``lenient`` calls (logging into an existing run) only warn on request-level errors such
        as a changed param value instead of disabling the whole tracker.
        """
        if not self.active:
            return default
        try:
            client = self._get_client()
        except Exception as exc:  # the store itself is unusable
            self._disable(exc, f"connect ({what})")
            return default
        try:
            return self._with_retries(lambda: fn(client))
        except Exception as exc:
            if lenient and _is_call_error(exc):
                self._warn_call(what, exc)
            else:
                self._disable(exc, what)
            return default

    def _warn_call(self, what: str, exc: BaseException) -> None:
        # Once per kind of rejection: a bad value logged every step must not flood the log.
        key = (what, type(exc).__name__, getattr(exc, "error_code", None))
        with self._lock:
            if key in self._call_warned:
                return
            self._call_warned.add(key)
        log.warning("MLflow %s rejected: %s (tracking continues)", what, _short(exc))

    # -- experiments --------------------------------------------------------------------------
    def experiment_id(self) -> str | None:
        """Get or create the configured experiment (race-safe); None when inactive."""
        if self._experiment_id is None:
            self._experiment_id = self.call("get/create experiment", self._get_or_create_experiment)
        return self._experiment_id

    def _get_or_create_experiment(self, client: MlflowClient) -> str:
        from mlflow.exceptions import MlflowException

        name = self.config.experiment
        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                return client.create_experiment(
                    name, artifact_location=self.config.artifact_root, tags=EXPERIMENT_KIND
                )
            except MlflowException as exc:
                # Another process won the race: re-read its experiment.
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise exc from None
        if exp.lifecycle_stage == "deleted":
            # A name of a deleted experiment cannot be re-created; bring it back instead.
            client.restore_experiment(exp.experiment_id)
        for key, value in EXPERIMENT_KIND.items():  # experiments made by older versions
            if exp.tags.get(key) != value:
                client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id

    def experiment_of(self, run_id: str) -> str | None:
        """The experiment a run belongs to (a child follows its parent's)."""
        return self.call("get run", lambda c: c.get_run(run_id).info.experiment_id)

    # -- runs ---------------------------------------------------------------------------------
    def find_run(self, resume_key: str) -> str | None:
        """Newest active run in the experiment tagged ``s2d.key == resume_key``."""
        exp_id = self.experiment_id()
        if exp_id is None:
            return None
        flt = f"tags.`{RESUME_KEY_TAG}` = {_quote_filter_value(resume_key)}"

        def search(client: MlflowClient) -> str | None:
            runs = client.search_runs(
                [exp_id], filter_string=flt, max_results=1, order_by=["attributes.start_time DESC"]
            )
            return runs[0].info.run_id if runs else None

        return self.call("search runs", search)

    def attach(self, run_id: str | None) -> RunHandle:
        """Handle on an existing run (e.g. the driver's run, from a Ray worker); no lifecycle."""
        return RunHandle(self, run_id)

    @contextlib.contextmanager
    def start_run(
        self,
        name: str,
        *,
        parent_run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        resume_key: str | None = None,
    ) -> Iterator[RunHandle]:
        """Open a run; FINISHED on normal exit, KILLED when told to stop (Ctrl-C, or
        ``SystemExit``, how Ray Tune ends a trial its scheduler stops), FAILED on any other
        exception (re-raised).

        With ``resume_key`` (e.g. ``"farm/<fingerprint>/expert-3"``) an existing run with that
        key is continued instead of duplicated, so re-runs and resumed jobs keep one run.
        The handle is a no-op (``run_id is None``) when tracking is off or fails.
        """
        if resume_key is not None:
            _quote_filter_value(resume_key)  # validate eagerly, also when disabled
        handle = self._open_run(name, parent_run_id, dict(tags or {}), resume_key)
        try:
            yield handle
        except BaseException as exc:
            status = "KILLED" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "FAILED"
            handle._terminate(status)
            raise
        handle._terminate("FINISHED")

    def _open_run(
        self,
        name: str,
        parent_run_id: str | None,
        tags: dict[str, Any],
        resume_key: str | None,
    ) -> RunHandle:
        if not self.active:
            return RunHandle(self, None)
        if resume_key is not None:
            run_id = self.find_run(resume_key)
            if run_id is not None:
                return self._resume(run_id, tags)
            tags[RESUME_KEY_TAG] = resume_key
        if parent_run_id:
            tags[PARENT_RUN_TAG] = parent_run_id
        str_tags = {**context_tags(), **{k: str(v) for k, v in tags.items()}}
        exp_id = None if parent_run_id else self.experiment_id()
        if not parent_run_id and exp_id is None:
            return RunHandle(self, None)

        def create(client: MlflowClient) -> str:
            # Nesting is shown only inside one experiment: a child follows its parent.
            eid = client.get_run(parent_run_id).info.experiment_id if parent_run_id else exp_id
            return client.create_run(eid, tags=str_tags, run_name=name).info.run_id

        return RunHandle(self, self.call("create run", create))

    def _resume(self, run_id: str, tags: dict[str, Any]) -> RunHandle:
        def reopen(client: MlflowClient) -> tuple[str, dict[str, str]]:
            run = client.get_run(run_id)
            client.update_run(run_id, status="RUNNING")
            return run.info.status, dict(run.data.params)

        previous_status, params = self.call("resume run", reopen, (None, {}))
        if previous_status is None:
            return RunHandle(self, None)
        handle = RunHandle(self, run_id, resumed=True, previous_status=previous_status)
        handle._params.update(params)
        if tags:
            handle.set_tags(tags)
        return handle


@functools.cache
def context_tags() -> dict[str, str]:
    """Who ran it, from what, at which commit: MLflow's own context tags (user, source), and
    the commit of the s2d-ray checkout in use (the entry point may be an installed script
    outside any repository, where MLflow finds none)."""
    from mlflow.tracking.context.registry import resolve_tags

    tags = dict(resolve_tags({}))
    tags["s2d.version"] = _version()
    commit = _package_commit()
    if commit:
        tags.setdefault("mlflow.source.git.commit", commit)
    return tags


def _version() -> str:
    from s2d_ray import __version__

    return __version__


def _package_commit() -> str | None:
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class RunHandle:
    """Logging into one run by id; every method is a no-op when ``run_id`` is None.

    Picklable (carries the tracker's config, not a client), so it can be sent to a Ray task
    that logs into the driver's run.
    """

    def __init__(
        self,
        tracker: Tracker,
        run_id: str | None,
        *,
        resumed: bool = False,
        previous_status: str | None = None,
    ) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.resumed = resumed
        self.previous_status = previous_status
        # Params already on the run: MLflow rejects a changed value, and a rejected batch would
        # drop the other params in it, so conflicts are filtered out before sending.
        self._params: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"RunHandle(run_id={self.run_id!r}, resumed={self.resumed})"

    @property
    def active(self) -> bool:
        return self.run_id is not None and self.tracker.active

    def _log(self, what: str, fn: Callable[[MlflowClient, str], Any]) -> None:
        run_id = self.run_id
        if run_id is None:
            return
        self.tracker.call(what, lambda client: fn(client, run_id), lenient=True)

    def _log_batch(self, kind: str, items: list[Any], size: int = _MAX_BATCH) -> None:
        # synchronous=True: async logging (MLFLOW_ENABLE_ASYNC_LOGGING) would hide failures.
        for i in range(0, len(items), size):
            chunk = {kind: items[i : i + size]}
            self._log(f"log {kind}", lambda c, r, ch=chunk: c.log_batch(r, **ch, synchronous=True))

    def _terminate(self, status: str) -> None:
        self._log(f"end run ({status})", lambda c, rid: c.set_terminated(rid, status=status))

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import Param

        new: dict[str, str] = {}
        for key, value in params.items():
            text = str(value)
            old = self._params.get(key)
            if old is None:
                new[key] = text
            elif old not in (text, text[:_MAX_PARAM_LEN]):  # MLflow truncates long values
                log.warning(
                    "MLflow param %r already logged as %r on run %s; keeping it (new value %r)",
                    key,
                    old,
                    self.run_id,
                    text,
                )
        self._log_batch("params", [Param(k, v) for k, v in new.items()])
        self._params.update(new)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if not self.active:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        step_ = int(step) if step is not None else 0
        items = []
        for key, value in metrics.items():
            try:
                items.append(Metric(key, float(value), ts, step_))
            except (TypeError, ValueError):
                log.warning("MLflow metric %r=%r is not a number; skipped", key, value)
        self._log_batch("metrics", items, size=1000)

    def log_metric_steps(self, rows: Sequence[tuple[int, Mapping[str, Any], float]]) -> None:
        """Many steps in few requests: per-iteration losses buffered and flushed together,
        each with the time it was measured (``time.time()``)."""
        if not self.active or not rows:
            return
        from mlflow.entities import Metric

        items = [
            Metric(key, float(value), int(when * 1000), int(step))
            for step, metrics, when in rows
            for key, value in metrics.items()
            if isinstance(value, int | float)
        ]
        self._log_batch("metrics", items, size=1000)

    def log_table(self, data: Mapping[str, Sequence[Any]], artifact_file: str) -> None:
        """Columns as an MLflow table (the UI's artefact view and ``mlflow.load_table``)."""
        self._log("log table", lambda c, rid: c.log_table(rid, dict(data), artifact_file))

    def log_image(self, path: str | Path, key: str, step: int) -> None:
        """An image per step under ``key``: the UI's image grid slides through the steps."""
        if not self.active:
            return
        from PIL import Image

        with Image.open(path) as image:
            image.load()
            self._log("log image", lambda c, rid: c.log_image(rid, image, key=key, step=step))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import RunTag

        self._log_batch("tags", [RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file, or a directory's contents, under ``artifact_path``. MLflow logs local
        files: one named by a URI (``s3://...``) is fetched to a temporary folder first."""
        local = str(path)
        if "://" in local:
            if self.active:
                with tempfile.TemporaryDirectory(prefix="s2d-artifact-") as tmp:
                    self.log_artifact(files.fetch(local, tmp), artifact_path)
            return
        if Path(local).is_dir():
            self._log("log artifacts", lambda c, rid: c.log_artifacts(rid, local, artifact_path))
        else:
            self._log("log artifact", lambda c, rid: c.log_artifact(rid, local, artifact_path))

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """JSON or YAML artifact, chosen by the file extension (MLflow's rule)."""
        self._log("log dict", lambda c, rid: c.log_dict(rid, dict(data), artifact_file))

    def log_input_manifest(
        self,
        manifest: Mapping[str, Any],
        name: str,
        digest: str,
        *,
        source: str | Path | None = None,
        context: str = "train",
        log_manifest_artifact: bool = True,
    ) -> None:
        """Record a dataset manifest as an MLflow run *input* (lineage in the UI's Datasets).

        ``source`` names the shard directory (default: the manifest's ``root``/``shard_dir``/
        ``path`` entry). The full manifest also goes to ``inputs/<name>.json`` when asked.
        """
        if not self.active:
            return
        src = source if source is not None else _manifest_source(manifest, name)

        def log_input(client: MlflowClient, run_id: str) -> None:
            from mlflow.entities import DatasetInput, InputTag

            dataset = _manifest_dataset(manifest, name, digest, str(src))
            tags = [InputTag(key="mlflow.data.context", value=context)]
            client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags)])

        self._log("log input", log_input)
        if log_manifest_artifact:
            self.log_dict(manifest, f"inputs/{name}.json")


def _manifest_source(manifest: Mapping[str, Any], name: str) -> str:
    for key in ("root", "shard_dir", "path", "uri", "source"):
        value = manifest.get(key)
        if isinstance(value, str | Path) and str(value):
            return str(value)
    return name


def _resolve_source(raw: str) -> Any:
    """A registered MLflow dataset source for a path/URI, without MLflow's ambiguity warning."""
    from mlflow.data.dataset_source_registry import get_registered_sources
    from mlflow.data.http_dataset_source import HTTPDatasetSource

    if "://" not in raw:
        raw = str(Path(raw).expanduser().resolve())
    for source_cls in get_registered_sources():
        try:
            if source_cls._can_resolve(raw):
                return source_cls._resolve(raw)
        except Exception:  # a source that cannot parse this URI is not a match
            continue
    return HTTPDatasetSource(url=raw)


def _manifest_profile(manifest: Mapping[str, Any], limit: int = 4000) -> str:
    """Scalar top-level manifest fields (counts, shapes, fingerprints) as the dataset profile."""
    import json

    profile: dict[str, Any] = {}
    for key, value in manifest.items():
        if isinstance(value, str | int | float | bool) or value is None:
            profile[key] = value
        elif (
            isinstance(value, list | tuple)
            and len(value) <= 8
            and all(isinstance(v, int | float | str) for v in value)
        ):
            profile[key] = list(value)
        elif isinstance(value, list | tuple | dict):
            profile[f"{key}.len"] = len(value)
    text = json.dumps(profile, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit]


def _manifest_dataset(manifest: Mapping[str, Any], name: str, digest: str, source: str) -> Any:
    from mlflow.data.meta_dataset import MetaDataset

    class ManifestDataset(MetaDataset):
        """MetaDataset plus a profile, so the UI shows clip counts etc. next to the source."""

        @property
        def profile(self) -> str:
            return _manifest_profile(manifest)

        def to_dict(self) -> dict[str, str]:
            out = super().to_dict()
            out["profile"] = self.profile
            return out

    return ManifestDataset(_resolve_source(source), name=name, digest=digest)._to_mlflow_entity()
