"""The data sources (npz, ai4mars folder) and the data contracts, each rule with a bad input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from marsseg.config import load_config, validate_group
from marsseg.datasets import LabelledSet, load_labelled, save_labelled
from marsseg.errors import UserError
from marsseg.sources import load_ai4mars, load_npz, load_source

from conftest import REPO, SHARED_NPZ, project_env


def terrain(n: int, seed: int = 0) -> LabelledSet:
    rng = np.random.default_rng(seed)
    return LabelledSet(
        images=rng.integers(0, 256, (n, 64, 128), dtype=np.uint8),
        masks=rng.integers(0, 5, (n, 64, 128), dtype=np.uint8),
        index=np.arange(n, dtype=np.int64),
        test_images=rng.integers(0, 256, (3, 64, 128), dtype=np.uint8),
    )


def course_file(path: Path, data: LabelledSet, dtype=np.uint8) -> Path:
    training = np.stack([data.images, data.masks], axis=1).astype(dtype)
    np.savez(path, training_set=training, test_set=data.test_images.astype(dtype))
    return path


# --- npz (course format) -------------------------------------------------------------------------

def test_npz_reader_round_trips_course_format(tmp_path):
    data = terrain(5)
    loaded = load_npz(course_file(tmp_path / "mars.npz", data))
    assert np.array_equal(loaded.images, data.images) and np.array_equal(loaded.masks, data.masks)
    assert np.array_equal(loaded.test_images, data.test_images)
    assert loaded.images.dtype == np.uint8 and list(loaded.index) == [0, 1, 2, 3, 4]


def test_npz_reader_accepts_other_numeric_dtypes(tmp_path):
    data = terrain(4)
    loaded = load_npz(course_file(tmp_path / "mars.npz", data, dtype=np.float64))
    assert loaded.images.dtype == np.uint8 and np.array_equal(loaded.images, data.images)


@pytest.mark.parametrize("problem, make, message", [
    ("missing key", lambda p, d: np.savez(p, training_set=np.stack([d.images, d.masks], 1)), "missing array 'test_set'"),
    ("wrong shape", lambda p, d: np.savez(p, training_set=d.images, test_set=d.test_images), "expected (N, 2, 64, 128)"),
    ("label 7", lambda p, d: np.savez(p, training_set=np.stack([d.images, d.masks + 3], 1), test_set=d.test_images),
     "outside 0-4"),
    ("pixel 300", lambda p, d: np.savez(p, training_set=np.stack([d.images.astype(int) + 100, d.masks], 1),
                                        test_set=d.test_images), "outside 0-255"),
    ("NaN", lambda p, d: np.savez(p, training_set=np.full((2, 2, 64, 128), np.nan), test_set=d.test_images), "NaN"),
    ("strings", lambda p, d: np.savez(p, training_set=np.full((2, 2, 64, 128), "a"), test_set=d.test_images),
     "numeric"),
])
def test_npz_reader_rejects_bad_files_in_one_line(tmp_path, problem, make, message):
    path = tmp_path / "bad.npz"
    make(path, terrain(3))
    with pytest.raises(UserError) as error:
        load_npz(path)
    assert message in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


def test_corrupt_npz_is_a_clear_error(tmp_path):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(UserError, match="not a readable .npz"):
        load_npz(path)


def data_config(**overrides):
    """The committed data group with ``overrides`` (params.yaml holds every default)."""
    return validate_group("data", {**load_config(REPO / "params.yaml").group_dict("data"), **overrides})


def test_missing_file_and_unknown_source_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_source(data_config(source="npz", path=str(tmp_path / "nope.npz")), seed=0)
    with pytest.raises(UserError, match="data.source is 'kaggle'; unknown data source 'kaggle'"):
        data_config(source="kaggle")


def test_limit_takes_a_seeded_subset(tmp_path):
    path = course_file(tmp_path / "mars.npz", terrain(20))
    first = load_source(data_config(source="npz", path=str(path), limit=7), seed=3)
    again = load_source(data_config(source="npz", path=str(path), limit=7), seed=3)
    assert len(first) == 7 and np.array_equal(first.images, again.images)


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED_NPZ.is_file(), reason="../shared/data/ai4mars64x128.npz is absent")
def test_npz_reader_reads_the_real_benchmark_file():
    data = load_npz(SHARED_NPZ)
    assert len(data) == 5637 and len(data.test_images) == 322
    assert set(np.unique(data.masks[:200])) <= {0, 1, 2, 3, 4}


# --- ai4mars folder ------------------------------------------------------------------------------

def write_ai4mars_folder(root: Path, n_train: int = 3, n_test: int = 2, side: int = 256) -> dict:
    """A small folder in AI4Mars layout; labels fill the bottom half so that half is kept."""
    (root / "images/edr").mkdir(parents=True)
    (root / "labels/train").mkdir(parents=True)
    rng = np.random.default_rng(1)
    expected = {}
    for i in range(n_train + n_test):
        name = f"NLA_{i:04d}EDR_F0000000AUT_04096M1"
        image = np.full((side, side), 40 * (i + 1), dtype=np.uint8)
        Image.fromarray(image).save(root / "images/edr" / f"{name}.JPG", quality=100)
        if i < n_train:
            label = np.full((side, side), 255, dtype=np.uint8)
            label[side // 2:, : side // 2] = i % 4          # AI4Mars class in the bottom-left quarter
            label[side // 2:, side // 2:] = rng.integers(0, 4)
            Image.fromarray(label).save(root / "labels/train" / f"{name}.png")
            expected[name] = i % 4
    return expected


def test_ai4mars_folder_is_resized_and_remapped(tmp_path):
    expected = write_ai4mars_folder(tmp_path)
    data = load_ai4mars(tmp_path)
    assert data.images.shape == (3, 64, 128) and data.test_images.shape == (2, 64, 128)
    for row, ai4mars_class in enumerate(expected.values()):
        # AI4Mars 0 soil, 1 bedrock, 2 sand, 3 big rock -> ours 1..4; the labelled (bottom) half is kept.
        assert np.all(data.masks[row][:, :64] == ai4mars_class + 1)
        assert abs(int(data.images[row].mean()) - 40 * (row + 1)) <= 2  # area-averaged, JPEG-rounded


def test_ai4mars_unlabelled_pixels_become_background(tmp_path):
    write_ai4mars_folder(tmp_path, n_train=1, n_test=0)
    data = load_ai4mars(tmp_path)
    assert np.all(data.masks[0][:, :64] == 1)  # class 0 soil -> 1
    assert set(np.unique(data.masks)) <= {0, 1, 2, 3, 4}


def test_ai4mars_bad_folder_and_bad_labels(tmp_path):
    with pytest.raises(UserError, match="not an AI4Mars folder"):
        load_ai4mars(tmp_path)
    write_ai4mars_folder(tmp_path, n_train=1, n_test=0)
    label = next((tmp_path / "labels/train").glob("*.png"))
    Image.fromarray(np.full((8, 8), 9, dtype=np.uint8)).save(label)
    with pytest.raises(UserError, match="not AI4Mars classes"):
        load_ai4mars(tmp_path)


# --- contracts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda d: setattr(d, "images", d.images.astype(np.int16)), "dtype int16"),
    (lambda d: setattr(d, "images", d.images[:, :32]), "shape"),
    (lambda d: d.masks.__setitem__((0, 0, 0), 9), "labels [9] outside 0-4"),
    (lambda d: setattr(d, "masks", d.masks[:2]), "3 images but 2 masks"),
    (lambda d: setattr(d, "images", d.masks.copy()), "image and mask are identical"),
    (lambda d: setattr(d, "index", d.index[:2]), "'index' has shape"),
    (lambda d: setattr(d, "test_images", d.test_images[:, :, :100]), "'test_images' has shape"),
])
def test_each_contract_rejects_a_bad_file(tmp_path, change, message):
    data = terrain(3)
    change(data)
    path = tmp_path / "dataset.npz"
    np.savez(path, images=data.images, masks=data.masks, index=data.index, test_images=data.test_images)
    with pytest.raises(UserError) as error:
        load_labelled(path)
    assert message in str(error.value) and str(path) in str(error.value)
    with pytest.raises(UserError):
        save_labelled(tmp_path / "out.npz", data)
    assert not (tmp_path / "out.npz").exists()  # nothing half-written


def test_stage_reports_bad_input_in_one_line_without_traceback(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text().replace(
        "source: synthetic", "source: npz").replace("path: data/raw ", f"path: {tmp_path / 'missing.npz'} "))
    result = subprocess.run([sys.executable, str(REPO / "stages/ingest.py")], cwd=tmp_path,
                            capture_output=True, text=True, env=project_env())
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'missing.npz'}: file not found"
