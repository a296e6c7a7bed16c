"""The clean stage: outlier rules on synthetic and real data, fallbacks on odd input, the stage's files."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import ndimage as ndi
from sklearn.metrics import roc_auc_score

from marsseg import IMAGE_SHAPE
from marsseg.datasets import LabelledSet, load_labelled, save_labelled
from marsseg.errors import UserError
from marsseg.clean import CleanWarning, find_outliers, remove_outliers, find as clean_find
from marsseg.clean.embedding import Embedding
from marsseg.clean.features import VIEWS, feature_views, image_features, standardise
from marsseg.clean.tiles import MEDIAN_CHUNK, _best_run, _running_median, edge_lines, texture_lines
from marsseg.clean import rules as clean_rules
from marsseg.clean import scattering
from marsseg.clean.rules import SPAN_NEIGHBOURS, Evidence, degenerate_rule, isolation_scores, shared_mask_rule
from marsseg.clean.space import SPAN_RIDGE, FeatureSpace
from marsseg.config import CleanConfig, read_params, validate_group
from marsseg.synthetic import HELD_OUT_STYLES, TUNING_STYLES, generate, styled_outliers

REPO = Path(__file__).resolve().parents[1]
SHARED_NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "ai4mars64x128.npz"
N_TRAIN, SYNTHETIC_SEED, SEED = 600, 1, 42


def repo_config(**changes) -> CleanConfig:
    """The params.yaml settings, so the tests check what the pipeline runs."""
    return validate_group("clean", read_params(REPO / "params.yaml")["clean"]).model_copy(update=changes)


def precision_recall(removed: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    hits = int((removed & truth).sum())
    return hits / max(int(removed.sum()), 1), hits / int(truth.sum())


@pytest.fixture(scope="module")
def synthetic():
    data = generate(n_train=N_TRAIN, n_test=4, outlier_fraction=0.04, seed=SYNTHETIC_SEED)
    truth = np.zeros(N_TRAIN, bool)
    truth[data.outlier_rows] = True
    labelled = LabelledSet(data.train_images, data.train_masks, np.arange(N_TRAIN), data.test_images)
    return labelled, truth


@pytest.fixture(scope="module")
def all_rules_report(synthetic):
    data, _ = synthetic
    return find_outliers(data, repo_config(), seed=SEED)


def test_all_rules_find_the_injected_outliers(synthetic, all_rules_report):
    _, truth = synthetic
    precision, recall = precision_recall(all_rules_report.removed, truth)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    # The injected rows share one mask: that rule alone catches every one of them and nothing else.
    assert np.array_equal(all_rules_report.results["shared_mask"].flagged, truth)


def disguise(data: LabelledSet, truth: np.ndarray) -> LabelledSet:
    """Every injected outlier gets a different terrain row's mask: only its picture can give it away."""
    rng = np.random.default_rng(0)
    masks = data.masks.copy()
    masks[truth] = data.masks[rng.choice(np.flatnonzero(~truth), size=int(truth.sum()), replace=False)]
    return LabelledSet(data.images, masks, data.index, data.test_images)


def test_embedding_rule_alone_finds_them_by_content(synthetic, all_rules_report):
    data, truth = synthetic
    report = find_outliers(disguise(data, truth), repo_config(rules=("embedding",)), seed=SEED)
    precision, recall = precision_recall(report.removed, truth)
    # This data set: all 24 outliers and no terrain row. Over generator seeds 1-10 (500 rows) it finds
    # 99.1% of them, no terrain row: `benchmarks/clean_synthetic.py --sets default --seeds 1-10`.
    assert precision >= 0.95, (precision, recall)
    assert recall >= 0.95, (precision, recall)
    # Same images, same seed: the same map whatever the masks (the map is content-only, and
    # deterministic).
    np.testing.assert_array_equal(report.embedding.xy, all_rules_report.embedding.xy)


def test_embedding_rule_alone_cleans_the_pipelines_own_data_set():
    raw = read_params(REPO / "params.yaml")
    synthetic, seed = validate_group("data", raw["data"]).synthetic, raw["seed"]
    generated = generate(n_train=synthetic.n_train, n_test=1, outlier_fraction=synthetic.outlier_fraction,
                         seed=seed, rock_image_fraction=synthetic.rock_image_fraction)
    truth = np.zeros(synthetic.n_train, bool)
    truth[generated.outlier_rows] = True
    data = LabelledSet(generated.train_images, generated.train_masks, np.arange(len(truth)))
    report = find_outliers(disguise(data, truth), repo_config(rules=("embedding",)), seed=seed)
    precision, recall = precision_recall(report.removed, truth)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)


