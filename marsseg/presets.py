"""Run a preset (presets/<name>.yaml: params overrides) as a DVC experiment; --list shows them.

    marsseg exp seed-best [--queue]      (or: make exp PRESET=seed-best)
    marsseg exp --list

The overrides become ``dvc exp run -S key=value`` arguments, so they show in ``dvc exp show`` and, via
the train stage, in MLflow (tagged ``preset``). A preset is validated with params.yaml before DVC starts.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import yaml

from marsseg.config import load_yaml, read_params, validate
from marsseg.errors import UserError
from marsseg.params import flatten

PRESET_DIR = Path("presets")


def merged(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` laid over it group by group (nested mappings merge, values replace)."""
    result = dict(base)
    for key, value in overrides.items():
        result[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return result


def read_preset(name: str) -> dict:
    """presets/NAME.yaml's parameter groups, not yet checked against params.yaml (one line per problem)."""
    path = preset_path(name)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))) or "none"
        raise UserError(f"{path}: no such preset (known: {known})")
    try:
        overrides = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(overrides, dict):
        raise UserError(f"{path}: expected a mapping of parameter groups")
    return overrides


def preset_path(name: str) -> Path:
    return PRESET_DIR / f"{name}.yaml"


def load_preset(name: str) -> dict:
    """``read_preset``, validated laid over params.yaml."""
    overrides = read_preset(name)
    validate(merged(read_params(), overrides), source=str(preset_path(name)))
    return overrides


def set_param_args(overrides: dict) -> list[str]:
    """``-S key=value`` pairs; values as JSON, which DVC parses as YAML (lists and booleans survive)."""
    args = []
    for key, value in flatten(overrides).items():
        args += ["-S", f"{key}={json.dumps(value)}"]
    return args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="preset name (presets/<name>.yaml)")
    parser.add_argument("--queue", action="store_true", help="queue it instead (dvc queue start runs it)")
    parser.add_argument("--list", action="store_true", help="list the presets")


def run(args) -> int:
    if args.list:
        for path in sorted(PRESET_DIR.glob("*.yaml")):
            print(path.stem)
        return 0
    if not args.name:
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))) or "none"
        raise UserError(f"marsseg exp: name a preset, e.g. `marsseg exp cpu-small` (known: {known})")
    command = ["dvc", "exp", "run", *set_param_args(load_preset(args.name))]
    if args.queue:
        command.append("--queue")
    print("exp:", " ".join(command))
    return subprocess.call(command, env={**os.environ, "MARSSEG_PRESET": args.name})


if __name__ == "__main__":
    from marsseg.cli import run_module

    run_module(__name__)
