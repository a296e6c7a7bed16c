"""Segmentation metrics from one confusion matrix, computed exactly as the competition scores them.

The competition metric is the mean IoU over classes 1-4 with ground-truth class-0 (unlabelled) pixels
ignored. It equals ``keras.metrics.IoU(num_classes=5, target_class_ids=[1, 2, 3, 4], ignore_class=0)``
(Keras 3's ``MeanIoU`` takes no ``target_class_ids``; it would average class 0 in as well):

* the confusion matrix (rows truth, columns prediction) is accumulated over every pixel of every
  image, not averaged per image; a labelled pixel predicted as class 0 is a miss;
* a class whose IoU denominator (truth + predicted - intersection) is 0, i.e. absent from both truth
  and prediction, is left out of the mean; its own IoU is reported as NaN (``null`` in JSON);
* if no scored class is present at all, Keras returns 0.0 and so does ``mean_iou``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from marsseg import CLASS_NAMES, NUM_CLASSES, SCORED_CLASSES

IGNORED_CLASS = 0
# Pixels per bincount call: bounds the temporary int64 buffers to ~32 MB whatever the set size.
_CHUNK_PIXELS = 1 << 22


def _check_labels(truth: np.ndarray, pred: np.ndarray) -> None:
    if truth.shape != pred.shape:
        raise ValueError(f"truth has shape {truth.shape} but prediction has shape {pred.shape}")
    for name, labels in (("truth", truth), ("prediction", pred)):
        if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            raise ValueError(f"{name} holds labels outside 0-{NUM_CLASSES - 1}")


def confusion_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(5, 5) int64 counts, rows truth and columns prediction, over all pixels; truth class 0 ignored."""
    _check_labels(truth, pred)
    truth, pred = truth.ravel(), pred.ravel()
    matrix = np.zeros(NUM_CLASSES * NUM_CLASSES, dtype=np.int64)
    for start in range(0, truth.size, _CHUNK_PIXELS):
        t = truth[start:start + _CHUNK_PIXELS].astype(np.intp)
        p = pred[start:start + _CHUNK_PIXELS].astype(np.intp)
        labelled = t != IGNORED_CLASS
        matrix += np.bincount(t[labelled] * NUM_CLASSES + p[labelled], minlength=NUM_CLASSES ** 2)
    return matrix.reshape(NUM_CLASSES, NUM_CLASSES)


def per_image_confusion(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(N, 5, 5) confusion matrices, one per image of (N, H, W) label arrays."""
    _check_labels(truth, pred)
    n_images = len(truth)
    truth, pred = truth.reshape(n_images, -1), pred.reshape(n_images, -1)
    cells = NUM_CLASSES * NUM_CLASSES
    rows_per_chunk = max(1, _CHUNK_PIXELS // max(truth.shape[1], 1))
    matrices = np.zeros((n_images, cells), dtype=np.int64)
    for start in range(0, n_images, rows_per_chunk):
        t = truth[start:start + rows_per_chunk].astype(np.intp)
        p = pred[start:start + rows_per_chunk].astype(np.intp)
        # One bincount for the whole chunk: each image gets its own block of 25 cells.
        codes = t * NUM_CLASSES + p + np.arange(len(t), dtype=np.intp)[:, None] * cells
        counts = np.bincount(codes[t != IGNORED_CLASS], minlength=len(t) * cells)
        matrices[start:start + len(t)] = counts.reshape(len(t), cells)
    return matrices.reshape(n_images, NUM_CLASSES, NUM_CLASSES)


def per_class_iou(matrix: np.ndarray) -> np.ndarray:
    """IoU of every class 0-4 from a (..., 5, 5) confusion matrix (or a stack of them) -> (..., 5).

    NaN where a class is absent from truth and prediction. Class 0's entry is meaningless when truth
    class 0 is ignored (its row is empty); use ``SCORED_CLASSES``.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    intersection = np.diagonal(matrix, axis1=-2, axis2=-1)
    union = matrix.sum(axis=-2) + matrix.sum(axis=-1) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / union, np.nan)


