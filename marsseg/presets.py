"""Experiments from presets: ``presets/<name>.yaml`` holds params overrides, run as a DVC experiment.

    python -m marsseg.presets run seed-best [--queue]   (or: make exp PRESET=seed-best)
    python -m marsseg.presets list

The overrides become ``dvc exp run -S key=value`` arguments, so they show in ``dvc exp show`` and, via
the train stage, in MLflow (tagged ``preset``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from marsseg.errors import UserError, stage_main
from marsseg.params import flatten, load_params

PRESET_DIR = Path("presets")


def load_preset(name: str) -> dict:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))) or "none"
        raise UserError(f"{path}: no such preset (known: {known})")
    overrides = yaml.safe_load(path.read_text()) or {}
    if not isinstance(overrides, dict):
        raise UserError(f"{path}: expected a mapping of parameter groups")
    known_keys = flatten(load_params())
    unknown = [key for key in flatten(overrides) if key not in known_keys]
    if unknown:
        raise UserError(f"{path}: unknown parameter(s) {', '.join(unknown)}; see params.yaml for the valid keys")
    return overrides


def set_param_args(overrides: dict) -> list[str]:
    """``-S key=value`` pairs; values as JSON, which DVC parses as YAML (lists and booleans survive)."""
    args = []
    for key, value in flatten(overrides).items():
        args += ["-S", f"{key}={json.dumps(value)}"]
    return args


def run(name: str, queue: bool) -> int:
    command = ["dvc", "exp", "run", *set_param_args(load_preset(name))]
    if queue:
        command.append("--queue")
    print("presets:", " ".join(command))
    return subprocess.call(command, env={**os.environ, "MARSSEG_PRESET": name})


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m marsseg.presets", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run a preset as a DVC experiment")
    run_parser.add_argument("name")
    run_parser.add_argument("--queue", action="store_true", help="queue it instead (dvc queue start runs it)")
    sub.add_parser("list", help="list the presets")
    args = parser.parse_args(argv)
    if args.command == "list":
        for path in sorted(PRESET_DIR.glob("*.yaml")):
            print(path.stem)
        return
    sys.exit(run(args.name, args.queue))


if __name__ == "__main__":
    main()
