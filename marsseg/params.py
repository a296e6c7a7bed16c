"""Plain-data helpers for params mappings (reading and checking ``params.yaml`` is ``marsseg.config``'s job)."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"depth": 3}}`` -> ``{"model.depth": 3}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def params_hash(params: Mapping[str, Any], length: int = 8) -> str:
    """A stable short hash of a parameter mapping (key order does not matter)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
