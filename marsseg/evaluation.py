"""What the evaluate stage shows a person: overlays, the confusion heatmap, and DVC plot data.

Colours are fixed per class so every figure of every run reads the same way.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from marsseg import CLASS_NAMES, NUM_CLASSES, SCORED_CLASSES
from marsseg.errors import UserError
from marsseg.metrics import confusion_matrix, json_number, per_class_iou, per_image_miou
from marsseg.predict import check_prediction_params

# RGB in [0, 1]: background black, soil tan, bedrock slate blue, sand yellow, big rock red-orange.
CLASS_COLOURS = np.array([
    [0.00, 0.00, 0.00],
    [0.76, 0.60, 0.42],
    [0.33, 0.42, 0.64],
    [0.95, 0.85, 0.30],
    [0.90, 0.30, 0.10],
])
ERROR_COLOURS = {"correct": (1.0, 1.0, 1.0), "wrong": (0.85, 0.0, 0.0), "ignored": (0.6, 0.6, 0.6)}
# Report settings of the ``evaluate`` params section, with their defaults.
DEFAULTS = {"overlay_worst": 4, "overlay_random": 4, "confusion_sample": 20000}


def colourize(mask: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) RGB."""
    return CLASS_COLOURS[mask]


def error_map(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB: labelled pixels white if right, red if wrong; unlabelled (class 0) grey."""
    rgb = np.empty((*truth.shape, 3))
    rgb[:] = ERROR_COLOURS["correct"]
    rgb[(truth != 0) & (truth != pred)] = ERROR_COLOURS["wrong"]
    rgb[truth == 0] = ERROR_COLOURS["ignored"]
    return rgb


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


def _legend_handles():
    from matplotlib.patches import Patch

    classes = [Patch(facecolor=CLASS_COLOURS[c], edgecolor="k", label=f"{c} {CLASS_NAMES[c]}") for c in range(NUM_CLASSES)]
    errors = [Patch(facecolor=colour, edgecolor="k", label=f"error map: {name}") for name, colour in ERROR_COLOURS.items()]
    return classes + errors


def plot_overlays(path: str | Path, images: np.ndarray, truth: np.ndarray, pred: np.ndarray,
                  rows: np.ndarray, image_miou: np.ndarray, n_worst: int) -> None:
    """Grid of image / truth / prediction / error map, one line per row in ``rows``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # 3-inch columns hold 2:1 images 1.5 in tall; the rest is titles and the legend.
    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 1.75 * len(rows) + 0.6), squeeze=False, layout="constrained")
    for line, (axis_row, row) in enumerate(zip(axes, rows)):
        tag = "worst" if line < n_worst else "sample"
        score = "no labels" if np.isnan(image_miou[row]) else f"mIoU {image_miou[row]:.3f}"
        panels = [(images[row], f"#{row} ({tag}, {score})"), (colourize(truth[row]), "truth"),
                  (colourize(pred[row]), "prediction"), (error_map(truth[row], pred[row]), "errors")]
        for axis, (picture, title) in zip(axis_row, panels):
            if picture.ndim == 2:  # the greyscale photo, on a fixed 0-255 scale rather than stretched
                axis.imshow(picture, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                axis.imshow(picture, interpolation="nearest")
            axis.set_title(title, fontsize=8)
            axis.axis("off")
    fig.legend(handles=_legend_handles(), loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    _save(fig, path)


def plot_confusion(path: str | Path, matrix: np.ndarray) -> None:
    """Heatmap of labelled truth rows (1-4) x predicted classes (0-4), shaded by row share, counts written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix)[list(SCORED_CLASSES)]
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    fig, axis = plt.subplots(figsize=(7, 4.5))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for r in range(counts.shape[0]):
        for c in range(counts.shape[1]):
            colour = "white" if shares[r, c] > 0.5 else "black"
            axis.text(c, r, f"{shares[r, c]:.1%}\n{counts[r, c]:,}", ha="center", va="center", fontsize=7, color=colour)
    axis.set_xticks(range(NUM_CLASSES), [f"{c} {CLASS_NAMES[c]}" for c in range(NUM_CLASSES)], fontsize=8)
    axis.set_yticks(range(len(SCORED_CLASSES)), [f"{c} {CLASS_NAMES[c]}" for c in SCORED_CLASSES], fontsize=8)
    axis.set_xlabel("predicted (0 on a labelled pixel is a miss)")
    axis.set_ylabel("truth (unlabelled pixels ignored)")
    ious = per_class_iou(matrix)
    axis.set_title("confusion, row-normalised | IoU " + ", ".join(
        f"{CLASS_NAMES[c]} {ious[c]:.3f}" if not np.isnan(ious[c]) else f"{CLASS_NAMES[c]} n/a" for c in SCORED_CLASSES),
        fontsize=8)
    fig.colorbar(image, ax=axis, fraction=0.03)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No timestamp in the PNG metadata: the same run gives the same bytes.
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def confusion_sample(truth: np.ndarray, pred: np.ndarray, n_pixels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded uniform sample of labelled pixels, (actual, predicted) class ids, for DVC's confusion plot."""
    labelled = np.flatnonzero(truth.ravel() != 0)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(labelled, size=min(n_pixels, labelled.size), replace=False))
    return truth.ravel()[chosen], pred.ravel()[chosen]


def write_confusion_csv(path: str | Path, actual: np.ndarray, predicted: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = np.array(CLASS_NAMES)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["actual", "predicted"])
        writer.writerows(zip(names[actual], names[predicted]))


def write_confusion_json(path: str | Path, matrix: np.ndarray) -> None:
    """Full-pixel confusion counts, rows truth and columns prediction, with the class names."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"classes": list(CLASS_NAMES), "rows": "truth", "columns": "prediction",
               "ignored_truth_class": 0, "counts": np.asarray(matrix).astype(int).tolist()}
    path.write_text(json.dumps(payload, indent=2) + "\n")


def write_per_class_iou_csv(path: str | Path, iou_by_class: dict[str, float]) -> None:
    """``class,iou`` rows for a bar plot; an absent class is written with an empty iou."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "iou"])
        for name, value in iou_by_class.items():
            number = json_number(value)
            writer.writerow([name, "" if number is None else number])


def validate_evaluate_params(settings: dict) -> dict:
    """The ``evaluate`` section with report defaults filled in (UserError naming a bad key)."""
    checked = {**DEFAULTS, **check_prediction_params(settings, "evaluate")}
    for key in DEFAULTS:
        value = settings.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"params.yaml: evaluate.{key} must be a non-negative integer, got {value!r}")
        checked[key] = value
    if checked["overlay_worst"] + checked["overlay_random"] == 0:
        raise UserError("params.yaml: evaluate.overlay_worst + evaluate.overlay_random must be at least 1 "
                        "(reports/overlays.png is a stage output)")
    return checked


def write_reports(folder: str | Path, images: np.ndarray, truth: np.ndarray, pred: np.ndarray,
                  settings: dict, seed: int) -> dict[str, Path]:
    """Every evaluate report of one prediction of a labelled set; returns name -> path written."""
    folder = Path(folder)
    matrix = confusion_matrix(truth, pred)
    paths = {name: folder / name for name in
             ("confusion.csv", "confusion.json", "confusion.png", "per_class_iou.csv", "overlays.png")}
    write_confusion_csv(paths["confusion.csv"], *confusion_sample(truth, pred, settings["confusion_sample"], seed))
    write_confusion_json(paths["confusion.json"], matrix)
    plot_confusion(paths["confusion.png"], matrix)
    ious = per_class_iou(matrix)
    write_per_class_iou_csv(paths["per_class_iou.csv"], {CLASS_NAMES[c]: ious[c] for c in SCORED_CLASSES})
    image_miou = per_image_miou(truth, pred)
    rows = overlay_rows(image_miou, settings["overlay_worst"], settings["overlay_random"], seed)
    plot_overlays(paths["overlays.png"], images, truth, pred, rows, image_miou, settings["overlay_worst"])
    return paths
