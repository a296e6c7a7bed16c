"""What the evaluate stage shows a person: overlays, the confusion heatmap, and DVC plot data.

The figures are drawn by ``marsseg.plots`` (one class palette for every figure); files are written
through ``marsseg.io`` (atomic, reproducible bytes).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from marsseg import CLASS_NAMES, NUM_CLASSES, SCORED_CLASSES
from marsseg.errors import UserError
from marsseg.io import save_npz, write_csv, write_json
from marsseg.metrics import confusion_matrix, json_number, per_class_iou, per_image_miou
from marsseg.plots import plot_confusion, plot_overlays

PER_IMAGE_CONFUSION = "per_image_confusion.npz"


def overlay_rows(image_miou: np.ndarray, n_worst: int, n_random: int, seed: int) -> np.ndarray:
    """Rows to show: the ``n_worst`` images by mIoU (worst first), then ``n_random`` others at random.

    Images without a labelled pixel (NaN mIoU) are never counted among the worst.
    """
    scored = np.flatnonzero(~np.isnan(image_miou))
    worst = scored[np.argsort(image_miou[scored], kind="stable")][:n_worst]
    others = np.setdiff1d(np.arange(len(image_miou)), worst)
    rng = np.random.default_rng(seed)
    sampled = np.sort(rng.choice(others, size=min(n_random, len(others)), replace=False))
    return np.concatenate([worst, sampled]).astype(int)


def confusion_sample(truth: np.ndarray, pred: np.ndarray, n_pixels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded uniform sample of labelled pixels, (actual, predicted) class ids, for DVC's confusion plot."""
    labelled = np.flatnonzero(truth.ravel() != 0)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(labelled, size=min(n_pixels, labelled.size), replace=False))
    return truth.ravel()[chosen], pred.ravel()[chosen]


def write_confusion_csv(path: str | Path, actual: np.ndarray, predicted: np.ndarray) -> None:
    names = np.array(CLASS_NAMES)
    write_csv(path, pd.DataFrame({"actual": names[actual], "predicted": names[predicted]}))


def write_confusion_json(path: str | Path, matrix: np.ndarray) -> None:
    """Full-pixel confusion counts, rows truth and columns prediction, with the class names."""
    payload = {"classes": list(CLASS_NAMES), "rows": "truth", "columns": "prediction",
               "ignored_truth_class": 0, "counts": np.asarray(matrix).astype(int).tolist()}
    write_json(path, payload)


def write_per_class_iou_csv(path: str | Path, iou_by_class: dict[str, float]) -> None:
    """``class,iou`` rows for a bar plot; an absent class is written with an empty iou."""
    numbers = [json_number(value) for value in iou_by_class.values()]
    write_csv(path, pd.DataFrame({"class": list(iou_by_class), "iou": pd.Series(numbers, dtype=float)}))


def write_per_image_confusion(path: str | Path, confusion: np.ndarray, index: np.ndarray,
                               tta_confusion: np.ndarray | None = None) -> None:
    """(N, 5, 5) counts per validation image (rows truth, columns prediction) and each image's ``index``.

    What ``marsseg compare`` and ``marsseg ensemble`` resample to compare runs on the same images.
    """
    arrays = {"confusion": np.asarray(confusion, dtype=np.int64), "index": np.asarray(index, dtype=np.int64)}
    if tta_confusion is not None:
        arrays["tta_confusion"] = np.asarray(tta_confusion, dtype=np.int64)
    save_npz(path, **arrays)


def read_per_image_confusion(path: str | Path) -> dict[str, np.ndarray]:
    from marsseg.datasets import read_npz

    arrays = read_npz(path)
    if "confusion" not in arrays or arrays["confusion"].ndim != 3 or arrays["confusion"].shape[1:] != (NUM_CLASSES, NUM_CLASSES):
        raise UserError(f"{path}: not a per-image confusion file (needs 'confusion' of shape (N, 5, 5))")
    return arrays


def write_reports(folder: str | Path, images: np.ndarray, truth: np.ndarray, pred: np.ndarray,
                  settings: dict, seed: int) -> dict[str, Path]:
    """Every evaluate report of one prediction of a labelled set; returns name -> path written."""
    folder = Path(folder)
    matrix = confusion_matrix(truth, pred)
    paths = {name: folder / name for name in
             ("confusion.csv", "confusion.json", "confusion.png", "per_class_iou.csv", "overlays.png")}
    write_confusion_csv(paths["confusion.csv"], *confusion_sample(truth, pred, settings["confusion_sample"], seed))
    write_confusion_json(paths["confusion.json"], matrix)
    ious = per_class_iou(matrix)
    plot_confusion(paths["confusion.png"], matrix, ious)
    write_per_class_iou_csv(paths["per_class_iou.csv"], {CLASS_NAMES[c]: ious[c] for c in SCORED_CLASSES})
    image_miou = per_image_miou(truth, pred)
    rows = overlay_rows(image_miou, settings["overlay_worst"], settings["overlay_random"], seed)
    plot_overlays(paths["overlays.png"], images, truth, pred, rows, image_miou, settings["overlay_worst"])
    return paths