def mean_ious(matrices: np.ndarray, classes=SCORED_CLASSES) -> np.ndarray:
    """Mean IoU of each of a (..., 5, 5) stack of confusion matrices (Keras rule, see ``mean_iou``)."""
    ious = per_class_iou(matrices)[..., list(classes)]
    present = ~np.isnan(ious)
    count = present.sum(axis=-1)
    total = np.where(present, ious, 0.0).sum(axis=-1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def mean_iou(matrix: np.ndarray, classes=SCORED_CLASSES) -> float:
    """Mean IoU over ``classes`` that are present (Keras rule); 0.0 if none is, as Keras returns."""
    return float(mean_ious(matrix, classes))


def background_share(matrix: np.ndarray) -> float:
    """Share of labelled (truth class 1-4) pixels predicted as class 0: each one is a certain miss, since
    class 0 is never scored. NaN if there are none."""
    matrix = np.asarray(matrix)
    labelled = matrix[1:].sum()
    return float(matrix[1:, 0].sum() / labelled) if labelled else math.nan


def pixel_accuracies(matrices: np.ndarray) -> np.ndarray:
    """Share of labelled (truth class 1-4) pixels predicted correctly in each of a (..., 5, 5) stack of
    confusion matrices; NaN where there are none."""
    matrices = np.asarray(matrices, dtype=np.float64)
    labelled = matrices[..., 1:, :].sum(axis=(-2, -1))
    correct = np.trace(matrices[..., 1:, 1:], axis1=-2, axis2=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(labelled > 0, correct / labelled, np.nan)


def pixel_accuracy(matrix: np.ndarray) -> float:
    """Share of labelled (truth class 1-4) pixels predicted correctly; NaN if there are none."""
    return float(pixel_accuracies(matrix))


def per_image_miou(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(N,) mean IoU of each image on its own; NaN for an image with no labelled pixel."""
    matrices = per_image_confusion(truth, pred)
    scores = mean_ious(matrices)
    scores[matrices[:, 1:].sum(axis=(1, 2)) == 0] = np.nan
    return scores


@dataclass(frozen=True)
class Scores:
    """Every metric of one prediction of a labelled set, derived from its confusion matrix."""

    confusion: np.ndarray

    @classmethod
    def of(cls, truth: np.ndarray, pred: np.ndarray) -> "Scores":
        return cls(confusion_matrix(truth, pred))

    @property
    def iou(self) -> dict[str, float]:
        ious = per_class_iou(self.confusion)
        return {CLASS_NAMES[c]: float(ious[c]) for c in SCORED_CLASSES}

    @property
    def miou(self) -> float:
        return mean_iou(self.confusion)

    @property
    def pixel_accuracy(self) -> float:
        return pixel_accuracy(self.confusion)

    @property
    def labelled_pixels(self) -> int:
        return int(self.confusion[1:].sum())

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics, e.g. ``val_miou``, ``val_iou_soil``, ..., ``val_pixel_accuracy``."""
        flat = {f"{prefix}miou": self.miou}
        flat.update({f"{prefix}iou_{name}": value for name, value in self.iou.items()})
        flat[f"{prefix}pixel_accuracy"] = self.pixel_accuracy
        return flat


# --------------------------------------------------------------------------- bootstrap over images

CI_LEVEL = 0.95


def bootstrap_weights(n_images: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n_images) float64: how often each image is drawn in each resample (with replacement).

    A resample's confusion matrix is then ``weights @ per_image`` (one matrix product for all
    resamples), and a paired comparison reuses the same weights for both runs.
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_images, size=(resamples, n_images))
    draws += np.arange(resamples)[:, None] * n_images  # each resample counts in its own block
    counts = np.bincount(draws.ravel(), minlength=resamples * n_images)
    return counts.reshape(resamples, n_images).astype(np.float64)


def resampled_confusion(per_image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(resamples, 5, 5) confusion matrices of the resampled sets; exact (counts stay below 2**53)."""
    per_image = np.asarray(per_image)
    if per_image.ndim != 3 or per_image.shape[1:] != (NUM_CLASSES, NUM_CLASSES):
        raise ValueError(f"per-image confusion must have shape (N, {NUM_CLASSES}, {NUM_CLASSES}), got {per_image.shape}")
    if len(per_image) != weights.shape[1]:
        raise ValueError(f"{len(per_image)} per-image matrices but weights for {weights.shape[1]} images")
    flat = per_image.reshape(len(per_image), -1).astype(np.float64)
    return (weights @ flat).reshape(len(weights), NUM_CLASSES, NUM_CLASSES)


def percentile_interval(samples: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """Central ``level`` percentile interval of bootstrap samples along axis 0, NaN samples left out.

    A class absent from a resample has no IoU there; (NaN, NaN) if it is absent from all.
    """
    samples = np.asarray(samples, dtype=np.float64)
    kept = samples[~np.isnan(samples)]
    if kept.size == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(kept, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_intervals(per_image: np.ndarray, resamples: int, seed: int, prefix: str = "") -> dict[str, float]:
    """95% bootstrap intervals over images of mIoU, each scored class IoU and pixel accuracy.

    ``{prefix}miou_ci_low``, ``{prefix}miou_ci_high``, ``{prefix}iou_<class>_ci_low`` / ``_ci_high``,
    ``{prefix}pixel_accuracy_ci_low`` / ``_ci_high``.
    """
    if resamples < 1 or len(per_image) == 0:
        return {}
    matrices = resampled_confusion(per_image, bootstrap_weights(len(per_image), resamples, seed))
    ious = per_class_iou(matrices)
    named = {"miou": mean_ious(matrices), **{f"iou_{CLASS_NAMES[c]}": ious[:, c] for c in SCORED_CLASSES},
             "pixel_accuracy": pixel_accuracies(matrices)}
    flat: dict[str, float] = {}
    for name, samples in named.items():
        flat[f"{prefix}{name}_ci_low"], flat[f"{prefix}{name}_ci_high"] = percentile_interval(samples)
    return flat


def scores_with_intervals(per_image: np.ndarray, resamples: int, seed: int, prefix: str = "val_") -> dict[str, float]:
    """Every metric of the whole set (``Scores.as_dict``) and its bootstrap interval, from per-image matrices."""
    per_image = np.asarray(per_image)
    return {**Scores(per_image.sum(axis=0)).as_dict(prefix), **bootstrap_intervals(per_image, resamples, seed, prefix)}


def paired_miou_difference(per_image_a, per_image_b, resamples: int, seed: int) -> np.ndarray:
    """(resamples,) bootstrap samples of mIoU(a) - mIoU(b), both scored on the same resampled images.

    ``a`` and ``b`` are per-image confusions of two predictions of the same validation images, in the
    same order (or lists of them: each side's statistic is then the mean mIoU of its members, e.g.
    the seeds of one configuration).
    """
    sides = []
    for side in (per_image_a, per_image_b):
        side = [side] if isinstance(side, np.ndarray) and side.ndim == 3 else list(side)
        sides.append(side)
    n_images = len(sides[0][0])
    if any(len(member) != n_images for side in sides for member in side):
        raise ValueError("paired comparison needs per-image confusions of the same images")
    weights = bootstrap_weights(n_images, resamples, seed)
    a, b = (np.mean([mean_ious(resampled_confusion(m, weights)) for m in side], axis=0) for side in sides)
    return a - b


def class_fraction_intervals(labels: np.ndarray, resamples: int, seed: int) -> dict[str, dict[str, float]]:
    """95% bootstrap intervals over images of each class's share of the predicted pixels of (N, H, W) labels:
    ``{"class_fraction_ci_low": {class: low}, "class_fraction_ci_high": {class: high}}``; empty when off.

    They sit beside ``class_fraction`` (not inside it, whose shares add up to 1), where ``marsseg reproduce``
    finds a grouped metric's interval."""
    labels = np.asarray(labels)
    if resamples < 1 or len(labels) == 0:
        return {}
    # Per-class counting on the labels' own dtype: no int64 copy of every pixel.
    per_image = np.stack([np.count_nonzero(labels == c, axis=tuple(range(1, labels.ndim)))
                          for c in range(NUM_CLASSES)], axis=1).astype(np.float64)
    counts = bootstrap_weights(len(labels), resamples, seed) @ per_image
    shares = counts / counts.sum(axis=1, keepdims=True)
    bounds = [percentile_interval(shares[:, c]) for c in range(NUM_CLASSES)]
    return {f"class_fraction{side}": {CLASS_NAMES[c]: bounds[c][i] for c in range(NUM_CLASSES)}
            for i, side in enumerate(("_ci_low", "_ci_high"))}


def json_number(value, digits: int = 6):
    """A metric as JSON wants it: rounded to ``digits``, NaN/inf -> None (``null``); ints stay ints."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def json_ready(metrics: dict) -> dict:
    """``json_number`` applied to every value of a (possibly nested) metrics mapping."""
    return {key: json_ready(value) if isinstance(value, dict) else json_number(value)
            for key, value in metrics.items()}


def keras_competition_metric(name: str = "miou", sparse_y_pred: bool = False):
    """The competition metric as a Keras metric for ``model.compile`` (softmax output by default)."""
    import keras

    return keras.metrics.IoU(num_classes=NUM_CLASSES, target_class_ids=list(SCORED_CLASSES),
                             ignore_class=IGNORED_CLASS, sparse_y_pred=sparse_y_pred, name=name)
