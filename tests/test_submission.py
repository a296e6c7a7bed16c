"""Submission file: writer round-trip, checker messages, CLI, and the submit stage end to end."""
import json

import numpy as np
import pytest
import yaml

from marsseg.errors import UserError
from marsseg.cli import main as marsseg_cli
from marsseg.submission import HEADER, PIXELS, check_submission, write_submission

N_ROWS = 5

# The stage logs into the train stage's MLflow run; these tests have none (no models/mlflow_run.json).
NO_TRAIN_RUN = {"tracking_uri": "", "experiment": "test", "required": False}


@pytest.fixture
def labels():
    return np.random.default_rng(0).integers(0, 5, (N_ROWS, 64, 128)).astype(np.uint8)


@pytest.fixture
def good_file(tmp_path, labels):
    path = tmp_path / "submission.csv"
    write_submission(path, labels)
    return path


def rewrite_line(path, line_number, edit):
    lines = path.read_bytes().split(b"\n")
    lines[line_number] = edit(lines[line_number])
    path.write_bytes(b"\n".join(lines))


def test_round_trip_through_numpy(good_file, labels):
    table = np.loadtxt(good_file, delimiter=",", skiprows=1, dtype=np.int64)
    assert table.shape == (N_ROWS, 1 + PIXELS)
    np.testing.assert_array_equal(table[:, 0], np.arange(N_ROWS))
    np.testing.assert_array_equal(table[:, 1:].reshape(N_ROWS, 64, 128), labels)  # row-major flattening


def test_header_exact(good_file):
    header = good_file.read_bytes().split(b"\n", 1)[0].decode()
    assert header == "id," + ",".join(map(str, range(8192)))
    assert HEADER == (header + "\n").encode()


def test_checker_accepts_and_summarises(good_file, labels):
    summary = check_submission(good_file, expected_rows=N_ROWS)
    assert summary.rows == N_ROWS
    np.testing.assert_array_equal(summary.class_counts, np.bincount(labels.ravel(), minlength=5))
    assert sum(summary.class_fractions.values()) == pytest.approx(1.0, abs=1e-5)


def test_checker_accepts_crlf_line_endings(good_file):
    good_file.write_bytes(good_file.read_bytes().replace(b"\n", b"\r\n"))
    assert check_submission(good_file, N_ROWS).rows == N_ROWS


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.write_bytes(f.read_bytes().rsplit(b"\n", 2)[0] + b"\n"), "4 rows but 5 expected"),
    (lambda f: rewrite_line(f, 0, lambda line: line.replace(b"id,", b"ID,", 1)), "header column 1 is 'ID', expected 'id'"),
    (lambda f: rewrite_line(f, 0, lambda line: line + b",8192"), "header has 8194 columns"),
    (lambda f: rewrite_line(f, 3, lambda line: line[:-1] + b"5"), "row 2, column '8191': class 5 is outside 0-4"),
    (lambda f: rewrite_line(f, 2, lambda line: line[:-1] + b"1.0"), "row 1, column '8191': value '1.0' is not an integer"),
    (lambda f: rewrite_line(f, 2, lambda line: line.replace(b",", b",x", 2).replace(b",x", b",", 1)),
     "row 1, column '1': value 'x"),
    (lambda f: rewrite_line(f, 4, lambda line: line[:-2]), "row 3 has 8192 columns, expected 8193"),
    (lambda f: rewrite_line(f, 1, lambda line: b"7" + line[1:]), "row 0 has id '7', expected 0"),
    (lambda f: f.write_bytes(b""), "file is empty"),
])
def test_checker_rejects_with_clear_message(good_file, edit, message):
    edit(good_file)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")) as caught:
        check_submission(good_file, expected_rows=N_ROWS)
    assert str(good_file) in str(caught.value) and "\n" not in str(caught.value)


def test_writer_refuses_invalid_labels(tmp_path, labels):
    labels[0, 0, 0] = 5
    with pytest.raises(UserError, match="outside 0-4"):
        write_submission(tmp_path / "s.csv", labels)
    assert not (tmp_path / "s.csv").exists()


def test_cli_ok_and_error(good_file, tmp_path, capsys):
    canonical = tmp_path / "canonical.npz"
    np.savez(canonical, test_images=np.zeros((N_ROWS, 64, 128), np.uint8))
    course = tmp_path / "course.npz"
    np.savez(course, training_set=np.zeros((1, 2, 64, 128), np.uint8), test_set=np.zeros((N_ROWS + 1, 64, 128)))
    assert marsseg_cli(["submit-check", str(good_file), "--dataset", str(canonical)]) == 0
    assert capsys.readouterr().out.startswith(f"OK {good_file}: 5 rows")
    assert marsseg_cli(["submit-check", str(good_file), "--dataset", str(course)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {good_file}: 5 rows but 6 expected (one per test image)"


def test_cli_names_a_missing_submission_before_a_missing_data_set(tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    assert marsseg_cli(["submit-check", str(missing), "--dataset", str(tmp_path / "absent.npz")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {missing}: file not found"


def tiny_model(path):
    """Two convolutions to a 5-class softmax: stands in for the trained model."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 128, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(5, 1, activation="softmax")(x)
    keras.Model(inputs, outputs).save(path)


def submit_stage(root, submit: dict, expect: int = 0):
    """``python stages/submit.py`` in ``root`` (full params.yaml with ``submit`` changed), as DVC runs it."""
    import subprocess
    import sys

    from conftest import REPO, project_env, set_params

    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    set_params(root, {"seed": 1, "submit": submit, "mlflow": NO_TRAIN_RUN})
    result = subprocess.run([sys.executable, str(REPO / "stages" / "submit.py")], cwd=root, env=project_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == expect, result.stdout + result.stderr
    return result


def test_submit_stage_end_to_end(tmp_path):
    (tmp_path / "models").mkdir()
    tiny_model(tmp_path / "models" / "model.keras")
    (tmp_path / "data" / "clean").mkdir(parents=True)
    test_images = np.random.default_rng(1).integers(0, 256, (7, 64, 128)).astype(np.uint8)
    np.savez(tmp_path / "data" / "clean" / "dataset.npz", test_images=test_images)

    submit_stage(tmp_path, {"tta": True, "batch_size": 3})

    summary = check_submission(tmp_path / "submission" / "submission.csv", expected_rows=7)
    written = json.loads((tmp_path / "metrics" / "submit.json").read_text())
    assert written["rows"] == 7 and written["md5"] == summary.md5 and written["tta"] is True
    assert sum(written["class_fraction"].values()) == pytest.approx(1.0, abs=1e-5)
    # Each predicted share with its 95% interval over the 7 test images (submit.bootstrap resamples).
    low, high = written["class_fraction_ci_low"], written["class_fraction_ci_high"]
    assert list(low) == list(high) == list(written["class_fraction"])
    for name, share in written["class_fraction"].items():
        assert low[name] <= share <= high[name]
    assert any(high[name] > low[name] for name in low)


def test_submit_stage_without_model_fails_clearly(tmp_path):
    result = submit_stage(tmp_path, {"tta": False, "batch_size": 64}, expect=2)
    assert result.stderr.strip().splitlines()[-1] == \
        "error: models/model.keras: model file not found; run the train stage first"
