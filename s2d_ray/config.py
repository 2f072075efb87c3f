"""Typed, validated configuration shared by every job (one config system: pydantic)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from pydantic import BaseModel, ConfigDict


class StrictConfig(BaseModel):
    """Base for every config: unknown keys and wrong types are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def fingerprint(self) -> str:
        """Short stable hash of the config's JSON form, for manifests and resume checks."""
        return config_fingerprint(self.model_dump(mode="json"))


def config_fingerprint(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def absolute_uri(value: str | None) -> str | None:
    """Local paths made absolute (Ray workers and Tune trials run in other folders); URIs kept."""
    if value is None or "://" in value:
        return value
    return os.path.abspath(os.path.expanduser(value))
