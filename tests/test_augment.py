"""Augment: masks follow the geometry, labels stay valid, rare images multiply, output reproducible."""
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from marsseg.augment import augment_dataset, rare_rows
from marsseg.config import AugmentConfig, validate_group
from marsseg.datasets import LabelledSet, load_labelled, save_labelled
from marsseg.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
DEFAULT_PROBABILITIES = PARAMS["augment"]["p"]


def augment_config(**overrides) -> AugmentConfig:
    """The committed augment group with ``overrides`` (params.yaml holds every default)."""
    return validate_group("augment", {**PARAMS["augment"], **overrides})
GEOMETRIC = ("hflip", "vflip", "rotate90", "rotate", "affine", "crop")
PHOTOMETRIC = ("brightness_contrast", "gamma", "emboss", "sharpen")


def only(*names: str, **extra) -> AugmentConfig:
    """A config whose listed transforms always fire and every other one never does."""
    p = {name: 0.0 for name in DEFAULT_PROBABILITIES}
    p.update({name: 1.0 for name in names})
    values = dict(copies_min=6, copies_max=6, rare_copies_min=6, rare_copies_max=6, p=p)
    values.update(extra)
    return augment_config(**values)


def marker_set(n: int = 3) -> LabelledSet:
    """Flat mid-grey images with a bright off-centre block; the mask marks that block as class 4."""
    images = np.full((n, 64, 128), 100, dtype=np.uint8)
    masks = np.ones((n, 64, 128), dtype=np.uint8)
    for row in range(n):
        top, left = 8 + 4 * row, 12 + 9 * row
        images[row, top:top + 14, left:left + 26] = 250
        masks[row, top:top + 14, left:left + 26] = 4
    return LabelledSet(images, masks, np.arange(n, dtype=np.int64) + 10)


def textured_set(n: int, seed: int = 0, rare: int = 1) -> LabelledSet:
    rng = np.random.default_rng(seed)
    images = rng.integers(30, 230, size=(n, 64, 128), dtype=np.uint8)
    masks = np.repeat(rng.integers(1, 4, size=(n, 1, 128)), 64, axis=1).astype(np.uint8)
    masks[:rare, 30:40, 50:70] = 4
    return LabelledSet(images, masks, np.arange(n, dtype=np.int64) * 2)


@pytest.mark.parametrize("transform", GEOMETRIC)
def test_geometric_transforms_move_image_and_mask_together(transform):
    data = marker_set()
    result = augment_dataset(data, only(transform), seed=1)
    moved = 0
    for row in range(len(result.data)):
        bright = result.data.images[row] > 175
        rock = result.data.masks[row] == 4
        apart = (bright ^ rock).sum()
        # Only the marker's rim may disagree (linear interpolation in the image, nearest in the mask).
        assert apart <= 0.2 * (bright | rock).sum() + 20, f"{transform}: image and mask markers drifted apart"
        source = result.data.index[row] - 10
        moved += not np.array_equal(rock, data.masks[source] == 4)
    assert moved >= 6, f"{transform} hardly changed anything"


def test_photometric_transforms_leave_masks_unchanged():
    data = textured_set(3)
    result = augment_dataset(data, only(*PHOTOMETRIC), seed=2)
    sources = np.repeat(np.arange(3), result.copies + 1)
    assert np.array_equal(result.data.masks, data.masks[sources])
    assert not np.array_equal(result.data.images, data.images[sources])


def test_filled_pixels_are_background_not_reflected_terrain():
    data = LabelledSet(np.full((2, 64, 128), 200, np.uint8), np.full((2, 64, 128), 2, np.uint8), np.arange(2))
    result = augment_dataset(data, only("rotate", "affine", rotate_limit=15.0), seed=3)
    filled = result.data.masks == 0
    assert filled.sum() > 0, "rotation left no uncovered corners"
    assert result.data.images[filled].mean() < 60  # black fill, not copies of the terrain
    assert set(np.unique(result.data.masks)) <= {0, 2}


def test_labels_stay_within_the_source_labels_and_background():
    # Stripes of soil (1) and big rock (4): blending labels, as linear interpolation would, makes 2 or 3.
    masks = np.ones((3, 64, 128), np.uint8)
    masks[:, :, ::16] = 4
    masks[:, :, 1::16] = 4
    masks[2] = 1
    data = LabelledSet(textured_set(3).images, masks, np.arange(3))
    result = augment_dataset(data, augment_config(p={**DEFAULT_PROBABILITIES, "cutmix": 0.0}), seed=4)
    for row in range(len(result.data)):
        allowed = set(np.unique(data.masks[result.data.index[row]])) | {0}
        assert set(np.unique(result.data.masks[row])) <= allowed


def test_images_stay_images_and_masks_stay_masks():
    data = textured_set(4)
    result = augment_dataset(data, augment_config(), seed=5)
    flat_images = result.data.images.reshape(len(result.data), -1)
    assert not (result.data.images == result.data.masks).reshape(len(result.data), -1).all(axis=1).any()
    assert (flat_images > 4).mean() > 0.9  # a mask (values 0-4) saved as the image would fail this


