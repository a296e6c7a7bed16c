"""Finding the training rows that are not Mars terrain, each with the rule that caught it.

The course data (and the AI4Mars benchmark built like it) hides a few percent of unrelated
photographs among the terrain images, all carrying one and the same mask. Three rules find such
rows, each switchable in ``clean.rules``:

``embedding`` (image content only)
    Each image becomes a vector of cheap statistics in named groups (a coarse thumbnail, intensity
    percentiles, grey-level histogram, gradient energy, local variance, contrast-normalised structure
    of the whole picture and of its lower half, Fourier band energies, and the flat areas and
    straight edges of the lower half); every group is standardised to the same total weight, reduced
    by PCA and laid out in 2-D by t-SNE.
    The map *proposes* groups: its connected pieces when neighbouring points are linked up to
    ``group_scales`` times the map's typical neighbour spacing, tried at several scales so that a
    group is found whether it sits close to the terrain or far away, whole or split. Groups holding
    at most ``max_group_fraction`` of the rows are candidates.
    Feature space *confirms* them: t-SNE pulls apart any dense sub-population (real horizon views
    and rover-hardware shots form islands too), so a candidate is removed only when its rows lie far
    from every row outside the group in the PCA features. Score (``isolation``): the group's median
    distance to the nearest row outside it, in units of the median nearest-neighbour distance of
    the data set. A row is removed when that is at least ``min_isolation`` and its own distance to
    the nearest outside row is at least ``min_member_isolation`` (which spares a terrain row that
    the map merely placed next to an outlier group). Rows already caught stop counting as "outside"
    and isolation is measured again, so two outlier groups side by side do not shield each other.
    Limits: a non-terrain picture whose statistics resemble unusual terrain (a noisy, low-contrast
    scene of flat tones next to hazy, rocky or hardware-filled terrain views) can stay. On synthetic
    data sets this rule alone finds 94% of the injected rows on average (worst seed 75%; the
    pipeline's own data set 100%, ``benchmarks/clean_synthetic.py``), so keep ``shared_mask`` on with it.
``shared_mask``
    Masks repeated byte for byte in more than ``max_mask_repeats`` rows. Masks with fewer than
    ``min_mask_classes`` labelled classes are exempt: an all-soil mask recurs naturally.
    Score: how many rows share the mask.
``degenerate``
    Flat images (standard deviation below ``min_image_std`` grey levels), images whose 1st to 99th
    percentile span is below ``min_image_range`` grey levels, and masks that are all background
    (nothing to learn from). Score: the failed checks as a sum of flags, 1 flat image, 2 narrow
    range, 4 empty mask.

A row caught by several rules is reported once per rule and removed once.

Small or odd inputs never end in a traceback; each fallback is announced with a ``CleanWarning``:
with fewer than ``min_embedding_rows`` rows, or when every image has the same features, there is no
t-SNE map (the first two principal components, or zeros, stand in for the picture) and the
``embedding`` rule is skipped; a perplexity too large for the row count is lowered to (rows - 1) / 3;
non-finite feature values are replaced by the column median.
"""
from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import pandas as pd
import scipy.fft
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from marsseg import IMAGE_SHAPE
from marsseg.datasets import LabelledSet
from marsseg.errors import UserError
from marsseg.params import reject_unknown_keys

FEATURE_CHUNK = 1024  # images per feature batch: bounds memory, does not change the result
THUMBNAIL_BLOCK = (8, 8)  # 64x128 -> 8x16 thumbnail
LOCAL_BLOCK = (4, 4)  # patch size for local variance
STRUCTURE_ROWS = IMAGE_SHAPE[0] // 2  # structure statistics read rows from here down (the ground)
FFT_BAND_EDGES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.71)  # radial frequency, cycles per pixel
PERCENTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
FLAT_GRADIENT_LEVELS = (0.005, 0.01, 0.02, 0.05)  # "flat": smoothed gradient below these x picture std
STRAIGHT_EDGE_RANK = 3  # the 3rd straightest column / row: one straight horizon or rover edge is terrain too
Z_CLIP = 10.0  # standardised features are clipped: one extreme statistic must not own the geometry
MAP_NEIGHBOURS = 5  # the map's typical spacing: median distance to the 5th nearest point
FEATURE_NEIGHBOURS = 30  # nearest feature-space rows searched before an exact search
ISOLATION_PASSES = 3  # re-measurements of isolation from the rows not yet caught


