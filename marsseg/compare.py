"""MLflow runs ranked by the evaluated model's val mIoU, with 95% intervals and paired differences to the best.

    marsseg compare [--markdown] [--study NAME] [--resamples N]     (or: make compare ARGS=--markdown)

What a row says:

* ``val mIoU`` is the evaluated model's (the evaluate stage's), not the last epoch's; ``95% CI`` is its
  bootstrap interval over validation images.
* Runs whose logged params differ only in ``seed`` are one row: the mean over seeds, ``± std`` and
  ``seeds`` (how many). A seed also reshuffles the split, so the spread says how much a seed alone moves
  the score.
* ``Δ best`` is the paired bootstrap difference to the best row scored on the same validation images
  (same ``val`` md5): both are resampled with the same images, so the noise they share cancels. Seeds
  reshuffle the split, so seed rows are paired seed by seed, each on its own split's images. ``≈``
  marks a row whose 95% interval of that difference contains 0: not distinguishable from the best.
* ``data`` is the hash of the data-shaping params (data, clean, split, augment); ``val`` the md5 of the
  validation file.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from marsseg import CLASS_NAMES, SCORED_CLASSES
from marsseg.errors import UserError
from marsseg.metrics import bootstrap_weights, mean_ious, percentile_interval, resampled_confusion

PER_IMAGE_ARTIFACT = "evaluate/per_image_confusion.npz"
STUDY_TAG = "search.study"
SEED_PARAM = "seed"
COMPARE_SEED = 0  # the paired bootstrap's own seed: the same table every time
CLASS_COLUMNS = {f"val_iou_{CLASS_NAMES[c]}": f"IoU {CLASS_NAMES[c]}" for c in SCORED_CLASSES}


@dataclass
class RunRecord:
    """What the table needs of one MLflow run."""

    run_id: str
    name: str
    params: dict[str, str]              # every logged param except the seed
    seed: str | None
    metrics: dict[str, float]
    tags: dict[str, str]
    per_image: np.ndarray | None = field(default=None, repr=False)

    @property
    def val_miou(self) -> float:
        return self.metrics.get("val_miou", math.nan)

    @property
    def val_md5(self) -> str | None:
        """The validation file the model was evaluated on (evaluate's tag; train's for older runs)."""
        return self.tags.get("val_md5") or self.tags.get("data_md5.val.npz")

    @property
    def seed_group(self) -> str:
        return json.dumps(self.params, sort_keys=True)


@dataclass
class Row:
    """One line of the table: one run, or every seed of one configuration."""

    members: list[RunRecord]

    @property
    def scored(self) -> list[RunRecord]:
        return [m for m in self.members if not math.isnan(m.val_miou)]

    @property
    def score(self) -> float:
        return float(np.mean([m.val_miou for m in self.scored])) if self.scored else math.nan

    @property
    def std(self) -> float:
        return float(np.std([m.val_miou for m in self.scored], ddof=1)) if len(self.scored) > 1 else math.nan

    @property
    def val_md5(self) -> str | None:
        """The common validation md5 of the members, None if they differ or it is unknown."""
        md5s = {m.val_md5 for m in self.scored}
        return md5s.pop() if len(md5s) == 1 else None

    @property
    def strata(self) -> dict[str, list[np.ndarray]] | None:
        """Validation md5 -> the per-image confusions of the members scored on it; None if any is missing.

        A seed also reshuffles the split, so the seeds of one row usually sit on different validation files.
        """
        if not self.scored or any(m.val_md5 is None or m.per_image is None for m in self.scored):
            return None
        strata: dict[str, list[np.ndarray]] = {}
        for member in self.scored:
            strata.setdefault(member.val_md5, []).append(member.per_image)
        return strata

    @property
    def pairing(self) -> tuple | None:
        """Rows with equal pairings were scored on the same validation files."""
        strata = self.strata
        return None if strata is None else tuple(sorted(strata))


def record_of(run: pd.Series) -> RunRecord:
    """A row of ``mlflow.search_runs`` -> ``RunRecord`` (NaN cells, i.e. other runs' keys, dropped)."""
    def group(prefix: str) -> dict:
        return {key[len(prefix):]: value for key, value in run.items()
                if key.startswith(prefix) and value is not None and not (isinstance(value, float) and math.isnan(value))}

    params = group("params.")
    seed = params.pop(SEED_PARAM, None)
    tags = group("tags.")
    return RunRecord(run_id=run["run_id"], name=tags.get("mlflow.runName", run["run_id"][:8]), params=params,
                     seed=seed, metrics={k: float(v) for k, v in group("metrics.").items()}, tags=tags)


def _best_first(score: float) -> tuple:
    """Sort key: highest score first, unscored (NaN) last."""
    return (True, 0.0) if math.isnan(score) else (False, -score)


def seed_rows(records: list[RunRecord]) -> list[Row]:
    """Runs grouped by all their params but ``seed``, best mean val mIoU first (unscored rows last)."""
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(record.seed_group, []).append(record)
    rows = [Row(sorted(members, key=lambda m: _best_first(m.val_miou))) for members in groups.values()]
    return sorted(rows, key=lambda row: _best_first(row.score))


def row_metric(row: Row, name: str) -> float:
    """A metric of the row: the run's own, or the mean over the seeds that logged it."""
    values = [m.metrics[name] for m in row.members if not math.isnan(m.metrics.get(name, math.nan))]
    return float(np.mean(values)) if values else math.nan


@dataclass
class Difference:
    best: Row
    point: float
    low: float
    high: float

    @property
    def distinguishable(self) -> bool:
        return not self.low <= 0.0 <= self.high


def stratified_difference(strata: dict[str, list[np.ndarray]], best: dict[str, list[np.ndarray]], resamples: int,
                          seed: int) -> np.ndarray:
    """Bootstrap samples of (mean mIoU of ``strata``'s runs) - (the same of ``best``'s), on the same images.

    Each validation file's images are resampled on their own, with the same draw for both sides, so seed k
    of one configuration meets seed k of the other on seed k's split. Each side's statistic is the mean
    over its runs, as its row's val mIoU is.
    """
    weights = {md5: bootstrap_weights(len(strata[md5][0]), resamples, seed + index)
               for index, md5 in enumerate(sorted(strata))}

    def statistic(side: dict[str, list[np.ndarray]]) -> np.ndarray:
        total = sum(len(runs) for runs in side.values())
        return sum(len(side[md5]) / total * np.mean([mean_ious(resampled_confusion(run, weights[md5]))
                                                     for run in side[md5]], axis=0)
                   for md5 in sorted(side))

    return statistic(strata) - statistic(best)


def paired_differences(rows: list[Row], resamples: int, seed: int = COMPARE_SEED) -> dict[int, Difference]:
    """Row position -> paired bootstrap difference of its mean val mIoU to the best row on the same images."""
    best_of: dict[tuple, Row] = {}
    for row in rows:  # rows come best first
        if row.pairing is not None:
            best_of.setdefault(row.pairing, row)
    differences = {}
    for position, row in enumerate(rows):
        best = best_of.get(row.pairing) if row.pairing is not None else None
        if best is None:
            continue
        strata, best_strata = row.strata, best.strata
        if any(len({len(m) for m in strata[md5] + best_strata[md5]}) != 1 for md5 in strata):
            continue  # same md5 but a different image count: an artifact does not match its file
        low, high = percentile_interval(stratified_difference(strata, best_strata, resamples, seed))
        differences[position] = Difference(best, row.score - best.score, low, high)
    return differences


def val_label(row: Row) -> str:
    """The validation file's md5 (8 digits), or how many files a row's seeds were scored on."""
    md5s = {m.val_md5 for m in row.scored if m.val_md5}
    return (row.val_md5 or "")[:8] if len(md5s) <= 1 else f"{len(md5s)} splits"


def _interval(low: float, high: float) -> str:
    return "" if math.isnan(low) or math.isnan(high) else f"[{low:.4f}, {high:.4f}]"


def build_table(records: list[RunRecord], resamples: int = 1000, seed: int = COMPARE_SEED) -> pd.DataFrame:
    """The comparison table of ``records`` (their ``per_image`` filled in where available)."""
    rows = seed_rows(records)
    differences = paired_differences(rows, resamples, seed) if resamples > 0 else {}
    lines = []
    for position, row in enumerate(rows):
        top = row.members[0]
        single = len(row.members) == 1
        difference = differences.get(position)
        if difference is None:
            delta, mark = "", ""
        elif difference.best is row:
            delta, mark = "best", ""
        else:
            delta = f"{difference.point:+.4f} {_interval(difference.low, difference.high)}"
            mark = "" if difference.distinguishable else "≈"
        lines.append({
            "run": top.name if single else f"{top.name} +{len(row.members) - 1}",
            "arch": top.params.get("model.arch", ""),
            "loss": top.params.get("loss.name", ""),
            "data": top.tags.get("data_hash", ""),
            "val": val_label(row),
            "seeds": len(row.members),
            "val mIoU": row.score,
            "± std": row.std,
            "95% CI": _interval(top.metrics.get("val_miou_ci_low", math.nan),
                                top.metrics.get("val_miou_ci_high", math.nan)) if single else "",
            "Δ best [95% CI]": delta,
            "≈ best": mark,
            **{label: row_metric(row, name) for name, label in CLASS_COLUMNS.items()},
            "params": top.metrics.get("parameters", math.nan),
            "train s": row_metric(row, "training_seconds"),
        })
    table = pd.DataFrame(lines, columns=None if lines else ["run", "val mIoU"])
    if "params" in table:
        table["params"] = table["params"].astype("Float64").round().astype("Int64")
    return table


# --------------------------------------------------------------------------- MLflow

def fetch_records(uri: str, experiment: str, study: str | None = None) -> list[RunRecord]:
    """Finished runs of ``experiment`` (only those tagged ``search.study = study`` if given)."""
    import mlflow

    from marsseg.tracking import check_reachable

    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        raise UserError(f"MLflow store {uri}: no experiment '{experiment}' yet; run the pipeline first")
    filters = ["attributes.status = 'FINISHED'"]
    if study:
        filters.append(f"tags.`{STUDY_TAG}` = '{study}'")
    runs = mlflow.search_runs(experiment_ids=[found.experiment_id], filter_string=" and ".join(filters))
    if study and runs.empty:
        raise UserError(f"--study {study}: no finished run is tagged {STUDY_TAG}={study} in experiment '{experiment}'")
    return [record_of(run) for _, run in runs.iterrows()]


def download_per_image(run_id: str, folder: Path) -> np.ndarray | None:
    """A run's per-image confusion matrices (the evaluate artifact), or None if it has none."""
    import os

    import mlflow

    from marsseg.evaluation import read_per_image_confusion

    # One progress bar per run would bury the table.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=PER_IMAGE_ARTIFACT,
                                                   dst_path=str(folder / run_id))
    except Exception:  # noqa: BLE001 - older runs have no such artifact; MLflow raises several types
        return None
    return read_per_image_confusion(path)["confusion"]


