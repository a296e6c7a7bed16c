"""Pictures of the clean stage's decisions: the t-SNE map with removed rows marked by rule, and a
gallery of every removed image (so a person can check that no terrain was thrown away)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from marsseg.outliers import CleanReport  # noqa: E402

GALLERY_LIMIT = 200  # images drawn in removed.png; the title says when more were removed
GALLERY_COLUMNS = 8
KEPT_COLOUR = "#b0b0b0"
RULE_COLOURS = ("#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def plot_embedding(path: str | Path, report: CleanReport) -> None:
    """Every row on the t-SNE map: kept rows grey, removed rows coloured by the rule(s) that caught them."""
    table = report.map_table()
    fig, ax = plt.subplots(figsize=(8, 7))
    kept = table["rule"] == "kept"
    ax.scatter(table.x[kept], table.y[kept], s=4, c=KEPT_COLOUR, linewidths=0, label=f"kept ({int(kept.sum())})")
    labels = sorted(set(table["rule"][~kept]), key=lambda label: (label.count("+"), label))
    for colour, label in zip(_cycle(RULE_COLOURS, len(labels)), labels):
        rows = table["rule"] == label
        ax.scatter(table.x[rows], table.y[rows], s=14, c=colour, edgecolors="black", linewidths=0.3,
                   label=f"{label} ({int(rows.sum())})")
    ax.set_title(_map_title(report), fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=8, markerscale=1.5, framealpha=0.9)
    _save(fig, path)


def _map_title(report: CleanReport) -> str:
    n, removed = len(report.index), int(report.removed.sum())
    method = report.embedding
    if method.method == "tsne":
        how = f"t-SNE (perplexity {method.perplexity:.3g})"
    elif method.method == "pca":
        how = "first two principal components (too few rows for t-SNE)"
    else:
        how = "no map (all images have identical features)"
    return f"{n} training images, {how}: {removed} removed"


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
        ax.imshow(images[row], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        rules = report.rules_of(row)
        score = report.results[rules[0]].scores[row]
        ax.set_title(f"#{report.index[row]} {'+'.join(rules)} {score:.3g}", fontsize=6)
    if not shown:
        axes[0, 0].text(0, 0.5, "no rows removed", fontsize=12)
    total = len(order)
    title = f"{total} removed training images" if len(shown) == total else \
        f"{total} removed training images, {len(shown)} shown: those caught by one rule first"
    fig.suptitle(title + " - title: #ingested row, rule(s), score of the first rule", fontsize=9)
    _save(fig, path, tight_rect=(0, 0, 1, 1 - 0.35 / (rows * 1.05 + 0.6)))


def _gallery_order(report: CleanReport) -> list[int]:
    """Removed rows, those caught by a single rule first (they most need a human look), then by
    the order of the rules in clean.rules, then by row."""
    rule_order = {rule: position for position, rule in enumerate(report.results)}
    rows = np.flatnonzero(report.removed)
    key = [(len(report.rules_of(row)), rule_order[report.rules_of(row)[0]], row) for row in rows]
    return [int(row) for *_, row in sorted(key)]


def _cycle(colours: tuple[str, ...], count: int) -> list[str]:
    return [colours[i % len(colours)] for i in range(count)]


def _save(fig, path: str | Path, tight_rect=None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=tight_rect)
    # Fixed metadata: the same decisions give a byte-identical PNG (DVC caches it).
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
