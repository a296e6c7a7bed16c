"""Cross-validation summary: val mIoU per fold, mean and spread, and a submission averaging the fold models.

    marsseg cv                        # after `dvc repro` with split.folds: k and split.cv_folds: [0, ..., k-1]
    marsseg cv --submit [--tta]       # also submission/cv.csv: the fold models' probabilities averaged

Each fold is its own DVC stage chain (cv_split@i -> cv_augment@i -> cv_train@i -> cv_evaluate@i), cached
on its own; this command only reads their metrics and models, so it is cheap to rerun.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from marsseg import CLASS_NAMES, SCORED_CLASSES
from marsseg.config import load_config
from marsseg.errors import UserError
from marsseg.io import write_json
from marsseg.layout import CLEANED, Layout

SUMMARY = Path("reports/cv.json")
SUBMISSION = Path("submission/cv.csv")
SCORES = ["val_miou"] + [f"val_iou_{CLASS_NAMES[c]}" for c in SCORED_CLASSES]


def fold_metrics(folds: list[int]) -> list[dict]:
    rows = []
    for fold in folds:
        path = Path("metrics") / f"{Layout(fold).metrics_name('evaluate')}.json"
        if not path.is_file():
            raise UserError(f"{path}: not found; run `dvc repro` to train and evaluate fold {fold} first")
        rows.append({"fold": fold, **json.loads(path.read_text())})
    return rows


def summarise(rows: list[dict], folds: int) -> dict:
    """Mean and sample standard deviation over folds of each score, beside the folds' own interval widths."""
    summary: dict = {"folds": folds, "folds_evaluated": len(rows)}
    for name in SCORES:
        values = np.array([np.nan if row.get(name) is None else row[name] for row in rows], dtype=float)
        summary[f"{name}_mean"] = float(np.nanmean(values))
        summary[f"{name}_std"] = float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else None
    widths = [row["val_miou_ci_high"] - row["val_miou_ci_low"] for row in rows
              if row.get("val_miou_ci_high") is not None and row.get("val_miou_ci_low") is not None]
    summary["val_miou_bootstrap_width_mean"] = float(np.mean(widths)) if widths else None
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--submit", action="store_true", help=f"also write {SUBMISSION} from the averaged fold models")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation on the averaged prediction")
    parser.add_argument("--output", type=Path, default=SUBMISSION)


def run(args) -> None:
    cfg = load_config()
    if cfg.split.folds < 2:
        raise UserError("params.yaml: split.folds is 0, so there are no cross-validation folds; e.g. "
                        "`dvc exp run -S split.folds=5 -S 'split.cv_folds=[0,1,2,3,4]'`")
    rows = fold_metrics(cfg.split.cv_folds)
    summary = summarise(rows, cfg.split.folds)
    print(f"{'fold':>4}  {'val mIoU':>8}  {'95% interval':>17}  " + "  ".join(f"{CLASS_NAMES[c]:>9}" for c in SCORED_CLASSES))
    for row in rows:
        interval = (f"[{row['val_miou_ci_low']:.4f}, {row['val_miou_ci_high']:.4f}]"
                    if row.get("val_miou_ci_low") is not None else "")
        classes = "  ".join(f"{row.get(name) or float('nan'):>9.4f}" for name in SCORES[1:])
        print(f"{row['fold']:>4}  {row['val_miou']:>8.4f}  {interval:>17}  {classes}")
    std = summary["val_miou_std"]
    print(f"cv: val mIoU {summary['val_miou_mean']:.4f}" + (f" ± {std:.4f} (sd over {len(rows)} folds)" if std else "")
          + (f"; a fold's own bootstrap interval is {summary['val_miou_bootstrap_width_mean']:.4f} wide on average"
             if summary["val_miou_bootstrap_width_mean"] is not None else ""))
    write_json(SUMMARY, summary)
    if args.submit:
        from marsseg.ensemble import predict_ensemble
        from marsseg.predict import load_model
        from marsseg.submission import check_submission, load_test_images, write_submission

        models = [load_model(Layout(fold).model) for fold in cfg.split.cv_folds]
        images = load_test_images(CLEANED)
        write_submission(args.output, predict_ensemble(models, images, cfg.submit.batch_size, args.tta))
        checked = check_submission(args.output, expected_rows=len(images))
        print(f"cv: {checked.rows} rows -> {args.output} (md5 {checked.md5}, {len(models)} fold models averaged, checked)")


if __name__ == "__main__":
    from marsseg.cli import run_module

    run_module(__name__)
