"""Prediction (batched, flip TTA), evaluation reports, and the evaluate stage end to end."""
import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

from marsseg.datasets import LabelledSet, save_labelled
from marsseg.errors import UserError
from marsseg.evaluation import overlay_rows
from marsseg.metrics import Scores
from marsseg.plots import ERROR_COLOURS, error_map
from marsseg.predict import load_model, predict_labels

from conftest import REPO, project_env, set_params


def tiny_model(path, classes=5, output_list=False):
    """Two convolutions to a softmax: stands in for the trained model (not flip-symmetric).

    Like the trained models it takes grey levels 0-255 and scales them itself.
    """
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 128, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, (3, 5), padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(classes, 1, activation="softmax")(x)
    keras.Model(inputs, [outputs] if output_list else outputs).save(path)
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "model.keras")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (5, 64, 128)).astype(np.uint8)


def test_predictions_match_a_direct_forward_pass(model_path, images):
    model = load_model(model_path)
    x = images[..., None].astype(np.float32)
    plain = model.predict(x, verbose=0)
    mirrored = model.predict(x[:, :, ::-1], verbose=0)[:, :, ::-1]
    predictions = predict_labels(model, images, batch_size=2, tta=True)  # 2 does not divide 5
    assert predictions.plain.dtype == np.uint8 and predictions.plain.shape == (5, 64, 128)
    np.testing.assert_array_equal(predictions.plain, plain.argmax(-1))
    np.testing.assert_array_equal(predictions.tta, ((plain + mirrored) / 2).argmax(-1))
    assert (predictions.tta != predictions.plain).any()  # the flip really changes something
    assert predictions.final is predictions.tta
    no_tta = predict_labels(model, images, batch_size=64)
    assert no_tta.tta is None and no_tta.final is no_tta.plain
    np.testing.assert_array_equal(no_tta.plain, predictions.plain)


def test_model_saved_with_a_list_of_outputs(tmp_path, model_path, images):
    listed = load_model(tiny_model(tmp_path / "listed.keras", output_list=True))
    expected = predict_labels(load_model(model_path), images, 8, tta=True)
    got = predict_labels(listed, images, 8, tta=True)
    np.testing.assert_array_equal(got.plain, expected.plain)
    np.testing.assert_array_equal(got.tta, expected.tta)


def test_load_model_rejects_missing_and_wrong_shape(tmp_path):
    with pytest.raises(UserError, match="model file not found"):
        load_model(tmp_path / "absent.keras")
    with pytest.raises(UserError, match=r"maps \(64, 128, 1\) to \(64, 128, 3\), expected"):
        load_model(tiny_model(tmp_path / "three.keras", classes=3))
    (tmp_path / "junk.keras").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a loadable Keras model"):
        load_model(tmp_path / "junk.keras")


def test_overlay_rows_worst_first_then_seeded_sample():
    image_miou = np.array([0.9, np.nan, 0.1, 0.5, 0.3, 0.8, 0.7])
    rows = overlay_rows(image_miou, n_worst=2, n_random=3, seed=7)
    assert list(rows[:2]) == [2, 4]  # NaN (no labelled pixel) is never "worst"
    assert len(set(rows)) == 5 and not {2, 4} & set(rows[2:])
    np.testing.assert_array_equal(rows, overlay_rows(image_miou, 2, 3, seed=7))
    assert len(overlay_rows(image_miou, n_worst=10, n_random=10, seed=0)) == 7


def test_error_map_colours():
    truth = np.array([[0, 1, 2]])
    rgb = error_map(truth, np.array([[3, 1, 0]]))
    assert tuple(rgb[0, 0]) == ERROR_COLOURS["ignored"]
    assert tuple(rgb[0, 1]) == ERROR_COLOURS["correct"]
    assert tuple(rgb[0, 2]) == ERROR_COLOURS["wrong"]


@pytest.mark.parametrize("change, message", [
    ({"batch_size": 0}, "evaluate.batch_size is 0; Input should be greater than or equal to 1"),
    ({"tta": "yes"}, "evaluate.tta is 'yes'; Input should be a valid boolean"),
    ({"overlay_worst": -1}, "evaluate.overlay_worst is -1; Input should be greater than or equal to 0"),
    ({"overlay_worst": 0, "overlay_random": 0}, "must be at least 1"),
    ({"bootstrap": -1}, "evaluate.bootstrap is -1; Input should be greater than or equal to 0"),
    ({"bootstrap": 1.5}, "evaluate.bootstrap is 1.5; Input should be a valid integer"),
])
def test_bad_params_are_named(change, message):
    from marsseg.config import validate_group

    defaults = yaml.safe_load((REPO / "params.yaml").read_text())["evaluate"]
    with pytest.raises(UserError, match=re.escape(message)):
        validate_group("evaluate", {**defaults, **change})


# The stage logs into the train stage's MLflow run; these tests have none.
NO_TRAIN_RUN = {"tracking_uri": "", "experiment": "test", "required": False}


def write_stage_inputs(root, model_path, images, masks, evaluate):
    """A work dir as the stage sees it: the model, the validation fold, and params.yaml with ``evaluate``."""
    (root / "models").mkdir()
    (root / "models" / "model.keras").write_bytes(model_path.read_bytes())
    save_labelled(root / "data" / "split" / "val.npz",
                  LabelledSet(images, masks, np.arange(len(images), dtype=np.int64)))
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    set_params(root, {"seed": 3, "evaluate": evaluate, "mlflow": NO_TRAIN_RUN})


