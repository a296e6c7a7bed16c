"""The rules, each a function of the evidence and the config returning the rows it flags with a score."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.neighbors import NearestNeighbors

from marsseg.clean.embedding import Embedding
from marsseg.clean.fallback import announce
from marsseg.clean.features import intensity_counts, percentiles
from marsseg.clean.space import FeatureSpace

MAP_NEIGHBOURS = 5  # the map's typical spacing: median distance to the 5th nearest point
# A row's isolation: how far it lies off the span of its SPAN_NEIGHBOURS nearest rows outside its group
# (FeatureSpace.residuals). 20, 40 and 80 measured alike on the tuning styles; 5 and 10 found fewer.
SPAN_NEIGHBOURS = 40
FEATURE_NEIGHBOURS = 80  # nearest feature-space rows searched once; rows short of counted ones get an exact search
ISOLATION_PASSES = 3  # re-measurements of isolation from the rows not yet caught
MASK_RIM = 2  # pixels along the frame's edge an annotator may leave unlabelled in a whole-frame label (AI4Mars: 1)


@dataclass
class Evidence:
    """Everything a rule may look at."""
    images: np.ndarray
    masks: np.ndarray
    # The map and the views hold the training rows, then any test images measured beside them as terrain
    # references (find.reference_images); the rules judge the training rows only.
    embedding: Embedding
    views: tuple[FeatureSpace, ...]  # what the embedding rule measures isolation in (features.feature_views)


@dataclass
class RuleResult:
    flagged: np.ndarray  # (n,) bool
    scores: np.ndarray  # (n,) float; meaningful where flagged
    references_flagged: int = 0  # test references the rule would have flagged, were they training rows


def embedding_rule(evidence: Evidence, config) -> RuleResult:
    """Small groups of the t-SNE map that lie far from every other row in feature space, and single
    rows that lie farther still."""
    n = len(evidence.images)
    if not evidence.embedding.is_map:  # embed() has announced why
        return RuleResult(np.zeros(n, bool), np.zeros(n))
    scores = isolation_scores(evidence.views, evidence.embedding.xy, config)
    flagged = scores >= config.min_isolation
    return RuleResult(flagged[:n], scores[:n], int(flagged[n:].sum()))


@dataclass(frozen=True)
class _MeasuredView:
    """One view's nearest rows, and its units: the median residual off the nearest rows' span, and the
    median distance to the nearest row (rows with an exact duplicate left out: they say nothing of spacing)."""
    space: FeatureSpace
    distances: np.ndarray  # (n, FEATURE_NEIGHBOURS), nearest first
    neighbours: np.ndarray
    own: np.ndarray  # each row's residual off its own nearest rows' span, in residual units
    residual_unit: float
    distance_unit: float

    @property
    def span(self) -> int:
        return min(SPAN_NEIGHBOURS, self.neighbours.shape[1])

    @classmethod
    def of(cls, space: FeatureSpace) -> _MeasuredView:
        distances, neighbours = space.nearest(FEATURE_NEIGHBOURS)
        own = space.residuals(np.arange(len(space)), neighbours[:, :SPAN_NEIGHBOURS])
        distinct = distances[:, 0] > 0
        residual_unit = float(np.median(own[distinct])) if distinct.any() else 0.0
        distance_unit = float(np.median(distances[distinct, 0])) if distinct.any() else 0.0
        return cls(space, distances, neighbours, own / residual_unit if residual_unit > 0 else own,
                   residual_unit, distance_unit)


def isolation_scores(views: Sequence[FeatureSpace], xy: np.ndarray, config) -> np.ndarray:
    """Per row, the highest isolation of any small map group it belongs to (0 if none qualifies), or
    its own isolation where that reaches ``min_lone_isolation``. A row's isolation is its residual off
    the span of its ``SPAN_NEIGHBOURS`` nearest counted rows (``FeatureSpace.residuals``), in units of
    the median row's residual off its own nearest rows' span, averaged over the ``views`` (the same
    features weighted in different ways: ``features.VIEWS``).

    A row far from every other row needs no group: t-SNE may lay a lone picture among terrain views
    it does not resemble (its map group is then mostly terrain, whose median isolation is low), but
    in feature space nothing lies near it. Alone, one row is weaker evidence than a group, hence
    the higher threshold.

    Isolation is measured from the rows that stay: outlier groups often sit next to each other
    (two kinds of non-terrain pictures), so after each pass the rows already caught no longer count
    as "outside", until the caught set stops changing (at most ``ISOLATION_PASSES`` passes).
    """
    n = len(xy)
    map_unit = _typical_spacing(xy, MAP_NEIGHBOURS)
    measured = [_MeasuredView.of(space) for space in views]
    if map_unit <= 0 or any(view.residual_unit <= 0 for view in measured):
        announce("the embedding rule is skipped: most rows are exact duplicates of each other")
        return np.zeros(n)

    def mean_over_views(measure: Callable[[_MeasuredView], np.ndarray]) -> np.ndarray:
        return np.mean([measure(view) for view in measured], axis=0)

    # A row as far off its own neighbours' span as a group member must be does not span for the others:
    # outliers of other kinds would otherwise explain an outlier away.
    unusual = mean_over_views(lambda view: view.own) >= config.min_member_isolation
    groupings = _map_groups(xy, map_unit, config)
    alone, everyone = np.arange(n), np.ones(n, bool)  # each row a group of its own

    caught = np.zeros(n, bool)
    for _ in range(ISOLATION_PASSES):
        scores = np.zeros(n)
        for labels, candidate in groupings:
            outside = mean_over_views(lambda view: _isolation_outside(
                view, labels, candidate, caught | unusual) / view.residual_unit)
            group = _group_medians(labels, outside)[labels]
            # A member lies off the outside rows' span and away from the nearest of them: a terrain row
            # the map put at the edge of an outlier group has a terrain row close by, however thin the
            # span left to it outside the group.
            nearest = mean_over_views(lambda view: _distance_outside(
                view, labels, candidate, caught) / view.distance_unit)
            member_ok = candidate & (np.minimum(outside, nearest) >= config.min_member_isolation)
            scores = np.maximum(scores, np.where(member_ok, group, 0.0))
        lone = mean_over_views(lambda view: _isolation_outside(
            view, alone, everyone, caught | unusual) / view.residual_unit)
        scores = np.maximum(scores, np.where(lone >= config.min_lone_isolation, lone, 0.0))
        now_caught = scores >= config.min_isolation
        if np.array_equal(now_caught, caught):
            break
        caught = now_caught
    return scores


def _map_groups(xy: np.ndarray, map_unit: float, config) -> list[tuple[np.ndarray, np.ndarray]]:
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


def _isolation_outside(view: _MeasuredView, labels, candidate, caught) -> np.ndarray:
    """Each candidate row's residual off the span of its ``span`` nearest rows outside its group that are
    not already caught (other rows: 0)."""
    features, neighbours, span = view.space, view.neighbours, view.span
    n = len(features)
    counted = (labels[neighbours] != labels[:, None]) & ~caught[neighbours]
    first = np.argsort(~counted, axis=1, kind="stable")[:, :span]  # counted neighbours, nearest first
    around = np.take_along_axis(neighbours, first, axis=1)
    outside = np.zeros(n)
    searched = candidate & (counted.sum(axis=1) >= span)
    rows = np.flatnonzero(searched)
    outside[rows] = features.residuals(rows, around[rows])
    # Rows with too few counted rows among their searched neighbours: search all counted rows.
    unresolved = candidate & ~searched
    alone = unresolved & (np.bincount(labels)[labels] == 1)
    if alone.any():  # a group of one row: every such row searches the same pool (not itself)
        rows = np.flatnonzero(alone)
        outside[rows] = features.residuals(rows, features.nearest_in(rows, np.flatnonzero(~caught), span))
    for group in np.unique(labels[unresolved & ~alone]):
        rows = np.flatnonzero(unresolved & (labels == group))
        pool = np.flatnonzero((labels != group) & ~caught)
        outside[rows] = features.residuals(rows, features.nearest_in(rows, pool, span))
    return outside


def _distance_outside(view: _MeasuredView, labels, candidate, caught) -> np.ndarray:
    """Each candidate row's feature distance to the nearest row outside its group that is not
    already caught (other rows: 0)."""
    features, distances, neighbours = view.space, view.distances, view.neighbours
    n = len(features)
    counted = (labels[neighbours] != labels[:, None]) & ~caught[neighbours]
    outside = distances[np.arange(n), np.argmax(counted, axis=1)]
    # Rows with no counted row among their searched neighbours: search all counted rows.
    unresolved = candidate & ~counted.any(axis=1)
    for group in np.unique(labels[unresolved]):
        rows = np.flatnonzero(unresolved & (labels == group))
        pool = np.flatnonzero((labels != group) & ~caught)
        outside[rows] = features.min_distance(rows, pool) if pool.size else 0.0
    return np.where(candidate, outside, 0.0)


def _group_medians(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Median of ``values`` within each label 0..max (vectorised: sort by label, then value)."""
    order = np.lexsort((values, labels))
    ordered = values[order]
    counts = np.bincount(labels)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    low, high = starts + (counts - 1) // 2, starts + counts // 2
    return (ordered[low] + ordered[high]) / 2


