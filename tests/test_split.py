"""Split: rare-class fractions, duplicate grouping (exact, shifted, re-exposed) and leak-proof folds."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from marsseg.datasets import LabelledSet, load_labelled, save_labelled
from marsseg.errors import UserError
from marsseg.config import SplitConfig, validate_group
from marsseg.split import (
    assign_folds,
    exact_duplicate_pairs,
    find_duplicate_groups,
    shifted_texture_correlation,
    split_dataset,
)

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def split_config(**overrides) -> SplitConfig:
    """The committed split group with ``overrides`` (params.yaml holds every default)."""
    return validate_group("split", {**PARAMS["split"], **overrides})
SHARED = ROOT.parent / "shared" / "data" / "ai4mars64x128.npz"


def terrain_like(n: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct textured images: coarse shapes plus fine grain, at varied scales per image."""
    images = []
    for _ in range(n):
        coarse = cv2.resize(rng.random((int(rng.integers(3, 9)), int(rng.integers(6, 17)))), (128, 64),
                            interpolation=cv2.INTER_CUBIC)
        grain = cv2.GaussianBlur(rng.normal(size=(64, 128)), (0, 0), float(rng.uniform(0.7, 2.0)))
        image = 120 + 60 * (coarse - coarse.mean()) + 25 * grain / grain.std()
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(images)


def masks_for(n: int, rng: np.random.Generator, rare_rows=()) -> np.ndarray:
    masks = rng.integers(1, 4, size=(n, 1, 1)).repeat(64, axis=1).repeat(128, axis=2).astype(np.uint8)
    masks[:, :, :10] = 0
    for row in rare_rows:
        masks[row, 20:30, 40:60] = 4
    return masks


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The frame moved by (dx, dy) pixels: new border rows repeat the edge, as a re-crop would."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, matrix, (128, 64), borderMode=cv2.BORDER_REPLICATE)


