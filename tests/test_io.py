"""marsseg.io: every writer is atomic (whole file or none, older file intact) and byte-reproducible."""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from marsseg import io
from marsseg.errors import UserError


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def figure(noise: bool = False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(3, 2))
    axis.plot([0, 1, 2], [1, 0, 2])
    axis.set_title("test")
    if noise:  # incompressible pixels: a PNG of a few hundred kB
        axis.imshow(np.random.default_rng(0).random((300, 450, 3)))
    return fig


def tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    # Fixed names: Keras numbers unnamed layers per process (a stage builds its model once).
    inputs = keras.Input((8, 16, 1), name="image")
    # Several layers: Keras records the dtype policy they share as a "shared object".
    hidden = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Conv2D(3, 3, padding="same", name="logits")(hidden)
    return keras.Model(inputs, outputs, name="tiny")


# One call per writer, each writing a few hundred kB at most: enough to overflow the tiny tmpfs.
WRITERS = {
    "bytes": lambda path: io.write_bytes(path, b"x" * 200_000),
    "text": lambda path: io.write_text(path, "line\n" * 40_000),
    "json": lambda path: io.write_json(path, {"values": list(range(40_000))}),
    "csv": lambda path: io.write_csv(path, pd.DataFrame({"a": np.arange(40_000) / 7})),
    "npz": lambda path: io.save_npz(path, images=np.ones((40, 64, 128), np.uint8)),
    "png": lambda path: io.save_figure(figure(noise=True), path, dpi=300),
}


