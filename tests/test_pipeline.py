"""End to end: the whole DVC pipeline on tiny params, and what DVC reruns after a change."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import run, stages_run

pytestmark = pytest.mark.slow

STAGE_ORDER = ["ingest", "clean", "split", "augment", "train", "evaluate", "submit",
               "cv_split", "cv_augment", "cv_train", "cv_evaluate"]  # the cv_* stages: one per split.cv_folds id


def declared_outputs(root: Path) -> list[Path]:
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    paths = []
    for stage in pipeline.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                paths.append(root / (entry if isinstance(entry, str) else next(iter(entry))))
    return paths


def numbers(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def test_stages_are_declared_in_pipeline_order(tiny_project):
    pipeline = yaml.safe_load((tiny_project / "dvc.yaml").read_text())["stages"]
    assert list(pipeline) == STAGE_ORDER


def test_every_declared_output_exists(tiny_project):
    missing = [str(p.relative_to(tiny_project)) for p in declared_outputs(tiny_project) if not p.exists()]
    assert not missing


def test_quality_metrics_lie_in_unit_interval(tiny_project):
    evaluate = json.loads((tiny_project / "metrics/evaluate.json").read_text())
    scores = {k: v for k, v in evaluate.items() if ("iou" in k or "accuracy" in k) and "gain" not in k}
    assert scores and all(v is None or 0.0 <= v <= 1.0 for v in scores.values())
    train = json.loads((tiny_project / "metrics/train.json").read_text())
    assert 0.0 <= train["best_val_miou"] <= 1.0


def test_submission_has_a_row_per_test_image(tiny_project):
    lines = (tiny_project / "submission/submission.csv").read_text().splitlines()
    assert lines[0] == "id," + ",".join(str(i) for i in range(64 * 128))
    assert len(lines) - 1 == 12  # TINY_PARAMS n_test
    values = np.array([line.split(",")[1:] for line in lines[1:]], dtype=int)
    assert values.min() >= 0 and values.max() <= 4


def test_repro_right_after_repro_runs_nothing(tiny_project):
    result = run(tiny_project, "dvc", "repro")
    assert stages_run(result.stdout) == set()


def test_trained_model_loads_without_the_project(tiny_project):
    script = ("import keras, numpy as np; m = keras.models.load_model('models/model.keras'); "
              "print(m.predict(np.zeros((1, 64, 128, 1), 'float32'), verbose=0).shape)")
    result = run(tiny_project, "python", "-c", script)
    assert "(1, 64, 128, 5)" in result.stdout
