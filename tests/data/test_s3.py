"""Storage over a real S3 API (moto's server on 127.0.0.1, no mock inside this process):
shards prepared into a bucket with resume and verification, read back clip for clip as from
a local folder, a trajectory store with its crash leftovers and corruption checks, and
outages: a short one is ridden out with backoff, a long one stops with one line naming the
URI, and the same command then resumes with nothing lost or torn."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from s3 import bucket_keys

from s2d_ray.cli import main
from s2d_ray.data import ClipDataset, ClipShards
from s2d_ray.experts.store import CorruptSnapshotError, TrajectoryStore
from s2d_ray.files import StorageUnavailable

pytestmark = pytest.mark.slow  # a minute of preparing and outages


@pytest.fixture(autouse=True)
def local_reader(monkeypatch):
    """Storage is under test, not Ray: the session's Ray workers started before the bucket
    existed and know nothing of its endpoint, so the readers here read in this process."""
    monkeypatch.setenv("S2D_DATA_BACKEND", "local")


PREPARE = ["prepare", "--dataset", "embedded", "--max-videos-per-class", "2", "--local"]
PREPARE += ["--videos-per-shard", "4"]


def all_clips(shards, split: str = "train") -> np.ndarray:
    data = ClipDataset(shards, split, cache=None)
    return np.stack([data[i][0].numpy() for i in range(len(data))])


@pytest.fixture(scope="module")
def bucket_shards(s3, tmp_path_factory) -> str:
    uri = f"s3://{s3.bucket}/shards/embedded"
    assert main([*PREPARE, "--out", uri]) == 0
    return uri


def test_shards_prepared_into_a_bucket_read_back_as_a_local_folders(
    s3, bucket_shards, tmp_path, capsys
):
    local = tmp_path / "local"
    assert main([*PREPARE, "--out", str(local)]) == 0
    remote = ClipShards(bucket_shards)
    assert remote.verify() == []
    assert remote.fingerprint == ClipShards(str(local)).fingerprint
    assert np.array_equal(all_clips(bucket_shards), all_clips(str(local)))
    stored = bucket_keys(s3, "shards/embedded/")
    assert "shards/embedded/dataset.json" in stored
    assert not [k for k in stored if "/.tmp-" in k]  # nothing half-written left behind

    capsys.readouterr()
    assert main([*PREPARE, "--out", bucket_shards]) == 0  # again: every shard is kept
    assert ", 0 built, " in capsys.readouterr().out
    assert bucket_keys(s3, "shards/embedded/") == stored


def test_a_short_outage_during_shard_reads_is_ridden_out(s3, bucket_shards):
    expected = all_clips(bucket_shards)
    refused_before = s3.refused

    def outage() -> None:
        time.sleep(0.05)
        s3.pause()
        time.sleep(3)
        s3.resume()

    thread = threading.Thread(target=outage)
    thread.start()
    started = time.monotonic()
    got = all_clips(bucket_shards)  # a fresh reader: every row group is fetched again
    thread.join()
    assert s3.refused > refused_before, "the outage did not hit a read"
    assert time.monotonic() - started >= 2.5
    assert np.array_equal(got, expected)


def test_a_long_outage_stops_with_one_line_naming_the_uri_and_the_rerun_resumes(
    s3, tmp_path, monkeypatch, capsys
):
    uri = f"s3://{s3.bucket}/outage/embedded"
    monkeypatch.setenv("S2D_STORAGE_RETRY_SECONDS", "2")
    timer = threading.Timer(1.0, s3.pause)  # mid-build: some shards are written by then
    timer.start()
    try:
        code = main([*PREPARE, "--out", uri])
    finally:
        timer.cancel()
        s3.resume()
    err = capsys.readouterr().err
    assert code == 2
    (line,) = [x for x in err.splitlines() if x.startswith("s2d prepare: ")]
    assert "Traceback" not in err
    assert line.startswith("s2d prepare: error: storage did not answer for ")
    assert f" at s3://{s3.bucket}/outage/embedded/" in line
    assert "run the same command again" in line
    assert not [k for k in bucket_keys(s3, "outage/") if "/.tmp-" in k.rsplit("/", 1)[-1][:5]]

    monkeypatch.delenv("S2D_STORAGE_RETRY_SECONDS")
    assert main([*PREPARE, "--out", uri]) == 0
    assert ClipShards(uri).verify() == []


def test_a_trajectory_store_in_a_bucket_cleans_crash_leftovers_and_names_corruption(
    s3, bucket_shards
):
    from experts_in_process import train_experts

    uri = f"s3://{s3.bucket}/experts/embedded"
    train_experts(bucket_shards, uri, num_experts=1, epochs=2)
    store = TrajectoryStore.open(uri)
    assert [e.epochs_completed for e in store.experts()] == [2]
    assert store.validate() == []
    snapshot = store.load_snapshot(0, 1)

    # a writer that died mid-upload left a temp object; the next writer clears it
    leftover = "experts/embedded/expert-0000/.tmp-epoch-0002.safetensors.abc"
    s3.client.put_object(Bucket=s3.bucket, Key=leftover, Body=b"torn")
    writable = TrajectoryStore(
        uri, settings=store.settings, dataset_fingerprint=store.dataset_fingerprint
    )
    writable.writer(0, seed=store.expert(0).seed, planned_epochs=3, precision="fp32")
    assert leftover not in bucket_keys(s3, "experts/embedded/")

    key = "experts/embedded/expert-0000/epoch-0001.safetensors"
    body = bytearray(s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    body[-1] ^= 0xFF
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=bytes(body))
    with pytest.raises(CorruptSnapshotError, match="epoch-0001.safetensors fails its checksum"):
        TrajectoryStore.open(uri).load_snapshot(0, 1)
    assert torch.isfinite(snapshot).all()


def test_storage_unavailable_is_an_oserror_naming_the_path(s3, monkeypatch):
    from s2d_ray import files

    monkeypatch.setenv("S2D_STORAGE_RETRY_SECONDS", "1")
    fs, path = files.filesystem(f"s3://{s3.bucket}/anything.json")
    s3.pause()
    try:
        with pytest.raises(StorageUnavailable, match=f"{s3.bucket}/anything.json"):
            files.read_json(fs, path)
    finally:
        s3.resume()
