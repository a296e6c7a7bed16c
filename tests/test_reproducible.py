"""Issue 17: every DVC output of a deterministic stage has the same bytes when the stage reruns, so a
rerun (or a run on another machine of the same kind) leaves dvc.lock unchanged and the run-cache valid."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import copy_pipeline, pipeline_env, run, stages_run, train_marker
from marsseg.reporting import split_run_log


def trainings(root: Path) -> int:
    marker = train_marker(root)
    return len(marker.read_text().splitlines()) if marker.is_file() else 0


def test_run_log_keys_are_split_off_the_metrics_at_any_depth():
    metrics = {"rows": 3, "seconds_total": 1.5, "steps": {"fit_seconds": 1.0, "epochs": 2}, "resumed_from_epoch": 1}
    assert split_run_log(metrics) == ({"rows": 3, "steps": {"epochs": 2}},
                                      {"seconds_total": 1.5, "steps": {"fit_seconds": 1.0}, "resumed_from_epoch": 1})


@pytest.fixture(scope="module")
def project(pipeline_baseline, tmp_path_factory) -> Path:
    root = copy_pipeline(pipeline_baseline, tmp_path_factory.mktemp("reproducible") / "project")
    assert trainings(root) == 1
    return root


def lock_entries(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text())["stages"]


@pytest.mark.slow
def test_no_metrics_file_holds_a_wall_clock_time(project):
    for path in sorted((project / "metrics").glob("*.json")):
        assert "seconds" not in path.read_text(), path.name
    logged = json.loads((project / "logs" / "train.json").read_text())
    assert logged["training_seconds"] >= 0 and "resumed_from_epoch" in logged


@pytest.mark.slow
def test_no_dvc_output_names_an_mlflow_run(project):
    outs = [next(iter(out)) if isinstance(out, dict) else out
            for stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"].values()
            for kind in ("outs", "metrics", "plots") for out in stage.get(kind, [])]
    assert "models/mlflow_run.json" not in outs
    assert not (project / "models" / "mlflow_run.json").exists()


@pytest.mark.slow
def test_rerunning_every_stage_leaves_dvc_lock_unchanged(project):
    before = lock_entries(project)
    trained = trainings(project)
    result = run(project, "dvc", "repro", "--force", env=pipeline_env(project))
    assert stages_run(result.stdout) == set(before)
    assert trainings(project) == trained + 1  # train really trained again, not restored
    after = lock_entries(project)
    changed = {name: [out["path"] for out, old in zip(after[name].get("outs", []), before[name].get("outs", []))
                      if out != old] for name in before if after[name] != before[name]}
    assert not changed, f"outputs with other bytes after a rerun: {changed}"
