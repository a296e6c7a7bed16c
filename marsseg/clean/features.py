"""Per-image statistics in named groups: what the ``embedding`` rule lays out and measures.

Whole-frame groups describe the picture as a whole (thumbnail, intensity, histogram, gradient energy,
local variance, structure, spectrum, scattering moments) and the ground (its lower half, where every
terrain view is textured). Partial-frame groups (``marsseg.clean.tiles``) notice a region that is not terrain: the
straight border of a pasted picture, in grey levels and in texture energy (``edge_lines``), and the
frame's most atypical tiles (``tile_texture``, ``tile_shapes``). Each group is standardised to the same
total weight by ``standardise``; ``feature_views`` weighs the groups in two ways (``VIEWS``), and the rule
measures isolation in both.
"""
from __future__ import annotations

import warnings
from typing import Mapping

import numpy as np
import scipy.fft
from scipy import ndimage as ndi

from marsseg import IMAGE_SHAPE
from marsseg.clean.fallback import announce
from marsseg.clean.scattering import scattering_moments
from marsseg.clean.space import FeatureSpace
from marsseg.clean.tiles import atypical_tiles, edge_lines, texture_lines, tile_statistics

FEATURE_CHUNK = 1024  # images per feature batch: bounds memory, does not change the result
THUMBNAIL_BLOCK = (8, 8)  # 64x128 -> 8x16 thumbnail
LOCAL_BLOCK = (4, 4)  # patch size for local variance
STRUCTURE_ROWS = IMAGE_SHAPE[0] // 2  # structure statistics read rows from here down (the ground)
FFT_BAND_EDGES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.71)  # radial frequency, cycles per pixel
PERCENTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
FLAT_GRADIENT_LEVELS = (0.005, 0.01, 0.02, 0.05)  # "flat": smoothed gradient below these x picture std
STRAIGHT_EDGE_RANK = 3  # the 3rd straightest column / row: one straight horizon or rover edge is terrain too
TILE_STATISTICS = "tile_statistics"  # per-tile, (n, tiles, k): turned into frame features once all frames are in
# Two views of the same groups, each a weight per group (default 1, 0 leaves the group out); a row's
# isolation is its mean over them (``marsseg.clean.rules``). The views' rarest terrain rows differ (on
# AI4Mars they share 5 of their 16 most isolated terrain rows), so the mean pulls real terrain's tail in,
# while a picture that is not terrain lies far out in both (docs/clean.md, "Each change").
PARTIAL_FRAME_WEIGHTS = {"edge_lines": 2.0, "tile_texture": 1.5, "tile_shapes": 1.5}
VIEWS = {
    # Every group. The groups that see part of a frame weigh more than one whole-frame group each: a
    # pasted picture moves them a lot and the whole-frame groups little. 1.5 found 0.99-1.0 of the tuning
    # styles' outliers (1.0: 0.94-0.99) without more terrain removed from AI4Mars; 2.0 found fewer and
    # removed more. The straight borders (grey level and texture) weigh 2.0: on the extra tuning styles
    # (objects, stripes, clouds, mosaic) that found 93% instead of 91%, and AI4Mars lost one terrain row fewer.
    "whole": PARTIAL_FRAME_WEIGHTS,
    # Texture and grey-level spread only, the spectrum twice: a coordinate search over the group weights on
    # the tuning styles, measured on styles it left out, dropped the layout and contrast-normalised groups.
    # The scattering moments, added later, weigh 2 here as the spectrum does (1 in the first view): 1-3
    # here and 0-2 there found as many tuning outliers; 2 and 1 are the weights the groups already had.
    "texture": {**PARTIAL_FRAME_WEIGHTS, "spectrum": 2.0, "scattering": 2.0, "thumbnail": 0.0, "intensity": 0.0,
                "structure": 0.0, "ground_structure": 0.0, "ground_flatness": 0.0},
}
Z_CLIP = 10.0  # standardised features are clipped: one extreme statistic must not own the geometry


