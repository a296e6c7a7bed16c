"""Benchmark: augmenting real-looking training images with the params.yaml recipe.

    .venv/bin/python benchmarks/augment.py [--rows 4500] [--data ../shared/data/ai4mars64x128.npz]

Reads the first ``--rows`` rows of the AI4Mars benchmark file (real Mars terrain in the course's
format; read in place, never copied into the repository) and prints a table: images in, rows out,
seconds, images/s. The target is 4,500 images with the default multipliers in <= 60 s on 2 cores.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ai4mars import DEFAULT_DATA, load_rows  # benchmarks/ai4mars.py, beside this script
from arguments import count_or_zero
from marsseg.augment import augment_dataset
from marsseg.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=count_or_zero, default=4500, help="first N rows only (0: all)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    data = load_rows(args.data, args.rows)
    if data is None:
        return 0
    cfg = load_config(ROOT / "params.yaml")

    start = time.perf_counter()
    result = augment_dataset(data, cfg.augment, seed=cfg.seed)
    seconds = time.perf_counter() - start

    print(f"{'images in':>10} {'rare in':>8} {'rows out':>9} {'seconds':>8} {'images/s':>9} {'rows/s':>8}")
    print(f"{len(data):>10} {int(result.rare.sum()):>8} {len(result.data):>9} {seconds:>8.1f} "
          f"{len(data) / seconds:>9.0f} {len(result.data) / seconds:>8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
