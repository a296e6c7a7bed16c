"""The synthetic Mars-like data set: deterministic, well-formed, and shaped like the course data."""
from __future__ import annotations


import numpy as np
import pytest
from scipy import ndimage as ndi
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, recall_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from marsseg import IMAGE_SHAPE, NUM_CLASSES
from marsseg.errors import UserError
from marsseg.synthetic import (DEFAULT_STYLES, EXTRA_TUNING_STYLES, HELD_OUT_STYLES, OUTLIER_STYLES, PASTE,
                                PASTE_AREA, TUNING_STYLES, SyntheticData, generate)

N_TRAIN, N_TEST, FRACTION, SEED = 300, 40, 0.05, 11


@pytest.fixture(scope="module")
def data() -> SyntheticData:
    return generate(N_TRAIN, N_TEST, FRACTION, SEED)


@pytest.fixture(scope="module")
def terrain_rows(data) -> np.ndarray:
    return np.setdiff1d(np.arange(N_TRAIN), data.outlier_rows)


def test_same_arguments_give_identical_arrays():
    first, second = generate(20, 5, 0.1, 3), generate(20, 5, 0.1, 3)
    for name in ("train_images", "train_masks", "test_images", "test_masks", "outlier_rows"):
        a, b = getattr(first, name), getattr(second, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name


def test_another_seed_gives_other_pictures():
    first, other = generate(20, 5, 0.1, 3), generate(20, 5, 0.1, 4)
    assert not np.array_equal(first.train_images, other.train_images)
    assert not np.array_equal(first.train_masks, other.train_masks)
    assert not np.array_equal(first.test_images, other.test_images)


def test_shapes_and_dtypes(data):
    assert data.train_images.shape == data.train_masks.shape == (N_TRAIN, *IMAGE_SHAPE)
    assert data.test_images.shape == data.test_masks.shape == (N_TEST, *IMAGE_SHAPE)
    for array in (data.train_images, data.train_masks, data.test_images, data.test_masks):
        assert array.dtype == np.uint8
    assert data.train_masks.max() < NUM_CLASSES and data.test_masks.max() < NUM_CLASSES
    assert data.outlier_rows.dtype == np.int64
    assert np.all(np.diff(data.outlier_rows) > 0), "outlier rows must be sorted and distinct"
    assert data.outlier_rows.min() >= 0 and data.outlier_rows.max() < N_TRAIN


def test_every_class_is_present(data):
    counts = np.bincount(data.train_masks.ravel(), minlength=NUM_CLASSES)
    assert np.all(counts > 0), counts
    assert np.all(np.bincount(data.test_masks.ravel(), minlength=NUM_CLASSES)[1:4] > 0)


def test_terrain_class_shares_resemble_the_real_data(data, terrain_rows):
    share = np.bincount(data.train_masks[terrain_rows].ravel(), minlength=NUM_CLASSES) / (
        terrain_rows.size * np.prod(IMAGE_SHAPE)
    )
    # Real AI4Mars shares: 28.5% background, 25.4% soil, 35.7% bedrock, 10.0% sand.
    assert 0.15 < share[0] < 0.35
    assert 0.15 < share[1] < 0.40
    assert 0.25 < share[2] < 0.45
    assert 0.05 < share[3] < 0.22
    assert share[2] > share[1] > share[3] > share[4]


def test_big_rock_is_rare_and_in_a_minority_of_pictures(data, terrain_rows):
    masks = data.train_masks[terrain_rows]
    assert 0.005 <= (masks == 4).mean() <= 0.02
    with_rock = (masks == 4).any(axis=(1, 2)).mean()
    assert 0.1 <= with_rock <= 0.3


def test_outliers_take_the_requested_share_and_share_one_mask(data, terrain_rows):
    assert data.outlier_rows.size == round(FRACTION * N_TRAIN)
    outlier_masks = data.train_masks[data.outlier_rows]
    assert np.all(outlier_masks == outlier_masks[0])
    terrain_masks = data.train_masks[terrain_rows].reshape(terrain_rows.size, -1)
    assert len(np.unique(terrain_masks, axis=0)) == terrain_rows.size, "terrain masks must all differ"
    assert not np.any(np.all(terrain_masks == outlier_masks[0].ravel(), axis=1))


def test_each_outlier_row_names_its_style(data):
    assert len(data.outlier_styles) == len(data.outlier_rows) and set(data.outlier_styles) <= set(DEFAULT_STYLES)
    assert len(set(data.outlier_styles)) >= 3
    assert generate(20, 5, 0.0, 3).outlier_styles == ()


def test_outlier_positions_are_scattered(data):
    # Seeded-random rows, not a block at the start or end of the file.
    assert data.outlier_rows[0] < N_TRAIN / 2 < data.outlier_rows[-1]


def test_no_outliers_without_a_fraction():
    assert generate(30, 5, 0.0, 1).outlier_rows.size == 0


def _picture_statistics(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32)
    dx = np.abs(np.diff(x, axis=2)).reshape(len(x), -1)
    dy = np.abs(np.diff(x, axis=1)).reshape(len(x), -1)
    stats = [x.mean((1, 2)), x.std((1, 2)), np.median(dx, 1), np.percentile(dx, 99, 1),
             np.median(dy, 1), np.percentile(dy, 99, 1), (dx <= 1).mean(1)]
    return np.log1p(np.stack(stats, axis=1))


def test_outlier_pictures_differ_statistically_from_terrain():
    data = generate(200, 5, 0.1, 5)
    is_outlier = np.zeros(200, int)
    is_outlier[data.outlier_rows] = 1
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, class_weight="balanced"))
    predicted = cross_val_predict(classifier, _picture_statistics(data.train_images), is_outlier, cv=4)
    assert balanced_accuracy_score(is_outlier, predicted) >= 0.9


