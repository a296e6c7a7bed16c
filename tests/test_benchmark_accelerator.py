"""benchmarks/accelerator.py: a preset trained by Keras's own fit, scored as the evaluate stage scores it
(run here on the TensorFlow backend, with a tiny model; on a GPU box it runs on JAX or PyTorch)."""
from __future__ import annotations

import argparse
import time

import numpy as np
import pytest

from accelerator import load_settings, positive_minutes, precision_list, throughput, train_and_score
from marsseg.datasets import LabelledSet
from marsseg.errors import UserError
from marsseg.synthetic import generate


def test_settings_lay_the_preset_over_params_yaml_and_read_only_the_groups_a_training_run_needs():
    settings = load_settings("seed-best")
    assert (settings.model.arch, settings.model.base_filters, settings.train.epochs) == ("unet3p", 32, 100)
    assert not hasattr(settings, "augment")  # albumentations need not be installed on the GPU box
    with pytest.raises(UserError, match=r"presets/no-such\.yaml: no such preset \(known: .*seed-best"):
        load_settings("no-such")


def test_precision_arguments_name_what_is_wrong():
    assert precision_list("float32,bfloat16") == ["float32", "bfloat16"]
    assert precision_list("") == []  # no throughput measurement
    with pytest.raises(argparse.ArgumentTypeError, match="unknown precision 'fp8'"):
        precision_list("float32,fp8")
    for text in ("0", "-1", "soon"):
        with pytest.raises(argparse.ArgumentTypeError, match="not a positive number of minutes"):
            positive_minutes(text)


def test_a_run_past_its_deadline_stops_after_one_epoch_and_scores_that_epoch_with_intervals():
    settings = load_settings(None)
    settings.model = settings.model.model_copy(update={"base_filters": 4})
    settings.train = settings.train.model_copy(update={"batch_size": 16})
    data = generate(n_train=48, n_test=1, outlier_fraction=0.0, seed=3)
    train = LabelledSet(data.train_images[:32], data.train_masks[:32], np.arange(32))
    val = LabelledSet(data.train_images[32:], data.train_masks[32:], np.arange(32, 48))
    assert throughput(settings, "float32", train.images[:16], train.masks[:16].astype(np.int32), rounds=1) > 0

    epochs_seen = []
    run = train_and_score(settings, "float32", train, val, deadline=time.perf_counter(), resamples=50,
                          on_epoch=lambda history: epochs_seen.append(len(history)))
    assert (run["epochs_run"], run["best_epoch"], run["stopped_by_time"], epochs_seen) == (1, 1, True, [1])
    assert run["history"][0]["val_miou"] == pytest.approx(run["val_miou"], abs=0.02)  # Keras's metric, same definition
    for prefix in ("val_", "val_tta_"):
        assert run[f"{prefix}miou_ci_low"] <= run[f"{prefix}miou"] <= run[f"{prefix}miou_ci_high"]