def attach_per_image(records: list[RunRecord], loader: Callable[[str], np.ndarray | None]) -> None:
    for record in records:
        if not math.isnan(record.val_miou):
            record.per_image = loader(record.run_id)


def load_table(uri: str, experiment: str, study: str | None = None, resamples: int = 1000) -> pd.DataFrame:
    records = fetch_records(uri, experiment, study)
    with tempfile.TemporaryDirectory(prefix="marsseg-compare-") as folder:
        attach_per_image(records, lambda run_id: download_per_image(run_id, Path(folder)))
    return build_table(records, resamples)


def render(table: pd.DataFrame, markdown: bool) -> str:
    shown = table.astype(object).where(table.notna(), "")  # a missing number is a blank cell, not "nan"
    if markdown:
        return shown.to_markdown(index=False, floatfmt=".4f")
    with pd.option_context("display.width", 250, "display.max_columns", None):
        return shown.to_string(index=False, formatters={
            column: lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)
            for column in shown if pd.api.types.is_float_dtype(table[column])})


# --------------------------------------------------------------------------- command

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for a PR)")
    parser.add_argument("--study", metavar="NAME", help=f"only runs tagged {STUDY_TAG}=NAME (a search study)")
    parser.add_argument("--resamples", type=int, default=1000, metavar="N",
                        help="bootstrap resamples for the paired differences (0: leave them out)")


def run(args: argparse.Namespace) -> int:
    from marsseg.config import load_config
    from marsseg.tracking import tracking_uri

    if args.resamples < 0:
        raise UserError(f"--resamples must be a non-negative integer, got {args.resamples}")
    mlflow_cfg = load_config().mlflow
    table = load_table(tracking_uri(mlflow_cfg), mlflow_cfg.experiment, args.study, args.resamples)
    print(render(table, args.markdown))
    if "≈ best" in table and (table["≈ best"] == "≈").any():
        print("\n≈: not distinguishable from the best at 95% (paired bootstrap over the same validation images)")
    return 0


def main(argv: list[str] | None = None) -> None:
    from marsseg.cli import run_module

    run_module("marsseg.compare", argv)


if __name__ == "__main__":
    main()
