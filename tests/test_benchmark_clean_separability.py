"""benchmarks/clean_separability.py: outliers' isolation from terrain against real terrain's own spread, in the
embedding rule's feature space (run here on small synthetic files in the course format)."""
from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import clean_separability
from clean_separability import isolation
from marsseg.clean.features import feature_views, image_features, standardise
from marsseg.synthetic import generate


def course_file(path, rows: int, outlier_fraction: float):
    """A file in the course format whose outliers (the default generator's) share one mask, as the AI4Mars
    file's photographs do."""
    data = generate(n_train=rows, n_test=2, outlier_fraction=outlier_fraction, seed=5)
    np.savez(path, training_set=np.stack([data.train_images, data.train_masks], axis=1), test_set=data.test_images)
    return data


def run_benchmark(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["clean_separability.py", *argv])
    try:
        code = clean_separability.main()
    except SystemExit as stopped:
        code = stopped.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_an_outlier_is_measured_to_the_terrain_not_to_its_own_kind():
    data = generate(n_train=90, n_test=1, outlier_fraction=0.0, seed=2)
    images = data.train_images.copy()
    images[-2:] = np.tile((np.indices((64, 128)).sum(axis=0) // 8 % 2 * 255).astype(np.uint8), (2, 1, 1))
    terrain = np.ones(len(images), bool)
    terrain[-2:] = False

    distances = isolation(images, terrain)
    as_terrain = isolation(images, np.ones(len(images), bool))
    assert as_terrain[-1] < 0.5  # two identical checkerboards: each explains the other
    assert (distances[-2:] > 3.0).all()  # ... but far from every terrain row's span
    np.testing.assert_array_equal(distances[:-2], as_terrain[:-2])
    # Per view, the unit is the median residual of distinct rows; the isolation is the views' mean.
    views = feature_views(standardise(image_features(images)))
    per_view = [clean_separability._isolation_in(view, np.ones(len(images), bool)) for view in views]
    assert len(per_view) == 2
    assert all(np.median(view[:-2]) == pytest.approx(1.0) for view in per_view)  # the checkerboards: duplicates
    np.testing.assert_allclose(as_terrain, np.mean(per_view, axis=0))


def test_the_table_gives_thresholds_falling_and_recall_rising_with_the_budget(tmp_path, monkeypatch, capsys):
    data = course_file(tmp_path / "course.npz", rows=80, outlier_fraction=0.05)
    code, out, _ = run_benchmark(monkeypatch, capsys, "--data", str(tmp_path / "course.npz"), "--sets", "held-out",
                                 "--seeds", "1", "--rows", "60", "--budgets", "3,0,1")
    assert code == 0, out
    assert f"real terrain: 1 set(s) of {80 - len(data.outlier_rows)} rows of course.npz " \
           f"({len(data.outlier_rows)} photographs left out)" in out
    lines = out.splitlines()
    thresholds = [float(value) for value in lines[2].split("|")[1:]]
    assert thresholds == sorted(thresholds, reverse=True) and len(thresholds) == 3  # budgets 0, 1, 3
    held_out = next(line for line in lines if line.startswith("held-out ") and "|" in line)
    recalls = [float(value) for value in re.findall(r"\d\.\d{3}", held_out)]
    assert len(recalls) == 4 and all(0.0 <= r <= 1.0 for r in recalls)
    assert recalls[:3] == sorted(recalls[:3])
    per_style = re.findall(r"^held-out (\w+)\s+(\d+) \|", out, re.MULTILINE)  # recall per style
    assert per_style and sum(int(count) for _, count in per_style) == int(held_out.split()[1])


def test_samples_of_the_file_and_bad_budgets_are_checked_against_its_terrain_rows(tmp_path, monkeypatch, capsys):
    course_file(tmp_path / "course.npz", rows=60, outlier_fraction=0.05)
    common = ("--data", str(tmp_path / "course.npz"), "--sets", "default", "--seeds", "1", "--rows", "40")
    code, out, _ = run_benchmark(monkeypatch, capsys, *common, "--real-rows", "30", "--draws", "2", "--budgets", "1")
    assert code == 0 and "real terrain: 2 set(s) of 30 rows of course.npz (3 photographs left out)" in out

    for argv, message in ((("--real-rows", "58"), "--real-rows: 58 is more than the file's 57 terrain rows"),
                          (("--budgets", "57"), "--budgets: 57 is not below the 57 terrain rows of a real set"),
                          (("--draws", "3"), "--draws: sets are drawn only with --real-rows N"),
                          (("--budgets", "0,x"), "'0,x' is not a comma-separated list of whole numbers of 0 or more")):
        code, out, err = run_benchmark(monkeypatch, capsys, *common, *argv)
        assert code == 2 and message in err and "Traceback" not in err
        assert "set" not in out  # stopped before any table


def test_show_lists_the_most_isolated_terrain_rows_by_their_row_in_the_file(tmp_path, monkeypatch, capsys):
    data = course_file(tmp_path / "course.npz", rows=60, outlier_fraction=0.05)
    code, out, _ = run_benchmark(monkeypatch, capsys, "--data", str(tmp_path / "course.npz"), "--sets", "default",
                                 "--seeds", "1", "--rows", "40", "--budgets", "0", "--show", "3")
    assert code == 0, out
    listed = re.search(r"most isolated \(row of course\.npz: isolation\): (.*)", out).group(1)
    rows_and_distances = [(int(row), float(distance)) for row, distance in re.findall(r"(\d+): (\d+\.\d+)", listed)]
    assert len(rows_and_distances) == 3
    rows, distances = zip(*rows_and_distances)
    assert not set(rows) & set(data.outlier_rows)  # terrain rows only, numbered as in the file
    assert list(distances) == sorted(distances, reverse=True)
    threshold_at_budget_0 = float(out.splitlines()[3].split("|")[1])
    assert distances[0] == pytest.approx(threshold_at_budget_0, abs=0.005)  # the most isolated row sets it
