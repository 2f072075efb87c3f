"""File I/O on pyarrow filesystems: one way to name, write and read files, local or remote.

Every write is atomic (a temp file in the same folder, then a rename), so a crash never
leaves a torn file under its final name; readers and resumes trust only final names.

Remote storage hiccups (a dropped connection, an endpoint restarting): every call here, and
every read the data and trajectory readers make, is retried with exponential backoff for up
to ``S2D_STORAGE_RETRY_SECONDS`` (60 s); past that the job stops with one line naming the URI
(:class:`StorageUnavailable`), and the same command resumes from what was written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow.fs as pafs

TMP_PREFIX = ".tmp-"
RETRY_ENV = "S2D_STORAGE_RETRY_SECONDS"
FIRST_DELAY_S, MAX_DELAY_S = 0.25, 8.0
# errors that say something about the request, not the connection: retrying cannot help
_FINAL = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)

# Tune's and Train's own uploads (checkpoints, experiment state) are not ours to wrap: their
# S3 client retries a dropped connection itself, with the SDK's backoff (12 attempts rode out
# a 3 s outage; the default 3 gave up after 1.4 s)
S3_ATTEMPTS = 12

T = TypeVar("T")


class StorageUnavailable(OSError):
    """Remote storage did not answer within the retry budget."""


def retry_budget_s() -> float:
    return float(os.environ.get(RETRY_ENV, "60"))


def is_remote(fs: pafs.FileSystem) -> bool:
    return not isinstance(fs, pafs.LocalFileSystem)


def retrying(fs: pafs.FileSystem | None, what: str, call: Callable[[], T]) -> T:
    """``call()``, retried with backoff while remote storage fails to answer. ``call`` must
    be safe to repeat (a read, or a write that lands under its final name only at the end).
    Local files are not retried: their errors are not transient (``fs=None``: storage that
    someone else's code reaches, taken as remote)."""
    if fs is not None and not is_remote(fs):
        return call()
    budget = retry_budget_s()
    started, delay, tries = time.monotonic(), FIRST_DELAY_S, 0
    while True:
        tries += 1
        try:
            return call()
        except _FINAL:
            raise
        except OSError as exc:
            waited = time.monotonic() - started
            if waited + delay > budget:
                where = what if fs is None or "://" in what else f"{fs.type_name}://{what}"
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise StorageUnavailable(
                    f"storage did not answer for {waited:.0f} s ({tries} tries) at {where}: "
                    f"{first_line}; check the endpoint and credentials, then run the same "
                    f"command again (what was written is kept; {RETRY_ENV} sets the wait)"
                ) from exc
            time.sleep(delay * (0.5 + random.random() / 2))  # jitter: nodes do not sync up
            delay = min(2 * delay, MAX_DELAY_S)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path on it) for a local path (made absolute) or any pyarrow URI (s3://...)."""
    if "://" in uri:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def ray_storage(uri: str) -> tuple[str, pafs.FileSystem | None]:
    """``(storage_path, storage_filesystem)`` for Ray Tune's and Train's RunConfig: on S3 a
    client that retries with backoff (endpoint and region from the environment, as the AWS
    SDK reads them), elsewhere ``(uri, None)``: Ray's own choice."""
    if not uri.startswith("s3://"):
        return uri, None
    kwargs: dict[str, Any] = {
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS)
    }
    path = uri.removeprefix("s3://").rstrip("/")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urllib.parse.urlparse(endpoint)
        kwargs |= {"endpoint_override": parsed.netloc, "scheme": parsed.scheme or "https"}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region is None and not endpoint:
        region = pafs.resolve_s3_region(path.split("/", 1)[0])
    if region:
        kwargs["region"] = region
    return path, pafs.S3FileSystem(**kwargs)


def join(parent: str, *names: str) -> str:
    for name in names:
        parent = f"{parent.rstrip('/')}/{name}" if parent else name
    return parent


def fetch(uri: str, folder: str) -> str:
    """Copy the file or folder at ``uri`` into the local ``folder``; returns the local path."""
    fs, path = filesystem(uri)
    local = os.path.join(folder, path.rstrip("/").rsplit("/", 1)[-1])

    def copy() -> None:
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            os.makedirs(local, exist_ok=True)  # copy_files fills a folder, it does not make it
        here = pafs.LocalFileSystem()
        pafs.copy_files(path, local, source_filesystem=fs, destination_filesystem=here)

    retrying(fs, uri, copy)
    return local


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return retrying(fs, path, lambda: fs.get_file_info(path).type != pafs.FileType.NotFound)


def write_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write ``data`` under ``path``: whole, or (on any failure) not at all."""

    def write() -> None:
        parent, _, name = path.rpartition("/")
        fs.create_dir(parent, recursive=True)
        tmp = join(parent, f"{TMP_PREFIX}{name}.{uuid.uuid4().hex[:12]}")
        try:
            with fs.open_output_stream(tmp) as out:
                out.write(data)
            fs.move(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                fs.delete_file(tmp)
            raise

    retrying(fs, path, write)


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    def read() -> bytes:
        with fs.open_input_stream(path) as handle:
            return handle.read()

    return retrying(fs, path, read)


def write_json(fs: pafs.FileSystem, path: str, data: Any) -> None:
    """Strict JSON (no NaN), keys sorted: the same content gives the same bytes."""
    text = json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n"
    write_atomic(fs, path, text.encode())


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    """The parsed file; FileNotFoundError if absent, ValueError naming the file if malformed."""
    data = read_bytes(fs, path)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None


def file_sha256(fs: pafs.FileSystem, path: str) -> str:
    def digest() -> str:
        hashed = hashlib.sha256()
        with fs.open_input_stream(path) as handle:
            while chunk := handle.read(1 << 22):
                hashed.update(chunk)
        return hashed.hexdigest()

    return retrying(fs, path, digest)
