"""Reading ``params.yaml``: the single source of every stage's settings."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import yaml

from marsseg.errors import UserError

PARAMS_FILE = Path("params.yaml")


def load_params(path: str | Path = PARAMS_FILE) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not found; run the stage from the repository root")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(params, dict):
        raise UserError(f"{path}: expected a mapping of parameter groups at the top level")
    return params


def section(params: Mapping[str, Any], name: str) -> dict:
    """Return the group ``name`` (e.g. ``model``), failing clearly if it is missing."""
    value = params.get(name)
    if not isinstance(value, dict):
        raise UserError(f"params.yaml: missing parameter group '{name}'")
    return value


def reject_unknown_keys(group: str, given: Mapping[str, Any], known) -> None:
    """A typo in params.yaml fails loudly instead of being silently ignored."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise UserError(f"params.yaml: unknown key {group}.{unknown[0]} (known: {', '.join(sorted(known))})")


def seed_of(params: Mapping[str, Any]) -> int:
    """The top-level ``seed`` every stage derives its randomness from."""
    seed = params.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"params.yaml: seed must be a non-negative integer, got {seed!r}")
    return seed


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