def test_report_files_list_every_rule_but_remove_each_row_once(synthetic, all_rules_report):
    data, truth = synthetic
    table = all_rules_report.table()
    assert list(table.columns) == ["index", "rule", "score"]
    assert not table.duplicated(["index", "rule"]).any()
    twice = table["index"].value_counts()
    assert (twice == 2).sum() >= 0.5 * truth.sum(), "outliers should be caught by embedding and shared_mask"
    cleaned = remove_outliers(data, all_rules_report)
    metrics = all_rules_report.metrics()
    assert metrics["removed_total"] == table["index"].nunique() == len(data) - len(cleaned)
    assert metrics["rows_out"] + metrics["removed_total"] == metrics["rows_in"] == len(data)
    assert not np.isin(cleaned.index, table["index"]).any()
    assert cleaned.test_images is data.test_images

    map_table = all_rules_report.map_table()
    assert list(map_table.columns) == ["x", "y", "outlier", "rule"] and len(map_table) == len(data)
    assert set(map_table["rule"][map_table["outlier"] == 1]) <= {
        "+".join(r) for r in (("embedding",), ("shared_mask",), ("degenerate",), ("embedding", "shared_mask"),
                              ("embedding", "degenerate"), ("shared_mask", "degenerate"),
                              ("embedding", "shared_mask", "degenerate"))}
    assert (map_table["rule"][map_table["outlier"] == 0] == "kept").all()


# --------------------------------------------------------------------------- single rules