def test_rare_images_get_their_multiplier_and_index_traces_the_source():
    data = textured_set(6, rare=2)
    config = augment_config(copies_min=1, copies_max=2, rare_copies_min=7, rare_copies_max=9)
    result = augment_dataset(data, config, seed=6)
    assert result.rare.tolist() == rare_rows(data.masks).tolist() == [True, True] + [False] * 4
    assert all(7 <= c <= 9 for c in result.copies[:2]) and all(1 <= c <= 2 for c in result.copies[2:])
    assert len(result.data) == int((result.copies + 1).sum())
    assert np.array_equal(result.data.index, np.repeat(data.index, result.copies + 1))
    originals = result.offsets
    assert np.array_equal(result.data.images[originals], data.images)  # the original is kept


def test_same_seed_same_arrays_other_seed_other_arrays():
    data = textured_set(3)
    first, again = augment_dataset(data, augment_config(), 7), augment_dataset(data, augment_config(), 7)
    other = augment_dataset(data, augment_config(), 8)
    assert np.array_equal(first.data.images, again.data.images)
    assert np.array_equal(first.data.masks, again.data.masks)
    assert not np.array_equal(first.data.images[:20], other.data.images[:20])


def test_an_images_copies_do_not_depend_on_the_other_images():
    data = textured_set(4)
    config = augment_config(p={**DEFAULT_PROBABILITIES, "cutmix": 0.0})
    whole = augment_dataset(data, config, seed=9)
    alone = augment_dataset(data.subset(np.array([2])), config, seed=9)
    block = slice(whole.offsets[2], whole.offsets[2] + whole.copies[2] + 1)
    assert np.array_equal(whole.data.images[block], alone.data.images)


def test_flips_are_drawn_independently():
    # A.Compose(seed=...) would seed both flips alike so that they always fire together.
    data = marker_set(1)
    config = only(copies_min=200, copies_max=200, rare_copies_min=200, rare_copies_max=200,
                  p={**{k: 0.0 for k in DEFAULT_PROBABILITIES}, "hflip": 0.5, "vflip": 0.5})
    result = augment_dataset(data, config, seed=10)
    rock = result.data.masks[1:] == 4
    left = rock[:, :, :64].sum(axis=(1, 2)) > 0
    top = rock[:, :32].sum(axis=(1, 2)) > 0
    assert len(set(zip(left.tolist(), top.tolist()))) == 4


def test_cutmix_pastes_a_matching_box_from_another_pair():
    images = np.stack([np.full((64, 128), 60, np.uint8), np.full((64, 128), 190, np.uint8)])
    masks = np.stack([np.full((64, 128), 1, np.uint8), np.full((64, 128), 3, np.uint8)])
    result = augment_dataset(LabelledSet(images, masks, np.arange(2)), only("cutmix"), seed=11)
    copies = np.ones(len(result.data), dtype=bool)
    copies[result.offsets] = False
    assert result.cutmix_copies == int(copies.sum())
    for image, mask in zip(result.data.images[copies], result.data.masks[copies]):
        assert set(np.unique(mask)) == {1, 3}
        assert np.array_equal(image == 190, mask == 3)
        assert 0.05 < (mask != mask[0, 0]).mean() < 0.35 or 0.65 < (mask != mask[0, 0]).mean() < 0.95


@pytest.mark.parametrize("params, fragment", [
    ({"p": {"blur": 0.5}}, "augment.p.blur"),
    ({"p": {"hflip": 1.5}}, "augment.p.hflip"),
    ({"copies_min": 7, "copies_max": 3}, "augment.copies_min (7) is above augment.copies_max"),
    ({"rare_copies_min": 2.5}, "augment.rare_copies_min"),
    ({"cutmix_area": [0.5, 1.2]}, "augment.cutmix_area"),
    ({"gamma_limit": 90}, "augment.gamma_limit"),
    ({"copies": 3}, "unknown key augment.copies"),
])
def test_bad_params_are_named(params, fragment):
    with pytest.raises(UserError, match=re.escape(fragment)):
        augment_config(**params)


def run_stage(workdir: Path, hash_seed: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    return subprocess.run([sys.executable, str(ROOT / "stages/augment.py")], cwd=workdir, env=env,
                          capture_output=True, text=True)


def test_stage_outputs_are_byte_identical_across_processes(tmp_path):
    params = {**PARAMS, "seed": 1, "augment": {**PARAMS["augment"], "copies_min": 1, "copies_max": 2,
                                                "rare_copies_min": 3, "rare_copies_max": 4,
                                                "p": {**DEFAULT_PROBABILITIES, "cutmix": 0.3}}}
    digests = []
    for run, hash_seed in (("a", "1"), ("b", "2")):
        workdir = tmp_path / run
        save_labelled(workdir / "data/split/train.npz", textured_set(4, rare=1))
        (workdir / "params.yaml").write_text(yaml.safe_dump(params))
        completed = run_stage(workdir, hash_seed)
        assert completed.returncode == 0, completed.stderr
        digests.append(hashlib.sha256((workdir / "data/augment/train.npz").read_bytes()).hexdigest())
    assert digests[0] == digests[1]

    out = tmp_path / "a"
    augmented = load_labelled(out / "data/augment/train.npz")
    metrics = json.loads((out / "metrics/augment.json").read_text())
    table = pd.read_csv(out / "data/augment/class_distribution.csv")
    assert metrics["rows_in"] == 4 and metrics["rows_out"] == len(augmented) == 4 + metrics["copies_made"]
    assert 3 <= metrics["rare_copies_made"] <= 4
    assert list(table.columns) == ["class", "stage", "fraction", "bar"] and len(table) == 10
    assert table.groupby("stage")["fraction"].sum().round(3).tolist() == [1.0, 1.0]
    assert (out / "data/augment/samples.png").stat().st_size > 10_000
