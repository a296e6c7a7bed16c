"""Where the stages read and write: the single split's files, or, for cross-validation fold ``i``,
the same files under ``data/cv/fold<i>/``, ``models/cv/fold<i>/``, ``reports/cv/fold<i>/``, ``metrics/cv/fold<i>/``.

The fold stages in dvc.yaml (``foreach: ${split.cv_folds}``) run the same stage scripts with ``--fold i``;
this is the one place that maps a fold to its paths, so dvc.yaml's paths and the scripts' agree.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

INGESTED = Path("data/ingested/dataset.npz")
CLEANED = Path("data/clean/dataset.npz")


@dataclass(frozen=True)
class Layout:
    fold: int | None = None

    def _under(self, base: str) -> Path:
        return Path(base) if self.fold is None else Path(base) / "cv" / f"fold{self.fold}"

    @property
    def split_dir(self) -> Path:
        return Path("data/split") if self.fold is None else Path("data/cv") / f"fold{self.fold}"

    @property
    def train_split(self) -> Path:
        return self.split_dir / "train.npz"

    @property
    def val(self) -> Path:
        return self.split_dir / "val.npz"

    @property
    def augment_dir(self) -> Path:
        return Path("data/augment") if self.fold is None else self.split_dir / "augment"

    @property
    def augmented(self) -> Path:
        return self.augment_dir / "train.npz"

    @property
    def models(self) -> Path:
        return self._under("models")

    @property
    def model(self) -> Path:
        return self.models / "model.keras"

    @property
    def reports(self) -> Path:
        return self._under("reports")

    def metrics_name(self, stage: str) -> str:
        """The name ``reporting.write_metrics`` files a stage's metrics under (``metrics/<name>.json``)."""
        return stage if self.fold is None else f"cv/fold{self.fold}/{stage}"


def fold_layout(description: str) -> Layout:
    """The layout a stage script was asked for: ``--fold i`` for a cross-validation fold, else the single split."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--fold", type=int, default=None, help="cross-validation fold (see split.folds)")
    return Layout(parser.parse_args().fold)
