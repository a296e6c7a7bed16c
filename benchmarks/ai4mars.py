"""The AI4Mars benchmark file the real-data benchmarks read (in place, never copied into the repository)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from marsseg.datasets import LabelledSet
from marsseg.sources import load_npz

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ai4mars64x128.npz"


def load_rows(path: Path, rows: int) -> LabelledSet | None:
    """The file's first ``rows`` training rows (0: all), read by the pipeline's own reader of the course
    format; None, after saying so, when the file is absent."""
    if not path.is_file():
        print(f"skipped: {path} not found (the AI4Mars benchmark file lives outside the repository)")
        return None
    data = load_npz(path)
    return data.subset(np.arange(min(rows, len(data)))) if rows > 0 else data
