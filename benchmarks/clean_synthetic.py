"""Benchmark: how well the clean stage's rules find the injected outliers of the synthetic data set.

    .venv/bin/python benchmarks/clean_synthetic.py [--seeds 1-8] [--rows 400,600]

For each generator seed and size, the data set is drawn as the pipeline draws it (4% non-terrain
outliers, params.yaml's big-rock share) and filtered twice with the params.yaml ``clean`` settings:
with every rule on, and with only the ``embedding`` rule after each outlier has been given a
different terrain mask (so only its picture can give it away). Prints precision and recall of the
removed rows against the injected ones, one line per data set, then the mean and the worst.
The default pipeline's own data set is the row with the top-level ``seed`` at ``n_train`` rows.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from marsseg.datasets import LabelledSet  # noqa: E402
from marsseg.outliers import CleanConfig, CleanWarning, find_outliers  # noqa: E402
from marsseg.params import load_params, section, seed_of  # noqa: E402
from marsseg.synthetic import generate  # noqa: E402


def seed_list(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def precision_recall(removed: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    hits = int((removed & truth).sum())
    return hits / max(int(removed.sum()), 1), hits / max(int(truth.sum()), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default=seed_list("1-8"), help="generator seeds, e.g. 1-8")
    parser.add_argument("--rows", default="400,600", help="training rows per data set, comma-separated")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    config = CleanConfig.from_params(section(params, "clean"))
    synthetic = section(params, "data")["synthetic"]
    cases = [(seed_of(params), synthetic["n_train"])]  # the pipeline's own data set first
    cases += [(seed, int(rows)) for rows in args.rows.split(",") for seed in args.seeds]

    print(f"{'seed':>5}{'rows':>6}{'outliers':>9} | {'all rules P':>11}{'R':>6} | {'embedding only P':>16}{'R':>6}")
    results = []
    for seed, rows in cases:
        data = generate(n_train=rows, n_test=1, outlier_fraction=synthetic["outlier_fraction"], seed=seed,
                        rock_image_fraction=synthetic["rock_image_fraction"])
        truth = np.zeros(rows, bool)
        truth[data.outlier_rows] = True
        masks = data.train_masks.copy()
        terrain = np.flatnonzero(~truth)
        masks[truth] = data.train_masks[np.random.default_rng(seed).choice(terrain, int(truth.sum()), replace=False)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CleanWarning)
            every = find_outliers(LabelledSet(data.train_images, data.train_masks, np.arange(rows)), config, seed_of(params))
            alone = find_outliers(LabelledSet(data.train_images, masks, np.arange(rows)),
                                  dataclasses.replace(config, rules=("embedding",)), seed_of(params))
        scores = precision_recall(every.removed, truth) + precision_recall(alone.removed, truth)
        results.append(scores)
        print(f"{seed:>5}{rows:>6}{int(truth.sum()):>9} | {scores[0]:>11.3f}{scores[1]:>6.3f} | "
              f"{scores[2]:>16.3f}{scores[3]:>6.3f}")
    table = np.array(results)
    for name, row in (("mean", table.mean(axis=0)), ("worst", table.min(axis=0))):
        print(f"{name:>11}{'':>9} | {row[0]:>11.3f}{row[1]:>6.3f} | {row[2]:>16.3f}{row[3]:>6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
