"""The train stage: deterministic on CPU, resumable after a kill, distributable, clear on bad params;
its levers: precision, learning-rate schedules, weight averaging."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from marsseg.config import validate_group
from marsseg.errors import UserError
from marsseg.train import precision
from marsseg.train.data import epoch_orders
from marsseg.train.resume import stopped_early
from marsseg.train.schedule import ONECYCLE_END_DIVISOR, ONECYCLE_START_DIVISOR, WarmupCosine, learning_rate

from conftest import REPO, TINY_PARAMS, TRAIN_SCRIPT as TRAIN, blocky_terrain, finish, finish_failing, project_env, \
    train_stage, train_workdir

TRAIN_DEFAULTS = yaml.safe_load((REPO / "params.yaml").read_text())["train"]


def train_config(**overrides):
    return validate_group("train", {**TRAIN_DEFAULTS, **overrides})


def run_log(root: Path) -> dict:
    """How the run went (resume point, seconds): logs/train.json where the stage splits it off."""
    path = root / "logs/train.json"
    return json.loads(path.read_text()) if path.is_file() else json.loads((root / "metrics/train.json").read_text())


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
    resumed_from = run_log(killed)["resumed_from_epoch"]
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
        # As `python stages/train.py` does: the script's folder first on the path.
        f"sys.argv = ['{TRAIN}']; sys.path.insert(0, '{TRAIN.parent}'); runpy.run_path('{TRAIN}', run_name='__main__')"
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
    ({"epochs": 0}, "train.epochs"),
    ({"batch_size": 2.5}, "train.batch_size"),
    ({"strategy": "tpu"}, "train.strategy"),
    ({"plateau_factor": 1.5}, "train.plateau_factor"),
    ({"precision": "half"}, "train.precision"),
    ({"schedule": "step"}, "train.schedule"),
    ({"ema": "yes"}, "train.ema"),
    ({"warmup_epochs": 12, "epochs": 12}, "train.warmup_epochs"),
    ({"schedule": "onecycle", "warmup_epochs": 0}, "train.warmup_epochs"),
])
def test_bad_train_params_are_named(change, message):
    with pytest.raises(UserError, match=message) as caught:
        train_config(**change)
    assert "\n" not in str(caught.value)


def test_defaults_are_todays_behaviour():
    cfg = train_config()
    assert (cfg.precision, cfg.schedule, cfg.warmup_epochs, cfg.ema) == ("float32", "plateau", 0, False)
    assert learning_rate(cfg, steps_per_epoch=10) == cfg.learning_rate  # a plain rate: ReduceLROnPlateau drives it


# --- precision -----------------------------------------------------------------------------------

def test_bfloat16_detected_from_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n\n"
                       "processor\t: 1\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n")
    assert precision.cpu_has_bfloat16(precision.cpu_flags(cpuinfo))
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert not precision.cpu_has_bfloat16(precision.cpu_flags(cpuinfo))
    assert precision.cpu_has_bfloat16({"amx_bf16", "amx_tile"})
    assert precision.cpu_flags(tmp_path / "absent") == set()


@pytest.mark.parametrize("requested, gpu, cpu_bf16, policy", [
    ("auto", True, False, "mixed_float16"),
    ("auto", True, True, "mixed_float16"),
    ("auto", False, True, "mixed_bfloat16"),
    ("auto", False, False, "float32"),
    ("float32", True, True, "float32"),
    ("bfloat16", False, False, "mixed_bfloat16"),
    ("float16", False, True, "mixed_float16"),
])
def test_precision_resolution(requested, gpu, cpu_bf16, policy):
    assert precision.resolve(requested, gpu, cpu_bf16) == policy


# --- learning-rate schedules ---------------------------------------------------------------------

def rates(schedule, steps):
    return [float(schedule(step)) for step in steps]


def test_cosine_warms_up_linearly_then_decays_to_zero():
    schedule = learning_rate(train_config(schedule="cosine", warmup_epochs=2, epochs=10), steps_per_epoch=5)
    assert isinstance(schedule, WarmupCosine)
    # Warm-up: steps 0..9 reach 1/10 .. 10/10 of the peak; then half a cosine over the other 40 steps.
    np.testing.assert_allclose(rates(schedule, [0, 4, 9]), [1e-4, 5e-4, 1e-3], rtol=1e-5)
    np.testing.assert_allclose(rates(schedule, [10, 30, 50]), [1e-3, 5e-4, 0.0], rtol=1e-5, atol=1e-9)
    later = rates(schedule, range(10, 51))
    assert all(a >= b for a, b in zip(later, later[1:]))


def test_onecycle_rises_from_a_25th_and_ends_far_below():
    peak = 1e-3
    schedule = learning_rate(train_config(schedule="onecycle", warmup_epochs=1, epochs=4), steps_per_epoch=10)
    first, top, last = rates(schedule, [0, 10, 40])
    start = peak / ONECYCLE_START_DIVISOR
    assert first == pytest.approx(start + (peak - start) / 10, rel=1e-5)
    assert top == pytest.approx(peak, rel=1e-6)
    assert last == pytest.approx(peak / ONECYCLE_END_DIVISOR, rel=1e-4)


# --- resume ---------------------------------------------------------------------------------------

def test_a_run_that_stopped_early_is_not_fitted_again():
    assert stopped_early({"callbacks": {"stopping": {"wait": 5.0, "best": 0.4}}}, patience=5)
    assert not stopped_early({"callbacks": {"stopping": {"wait": 4.0, "best": 0.4}}}, patience=5)
    assert not stopped_early(None, patience=5)


# --- the fit in-process: what is picked is what was validated -------------------------------------

def fitted(tmp_path, **train_overrides):
    import keras

    from marsseg.losses import build_loss
    from marsseg.models import build_model
    from marsseg.train.loop import train
    from marsseg.train.resume import ResumableState

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    keras.utils.set_random_seed(0)
    cfg = train_config(**{"epochs": 3, "batch_size": 8, **train_overrides})
    model_params = {**params["model"], **TINY_PARAMS["model"]}
    val = blocky_terrain(16, seed=2)
    result = train(lambda: build_model(model_params, seed=0), build_loss(params["loss"]), blocky_terrain(48, seed=1),
                   val, cfg, seed=0, checkpoint=ResumableState(tmp_path / "checkpoint"))
    return result, val


def test_fit_traces_the_train_step_once():
    # Tracing, not computing, is most of a tiny training: optimizer variables first made inside the traced
    # step would make TensorFlow trace it a second time (the last, partial batch must not either).
    from marsseg.losses import build_loss
    from marsseg.models import build_model
    from marsseg.train.data import eval_dataset, train_dataset
    from marsseg.train.loop import compiled_model, iou_metrics

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    rows, val = blocky_terrain(20, seed=1), blocky_terrain(12, seed=2)
    model = compiled_model(lambda: build_model({**params["model"], **TINY_PARAMS["model"]}, seed=0),
                           build_loss(params["loss"]), train_config(batch_size=8), 3, metrics=iou_metrics())
    traced, step = [], model.train_step
    model.train_step = lambda batch: traced.append(batch) or step(batch)
    model.fit(train_dataset(rows.images, rows.masks, 8, 0, 0, 2), steps_per_epoch=3, epochs=2, shuffle=False,
              validation_data=eval_dataset(val.images, val.masks, 8), verbose=0)
    assert len(traced) == 1


@pytest.mark.parametrize("user_setting, enabled", [(None, True), ("0", False)])
def test_importing_marsseg_turns_tensorflows_onednn_kernels_on_unless_the_user_chose(user_setting, enabled):
    # TensorFlow enables oneDNN by itself only on CPUs with AVX-512 VNNI / BF16 / AMX: on AVX2-only ones
    # every training ran on Eigen's kernels, about 1.8x slower (benchmarks/train.py --onednn-ratio).
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if user_setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = user_setting
    probe = ("import os, marsseg, tensorflow; from tensorflow.python.util import _pywrap_util_port as port; "
             "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], port.IsMklEnabled())")
    shown = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.split() == [user_setting or "1", str(enabled)]


def validated_miou(model, val) -> float:
    from marsseg.train.data import eval_dataset
    from marsseg.train.loop import iou_metrics

    model.compile(loss=None, metrics=iou_metrics()[:1])
    return model.evaluate(eval_dataset(val.images, val.masks, 8), return_dict=True, verbose=0)["miou"]


@pytest.mark.parametrize("ema, schedule", [(False, "plateau"), (True, "cosine")])
def test_the_saved_model_scores_the_best_epochs_val_miou(tmp_path, ema, schedule):
    # With train.ema the averaged weights are validated, picked and saved; without, the raw ones.
    result, val = fitted(tmp_path, ema=ema, schedule=schedule, warmup_epochs=1)
    assert result.best_val_miou == max(row["val_miou"] for row in result.history)
    assert (result.kept_epoch, result.kept_val_miou) == (result.best_epoch, result.best_val_miou)
    assert validated_miou(result.model, val) == pytest.approx(result.best_val_miou, abs=1e-6)
    final_rate = [row["learning_rate"] for row in result.history][-1]
    assert final_rate == pytest.approx(0.0 if schedule == "cosine" else 1e-3, abs=1e-9)


def test_keep_last_saves_the_final_epoch_not_the_best(tmp_path):
    # No pick on the validation fold: the saved model is the last epoch's, whatever its score.
    result, val = fitted(tmp_path, keep="last", schedule="plateau", learning_rate=0.05)
    assert result.kept_epoch == result.epochs_run == 3
    assert result.kept_val_miou == result.history[-1]["val_miou"]
    assert validated_miou(result.model, val) == pytest.approx(result.kept_val_miou, abs=1e-6)
    assert result.best_val_miou == max(row["val_miou"] for row in result.history)


def test_plateau_warmup_raises_the_rate_batch_by_batch():
    import keras

    from marsseg.train.schedule import callbacks

    found = callbacks(train_config(warmup_epochs=1, epochs=3), steps_per_epoch=4)
    assert set(found) == {"plateau", "warmup"}
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    model.fit(np.ones((12, 2)), np.zeros((12, 1)), batch_size=2, epochs=1, shuffle=False, verbose=0,
              callbacks=[found["warmup"], Record()])
    np.testing.assert_allclose(seen, [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3], rtol=1e-6)


def test_averaged_weights_swap_in_and_back_exactly():
    import keras

    from marsseg.train.ema import averaged_weights

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5), loss="mse")
    x, y = np.ones((8, 4), np.float32), np.zeros((8, 2), np.float32)
    for _ in range(3):
        model.train_on_batch(x, y)
    raw = [w.copy() for w in model.get_weights()]
    averages = [keras.ops.convert_to_numpy(v) for v in model.optimizer._model_variables_moving_average]
    with averaged_weights(model):
        inside = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(inside, averages))
    assert not all(np.array_equal(a, b) for a, b in zip(inside, raw))
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), raw))


def test_unknown_architecture_fails_before_training_in_one_line(tmp_path):
    root = train_workdir(tmp_path, epochs=1, extra={"model": {"arch": "segformer"}})
    output = finish_failing(train_stage(root))
    assert "Traceback" not in output
    assert output.strip().splitlines()[-1].startswith("error: ") and "model.arch" in output
    assert "Epoch 1/" not in output
