"""Checkpoints of a running distillation: ``<out>/checkpoint/state.safetensors`` + ``state.json``.

The tensors hold the synthetic set's full state and every optimiser's state (momentum
buffers, Adam moments); the JSON holds the iteration, the run's config fingerprint, the
optimisers' scalar state and param groups, and the checksum of the tensors file. The tensors
file is written first and the JSON last, each atomically, so a checkpoint exists exactly when
its JSON does and always matches it.

No RNG state is stored because none is needed: every random draw of iteration i comes from
generators seeded by (seed, i), so resuming after iteration i repeats an uninterrupted run bit
for bit on CPU.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import safetensors.torch
import torch

from s2d_ray import files
from s2d_ray.methods.registry import DistillMethod

FOLDER, TENSORS, STATE = "checkpoint", "state.safetensors", "state.json"


class CheckpointMismatchError(ValueError):
    """The output folder holds a checkpoint of a run with another configuration."""


def _paths(out: str) -> tuple:
    fs, root = files.filesystem(str(out))
    folder = files.join(root, FOLDER)
    return fs, folder, files.join(folder, TENSORS), files.join(folder, STATE)


def save_checkpoint(out: str, method: DistillMethod, iteration: int, fingerprint: str) -> None:
    """Checkpoint after ``iteration`` (0-based) of the run identified by ``fingerprint``."""
    fs, folder, tensor_path, state_path = _paths(out)
    fs.create_dir(folder, recursive=True)
    tensors = {f"synthetic.{k}": v for k, v in method.synthetic.state_dict().items()}
    tensors |= {f"extra.{k}": v for k, v in method.extra_state().items()}
    optimizers = []
    for i, optimizer in enumerate(method.optimizers):
        state = optimizer.state_dict()
        scalars: dict[str, dict] = {}
        for index, entry in state["state"].items():
            for name, value in entry.items():
                if torch.is_tensor(value):
                    tensors[f"optimizer.{i}.{index}.{name}"] = value
                else:
                    scalars.setdefault(str(index), {})[name] = value
        optimizers.append({"param_groups": state["param_groups"], "scalars": scalars})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    data = safetensors.torch.save(tensors)
    files.write_atomic(fs, tensor_path, data)
    files.write_json(
        fs,
        state_path,
        {
            "iteration": iteration,
            "fingerprint": fingerprint,
            "optimizers": optimizers,
            "tensors_sha256": hashlib.sha256(data).hexdigest(),
        },
    )


def load_checkpoint(out: str, method: DistillMethod, fingerprint: str) -> int | None:
    """Restore the method's state from ``out``; returns the checkpoint's iteration, or None
    when there is none. A checkpoint of another configuration is refused."""
    fs, _, tensor_path, state_path = _paths(out)
    if not files.exists(fs, state_path):
        return None
    state = files.read_json(fs, state_path)
    if state["fingerprint"] != fingerprint:
        raise CheckpointMismatchError(
            f"{out} holds a checkpoint of a run with another configuration; re-run the same "
            "command to resume it, or choose another --out"
        )
    data = files.read_bytes(fs, tensor_path)
    if hashlib.sha256(data).hexdigest() != state["tensors_sha256"]:
        raise ValueError(f"{tensor_path} fails its checksum; delete {Path(tensor_path).parent}")
    tensors = safetensors.torch.load(data)
    prefix = "synthetic."
    method.synthetic.load_state_dict(
        {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    )
    with torch.no_grad():
        for name, value in method.extra_state().items():
            value.copy_(tensors[f"extra.{name}"])
    for i, (optimizer, saved) in enumerate(
        zip(method.optimizers, state["optimizers"], strict=True)
    ):
        entries: dict[int, dict] = {}
        for key, value in tensors.items():
            parts = key.split(".")
            if parts[0] == "optimizer" and int(parts[1]) == i:
                entries.setdefault(int(parts[2]), {})[parts[3]] = value
        for index, scalars in saved["scalars"].items():
            entries.setdefault(int(index), {}).update(scalars)
        optimizer.load_state_dict({"state": entries, "param_groups": saved["param_groups"]})
    return int(state["iteration"])