def tiles(n: int, seed: int = 0) -> np.ndarray:
    """Grainy terrain-like pictures with a healthy grey range."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(100, 25, (n, *IMAGE_SHAPE)), 0, 255).astype(np.uint8)


def evidence(images: np.ndarray, masks: np.ndarray) -> Evidence:
    n = len(images)
    no_features = FeatureSpace(np.zeros((n, 1)), (slice(0, 1),))
    return Evidence(images, masks, Embedding(np.zeros((n, 2)), "none"), (no_features,))


def test_shared_mask_rule_spares_masks_that_recur_naturally():
    n = 30
    masks = np.random.default_rng(1).integers(0, 5, (n, *IMAGE_SHAPE)).astype(np.uint8)
    two_class = np.full(IMAGE_SHAPE, 2, np.uint8)
    two_class[:, 64:] = 3
    masks[:7] = two_class  # 7 > max_mask_repeats=5: suspicious
    masks[7:15] = 1  # all soil, 8 times: natural
    masks[15:22] = 2
    masks[15:22, 0, :] = masks[15:22, :, 0] = 0  # all bedrock but an unlabelled rim, as in AI4Mars: natural
    masks[22:30] = 0  # all background, 8 times: natural here (the degenerate rule's business)
    result = shared_mask_rule(evidence(tiles(n), masks), repo_config(max_mask_repeats=5))
    assert np.flatnonzero(result.flagged).tolist() == list(range(7))
    assert (result.scores[:7] == 7).all()


@pytest.mark.parametrize("background", ["sky", "corner", "thick rim"])
def test_shared_mask_rule_flags_background_plus_one_class_repeated(background):
    n = 20
    masks = np.random.default_rng(1).integers(0, 5, (n, *IMAGE_SHAPE)).astype(np.uint8)
    one_class = np.full(IMAGE_SHAPE, 1, np.uint8)
    if background == "sky":
        one_class[:20] = 0
    elif background == "corner":
        one_class[40:, 100:] = 0
    else:
        one_class[:4] = 0  # wider than an annotator's rim: a region of this frame
    masks[:6] = one_class
    result = shared_mask_rule(evidence(tiles(n), masks), repo_config(max_mask_repeats=5))
    assert np.flatnonzero(result.flagged).tolist() == list(range(6))
    # ... but not when it recurs no more than max_mask_repeats times
    assert not shared_mask_rule(evidence(tiles(n), masks), repo_config(max_mask_repeats=6)).flagged.any()


def test_degenerate_rule_names_each_failed_check():
    images, masks = tiles(4), np.ones((4, *IMAGE_SHAPE), np.uint8)
    images[0] = 77  # flat (and so a narrow range too)
    images[1] = 120 + (np.arange(IMAGE_SHAPE[1]) % 2).astype(np.uint8)  # 2 grey levels: narrow, std 0.5
    images[2] = np.where(np.arange(IMAGE_SHAPE[1]) < 64, 10, 200).astype(np.uint8)  # full range: fine
    masks[3] = 0  # nothing labelled
    result = degenerate_rule(evidence(images, masks), repo_config())
    assert result.flagged.tolist() == [True, True, False, True]
    assert result.scores.tolist() == [1 + 2, 1 + 2, 0, 4]


# --------------------------------------------------------------------------- partial outliers


def test_edge_lines_notice_the_straight_border_of_a_pasted_picture():
    terrain = generate(20, 1, 0.0, 4).train_images
    pasted = terrain.copy()
    pasted[:, 10:50, 30:100] = 120  # a flat picture over a third of each frame
    before, after = edge_lines(terrain), edge_lines(pasted)
    assert after[:, 0].min() > before[:, 0].max() + 0.5, (before[:, 0], after[:, 0])


def test_texture_lines_notice_a_pasted_picture_with_the_terrain_brightness():
    """A smooth paste, brightness matched to the terrain it covers: hardly a grey-level step at its
    border, but the texture changes there."""
    terrain = generate(20, 1, 0.0, 4).train_images
    pasted = terrain.copy().astype(np.float32)
    region = pasted[:, 10:50, 30:100]
    mean = region.mean(axis=(1, 2), keepdims=True)
    pasted[:, 10:50, 30:100] = mean + 0.15 * (region - mean)  # the same picture, nearly flat
    pasted = np.clip(np.rint(pasted), 0, 255).astype(np.uint8)
    before, after = texture_lines(terrain), texture_lines(pasted)
    assert after[:, 0].min() > before[:, 0].max() + 0.25, (before[:, 0], after[:, 0])
    grey_before, grey_after = edge_lines(terrain), edge_lines(pasted)
    assert grey_after[:, 0].min() < grey_before[:, 0].max(), "grey levels alone should not tell them apart"


def test_lines_follow_a_border_that_starts_and_stops_anywhere():
    """Stripes over rows 8-30, brightness matched: their sides cross a 16-row boundary (a band-wise
    sum would half-cover them) and stripes step in grey level inside the paste too."""
    terrain = generate(20, 1, 0.0, 4).train_images
    pasted = terrain.copy().astype(np.float32)
    region = pasted[:, 8:30, 30:100]
    stripes = 15 * np.sin(2 * np.pi * np.arange(8, 30) / 6)[:, None]
    pasted[:, 8:30, 30:100] = region.mean(axis=(1, 2), keepdims=True) + stripes
    pasted = np.clip(np.rint(pasted), 0, 255).astype(np.uint8)
    for lines, margin in ((edge_lines, 0.0), (texture_lines, 0.25)):
        before, after = lines(terrain), lines(pasted)
        assert after[:, 0].min() > before[:, 0].max() + margin, (lines.__name__, before[:, 0], after[:, 0])


def test_best_run_is_the_best_mean_over_every_run_of_its_length():
    values = np.random.default_rng(0).normal(size=(3, 4, 20))
    for length in (1, 3, 7, 20):
        expected = [max(values[i, line, start:start + length].mean() for line in range(4)
                        for start in range(21 - length)) for i in range(3)]
        assert np.allclose(_best_run(values, length), expected)


@pytest.mark.parametrize("shape", [(MEDIAN_CHUNK + 3, 5, 127), (2, 3, 4), (1, 1, 1)])
def test_running_median_is_ndimage_median_filter(shape):
    """Exact, with ties, lines shorter than the window and a last chunk of fewer frames."""
    rng = np.random.default_rng(1)
    for values in (rng.normal(size=shape).astype(np.float32), rng.integers(0, 4, shape).astype(np.float32)):
        expected = ndi.median_filter(values, size=(1, 1, 9), mode="nearest")
        np.testing.assert_array_equal(_running_median(values), expected)
    transposed = rng.normal(size=shape[::-1]).astype(np.float32).transpose(2, 1, 0)  # not contiguous
    expected = ndi.median_filter(transposed, size=(1, 1, 9), mode="nearest")
    np.testing.assert_array_equal(_running_median(transposed), expected)


def test_partial_frame_features_rank_pasted_pictures_above_terrain():
    generated = generate(150, 1, 0.1, 3, outlier_styles=["paste_shapes", "paste_text", "paste_checkerboard"])
    truth = np.zeros(150, bool)
    truth[generated.outlier_rows] = True
    groups = image_features(generated.train_images)
    for name in ("edge_lines", "tile_texture", "tile_shapes"):
        values = groups[name]
        score = ((values - np.median(values, axis=0)) / values.std(axis=0)).mean(axis=1)
        assert roc_auc_score(truth, score) >= 0.9, name


# --------------------------------------------------------------------------- scattering moments


def _direct_scattering(images: np.ndarray) -> np.ndarray:
    """The moments computed at full resolution throughout, as written down: what the decimated grids of
    ``scattering_moments`` must reproduce."""
    x = images.astype(np.float64)
    x = (x - x.mean(axis=(1, 2), keepdims=True)) / (x.std(axis=(1, 2), keepdims=True) + scattering.CONTRAST_FLOOR)
    scales, orientations = scattering.SCALES, scattering.ORIENTATIONS
    first = np.zeros((len(x), scales, orientations))
    second = np.zeros((len(x), scales, scales, orientations))
    for fine in range(scales):
        for orientation in range(orientations):
            size = np.abs(np.fft.ifft2(np.fft.fft2(x) * scattering._filter(fine, orientation, 1)))
            first[:, fine, orientation] = size.mean(axis=(1, 2))
            for coarse in range(fine + 1, scales):
                for other in range(orientations):
                    response = np.abs(np.fft.ifft2(np.fft.fft2(size) * scattering._filter(coarse, other, 1)))
                    second[:, fine, coarse, (other - orientation) % orientations] += response.mean(axis=(1, 2))
    second /= orientations
    columns = [np.log(first.reshape(len(x), -1) + 1e-6)]
    for fine in range(scales):
        level = first[:, fine].mean(axis=1, keepdims=True)
        columns += [np.log(second[:, fine, coarse] / (level + 1e-6) + 1e-6) for coarse in range(fine + 1, scales)]
    return np.column_stack(columns)


def test_scattering_moments_on_decimated_grids_are_the_full_resolution_ones():
    images = generate(8, 1, 0.4, 5, outlier_styles=["clouds", "text"]).train_images
    moments = scattering.scattering_moments(images)
    assert moments.shape == (8, scattering.MOMENTS) == (8, 40) and np.isfinite(moments).all()
    np.testing.assert_allclose(moments, _direct_scattering(images), atol=5e-3)


def test_scattering_moments_ignore_position_brightness_and_batching():
    rng = np.random.default_rng(0)
    images = rng.integers(60, 120, size=(5, *IMAGE_SHAPE)).astype(np.uint8)
    moments = scattering.scattering_moments(images)
    brighter = images + np.uint8(100)
    # Exact for shifts the coarsest grid holds; off it, only its sampling of a smooth response moves.
    for shift, tolerance in (((12, 36), 1e-5), ((11, 37), 2e-3)):
        shifted = np.roll(images, shift, axis=(1, 2))
        np.testing.assert_allclose(scattering.scattering_moments(shifted), moments, atol=tolerance)
    np.testing.assert_allclose(scattering.scattering_moments(brighter), moments, atol=1e-4)
    pieces = [scattering._moments(images[:2], 1), scattering._moments(images[2:], 1)]
    np.testing.assert_allclose(np.concatenate(pieces), moments, atol=1e-6)
    flat = np.full((1, *IMAGE_SHAPE), 128, np.uint8)
    assert np.isfinite(scattering.scattering_moments(flat)).all()


def test_second_order_moments_tell_clustered_detail_from_grain_everywhere():
    """The same grain over the whole frame, and packed into two squares at the same total energy: the size
    of the finest detail varies at the coarsest scale only where it is packed."""
    rng = np.random.default_rng(1)
    grain = rng.normal(size=IMAGE_SHAPE)
    clustered = np.zeros(IMAGE_SHAPE)
    clustered[16:48, 16:48] = clustered[16:48, 80:112] = 2.0 * grain[16:48, 16:48]
    frames = np.stack([128 + 20 * grain, 128 + 20 * clustered]).round().clip(0, 255).astype(np.uint8)
    everywhere, packed = scattering.scattering_moments(frames)
    n_first = scattering.SCALES * scattering.ORIENTATIONS
    fine_to_coarsest = slice(n_first + 2 * scattering.ORIENTATIONS, n_first + 3 * scattering.ORIENTATIONS)
    assert packed[fine_to_coarsest].min() > everywhere[fine_to_coarsest].max() + 1.0


def test_embedding_rule_alone_finds_outlier_styles_it_was_not_developed_with():
    """Pages, grids, portraits, rooms and product shots, whole or pasted over 30-60% of a frame.

    This data set: every one found, one terrain row removed. Pooled over generator seeds 1-10 the
    rule alone finds 96.0% (precision 0.975) and all rules 100% (precision 0.976); over seeds 71-100
    94.0% (0.976) and 98.7% (0.977): `benchmarks/clean_synthetic.py --sets held-out --seeds 71-100`.
    """
    generated = generate(n_train=500, n_test=1, outlier_fraction=0.04, seed=2, rock_image_fraction=0.12,
                         outlier_styles=HELD_OUT_STYLES)
    truth = np.zeros(500, bool)
    truth[generated.outlier_rows] = True
    data = LabelledSet(generated.train_images, generated.train_masks, np.arange(500))
    report = find_outliers(disguise(data, truth), repo_config(rules=("embedding",)), seed=2)
    precision, recall = precision_recall(report.removed, truth)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)


def test_feature_space_distance_is_the_l4_norm_of_the_groups_distances():
    rng = np.random.default_rng(0)
    space = FeatureSpace(rng.normal(size=(40, 5)), (slice(0, 2), slice(2, 5)))
    everyone = np.arange(40)
    a, b = space.values[:, None, :], space.values[None, :, :]
    per_group = [np.linalg.norm(a[..., g] - b[..., g], axis=2) for g in space.groups]
    expected = (per_group[0] ** 4 + per_group[1] ** 4) ** 0.25
    np.testing.assert_allclose(space.distances(everyone, everyone), expected, atol=1e-9)

    distances, neighbours = space.nearest(3)
    others = np.where(np.eye(40, dtype=bool), np.inf, expected)
    np.testing.assert_array_equal(neighbours, np.argsort(others, axis=1)[:, :3])
    np.testing.assert_allclose(distances, np.sort(others, axis=1)[:, :3], atol=1e-9)
    np.testing.assert_allclose(space.min_distance(everyone[:5], everyone[10:]), expected[:5, 10:].min(1), atol=1e-9)


def test_residuals_are_what_a_ridge_combination_of_the_neighbours_leaves():
    rng = np.random.default_rng(1)
    space = FeatureSpace(rng.normal(size=(60, 30)), (slice(0, 10), slice(10, 30)))
    rows = np.array([0, 7, 59])
    neighbours = space.nearest_in(rows, np.arange(60), 12)
    assert neighbours.shape == (3, 12) and not (neighbours == rows[:, None]).any()
    np.testing.assert_array_equal(neighbours, space.nearest(12)[1][rows])
    for row, around in zip(rows, neighbours):
        centre = space.values[around].mean(axis=0)
        span = (space.values[around] - centre).T
        target = space.values[row] - centre
        weights = np.linalg.solve(span.T @ span + SPAN_RIDGE * np.eye(12), span.T @ target)
        expected = np.linalg.norm(target - span @ weights)
        assert space.residuals(np.array([row]), around[None])[0] == pytest.approx(expected, rel=1e-9)
    assert space.nearest_in(rows, np.array([3, 4]), 12).shape == (3, 2)


def test_a_rare_view_between_terrain_views_is_less_isolated_than_a_picture_off_them():
    """Why isolation is a residual off the neighbours' span, not the distance to the nearest row: a rare
    terrain view is a blend of other views (here a point of their plane, beyond its neighbours) and an
    outlier is not, even when both lie as far from their nearest row."""
    rng = np.random.default_rng(2)
    plane = np.linalg.qr(rng.normal(size=(120, 4)))[0].T  # 4 directions terrain varies along
    values = rng.normal(size=(400, 4)) @ plane + 0.05 * rng.normal(size=(400, 120))
    rare = 4.0 * plane[0]  # far out along the plane
    nearest_to_rare = np.linalg.norm(values - rare, axis=1).min()
    off = rng.normal(size=120)
    off -= plane.T @ (plane @ off)
    outlier = values[0] + nearest_to_rare * off / np.linalg.norm(off)  # as far from its nearest row
    space = FeatureSpace(np.vstack([values, rare, outlier]), (slice(0, 60), slice(60, 120)))
    rows = np.array([400, 401])
    around = space.nearest_in(rows, np.arange(400), SPAN_NEIGHBOURS)
    rare_residual, outlier_residual = space.residuals(rows, around)
    assert outlier_residual > 2 * rare_residual, (rare_residual, outlier_residual)


def test_a_terrain_row_at_the_edge_of_an_outlier_group_is_spared_by_its_nearest_outside_row(monkeypatch):
    """Tuning seed 34 (``benchmarks/clean_synthetic.py``): the map puts terrain rows 195 and 320 in a group
    of outliers. Outside the group the span left to 320 is thin (residual 2 or more), but a terrain row
    lies close to it: a member must also lie ``min_member_isolation`` from its nearest outside row."""
    generated = generate(n_train=500, n_test=1, outlier_fraction=0.04, seed=34, rock_image_fraction=0.12,
                         outlier_styles=TUNING_STYLES)
    data = LabelledSet(generated.train_images, generated.train_masks, np.arange(500))
    config = repo_config(rules=("embedding",))
    removed = find_outliers(data, config, seed=34).removed
    assert not removed[[195, 320]].any() and removed[generated.outlier_rows].mean() >= 0.9

    def far_from_every_outside_row(view, labels, candidate, caught):
        return np.where(candidate, np.inf, 0.0)

    monkeypatch.setattr(clean_rules, "_distance_outside", far_from_every_outside_row)  # the span alone decides
    assert find_outliers(data, config, seed=34).removed[320]


def test_feature_space_lets_one_unusual_group_outweigh_small_differences_in_all():
    """Why the groups' distances are combined by an L4 norm: a picture unlike terrain in one group out
    of twelve must lie farther away than a terrain view a little unusual in every group."""
    groups = tuple(slice(g, g + 1) for g in range(12))
    values = np.zeros((3, 12))
    values[1, 0] = 4.0  # unlike the first row in one group
    values[2, :] = 1.2  # a little different in all of them: farther in the Euclidean sense (4.16)
    distance = FeatureSpace(values, groups).distances(np.array([0]), np.array([1, 2]))[0]
    assert np.linalg.norm(values[2]) > np.linalg.norm(values[1])
    assert distance[0] > 1.5 * distance[1], distance


def test_a_view_weighs_the_named_groups_and_leaves_out_those_weighted_zero():
    rng = np.random.default_rng(3)
    space = FeatureSpace(rng.normal(size=(10, 6)), (slice(0, 1), slice(1, 4), slice(4, 6)), ("a", "b", "c"))
    view = space.weighted({"a": 0.0, "c": 2.0})
    assert view.names == ("b", "c") and view.groups == (slice(0, 3), slice(3, 5))
    np.testing.assert_array_equal(view.values, np.hstack([space.values[:, 1:4], 2.0 * space.values[:, 4:6]]))
    with pytest.raises(ValueError, match=r"\['d'\]"):
        space.weighted({"d": 1.0})


def test_feature_views_are_the_standardised_groups_weighted_as_views_says():
    groups = image_features(tiles(30))
    space = standardise(groups)
    assert space.names == tuple(groups)
    views = feature_views(space)
    assert len(views) == len(VIEWS) == 2
    for view, weights in zip(views, VIEWS.values()):
        assert view.names == tuple(name for name in groups if weights.get(name, 1.0) != 0)
        for name, columns in zip(view.names, view.groups):
            original = space.groups[space.names.index(name)]
            np.testing.assert_allclose(view.values[:, columns], weights.get(name, 1.0) * space.values[:, original])


def test_isolation_is_averaged_over_the_views():
    """A row far out in one view and ordinary in the other counts half as isolated: the views' rarest
    terrain rows differ, and a picture that is not terrain lies far out in both."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=(300, 120))
    values[0] += 40.0  # unlike every other row
    groups = (slice(0, 60), slice(60, 120))
    far, ordinary = FeatureSpace(values, groups), FeatureSpace(rng.normal(size=(300, 120)), groups)
    xy = rng.normal(size=(300, 2))
    config = repo_config()
    alone = isolation_scores((far,), xy, config)
    np.testing.assert_allclose(isolation_scores((far, far), xy, config), alone)
    assert alone[0] >= 2 * config.min_lone_isolation

    def own_isolation(space: FeatureSpace) -> np.ndarray:
        residual = space.residuals(np.arange(300), space.nearest(SPAN_NEIGHBOURS)[1])
        return residual / np.median(residual)

    both = isolation_scores((far, ordinary), xy, config)
    assert both[0] == pytest.approx((own_isolation(far)[0] + own_isolation(ordinary)[0]) / 2)


