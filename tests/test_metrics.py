"""The competition metric: hand-computed cases and agreement with Keras' own IoU metric."""
import math

import numpy as np
import pytest

from marsseg import metrics
from marsseg.metrics import (Scores, background_share, bootstrap_intervals, bootstrap_weights, class_fraction_intervals,
                             confusion_matrix, json_number, json_ready, mean_iou, mean_ious, paired_miou_difference,
                             per_class_iou, per_image_confusion, per_image_miou, pixel_accuracies, pixel_accuracy,
                             resampled_confusion)

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
    assert background_share(matrix) == pytest.approx(0.75)
    assert math.isnan(background_share(confusion_matrix(np.zeros(4, np.uint8), pred)))


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


# --------------------------------------------------------------------------- bootstrap over images

def noisy_predictions(n_images: int, seed: int = 0, right: float = 0.6):
    rng = np.random.default_rng(seed)
    truth = rng.choice(5, size=(n_images, 16, 32), p=[0.3, 0.3, 0.2, 0.15, 0.05]).astype(np.uint8)
    # Per-image accuracy varies, as it does between real images.
    hit = rng.random(truth.shape) < rng.uniform(right - 0.3, right + 0.3, (n_images, 1, 1))
    pred = np.where(hit, truth, rng.integers(0, 5, truth.shape)).astype(np.uint8)
    return truth, pred


def test_vectorised_ious_equal_one_matrix_at_a_time():
    per_image = per_image_confusion(*noisy_predictions(7))
    for matrix, iou, miou in zip(per_image, per_class_iou(per_image), mean_ious(per_image)):
        np.testing.assert_array_equal(iou, per_class_iou(matrix))
        assert miou == mean_iou(matrix)


def test_resampled_confusions_are_sums_of_the_drawn_images():
    per_image = per_image_confusion(*noisy_predictions(6))
    weights = bootstrap_weights(6, resamples=4, seed=1)
    assert weights.shape == (4, 6) and (weights.sum(axis=1) == 6).all()
    resampled = resampled_confusion(per_image, weights)
    for row, matrix in zip(weights, resampled):
        np.testing.assert_array_equal(matrix, sum(int(k) * per_image[i] for i, k in enumerate(row)))


def test_interval_contains_the_point_estimate_and_narrows_as_images_are_added():
    truth, pred = noisy_predictions(800)
    widths = []
    for n_images in (25, 100, 800):
        per_image = per_image_confusion(truth[:n_images], pred[:n_images])
        point = Scores(per_image.sum(axis=0))
        ci = bootstrap_intervals(per_image, resamples=1000, seed=0, prefix="val_")
        assert ci["val_miou_ci_low"] <= point.miou <= ci["val_miou_ci_high"]
        for name, value in point.iou.items():
            assert ci[f"val_iou_{name}_ci_low"] <= value <= ci[f"val_iou_{name}_ci_high"]
        assert ci["val_pixel_accuracy_ci_low"] <= point.pixel_accuracy <= ci["val_pixel_accuracy_ci_high"]
        widths.append(ci["val_miou_ci_high"] - ci["val_miou_ci_low"])
    assert widths[0] > widths[1] > widths[2] > 0
    # Standard error shrinks as 1/sqrt(n): 32x the images, about a 5.7x narrower interval.
    assert 3 < widths[0] / widths[2] < 10


def test_bootstrap_is_seeded_and_off_at_zero():
    per_image = per_image_confusion(*noisy_predictions(30))
    assert bootstrap_intervals(per_image, 200, seed=3) == bootstrap_intervals(per_image, 200, seed=3)
    assert bootstrap_intervals(per_image, 200, seed=3) != bootstrap_intervals(per_image, 200, seed=4)
    assert bootstrap_intervals(per_image, 0, seed=3) == {}


def test_class_absent_from_every_image_has_no_interval():
    truth, pred = noisy_predictions(20)
    truth[truth == 4], pred[pred == 4] = 1, 1
    ci = json_ready(bootstrap_intervals(per_image_confusion(truth, pred), 100, seed=0))
    assert ci["iou_big_rock_ci_low"] is None and ci["iou_big_rock_ci_high"] is None
    assert ci["miou_ci_low"] < ci["miou_ci_high"]


