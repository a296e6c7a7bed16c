"""The train stage: deterministic on CPU, resumable after a kill, distributable, clear on bad params."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from marsseg.errors import UserError
from marsseg.training import epoch_orders, validate_train_params

from conftest import TRAIN_SCRIPT as TRAIN, finish, finish_failing, project_env, train_stage, train_workdir


def history(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "models/history.csv")


def test_two_runs_with_the_same_seed_give_the_same_metrics(tmp_path):
    first, second = train_workdir(tmp_path / "a", epochs=2), train_workdir(tmp_path / "b", epochs=2)
    finish(train_stage(first))
    finish(train_stage(second))
    assert history(first).drop(columns="epoch").equals(history(second).drop(columns="epoch"))
    metrics = [json.loads((root / "metrics/train.json").read_text()) for root in (first, second)]
    assert metrics[0]["best_val_miou"] == metrics[1]["best_val_miou"]


def test_killed_run_resumes_after_its_last_epoch_and_matches_an_uninterrupted_run(tmp_path):
    epochs = 4
    killed = train_workdir(tmp_path / "killed", epochs=epochs, n_train=96)
    process = train_stage(killed)
    deadline = time.time() + 300
    state = None
    while time.time() < deadline and process.poll() is None:
        states = list((killed / ".cache/train").glob("*/state.json"))
        if states and json.loads(states[0].read_text())["epochs_done"] >= 1:
            state = json.loads(states[0].read_text())
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.communicate()
    assert state is not None, "the run ended before a checkpoint could be interrupted"
    assert not (killed / "models/model.keras").exists()

    output = finish(train_stage(killed))
    resumed_from = json.loads((killed / "metrics/train.json").read_text())["resumed_from_epoch"]
    assert f"resuming from checkpoint after epoch {resumed_from}" in output
    assert 1 <= resumed_from < epochs
    assert list(history(killed).epoch) == list(range(1, epochs + 1))
    assert not list((killed / ".cache/train").glob("*/state.json")), "checkpoint left behind after success"

    straight = train_workdir(tmp_path / "straight", epochs=epochs, n_train=96)
    finish(train_stage(straight))
    np.testing.assert_allclose(history(killed)["val_miou"], history(straight)["val_miou"], atol=0.02)


def test_mirrored_strategy_trains_on_two_logical_cpus(tmp_path):
    root = train_workdir(tmp_path, epochs=1, extra={"train": {"epochs": 1, "batch_size": 8, "strategy": "mirrored"}})
    script = (
        "import tensorflow as tf, runpy, sys;"
        "cpu = tf.config.list_physical_devices('CPU')[0];"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2);"
        f"sys.argv = ['{TRAIN}']; runpy.run_path('{TRAIN}', run_name='__main__')"
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=root,
                               env=project_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = finish(process)
    assert "strategy 'mirrored' over 2 replica(s)" in output
    assert json.loads((root / "metrics/train.json").read_text())["epochs_run"] == 1


def test_epoch_order_depends_only_on_seed_and_epoch():
    whole = epoch_orders(10, seed=5, first_epoch=0, epochs=4)
    tail = epoch_orders(10, seed=5, first_epoch=2, epochs=4)
    assert np.array_equal(whole[2:], tail)
    assert not np.array_equal(whole[0], whole[1])


@pytest.mark.parametrize("change, message", [
    ({"epochs": 0}, "train.epochs must be a positive int"),
    ({"batch_size": 2.5}, "train.batch_size must be a positive int"),
    ({"strategy": "tpu"}, "train.strategy 'tpu' is unknown"),
    ({"plateau_factor": 1.5}, "train.plateau_factor"),
])
def test_bad_train_params_are_named(change, message):
    base = {"epochs": 2, "batch_size": 4, "learning_rate": 1e-3, "weight_decay": 1e-4, "plateau_factor": 0.2,
            "plateau_patience": 3, "early_stopping_patience": 5, "strategy": "default"}
    with pytest.raises(UserError, match=message):
        validate_train_params({**base, **change})


def test_unknown_architecture_fails_before_training_in_one_line(tmp_path):
    root = train_workdir(tmp_path, epochs=1, extra={"model": {"arch": "segformer"}})
    output = finish_failing(train_stage(root))
    assert "Traceback" not in output
    assert output.strip().splitlines()[-1].startswith("error: ") and "model.arch" in output
    assert "Epoch 1/" not in output
