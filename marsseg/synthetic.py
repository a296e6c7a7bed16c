"""A synthetic, deterministic Mars-like terrain data set: the pipeline's default data source.

Each picture is a ground-level greyscale view (64x128, uint8) like a down-sampled Curiosity
NAVCAM frame, with a 5-class mask (0 background/unlabelled, 1 soil, 2 bedrock, 3 sand, 4 big
rock). The classes differ the way real terrain does, by texture and shape rather than by
brightness alone:

* soil: fine grain with scattered pebbles;
* bedrock: flat plates with stepped, shaded edges and dark cracks;
* sand: ripples, bent by wind noise;
* big rock: shaded elliptical blobs with a cast shadow, in a minority of pictures.

Terrain is drawn on a flat "ground" grid and then seen in perspective, so texture gets finer
towards the top of the picture. Nuisances that a model must see through: per-picture exposure,
illumination gradients, rover shadows, haze, sensor noise, and brightness ranges that overlap
between classes. Class 0 covers what annotators leave out: sky, far-away ground, rover parts,
gaps along region boundaries and skipped patches (which show ordinary terrain).

Like the course data, a fraction of the training rows are injected outliers: pictures that are
not terrain at all (gradients with shapes, checkerboards, text, indoor blocks), all carrying one
and the same mask. The test set holds terrain only.

``outlier_styles`` draws other outliers instead, for evaluating the clean stage on pictures its
rules were not developed with (``HELD_OUT_STYLES``): pages of text, grids of tiles, portraits,
rooms in perspective, product shots, and ``paste_<style>``, a picture of that style pasted over
30-60% of a terrain frame. Whole-frame outliers then share one mask of background and one class;
a pasted one keeps its terrain frame's mask. Left at None the data set is the default one, byte for
byte (the new styles draw from the outlier streams only when asked for).

Everything is vectorised over a chunk of pictures and drawn from ``numpy.random.default_rng``
streams derived from ``seed``: the same arguments give byte-identical arrays.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field as dataclass_field
from numbers import Real
from typing import Sequence

import numpy as np
import scipy.fft
from scipy import ndimage as ndi

from marsseg import IMAGE_SHAPE
from marsseg.errors import UserError

H, W = IMAGE_SHAPE
GROUND_SHAPE = (72, 256)  # the flat terrain grid each picture is a perspective view of
CHUNK = 256  # pictures drawn at once, to bound memory (part of the recipe: changing it changes the draws)
MAX_IMAGES = 200_000  # ~1.6 GB of pictures: beyond that a typo is likelier than intent

SOIL, BEDROCK, SAND, BIG_ROCK = 1, 2, 3, 4
TERRAIN_CLASSES = (SOIL, BEDROCK, SAND)
# How often each terrain class is among a picture's regions (real NAVCAM statistics: bedrock
# most common, sand least) and how much area it claims when present.
CLASS_CHANCE = np.array([0.40, 0.50, 0.20], np.float32)
CLASS_AREA = np.array([1.0, 1.3, 0.6], np.float32)

# Streams of the seed: train and test terrain and the outliers never share random numbers.
TRAIN_STREAM, TEST_STREAM, OUTLIER_STREAM, OUTLIER_MASK_STREAM, OUTLIER_ROW_STREAM = range(5)


@dataclass
class SyntheticData:
    train_images: np.ndarray  # (n_train, 64, 128) uint8
    train_masks: np.ndarray  # (n_train, 64, 128) uint8 in 0..4
    test_images: np.ndarray  # (n_test, 64, 128) uint8
    test_masks: np.ndarray  # (n_test, 64, 128) uint8: for tests only, a real test set has none
    outlier_rows: np.ndarray  # sorted int64 rows of the training set that are not terrain
    outlier_styles: tuple[str, ...]  # each outlier row's picture style, in outlier_rows order


def generate(
    n_train: int,
    n_test: int,
    outlier_fraction: float,
    seed: int,
    *,
    rock_image_fraction: float = 0.2,
    outlier_styles: Sequence[str] | None = None,
) -> SyntheticData:
    """Draw ``n_train`` training and ``n_test`` test pictures with their masks.

    ``round(outlier_fraction * n_train)`` training rows, at seeded-random positions, are
    non-terrain outliers sharing one mask. ``rock_image_fraction`` of terrain pictures hold
    big rocks (about 1% of all pixels at the default 0.2). ``outlier_styles`` (None: the default
    data set) names the outlier styles to draw instead, each equally likely (module docstring).
    """
    _check_count(n_train, "data.synthetic.n_train", minimum=1)
    _check_count(n_test, "data.synthetic.n_test", minimum=1)
    _check_fraction(outlier_fraction, "data.synthetic.outlier_fraction", upper=0.5, upper_included=False)
    _check_fraction(rock_image_fraction, "data.synthetic.rock_image_fraction", upper=1.0, upper_included=True)
    _check_count(seed, "seed", minimum=0, maximum=2**63 - 1)
    styles = None if outlier_styles is None else _check_styles(outlier_styles)

    train_images, train_masks = _terrain(n_train, [seed, TRAIN_STREAM], rock_image_fraction)
    test_images, test_masks = _terrain(n_test, [seed, TEST_STREAM], rock_image_fraction)

    n_outliers = int(round(outlier_fraction * n_train))
    outlier_rows = np.sort(
        np.random.default_rng([seed, OUTLIER_ROW_STREAM]).choice(n_train, size=n_outliers, replace=False)
    ).astype(np.int64)
    drawn: tuple[str, ...] = ()
    if n_outliers and styles is None:
        train_images[outlier_rows], drawn = _outlier_images(n_outliers, np.random.default_rng([seed, OUTLIER_STREAM]))
        train_masks[outlier_rows] = _outlier_mask(np.random.default_rng([seed, OUTLIER_MASK_STREAM]))
    elif n_outliers:
        rng = np.random.default_rng([seed, OUTLIER_STREAM])
        images, whole, drawn = styled_outliers(styles, train_images[outlier_rows], rng)
        train_images[outlier_rows] = images
        train_masks[outlier_rows[whole]] = _background_and_one_class(np.random.default_rng([seed, OUTLIER_MASK_STREAM]))
    return SyntheticData(train_images, train_masks, test_images, test_masks, outlier_rows, drawn)


# --------------------------------------------------------------------------- argument checks


def _check_count(value, key: str, minimum: int, maximum: int = MAX_IMAGES) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserError(f"{key}: expected a whole number, got {value!r}")
    if not minimum <= value <= maximum:
        raise UserError(f"{key}: {value} is out of range; use a whole number from {minimum} to {maximum}")


def _check_styles(styles) -> tuple[str, ...]:
    if isinstance(styles, str) or not isinstance(styles, Sequence) or not styles:
        raise UserError(f"outlier_styles: expected a non-empty list of style names, got {styles!r}")
    known = list(OUTLIER_STYLES) + [PASTE + name for name in OUTLIER_STYLES]
    for style in styles:
        if style not in known:
            raise UserError(f"outlier_styles: unknown style {style!r}; known: {', '.join(known)}")
    return tuple(styles)


def _check_fraction(value, key: str, upper: float, upper_included: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise UserError(f"{key}: expected a number, got {value!r}")
    if value < 0 or value > upper or (value == upper and not upper_included):
        bracket = "]" if upper_included else ")"
        raise UserError(f"{key}: {value} is out of range; use a fraction in [0, {upper}{bracket}")


# --------------------------------------------------------------------------- terrain


def _terrain(n: int, entropy: list[int], rock_image_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(entropy)
    images = np.empty((n, H, W), np.uint8)
    masks = np.empty((n, H, W), np.uint8)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        images[start:stop], masks[start:stop] = _terrain_chunk(rng, stop - start, rock_image_fraction)
    return images, masks


def _terrain_chunk(rng: np.random.Generator, n: int, rock_image_fraction: float):
    view = _draw_views(rng, n)
    ground = _perspective(view)
    weights, mask = _regions(rng, ground)
    image = _terrain_textures(rng, ground, view["light"], weights)

    _unlabel_boundaries(rng, mask)
    _unlabel_patches(rng, mask)
    _far_range_and_sky(rng, image, mask, view)
    _big_rocks(rng, image, mask, view, ground.scale, rock_image_fraction)
    _rover_parts(rng, image, mask)
    return _expose(rng, image), mask


def _draw_views(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Per-picture camera and scene settings."""
    has_band = rng.random(n) < 0.55  # far range left unlabelled, as AI4Mars labels only the near range
    band_row = np.where(has_band, rng.uniform(4, 22, n), -1.0)
    has_sky = has_band & (rng.random(n) < 0.45)
    sky_row = np.where(has_sky, np.maximum(band_row - rng.uniform(2, 10, n), 1.0), -1.0)
    # Ratio of texture scale at the top visible ground row to the bottom row: the perspective.
    ratio = np.where(has_sky, rng.uniform(3.0, 4.5, n), rng.uniform(1.8, 3.5, n))
    light_angle = rng.uniform(0, 2 * np.pi, n)
    light_elevation = rng.uniform(0.35, 0.9, n)
    light = np.stack(
        [np.cos(light_angle) * np.cos(light_elevation), np.sin(light_angle) * np.cos(light_elevation),
         np.sin(light_elevation)], axis=1,
    ).astype(np.float32)
    return {
        "band_row": band_row.astype(np.float32),
        "sky_row": sky_row.astype(np.float32),
        "ratio": ratio.astype(np.float32),
        "roll": rng.normal(0, 0.035, n).astype(np.float32),  # radians, about 2 degrees
        "bottom_scale": rng.uniform(0.42, 0.62, n).astype(np.float32),  # ground px per image px
        "light": light,
    }


