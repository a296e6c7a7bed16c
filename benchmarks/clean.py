"""Benchmark: the clean stage's outlier filter on the real AI4Mars training rows.

    .venv/bin/python benchmarks/clean.py [--rows 0] [--n-jobs N] [--data ../shared/data/ai4mars64x128.npz]

Reads ``training_set`` of the AI4Mars benchmark file (in place, never copied into the repository),
runs the filter with the params.yaml ``clean`` settings and prints the seconds per step (features,
PCA, t-SNE, rules, total), the rows removed per rule, and the machine load before and after. The
target is <= 60 s for all 5,637 rows on 2 cores.

The file's contaminating photographs (237) all carry one two-class mask, the file's most repeated
one; every other row is taken to be real terrain. Printed: how many photographs each rule catches,
how many terrain rows each rule removes (the bar: at most 5 in all) and which, and, with both rules on, the
overlap of the ``embedding`` rule (image content only) with the ``shared_mask`` rule: how many of
the masked photographs the pictures alone give away.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from ai4mars import DEFAULT_DATA, load_rows
from arguments import count_or_zero
from marsseg.clean import find_outliers
from marsseg.config import load_config

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("features", "pca", "tsne", "rules", "total")


def photographs(masks: np.ndarray) -> np.ndarray:
    """(n,) bool: rows carrying the most repeated mask (the file's contaminating photographs)."""
    flat = np.ascontiguousarray(masks.reshape(len(masks), -1))
    keys = flat.view(np.dtype((np.void, flat.shape[1]))).ravel()
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return inverse.ravel() == np.argmax(counts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=count_or_zero, default=0, help="first N rows only (0: all)")
    parser.add_argument("--n-jobs", type=count_or_zero, default=0, help="threads (0: clean.n_jobs from params.yaml)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    data = load_rows(args.data, args.rows)
    if data is None:
        return 0
    cfg = load_config(ROOT / "params.yaml")
    config = cfg.clean.model_copy(update={"n_jobs": args.n_jobs}) if args.n_jobs else cfg.clean

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    report = find_outliers(data, config, seed=cfg.seed)
    wall = time.perf_counter() - start
    load_after = os.getloadavg()[0]

    print(f"rows {len(data)}, {os.cpu_count()} cores visible, threads (clean.n_jobs) {config.n_jobs}, "
          f"load average {load_before:.1f} before / {load_after:.1f} after")
    print(f"{'step':<10}{'seconds':>9}")
    for step in STEPS:
        print(f"{step:<10}{report.timings[step]:>9.2f}")
    print(f"{'wall':<10}{wall:>9.2f}")
    metrics = report.metrics()
    if report.references:
        print(f"test images measured beside the training rows (clean.test_references): {report.references}"
              + (f", of which the embedding rule would flag {metrics['test_references_flagged']}"
                 if "test_references_flagged" in metrics else ""))
    print("removed: " + ", ".join(f"{rule} {metrics[f'removed_{rule}']}" for rule in config.rules)
          + f", total {metrics['removed_total']} of {metrics['rows_in']}")
    photo = photographs(data.masks)
    print(f"photographs (rows with the most repeated mask): {int(photo.sum())}, removed "
          f"{int((report.removed & photo).sum())}; by rule: "
          + ", ".join(f"{rule} {int((r.flagged & photo).sum())}" for rule, r in report.results.items()))
    print(f"terrain rows removed: {int((report.removed & ~photo).sum())} (bar: <= 5); by rule: "
          + ", ".join(f"{rule} {int((r.flagged & ~photo).sum())}" for rule, r in report.results.items()))
    print("terrain rows removed (row of the file): "
          + ", ".join(str(row) for row in np.flatnonzero(report.removed & ~photo)))
    if {"embedding", "shared_mask"} <= set(config.rules):
        by_content, by_mask = report.results["embedding"].flagged, report.results["shared_mask"].flagged
        print(f"embedding vs shared_mask: both {int((by_content & by_mask).sum())}, "
              f"shared_mask only {int((by_mask & ~by_content).sum())}, "
              f"embedding only {int((by_content & ~by_mask).sum())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