def test_test_set_holds_terrain_only(data, terrain_rows):
    outlier_mask = data.train_masks[data.outlier_rows[0]].ravel()
    test_masks = data.test_masks.reshape(N_TEST, -1)
    assert not np.any(np.all(test_masks == outlier_mask, axis=1))
    assert len(np.unique(test_masks, axis=0)) == N_TEST
    # Same picture statistics as terrain training rows, not like the outliers.
    terrain = _picture_statistics(data.train_images[terrain_rows])
    outliers = _picture_statistics(data.train_images[data.outlier_rows])
    test = _picture_statistics(data.test_images)
    distance_to_terrain = np.abs(test.mean(0) - terrain.mean(0)).sum()
    distance_to_outliers = np.abs(test.mean(0) - outliers.mean(0)).sum()
    assert distance_to_terrain < 0.25 * distance_to_outliers


def test_texture_is_finer_further_up(data, terrain_rows):
    """Perspective: pixel-to-pixel detail is stronger at the top of the picture than at the bottom."""
    images = data.train_images[terrain_rows].astype(np.float32)
    masks = data.train_masks[terrain_rows]
    detail = np.abs(np.diff(images, axis=2))
    terrain = np.isin(masks[:, :, 1:], (1, 2, 3))
    top, bottom = slice(0, 16), slice(48, 64)
    assert detail[:, top][terrain[:, top]].mean() > 1.1 * detail[:, bottom][terrain[:, bottom]].mean()


def _pixel_features(images: np.ndarray) -> np.ndarray:
    """Brightness plus texture: local mean and std at two scales, gradient energy, and how
    strongly the local gradients share one orientation (ripples do, grain does not)."""
    x = images.astype(np.float32)
    features = []
    for size in (3, 7):
        mean = ndi.uniform_filter(x, (1, size, size))
        features += [mean, np.sqrt(np.maximum(ndi.uniform_filter(x * x, (1, size, size)) - mean**2, 0))]
    gy, gx = ndi.sobel(x, axis=1), ndi.sobel(x, axis=2)
    features += [np.log1p(ndi.uniform_filter(g**2, (1, 5, 5))) for g in (gy, gx)]
    jyy, jxx, jxy = (ndi.uniform_filter(g, (1, 9, 9)) for g in (gy * gy, gx * gx, gx * gy))
    features.append(np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy + 1e-3))
    return np.stack(features, axis=-1)


def _sample_pixels(images, masks, count, rng):
    features = _pixel_features(images)
    features = features.reshape(-1, features.shape[-1])
    labels = masks.ravel()
    rows = rng.choice(np.flatnonzero(np.isin(labels, (1, 2, 3))), count, replace=False)
    return features[rows], labels[rows]