def evaluate_stage(root, expect: int = 0) -> subprocess.CompletedProcess:
    """``python stages/evaluate.py`` in ``root``, as DVC runs it."""
    result = subprocess.run([sys.executable, str(REPO / "stages" / "evaluate.py")], cwd=root, env=project_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == expect, result.stdout + result.stderr
    return result


def test_evaluate_stage_end_to_end(tmp_path, model_path, images):
    masks = np.random.default_rng(1).integers(0, 4, images.shape).astype(np.uint8)  # no big rock
    write_stage_inputs(tmp_path, model_path, images, masks,
                       {"tta": True, "batch_size": 4, "overlay_worst": 2, "overlay_random": 1, "confusion_sample": 500})

    line = evaluate_stage(tmp_path).stdout.strip().splitlines()[-1]

    metrics = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())
    predictions = predict_labels(load_model(model_path), images, 64, tta=True)
    plain, tta = Scores.of(masks, predictions.plain), Scores.of(masks, predictions.tta)
    assert metrics["val_miou"] == round(plain.miou, 6) and metrics["tta_val_miou"] == round(tta.miou, 6)
    assert metrics["tta_gain_miou"] == round(tta.miou - plain.miou, 6)
    assert metrics["val_labelled_pixels"] == np.count_nonzero(masks) and metrics["val_images"] == 5
    labelled = masks != 0
    assert metrics["val_labelled_predicted_background"] == round(
        float(np.mean(predictions.plain[labelled] == 0)), 6)
    for prefix in ("val_", "tta_val_"):
        assert {f"{prefix}iou_{c}" for c in ("soil", "bedrock", "sand", "big_rock")} <= set(metrics)
        assert isinstance(metrics[f"{prefix}pixel_accuracy"], float)

    reports = tmp_path / "reports"
    confusion = json.loads((reports / "confusion.json").read_text())
    np.testing.assert_array_equal(confusion["counts"], tta.confusion)  # reports show the TTA prediction
    with open(reports / "confusion.csv") as handle:
        sampled = list(csv.DictReader(handle))
    assert len(sampled) == 500 and {row["actual"] for row in sampled} <= {"soil", "bedrock", "sand"}
    with open(reports / "per_class_iou.csv") as handle:
        bars = list(csv.DictReader(handle))
    assert [row["class"] for row in bars] == ["soil", "bedrock", "sand", "big_rock"]
    assert float(bars[0]["iou"]) == round(tta.iou["soil"], 6)
    for picture in ("overlays.png", "confusion.png"):
        assert (reports / picture).read_bytes().startswith(b"\x89PNG")

    # 95% bootstrap intervals (evaluate.bootstrap resamples) around every point estimate, plain and TTA ...
    assert metrics["bootstrap_resamples"] == yaml.safe_load((REPO / "params.yaml").read_text())["evaluate"]["bootstrap"]
    for prefix in ("val_", "tta_val_"):
        for name in ("miou", "iou_soil", "iou_bedrock", "iou_sand", "pixel_accuracy"):
            low, high = metrics[f"{prefix}{name}_ci_low"], metrics[f"{prefix}{name}_ci_high"]
            assert low <= metrics[f"{prefix}{name}"] <= high
    # ... and TTA's gain, from a paired bootstrap (both predictions on the same resampled images).
    assert metrics["tta_gain_miou_ci_low"] <= metrics["tta_gain_miou"] <= metrics["tta_gain_miou_ci_high"]
    # ... in the stage's line ...
    assert (f"val mIoU {metrics['val_miou']:.4f} [95% CI {metrics['val_miou_ci_low']:.4f}, "
            f"{metrics['val_miou_ci_high']:.4f}] on 5 images") in line
    # ... from per-image confusion matrices, saved for paired comparisons of runs.
    per_image = np.load(reports / "per_image_confusion.npz")
    assert per_image["confusion"].shape == (5, 5, 5)
    np.testing.assert_array_equal(per_image["confusion"].sum(axis=0), plain.confusion)
    np.testing.assert_array_equal(per_image["tta_confusion"].sum(axis=0), tta.confusion)
    np.testing.assert_array_equal(per_image["index"], np.arange(5))
    written = (reports / "per_image_confusion.npz").read_bytes()
    evaluate_stage(tmp_path)
    assert json.loads((tmp_path / "metrics" / "evaluate.json").read_text()) == metrics  # seeded: the same intervals ...
    assert (reports / "per_image_confusion.npz").read_bytes() == written  # ... and the same bytes


def test_evaluate_stage_without_tta_or_bootstrap_writes_plain_metrics_only(tmp_path, model_path, images):
    masks = np.ones(images.shape, dtype=np.uint8)
    write_stage_inputs(tmp_path, model_path, images, masks, {"tta": False, "bootstrap": 0})
    output = evaluate_stage(tmp_path).stdout
    metrics = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())
    assert not [key for key in metrics if key.startswith("tta")]
    assert metrics["bootstrap_resamples"] == 0 and not [key for key in metrics if "_ci_" in key]
    assert "95% CI" not in output
    assert "tta_confusion" not in np.load(tmp_path / "reports" / "per_image_confusion.npz")
    # Only soil is labelled; a class never predicted and absent from truth is null, not 0.
    absent = [c for c in ("bedrock", "sand", "big_rock") if metrics[f"val_iou_{c}"] is None]
    assert absent and all(metrics[f"val_iou_{c}"] in (None, 0.0) for c in ("bedrock", "sand", "big_rock"))


def test_evaluate_stage_refuses_unlabelled_fold(tmp_path, model_path, images):
    write_stage_inputs(tmp_path, model_path, images, np.zeros(images.shape, np.uint8), {"tta": False})
    result = evaluate_stage(tmp_path, expect=2)
    assert result.stderr.strip().splitlines()[-1] == \
        "error: data/split/val.npz: no labelled pixel (all class 0); nothing to score"