def brighter(image: np.ndarray, by: int) -> np.ndarray:
    return np.clip(image.astype(np.int16) + by, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def planted():
    """40 distinct images plus an exact copy of 0, a shifted copy of 1, a brightened copy of 2 and
    a shifted+brightened copy of 3 whose label differs (the same frame labelled twice)."""
    rng = np.random.default_rng(7)
    images = terrain_like(40, rng)
    masks = masks_for(40, rng, rare_rows=range(30, 40))
    copies = np.stack([images[0], shifted(images[1], 3, -2), brighter(images[2], 6),
                       brighter(shifted(images[3], -4, 1), -5)])
    copy_masks = masks[[0, 1, 2, 3]].copy()
    copy_masks[3, 40:50, 80:100] = 4  # the second annotator saw a big rock
    data = LabelledSet(np.concatenate([images, copies]), np.concatenate([masks, copy_masks]),
                       np.arange(44, dtype=np.int64) * 3)  # ingested rows need not be 0..n-1
    return data, {0: 40, 1: 41, 2: 42, 3: 43}


def test_planted_duplicates_are_grouped_and_nothing_else(planted):
    data, copy_of = planted
    groups, stats = find_duplicate_groups(data.images, split_config())
    for original, copy in copy_of.items():
        assert groups[original] == groups[copy], f"copy {copy} of row {original} not grouped"
    grouped = {row for pair in copy_of.items() for row in pair}
    others = [row for row in range(len(data)) if row not in grouped]
    assert len(set(groups[others])) == len(others), "distinct images were grouped"
    assert stats["exact_duplicate_pairs"] == 1
    assert stats["duplicate_groups"] == 4 and stats["rows_in_duplicate_groups"] == 8


def test_shift_tolerance_is_bounded():
    image = terrain_like(1, np.random.default_rng(3))[0]
    assert shifted_texture_correlation(image, shifted(image, 3, 2), max_shift=4) > 0.9
    assert shifted_texture_correlation(image, shifted(image, 7, 0), max_shift=4) == -1.0


def test_exact_duplicates_found_without_near_duplicate_search(planted):
    data, _ = planted
    assert exact_duplicate_pairs(data.images).tolist() == [[0, 40]]
    groups, stats = find_duplicate_groups(data.images, split_config(near_duplicates=False))
    assert groups[0] == groups[40] and stats["near_duplicate_pairs"] == 0


@pytest.mark.parametrize("seed", range(8))
def test_duplicates_never_straddle_the_folds(planted, seed):
    data, copy_of = planted
    result = split_dataset(data, split_config(val_fraction=0.5, rare_val_fraction=0.5), seed)
    fold = dict(zip(result.table["index"], result.table["fold"]))
    for original, copy in copy_of.items():
        assert fold[data.index[original]] == fold[data.index[copy]]
    train_rows, val_rows = set(result.train.index), set(result.val.index)
    assert not train_rows & val_rows and train_rows | val_rows == set(data.index)


def test_a_group_with_one_rare_member_is_rare(planted):
    data, _ = planted
    result = split_dataset(data, split_config(), seed=0)
    table = result.table.set_index("index")
    assert table.loc[data.index[43], "has_rare"] == 1 and table.loc[data.index[3], "has_rare"] == 0
    assert table.loc[data.index[3], "group"] == table.loc[data.index[43], "group"]


def test_rare_images_split_at_their_own_fraction():
    groups = np.arange(200)
    rare = np.zeros(200, dtype=bool)
    rare[:40] = True
    config = split_config(val_fraction=0.25, rare_val_fraction=0.1)
    for seed in range(3):
        is_val = assign_folds(groups, rare, config, seed)
        assert is_val[rare].sum() == 4 and is_val[~rare].sum() == 40
    assert not np.array_equal(assign_folds(groups, rare, config, 0), assign_folds(groups, rare, config, 1))
    assert np.array_equal(assign_folds(groups, rare, config, 5), assign_folds(groups, rare, config, 5))


def test_whole_groups_move_together_in_assign_folds():
    groups = np.repeat(np.arange(30), 3)  # every row has two duplicates
    rare = np.zeros(90, dtype=bool)
    is_val = assign_folds(groups, rare, split_config(val_fraction=0.2), seed=1)
    assert is_val.sum() == 18
    assert all(len(set(is_val[groups == g])) == 1 for g in range(30))


def test_table_and_metrics_account_for_every_row(planted):
    data, _ = planted
    result = split_dataset(data, split_config(), seed=42)
    m = result.metrics
    assert list(result.table.columns) == ["index", "fold", "has_rare", "group"]
    assert len(result.table) == len(data) == m["train_rows"] + m["val_rows"] == m["input_rows"]
    assert m["train_rare_rows"] + m["val_rare_rows"] == int(result.table["has_rare"].sum()) == 11
    assert m["train_duplicate_groups"] + m["val_duplicate_groups"] == m["duplicate_groups"] == 4
    assert abs(sum(m["val_class_fraction"].values()) - 1) < 1e-4
    assert result.val.test_images is None


@pytest.mark.parametrize("params, fragment", [
    ({"val_fraction": 1.2}, "split.val_fraction"),
    ({"rare_val_fraction": -0.1}, "split.rare_val_fraction"),
    ({"max_shift": 2.5}, "split.max_shift"),
    ({"min_correlation": 0}, "split.min_correlation"),
    ({"near_duplicates": "yes"}, "split.near_duplicates"),
    ({"val_frac": 0.2}, "unknown key split.val_frac"),
])
def test_bad_params_are_named(params, fragment):
    with pytest.raises(UserError, match=fragment.replace(".", r"\.")):
        split_config(**params)


def test_empty_validation_fold_is_a_user_error(planted):
    data, _ = planted
    with pytest.raises(UserError, match="leave the validation fold empty"):
        split_dataset(data, split_config(val_fraction=0.0, rare_val_fraction=0.0), seed=0)


def test_stage_writes_its_outputs(tmp_path, planted):
    data, _ = planted
    data = LabelledSet(data.images, data.masks, data.index, test_images=data.images[:3])
    save_labelled(tmp_path / "data/clean/dataset.npz", data)
    params = {**PARAMS, "seed": 3, "split": {**PARAMS["split"], "val_fraction": 0.25, "rare_val_fraction": 0.2}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run = subprocess.run([sys.executable, str(ROOT / "stages/split.py")], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    train = load_labelled(tmp_path / "data/split/train.npz")
    val = load_labelled(tmp_path / "data/split/val.npz")
    table = pd.read_csv(tmp_path / "data/split/split.csv")
    metrics = json.loads((tmp_path / "metrics/split.json").read_text())
    assert len(train) + len(val) == len(data) == len(table)
    assert sorted(table.loc[table.fold == "val", "index"]) == sorted(val.index)
    assert metrics["val_rows"] == len(val) and metrics["val_rare_rows"] == 2

    params["split"]["val_fraction"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run = subprocess.run([sys.executable, str(ROOT / "stages/split.py")], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.startswith("error: params.yaml: split.val_fraction")


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED.is_file(), reason="needs ../shared/data/ai4mars64x128.npz")
def test_real_frames_shifted_or_reexposed_are_found():
    with np.load(SHARED) as archive:
        images = archive["training_set"][:400, 0]
    rng = np.random.default_rng(1)
    sources = rng.choice(len(images), 20, replace=False)
    planted = [brighter(shifted(images[s], int(rng.integers(-4, 5)), int(rng.integers(-4, 5))),
                        int(rng.integers(-8, 9))) for s in sources]
    groups, _ = find_duplicate_groups(np.concatenate([images, np.stack(planted)]), split_config())
    assert all(groups[s] == groups[400 + k] for k, s in enumerate(sources))


def test_kfold_validation_folds_partition_the_rows_keep_groups_whole_and_share_big_rock(planted):
    data, _ = planted
    config = split_config(folds=4, cv_folds=[0, 1, 2, 3])
    results = [split_dataset(data, config, seed=5, fold=fold) for fold in range(4)]
    val_rows = [set(result.val.index.tolist()) for result in results]
    assert set().union(*val_rows) == set(data.index.tolist())
    assert sum(len(rows) for rows in val_rows) == len(data)  # disjoint
    groups, _ = find_duplicate_groups(data.images, config)
    for group in np.unique(groups):
        members = set(data.index[groups == group].tolist())
        assert sum(bool(members & rows) for rows in val_rows) == 1, "a duplicate group straddles folds"
    rare_per_fold = [result.metrics["val_rare_rows"] for result in results]
    assert max(rare_per_fold) - min(rare_per_fold) <= 2


def test_more_folds_than_distinct_pictures_is_a_clear_error():
    image = np.random.default_rng(0).integers(0, 256, size=(64, 128)).astype(np.uint8)
    other = np.random.default_rng(1).integers(0, 256, size=(64, 128)).astype(np.uint8)
    data = LabelledSet(np.stack([image, other]), np.ones((2, 64, 128), np.uint8), np.arange(2))
    with pytest.raises(UserError, match="split.folds is 3 but data/clean/dataset.npz holds only 2 distinct"):
        split_dataset(data, split_config(folds=3, cv_folds=[0]), seed=0, where="data/clean/dataset.npz", fold=0)
