"""Every file the pipeline writes: whole or absent, and the same bytes for the same content.

Each writer fills a temporary file in the target's folder and renames it into place (``os.replace`` is
atomic within one filesystem), so a full disk, a missing permission or a kill never leaves a truncated
output. A failed write removes the temporary file, leaves any older file at the path untouched and
raises one ``UserError`` line naming the file and the cause.

Bytes are reproducible so that DVC sees an unchanged output when a deterministic stage reruns: JSON and
CSV have fixed formatting, PNGs carry no software version, npz archives are uncompressed (NumPy stamps
their entries with a fixed date), and Keras archives lose their save date, the entry times and the
memory addresses Keras writes for shared objects.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from marsseg.errors import UserError

# The DOS epoch, the earliest time a zip entry can hold (NumPy's npz entries carry it too).
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# Keras writes these entries in this order; any other entry follows, sorted by name.
KERAS_ENTRY_ORDER = ("metadata.json", "config.json", "model.weights.h5")
PNG_METADATA = {"Software": None}  # the default names the matplotlib version


def _file_mode() -> int:
    """What ``open()`` would give a new file (``mkstemp`` makes it owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def _cause(exc: OSError) -> str:
    if exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def _failed(path: Path, exc: OSError) -> UserError:
    return UserError(f"{path}: could not write ({_cause(exc)})")


def _remove(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary handle on a temporary file beside ``path``; renamed to ``path`` when the block succeeds.

    An ``OSError`` inside the block or while finishing becomes one ``UserError`` line; any other exception
    propagates unchanged. Either way the temporary file is gone and an older ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _failed(path, exc) from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            # A full disk can surface only when the data reaches it (delayed allocation): before the rename.
            os.fsync(handle.fileno())
        os.chmod(temporary, _FILE_MODE)
        os.replace(temporary, path)
    except OSError as exc:
        _remove(temporary)
        raise _failed(path, exc) from None
    except BaseException:
        _remove(temporary)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as handle:
        handle.write(data)


def write_text(path: str | Path, text: str) -> None:
    """UTF-8, ``\\n`` line ends whatever the platform."""
    write_bytes(path, text.encode("utf-8"))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_text(obj) -> str:
    """Two-space indent, keys in insertion order (the order the stage chose), a final newline."""
    return json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n"


def write_json(path: str | Path, obj) -> None:
    write_text(path, json_text(obj))


def write_csv(path: str | Path, frame, float_format: str | None = None, index: bool = False) -> None:
    """A pandas DataFrame as CSV with ``\\n`` line ends.

    Floats are written by Python's shortest round-trip repr unless ``float_format`` (e.g. ``"%.6g"``) is
    given: both depend only on the value, never on the machine or the run.
    """
    text = frame.to_csv(index=index, float_format=float_format, lineterminator="\n")
    write_text(path, text)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """An uncompressed ``.npz``: faster than compressed, and byte-identical for identical arrays."""
    with atomic_file(path) as handle:
        np.savez(handle, **arrays)


def save_figure(fig, path: str | Path, dpi: int = 100, **savefig_kwargs) -> None:
    """A matplotlib figure as PNG with fixed metadata (the same drawing gives the same bytes); closes it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_file(path) as handle:
            fig.savefig(handle, format="png", dpi=dpi, metadata=PNG_METADATA, **savefig_kwargs)
    finally:
        plt.close(fig)


def _keras_entry_order(names: list[str]) -> list[str]:
    known = [name for name in KERAS_ENTRY_ORDER if name in names]
    return known + sorted(name for name in names if name not in KERAS_ENTRY_ORDER)


def _renumber_shared_objects(node, ids: dict) -> None:
    """Keras names an object shared by several layers (e.g. the dtype policy) by its ``id()``, a memory
    address that differs on every run; number them 1, 2, ... in order of first appearance instead
    (loading only matches equal numbers)."""
    if isinstance(node, dict):
        if "shared_object_id" in node:
            node["shared_object_id"] = ids.setdefault(node["shared_object_id"], len(ids) + 1)
        for value in node.values():
            _renumber_shared_objects(value, ids)
    elif isinstance(node, list):
        for value in node:
            _renumber_shared_objects(value, ids)


def _reproducible_entry(name: str, data: bytes) -> bytes:
    if name == "metadata.json":
        metadata = json.loads(data)
        metadata.pop("date_saved", None)
        return json.dumps(metadata, sort_keys=True).encode()
    if name == "config.json":
        config = json.loads(data)
        _renumber_shared_objects(config, {})
        return json.dumps(config).encode()
    return data


def normalise_keras_archive(source: BinaryIO | str | Path, target: BinaryIO) -> None:
    """Copy a ``.keras`` zip without its save date or memory addresses, with fixed entry times, attributes
    and order.

    The weights (HDF5) are stored as Keras wrote them: h5py does not record object times unless asked
    (``track_times``), which Keras does not do; ``tests/test_io.py`` checks it stays so.
    """
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as copy:
        for name in _keras_entry_order(original.namelist()):
            entry = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            entry.create_system = 3  # Unix, whatever the platform that saved it
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_STORED
            copy.writestr(entry, _reproducible_entry(name, original.read(name)))


def save_model(model, path: str | Path) -> None:
    """A Keras model as a byte-reproducible ``.keras`` archive (same weights -> same md5)."""
    path = Path(path)
    # Keras insists on a ``.keras`` name; it writes into a private folder, the archive then is normalised.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as exc:
        raise _failed(path, exc) from None
    try:
        raw = scratch / "model.keras"
        try:
            model.save(raw)
        except OSError as exc:
            raise _failed(path, exc) from None
        with atomic_file(path) as handle:
            normalise_keras_archive(raw, handle)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
