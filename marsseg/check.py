"""Validate params.yaml the way every stage does, and say what the pipeline will run."""
from __future__ import annotations

import argparse

from marsseg.config import PARAMS_FILE, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")


def run(args) -> None:
    cfg = load_config(args.params)
    print(f"{args.params}: OK — data {cfg.data.source}, model {cfg.model.arch} depth {cfg.model.depth} "
          f"({cfg.model.base_filters} filters), loss {cfg.loss.name}, {cfg.train.epochs} epochs, seed {cfg.seed}")


if __name__ == "__main__":
    from marsseg.cli import run_module

    run_module(__name__)
