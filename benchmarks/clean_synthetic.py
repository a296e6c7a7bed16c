"""Benchmark: how well the clean stage's rules find the injected outliers of synthetic data sets.

    .venv/bin/python benchmarks/clean_synthetic.py [--sets default,tuning,held-out] [--seeds 1-4] [--rows 500]
                                                   [--test-rows 0]

Three sets of outlier styles (``marsseg.synthetic``):

``default``   the pipeline's own data (shapes, checkerboards, text, indoor blocks, one shared two-class mask);
``tuning``    those four styles and ``EXTRA_TUNING_STYLES`` (still lifes, stripes, clouds, mosaics),
              whole and pasted over 30-60% of a terrain frame: what the rules and features were
              developed on;
``held-out``  ``HELD_OUT_STYLES`` (pages, grids, portraits, rooms, product shots, each whole and
              pasted), never looked at while developing: the figures that say how the rules fare
              on pictures they have not seen. Bar: precision and recall >= 0.95 with the embedding
              rule alone, >= 0.97 with every rule.

For each set, generator seed and size, the data set is drawn (params.yaml's outlier fraction and
big-rock share) and filtered twice with the params.yaml ``clean`` settings: with every rule on, and
with only the ``embedding`` rule after each outlier has been given a different terrain mask (so
only its picture can give it away). Prints precision and recall of the removed rows against the
injected ones per data set and, per set, pooled over its data sets (all removed and injected rows
counted together) and the worst data set, then per outlier style the share of its injected rows
removed (recall), pooled over the set's data sets: which kinds of picture slip through. The default
set's first row is the pipeline's own data set (top-level ``seed``, ``n_train`` rows). ``--test-rows N``
draws N test images of generated terrain with each data set, which the clean stage measures the training
rows among (``clean.test_references``); 0, the default, measures them alone.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from marsseg.clean import CleanWarning, find_outliers
from marsseg.config import load_config
from marsseg.datasets import LabelledSet
from marsseg.errors import stage_main
from marsseg.synthetic import HELD_OUT_STYLES, MAX_IMAGES, TUNING_STYLES, generate

from arguments import count_or_zero, positive_ints, seed_range

ROOT = Path(__file__).resolve().parents[1]
STYLE_SETS = {"default": None, "tuning": TUNING_STYLES, "held-out": HELD_OUT_STYLES}


def style_sets(text: str) -> list[str]:
    """Comma-separated names of ``STYLE_SETS``, all checked before any data set is drawn."""
    names = text.split(",")
    unknown = [name for name in names if name not in STYLE_SETS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown set {unknown[0]!r}; known: {', '.join(STYLE_SETS)}")
    return names


def row_counts(text: str) -> list[int]:
    """Comma-separated training rows per data set, each within what the generator draws, all checked before
    the first data set (a count over the limit used to fail only after the first sets had run)."""
    return [_within_generator(count) for count in positive_ints(text)]


def count_of_test_rows(text: str) -> int:
    return _within_generator(count_or_zero(text))


def _within_generator(count: int) -> int:
    if count > MAX_IMAGES:
        raise argparse.ArgumentTypeError(f"{count} rows is more than the generator draws ({MAX_IMAGES})")
    return count


def counts(removed: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """hits, removed, injected"""
    return np.array([int((removed & truth).sum()), int(removed.sum()), int(truth.sum())])


def precision_recall(hits_removed_truth: np.ndarray) -> tuple[float, float]:
    hits, removed, truth = hits_removed_truth
    return hits / max(removed, 1), hits / max(truth, 1)


def disguise(masks: np.ndarray, truth: np.ndarray, seed: int) -> np.ndarray:
    """Each outlier gets a different terrain row's mask: only its picture can give it away."""
    masks = masks.copy()
    terrain = np.flatnonzero(~truth)
    masks[truth] = masks[np.random.default_rng(seed).choice(terrain, int(truth.sum()), replace=False)]
    return masks