def test_texture_tells_the_terrain_classes_apart(data, terrain_rows):
    """A per-pixel classifier on local texture features beats chance (1/3) clearly on held-out
    pictures, and clearly beats the same classifier on brightness alone."""
    rng = np.random.default_rng(0)
    train_rows = terrain_rows[:60]
    x_train, y_train = _sample_pixels(data.train_images[train_rows], data.train_masks[train_rows], 4000, rng)
    x_test, y_test = _sample_pixels(data.test_images, data.test_masks, 4000, rng)

    def score(columns):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
        model.fit(x_train[:, columns], y_train)
        predicted = model.predict(x_test[:, columns])
        return balanced_accuracy_score(y_test, predicted), recall_score(y_test, predicted, average=None)

    texture_accuracy, texture_recall = score(slice(None))
    brightness_accuracy, _ = score([0])
    assert texture_accuracy >= 0.5
    assert np.all(texture_recall > 0.4), texture_recall
    assert texture_accuracy >= brightness_accuracy + 0.1


@pytest.mark.parametrize(
    "arguments, key",
    [
        (dict(n_train=0), "data.synthetic.n_train"),
        (dict(n_train=2.5), "data.synthetic.n_train"),
        (dict(n_train=True), "data.synthetic.n_train"),
        (dict(n_train=10**9), "data.synthetic.n_train"),
        (dict(n_test=0), "data.synthetic.n_test"),
        (dict(n_test="200"), "data.synthetic.n_test"),
        (dict(outlier_fraction=-0.01), "data.synthetic.outlier_fraction"),
        (dict(outlier_fraction=0.5), "data.synthetic.outlier_fraction"),
        (dict(outlier_fraction=float("nan")), "data.synthetic.outlier_fraction"),
        (dict(outlier_fraction="0.04"), "data.synthetic.outlier_fraction"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(rock_image_fraction=1.5), "data.synthetic.rock_image_fraction"),
        (dict(outlier_styles=["page", "poster"]), "outlier_styles"),
        (dict(outlier_styles="page"), "outlier_styles"),
        (dict(outlier_styles=[]), "outlier_styles"),
    ],
)
def test_bad_arguments_raise_a_user_error_naming_the_parameter(arguments, key):
    call = dict(n_train=10, n_test=5, outlier_fraction=0.04, seed=0) | arguments
    with pytest.raises(UserError) as caught:
        generate(**call)
    message = str(caught.value)
    assert message.startswith(f"{key}:") and "\n" not in message


# --------------------------------------------------------------------------- outlier styles


# Per-image sums of grey levels and of mask labels of generate(40, 6, 0.1, 3, rock_image_fraction=0.12).
# Sums, not a digest of the bytes: CPUs differ in the last bit of exp, log, sin and cos (numpy's AVX-512
# code against its AVX2 code), which moves a few pixels by one grey level (22 of 327,680 when every
# such result was nudged by one unit in the last place), so the bytes differ between machines. A change in what is drawn moves the sums by
# thousands.
DEFAULT_SUMS = {
    "train_images": [734262, 547562, 511096, 357663, 421949, 548521, 514568, 320480, 531152, 365910, 341209,
                     591481, 534184, 362041, 662619, 371715, 341691, 509742, 828543, 688331, 397665, 365977,
                     486010, 448844, 365267, 581635, 648846, 633901, 443902, 343021, 703644, 640760, 415626,
                     474052, 1199771, 363920, 253751, 633001, 345196, 286973],
    "test_images": [610044, 182232, 680822, 492921, 326714, 375682],
    "train_masks": [15360, 17340, 8562, 12141, 5436, 6980, 3351, 13069, 7568, 19707, 11828, 9991, 11440, 16216,
                    13946, 11148, 12974, 16989, 15360, 11195, 6919, 12422, 15360, 14838, 7942, 9045, 6886, 12173,
                    5408, 16195, 16338, 12483, 10410, 10472, 15360, 13433, 8726, 18673, 12794, 12765],
    "test_masks": [16462, 4242, 5805, 12032, 8464, 15654],
}
LAST_BIT_SLACK = 20  # per image: a few pixels one grey level (or one class) apart


