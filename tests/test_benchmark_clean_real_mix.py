"""benchmarks/clean_real_mix.py: real terrain mixed with outliers from four sources (run here on a small
synthetic file in the course format)."""
from __future__ import annotations

import argparse
import re
import sys

import numpy as np
import pytest

import clean_real_mix
from clean_real_mix import generated_source, photograph_source, source_names
from marsseg.datasets import LabelledSet
from marsseg.synthetic import HELD_OUT_STYLES, PASTE, PASTE_AREA, generate


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return generate(n_train=8, n_test=1, outlier_fraction=0.0, seed=3).train_images


def assert_whole_and_pasted(frames: np.ndarray, outliers: np.ndarray, pasted: np.ndarray) -> None:
    changed = outliers != frames
    for row in np.flatnonzero(~pasted):
        assert changed[row].mean() > 0.8
    for row in np.flatnonzero(pasted):
        # A rectangle of 30-60% of the frame; the frame around it is untouched.
        rows, cols = np.flatnonzero(changed[row].any(axis=1)), np.flatnonzero(changed[row].any(axis=0))
        box = np.zeros_like(changed[row])
        box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
        assert PASTE_AREA[0] - 0.02 <= box.mean() <= PASTE_AREA[1] + 0.02, box.mean()
        assert not changed[row][~box].any()


def test_the_generators_styles_are_whole_frames_or_pastes_as_each_row_asks(frames):
    pasted = np.arange(len(frames)) >= 4
    outliers, styles = generated_source(HELD_OUT_STYLES)(np.random.default_rng(0), frames, pasted)
    assert outliers.dtype == np.uint8 and outliers.shape == frames.shape
    assert set(styles) <= set(HELD_OUT_STYLES)
    assert [style.startswith(PASTE) for style in styles] == list(pasted)
    assert_whole_and_pasted(frames, outliers, pasted)


def test_photographs_are_cropped_whole_or_pasted_and_named(frames):
    board = (np.indices((90, 200)).sum(axis=0) // 7 % 2).astype(np.float32)
    pasted = np.arange(len(frames)) % 2 == 1
    outliers, styles = photograph_source([board], ["board"])(np.random.default_rng(1), frames, pasted)
    assert styles == [PASTE + "board" if over else "board" for over in pasted]
    assert_whole_and_pasted(frames, outliers, pasted)


@pytest.mark.parametrize("text, problem", [("held-out,nope", "unknown source 'nope'"), (" , ", "no source named")])
def test_a_bad_source_list_names_the_problem_and_the_known_sources(text, problem):
    with pytest.raises(argparse.ArgumentTypeError, match=f"{problem}; known: packaged, ai4mars, held-out, tuning"):
        source_names(text)


def test_the_benchmark_scores_every_source_asked_for_and_each_style(tmp_path, monkeypatch, capsys):
    data = generate(n_train=90, n_test=2, outlier_fraction=0.1, seed=5)  # its outliers share one mask
    path = tmp_path / "course.npz"
    np.savez(path, training_set=np.stack([data.train_images, data.train_masks], axis=1), test_set=data.test_images)
    monkeypatch.setattr(sys, "argv", ["clean_real_mix.py", "--draws", "1", "--terrain", "60", "--outliers", "8",
                                      "--sources", "held-out", "--data", str(path)])
    assert clean_real_mix.main() == 0
    out = capsys.readouterr().out
    pooled = re.search(r"^held-out +pooled \| +([\d.]+) +([\d.]+) +([\d.]+) \|", out, re.M)
    assert pooled, out
    precision, recall, terrain_removed = map(float, pooled.groups())
    assert 0 <= precision <= 1 and 0 <= recall <= 1 and 0 <= terrain_removed <= 60
    styles = re.findall(r"^held-out (\S+) +(\d+) \| +[\d.]+ \| +[\d.]+$", out, re.M)
    assert {style for style, _ in styles} <= set(HELD_OUT_STYLES)
    assert sum(int(count) for _, count in styles) == 8
    assert "packaged" not in out and "tuning" not in out


def test_test_rows_are_other_terrain_rows_of_the_file():
    data = generate(n_train=40, n_test=1, outlier_fraction=0.0, seed=6)
    labelled = LabelledSet(data.train_images, data.train_masks, np.arange(40))
    terrain = np.arange(40)
    mixed = labelled.subset(np.arange(10, 25))
    with_tests = clean_real_mix.with_test_images(np.random.default_rng(0), mixed, labelled, terrain, 20)
    assert with_tests.test_images.shape == (20, *data.train_images.shape[1:])
    drawn = [int(np.flatnonzero((data.train_images == image).all(axis=(1, 2)))[0]) for image in with_tests.test_images]
    assert len(set(drawn)) == 20 and not set(drawn) & set(range(10, 25))
    assert clean_real_mix.with_test_images(np.random.default_rng(0), mixed, labelled, terrain, 0) is mixed


def test_more_rows_than_the_file_holds_is_one_line_of_error(tmp_path, monkeypatch, capsys):
    data = generate(n_train=50, n_test=2, outlier_fraction=0.0, seed=5)
    path = tmp_path / "course.npz"
    np.savez(path, training_set=np.stack([data.train_images, data.train_masks], axis=1), test_set=data.test_images)
    monkeypatch.setattr(sys, "argv", ["clean_real_mix.py", "--terrain", "30", "--outliers", "8", "--test-rows", "20",
                                      "--data", str(path)])
    assert clean_real_mix.main() == 2
    assert "--test-rows at most" in capsys.readouterr().err