def evaluate(config, seed: int, rows: int, fraction: float, rock_fraction: float, styles,
             found_by_style: dict[str, np.ndarray], test_rows: int = 0) -> np.ndarray:
    """(2, 3) counts: every rule, embedding alone. Adds [removed by every rule, by embedding alone,
    injected] per outlier style to ``found_by_style``."""
    data = generate(n_train=rows, n_test=max(test_rows, 1), outlier_fraction=fraction, seed=seed,
                    rock_image_fraction=rock_fraction, outlier_styles=styles)
    truth = np.zeros(rows, bool)
    truth[data.outlier_rows] = True
    index = np.arange(rows)
    test_images = data.test_images if test_rows else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CleanWarning)
        every = find_outliers(LabelledSet(data.train_images, data.train_masks, index, test_images), config, seed)
        alone = find_outliers(LabelledSet(data.train_images, disguise(data.train_masks, truth, seed), index,
                                          test_images),
                              config.model_copy(update={"rules": ["embedding"]}), seed)
    for row, style in zip(data.outlier_rows, data.outlier_styles):
        found_by_style[style] += [every.removed[row], alone.removed[row], 1]
    return np.stack([counts(every.removed, truth), counts(alone.removed, truth)])


@stage_main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=style_sets, default=list(STYLE_SETS), help=f"any of {', '.join(STYLE_SETS)}")
    parser.add_argument("--seeds", type=seed_range, default=seed_range("1-4"), help="generator seeds, e.g. 1-4")
    parser.add_argument("--rows", type=row_counts, default=[500], help="training rows per data set, comma-separated")
    parser.add_argument("--test-rows", type=count_of_test_rows, default=0,
                        help="test images drawn with each data set, measured beside its training rows")
    args = parser.parse_args()
    cfg = load_config(ROOT / "params.yaml")
    synthetic = cfg.data.synthetic
    fraction, rock_fraction = synthetic.outlier_fraction, synthetic.rock_image_fraction

    print(f"{'set':<9}{'seed':>5}{'rows':>6}{'outliers':>9} | {'all rules P':>11}{'R':>7} | "
          f"{'embedding only P':>16}{'R':>7}")
    for name in args.sets:
        cases = [(seed, rows) for rows in args.rows for seed in args.seeds]
        if name == "default":  # the pipeline's own data set first
            cases.insert(0, (cfg.seed, synthetic.n_train))
        tallies, found_by_style = [], defaultdict(lambda: np.zeros(3, int))
        for seed, rows in cases:
            tally = evaluate(cfg.clean, seed, rows, fraction, rock_fraction, STYLE_SETS[name], found_by_style,
                             args.test_rows)
            tallies.append(tally)
            scores = [*precision_recall(tally[0]), *precision_recall(tally[1])]
            print(f"{name:<9}{seed:>5}{rows:>6}{tally[0, 2]:>9} | {scores[0]:>11.3f}{scores[1]:>7.3f} | "
                  f"{scores[2]:>16.3f}{scores[3]:>7.3f}")
        pooled = np.sum(tallies, axis=0)
        worst = np.min([[*precision_recall(t[0]), *precision_recall(t[1])] for t in tallies], axis=0)
        pooled_scores = [*precision_recall(pooled[0]), *precision_recall(pooled[1])]
        for label, row in (("pooled", pooled_scores), ("worst", worst)):
            print(f"{name:<9}{label:>11}{'':>9} | {row[0]:>11.3f}{row[1]:>7.3f} | {row[2]:>16.3f}{row[3]:>7.3f}")
        print(f"{name:<9}{'style':<20}{'outliers':>9} | {'all rules R':>11} | {'embedding only R':>16}")
        for style, (every, alone, injected) in sorted(found_by_style.items()):
            print(f"{name:<9}{style:<20}{injected:>9} | {every / injected:>11.3f} | {alone / injected:>16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
