"""k-fold cross-validation: the cv_* stage chains of dvc.yaml on a tiny project (DVC for real)."""
from __future__ import annotations

import json
import sys

import pytest

from marsseg.submission import check_submission

from conftest import REPO, TINY_PARAMS, copy_pipeline, run, set_params, stages_run

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif("cv_train:" not in (REPO / "dvc.yaml").read_text(),
                                 reason="dvc.yaml has no cv_* fold stages yet (eval helper's patch)")]

FOLD_STAGES = ("cv_split", "cv_augment", "cv_train", "cv_evaluate")


def test_two_folds_run_end_to_end_and_adding_a_fold_runs_only_that_fold(pipeline_baseline, tmp_path):
    root = copy_pipeline(pipeline_baseline, tmp_path / "repo")
    set_params(root, {"split": {"folds": 2, "cv_folds": [0]}})
    # Only the fold chains: ingest and clean are the baseline's, the single split's stages are not under test.
    first = run(root, "dvc", "repro", "cv_evaluate")
    assert {f"{stage}@0" for stage in FOLD_STAGES} <= stages_run(first.stdout)
    assert "train" not in stages_run(first.stdout)
    assert not [name for name in stages_run(first.stdout) if name.endswith("@1")]

    set_params(root, {"split": {"cv_folds": [0, 1]}})
    second = run(root, "dvc", "repro", "cv_evaluate")
    # Fold 0 and the single split are cached: only fold 1's chain runs.
    assert stages_run(second.stdout) == {f"{stage}@1" for stage in FOLD_STAGES}

    folds = [json.loads((root / f"metrics/cv/fold{fold}/evaluate.json").read_text()) for fold in (0, 1)]
    for metrics in folds:
        assert metrics["val_miou_ci_low"] <= metrics["val_miou"] <= metrics["val_miou_ci_high"]
    split = [json.loads((root / f"metrics/cv/fold{fold}/split.json").read_text()) for fold in (0, 1)]
    assert split[0]["val_rows"] + split[1]["val_rows"] == split[0]["input_rows"]  # the folds partition the rows

    summary = run(root, sys.executable, "-m", "marsseg.cli", "cv", "--submit")
    assert "(sd over 2 folds)" in summary.stdout and "2 fold models averaged, checked" in summary.stdout
    written = json.loads((root / "reports/cv.json").read_text())
    assert written["val_miou_mean"] == pytest.approx((folds[0]["val_miou"] + folds[1]["val_miou"]) / 2, abs=1e-6)
    assert check_submission(root / "submission/cv.csv", expected_rows=TINY_PARAMS["data"]["synthetic"]["n_test"]).rows