class CleanWarning(UserWarning):
    """A documented fallback the clean stage took (small input, degenerate features)."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class CleanConfig:
    rules: tuple[str, ...] = ("embedding", "shared_mask", "degenerate")
    pca_components: int = 30
    perplexity: float = 20.0
    tsne_iterations: int = 500
    n_jobs: int = 1
    min_embedding_rows: int = 10
    group_scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
    max_group_fraction: float = 0.1
    min_isolation: float = 3.0
    min_member_isolation: float = 2.0
    max_mask_repeats: int = 5
    min_mask_classes: int = 2
    min_image_std: float = 1.0
    min_image_range: float = 4.0

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "CleanConfig":
        """Build from the ``clean`` group of params.yaml, naming any bad key."""
        reject_unknown_keys("clean", params, cls.__dataclass_fields__)
        values = dict(params)
        for key in ("rules", "group_scales"):
            if key in values:
                if not isinstance(values[key], (list, tuple)):
                    raise UserError(f"params.yaml: clean.{key} must be a list, got {values[key]!r}")
                values[key] = tuple(values[key])
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        unknown = [rule for rule in self.rules if rule not in RULES]
        if unknown:
            raise UserError(f"params.yaml: clean.rules has unknown rule '{unknown[0]}' (known: {', '.join(RULES)})")
        if len(set(self.rules)) != len(self.rules):
            raise UserError(f"params.yaml: clean.rules lists a rule twice: {list(self.rules)}")
        _check_int(self.pca_components, "pca_components", 2, 512)
        _check_number(self.perplexity, "perplexity", 1.0, 500.0)
        _check_int(self.tsne_iterations, "tsne_iterations", 250, 10_000)
        _check_int(self.n_jobs, "n_jobs", 1, 256)
        _check_int(self.min_embedding_rows, "min_embedding_rows", 4, 10_000)
        if not self.group_scales:
            raise UserError("params.yaml: clean.group_scales must list at least one scale")
        for scale in self.group_scales:
            _check_number(scale, "group_scales", 0.01, 100.0)
        _check_number(self.max_group_fraction, "max_group_fraction", 0.0, 0.5)
        _check_number(self.min_isolation, "min_isolation", 0.0, 1000.0)
        _check_number(self.min_member_isolation, "min_member_isolation", 0.0, 1000.0)
        _check_int(self.max_mask_repeats, "max_mask_repeats", 1, 10**9)
        _check_int(self.min_mask_classes, "min_mask_classes", 1, 4)
        _check_number(self.min_image_std, "min_image_std", 0.0, 255.0)
        _check_number(self.min_image_range, "min_image_range", 0.0, 255.0)


def _check_int(value, key: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise UserError(f"params.yaml: clean.{key} must be an integer from {low} to {high}, got {value!r}")


def _check_number(value, key: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
            or not low <= value <= high:
        raise UserError(f"params.yaml: clean.{key} must be a number from {low} to {high}, got {value!r}")


# --------------------------------------------------------------------------- image features


def _intensity_counts(images: np.ndarray) -> np.ndarray:
    """Per-image 256-level histograms, (n, 256): exact percentiles of uint8 images come from these."""
    n = len(images)
    flat = images.reshape(n, -1).astype(np.int64)
    offsets = (np.arange(n, dtype=np.int64) * 256)[:, None]
    return np.bincount((flat + offsets).ravel(), minlength=n * 256).reshape(n, 256)


def _percentiles(counts: np.ndarray, quantiles) -> np.ndarray:
    """Grey levels (0-255) at the given quantiles, from 256-level histograms."""
    cdf = np.cumsum(counts, axis=1) / counts.sum(axis=1, keepdims=True)
    return np.stack([(cdf < q).sum(axis=1) for q in quantiles], axis=1).astype(np.float32)


def _structure(images: np.ndarray) -> np.ndarray:
    """Contrast-normalised structure statistics of (n, h, w) uint8 pictures: piecewise-flat pictures
    (paper, painted walls, shapes) have most gradients near zero, a few hard edges and a spiky
    histogram; terrain has grain everywhere and a histogram close to a Gaussian."""
    n, h, w = images.shape
    x = images.astype(np.float32)
    std = x.std(axis=(1, 2))
    spread = np.maximum(std, 1.0)[:, None]
    grad = (np.abs(np.diff(x, axis=2))[:, :-1, :] + np.abs(np.diff(x, axis=1))[:, :, :-1]).reshape(n, -1) / spread
    lh, lw = LOCAL_BLOCK
    local = np.sort(x.reshape(n, h // lh, lh, w // lw, lw).std(axis=(2, 4)).reshape(n, -1), axis=1) / spread
    m = local.shape[1]
    quantiles = np.quantile(grad, (0.1, 0.25, 0.5, 0.9, 0.99), axis=1).T
    return np.column_stack([
        quantiles,
        np.log((quantiles[:, 4] + 1e-3) / (quantiles[:, 2] + 1e-3)),  # edge sharpness
        (grad < 0.05).mean(1),
        local[:, m // 10], local[:, m // 4], (local < 0.05).mean(1),
        _histogram_negentropy(_intensity_counts(images), std),
    ])


def _flatness(images: np.ndarray) -> np.ndarray:
    """Flat areas and straight edges of (n, h, w) uint8 pictures, both measured relative to the
    picture's contrast: drawn shapes, walls and pages have most of their area flat (only sensor noise
    moves the 3x3-smoothed gradient) and long edges that stay straight across whole rows or columns;
    terrain ground has grain at every place and edges that wander."""
    x = images.astype(np.float32)
    std = np.maximum(x.std(axis=(1, 2)), 1.0)[:, None, None]
    smooth = ndi.uniform_filter(x, size=(1, 3, 3))
    magnitude = np.hypot(np.diff(smooth, axis=2)[:, :-1, :], np.diff(smooth, axis=1)[:, :, :-1])
    flat = [(magnitude < level * std).mean(axis=(1, 2)) for level in FLAT_GRADIENT_LEVELS]
    grad_x, grad_y = np.diff(x, axis=2), np.diff(x, axis=1)
    # An edge straight along a column adds its steps up over the rows; texture's steps cancel.
    columns = np.abs(grad_x.sum(axis=1)) / (np.abs(grad_x).sum(axis=1) + 1e-6)
    rows = np.abs(grad_y.sum(axis=2)) / (np.abs(grad_y).sum(axis=2) + 1e-6)
    rank = STRAIGHT_EDGE_RANK
    return np.column_stack(flat + [np.sort(columns, axis=1)[:, -rank], np.sort(rows, axis=1)[:, -rank]])


def _histogram_negentropy(counts: np.ndarray, std: np.ndarray) -> np.ndarray:
    """How far the grey-level entropy falls short of a Gaussian's with the same spread: large for a
    picture of a few flat tones (a spiky histogram), near zero for grainy terrain."""
    p = counts / counts.sum(axis=1, keepdims=True)
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
    gaussian = 0.5 * np.log(2 * np.pi * np.e * np.maximum(std, 0.5) ** 2)
    return gaussian - entropy


def _radial_bands() -> list[np.ndarray]:
    fy = np.fft.fftfreq(IMAGE_SHAPE[0])[:, None]
    fx = np.fft.rfftfreq(IMAGE_SHAPE[1])[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    return [(radius >= lo) & (radius < hi) for lo, hi in zip(FFT_BAND_EDGES[:-1], FFT_BAND_EDGES[1:])]


def _chunk_features(images: np.ndarray, workers: int) -> dict[str, np.ndarray]:
    n, (h, w) = len(images), IMAGE_SHAPE
    x = images.astype(np.float32) / 255.0
    counts = _intensity_counts(images)
    pixels_per_image = h * w
    mean, std = x.mean(axis=(1, 2)), x.std(axis=(1, 2))
    extremes = np.column_stack([counts[:, :3].sum(1), counts[:, -3:].sum(1)]) / pixels_per_image

    bh, bw = THUMBNAIL_BLOCK
    thumbnail = x.reshape(n, h // bh, bh, w // bw, bw).mean(axis=(2, 4)).reshape(n, -1)

    grad_x, grad_y = np.abs(np.diff(x, axis=2)), np.abs(np.diff(x, axis=1))
    grad = (grad_x[:, :-1, :] + grad_y[:, :, :-1]).reshape(n, -1)
    gradient = np.column_stack([
        grad_x.mean(axis=(1, 2)), grad_y.mean(axis=(1, 2)), grad.mean(1), grad.std(1),
        (grad < 1.5 / 255).mean(1),  # flat areas: paper, sky, painted shapes
        (grad > 0.1).mean(1),  # hard edges
    ])

    lh, lw = LOCAL_BLOCK
    local = np.sort(x.reshape(n, h // lh, lh, w // lw, lw).std(axis=(2, 4)).reshape(n, -1), axis=1)
    m = local.shape[1]
    local_variance = np.column_stack([local.mean(1), local.std(1), local[:, m // 10], local[:, m // 2],
                                      local[:, 9 * m // 10]])

    power = np.abs(scipy.fft.rfft2(x - mean[:, None, None], workers=workers)) ** 2
    total = power.reshape(n, -1).sum(1) + 1e-12
    bands = np.column_stack([power[:, band].sum(1) / total for band in _radial_bands()])

    return {
        "thumbnail": thumbnail,
        "intensity": np.column_stack([mean, std, _percentiles(counts, PERCENTILES) / 255.0, extremes]),
        # Square roots make histogram distances Hellinger-like: empty bins do not blow up.
        "histogram": np.sqrt(counts.reshape(n, 16, 16).sum(2) / pixels_per_image),
        "gradient": gradient,
        "local_variance": local_variance,
        "structure": _structure(images),
        # Again for the lower half alone: the ground, textured in every terrain view, whereas the
        # upper half may be smooth sky that looks as flat as a painted wall.
        "ground_structure": _structure(images[:, STRUCTURE_ROWS:, :]),
        "spectrum": np.log(bands + 1e-6),
        # The ground only: flat sky in a terrain view must not look like a painted wall.
        "ground_flatness": _flatness(images[:, STRUCTURE_ROWS:, :]),
    }


def image_features(images: np.ndarray, workers: int = 1) -> dict[str, np.ndarray]:
    """Named groups of per-image statistics, each (n, d) float64."""
    chunks = [_chunk_features(images[start:start + FEATURE_CHUNK], workers)
              for start in range(0, len(images), FEATURE_CHUNK)]
    return {name: np.concatenate([c[name] for c in chunks]).astype(np.float64) for name in chunks[0]}


def standardise(groups: Mapping[str, np.ndarray]) -> np.ndarray:
    """One (n, d) matrix: each column centred on its median, scaled by its spread and clipped; each
    group scaled so that it carries the same total weight whatever its width (the thumbnail's 128
    columns must not drown the six gradient statistics)."""
    columns = []
    for name, values in groups.items():
        values = _finite(values, name)
        spread = values.std(axis=0)
        spread = np.where(spread > 1e-9, spread, 1.0)  # a constant column stays 0
        z = np.clip((values - np.median(values, axis=0)) / spread, -Z_CLIP, Z_CLIP)
        columns.append(z / np.sqrt(values.shape[1]))
    return np.hstack(columns)


def _finite(values: np.ndarray, name: str) -> np.ndarray:
    bad = ~np.isfinite(values)
    if not bad.any():
        return values
    rows = int(bad.any(axis=1).sum())
    warnings.warn(f"{rows} image(s) gave non-finite '{name}' features; replaced by the column median",
                  CleanWarning, stacklevel=3)
    values = values.copy()
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled just below
        medians = np.nanmedian(np.where(bad, np.nan, values), axis=0)
    medians = np.where(np.isfinite(medians), medians, 0.0)
    values[bad] = np.broadcast_to(medians, values.shape)[bad]
    return values


# --------------------------------------------------------------------------- PCA and t-SNE


@dataclass
class Embedding:
    features: np.ndarray  # (n, k) PCA features the embedding rule measures isolation in
    xy: np.ndarray  # (n, 2) coordinates to draw
    method: str  # "tsne", or the fallback: "pca" (too few rows) or "none" (identical features)
    perplexity: float | None = None  # the perplexity t-SNE used (None when it did not run)

    @property
    def is_map(self) -> bool:
        return self.method == "tsne"


def reduce(features: np.ndarray, components: int, seed: int) -> np.ndarray:
    """PCA to at most ``components`` dimensions (fewer when there are fewer rows or columns)."""
    n, d = features.shape
    k = min(components, n, d)
    if k < 1 or not np.ptp(features, axis=0).any():
        return np.zeros((n, max(k, 1)))
    return PCA(n_components=k, svd_solver="full", random_state=seed).fit_transform(features)


def embed(features: np.ndarray, config: CleanConfig, seed: int) -> Embedding:
    """The 2-D t-SNE map of the PCA features, or a documented fallback."""
    n = len(features)
    if not np.ptp(features, axis=0).any():
        warnings.warn(f"all {n} images have identical features: no t-SNE map, the embedding rule is skipped",
                      CleanWarning, stacklevel=2)
        return Embedding(features, np.zeros((n, 2)), "none")
    if n < config.min_embedding_rows:
        warnings.warn(f"{n} rows is below clean.min_embedding_rows={config.min_embedding_rows}: no t-SNE map "
                      "(the first two principal components are drawn instead), the embedding rule is skipped",
                      CleanWarning, stacklevel=2)
        xy = np.zeros((n, 2))
        xy[:, :min(2, features.shape[1])] = features[:, :2]
        return Embedding(features, xy, "pca")
    perplexity = float(config.perplexity)
    limit = (n - 1) / 3
    if perplexity > limit:
        warnings.warn(f"clean.perplexity={config.perplexity} is too large for {n} rows; using {limit:.1f} "
                      "((rows - 1) / 3)", CleanWarning, stacklevel=2)
        perplexity = limit
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                max_iter=config.tsne_iterations, method="barnes_hut", random_state=seed, n_jobs=config.n_jobs)
    return Embedding(features, tsne.fit_transform(features), "tsne", perplexity)


# --------------------------------------------------------------------------- rules


@dataclass
class Evidence:
    """Everything a rule may look at."""
    images: np.ndarray
    masks: np.ndarray
    embedding: Embedding


@dataclass
class RuleResult:
    flagged: np.ndarray  # (n,) bool
    scores: np.ndarray  # (n,) float; meaningful where flagged


def embedding_rule(evidence: Evidence, config: CleanConfig) -> RuleResult:
    """Small groups of the t-SNE map that lie far from every other row in feature space."""
    n = len(evidence.images)
    if not evidence.embedding.is_map:  # embed() has announced why
        return RuleResult(np.zeros(n, bool), np.zeros(n))
    scores = isolation_scores(evidence.embedding.features, evidence.embedding.xy, config)
    return RuleResult(scores >= config.min_isolation, scores)


def isolation_scores(features: np.ndarray, xy: np.ndarray, config: CleanConfig) -> np.ndarray:
    """Per row, the highest isolation of any small map group it belongs to (0 if none qualifies).

    Isolation is measured from the rows that stay: outlier groups often sit next to each other
    (two kinds of non-terrain pictures), so after each pass the rows already caught no longer count
    as "outside", until the caught set stops changing (at most ``ISOLATION_PASSES`` passes).
    """
    n = len(features)
    map_unit = _typical_spacing(xy, MAP_NEIGHBOURS)
    k = min(FEATURE_NEIGHBOURS, n - 1)
    distances, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
    distances, neighbours = distances[:, 1:], neighbours[:, 1:]
    positive = distances[:, 0][distances[:, 0] > 0]
    if map_unit <= 0 or positive.size == 0:
        warnings.warn("the embedding rule is skipped: most rows are exact duplicates of each other",
                      CleanWarning, stacklevel=3)
        return np.zeros(n)
    feature_unit = float(np.median(positive))
    groupings = _map_groups(xy, map_unit, config)

    caught = np.zeros(n, bool)
    for _ in range(ISOLATION_PASSES):
        scores = np.zeros(n)
        for labels, candidate in groupings:
            outside = _distance_outside(features, labels, candidate, caught, distances, neighbours) / feature_unit
            group = _group_medians(labels, outside)[labels]
            member_ok = candidate & (outside >= config.min_member_isolation)
            scores = np.maximum(scores, np.where(member_ok, group, 0.0))
        now_caught = scores >= config.min_isolation
        if np.array_equal(now_caught, caught):
            break
        caught = now_caught
    return scores


def _map_groups(xy: np.ndarray, map_unit: float, config: CleanConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per scale: group labels of the map's single-linkage pieces, and which rows sit in a small one."""
    n = len(xy)
    edge_rows, edge_cols, edge_lengths = _map_edges(xy)
    groupings = []
    for scale in config.group_scales:
        keep = edge_lengths <= scale * map_unit
        graph = coo_matrix((np.ones(int(keep.sum())), (edge_rows[keep], edge_cols[keep])), shape=(n, n))
        _, labels = connected_components(graph, directed=False)
        candidate = np.bincount(labels)[labels] <= config.max_group_fraction * n
        if candidate.any():
            groupings.append((labels, candidate))
    return groupings


