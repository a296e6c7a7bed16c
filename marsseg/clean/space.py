"""The feature space the ``embedding`` rule measures isolation in: its distance, and a row's residual off
its neighbours' span.

Two images lie as far apart as the L4 norm of their Euclidean distances in each feature group. A
picture that is not terrain often differs from every terrain view in one or two groups (a cloud
picture in its spectrum, a striped one in its flat areas) and looks ordinary in the other ten. The
Euclidean distance over all columns adds the ordinary groups' distances in too and dilutes the
telling one by about the square root of the number of groups; the L4 norm by the fourth root, while
a terrain view a little unusual in every group does not add up to much.

Measured with ``benchmarks/clean_synthetic.py --sets tuning --seeds 11-40`` (embedding rule alone),
against the Euclidean distance over 30 PCA components it replaced: recall 0.948 instead of 0.917 at
precision 0.983 instead of 0.987 (``min_isolation`` 2.5 instead of 3.0, on AI4Mars one more terrain
image removed). ``GROUP_NORM = 6`` found about as many (0.958 against 0.953 on seeds 1-20) but let
real terrain's own single-group extremes through: ``benchmarks/clean.py`` removed 5 AI4Mars terrain
images (7 with the 2 empty masks, over the aim of 5). ``min_isolation`` later went back to 3.0, for
small real data sets (``benchmarks/clean_real_mix.py``; README, Clean stage).

The distance finds a row's nearest rows; how isolated the row is, is measured by ``residuals``: what
a combination of those rows leaves unexplained (README, Clean stage, and docs/clean.md for the figures).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

GROUP_NORM = 4
# A row's span residual (``residuals``) is shrunk towards its distance from the neighbours' centroid by this
# much: without it, 40 neighbours' span fits part of any row's noise. 1.0 and 3.0 measured alike (3.0 a
# little better at a small budget of real terrain rows; docs/clean.md, "Each change").
SPAN_RIDGE = 3.0
BLOCK_ENTRIES = 1 << 22  # distances per block of the distance matrix (32 MB each): bounds memory


@dataclass(frozen=True)
class FeatureSpace:
    values: np.ndarray  # (n, d) standardised features, the columns of every group side by side
    groups: tuple[slice, ...]  # the columns of each feature group
    names: tuple[str, ...] = ()  # each group's name, where known

    def __len__(self) -> int:
        return len(self.values)

    def weighted(self, weights: Mapping[str, float]) -> FeatureSpace:
        """The same rows with each named group's columns times its weight (default 1); weight 0 drops it."""
        unknown = set(weights) - set(self.names)
        if unknown:
            raise ValueError(f"weights name groups this space lacks: {sorted(unknown)}")
        columns, groups, names, start = [], [], [], 0
        for name, span in zip(self.names, self.groups):
            weight = weights.get(name, 1.0)
            if weight == 0:
                continue
            columns.append(self.values[:, span] * weight)
            groups.append(slice(start, start + span.stop - span.start))
            names.append(name)
            start = groups[-1].stop
        return FeatureSpace(np.hstack(columns), tuple(groups), tuple(names))

    def distances(self, rows: np.ndarray, others: np.ndarray) -> np.ndarray:
        """(len(rows), len(others)) distances between the rows of ``values`` given by the two index arrays."""
        a, b = self.values[rows], self.values[others]
        total = np.zeros((len(a), len(b)))
        for columns in self.groups:
            ga, gb = a[:, columns], b[:, columns]
            norms = (ga**2).sum(1)[:, None] + (gb**2).sum(1)[None, :]
            squared = norms - 2.0 * ga @ gb.T
            # Cancellation leaves rounding noise where two rows are equal: that is distance 0.
            squared[squared <= 1e-12 * norms] = 0.0
            total += squared ** (GROUP_NORM / 2)
        return total ** (1.0 / GROUP_NORM)

    def nearest(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, k) distances and indices of each row's k nearest other rows, nearest first."""
        everyone = np.arange(len(self))
        return self._nearest_among(everyone, everyone, k)

    def nearest_in(self, rows: np.ndarray, pool: np.ndarray, k: int) -> np.ndarray:
        """Indices of each of ``rows``'s k nearest rows among ``pool``, nearest first; a row is not its own
        neighbour (k shrinks to what ``pool`` holds)."""
        return self._nearest_among(rows, pool, k)[1]

    def _nearest_among(self, rows: np.ndarray, pool: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = max(min(k, len(pool) - int(np.isin(rows, pool).any())), 0)
        distances, neighbours = np.empty((len(rows), k)), np.empty((len(rows), k), np.int64)
        if k == 0:
            return distances, neighbours
        chunk = _rows_per_block(len(pool))
        for start in range(0, len(rows), chunk):
            part_rows = rows[start:start + chunk]
            block = self.distances(part_rows, pool)
            block[part_rows[:, None] == pool[None, :]] = np.inf  # a row is not its own neighbour
            part = np.argpartition(block, k - 1, axis=1)[:, :k]
            part_distances = np.take_along_axis(block, part, axis=1)
            order = np.argsort(part_distances, axis=1, kind="stable")
            neighbours[start:start + chunk] = pool[np.take_along_axis(part, order, axis=1)]
            distances[start:start + chunk] = np.take_along_axis(part_distances, order, axis=1)
        return distances, neighbours

    def residuals(self, rows: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
        """How far each of ``rows`` lies off the affine span of its ``neighbours`` (len(rows), k): the
        Euclidean length of what a ridge-regularised (``SPAN_RIDGE``) combination of them, around their
        centroid, leaves unexplained.

        A rare terrain view lies between other terrain views, a blend of them, even where none of them
        is near; a picture that is not terrain lies off their span. Needs far more columns than
        neighbours (here about 220 against 40), or every row lies in its neighbours' span."""
        result = np.empty(len(rows))
        k = neighbours.shape[1]
        if k == 0:
            return np.zeros(len(rows))
        chunk = max(1, BLOCK_ENTRIES // (k * self.values.shape[1]))
        for start in range(0, len(rows), chunk):
            stop = start + chunk
            around = self.values[neighbours[start:stop]]  # (m, k, d)
            centre = around.mean(axis=1, keepdims=True)
            span = around - centre
            target = self.values[rows[start:stop]] - centre[:, 0]
            gram = span @ span.transpose(0, 2, 1) + SPAN_RIDGE * np.eye(k)
            weights = np.linalg.solve(gram, (span @ target[:, :, None]))
            left = target - (span.transpose(0, 2, 1) @ weights)[:, :, 0]
            result[start:stop] = np.linalg.norm(left, axis=1)
        return result

    def min_distance(self, rows: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """Distance from each of ``rows`` to its nearest row among ``pool`` (index arrays)."""
        result = np.empty(len(rows))
        chunk = _rows_per_block(len(pool))
        for start in range(0, len(rows), chunk):
            result[start:start + chunk] = self.distances(rows[start:start + chunk], pool).min(axis=1)
        return result


def _rows_per_block(columns: int) -> int:
    return max(1, BLOCK_ENTRIES // max(columns, 1))
