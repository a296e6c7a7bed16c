"""Per-tile statistics: what gives away a picture that fills only part of a terrain frame.

A photograph pasted over a third or half of a terrain frame shifts the whole-frame statistics only a
little; inside its tiles it is plain to see. Each frame is cut into 4 x 8 tiles of 16 x 16 pixels and
each tile described by statistics that tell a picture from terrain: terrain has grain at every pixel
(its median gradient is a good share of its spread) and gradients that vary smoothly in size, whereas
a photograph, drawing or page has flat areas (median gradient near zero), hard edges (a long tail of
large gradients), edges straight across the tile, and a few flat tones.

A tile is compared with the tiles at the same place in every frame of the data set (sky sits at the
top of terrain views, rover hardware in the bottom corners): a robust z-score per statistic, signed
so that large means "less like terrain". A frame is described, per statistic, by the mean z of its
4 and of its 8 most atypical tiles (a paste over 30-60% of a frame covers about 10 to 19 tiles).

The paste's border is looked for too (``edge_lines``): a straight run of grey-level steps down a
column or along a row, or of texture-energy steps where the paste matches its terrain's brightness
(``texture_lines``).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

TILE = 16  # pixels per tile side: 4 x 8 tiles of a 64x128 frame (IMAGE_SHAPE)
TOP_TILES = (4, 8)  # a frame's atypicality: the mean z of its most atypical k tiles
TILE_Z_CLIP = 20.0  # one tile's extreme statistic must not own the frame's features
FLAT_LEVEL = 0.05  # "flat": 3x3-smoothed gradient below this x the frame's std
TONE_WIDTH = 2  # grey levels either side of a tile's commonest level that count as its flat tone
# Statistic -> the sign that makes it "less like terrain"; grouped as the embedding weighs them.
TILE_GROUPS = {
    "tile_texture": {"grain": -1, "edge_sharpness": 1},
    "tile_shapes": {"flat": 1, "straight": 1, "flat_tone": 1},
}
TILE_STATISTIC_NAMES = ("grain", "edge_sharpness", "flat", "straight", "flat_tone")


def _tiles(values: np.ndarray) -> np.ndarray:
    """(n, H, W) -> (n, tiles, TILE, TILE), tiles in row-major order."""
    n, h, w = values.shape
    return values.reshape(n, h // TILE, TILE, w // TILE, TILE).transpose(0, 1, 3, 2, 4).reshape(n, -1, TILE, TILE)


def tile_statistics(images: np.ndarray) -> np.ndarray:
    """(n, tiles, len(TILE_STATISTIC_NAMES)) statistics of each tile of (n, H, W) uint8 frames."""
    n = len(images)
    x = images.astype(np.float32)
    frame_std = np.maximum(x.std(axis=(1, 2)), 1.0)[:, None, None]
    grad_x, grad_y = np.zeros_like(x), np.zeros_like(x)
    grad_x[:, :, :-1] = np.diff(x, axis=2)
    grad_y[:, :-1, :] = np.diff(x, axis=1)
    smooth = ndi.uniform_filter(x, size=(1, 3, 3))
    magnitude = np.full_like(x, np.inf)  # the last row and column have no gradient: never "flat"
    magnitude[:, :-1, :-1] = np.hypot(np.diff(smooth, axis=2)[:, :-1, :], np.diff(smooth, axis=1)[:, :, :-1])

    tile_std = np.maximum(_tiles(x).std(axis=(2, 3)), 0.5)
    abs_grad = _tiles(np.abs(grad_x) + np.abs(grad_y)).reshape(n, -1, TILE * TILE)
    q50, q99 = np.quantile(abs_grad, (0.5, 0.99), axis=2)
    # An edge straight along a tile's column adds its steps up over the tile's rows; texture's cancel.
    gx, gy = _tiles(grad_x), _tiles(grad_y)
    columns = np.abs(gx.sum(axis=2)) / (np.abs(gx).sum(axis=2) + 1e-6)
    rows = np.abs(gy.sum(axis=3)) / (np.abs(gy).sum(axis=3) + 1e-6)
    return np.stack([
        q50 / tile_std,  # grain
        np.log((q99 + 1.0) / (q50 + 1.0)),  # edge sharpness
        _tiles(magnitude < FLAT_LEVEL * frame_std).mean(axis=(2, 3)),  # flat
        np.maximum(columns.max(axis=2), rows.max(axis=2)),  # straight
        _flat_tone(images),
    ], axis=2).astype(np.float32)


def _flat_tone(images: np.ndarray) -> np.ndarray:
    """(n, tiles): share of each tile's pixels within TONE_WIDTH grey levels of its commonest level."""
    levels = _tiles(images).reshape(len(images), -1, TILE * TILE).astype(np.int64)
    n_tiles = levels.shape[0] * levels.shape[1]
    offsets = (np.arange(n_tiles, dtype=np.int64) * 256).reshape(levels.shape[:2])[..., None]
    counts = np.bincount((levels + offsets).ravel(), minlength=n_tiles * 256).reshape(*levels.shape[:2], 256)
    window = np.cumsum(np.pad(counts, ((0, 0), (0, 0), (TONE_WIDTH + 1, TONE_WIDTH))), axis=2)
    width = 2 * TONE_WIDTH + 1
    return (window[..., width:] - window[..., :-width]).max(axis=2) / (TILE * TILE)