def _typical_spacing(xy: np.ndarray, k: int) -> float:
    k = min(k, len(xy) - 1)
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy)
    return float(np.median(distances[:, k]))


def _map_edges(xy: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges of the map's k-nearest-neighbour graph: thresholding them gives single-linkage groups."""
    k = min(k, len(xy) - 1)
    distances, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy)
    rows = np.repeat(np.arange(len(xy)), k)
    return rows, neighbours[:, 1:].ravel(), distances[:, 1:].ravel()


def _distance_outside(features, labels, candidate, caught, distances, neighbours) -> np.ndarray:
    """Each candidate row's feature distance to the nearest row outside its group that is not
    already caught (other rows: 0)."""
    n = len(features)
    counted = (labels[neighbours] != labels[:, None]) & ~caught[neighbours]
    outside = distances[np.arange(n), np.argmax(counted, axis=1)]
    # Rows with no counted row among their searched neighbours: search all counted rows.
    unresolved = candidate & ~counted.any(axis=1)
    for group in np.unique(labels[unresolved]):
        rows = np.flatnonzero(unresolved & (labels == group))
        pool = (labels != group) & ~caught
        outside[rows] = _min_distance(features[rows], features[pool]) if pool.any() else 0.0
    return np.where(candidate, outside, 0.0)


