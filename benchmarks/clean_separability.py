"""Benchmark: how far the ``embedding`` rule's feature space sets synthetic outliers apart from real terrain.

    .venv/bin/python benchmarks/clean_separability.py [--sets tuning,held-out] [--seeds 1-10] [--rows 500]
                                                     [--budgets 0,2,5] [--real-rows 0] [--draws 1]
                                                     [--data ../shared/data/ai4mars64x128.npz] [--show 0]

The rule removes a row when it lies at least ``clean.min_isolation`` units off the span of its nearest
rows (``marsseg.clean.rules``: the residual a combination of its 40 nearest rows leaves; the unit, the
median residual; averaged over the two views of the features). This script measures the two sides of
that threshold apart, in the same feature space, measure and unit:

- real terrain: each terrain row of the AI4Mars file (its photographs, the rows carrying its most
  repeated mask, left out) and its isolation from the other terrain rows: what the rule sees of a rare
  real view; with ``--real-rows N``, in ``--draws`` random sets of N terrain rows instead of the whole
  file (a small set has fewer rows like its rare views);
- synthetic outliers (``benchmarks/clean_synthetic.py``'s sets and seeds): each injected outlier and its
  isolation from the terrain rows of its data set.

For each ``--budgets`` entry b (real terrain rows a threshold may remove from each real set) the
threshold is the (b x draws + 1)-th largest real isolation, and the table gives the share of each set's
outliers more isolated than that from terrain: how many of them a threshold on isolation from
terrain could find while real terrain loses at most b rows per set (the clean stage's issue allows 5 of
the whole file). The last column is the same at params.yaml's ``min_isolation``; per outlier style, the
share at the largest budget and at ``min_isolation``. It measures the feature space, not the rule: the
rule also groups rows on the t-SNE map and measures a group's isolation from the rows outside it, which
may find an outlier whose nearest terrain rows share its map group (``benchmarks/clean_synthetic.py``
measures the rule). A feature change that moves outliers away from terrain without moving real terrain
apart raises these figures; a change of threshold alone does not.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ai4mars import DEFAULT_DATA, load_rows
from arguments import count_or_zero, counts_or_zero, positive_int, seed_range
from clean import photographs
from clean_synthetic import STYLE_SETS, row_counts, style_sets
from marsseg.clean.features import feature_views, image_features, standardise
from marsseg.clean.rules import SPAN_NEIGHBOURS
from marsseg.config import load_config
from marsseg.errors import stage_main
from marsseg.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]


def isolation(images: np.ndarray, terrain: np.ndarray) -> np.ndarray:
    """(n,) each row's residual off the span of its ``SPAN_NEIGHBOURS`` nearest other terrain rows (an
    outlier's: nearest terrain rows), in units of the median residual of a row off its nearest other rows'
    span (all rows counted, as the rule counts), averaged over the rule's views (``features.VIEWS``)."""
    return np.mean([_isolation_in(view, terrain) for view in feature_views(standardise(image_features(images)))],
                   axis=0)


def _isolation_in(space, terrain: np.ndarray) -> np.ndarray:
    distances, neighbours = space.nearest(SPAN_NEIGHBOURS)
    everyone = np.arange(len(space))
    distinct = distances[:, 0] > 0
    unit = np.median(space.residuals(everyone[distinct], neighbours[distinct]))
    if not terrain.all():  # an outlier is measured against terrain rows only
        neighbours = space.nearest_in(everyone, np.flatnonzero(terrain), SPAN_NEIGHBOURS)
    return space.residuals(everyone, neighbours) / unit


def outlier_isolation(styles, seeds: list[int], rows: list[int], fraction: float, rock_fraction: float):
    """Every injected outlier's isolation from its data set's terrain, and its style."""
    distances, drawn = [], []
    for size in rows:
        for seed in seeds:
            data = generate(n_train=size, n_test=1, outlier_fraction=fraction, seed=seed,
                            rock_image_fraction=rock_fraction, outlier_styles=styles)
            terrain = np.ones(size, bool)
            terrain[data.outlier_rows] = False
            distances.append(isolation(data.train_images, terrain)[data.outlier_rows])
            drawn += data.outlier_styles
    return np.concatenate(distances), np.array(drawn)


