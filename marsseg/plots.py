"""Every figure the pipeline draws, with one class palette, so every figure of every run reads the same way.

clean: ``plot_embedding`` (t-SNE map), ``plot_removed`` (gallery of removed images); augment:
``plot_augment_samples``; train: ``plot_history``; evaluate: ``plot_confusion``, ``plot_overlays``.
Each takes the output path first and writes through ``marsseg.io.save_figure`` (atomic, fixed metadata).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from marsseg import CLASS_NAMES, NUM_CLASSES, SCORED_CLASSES  # noqa: E402
from marsseg.io import save_figure  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd

# ``CleanReport`` (marsseg.clean) and ``AugmentResult`` (marsseg.augment) are named in annotations only, not
# imported: a stage's DVC deps are the modules it imports, and a change to the clean rules must not make
# the trained model stale.

# The class palette, RGB in [0, 1]: background black, soil tan, bedrock slate blue, sand yellow,
# big rock red-orange. Nothing else in the project defines a class colour.
CLASS_COLOURS = np.array([
    [0.00, 0.00, 0.00],
    [0.76, 0.60, 0.42],
    [0.33, 0.42, 0.64],
    [0.95, 0.85, 0.30],
    [0.90, 0.30, 0.10],
])
ERROR_COLOURS = {"correct": (1.0, 1.0, 1.0), "wrong": (0.85, 0.0, 0.0), "ignored": (0.6, 0.6, 0.6)}
# The clean stage colours rows by the rule that removed them (rules, not classes).
KEPT_COLOUR = "#b0b0b0"
RULE_COLOURS = ("#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
GALLERY_LIMIT = 200  # images drawn in removed.png; the title says when more were removed
GALLERY_COLUMNS = 8


def colourize(mask: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) RGB in the class palette."""
    return CLASS_COLOURS[mask]