def shared_mask_rule(evidence: Evidence, config) -> RuleResult:
    """Non-trivial masks repeated byte for byte in more than ``max_mask_repeats`` rows.

    A trivial mask recurs naturally and is exempt: all background, or fewer than ``min_mask_classes``
    labelled classes with background only on the frame's rim (an annotator's "all soil" leaves the
    outermost row or column unlabelled; in AI4Mars such masks recur up to 51 times). Background inside
    the frame makes a mask a drawing of this frame's regions, which real labels never repeat dozens
    of times: background plus one class repeated is as suspicious as two classes repeated.
    """
    masks = evidence.masks
    n = len(masks)
    flat = np.ascontiguousarray(masks.reshape(n, -1))
    keys = flat.view(np.dtype((np.void, flat.shape[1]))).ravel()
    _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
    trivial = np.array([is_trivial_mask(masks[row], config.min_mask_classes) for row in first], bool)
    flagged = ((counts > config.max_mask_repeats) & ~trivial)[inverse]
    return RuleResult(flagged, np.where(flagged, counts[inverse], 0).astype(float))


def is_trivial_mask(mask: np.ndarray, min_mask_classes: int) -> bool:
    """All background, or fewer than ``min_mask_classes`` labelled classes and background only on the rim."""
    background = mask == 0
    if background.all():
        return True
    labelled_classes = np.count_nonzero(np.bincount(mask[~background], minlength=256)[1:])
    inner = background[MASK_RIM:-MASK_RIM, MASK_RIM:-MASK_RIM]
    return labelled_classes < min_mask_classes and not inner.any()


DEGENERATE_FLAT, DEGENERATE_NARROW, DEGENERATE_EMPTY_MASK = 1, 2, 4


def degenerate_rule(evidence: Evidence, config) -> RuleResult:
    """Flat images, images with a very narrow grey range, and masks that are all background."""
    images, masks = evidence.images, evidence.masks
    n = len(images)
    std = images.reshape(n, -1).std(axis=1)
    low, high = percentiles(intensity_counts(images), (0.01, 0.99)).T
    code = (DEGENERATE_FLAT * (std < config.min_image_std)
            + DEGENERATE_NARROW * ((high - low) < config.min_image_range)
            + DEGENERATE_EMPTY_MASK * (masks.reshape(n, -1).max(axis=1) == 0))
    return RuleResult(code > 0, code.astype(float))


RULES: dict[str, Callable[[Evidence, Any], RuleResult]] = {
    "embedding": embedding_rule,
    "shared_mask": shared_mask_rule,
    "degenerate": degenerate_rule,
}