def _min_distance(a: np.ndarray, b: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Distance from each row of ``a`` to its nearest row of ``b``."""
    b_sq = (b**2).sum(1)
    result = np.empty(len(a))
    for start in range(0, len(a), chunk):
        block = a[start:start + chunk]
        sq = (block**2).sum(1)[:, None] + b_sq[None, :] - 2 * block @ b.T
        result[start:start + chunk] = np.sqrt(np.maximum(sq.min(axis=1), 0.0))
    return result


def _group_medians(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Median of ``values`` within each label 0..max (vectorised: sort by label, then value)."""
    order = np.lexsort((values, labels))
    ordered = values[order]
    counts = np.bincount(labels)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    low, high = starts + (counts - 1) // 2, starts + counts // 2
    return (ordered[low] + ordered[high]) / 2


def shared_mask_rule(evidence: Evidence, config: CleanConfig) -> RuleResult:
    """Masks repeated byte for byte in more than ``max_mask_repeats`` rows (multi-class masks only)."""
    masks = evidence.masks
    n = len(masks)
    flat = np.ascontiguousarray(masks.reshape(n, -1))
    keys = flat.view(np.dtype((np.void, flat.shape[1]))).ravel()
    _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
    labelled_classes = np.array([np.count_nonzero(np.bincount(flat[row], minlength=256)[1:]) for row in first])
    suspicious = (counts > config.max_mask_repeats) & (labelled_classes >= config.min_mask_classes)
    flagged = suspicious[inverse]
    return RuleResult(flagged, np.where(flagged, counts[inverse], 0).astype(float))


DEGENERATE_FLAT, DEGENERATE_NARROW, DEGENERATE_EMPTY_MASK = 1, 2, 4


def degenerate_rule(evidence: Evidence, config: CleanConfig) -> RuleResult:
    """Flat images, images with a very narrow grey range, and masks that are all background."""
    images, masks = evidence.images, evidence.masks
    n = len(images)
    std = images.reshape(n, -1).std(axis=1)
    low, high = _percentiles(_intensity_counts(images), (0.01, 0.99)).T
    code = (DEGENERATE_FLAT * (std < config.min_image_std)
            + DEGENERATE_NARROW * ((high - low) < config.min_image_range)
            + DEGENERATE_EMPTY_MASK * (masks.reshape(n, -1).max(axis=1) == 0))
    return RuleResult(code > 0, code.astype(float))


RULES: dict[str, Callable[[Evidence, CleanConfig], RuleResult]] = {
    "embedding": embedding_rule,
    "shared_mask": shared_mask_rule,
    "degenerate": degenerate_rule,
}


# --------------------------------------------------------------------------- the whole filter


@dataclass
class CleanReport:
    index: np.ndarray  # (n,) ingested row of each input row
    results: dict[str, RuleResult]  # per enabled rule, in clean.rules order
    embedding: Embedding
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def removed(self) -> np.ndarray:
        """(n,) bool: caught by at least one rule."""
        caught = np.zeros(len(self.index), bool)
        for result in self.results.values():
            caught |= result.flagged
        return caught

    def rules_of(self, row: int) -> list[str]:
        return [rule for rule, result in self.results.items() if result.flagged[row]]

    def table(self) -> pd.DataFrame:
        """``index,rule,score``: one line per (removed row, rule that caught it), by index then rule."""
        parts = [pd.DataFrame({"index": self.index[r.flagged], "rule": rule, "score": r.scores[r.flagged],
                               "order": position})
                 for position, (rule, r) in enumerate(self.results.items())]
        table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            {"index": [], "rule": [], "score": [], "order": []})
        table = table.sort_values(["index", "order"], kind="stable").drop(columns="order")
        return table.astype({"index": np.int64, "score": float}).reset_index(drop=True)

    def map_table(self) -> pd.DataFrame:
        """``x,y,outlier,rule`` for every input row: ``rule`` joins the catching rules with '+', or 'kept'."""
        labels = ["+".join(self.rules_of(row)) or "kept" for row in range(len(self.index))]
        return pd.DataFrame({"x": self.embedding.xy[:, 0].round(4), "y": self.embedding.xy[:, 1].round(4),
                             "outlier": self.removed.astype(int), "rule": labels})

    def metrics(self) -> dict[str, float | int]:
        removed = int(self.removed.sum())
        metrics: dict[str, float | int] = {"rows_in": len(self.index)}
        metrics.update({f"removed_{rule}": int(r.flagged.sum()) for rule, r in self.results.items()})
        metrics.update({"removed_total": removed, "rows_out": len(self.index) - removed})
        if self.embedding.perplexity is not None:
            metrics["perplexity_used"] = round(self.embedding.perplexity, 3)
        metrics.update({f"seconds_{step}": round(seconds, 3) for step, seconds in self.timings.items()})
        return metrics


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[step] = timings.get(step, 0.0) + time.perf_counter() - start