# --------------------------------------------------------------------------- perspective


@dataclass
class _Ground:
    """Where each picture pixel lies on the flat ground grid, and how many ground pixels it spans."""

    rows: np.ndarray  # (n, H, W) float32
    cols: np.ndarray
    scale: np.ndarray
    _plans: dict = dataclass_field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    def sample(self, grid: np.ndarray, step: int = 1) -> np.ndarray:
        """Bilinear lookup of ground grids (copies * n, h, w), drawn at ``step`` ground pixels
        per grid cell, at every picture pixel: returns (copies * n, H, W)."""
        m, h, w = grid.shape
        key = (h, w, step)
        if key not in self._plans:
            self._plans[key] = _bilinear_plan(self.rows / step, self.cols / step, h, w)
        corners, weights = self._plans[key]
        n = len(self)
        out = np.empty((m, H, W), np.float32)
        corner_values = np.empty((n, H, W), np.float32)
        for start in range(0, m, n):
            flat = np.ascontiguousarray(grid[start : start + n], np.float32).reshape(-1)
            total = out[start : start + n]
            np.take(flat, corners[0], out=total)
            total *= weights[0]
            for corner, weight in zip(corners[1:], weights[1:]):
                np.take(flat, corner, out=corner_values)
                corner_values *= weight
                total += corner_values
        return out


