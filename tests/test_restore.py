"""Issue 17: train once on one machine, restore anywhere, with two clones and a local directory remote.

Clone A (the GPU box) runs the pipeline, commits dvc.lock and pushes outputs and run-cache. Other clones
of A's commit restore without training, proven by the marker the train stage appends to when it trains.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import commit_all, copy_pipeline, pipeline_env, run, stages_run, train_marker

pytestmark = pytest.mark.slow

MODEL = Path("models/model.keras")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def clone(origin: Path, dest: Path) -> Path:
    run(dest.parent, "git", "clone", "-q", str(origin), str(dest))
    return dest


def restore(root: Path, check: bool = True):
    return run(root, sys.executable, "-m", "marsseg.restore", check=check, env=pipeline_env(root))


@pytest.fixture(scope="module")
def gpu_box(pipeline_baseline, tmp_path_factory) -> Path:
    """Clone A: the pipeline run once, dvc.lock committed, outputs and run-cache pushed to a local remote."""
    base = tmp_path_factory.mktemp("restore")
    root = copy_pipeline(pipeline_baseline, base / "a")
    run(root, "dvc", "remote", "add", "-d", "shared", str(base / "remote"))
    commit_all(root, "trained on the GPU box")
    run(root, "dvc", "push", "--run-cache")
    assert train_marker(root).read_text() == "train\n"
    return root


def predictions(model_path: Path, images: np.ndarray) -> np.ndarray:
    import keras

    model = keras.models.load_model(model_path, compile=False)
    return model.predict(images[..., None].astype("float32"), verbose=0)  # the same input to both models


def assert_same_model(restored: Path, original: Path) -> None:
    assert md5(restored / MODEL) == md5(original / MODEL)
    with np.load(original / "data/split/val.npz") as val:
        images = val["images"][:4]
    np.testing.assert_array_equal(predictions(restored / MODEL, images), predictions(original / MODEL, images))


@pytest.mark.parametrize("command", [("dvc", "pull"), ("dvc", "repro", "--pull"), (sys.executable, "-m", "marsseg.restore")],
                         ids=["dvc-pull", "dvc-repro-pull", "marsseg-restore"])
def test_a_laptop_at_the_committed_lock_restores_without_training(gpu_box, command):
    laptop = clone(gpu_box, gpu_box.parent / f"b-{command[-1].replace('.', '-')}")
    run(laptop, *command, env=pipeline_env(laptop))
    assert not train_marker(laptop).exists()
    assert_same_model(laptop, gpu_box)
    assert stages_run(run(laptop, "dvc", "repro", env=pipeline_env(laptop)).stdout) == set()
    assert not train_marker(laptop).exists()


def lock_with_other_model(root: Path) -> None:
    """The laptop's commit locks another model than the GPU box pushed (as a CPU run of the same commit would)."""
    path = root / "dvc.lock"
    lock = yaml.safe_load(path.read_text())
    for out in lock["stages"]["train"]["outs"]:
        if out["path"] == str(MODEL):
            out["md5"] = hashlib.md5(b"a model only the laptop ever had").hexdigest()
    path.write_text(yaml.safe_dump(lock, sort_keys=False))
    commit_all(root, "lock from another run")


def test_a_laptop_whose_lock_names_another_model_restores_from_the_run_cache(gpu_box):
    laptop = clone(gpu_box, gpu_box.parent / "c")
    lock_with_other_model(laptop)
    result = restore(laptop)
    assert not train_marker(laptop).exists(), result.stdout + result.stderr
    assert "train restored from the run-cache" in result.stdout
    assert_same_model(laptop, gpu_box)
    # The restored lock is the GPU box's again, byte for byte, and nothing is left to run.
    assert (laptop / "dvc.lock").read_text() == (gpu_box / "dvc.lock").read_text()
    assert stages_run(run(laptop, "dvc", "repro", env=pipeline_env(laptop)).stdout) == set()
    assert not train_marker(laptop).exists()


def test_restore_says_in_one_line_when_dvc_cannot_restore(gpu_box):
    laptop = clone(gpu_box, gpu_box.parent / "d")
    lock_with_other_model(laptop)
    params = yaml.safe_load((laptop / "params.yaml").read_text())
    params["train"]["learning_rate"] = params["train"]["learning_rate"] / 2  # inputs the GPU box never ran
    (laptop / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit_all(laptop, "other params")
    lock_before = (laptop / "dvc.lock").read_text()
    result = restore(laptop, check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == result.stderr.strip().splitlines()[-1]
    assert errors[0].startswith("error: train: ") and "DVC cannot restore it" in errors[0]
    assert not train_marker(laptop).exists()
    assert (laptop / "dvc.lock").read_text() == lock_before