def atypical_tiles(stats: np.ndarray) -> dict[str, np.ndarray]:
    """Frame features, per group of TILE_GROUPS, from the (n, tiles, k) statistics of every frame."""
    median = np.median(stats, axis=0)
    spread = 1.4826 * np.median(np.abs(stats - median), axis=0)
    spread = np.maximum(spread, 0.1 * stats.std(axis=0) + 1e-6)  # a statistic constant at a place
    z = np.clip((stats - median) / spread, -TILE_Z_CLIP, TILE_Z_CLIP)
    groups = {}
    for group, signs in TILE_GROUPS.items():
        columns = []
        for name, sign in signs.items():
            ranked = -np.sort(-sign * z[:, :, TILE_STATISTIC_NAMES.index(name)], axis=1)
            columns += [ranked[:, :k].mean(axis=1) for k in TOP_TILES]
        groups[group] = np.column_stack(columns)
    return groups


LINE_CONTEXT = 4  # a step is compared with the steps this many pixels either side along its row (column)
# The median of those 2 * LINE_CONTEXT + 1 = 9 steps: Paeth's median-of-9 network, 19 compare-exchanges of whole
# arrays after which slot 4 holds the median. Exactly ndimage.median_filter's values, several times faster
# (README, Performance: the clean stage on AI4Mars spent most of its time on these medians).
MEDIAN_OF_9 = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7),
               (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))
MEDIAN_CHUNK = 16  # frames per pass of the network: its 9 slots stay in the processor's cache
# Lengths of the straight runs looked for, in pixels. A picture pasted over 30-60% of a 64x128 frame is at
# least 19 rows tall and 38 columns wide (``marsseg.synthetic``); the longer run ignores shorter lines.
COLUMN_RUNS = (16, 32)  # rows down one column: a paste's left and right sides
ROW_RUNS = (32, 64)  # columns along one row: its top and bottom


def edge_lines(images: np.ndarray) -> np.ndarray:
    """(n, 4): how strongly the straightest vertical and horizontal lines stand out.

    A pasted picture's border is a line of steps exactly along one column (its sides) or one row (its
    top and bottom), for as far as the paste reaches; terrain's edges wander, so their steps spread over
    neighbouring columns or rows. Each step is compared with the median step of its neighbours along
    its row (column), as a log ratio, and a frame is described by the best mean ratio over any straight
    run of ``COLUMN_RUNS`` rows down one column, and of ``ROW_RUNS`` columns along one row.
    Runs rather than fixed bands: a paste's border starts and stops anywhere, and a band it half
    covers halves its evidence (measured on the tuning styles, ``benchmarks/clean_synthetic.py``)."""
    x = images.astype(np.float32)
    down_columns = _step_ratios(x).transpose(0, 2, 1)  # (n, columns, rows)
    along_rows = _step_ratios(x.transpose(0, 2, 1)).transpose(0, 2, 1)  # (n, rows, columns)
    return np.column_stack([_best_run(down_columns, length) for length in COLUMN_RUNS]
                           + [_best_run(along_rows, length) for length in ROW_RUNS])


def _step_ratios(x: np.ndarray) -> np.ndarray:
    """(n, h, w - 1): log ratio of each horizontal step to the median of its row's neighbouring steps."""
    steps = np.abs(np.diff(x, axis=2))
    context = _running_median(steps)
    return np.log((steps + 1.0) / (context + 1.0))


def _running_median(values: np.ndarray) -> np.ndarray:
    """(n, lines, positions): the median of each value and the ``LINE_CONTEXT`` values either side of it along
    its line, the line's end values repeated past its ends (``ndimage.median_filter(values, size=(1, 1, 9),
    mode="nearest")``)."""
    n, _, positions = values.shape
    result = np.empty_like(values)
    for start in range(0, n, MEDIAN_CHUNK):
        chunk = values[start:start + MEDIAN_CHUNK]
        padded = np.pad(chunk, ((0, 0), (0, 0), (LINE_CONTEXT, LINE_CONTEXT)), mode="edge")
        slots = [np.ascontiguousarray(padded[:, :, shift:shift + positions]) for shift in range(2 * LINE_CONTEXT + 1)]
        low = np.empty_like(slots[0])
        for i, j in MEDIAN_OF_9:
            np.minimum(slots[i], slots[j], out=low)
            np.maximum(slots[i], slots[j], out=slots[j])
            slots[i], low = low, slots[i]
        result[start:start + MEDIAN_CHUNK] = slots[4]
    return result


def _best_run(values: np.ndarray, length: int) -> np.ndarray:
    """(n,): the highest mean of ``values`` (n, lines, positions) over ``length`` consecutive positions
    of one line. A longer border holds a run of ``length`` as strong as itself."""
    n, lines, positions = values.shape
    length = min(length, positions)
    sums = np.cumsum(np.ascontiguousarray(values), axis=2, dtype=np.float64)
    totals = sums[:, :, length - 1:] - np.pad(sums, ((0, 0), (0, 0), (1, 0)))[:, :, :positions - length + 1]
    return totals.reshape(n, -1).max(axis=1) / length


TEXTURE_WINDOW = 3  # pixels: gradient sizes are averaged over this square before their borders are traced
# edge_lines adds 1 before its log ratio, which suits grey levels: log-energy steps are put on that scale
LOG_ENERGY_SCALE = 32.0


def texture_lines(images: np.ndarray) -> np.ndarray:
    """(n, 4): ``edge_lines`` of the frame's texture-energy map (log of the local mean gradient size).

    A pasted picture whose brightness matches the terrain around it leaves no step in grey level, but
    its texture (finer, coarser, smoother, striped) changes along the same straight border."""
    x = images.astype(np.float32)
    grad = np.zeros_like(x)
    grad[:, :, :-1] += np.abs(np.diff(x, axis=2))
    grad[:, :-1, :] += np.abs(np.diff(x, axis=1))
    energy = np.log1p(ndi.uniform_filter(grad, size=(1, TEXTURE_WINDOW, TEXTURE_WINDOW)))
    return edge_lines(energy * LOG_ENERGY_SCALE)

