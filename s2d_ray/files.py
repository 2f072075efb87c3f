"""File I/O on pyarrow filesystems: one way to name, write and read files, local or remote.

Every write is atomic (a temp file in the same folder, then a rename), so a crash never
leaves a torn file under its final name; readers and resumes trust only final names.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from typing import Any

import pyarrow.fs as pafs

TMP_PREFIX = ".tmp-"


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path on it) for a local path (made absolute) or any pyarrow URI (s3://...)."""
    if "://" in uri:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def join(parent: str, *names: str) -> str:
    for name in names:
        parent = f"{parent.rstrip('/')}/{name}" if parent else name
    return parent


def fetch(uri: str, folder: str) -> str:
    """Copy the file or folder at ``uri`` into the local ``folder``; returns the local path."""
    fs, path = filesystem(uri)
    local = os.path.join(folder, path.rstrip("/").rsplit("/", 1)[-1])
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        os.makedirs(local, exist_ok=True)  # copy_files fills a folder, it does not make it
    here = pafs.LocalFileSystem()
    pafs.copy_files(path, local, source_filesystem=fs, destination_filesystem=here)
    return local


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def write_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
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


def write_json(fs: pafs.FileSystem, path: str, data: Any) -> None:
    """Strict JSON (no NaN), keys sorted: the same content gives the same bytes."""
    text = json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n"
    write_atomic(fs, path, text.encode())


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    """The parsed file; FileNotFoundError if absent, ValueError naming the file if malformed."""
    with fs.open_input_stream(path) as handle:
        data = handle.read()
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None


def file_sha256(fs: pafs.FileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()
