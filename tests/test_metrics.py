"""The competition metric: hand-computed cases and agreement with Keras' own IoU metric."""
import math

import numpy as np
import pytest

from marsseg import metrics
from marsseg.metrics import (Scores, confusion_matrix, json_number, json_ready, mean_iou, per_class_iou,
                             per_image_confusion, per_image_miou, pixel_accuracy)

# 7 pixels; the last two are unlabelled (truth 0) and must not count, whatever is predicted there.
TRUTH = np.array([1, 1, 2, 2, 3, 0, 0], dtype=np.uint8)
PRED = np.array([1, 2, 2, 0, 3, 4, 1], dtype=np.uint8)


def keras_miou(truth, pred):
    import keras

    metric = keras.metrics.IoU(num_classes=5, target_class_ids=[1, 2, 3, 4], ignore_class=0, sparse_y_pred=True)
    metric.update_state(truth.astype(np.int32), pred.astype(np.int32))
    return float(metric.result())


def test_hand_computed_case():
    matrix = confusion_matrix(TRUTH, PRED)
    expected = np.zeros((5, 5), dtype=int)
    expected[1, 1] = expected[1, 2] = expected[2, 2] = expected[2, 0] = expected[3, 3] = 1
    np.testing.assert_array_equal(matrix, expected)
    ious = per_class_iou(matrix)
    # soil: 1 hit / (2 true + 1 predicted - 1); bedrock: 1 / (2 + 2 - 1), the class-0 prediction is a miss.
    assert ious[1] == pytest.approx(0.5)
    assert ious[2] == pytest.approx(1 / 3)
    assert ious[3] == pytest.approx(1.0)
    # big rock is predicted only on unlabelled pixels: absent from both, left out of the mean.
    assert math.isnan(ious[4])
    assert mean_iou(matrix) == pytest.approx((0.5 + 1 / 3 + 1.0) / 3)
    assert pixel_accuracy(matrix) == pytest.approx(3 / 5)


def test_class_predicted_but_absent_from_truth_counts_as_zero():
    pred = PRED.copy()
    pred[4] = 4  # the sand pixel predicted as big rock: big rock now has a denominator, IoU 0
    ious = per_class_iou(confusion_matrix(TRUTH, pred))
    assert ious[4] == 0.0 and ious[3] == 0.0  # sand is now missed entirely
    assert mean_iou(confusion_matrix(TRUTH, pred)) == pytest.approx((0.5 + 1 / 3 + 0 + 0) / 4)


def test_predicting_background_on_labelled_pixels_is_a_miss():
    truth = np.array([1, 1, 1, 1], dtype=np.uint8)
    pred = np.array([1, 0, 0, 0], dtype=np.uint8)
    matrix = confusion_matrix(truth, pred)
    assert per_class_iou(matrix)[1] == pytest.approx(0.25)
    assert mean_iou(matrix) == pytest.approx(0.25)
    assert pixel_accuracy(matrix) == pytest.approx(0.25)


def test_matches_keras_on_hand_cases():
    assert mean_iou(confusion_matrix(TRUTH, PRED)) == pytest.approx(keras_miou(TRUTH, PRED), abs=1e-6)
    only_background = np.zeros(6, dtype=np.uint8)
    # Nothing labelled: Keras returns 0.0 and so do we; accuracy is undefined.
    matrix = confusion_matrix(only_background, np.array([0, 1, 2, 3, 4, 4], dtype=np.uint8))
    assert matrix.sum() == 0
    assert mean_iou(matrix) == keras_miou(only_background, np.array([0, 1, 2, 3, 4, 4])) == 0.0
    assert math.isnan(pixel_accuracy(matrix))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_keras_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    truth = rng.choice(5, size=(6, 64, 128), p=[0.3, 0.3, 0.2, 0.15, 0.05]).astype(np.uint8)
    # Correlated prediction (mostly right) so IoUs are far from their chance values.
    pred = np.where(rng.random(truth.shape) < 0.6, truth, rng.integers(0, 5, truth.shape)).astype(np.uint8)
    if seed == 2:  # big rock absent from truth and prediction: excluded by both
        truth[truth == 4], pred[pred == 4] = 1, 2
    ours = mean_iou(confusion_matrix(truth, pred))
    assert ours == pytest.approx(keras_miou(truth, pred), abs=1e-6)
    assert 0.3 < ours < 0.9


def test_keras_competition_metric_on_softmax_output():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 5, (2, 64, 128)).astype(np.uint8)
    scores = rng.random((2, 64, 128, 5)).astype(np.float32)
    metric = metrics.keras_competition_metric()
    metric.update_state(truth.astype(np.int32), scores)
    assert float(metric.result()) == pytest.approx(mean_iou(confusion_matrix(truth, scores.argmax(-1))), abs=1e-6)


def test_chunked_accumulation_equals_one_pass(monkeypatch):
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 5, (5, 64, 128)).astype(np.uint8)
    pred = rng.integers(0, 5, (5, 64, 128)).astype(np.uint8)
    whole = confusion_matrix(truth, pred)
    per_image = per_image_confusion(truth, pred)
    monkeypatch.setattr(metrics, "_CHUNK_PIXELS", 1000)  # not a multiple of the image size
    np.testing.assert_array_equal(confusion_matrix(truth, pred), whole)
    np.testing.assert_array_equal(per_image_confusion(truth, pred), per_image)
    np.testing.assert_array_equal(per_image.sum(axis=0), whole)
    assert whole.sum() == np.count_nonzero(truth)


def test_per_image_miou():
    truth = np.zeros((3, 64, 128), dtype=np.uint8)
    pred = np.zeros_like(truth)
    truth[0, :32], pred[0, :32] = 1, 1          # perfect
    truth[1, :32], pred[1, :16] = 2, 2          # half the bedrock found, nothing predicted elsewhere
    scores = per_image_miou(truth, pred)        # image 2 has no labelled pixel
    assert scores[0] == 1.0 and scores[1] == pytest.approx(0.5) and math.isnan(scores[2])


def test_scores_dict_and_json():
    flat = Scores.of(TRUTH, PRED).as_dict("val_")
    assert list(flat) == ["val_miou", "val_iou_soil", "val_iou_bedrock", "val_iou_sand", "val_iou_big_rock",
                          "val_pixel_accuracy"]
    ready = json_ready({**flat, "val_images": np.int64(3), "nested": {"x": 1 / 3}})
    assert ready["val_iou_big_rock"] is None
    assert ready["val_iou_bedrock"] == 0.333333 and ready["nested"]["x"] == 0.333333
    assert ready["val_images"] == 3 and isinstance(ready["val_images"], int)
    assert json_number(float("inf")) is None and json_number(True) is True


def test_rejects_mismatched_or_out_of_range_labels():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(TRUTH, PRED[:-1])
    with pytest.raises(ValueError, match="outside 0-4"):
        confusion_matrix(TRUTH, np.full_like(PRED, 5))