def leftovers(folder: Path, keep: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


# ------------------------------------------------------------------------- reproducible bytes

def test_json_and_csv_have_fixed_formatting(tmp_path):
    io.write_json(tmp_path / "a.json", {"b": np.float32(0.5), "a": np.int64(3), "c": np.arange(2)})
    assert (tmp_path / "a.json").read_text() == '{\n  "b": 0.5,\n  "a": 3,\n  "c": [\n    0,\n    1\n  ]\n}\n'
    io.write_csv(tmp_path / "a.csv", pd.DataFrame({"x": [0.1, 1 / 3], "n": [1, 2]}))
    assert (tmp_path / "a.csv").read_bytes() == b"x,n\n0.1,1\n0.3333333333333333,2\n"
    io.write_csv(tmp_path / "b.csv", pd.DataFrame({"x": [1 / 3]}), float_format="%.6g")
    assert (tmp_path / "b.csv").read_text() == "x\n0.333333\n"


def test_npz_is_byte_identical_and_readable(tmp_path):
    arrays = {"images": np.arange(24, dtype=np.uint8).reshape(2, 3, 4), "index": np.arange(2)}
    io.save_npz(tmp_path / "a.npz", **arrays)
    time.sleep(1.1)  # a zip entry time would show up in the bytes
    io.save_npz(tmp_path / "b.npz", **arrays)
    assert md5(tmp_path / "a.npz") == md5(tmp_path / "b.npz")
    with np.load(tmp_path / "a.npz") as loaded:
        np.testing.assert_array_equal(loaded["images"], arrays["images"])


def test_two_saves_of_a_figure_are_byte_identical(tmp_path):
    io.save_figure(figure(), tmp_path / "a.png")
    io.save_figure(figure(), tmp_path / "b.png")
    assert md5(tmp_path / "a.png") == md5(tmp_path / "b.png")
    assert b"matplotlib" not in (tmp_path / "a.png").read_bytes().lower()


def test_two_saves_of_a_model_are_byte_identical_and_load(tmp_path):
    import keras

    model = tiny_model()
    io.save_model(model, tmp_path / "a.keras")
    time.sleep(2.1)  # zip entry times have a 2-second resolution; the save date has 1 second
    # A second, equal model: its shared objects (dtype policy) live at other memory addresses.
    io.save_model(tiny_model(), tmp_path / "b.keras")
    assert md5(tmp_path / "a.keras") == md5(tmp_path / "b.keras")
    with zipfile.ZipFile(tmp_path / "a.keras") as archive:
        assert archive.namelist() == ["metadata.json", "config.json", "model.weights.h5"]
        assert all(entry.date_time == io.ZIP_DATE for entry in archive.infolist())
        assert b"date_saved" not in archive.read("metadata.json")
    assert leftovers(tmp_path, "a.keras") == ["b.keras"]
    loaded = keras.models.load_model(tmp_path / "a.keras")
    x = np.random.default_rng(0).random((2, 8, 16, 1)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_the_weights_file_records_no_hdf5_object_times(tmp_path):
    """The HDF5 weights Keras writes carry no object times (h5py's ``track_times`` is off by default).

    ``normalise_keras_archive`` copies the weights entry as it is, so this must hold for Keras's own bytes.
    """
    model = tiny_model()
    weights = []
    for name in ("a.keras", "b.keras"):
        model.save(tmp_path / name)
        with zipfile.ZipFile(tmp_path / name) as archive:
            weights.append(archive.read("model.weights.h5"))
        time.sleep(1.1)  # HDF5 times have a 1-second resolution
    assert weights[0] == weights[1]


# ------------------------------------------------------------------------- failures

@pytest.mark.parametrize("kind", sorted(WRITERS))
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_injected_write_error_gives_one_line_and_leaves_the_old_file(tmp_path, monkeypatch, kind, code):
    target = tmp_path / f"out.{kind}"
    target.write_bytes(b"older")

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(io.os, "fsync", fail)
    with pytest.raises(UserError) as caught:
        WRITERS[kind](target)
    message = str(caught.value)
    assert message == f"{target}: could not write ({os.strerror(code).lower()})"
    assert "\n" not in message
    assert target.read_bytes() == b"older"
    assert leftovers(tmp_path, target.name) == []


def test_injected_error_while_saving_a_model(tmp_path, monkeypatch):
    target = tmp_path / "model.keras"
    target.write_bytes(b"older")
    model = tiny_model()

    def fail(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(model), "save", fail)
    with pytest.raises(UserError, match=r"model.keras: could not write \(no space left on device\)$"):
        io.save_model(model, target)
    assert target.read_bytes() == b"older"
    assert leftovers(tmp_path, target.name) == []


def test_a_non_os_error_propagates_and_still_cleans_up(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with io.atomic_file(tmp_path / "x.bin") as handle:
            handle.write(b"partial")
            1 / 0
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder_names_the_file(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(UserError, match=r"locked/a.json: could not write \(permission denied\)$"):
            io.write_json(folder / "a.json", {})
    finally:
        folder.chmod(0o700)


def test_new_files_get_the_usual_permissions(tmp_path):
    io.write_text(tmp_path / "a.txt", "x")
    (tmp_path / "b.txt").write_text("x")
    assert (tmp_path / "a.txt").stat().st_mode == (tmp_path / "b.txt").stat().st_mode


# ------------------------------------------------------------------------- a filesystem that fills up

@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 64 kB tmpfs (needs root and a kernel that allows the mount; skipped otherwise)."""
    mount_point = tmp_path / f"full-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_full_disk_leaves_the_old_file_and_no_temporary(tiny_tmpfs, kind):
    target = tiny_tmpfs / f"out.{kind}"
    target.write_bytes(b"older")
    with pytest.raises(UserError) as caught:
        WRITERS[kind](target)
    assert str(caught.value) == f"{target}: could not write (no space left on device)"
    assert target.read_bytes() == b"older"
    assert leftovers(tiny_tmpfs, target.name) == []


def test_full_disk_while_saving_a_model(tiny_tmpfs):
    import keras

    inputs = keras.Input((64, 128, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(64, 7, padding="same")(inputs))  # ~13 kB config + 13k weights
    big = keras.Model(inputs, keras.layers.Conv2D(64, 3, padding="same")(model.output))  # ~150 kB of weights
    target = tiny_tmpfs / "model.keras"
    target.write_bytes(b"older")
    with pytest.raises(UserError, match=r"model.keras: could not write \(no space left on device\)$"):
        io.save_model(big, target)
    assert target.read_bytes() == b"older"
    assert leftovers(tiny_tmpfs, target.name) == []
