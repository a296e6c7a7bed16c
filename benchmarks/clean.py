"""Benchmark: the clean stage's outlier filter on the real AI4Mars training rows.

    .venv/bin/python benchmarks/clean.py [--rows 0] [--n-jobs N] [--data ../shared/data/ai4mars64x128.npz]

Reads ``training_set`` of the AI4Mars benchmark file (in place, never copied into the repository),
runs the filter with the params.yaml ``clean`` settings and prints the seconds per step (features,
PCA, t-SNE, rules, total), the rows removed per rule, and the machine load before and after. The
target is <= 60 s for all 5,637 rows on 2 cores. The file's contaminating photographs all carry one
mask, so with both rules on, the overlap of the ``embedding`` rule (image content only) with the
``shared_mask`` rule is printed too: how many of the masked photographs the pictures alone give away.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from marsseg.outliers import CleanConfig, find_outliers  # noqa: E402
from ai4mars import DEFAULT_DATA, load_rows  # noqa: E402
from marsseg.params import load_params, section, seed_of  # noqa: E402

STEPS = ("features", "pca", "tsne", "rules", "total")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=0, help="first N rows only (0: all)")
    parser.add_argument("--n-jobs", type=int, default=0, help="threads (0: clean.n_jobs from params.yaml)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    data = load_rows(args.data, args.rows)
    if data is None:
        return 0
    params = load_params(ROOT / "params.yaml")
    config = CleanConfig.from_params(section(params, "clean"))
    if args.n_jobs:
        config = dataclasses.replace(config, n_jobs=args.n_jobs)

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    report = find_outliers(data, config, seed=seed_of(params))
    wall = time.perf_counter() - start
    load_after = os.getloadavg()[0]

    print(f"rows {len(data)}, {os.cpu_count()} cores visible, threads (clean.n_jobs) {config.n_jobs}, "
          f"load average {load_before:.1f} before / {load_after:.1f} after")
    print(f"{'step':<10}{'seconds':>9}")
    for step in STEPS:
        print(f"{step:<10}{report.timings[step]:>9.2f}")
    print(f"{'wall':<10}{wall:>9.2f}")
    metrics = report.metrics()
    print("removed: " + ", ".join(f"{rule} {metrics[f'removed_{rule}']}" for rule in config.rules)
          + f", total {metrics['removed_total']} of {metrics['rows_in']}")
    if {"embedding", "shared_mask"} <= set(config.rules):
        by_content, by_mask = report.results["embedding"].flagged, report.results["shared_mask"].flagged
        print(f"embedding vs shared_mask: both {int((by_content & by_mask).sum())}, "
              f"shared_mask only {int((by_mask & ~by_content).sum())}, "
              f"embedding only {int((by_content & ~by_mask).sum())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