def test_the_default_data_set_has_not_moved():
    """The pipeline's committed metrics rest on this data set: new outlier styles must not change it."""
    generated = generate(40, 6, 0.1, 3, rock_image_fraction=0.12)
    assert generated.outlier_rows.tolist() == [0, 18, 22, 34]
    for name, expected in DEFAULT_SUMS.items():
        values = getattr(generated, name)
        sums = values.reshape(len(values), -1).astype(np.int64).sum(axis=1)
        assert np.abs(sums - expected).max() <= LAST_BIT_SLACK, name


def test_style_sets_are_disjoint_and_known():
    assert set(TUNING_STYLES).isdisjoint(HELD_OUT_STYLES)
    known = set(OUTLIER_STYLES) | {PASTE + style for style in OUTLIER_STYLES}
    assert set(TUNING_STYLES) | set(HELD_OUT_STYLES) <= known
    assert set(DEFAULT_STYLES) < set(TUNING_STYLES)


@pytest.mark.parametrize("style", EXTRA_TUNING_STYLES)
def test_extra_tuning_styles_draw_textured_pictures_the_same_way_every_time(style):
    assert style in TUNING_STYLES and PASTE + style in TUNING_STYLES
    first, again = (generate(60, 1, 0.2, 7, outlier_styles=[style]) for _ in range(2))
    terrain = generate(60, 1, 0.0, 7).train_images
    rows = first.outlier_rows
    assert np.array_equal(first.train_images, again.train_images)
    pictures = first.train_images[rows].astype(np.float32)
    assert (pictures != terrain[rows]).mean() > 0.8  # whole frames replaced
    assert pictures.std(axis=(1, 2)).min() > 3  # not a flat frame the degenerate rule would catch


@pytest.fixture(scope="module")
def styled():
    """Every held-out style, and the same frames without outliers (terrain draws do not depend on them)."""
    return generate(160, 1, 0.3, 5, outlier_styles=HELD_OUT_STYLES), generate(160, 1, 0.0, 5)


def test_styled_outliers_are_pasted_or_whole_as_named(styled):
    data, terrain = styled
    assert data.outlier_rows.size == 48
    changed = data.train_images != terrain.train_images
    outside = np.setdiff1d(np.arange(160), data.outlier_rows)
    assert not changed[outside].any() and np.array_equal(data.train_masks[outside], terrain.train_masks[outside])
    pasted, whole = [], []
    for row in data.outlier_rows:
        share = changed[row].mean()
        (whole if share > 0.8 else pasted).append(row)
        if share <= 0.8:
            # A rectangle of 30-60% of the frame (a few pasted pixels may equal the terrain's by chance).
            rows, cols = np.flatnonzero(changed[row].any(axis=1)), np.flatnonzero(changed[row].any(axis=0))
            box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1) / changed[row].size
            assert PASTE_AREA[0] - 0.02 <= box <= PASTE_AREA[1] + 0.02, box
            assert share >= 0.8 * box
    assert len(pasted) >= 10 and len(whole) >= 10, (len(pasted), len(whole))
    # Each outlier's named style says which it is.
    named = dict(zip(data.outlier_rows, data.outlier_styles))
    assert set(named.values()) <= set(HELD_OUT_STYLES) and len(data.outlier_styles) == len(data.outlier_rows)
    assert all(named[row].startswith(PASTE) for row in pasted) and not any(named[row].startswith(PASTE) for row in whole)
    # A pasted picture does not change its frame's labels; whole-frame ones share one mask of
    # background and one class (the kind the shared_mask rule must not exempt).
    assert np.array_equal(data.train_masks[pasted], terrain.train_masks[pasted])
    shared = data.train_masks[whole]
    assert (shared == shared[0]).all()
    assert set(np.unique(shared[0])) - {0} and len(np.unique(shared[0])) == 2 and (shared[0] == 0).mean() > 0.15


def test_styled_outliers_are_reproducible():
    first = generate(30, 1, 0.2, 8, outlier_styles=["page", "paste_grid"])
    second = generate(30, 1, 0.2, 8, outlier_styles=["page", "paste_grid"])
    assert first.train_images.tobytes() == second.train_images.tobytes()
    assert first.train_masks.tobytes() == second.train_masks.tobytes()