@stage_main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=style_sets, default=["tuning", "held-out"], help=f"any of {', '.join(STYLE_SETS)}")
    parser.add_argument("--seeds", type=seed_range, default=seed_range("1-10"), help="generator seeds, e.g. 1-10")
    parser.add_argument("--rows", type=row_counts, default=[500], help="training rows per synthetic data set")
    parser.add_argument("--budgets", type=counts_or_zero, default=[0, 2, 5],
                        help="real terrain rows a threshold may remove, comma-separated")
    parser.add_argument("--real-rows", type=count_or_zero, default=0, help="terrain rows per real set (0: the whole file)")
    parser.add_argument("--draws", type=positive_int, help="real sets of --real-rows rows (default 1)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a file in the course's npz format")
    parser.add_argument("--show", type=count_or_zero, default=0,
                        help="list the N most isolated real terrain rows (the file's row numbers), to look at")
    args = parser.parse_args()
    if args.draws and not args.real_rows:
        parser.error("--draws: sets are drawn only with --real-rows N (without it the whole file is one set)")
    data = load_rows(args.data, 0)
    if data is None:
        return 0
    terrain = np.flatnonzero(~photographs(data.masks))
    per_set, draws = args.real_rows or len(terrain), args.draws or 1
    budgets = sorted(set(args.budgets))
    if per_set > len(terrain):
        parser.error(f"--real-rows: {per_set} is more than the file's {len(terrain)} terrain rows")
    if budgets[-1] >= per_set:
        parser.error(f"--budgets: {budgets[-1]} is not below the {per_set} terrain rows of a real set")
    cfg = load_config(ROOT / "params.yaml")
    synthetic, threshold = cfg.data.synthetic, cfg.clean.min_isolation

    rng = np.random.default_rng(cfg.seed)
    real_sets = [rng.choice(terrain, per_set, replace=False) for _ in range(draws)] if args.real_rows else [terrain]
    real = np.concatenate([isolation(data.images[rows], np.ones(per_set, bool)) for rows in real_sets])
    order = np.argsort(real, kind="stable")[::-1]
    real, real_rows = real[order], np.concatenate(real_sets)[order]
    cuts = [real[budget * draws] for budget in budgets]
    print(f"real terrain: {draws} set(s) of {per_set} rows of {args.data.name} ({len(data) - len(terrain)} "
          f"photographs left out); {(real >= threshold).sum() / draws:g} per set at or above min_isolation {threshold:g}")
    if args.show:
        print(f"most isolated (row of {args.data.name}: isolation): "
              + ", ".join(f"{row}: {distance:.2f}" for row, distance in zip(real_rows[:args.show], real[:args.show])))
    print(f"{'set':<9}{'outliers':>9} | " + " | ".join(f"{f'budget {b}: threshold':>20}{'R':>7}" for b in budgets)
          + f" | {f'at {threshold:g}: R':>12}")
    print(f"{'':<9}{'':>9} | " + " | ".join(f"{cut:>20.2f}{'':>7}" for cut in cuts))
    by_style = {}
    for name in args.sets:
        distances, styles = outlier_isolation(STYLE_SETS[name], args.seeds, args.rows,
                                              synthetic.outlier_fraction, synthetic.rock_image_fraction)
        print(f"{name:<9}{len(distances):>9} | " + " | ".join(f"{'':>20}{np.mean(distances > cut):>7.3f}" for cut in cuts)
              + f" | {np.mean(distances >= threshold):>12.3f}")
        for style in sorted(set(styles)):
            by_style[(name, style)] = distances[styles == style]
    print(f"\n{'set':<9}{'style':<20}{'outliers':>9} | {f'R at budget {budgets[-1]}':>16}{f'R at {threshold:g}':>10}")
    for (name, style), distances in by_style.items():
        print(f"{name:<9}{style:<20}{len(distances):>9} | {np.mean(distances > cuts[-1]):>16.3f}"
              f"{np.mean(distances >= threshold):>10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
