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
    """IoU of every class 0-4 from a confusion matrix; NaN where a class is absent from truth and prediction.

    Class 0's entry is meaningless when truth class 0 is ignored (its row is empty); use ``SCORED_CLASSES``.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    intersection = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / union, np.nan)


def mean_iou(matrix: np.ndarray, classes=SCORED_CLASSES) -> float:
    """Mean IoU over ``classes`` that are present (Keras rule); 0.0 if none is, as Keras returns."""
    ious = per_class_iou(matrix)[list(classes)]
    present = ious[~np.isnan(ious)]
    return float(present.mean()) if present.size else 0.0


def pixel_accuracy(matrix: np.ndarray) -> float:
    """Share of labelled (truth class 1-4) pixels predicted correctly; NaN if there are none."""
    matrix = np.asarray(matrix)
    labelled = matrix[1:].sum()
    return float(np.trace(matrix[1:, 1:]) / labelled) if labelled else math.nan


def per_image_miou(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(N,) mean IoU of each image on its own; NaN for an image with no labelled pixel."""
    matrices = per_image_confusion(truth, pred)
    scores = np.array([mean_iou(m) for m in matrices], dtype=np.float64)
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
