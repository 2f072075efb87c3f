"""The one on-disk form of a distilled set: a directory with ``tensors.safetensors`` and a JSON
``manifest.json`` (kind, layout, method, config, seed, dataset fingerprint and classes, clip
shape, normalisation, stored bytes, parent artefacts). No pickle anywhere.

    from s2d_ray import load_distilled
    data = load_distilled("work/distilled/s2d-dm")            # a torch Dataset of (video, label)
    loader = torch.utils.data.DataLoader(data, batch_size=256, shuffle=True)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import safetensors.torch
import torch
from torch.utils.data import Dataset

from s2d_ray import files
from s2d_ray.synthetic.base import STORAGE_DTYPES, SyntheticSet
from s2d_ray.synthetic.s2d import S2DMemory
from s2d_ray.synthetic.videos import SyntheticImages, SyntheticVideos

FORMAT = "s2d-ray-distilled"
FORMAT_VERSION = 1
MANIFEST, TENSORS = "manifest.json", "tensors.safetensors"
KINDS: dict[str, type[SyntheticSet]] = {
    cls.kind: cls for cls in (SyntheticVideos, SyntheticImages, S2DMemory)
}


class NotADistilledSetError(ValueError):
    """The path is not a distilled-set directory, or its files do not verify."""


def save_set(
    synthetic: SyntheticSet, path: str | Path, meta: dict, *, dtype: str = "float32"
) -> dict:
    """Write ``synthetic`` atomically (tensors first, the manifest last); returns the manifest.

    ``meta`` carries the provenance (method, config, seed, dataset, normalisation, parents).
    ``dtype="float16"`` halves the stored bytes of every float tensor.
    """
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
    fs, root = files.filesystem(str(path))
    fs.create_dir(root, recursive=True)
    tensors = {
        name: (t.to(STORAGE_DTYPES[dtype]) if t.is_floating_point() else t).cpu().contiguous()
        for name, t in synthetic.stored_tensors().items()
    }
    data = safetensors.torch.save(tensors, metadata={"format": FORMAT})
    files.write_atomic(fs, files.join(root, TENSORS), data)
    manifest = {
        **meta,  # provenance; what describes the files below is computed here and wins
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": synthetic.kind,
        "layout": synthetic.layout(),
        "storage_dtype": dtype,
        "bytes": synthetic.storage_bytes(dtype),
        "tensors_sha256": hashlib.sha256(data).hexdigest(),
    }
    files.write_json(fs, files.join(root, MANIFEST), manifest)
    return manifest


def read_manifest(path: str | Path) -> dict:
    fs, root = files.filesystem(str(path))
    manifest_path = files.join(root, MANIFEST)
    if not files.exists(fs, manifest_path):
        raise NotADistilledSetError(
            f"{path} is not a distilled set (no {MANIFEST}); make one with `s2d distill` or "
            "`s2d static`"
        )
    manifest = files.read_json(fs, manifest_path)
    if manifest.get("format") != FORMAT or manifest.get("kind") not in KINDS:
        raise NotADistilledSetError(
            f"{manifest_path} is not a {FORMAT} manifest (format {manifest.get('format')!r}, "
            f"kind {manifest.get('kind')!r})"
        )
    if manifest.get("version", 0) > FORMAT_VERSION:
        raise NotADistilledSetError(f"{path} has format version {manifest['version']}, too new")
    return manifest


def load_set(path: str | Path) -> tuple[SyntheticSet, dict]:
    """The saved set as a module (float32, on CPU) and its manifest; checksum verified."""
    manifest = read_manifest(path)
    fs, root = files.filesystem(str(path))
    tensor_path = files.join(root, TENSORS)
    try:
        data = files.read_bytes(fs, tensor_path)
    except FileNotFoundError:
        raise NotADistilledSetError(f"{tensor_path} is missing; re-run the distillation") from None
    if hashlib.sha256(data).hexdigest() != manifest["tensors_sha256"]:
        raise NotADistilledSetError(f"{tensor_path} fails its checksum; re-run the distillation")
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in _load(data).items()}
    return KINDS[manifest["kind"]].from_saved(manifest["layout"], tensors), manifest


def _load(data: bytes) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load(data)
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise NotADistilledSetError(f"the tensors file does not parse ({e})") from None


class DistilledSet(Dataset):
    """A saved set, materialised once: (video, label) items in the real clips' normalised
    space, plus the manifest (``classes``, ``bytes``, provenance)."""

    def __init__(self, path: str | Path) -> None:
        synthetic, self.manifest = load_set(path)
        with torch.no_grad():
            items, labels = synthetic.materialize()
        self.items, self.labels = items.detach().contiguous(), labels
        self.classes: list[str] = self.manifest.get("dataset", {}).get("classes", [])
        self.num_classes = synthetic.num_classes
        self.storage_bytes: int = self.manifest["bytes"]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        """(video, class index), or (video, label vector) for sets with learnt labels."""
        label = self.labels[i]
        return self.items[i], label.detach() if label.is_floating_point() else int(label)


def load_distilled(path: str | Path) -> DistilledSet:
    """A distilled set directory as a torch ``Dataset`` of (video, label)."""
    return DistilledSet(path)