def _bilinear_plan(rows: np.ndarray, cols: np.ndarray, h: int, w: int):
    """The four flat grid indices and bilinear weights for each picture pixel."""
    n = len(rows)
    rows = np.clip(rows, 0, h - 1.001)
    cols = np.clip(cols, 0, w - 1.001)
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = rows - r0, cols - c0
    base = (np.arange(n, dtype=np.int32) * (h * w))[:, None, None] + r0.astype(np.int32) * w + c0.astype(np.int32)
    corners = (base, base + 1, base + w, base + w + 1)
    weights = ((1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc)
    return corners, weights


def _perspective(view: dict[str, np.ndarray]) -> _Ground:
    """A flat ground seen from a camera above it.

    A picture row ``y`` lies at a distance inversely proportional to ``y - horizon``, so ground
    texture shrinks towards the top of the picture.
    """
    hg, wg = GROUND_SHAPE
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    yc, xc = (H - 1) / 2, (W - 1) / 2
    cos, sin = np.cos(view["roll"])[:, None, None], np.sin(view["roll"])[:, None, None]
    y_rolled = yc + (ys - yc) * cos + (xs - xc) * sin
    x_rolled = xc + (xs - xc) * cos - (ys - yc) * sin

    top = np.maximum(view["sky_row"], 0)  # the top ground row that can be seen
    ratio = view["ratio"]
    horizon = top - (H - 1 - top) / (ratio - 1)
    span = (H - 1) - horizon
    # Fit the widest and deepest view into the ground grid.
    bottom_scale = np.minimum.reduce([
        view["bottom_scale"],
        (wg - 4) / (W * ratio * 1.08),
        (hg - 3) / (span * np.log(ratio) * 1.08),
    ])[:, None, None]
    span, horizon, ratio = span[:, None, None], horizon[:, None, None], ratio[:, None, None]
    depth = span / np.maximum(y_rolled - horizon, span / (ratio * 1.08))
    return _Ground(
        rows=((hg - 2) - bottom_scale * span * np.log(depth)).astype(np.float32),
        cols=(wg / 2 + (x_rolled - xc) * bottom_scale * depth).astype(np.float32),
        scale=(bottom_scale * depth).astype(np.float32),
    )


def _field(rng: np.random.Generator, ground: _Ground, sigmas, weights=(1.0,), copies: int = 1) -> np.ndarray:
    """Smooth ground noise as each picture sees it: returns (copies, n, H, W), independent draws.

    ``sigmas`` and ``weights`` describe the noise's components (see ``_smooth_noise``), each a
    number or one value per picture. Noise without fine detail is drawn on a coarser grid,
    2 or 3 times the ground spacing, with at least 1.5 grid cells per filter width.
    """
    n = len(ground)
    narrowest = min(float(np.min(sigma)) for sigma in sigmas)
    step = 3 if narrowest >= 4.5 else 2 if narrowest >= 3 else 1  # few grids: each costs a sampling plan
    shape = (GROUND_SHAPE[0] // step + 1, GROUND_SHAPE[1] // step + 1) if step > 1 else GROUND_SHAPE

    def per_copy(value):
        return np.tile(np.asarray(value, np.float32), copies) if np.ndim(value) else value

    coarse = _smooth_noise(
        rng, copies * n, [per_copy(sigma) / step for sigma in sigmas], shape, [per_copy(w) for w in weights]
    )
    return ground.sample(coarse, step).reshape(copies, n, H, W)


# --------------------------------------------------------------------------- terrain regions and textures


def _regions(rng: np.random.Generator, ground: _Ground) -> tuple[np.ndarray, np.ndarray]:
    """A few large irregular regions of soil, bedrock and sand (argmax of ground noise).

    Returns soft blending weights (3, n, H, W) and the labels (n, H, W) uint8.
    """
    n = len(ground)
    n_classes = rng.choice([1, 2, 3], size=n, p=[0.35, 0.45, 0.20])
    # Gumbel top-k: n_classes distinct classes per picture, weighted by CLASS_CHANCE.
    keys = np.log(CLASS_CHANCE) - np.log(-np.log(rng.random((n, 3))))
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    present = rank < n_classes[:, None]

    roughness = rng.uniform(0.15, 0.5, n).astype(np.float32)
    score = _field(rng, ground, [16.0, 6.0], [1 - roughness, roughness], copies=3)
    area_bias = np.log(CLASS_AREA)[:, None] + rng.normal(0, 0.4, (3, n)).astype(np.float32)
    score += area_bias[:, :, None, None]
    score[~present.T] = -np.inf

    # Annotators trace boundaries loosely: the mask follows a wobbly copy of the true boundary,
    # more so for some pictures than others (up to a few pixels off).
    imprecision = rng.uniform(0, 0.3, n).astype(np.float32)[None, :, None, None] / 8.0
    wobble = _smooth_noise(rng, 3 * n, [3.0], (H, W)).reshape(3, n, H, W)
    traced = score + imprecision * wobble
    labels = (np.argmax(traced, axis=0) + 1).astype(np.uint8)
    # Soft weights blend textures over a pixel or two: real region edges are not cut clean.
    sharp = score * 8.0
    sharp -= sharp.max(axis=0, keepdims=True)
    weights = np.exp(sharp)
    weights /= weights.sum(axis=0, keepdims=True)
    return weights, labels


def _terrain_textures(rng, ground: _Ground, light: np.ndarray, weights: np.ndarray) -> np.ndarray:
    n = len(ground)
    grain = _standardise(ground.sample(ndi.gaussian_filter(_white(rng, n, GROUND_SHAPE), 0.6, axes=(1, 2))))
    # Detail below the ground grid's resolution, so near ground is not blurred by magnification.
    fine = _standardise(ndi.gaussian_filter(_white(rng, n, (H, W)), 0.5, axes=(1, 2)))
    undulation = _field(rng, ground, [7.0])[0]
    textures = (
        _soil(rng, ground, grain, fine, undulation, light),
        _bedrock(rng, ground, grain, fine, undulation, light),
        _sand(rng, ground, grain, fine, undulation),
    )
    image = np.zeros((n, H, W), np.float32)
    for weight, texture in zip(weights, textures):
        image += weight * texture
    return image


def _soil(rng, ground, grain, fine, undulation, light) -> np.ndarray:
    """Fine grain with scattered small pebbles that catch the light."""
    n = len(ground)
    density = _per_picture(rng, n, 0.004, 0.02)
    seeds = (rng.random((n, *GROUND_SHAPE), dtype=np.float32) < density).astype(np.float32)
    pebbles = ground.sample(ndi.gaussian_filter(seeds, 0.7, axes=(1, 2))) * 4.0
    pebbles = pebbles + 1.5 * _directional_slope(pebbles, light)
    amplitude = _per_picture(rng, n, 0.025, 0.065)
    # Base tones of the classes overlap widely: brightness alone cannot tell them apart.
    return _per_picture(rng, n, 0.32, 0.62) + amplitude * (0.7 * grain + 0.5 * fine + 0.4 * undulation + pebbles)


def _bedrock(rng, ground, grain, fine, undulation, light) -> np.ndarray:
    """Flat plates at random tones, stepped edges shaded by the light, dark cracks."""
    n = len(ground)
    # Two terraced noise fields cut each other into a patchwork of angular plates (one alone
    # would give concentric contour lines).
    relief = _field(rng, ground, [rng.uniform(3.5, 6.5, n)], copies=2)
    steps_per_std = _per_picture(rng, n, 1.2, 2.5)
    offset = _per_picture(rng, n, 0, 1)
    levels = np.floor(relief * steps_per_std + offset)
    plate = levels[0] * 7.31 + levels[1] * 3.17
    # A hash of the plate's number gives each plate its own tone.
    plate_tone = np.modf(np.abs(np.sin(plate * 12.9898 + offset * 78.233)) * 437.5453)[0] - 0.5
    height = levels[0] + 0.6 * levels[1]
    step_edges = _directional_slope(ndi.gaussian_filter(height, 0.6, axes=(1, 2)), light)
    cracks = np.exp(-((_field(rng, ground, [3.0])[0] / 0.13) ** 2))
    amplitude = _per_picture(rng, n, 0.06, 0.15)
    texture = 2.4 * plate_tone + 2.0 * step_edges - 1.8 * cracks + 0.2 * grain + 0.15 * fine + 0.6 * undulation
    return _per_picture(rng, n, 0.30, 0.66) + amplitude * texture


def _sand(rng, ground, grain, fine, undulation) -> np.ndarray:
    """Ripples: a wave bent by wind noise, with a steeper lee side."""
    n = len(ground)
    angle = _per_picture(rng, n, 0, np.pi)
    wavelength = _per_picture(rng, n, 5.0, 10.0)
    along = ground.cols * np.cos(angle) + ground.rows * np.sin(angle)
    phase = 2 * np.pi * along / wavelength + 2.5 * _field(rng, ground, [9.0])[0]
    ripple = np.sin(phase) + 0.35 * np.sin(2 * phase)
    # Ripples fade in and out, and blur away where the camera cannot resolve them.
    contrast = np.clip(0.6 + 0.4 * _field(rng, ground, [12.0])[0], 0.15, None)
    contrast *= np.clip(wavelength / ground.scale / 2 - 1, 0, 1)
    amplitude = _per_picture(rng, n, 0.07, 0.11)
    # Smooth at the finest scale: wind-sorted grains are small and even.
    texture = 1.6 * ripple * contrast + 0.1 * grain + 0.08 * fine + 1.0 * undulation
    return _per_picture(rng, n, 0.36, 0.76) + amplitude * texture


def _directional_slope(height: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Brightness of slopes facing the light (a simple hill-shade of ``height``)."""
    d_rows, d_cols = np.gradient(height, axis=(1, 2))
    return -(light[:, 0, None, None] * d_cols + light[:, 1, None, None] * d_rows)


# --------------------------------------------------------------------------- what annotators leave out


def _unlabel_boundaries(rng: np.random.Generator, mask: np.ndarray) -> None:
    """Annotators leave gaps of 0-2 pixels along region boundaries."""
    width = rng.choice([0, 1, 2], size=len(mask), p=[0.3, 0.4, 0.3])
    for w in (1, 2):
        size = (1, 2 * w + 1, 2 * w + 1)
        edge = ndi.maximum_filter(mask, size=size) != ndi.minimum_filter(mask, size=size)
        mask[edge & (width == w)[:, None, None]] = 0


def _unlabel_patches(rng: np.random.Generator, mask: np.ndarray) -> None:
    """Skipped patches: small in most pictures, large in some. They make every mask unique."""
    n = len(mask)
    area = np.where(rng.random(n) < 0.35, rng.uniform(0.12, 0.45, n), rng.uniform(0.01, 0.05, n))
    field = _smooth_noise(rng, n, [rng.uniform(5.0, 9.0, n)], (H, W))
    flat = np.sort(field.reshape(n, -1), axis=1)
    threshold = flat[np.arange(n), ((1 - area) * (H * W - 1)).astype(np.intp)]
    mask[field > threshold[:, None, None]] = 0


def _row_profile(rng: np.random.Generator, base: np.ndarray, roll: np.ndarray, amplitude: float) -> np.ndarray:
    """A wavy, slightly tilted line across the picture: y(x) for each picture, shape (n, 1, W)."""
    n = len(base)
    xs = np.arange(W, dtype=np.float32) - (W - 1) / 2
    wiggle = _standardise(ndi.gaussian_filter1d(rng.standard_normal((n, W), dtype=np.float32), 6.0, axis=1))
    return (base[:, None] - roll[:, None] * xs + amplitude * wiggle)[:, None, :]


def _far_range_and_sky(rng, image, mask, view) -> None:
    """Far ground left unlabelled at the top; in some pictures sky above a hazy horizon."""
    n = len(image)
    ys = np.arange(H, dtype=np.float32)[None, :, None]
    band = _row_profile(rng, view["band_row"], view["roll"], 1.5)
    has_band = (view["band_row"] > 0)[:, None, None]
    mask[has_band & (ys < band)] = 0

    has_sky = view["sky_row"] > 0
    if not has_sky.any():
        return
    sky_line = _row_profile(rng, view["sky_row"], view["roll"], 1.2)
    # Haze: distant ground fades towards a flat tone, like far hills under the dusty sky.
    sky_level = _per_picture(rng, n, 0.7, 1.1)
    hills = sky_level * _per_picture(rng, n, 0.45, 0.8)
    haze = 0.85 * np.exp(-np.maximum(ys - sky_line, 0) / _per_picture(rng, n, 2, 6)).astype(np.float32)
    haze *= has_sky[:, None, None]
    image[:] = image * (1 - haze) + hills * haze
    glow = sky_level * (1.0 - 0.3 * np.clip((sky_line - ys) / 20.0, 0, 1))  # darker away from the horizon
    is_sky = has_sky[:, None, None] & (ys < sky_line)
    image[is_sky] = np.broadcast_to(glow, image.shape)[is_sky]
    mask[is_sky] = 0


def _rover_parts(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> None:
    """Flat, straight-edged hardware in a bottom corner of some pictures (class 0)."""
    rows = np.flatnonzero(rng.random(len(image)) < 0.08)
    if rows.size == 0:
        return
    m = rows.size
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    right = rng.random(m) < 0.5
    xs_corner = np.where(right[:, None, None], W - 1 - xs, xs)  # mirror so the part sits at x=0
    # A slanted edge and a top edge cut the part out of the corner.
    angle_a = _per_picture(rng, m, 0.3, 1.2)
    reach = _per_picture(rng, m, 15, 45)
    inside = (xs_corner * np.cos(angle_a) - (ys - H) * np.sin(angle_a)) < reach
    inside &= ys > _per_picture(rng, m, H * 0.35, H * 0.8)
    tone = _per_picture(rng, m, 0.15, 0.9)
    seams = ((xs_corner + 0.5 * ys) % _per_picture(rng, m, 8, 16)) < 1.0
    part = tone * (1 - 0.15 * ys / H) - 0.12 * seams
    image[rows] = np.where(inside, part, image[rows])
    mask[rows] = np.where(inside, 0, mask[rows])


# --------------------------------------------------------------------------- big rocks


def _big_rocks(rng, image, mask, view, scale, rock_image_fraction: float) -> None:
    """Shaded elliptical blobs with a cast shadow, sized by perspective, in some pictures."""
    rows = np.flatnonzero(rng.random(len(image)) < rock_image_fraction)
    if rows.size == 0:
        return
    m, max_rocks = rows.size, 3
    count = rng.choice([1, 2, 3], size=m, p=[0.5, 0.3, 0.2])
    top = np.maximum(view["band_row"][rows], view["sky_row"][rows]) + 4
    centre_y = rng.uniform(0, 1, (m, max_rocks)) * (H - 2 - top[:, None]) + top[:, None]
    centre_x = rng.uniform(6, W - 6, (m, max_rocks))
    # Radius in ground pixels, turned into picture pixels by the local perspective scale.
    at = (np.arange(m)[:, None], np.clip(centre_y.astype(int), 0, H - 1), centre_x.astype(int))
    ground_radius = rng.uniform(5.0, 10.5, (m, max_rocks))
    radius_x = ground_radius / scale[rows][at]
    radius_y = radius_x * rng.uniform(0.5, 0.8, (m, max_rocks))
    tone = rng.uniform(0.35, 0.75, (m, max_rocks))
    centre_y, centre_x, radius_y, radius_x, tone = (
        a.astype(np.float32) for a in (centre_y, centre_x, radius_y, radius_x, tone)
    )
    light = view["light"][rows]

    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    sub_image, sub_mask = image[rows], mask[rows]
    order = np.argsort(centre_y, axis=1)  # far rocks first, near rocks drawn over them
    for k in range(max_rocks):
        pick = order[:, k]
        idx = np.arange(m)
        valid = (pick < count)[:, None, None]
        cy, cx = centre_y[idx, pick][:, None, None], centre_x[idx, pick][:, None, None]
        ry, rx = radius_y[idx, pick][:, None, None], radius_x[idx, pick][:, None, None]
        dy, dx = (ys - cy) / ry, (xs - cx) / rx
        # An irregular outline: the radius wobbles with the angle around the centre.
        phase, angle = _per_picture(rng, m, 0, 2 * np.pi), np.arctan2(dy, dx)
        wobble = 1 + 0.12 * np.sin(3 * angle + phase) + 0.06 * np.sin(5 * angle + 2 * phase)
        r2 = (dx**2 + dy**2) / wobble**2
        body = valid & (r2 < 1)
        # Cast shadow: the same outline pushed away from the light, darkening only the ground.
        reach = (1.0 - light[:, 2]) * 1.6 + 0.4
        sx = (xs - cx + light[:, 0, None, None] * rx * reach[:, None, None]) / rx
        sy = (ys - cy - 0.3 * ry + light[:, 1, None, None] * ry * reach[:, None, None]) / ry
        shadow = valid & ((sx**2 + sy**2) / wobble**2 < 1.1) & ~body
        sub_image[:] = np.where(shadow, sub_image * 0.45, sub_image)
        # Lambert shading of an ellipsoid: the normal from the outline position.
        nz = np.sqrt(np.clip(1 - r2, 0, 1))
        lx, ly, lz = (light[:, axis, None, None] for axis in range(3))
        lit = np.clip(dx * lx + dy * ly + nz * lz, 0, 1)
        grit = 0.04 * rng.standard_normal((m, H, W), dtype=np.float32)
        surface = tone[idx, pick][:, None, None] * (0.25 + 1.1 * lit) + grit
        sub_image[:] = np.where(body, surface, sub_image)
        sub_mask[:] = np.where(body, BIG_ROCK, sub_mask)
    image[rows], mask[rows] = sub_image, sub_mask


# --------------------------------------------------------------------------- camera


def _expose(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Illumination gradient, rover shadow, exposure, sensor noise; then 8-bit quantisation."""
    n = len(image)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    direction = _per_picture(rng, n, 0, 2 * np.pi)
    ramp = ((xs - W / 2) * np.cos(direction) + (ys - H / 2) * np.sin(direction)) / W
    gain = 1 + _per_picture(rng, n, 0, 0.6) * ramp
    gain += _per_picture(rng, n, 0, 0.15) * _smooth_noise(rng, n, [14.0], (H, W))

    shadowed = (rng.random(n) < 0.15)[:, None, None]
    edge_row, edge_tilt = rng.uniform(30, 60, n).astype(np.float32), rng.normal(0, 0.25, n).astype(np.float32)
    edge = _row_profile(rng, edge_row, edge_tilt, 1.0)
    rover_shadow = 1 - _per_picture(rng, n, 0.35, 0.6) * np.clip((ys - edge) / 2 + 0.5, 0, 1)
    gain = np.where(shadowed, gain * rover_shadow, gain)

    exposure = _per_picture(rng, n, 0.32, 0.62)
    gamma = _per_picture(rng, n, 0.85, 1.2)
    noise = _per_picture(rng, n, 0.003, 0.01) * rng.standard_normal((n, H, W), dtype=np.float32)
    linear = exposure * np.clip(image, 0, None) ** gamma * gain + noise
    return np.clip(np.rint(linear * 255), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- outliers


def _outlier_mask(rng: np.random.Generator) -> np.ndarray:
    """The one mask every outlier carries: two classes split at a column, as in the course data."""
    left, right = rng.choice(TERRAIN_CLASSES, size=2, replace=False)
    split = rng.integers(44, 84)
    mask = np.full((H, W), right, np.uint8)
    mask[:, :split] = left
    return mask


def _outlier_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[str, ...]]:
    """Pictures that are not terrain (flat tones, hard edges, wide contrast), and each one's style."""
    kinds = rng.integers(0, len(_OUTLIER_KINDS), n)
    pictures = np.empty((n, H, W), np.float32)
    for kind, draw in enumerate(_OUTLIER_KINDS):
        rows = np.flatnonzero(kinds == kind)
        if rows.size:
            pictures[rows] = draw(rng, rows.size)
    # Exposures overlap with terrain's: structure (flat areas, hard edges), not brightness,
    # is what sets these pictures apart.
    pictures = ndi.gaussian_filter(pictures, 0.5, axes=(1, 2)) * _per_picture(rng, n, 0.35, 1.0)
    pictures += _per_picture(rng, n, 0.0, 0.01) * rng.standard_normal((n, H, W), dtype=np.float32)
    return np.clip(np.rint(pictures * 255), 0, 255).astype(np.uint8), tuple(DEFAULT_STYLES[k] for k in kinds)


def _gradient_background(rng: np.random.Generator, n: int) -> np.ndarray:
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    direction = _per_picture(rng, n, 0, 2 * np.pi)
    ramp = ((xs - W / 2) * np.cos(direction) + (ys - H / 2) * np.sin(direction)) / W + 0.5
    start, stop = _per_picture(rng, n, 0.3, 0.95), _per_picture(rng, n, 0.3, 0.95)
    return (start + (stop - start) * ramp).astype(np.float32)


def _shapes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Smooth gradient with a few flat circles and rectangles."""
    picture = _gradient_background(rng, n)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    for _ in range(5):
        cy, cx = _per_picture(rng, n, 0, H), _per_picture(rng, n, 0, W)
        half_h, half_w = _per_picture(rng, n, 4, 20), _per_picture(rng, n, 4, 30)
        circle = ((ys - cy) / half_h) ** 2 + ((xs - cx) / half_h) ** 2 < 1
        box = (np.abs(ys - cy) < half_h) & (np.abs(xs - cx) < half_w)
        shape = np.where(rng.random((n, 1, 1)) < 0.5, circle, box)
        picture = np.where(shape, _per_picture(rng, n, 0.0, 1.0), picture)
    return picture


def _checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    angle = _per_picture(rng, n, -0.5, 0.5)
    period = _per_picture(rng, n, 8, 20)
    u = (xs * np.cos(angle) + ys * np.sin(angle)) / period
    v = (ys * np.cos(angle) - xs * np.sin(angle)) / period
    cells = (np.floor(u) + np.floor(v)) % 2
    dark, light = _per_picture(rng, n, 0.0, 0.3), _per_picture(rng, n, 0.7, 1.0)
    return (dark + (light - dark) * cells) * (0.8 + 0.4 * _gradient_background(rng, n))


def _text(rng: np.random.Generator, n: int) -> np.ndarray:
    """A bright page with lines of dark, letter-sized strokes."""
    ys, xs = np.mgrid[0:H, 0:W]
    pitch = rng.integers(6, 10, (n, 1, 1))
    letter = rng.integers(2, 5, (n, 1, 1))
    line, in_line = ys // pitch, (ys % pitch) < pitch - 3
    ink = rng.random((n, H, W)) < 0.6  # one draw per (line, letter) slot, looked up below
    slot = ink[np.arange(n)[:, None, None], np.minimum(line, H - 1), np.minimum(xs // letter, W - 1)]
    margin = (xs > 4) & (xs < W - 4)
    strokes = in_line & slot & margin & ((xs % letter) != 0)
    paper = _per_picture(rng, n, 0.75, 0.98)
    return np.where(strokes, _per_picture(rng, n, 0.0, 0.25), paper).astype(np.float32)


def _indoor(rng: np.random.Generator, n: int) -> np.ndarray:
    """Wall, floor, a bright window, furniture blocks and a dark figure."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    floor_row = _per_picture(rng, n, 30, 52)
    picture = np.where(ys < floor_row, _per_picture(rng, n, 0.55, 0.9), _per_picture(rng, n, 0.2, 0.5))
    picture = picture * (1 - 0.2 * xs / W)
    wx, wy = _per_picture(rng, n, 10, 100), _per_picture(rng, n, 4, 14)
    window = (np.abs(xs - wx) < _per_picture(rng, n, 8, 18)) & (ys > wy) & (ys < wy + _per_picture(rng, n, 10, 20))
    picture = np.where(window, 0.97, picture)
    for _ in range(2):
        bx, width = _per_picture(rng, n, 0, W), _per_picture(rng, n, 8, 30)
        block = (np.abs(xs - bx) < width / 2) & (ys > floor_row - _per_picture(rng, n, 8, 30))
        picture = np.where(block, _per_picture(rng, n, 0.05, 0.6), picture)
    fx = _per_picture(rng, n, 20, 108)
    figure = ((xs - fx) / 7) ** 2 + ((ys - 40) / 22) ** 2 < 1
    head = (xs - fx) ** 2 + (ys - 12) ** 2 < 25
    return np.where(figure | head, _per_picture(rng, n, 0.0, 0.2), picture).astype(np.float32)


_OUTLIER_KINDS = (_shapes, _checkerboard, _text, _indoor)


# --------------------------------------------------------------------------- held-out outlier styles
# Drawn one picture at a time: outliers are few, and each style is easier to read as a recipe.


def _page(rng: np.random.Generator, n: int) -> np.ndarray:
    """A page of printed paragraphs: words of letter strokes on grainy, unevenly lit paper (or a slide)."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    pictures = np.empty((n, H, W), np.float32)
    for i in range(n):
        paper = rng.uniform(0.6, 0.95) * (1 - rng.uniform(0, 0.25) * (xs + ys) / (W + H))
        paper = paper + rng.uniform(0.005, 0.03) * ndi.gaussian_filter(rng.standard_normal((H, W)), 0.7)
        ink = np.zeros((H, W), bool)
        pitch, x_height = rng.integers(5, 9), rng.integers(2, 5)
        columns = rng.integers(1, 3)
        left, right, top = rng.integers(4, 16), W - rng.integers(4, 16), rng.integers(2, 8)
        width = (right - left) // columns
        for column in range(columns):
            start, stop = left + column * width + 2 * column, left + (column + 1) * width - 2
            for row in range(top, H - x_height, pitch):
                end = stop if rng.random() > 0.2 else rng.integers(start, stop)  # paragraph ends
                x = start
                while x < end:
                    word = rng.integers(3, 16)
                    letters = rng.random(word) < 0.7
                    ink[row:row + x_height, x:min(x + word, end)] = letters[:max(min(word, end - x), 0)]
                    x += word + rng.integers(2, 4)
        tone = rng.uniform(0.03, 0.35)
        picture = np.where(ink, tone, paper)
        if rng.random() < 0.2:  # a slide: light letters on a dark ground
            picture = 1.0 - picture
        pictures[i] = picture
    return pictures


def _grid(rng: np.random.Generator, n: int) -> np.ndarray:
    """Tiles in a grid with grout lines: a tiled wall, a mosaic, a spreadsheet or a window grid."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    pictures = np.empty((n, H, W), np.float32)
    for i in range(n):
        angle = rng.uniform(-0.3, 0.3)
        u = xs * np.cos(angle) + ys * np.sin(angle) + rng.uniform(0, 20)
        v = ys * np.cos(angle) - xs * np.sin(angle) + rng.uniform(0, 20)
        cell_w, cell_h = rng.uniform(6, 24), rng.uniform(5, 18)
        grout = rng.uniform(0.8, 2.5)
        col, row = np.floor(u / cell_w).astype(int), np.floor(v / cell_h).astype(int)
        lines = ((u % cell_w) < grout) | ((v % cell_h) < grout)
        spread = rng.choice([0.03, 0.15, 0.4])  # plain tiles, worn tiles, a mosaic
        tones = np.clip(rng.uniform(0.3, 0.9) + spread * rng.standard_normal((64, 64)), 0, 1)
        tile = tones[row % 64, col % 64]
        tile = tile + rng.uniform(0, 0.03) * rng.standard_normal((H, W))
        picture = np.where(lines, rng.uniform(0.05, 0.95), tile)
        pictures[i] = picture * (1 - rng.uniform(0, 0.3) * xs / W)
    return pictures


def _portrait(rng: np.random.Generator, n: int) -> np.ndarray:
    """A head and shoulders in front of a soft studio backdrop."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    pictures = np.empty((n, H, W), np.float32)
    for i in range(n):
        backdrop = rng.uniform(0.2, 0.9) + rng.uniform(-0.2, 0.2) * ys / H
        backdrop = backdrop + 0.08 * ndi.gaussian_filter(rng.standard_normal((H, W)), 8) * 8
        cx = rng.uniform(35, 93)
        head_y, head_rx, head_ry = rng.uniform(18, 30), rng.uniform(10, 15), rng.uniform(14, 20)
        shoulders = ((xs - cx) / rng.uniform(30, 55)) ** 2 + ((ys - H - 8) / rng.uniform(22, 32)) ** 2 < 1
        neck = (np.abs(xs - cx) < head_rx * 0.45) & (ys > head_y) & (ys < head_y + head_ry + 8)
        dx, dy = (xs - cx) / head_rx, (ys - head_y) / head_ry
        head = dx**2 + dy**2 < 1
        skin = rng.uniform(0.35, 0.85)
        shading = skin * (0.75 + 0.35 * np.sqrt(np.clip(1 - dx**2 - dy**2, 0, 1)) - rng.uniform(-0.15, 0.15) * dx)
        hair = head & (dy < rng.uniform(-0.5, -0.2) + 0.3 * np.abs(dx) ** 2)
        eyes = (((xs - cx - 0.4 * head_rx) ** 2 + (ys - head_y + 0.1 * head_ry) ** 2 < 2.5)
                | ((xs - cx + 0.4 * head_rx) ** 2 + (ys - head_y + 0.1 * head_ry) ** 2 < 2.5))
        mouth = (np.abs(xs - cx) < 0.3 * head_rx) & (np.abs(ys - head_y - 0.5 * head_ry) < 0.8)
        picture = np.where(shoulders, rng.uniform(0.05, 0.8), backdrop)
        picture = np.where(neck, skin * 0.8, picture)
        picture = np.where(head, shading, picture)
        picture = np.where(hair, rng.uniform(0.02, 0.6), picture)
        picture = np.where(head & (eyes | mouth), skin * 0.3, picture)
        pictures[i] = ndi.gaussian_filter(picture, rng.uniform(0.6, 1.5))
    return pictures


def _room(rng: np.random.Generator, n: int) -> np.ndarray:
    """A room in one-point perspective: back wall, side walls, ceiling, a planked floor, a door and a lamp."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    pictures = np.empty((n, H, W), np.float32)
    for i in range(n):
        vx, vy = rng.uniform(40, 88), rng.uniform(20, 34)
        half_w, half_h = rng.uniform(14, 34), rng.uniform(8, 18)
        ax, ay = (xs - vx) / half_w, (ys - vy) / half_h
        back = (np.abs(ax) < 1) & (np.abs(ay) < 1)
        floor = ~back & (ay > np.abs(ax))
        ceiling = ~back & (-ay > np.abs(ax))
        wall = rng.uniform(0.4, 0.9)
        picture = np.where(xs < vx, wall * rng.uniform(0.6, 0.9), wall * rng.uniform(0.7, 1.0))
        picture = np.where(back, wall, picture)
        picture = np.where(ceiling, min(wall * 1.1, 1.0), picture)
        plank = np.floor(np.arctan2(xs - vx, np.maximum(ys - vy, 1e-3)) * rng.uniform(6, 14))
        wood = rng.uniform(0.2, 0.6) + 0.05 * np.sin(plank * 2.7)
        picture = np.where(floor, wood * (0.7 + 0.3 * (ys - vy) / H), picture)
        door_x = vx + rng.uniform(-0.8, 0.5) * half_w
        door = back & (xs > door_x) & (xs < door_x + 0.35 * half_w) & (ay > -0.3)
        picture = np.where(door, rng.uniform(0.1, 0.5), picture)
        lamp = (xs - vx - rng.uniform(-10, 10)) ** 2 / 9 + (ys - rng.uniform(2, 8)) ** 2 / 4 < 1
        picture = np.where(lamp, 1.0, picture)
        pictures[i] = ndi.gaussian_filter(picture, rng.uniform(0.3, 0.9))
    return pictures


def _product(rng: np.random.Generator, n: int) -> np.ndarray:
    """One object on a seamless bright backdrop: a bottle or a box, shaded, with a highlight and a soft shadow."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    pictures = np.empty((n, H, W), np.float32)
    for i in range(n):
        picture = rng.uniform(0.7, 1.0) - rng.uniform(0, 0.2) * ys / H
        cx, base = rng.uniform(30, 98), rng.uniform(50, 62)
        half = rng.uniform(8, 22)
        height = rng.uniform(25, 45)
        shadow = ((xs - cx - 6) / (half * 1.6)) ** 2 + ((ys - base) / 3.5) ** 2 < 1
        picture = np.where(ndi.gaussian_filter(shadow.astype(np.float32), 2.5) > 0.3, picture * 0.7, picture)
        body = (np.abs(xs - cx) < half) & (ys > base - height) & (ys < base)
        tone = rng.uniform(0.05, 0.8)
        if rng.random() < 0.5:  # a bottle: cylinder shading and a neck
            across = np.clip((xs - cx) / half, -1, 1)
            surface = tone * (0.5 + 0.6 * np.sqrt(1 - across**2))
            neck = (np.abs(xs - cx) < half * 0.35) & (ys > base - height - 10) & (ys <= base - height)
            body |= neck
        else:  # a box: a lit face and a darker side face
            surface = np.where(xs < cx + half * 0.4, tone, tone * 0.6)
        highlight = np.abs(xs - cx + half * 0.45) < 1.2
        label = (np.abs(xs - cx) < half * 0.8) & (np.abs(ys - base + height * 0.5) < height * 0.2)
        surface = np.where(label, rng.uniform(0.2, 1.0), surface)
        surface = np.where(highlight, 1.0, surface)
        picture = np.where(body, surface, picture)
        pictures[i] = ndi.gaussian_filter(picture, rng.uniform(0.4, 1.0))
    return pictures


# --------------------------------------------------------------------------- extra tuning styles
# Added to develop the partial-frame features on more than the four default styles; deliberately
# unlike the held-out ones (no text, no regular cells, no faces, no rooms, no single product).


def _objects(rng: np.random.Generator, n: int) -> np.ndarray:
    """A still life: a few shaded balls and eggs with soft shadows on a smooth table and wall."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    pictures = np.empty((n, H, W), np.float32)
    for i in range(n):
        edge = rng.uniform(20, 45)
        picture = np.where(ys < edge, rng.uniform(0.4, 0.9), rng.uniform(0.2, 0.7)) + 0.1 * (xs / W - 0.5)
        for _ in range(rng.integers(2, 6)):
            cx, cy = rng.uniform(0, W), rng.uniform(edge, H)
            ry = rng.uniform(5, 16)
            rx = ry * rng.uniform(0.7, 1.4)
            u, v = (xs - cx) / rx, (ys - cy + ry) / ry
            inside = u**2 + v**2 < 1
            shadow = ((xs - cx - ry * 0.8) / (rx * 1.3)) ** 2 + ((ys - cy) / (ry * 0.3)) ** 2 < 1
            picture = np.where(shadow, picture * 0.6, picture)
            light = np.clip(0.5 - 0.5 * u - 0.5 * v + np.sqrt(np.clip(1 - u**2 - v**2, 0, 1)), 0.1, 1.5)
            picture = np.where(inside, rng.uniform(0.2, 0.8) * light, picture)
        pictures[i] = ndi.gaussian_filter(picture, rng.uniform(0.5, 1.5))
    return pictures


def _stripes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Fabric or corrugated sheet: sinusoidal stripes at an angle, gently bent, with fine weave noise."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    angle = _per_picture(rng, n, 0, np.pi)
    period = _per_picture(rng, n, 4, 16)
    bend = _per_picture(rng, n, 0, 6) * np.sin(ys[None] / _per_picture(rng, n, 10, 40))
    phase = (xs * np.cos(angle) + ys * np.sin(angle) + bend) * 2 * np.pi / period
    contrast = _per_picture(rng, n, 0.1, 0.4)
    weave = 0.03 * _white(rng, n, (H, W))
    return _per_picture(rng, n, 0.3, 0.7) + contrast * np.sin(phase) + weave


def _clouds(rng: np.random.Generator, n: int) -> np.ndarray:
    """A cloudy sky or a smoke-filled frame: smooth noise over a brightness ramp, no ground at all."""
    field = _smooth_noise(rng, n, (rng.uniform(4, 12, n),), (H, W))
    return _gradient_background(rng, n) + _per_picture(rng, n, 0.05, 0.2) * field


def _mosaic(rng: np.random.Generator, n: int) -> np.ndarray:
    """Stained glass or a tiled wall of irregular cells: flat-toned Voronoi patches with dark leads."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    pictures = np.empty((n, H, W), np.float32)
    for i in range(n):
        k = rng.integers(6, 30)
        cy, cx = rng.uniform(0, H, k), rng.uniform(0, W, k)
        d = (ys[..., None] - cy) ** 2 + (xs[..., None] - cx) ** 2
        order = np.sort(d, axis=2)
        cell = np.argmin(d, axis=2)
        picture = rng.uniform(0.1, 0.95, k)[cell]
        lead = np.sqrt(order[..., 1]) - np.sqrt(order[..., 0]) < rng.uniform(0.8, 2.0)
        pictures[i] = np.where(lead, rng.uniform(0.0, 0.15), picture)
    return pictures


OUTLIER_STYLES = {
    "shapes": _shapes, "checkerboard": _checkerboard, "text": _text, "indoor": _indoor,
    "page": _page, "grid": _grid, "portrait": _portrait, "room": _room, "product": _product,
    "objects": _objects, "stripes": _stripes, "clouds": _clouds, "mosaic": _mosaic,
}
PASTE = "paste_"  # prefix: that style pasted over PASTE_AREA of a terrain frame
PASTE_AREA = (0.3, 0.6)
DEFAULT_STYLES = tuple(kind.__name__[1:] for kind in _OUTLIER_KINDS)  # what the default data set holds
# What the clean rules were developed on; HELD_OUT_STYLES were kept out of every tuning run.
EXTRA_TUNING_STYLES = ("objects", "stripes", "clouds", "mosaic")
TUNING_STYLES = tuple(style for name in DEFAULT_STYLES + EXTRA_TUNING_STYLES for style in (name, PASTE + name))
HELD_OUT_STYLES = ("page", "grid", "portrait", "room", "product",
                   "paste_page", "paste_grid", "paste_portrait", "paste_room", "paste_product")


def styled_outliers(styles: tuple[str, ...], terrain: np.ndarray, rng: np.random.Generator):
    """Outlier pictures of the given styles, each equally likely; pasted ones over their row's terrain.

    Returns the (n, H, W) uint8 pictures, which of them are whole-frame (not pasted), and each one's style."""
    n = len(terrain)
    kinds = rng.integers(0, len(styles), n)
    images = np.empty((n, H, W), np.uint8)
    for k, style in enumerate(styles):
        rows = np.flatnonzero(kinds == k)
        if rows.size == 0:
            continue
        name = style.removeprefix(PASTE)
        pictures = OUTLIER_STYLES[name](rng, rows.size).astype(np.float32)
        pictures = ndi.gaussian_filter(pictures, 0.5, axes=(1, 2)) * _per_picture(rng, rows.size, 0.4, 1.0)
        pictures += _per_picture(rng, rows.size, 0.0, 0.01) * rng.standard_normal(pictures.shape, dtype=np.float32)
        pictures = np.clip(pictures, 0, 1)
        if style.startswith(PASTE):
            pictures = np.stack([paste(rng, terrain[row] / np.float32(255), picture)
                                 for row, picture in zip(rows, pictures)])
        images[rows] = np.clip(np.rint(pictures * 255), 0, 255).astype(np.uint8)
    whole = ~np.isin(kinds, [k for k, style in enumerate(styles) if style.startswith(PASTE)])
    return images, whole, tuple(styles[k] for k in kinds)


def paste(rng: np.random.Generator, frame: np.ndarray, picture: np.ndarray) -> np.ndarray:
    """``picture`` shrunk into a rectangle covering PASTE_AREA of ``frame``, at a random place."""
    area = rng.uniform(*PASTE_AREA) * H * W
    height = int(np.clip(round(math.sqrt(area / rng.uniform(1.0, 3.0))), area / W, H))
    width = int(min(round(area / height), W))
    top, left = rng.integers(0, H - height + 1), rng.integers(0, W - width + 1)
    out = frame.copy()
    out[top:top + height, left:left + width] = ndi.zoom(picture, (height / H, width / W), order=1)[:height, :width]
    return out


def _background_and_one_class(rng: np.random.Generator) -> np.ndarray:
    """The one mask whole-frame held-out outliers share: background above a row, one class below."""
    mask = np.zeros((H, W), np.uint8)
    mask[rng.integers(12, 40):] = rng.choice(TERRAIN_CLASSES)
    return mask


# --------------------------------------------------------------------------- noise helpers


def _per_picture(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """One uniform draw per picture, shaped (n, 1, 1) to broadcast over its pixels (float32)."""
    return rng.uniform(low, high, n).astype(np.float32)[:, None, None]


def _white(rng: np.random.Generator, n: int, shape: tuple[int, int] = GROUND_SHAPE) -> np.ndarray:
    return rng.standard_normal((n, *shape), dtype=np.float32)


def _standardise(field: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation per picture."""
    axes = tuple(range(1, field.ndim))
    field = field - field.mean(axis=axes, keepdims=True)
    return field / np.maximum(field.std(axis=axes, keepdims=True), 1e-6)


def _smooth_noise(rng: np.random.Generator, n: int, sigmas, shape: tuple[int, int], weights=(1.0,)) -> np.ndarray:
    """Gaussian-filtered noise, unit std per picture.

    A sum of components: filter width ``sigmas[k]`` pixels with relative std ``weights[k]``, each
    a number or one value per picture. Drawn in the frequency domain: only the low frequencies
    the filters keep get random coefficients, and any filter width costs one inverse FFT.
    """
    h, w = shape
    def per_picture(value):
        return np.reshape(np.asarray(value, np.float32), (-1, 1, 1))

    components = [(per_picture(sigma), per_picture(weight)) for sigma, weight in zip(sigmas, weights)]
    # Beyond this frequency even the narrowest filter keeps less than 1/1000 of the amplitude.
    narrowest = min(float(sigma.min()) for sigma, _ in components)
    cutoff = math.sqrt(math.log(1000) / 2) / (math.pi * narrowest)
    fy, fx = np.fft.fftfreq(h).astype(np.float32), np.fft.rfftfreq(w).astype(np.float32)
    rows, n_cols = np.flatnonzero(np.abs(fy) <= cutoff), int(np.count_nonzero(fx <= cutoff))
    frequency2 = fy[rows, None] ** 2 + fx[None, :n_cols] ** 2
    gain = np.zeros((1, rows.size, n_cols), np.float32)
    for sigma, weight in components:
        # A filter of width sigma keeps a share ~1/sigma^2 of the noise's variance: rescale so
        # that weight is the component's std.
        gain = gain + weight * sigma * np.exp(-2 * (np.pi * sigma) ** 2 * frequency2)
    coefficients = rng.standard_normal((2, n, rows.size, n_cols), dtype=np.float32)
    spectrum = np.zeros((n, h, fx.size), np.complex64)
    spectrum[:, rows, :n_cols] = (coefficients[0] + 1j * coefficients[1]) * gain
    return _standardise(scipy.fft.irfft2(spectrum, s=shape).astype(np.float32))
