"""What the stages report: ``metrics/<stage>.json`` (DVC metrics, the same bytes on every rerun) and
``logs/<stage>.json`` (how this run went: wall-clock seconds and the like; git-ignored, not a DVC output).

Keeping times out of DVC outputs matters: an output whose bytes change on every rerun changes
``dvc.lock``, so a restored or rerun stage would never match the committed lock.
"""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import numpy as np

from marsseg import CLASS_NAMES, NUM_CLASSES
from marsseg.io import write_json

METRICS_DIR = Path("metrics")
LOGS_DIR = Path("logs")
# How one run went rather than what it produced: wall-clock times, the epoch a killed run resumed from.
RUN_LOG_KEYS = ("*seconds*", "resumed_from_epoch")


def is_run_log(key: str) -> bool:
    return any(fnmatch.fnmatch(key, pattern) for pattern in RUN_LOG_KEYS)


def split_run_log(metrics: dict) -> tuple[dict, dict]:
    """(``metrics`` without the ``RUN_LOG_KEYS``, those keys), nested groups included."""
    kept, timings = {}, {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            inner_kept, inner_timings = split_run_log(value)
            kept[key] = inner_kept
            if inner_timings:
                timings[key] = inner_timings
        elif is_run_log(key):
            timings[key] = value
        else:
            kept[key] = value
    return kept, timings


def write_metrics(stage: str, metrics: dict, run_log: dict | None = None) -> dict:
    """``metrics/<stage>.json`` without the ``RUN_LOG_KEYS``; those and ``run_log`` go to ``logs/<stage>.json``.

    Returns the run log written (for the stage's printed line and MLflow).
    """
    kept, timings = split_run_log(metrics)
    log = {**timings, **(run_log or {})}
    write_json(METRICS_DIR / f"{stage}.json", kept)
    write_json(LOGS_DIR / f"{stage}.json", log)
    return log


def class_fractions(masks: np.ndarray) -> dict[str, float]:
    """Share of pixels per class, keyed by class name."""
    # Per-class counting on uint8 avoids bincount's int64 copy of every pixel (GBs on augmented sets).
    counts = np.array([np.count_nonzero(masks == c) for c in range(NUM_CLASSES)])
    total = max(int(counts.sum()), 1)
    return {name: round(float(c) / total, 6) for name, c in zip(CLASS_NAMES, counts)}


TRAIN_MARKER_ENV = "MARSSEG_TRAIN_MARKER"


def note_training(stage: str) -> None:
    """Append ``stage`` to the file named by ``$MARSSEG_TRAIN_MARKER``, when set, as training starts.

    How the restore tests prove that a restore ran no training (timings would not prove it).
    """
    marker = os.environ.get(TRAIN_MARKER_ENV)
    if marker:
        with open(marker, "a") as handle:
            handle.write(stage + "\n")
