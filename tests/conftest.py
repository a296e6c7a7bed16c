"""Shared test helpers: copies of the project in temp dirs, tiny params, running DVC in them."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from marsseg.datasets import LabelledSet, save_labelled
# benchmarks/ is on pytest's path (pytest.ini): the benchmarks copy the project the same way
from scratch import commit as commit_all, environment, scratch_copy

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "stages" / "train.py"
SHARED_NPZ = REPO.parent / "shared" / "data" / "ai4mars64x128.npz"

# Small enough for a CPU test: the whole pipeline in well under a minute.
TINY_PARAMS = {
    "data": {"synthetic": {"n_train": 120, "n_test": 12}},
    "clean": {"perplexity": 10, "pca_components": 10},
    "augment": {"copies_min": 1, "copies_max": 1, "rare_copies_min": 2, "rare_copies_max": 2},
    "model": {"base_filters": 4, "depth": 3},
    "train": {"epochs": 1, "batch_size": 16},
}


def deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def set_params(root: Path, overrides: dict) -> None:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(deep_update(params, overrides), sort_keys=False))


def project_env() -> dict:
    """The environment stage commands need: this interpreter's ``python`` and ``dvc`` first on PATH."""
    return environment()


def run(root: Path, *command: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(list(command), cwd=root, capture_output=True, text=True, env=env or project_env())
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def copy_project(dest: Path, overrides: dict | None = None) -> Path:
    """A fresh git repo holding the project's files as they are now (tracked and untracked, not ignored),
    without the committed metrics and lock (they describe the default params), with ``overrides`` applied."""
    scratch_copy(dest)
    if overrides:
        set_params(dest, overrides)
        commit_all(dest, "test params")
    return dest


def stages_run(output: str) -> set[str]:
    """The stages whose command DVC actually executed, read from ``dvc repro`` / ``dvc exp run`` output."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


TRAIN_MARKER_ENV = "MARSSEG_TRAIN_MARKER"


def train_marker(root: Path) -> Path:
    """The file the train stage of the project at ``root`` appends to each time it really trains."""
    return root.parent / f"{root.name}-trained.txt"


def pipeline_env(root: Path) -> dict:
    """The stages import this copy's code (not the main checkout's) and note each training in its marker."""
    env = project_env()
    env["PYTHONPATH"] = str(root)
    env[TRAIN_MARKER_ENV] = str(train_marker(root))
    return env


@pytest.fixture(scope="session")
def pipeline_baseline(tmp_path_factory) -> Path:
    """The whole pipeline run once on tiny params and committed, for the whole session: every pytest-xdist
    worker shares it (the first to arrive builds it under a file lock). Never changed: tests copy it."""
    from filelock import FileLock

    # The folder above a worker's temp dir is common to the session's workers (and only to them).
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root, finished = shared / "tiny-baseline", shared / "tiny-baseline.finished"
    with FileLock(str(shared / "tiny-baseline.lock")):
        if not finished.is_file():
            # Built where it stays: MLflow records its artifact folder as an absolute path.
            shutil.rmtree(root, ignore_errors=True)
            train_marker(root).unlink(missing_ok=True)
            copy_project(root, TINY_PARAMS)
            run(root, "dvc", "repro", env=pipeline_env(root))
            commit_all(root, "pipeline run on tiny params")
            finished.touch()
    return root


def copy_pipeline(baseline: Path, dest: Path) -> Path:
    """A copy of a finished project with its DVC cache, outputs, MLflow store and training marker."""
    shutil.copytree(baseline, dest, symlinks=True)
    if train_marker(baseline).is_file():
        shutil.copy2(train_marker(baseline), train_marker(dest))
    return dest


@pytest.fixture(scope="session")
def tiny_project(pipeline_baseline, tmp_path_factory) -> Path:
    """This worker's copy of the tiny pipeline (shared by read-only tests)."""
    return copy_pipeline(pipeline_baseline, tmp_path_factory.mktemp("tiny") / "project")


# --- the train stage on its own, in a bare work dir ---------------------------------------------

def blocky_terrain(n: int, seed: int) -> LabelledSet:
    """Images whose class is readable from brightness bands, so a tiny net learns something."""
    rng = np.random.default_rng(seed)
    masks = np.repeat(rng.integers(0, 5, (n, 8, 16)), 8, axis=1).repeat(8, axis=2).astype(np.uint8)
    images = (masks * 50 + rng.integers(0, 20, masks.shape)).astype(np.uint8)
    return LabelledSet(images, masks, np.arange(n, dtype=np.int64))


def train_workdir(root: Path, epochs: int, n_train: int = 48, extra: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    set_params(root, {**TINY_PARAMS, "train": {"epochs": epochs, "batch_size": 8}, **(extra or {})})
    save_labelled(root / "data/augment/train.npz", blocky_terrain(n_train, seed=1))
    save_labelled(root / "data/split/val.npz", blocky_terrain(16, seed=2))
    return root


def train_stage(root: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TRAIN_SCRIPT)], cwd=root, env=project_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return output


def finish_failing(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 2, output
    return output
