"""Prediction (batched, flip TTA), evaluation reports, and the evaluate stage end to end."""
import csv
import json

import numpy as np
import pytest
import yaml

from marsseg.datasets import LabelledSet, save_labelled
from marsseg.errors import UserError
from marsseg.evaluation import ERROR_COLOURS, error_map, overlay_rows, validate_evaluate_params
from marsseg.metrics import Scores
from marsseg.predict import load_model, predict_labels


def tiny_model(path, classes=5, output_list=False):
    """Two convolutions to a softmax: stands in for the trained model (not flip-symmetric)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 128, 1))
    x = keras.layers.Conv2D(4, (3, 5), padding="same", activation="relu")(inputs)
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
    x = images[..., None].astype(np.float32) / 255.0
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


@pytest.mark.parametrize("settings, message", [
    ({"batch_size": 0}, "evaluate.batch_size must be a positive integer"),
    ({"tta": "yes"}, "evaluate.tta must be true or false"),
    ({"overlay_worst": -1}, "evaluate.overlay_worst must be a non-negative integer"),
    ({"overlay_worst": 0, "overlay_random": 0}, "must be at least 1"),
])
def test_bad_params_are_named(settings, message):
    with pytest.raises(UserError, match=message):
        validate_evaluate_params(settings)


# The stage logs into the train stage's MLflow run; these tests have none (no models/mlflow_run.json).
NO_TRAIN_RUN = {"tracking_uri": "", "experiment": "test", "required": False}


def write_stage_inputs(root, model_path, images, masks, evaluate):
    (root / "models").mkdir()
    (root / "models" / "model.keras").write_bytes(model_path.read_bytes())
    save_labelled(root / "data" / "split" / "val.npz",
                  LabelledSet(images, masks, np.arange(len(images), dtype=np.int64)))
    (root / "params.yaml").write_text(yaml.safe_dump({"seed": 3, "evaluate": evaluate, "mlflow": NO_TRAIN_RUN}))


def test_evaluate_stage_end_to_end(tmp_path, monkeypatch, model_path, images):
    import stages.evaluate as stage

    masks = np.random.default_rng(1).integers(0, 4, images.shape).astype(np.uint8)  # no big rock
    write_stage_inputs(tmp_path, model_path, images, masks,
                       {"tta": True, "batch_size": 4, "overlay_worst": 2, "overlay_random": 1, "confusion_sample": 500})
    monkeypatch.chdir(tmp_path)

    results = stage.main()

    metrics = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())
    assert metrics == results["metrics"]
    predictions = predict_labels(load_model(model_path), images, 64, tta=True)
    plain, tta = Scores.of(masks, predictions.plain), Scores.of(masks, predictions.tta)
    assert metrics["val_miou"] == round(plain.miou, 6) and metrics["tta_val_miou"] == round(tta.miou, 6)
    assert metrics["tta_gain_miou"] == round(tta.miou - plain.miou, 6)
    assert metrics["val_labelled_pixels"] == np.count_nonzero(masks) and metrics["val_images"] == 5
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
    assert set(results["artifacts"]) >= {"overlays.png", "confusion.csv", "metrics"}


def test_evaluate_stage_without_tta_writes_plain_metrics_only(tmp_path, monkeypatch, model_path, images):
    import stages.evaluate as stage

    masks = np.ones(images.shape, dtype=np.uint8)
    write_stage_inputs(tmp_path, model_path, images, masks, {"tta": False})
    monkeypatch.chdir(tmp_path)
    metrics = stage.main()["metrics"]
    assert not [key for key in metrics if key.startswith("tta")]
    # Only soil is labelled; a class never predicted and absent from truth is null, not 0.
    absent = [c for c in ("bedrock", "sand", "big_rock") if metrics[f"val_iou_{c}"] is None]
    assert absent and all(metrics[f"val_iou_{c}"] in (None, 0.0) for c in ("bedrock", "sand", "big_rock"))


def test_evaluate_stage_refuses_unlabelled_fold(tmp_path, monkeypatch, model_path, images, capsys):
    import stages.evaluate as stage

    write_stage_inputs(tmp_path, model_path, images, np.zeros(images.shape, np.uint8), {"tta": False})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        stage.main()
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == "error: data/split/val.npz: no labelled pixel (all class 0); nothing to score"
