"""Caching, experiments and the CI metrics check, on copies of the tiny pipeline (DVC for real)."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from marsseg.reproduce import moved_metrics

from conftest import commit_all, copy_pipeline, run, stages_run

pytestmark = pytest.mark.slow

def locked_md5(root: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return next(out["md5"] for out in lock["stages"][stage]["outs"] if out["path"] == path)


def mlflow_run_names(root: Path) -> list[str]:
    with sqlite3.connect(root / "mlflow.db") as db:
        return [name for (name,) in db.execute("select name from runs where status = 'FINISHED'")]


def test_run_cache_pushed_from_one_clone_spares_training_in_another(pipeline_baseline, tmp_path):
    clone_a = copy_pipeline(pipeline_baseline, tmp_path / "a")
    remote = tmp_path / "remote"
    run(clone_a, "dvc", "remote", "add", "-d", "shared", str(remote))
    commit_all(clone_a, "remote")
    run(clone_a, "dvc", "push", "--run-cache")

    clone_b = tmp_path / "b"
    run(tmp_path, "git", "clone", "-q", str(clone_a), str(clone_b))
    # Without its lock file, B knows nothing of A's outputs except through the run-cache.
    # (`dvc pull --run-cache` alone fetches the run entries but not the objects they name; --pull does both.)
    (clone_b / "dvc.lock").unlink()
    result = run(clone_b, "dvc", "repro", "--pull")
    assert "train" not in stages_run(result.stdout)
    assert "Stage 'train' is cached - skipping run" in result.stdout
    assert (clone_b / "models/model.keras").is_file()
    assert locked_md5(clone_b, "train", "models/model.keras") == locked_md5(clone_a, "train", "models/model.keras")


def test_queued_grid_runs_every_combination_into_one_mlflow_store(pipeline_baseline, tmp_path):
    root = copy_pipeline(pipeline_baseline, tmp_path / "repo")
    before = len(mlflow_run_names(root))
    run(root, "dvc", "exp", "run", "--queue", "-S", "model.arch=unet,unet3p", "-S", "loss.name=weighted_ce,focal+dice")
    run(root, "dvc", "queue", "start", "-j", "2")
    deadline = time.time() + 900
    while time.time() < deadline:
        status = run(root, "dvc", "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    assert status.count("Success") == 4, status

    shown = json.loads(run(root, "dvc", "exp", "show", "--json").stdout)
    experiments = [e for rev in shown for e in (rev.get("experiments") or [])]
    assert len(experiments) == 4

    # unet + weighted_ce are the committed params: DVC restores that train stage from its run-cache, so
    # the grid adds three MLflow runs and the baseline's run stays the only one of its kind.
    names = mlflow_run_names(root)
    combos = [tuple(name.split("-d")[0].split("-", 1)) for name in names]
    assert len(names) == before + 3
    assert sorted(combos) == sorted([("unet", "weighted_ce"), ("unet", "focal+dice"),
                                     ("unet3p", "weighted_ce"), ("unet3p", "focal+dice")])


def test_preset_reruns_only_downstream_tags_its_mlflow_run_and_going_back_restores_from_run_cache(
        pipeline_baseline, tmp_path):
    root = copy_pipeline(pipeline_baseline, tmp_path / "repo")
    model_md5 = locked_md5(root, "train", "models/model.keras")
    (root / "presets/tiny-test.yaml").write_text("model:\n  depth: 4\n")
    commit_all(root, "tiny preset")

    deeper = run(root, "marsseg", "exp", "tiny-test")
    assert stages_run(deeper.stdout) == {"train", "evaluate", "submit"}
    assert yaml.safe_load((root / "params.yaml").read_text())["model"]["depth"] == 4
    with sqlite3.connect(root / "mlflow.db") as db:
        tags = db.execute("select value from tags where key = 'preset'").fetchall()
    assert ("tiny-test",) in tags

    back = run(root, "dvc", "exp", "run", "-S", "model.depth=3")
    assert "train" not in stages_run(back.stdout)
    assert "Stage 'train' is cached - skipping run" in back.stdout
    assert locked_md5(root, "train", "models/model.keras") == model_md5


def test_ci_check_fails_with_a_table_when_a_committed_metric_was_altered(pipeline_baseline, tmp_path):
    root = copy_pipeline(pipeline_baseline, tmp_path / "repo")
    assert run(root, sys.executable, "-m", "marsseg.reproduce", "--compare-only").returncode == 0

    metrics_file = root / "metrics/evaluate.json"
    reproduced = metrics_file.read_text()
    altered = json.loads(reproduced)
    altered["val_miou"] = altered["val_miou_ci_high"] + 0.1  # beyond the tolerance and the interval
    metrics_file.write_text(json.dumps(altered))
    commit_all(root, "claim a better score than the pipeline gives")
    metrics_file.write_text(reproduced)

    result = run(root, sys.executable, "-m", "marsseg.reproduce", "--compare-only", check=False)
    assert result.returncode == 2
    assert "val_miou" in result.stdout and "moved beyond ci.tolerance" in result.stderr


def test_moved_metrics_respects_tolerance_and_ignore_patterns():
    diff = {"metrics/evaluate.json": {"val_miou": {"old": 0.50, "new": 0.515},
                                      "val_iou_sand": {"old": 0.40, "new": 0.45}},
            "metrics/train.json": {"training_seconds": {"old": 10, "new": 99}},
            "metrics/submit.json": {"rows": {"old": 12, "new": None}}}
    moved = moved_metrics(diff, tolerance=0.02, ignore=["*seconds*"])
    assert [(path, name) for path, name, *_ in moved] == [
        ("metrics/evaluate.json", "val_iou_sand"), ("metrics/submit.json", "rows")]


def interval_diff(old: tuple[float, float, float], new: tuple[float, float, float]) -> dict:
    """A dvc metrics diff of val_miou and its interval: (value, low, high) committed and reproduced."""
    names = ("val_miou", "val_miou_ci_low", "val_miou_ci_high")
    return {"metrics/evaluate.json": {name: {"old": o, "new": n} for name, o, n in zip(names, old, new)}}


def test_a_metric_beyond_the_tolerance_passes_only_when_the_runs_agree_within_their_intervals():
    # Another instruction set's model: 0.03 apart, each value inside the other's interval.
    other_machine = interval_diff((0.343, 0.296, 0.388), (0.371, 0.329, 0.409))
    assert moved_metrics(other_machine, tolerance=0.02, ignore=[]) == []
    # TTA soil IoU on the AVX2 and the AVX-512 machine: the committed value 0.004 outside the reproduced
    # interval, the gap (0.094) within the interval of the difference (hypot of the half-widths, 0.128).
    avx512 = interval_diff((0.602589, 0.503429, 0.682671), (0.508295, 0.416771, 0.598932))
    assert moved_metrics(avx512, tolerance=0.05, ignore=[]) == []
    # Half-widths 0.04 and 0.04: the difference may reach 0.0566, and no further.
    assert moved_metrics(interval_diff((0.50, 0.46, 0.54), (0.445, 0.405, 0.485)), tolerance=0.02, ignore=[]) == []
    assert [name for _, name, *_ in moved_metrics(interval_diff((0.50, 0.46, 0.54), (0.44, 0.40, 0.48)),
                                                  tolerance=0.02, ignore=[])] == [
        "val_miou", "val_miou_ci_high", "val_miou_ci_low"]
    # A committed claim far above what the pipeline gives fails with its bounds.
    overclaimed = interval_diff((0.45, 0.41, 0.49), (0.343, 0.296, 0.388))
    assert [name for _, name, *_ in moved_metrics(overclaimed, tolerance=0.02, ignore=[])] == [
        "val_miou", "val_miou_ci_high", "val_miou_ci_low"]
    # A bound without its metric is compared by the tolerance alone.
    bounds_only = {"metrics/evaluate.json": {"val_miou_ci_low": {"old": 0.30, "new": 0.33},
                                             "val_miou_ci_high": {"old": 0.39, "new": 0.41}}}
    assert len(moved_metrics(bounds_only, tolerance=0.02, ignore=[])) == 1


def test_a_grouped_metric_finds_its_interval_in_the_sibling_groups():
    """submit.json's ``class_fraction`` shares, flattened by DVC to ``class_fraction.soil``, have their bounds
    in ``class_fraction_ci_low`` / ``_ci_high``; a share without them is judged on the tolerance alone."""
    def fraction_diff(old, new, with_intervals=True):
        names = ("class_fraction.soil", "class_fraction_ci_low.soil", "class_fraction_ci_high.soil")
        pairs = zip(names if with_intervals else names[:1], old, new)
        return {"metrics/submit.json": {name: {"old": o, "new": n} for name, o, n in pairs}}

    # A predicted soil share 0.06 apart, each inside the other run's interval (100 test images).
    apart = ((0.302, 0.24, 0.37), (0.242, 0.18, 0.31))
    assert moved_metrics(fraction_diff(*apart), tolerance=0.05, ignore=[]) == []
    assert [name for _, name, *_ in moved_metrics(fraction_diff(*apart, with_intervals=False), tolerance=0.05,
                                                  ignore=[])] == ["class_fraction.soil"]
    # Twice as far apart: outside both intervals and the interval of the difference.
    far = ((0.302, 0.24, 0.37), (0.182, 0.12, 0.25))
    assert sorted(name for _, name, *_ in moved_metrics(fraction_diff(*far), tolerance=0.05, ignore=[])) == [
        "class_fraction.soil", "class_fraction_ci_high.soil", "class_fraction_ci_low.soil"]