def error_map(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB: labelled pixels white if right, red if wrong; unlabelled (class 0) grey."""
    rgb = np.empty((*truth.shape, 3))
    rgb[:] = ERROR_COLOURS["correct"]
    rgb[(truth != 0) & (truth != pred)] = ERROR_COLOURS["wrong"]
    rgb[truth == 0] = ERROR_COLOURS["ignored"]
    return rgb


def _show_image(axis, image: np.ndarray) -> None:
    """A greyscale photo on a fixed 0-255 scale rather than stretched."""
    axis.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")


def _class_legend_handles(with_errors: bool):
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=CLASS_COLOURS[c], edgecolor="k", label=f"{c} {CLASS_NAMES[c]}") for c in range(NUM_CLASSES)]
    if with_errors:
        handles += [Patch(facecolor=colour, edgecolor="k", label=f"error map: {name}") for name, colour in ERROR_COLOURS.items()]
    return handles


# --------------------------------------------------------------------------- clean

def plot_embedding(path: str | Path, report: CleanReport) -> None:
    """Every row on the t-SNE map: kept rows grey, removed rows coloured by the rule(s) that caught them."""
    table = report.map_table()
    fig, ax = plt.subplots(figsize=(8, 7))
    kept = table["rule"] == "kept"
    ax.scatter(table.x[kept], table.y[kept], s=4, c=KEPT_COLOUR, linewidths=0, label=f"kept ({int(kept.sum())})")
    labels = sorted(set(table["rule"][~kept]), key=lambda label: (label.count("+"), label))
    for position, label in enumerate(labels):
        rows = table["rule"] == label
        ax.scatter(table.x[rows], table.y[rows], s=14, c=RULE_COLOURS[position % len(RULE_COLOURS)],
                   edgecolors="black", linewidths=0.3, label=f"{label} ({int(rows.sum())})")
    ax.set_title(_map_title(report), fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=8, markerscale=1.5, framealpha=0.9)
    fig.tight_layout()
    save_figure(fig, path)


def _map_title(report: CleanReport) -> str:
    n, removed = len(report.index), int(report.removed.sum())
    method = report.embedding
    if method.method == "tsne":
        how = f"t-SNE (perplexity {method.perplexity:.3g})"
    elif method.method == "pca":
        how = "first two principal components (too few rows for t-SNE)"
    else:
        how = "no map (all images have identical features)"
    among = f" among {report.references} test images" if report.references else ""
    return f"{n} training images{among}, {how}: {removed} removed"


def plot_removed(path: str | Path, images: np.ndarray, report: CleanReport, limit: int = GALLERY_LIMIT) -> None:
    """A gallery of the removed images (at most ``limit``), each titled with row, rule(s) and score."""
    order = _gallery_order(report)
    shown = order[:limit]
    columns = GALLERY_COLUMNS
    rows = max(1, -(-len(shown) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.7, rows * 1.05 + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, row in zip(axes.ravel(), shown):
        _show_image(ax, images[row])
        rules = report.rules_of(row)
        score = report.results[rules[0]].scores[row]
        ax.set_title(f"#{report.index[row]} {'+'.join(rules)} {score:.3g}", fontsize=6)
    if not shown:
        axes[0, 0].text(0, 0.5, "no rows removed", fontsize=12)
    total = len(order)
    title = f"{total} removed training images" if len(shown) == total else \
        f"{total} removed training images, {len(shown)} shown: those caught by one rule first"
    fig.suptitle(title + " - title: #ingested row, rule(s), score of the first rule", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (rows * 1.05 + 0.6)))
    save_figure(fig, path)


def _gallery_order(report: CleanReport) -> list[int]:
    """Removed rows, those caught by a single rule first (they most need a human look), then by
    the order of the rules in clean.rules, then by row."""
    rule_order = {rule: position for position, rule in enumerate(report.results)}
    rows = np.flatnonzero(report.removed)
    key = [(len(report.rules_of(row)), rule_order[report.rules_of(row)[0]], row) for row in rows]
    return [int(row) for *_, row in sorted(key)]


# --------------------------------------------------------------------------- augment

def plot_augment_samples(path: str | Path, result: AugmentResult, sources: int = 6, copies_shown: int = 4) -> None:
    """Image rows over colour-coded mask rows: each source's original, then some of its copies.

    Half the sources show big rock (when the set has any), so the rare-class recipe is visible.
    """
    rare_sources = np.flatnonzero(result.rare)[: sources // 2]
    common_sources = np.flatnonzero(~result.rare)[: sources - len(rare_sources)]
    chosen = np.concatenate([rare_sources, common_sources])
    columns = 1 + copies_shown
    fig, axes = plt.subplots(2 * len(chosen), columns, figsize=(2.2 * columns, 2.4 * len(chosen)), squeeze=False)
    for r, source in enumerate(chosen):
        for c in range(columns):
            image_axis, mask_axis = axes[2 * r, c], axes[2 * r + 1, c]
            image_axis.axis("off")
            mask_axis.axis("off")
            if c > result.copies[source]:
                continue
            row = result.offsets[source] + c
            image_axis.imshow(result.data.images[row], cmap="gray", vmin=0, vmax=255)
            mask_axis.imshow(colourize(result.data.masks[row]))
            label = "original" if c == 0 else f"copy {c}"
            tag = " (big rock)" if result.rare[source] else ""
            image_axis.set_title(f"row {result.data.index[row]} {label}{tag}", fontsize=7)
    fig.suptitle("Augmented samples: image over mask (black background, red big rock)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)


# --------------------------------------------------------------------------- train

def plot_history(path: str | Path, history: pd.DataFrame) -> None:
    """Loss, mean IoU (classes 1-4) and learning rate per epoch."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    axes[0].plot(history.epoch, history["loss"], label="train")
    if "val_loss" in history:
        axes[0].plot(history.epoch, history["val_loss"], label="validation")
    axes[0].set_title("loss")
    axes[0].legend()
    for column, label in (("miou", "train"), ("val_miou", "validation")):
        if column in history:
            axes[1].plot(history.epoch, history[column], label=label)
    axes[1].set_title("mean IoU, classes 1-4")
    axes[1].legend()
    axes[2].plot(history.epoch, history["learning_rate"])
    axes[2].set_yscale("log")
    axes[2].set_title("learning rate")
    for axis in axes:
        axis.set_xlabel("epoch")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


# --------------------------------------------------------------------------- evaluate

def plot_overlays(path: str | Path, images: np.ndarray, truth: np.ndarray, pred: np.ndarray,
                  rows: np.ndarray, image_miou: np.ndarray, n_worst: int) -> None:
    """Grid of image / truth / prediction / error map, one line per row in ``rows``."""
    # 3-inch columns hold 2:1 images 1.5 in tall; the rest is titles and the legend.
    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 1.75 * len(rows) + 0.6), squeeze=False, layout="constrained")
    for line, (axis_row, row) in enumerate(zip(axes, rows)):
        tag = "worst" if line < n_worst else "sample"
        score = "no labels" if np.isnan(image_miou[row]) else f"mIoU {image_miou[row]:.3f}"
        panels = [(images[row], f"#{row} ({tag}, {score})"), (colourize(truth[row]), "truth"),
                  (colourize(pred[row]), "prediction"), (error_map(truth[row], pred[row]), "errors")]
        for axis, (picture, title) in zip(axis_row, panels):
            if picture.ndim == 2:
                _show_image(axis, picture)
            else:
                axis.imshow(picture, interpolation="nearest")
            axis.set_title(title, fontsize=8)
            axis.axis("off")
    fig.legend(handles=_class_legend_handles(with_errors=True), loc="outside lower center", ncol=4, fontsize=8,
               frameon=False)
    save_figure(fig, path)


def plot_confusion(path: str | Path, matrix: np.ndarray, ious: np.ndarray) -> None:
    """Heatmap of labelled truth rows (1-4) x predicted classes (0-4), shaded by row share, counts written in.

    ``ious``: per-class IoU (index = class id, NaN where absent), shown in the title.
    """
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
    axis.set_title("confusion, row-normalised | IoU " + ", ".join(
        f"{CLASS_NAMES[c]} {ious[c]:.3f}" if not np.isnan(ious[c]) else f"{CLASS_NAMES[c]} n/a" for c in SCORED_CLASSES),
        fontsize=8)
    fig.colorbar(image, ax=axis, fraction=0.03)
    fig.tight_layout()
    save_figure(fig, path)
