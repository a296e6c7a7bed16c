"""Small writers shared by the stages: metrics JSON, class statistics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from marsseg import CLASS_NAMES, NUM_CLASSES


def write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def class_fractions(masks: np.ndarray) -> dict[str, float]:
    """Share of pixels per class, keyed by class name."""
    # Per-class counting on uint8 avoids bincount's int64 copy of every pixel (GBs on augmented sets).
    counts = np.array([np.count_nonzero(masks == c) for c in range(NUM_CLASSES)])
    total = max(int(counts.sum()), 1)
    return {name: round(float(c) / total, 6) for name, c in zip(CLASS_NAMES, counts)}