def test_bootstrap_of_a_thousand_images_takes_well_under_a_second():
    import time

    per_image = np.random.default_rng(0).integers(0, 500, (1000, 5, 5))
    started = time.perf_counter()
    bootstrap_intervals(per_image, resamples=1000, seed=0)
    assert time.perf_counter() - started < 0.5


def test_paired_difference_of_a_run_with_itself_is_exactly_zero():
    per_image = per_image_confusion(*noisy_predictions(50))
    assert not paired_miou_difference(per_image, per_image, 500, seed=0).any()
    assert not paired_miou_difference([per_image, per_image[::-1][::-1]], [per_image], 500, seed=0).any()


def test_paired_difference_sees_a_small_consistent_gain_that_separate_intervals_miss():
    truth, worse = noisy_predictions(200, seed=5, right=0.5)
    better = worse.copy()
    fix = np.random.default_rng(6).random(truth.shape) < 0.03  # 3% of pixels corrected, on every image
    better[fix] = truth[fix]
    a, b = per_image_confusion(truth, better), per_image_confusion(truth, worse)
    difference = paired_miou_difference(a, b, 1000, seed=0)
    point = mean_iou(a.sum(axis=0)) - mean_iou(b.sum(axis=0))
    assert 0 < np.percentile(difference, 2.5) <= point <= np.percentile(difference, 97.5)
    ci_a, ci_b = bootstrap_intervals(a, 1000, 0), bootstrap_intervals(b, 1000, 0)
    assert ci_a["miou_ci_low"] < ci_b["miou_ci_high"]  # unpaired intervals overlap


def test_paired_difference_needs_the_same_images():
    per_image = per_image_confusion(*noisy_predictions(10))
    with pytest.raises(ValueError, match="same images"):
        paired_miou_difference(per_image, per_image[:9], 10, seed=0)


def test_pixel_accuracies_of_a_stack_match_each_matrix_and_are_nan_without_labels():
    per_image = per_image_confusion(*noisy_predictions(6))
    per_image[2, 1:] = 0  # an image with no labelled pixel
    stacked = pixel_accuracies(per_image)
    for matrix, value in zip(per_image, stacked):
        assert np.isnan(value) if not matrix[1:].sum() else value == pixel_accuracy(matrix)
    assert np.isnan(stacked[2]) and not np.isnan(stacked[[0, 1, 3, 4, 5]]).any()


def test_class_fraction_intervals_bracket_the_predicted_shares_and_are_seeded():
    rng = np.random.default_rng(0)
    # Images of two kinds: mostly soil, or mostly bedrock with a little sand; no big rock at all.
    labels = np.where(rng.random((40, 1, 1)) < 0.5, 1, 2) * np.ones((40, 64, 128), np.uint8)
    labels[rng.random(labels.shape) < 0.05] = 3
    shares = np.bincount(labels.ravel(), minlength=5) / labels.size
    ci = class_fraction_intervals(labels, 500, seed=1)
    low, high = ci["class_fraction_ci_low"], ci["class_fraction_ci_high"]
    assert list(low) == list(high) == ["background", "soil", "bedrock", "sand", "big_rock"]
    for c, name in enumerate(low):
        assert low[name] <= shares[c] <= high[name]
    # Half the images are soil: the image-level draw dominates (SE about 0.5 / sqrt(40) = 0.08) ...
    assert 0.15 < high["soil"] - low["soil"] < 0.5
    # ... while sand is spread evenly over every image, and absent classes have a zero-width interval.
    assert high["sand"] - low["sand"] < 0.01 and low["big_rock"] == high["big_rock"] == 0.0
    assert class_fraction_intervals(labels, 500, seed=1) == ci != class_fraction_intervals(labels, 500, seed=2)
    assert class_fraction_intervals(labels, 0, seed=1) == {}