def intensity_counts(images: np.ndarray) -> np.ndarray:
    """Per-image 256-level histograms, (n, 256): exact percentiles of uint8 images come from these."""
    n = len(images)
    flat = images.reshape(n, -1).astype(np.int64)
    offsets = (np.arange(n, dtype=np.int64) * 256)[:, None]
    return np.bincount((flat + offsets).ravel(), minlength=n * 256).reshape(n, 256)


def percentiles(counts: np.ndarray, quantiles) -> np.ndarray:
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
        _histogram_negentropy(intensity_counts(images), std),
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
    counts = intensity_counts(images)
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
        "intensity": np.column_stack([mean, std, percentiles(counts, PERCENTILES) / 255.0, extremes]),
        # Square roots make histogram distances Hellinger-like: empty bins do not blow up.
        "histogram": np.sqrt(counts.reshape(n, 16, 16).sum(2) / pixels_per_image),
        "gradient": gradient,
        "local_variance": local_variance,
        "structure": _structure(images),
        # Again for the lower half alone: the ground, textured in every terrain view, whereas the
        # upper half may be smooth sky that looks as flat as a painted wall.
        "ground_structure": _structure(images[:, STRUCTURE_ROWS:, :]),
        "spectrum": np.log(bands + 1e-6),
        "scattering": scattering_moments(images, workers),
        # The ground only: flat sky in a terrain view must not look like a painted wall.
        "ground_flatness": _flatness(images[:, STRUCTURE_ROWS:, :]),
        # Where a picture fills part of the frame: the straight border of a pasted region, as a step
        # in grey level or, where the paste matches the terrain's brightness, in texture.
        "edge_lines": np.column_stack([edge_lines(images), texture_lines(images)]),
        TILE_STATISTICS: tile_statistics(images),
    }


def image_features(images: np.ndarray, workers: int = 1) -> dict[str, np.ndarray]:
    """Named groups of per-image statistics, each (n, d) float64."""
    chunks = [_chunk_features(images[start:start + FEATURE_CHUNK], workers)
              for start in range(0, len(images), FEATURE_CHUNK)]
    groups = {name: np.concatenate([c[name] for c in chunks]).astype(np.float64) for name in chunks[0]}
    # A tile is judged against the same tile of every frame, so this step sees all frames at once.
    groups.update(atypical_tiles(groups.pop(TILE_STATISTICS)))
    return groups


def standardise(groups: Mapping[str, np.ndarray]) -> FeatureSpace:
    """The groups side by side: each column centred on its median, scaled by its spread and clipped;
    each group scaled so that it carries the same total weight whatever its width (the thumbnail's 128
    columns must not drown the six gradient statistics). ``feature_views`` weighs the groups."""
    columns, spans, start = [], [], 0
    for name, values in groups.items():
        values = _finite(values, name)
        spread = values.std(axis=0)
        spread = np.where(spread > 1e-9, spread, 1.0)  # a constant column stays 0
        z = np.clip((values - np.median(values, axis=0)) / spread, -Z_CLIP, Z_CLIP)
        columns.append(z / np.sqrt(values.shape[1]))
        spans.append(slice(start, start + values.shape[1]))
        start += values.shape[1]
    return FeatureSpace(np.hstack(columns), tuple(spans), tuple(groups))


def feature_views(space: FeatureSpace) -> tuple[FeatureSpace, ...]:
    """``space`` weighted as each of ``VIEWS``: the first (every group) is what the map is drawn from."""
    return tuple(space.weighted(weights) for weights in VIEWS.values())


def _finite(values: np.ndarray, name: str) -> np.ndarray:
    bad = ~np.isfinite(values)
    if not bad.any():
        return values
    rows = int(bad.any(axis=1).sum())
    announce(f"{rows} image(s) gave non-finite '{name}' features; replaced by the column median")
    values = values.copy()
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled just below
        medians = np.nanmedian(np.where(bad, np.nan, values), axis=0)
    medians = np.where(np.isfinite(medians), medians, 0.0)
    values[bad] = np.broadcast_to(medians, values.shape)[bad]
    return values