def find_outliers(data: LabelledSet, config: CleanConfig, seed: int) -> CleanReport:
    """Run every enabled rule on the training rows of ``data``."""
    # BLAS (PCA) and OpenMP (t-SNE's gradient) start one thread per core by default; on a shared
    # machine their waiting threads spin, and 2 threads on 2 busy cores ran t-SNE 20x slower than 1.
    # The results do not depend on the thread count.
    with threadpool_limits(limits=config.n_jobs):
        return _find_outliers(data, config, seed)


def _find_outliers(data: LabelledSet, config: CleanConfig, seed: int) -> CleanReport:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with _timed(timings, "features"):
        features = standardise(image_features(data.images, workers=config.n_jobs))
    with _timed(timings, "pca"):
        reduced = reduce(features, config.pca_components, seed)
    with _timed(timings, "tsne"):
        embedding = embed(reduced, config, seed)
    evidence = Evidence(data.images, data.masks, embedding)
    with _timed(timings, "rules"):
        results = {rule: RULES[rule](evidence, config) for rule in config.rules}
    timings["total"] = time.perf_counter() - start
    return CleanReport(data.index.copy(), results, embedding, timings)


def remove_outliers(data: LabelledSet, report: CleanReport) -> LabelledSet:
    """The rows no rule caught (``index`` and ``test_images`` carried along)."""
    kept = np.flatnonzero(~report.removed)
    if kept.size == 0:
        counts = ", ".join(f"{rule} {int(r.flagged.sum())}" for rule, r in report.results.items())
        raise UserError(f"clean: every one of the {len(data)} training rows was flagged ({counts}); nothing is left "
                        "to train on - check the input data or loosen clean.rules and its thresholds")
    return data.subset(kept)