def test_a_row_far_from_every_other_row_is_removed_without_a_group():
    """A lone picture that the map lays among terrain views is caught by its own isolation, but only
    from ``min_lone_isolation`` on: a row merely unusual stays unless it has a group."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=(300, 120))  # far more columns than a span's neighbours, as the real features
    values[0] += 40.0  # unlike every other row
    values[1] *= 2.35  # unusual, its isolation between min_isolation and min_lone_isolation
    space = FeatureSpace(values, (slice(0, 60), slice(60, 120)))
    xy = rng.normal(size=(300, 2))
    xy[:2] = 0.0  # the map lays both among the terrain views, in one large piece
    config = repo_config()
    _, neighbours = space.nearest(SPAN_NEIGHBOURS)
    residual = space.residuals(np.arange(300), neighbours)
    lone = residual / np.median(residual)
    assert lone[0] > config.min_lone_isolation
    assert config.min_isolation < lone[1] < config.min_lone_isolation, lone[1]

    scores = isolation_scores((space,), xy, config)
    removed = scores >= config.min_isolation
    assert removed[0] and scores[0] == pytest.approx(lone[0])
    assert not removed[1]
    without_lone = isolation_scores((space,), xy, repo_config(min_lone_isolation=1000.0))
    assert not (without_lone >= config.min_isolation)[0]


# --------------------------------------------------------------------------- odd input


def labelled(images: np.ndarray, masks: np.ndarray | None = None) -> LabelledSet:
    n = len(images)
    if masks is None:
        masks = np.random.default_rng(2).integers(1, 4, (n, *IMAGE_SHAPE)).astype(np.uint8)
    return LabelledSet(images, masks, np.arange(n, dtype=np.int64))


def test_too_few_rows_for_the_perplexity_lowers_it_with_a_warning():
    with pytest.warns(CleanWarning, match=r"perplexity=20 is too large for 40 rows; using 13\.0"):
        report = find_outliers(labelled(tiles(40)), repo_config(), seed=SEED)
    assert report.embedding.method == "tsne" and report.embedding.perplexity == pytest.approx(13.0)
    assert report.embedding.xy.shape == (40, 2) and np.isfinite(report.embedding.xy).all()


def test_below_the_minimum_rows_the_embedding_rule_is_skipped_with_a_warning():
    with pytest.warns(CleanWarning, match="below clean.min_embedding_rows"):
        report = find_outliers(labelled(tiles(6)), repo_config(), seed=SEED)
    assert report.embedding.method == "pca"
    assert not report.results["embedding"].flagged.any()
    assert len(report.map_table()) == 6


def test_identical_images_give_no_map_and_no_traceback():
    images = np.repeat(tiles(1), 30, axis=0)
    with pytest.warns(CleanWarning, match="identical features"):
        report = find_outliers(labelled(images), repo_config(), seed=SEED)
    assert report.embedding.method == "none"
    assert not report.removed.any()  # grainy, distinct masks: nothing to remove
    assert (report.map_table()[["x", "y"]] == 0).all().all()


def test_non_finite_features_are_replaced_with_a_warning(monkeypatch):
    real_features = clean_find.image_features

    def with_nan(images, workers=1):
        groups = real_features(images, workers)
        groups["gradient"][:3, 1] = np.nan
        groups["spectrum"][5, :] = np.inf
        return groups

    monkeypatch.setattr(clean_find, "image_features", with_nan)
    with pytest.warns(CleanWarning, match="non-finite"):
        report = find_outliers(labelled(tiles(40)), repo_config(perplexity=5), seed=SEED)
    assert np.isfinite(report.embedding.xy).all()


def test_nothing_left_after_cleaning_is_a_clear_error():
    images = np.full((12, *IMAGE_SHAPE), 90, np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CleanWarning)
        report = find_outliers(labelled(images), repo_config(), seed=SEED)
    with pytest.raises(UserError, match=r"every one of the 12 training rows was flagged \(.*degenerate 12\)"):
        remove_outliers(labelled(images), report)


@pytest.mark.parametrize("change, key", [
    ({"rules": ["embedding", "tsne"]}, "clean.rules"),
    ({"rules": "embedding"}, "clean.rules"),
    ({"perplexity": 0}, "clean.perplexity"),
    ({"min_isolation": "high"}, "clean.min_isolation"),
    ({"max_mask_repeats": 2.5}, "clean.max_mask_repeats"),
    ({"isolation": 3}, "unknown key clean.isolation"),
    ({"min_lone_isolation": 2.0}, "clean.min_lone_isolation is 2, below clean.min_isolation"),
])
def test_bad_params_name_the_key(change, key):
    values = {**read_params(REPO / "params.yaml")["clean"], **change}
    with pytest.raises(UserError, match=key) as caught:
        validate_group("clean", values)
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- the stage


def run_stage(workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "stages" / "clean.py")], cwd=workdir,
                          capture_output=True, text=True, timeout=300)


def test_stage_writes_every_output_and_keeps_the_row_count(tmp_path):
    generated = generate(n_train=120, n_test=5, outlier_fraction=0.05, seed=7)
    ingested = LabelledSet(generated.train_images, generated.train_masks, np.arange(120, dtype=np.int64),
                           generated.test_images)
    save_labelled(tmp_path / "data/ingested/dataset.npz", ingested)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["clean"]["perplexity"] = 10  # 120 rows
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    result = run_stage(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = tmp_path / "data/clean"
    cleaned = load_labelled(out / "dataset.npz", require_test=True)
    table = pd.read_csv(out / "outliers.csv")
    tsne = pd.read_csv(out / "tsne.csv")
    metrics = json.loads((tmp_path / "metrics/clean.json").read_text())

    assert list(table.columns) == ["index", "rule", "score"]
    assert set(table["index"]) == set(range(120)) - set(cleaned.index)
    assert set(generated.outlier_rows) <= set(table["index"])
    assert list(tsne.columns) == ["x", "y", "outlier", "rule"] and len(tsne) == 120
    assert tsne["outlier"].sum() == metrics["removed_total"]
    assert metrics["rows_out"] + metrics["removed_total"] == metrics["rows_in"] == 120
    assert {"removed_embedding", "removed_shared_mask", "removed_degenerate"} <= set(metrics)
    assert "seconds_tsne" in json.loads((tmp_path / "logs/clean.json").read_text())  # times: not a DVC output
    np.testing.assert_array_equal(cleaned.test_images, generated.test_images)
    np.testing.assert_array_equal(cleaned.images, generated.train_images[cleaned.index])
    for picture in ("tsne.png", "removed.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage_without_input_fails_in_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    result = run_stage(tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: data/ingested/dataset.npz: file not found"


# --------------------------------------------------------------------------- real data


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED_NPZ.is_file(), reason=f"{SHARED_NPZ} not present")
def test_real_contaminants_are_removed_and_little_terrain_is():
    with np.load(SHARED_NPZ) as archive:
        pairs = archive["training_set"]
    rows = np.sort(np.random.default_rng(0).choice(len(pairs), size=1500, replace=False))  # a few seconds of t-SNE
    data = LabelledSet(pairs[rows, 0], pairs[rows, 1], rows.astype(np.int64))
    report = find_outliers(data, repo_config(), seed=SEED)

    shared = report.results["shared_mask"].flagged
    # About 4% of the file are photographs that all carry one two-class mask.
    assert 0.03 <= shared.mean() <= 0.06
    assert len({data.masks[row].tobytes() for row in np.flatnonzero(shared)}) == 1
    by_content = report.results["embedding"].flagged
    assert (by_content & shared).sum() >= 0.8 * shared.sum(), "the pictures alone should give most away"
    assert (by_content & ~shared).sum() <= 0.005 * len(data), "terrain removed by the embedding rule"
    assert 0.03 <= report.removed.mean() <= 0.07


# --- test images as terrain references ------------------------------------------------------------

def terrain_with(style: str, n_terrain: int, n_styled: int, seed: int) -> np.ndarray:
    """Generated terrain views, the last ``n_styled`` of them replaced by whole pictures of ``style``."""
    terrain = generate(n_train=1, n_test=n_terrain, outlier_fraction=0.0, seed=seed).test_images
    styled, _, _ = styled_outliers((style,), terrain[-n_styled:], np.random.default_rng(seed))
    return np.concatenate([terrain[:-n_styled], styled])


def test_test_images_join_the_map_as_references_and_are_never_removed(synthetic):
    data, truth = synthetic
    test_images = generate(n_train=1, n_test=300, outlier_fraction=0.0, seed=SYNTHETIC_SEED + 1).test_images
    with_tests = LabelledSet(data.images, data.masks, data.index, test_images)
    report = find_outliers(with_tests, repo_config(test_references=200), seed=SEED)
    assert report.references == 200 and report.metrics()["test_references"] == 200
    assert len(report.embedding.xy) == len(data) + 200
    assert len(report.removed) == len(report.map_table()) == len(data)
    assert report.results["embedding"].flagged[truth].mean() >= 0.95
    # The sample is seeded, and the cleaned set keeps every test image.
    assert np.array_equal(clean_find.reference_images(test_images, 200, SEED),
                          clean_find.reference_images(test_images, 200, SEED))
    assert remove_outliers(with_tests, report).test_images is test_images
    assert clean_find.reference_images(test_images, 0, SEED).shape == (0, *IMAGE_SHAPE)


def test_a_kind_of_view_the_test_images_hold_plenty_of_is_terrain():
    train = terrain_with("stripes", 300, 3, seed=3)
    n = len(train)
    data = labelled(train)
    alone = find_outliers(data, repo_config(rules=("embedding",)), seed=SEED)
    assert alone.removed[-3:].all(), "three striped pictures among 300 terrain views stand out"
    many = LabelledSet(data.images, data.masks, data.index, terrain_with("stripes", 300, 150, seed=4))
    among = find_outliers(many, repo_config(rules=("embedding",)), seed=SEED)
    assert not among.removed[-3:].any(), "a quarter of the rows being their kind, they are not"
    assert among.removed[:n - 3].sum() <= alone.removed[:n - 3].sum()


def test_outliers_the_test_images_share_are_still_found():
    train = terrain_with("checkerboard", 300, 8, seed=5)
    data = labelled(train)
    shared = LabelledSet(data.images, data.masks, data.index, terrain_with("checkerboard", 200, 8, seed=6))
    report = find_outliers(shared, repo_config(rules=("embedding",)), seed=SEED)
    assert report.removed[-8:].all(), "a group spanning both sets is measured from the rows outside it"
    assert report.metrics()["test_references_flagged"] >= 6
    assert report.removed[:-8].sum() <= 2
