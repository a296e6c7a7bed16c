"""The competition submission file: fast writer and strict checker (`marsseg submit-check` runs it on any file).

Format: header ``id,0,1,...,8191``; then one row per test image, in test-set order: its 0-based
``id``, then the predicted class (0-4) of each pixel of the 64x128 mask flattened row-major.

Classes are single digits, so a row's pixel part has a fixed layout (digit, comma, digit, ...):
the writer fills a byte buffer with NumPy and the checker validates it the same way. Only rows
that fail that fast path are parsed field by field, to say exactly what is wrong.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marsseg import CLASS_NAMES, IMAGE_SHAPE, NUM_CLASSES
from marsseg.contracts import check_images, check_masks
from marsseg.datasets import read_npz
from marsseg.errors import UserError
from marsseg.io import atomic_file

PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
HEADER = ("id," + ",".join(str(i) for i in range(PIXELS)) + "\n").encode()
ROWS_PER_CHUNK = 512
_PIXEL_BYTES = 2 * PIXELS  # each pixel: one digit, then ',' (or the row's final '\n')
_DIGIT_ZERO, _COMMA, _NEWLINE = ord("0"), ord(","), ord("\n")
_VALID_DIGITS = np.zeros(256, dtype=bool)
_VALID_DIGITS[_DIGIT_ZERO:_DIGIT_ZERO + NUM_CLASSES] = True


# --------------------------------------------------------------------------- writing

def _pixel_bytes(labels: np.ndarray) -> np.ndarray:
    """(n, 8192) labels -> (n, 16384) ASCII bytes ``d,d,...,d\\n``."""
    buffer = np.full((len(labels), _PIXEL_BYTES), _COMMA, dtype=np.uint8)
    buffer[:, 0::2] = labels + _DIGIT_ZERO
    buffer[:, -1] = _NEWLINE
    return buffer


def write_submission(path: str | Path, labels: np.ndarray) -> str:
    """Write (N,64,128) predicted classes as a submission; returns the file's md5.

    Streamed through ``marsseg.io.atomic_file``: a full disk or a kill never leaves a truncated file.
    """
    check_masks(labels, "write_submission", "predictions")
    digest = hashlib.md5()
    flat = labels.reshape(len(labels), PIXELS)
    with atomic_file(path) as handle:
        for block in _written(flat, digest):
            handle.write(block)
    return digest.hexdigest()


def _written(flat: np.ndarray, digest) -> Iterator[bytes]:
    """The file's bytes, header first, ``ROWS_PER_CHUNK`` rows per block, fed to ``digest`` on the way."""
    digest.update(HEADER)
    yield HEADER
    for start in range(0, len(flat), ROWS_PER_CHUNK):
        pixels = _pixel_bytes(flat[start:start + ROWS_PER_CHUNK])
        block = b"".join(b"%d," % (start + i) + row.tobytes() for i, row in enumerate(pixels))
        digest.update(block)
        yield block


# --------------------------------------------------------------------------- checking

@dataclass
class SubmissionSummary:
    rows: int
    class_counts: np.ndarray  # (5,) predicted pixels per class
    md5: str

    @property
    def class_fractions(self) -> dict[str, float]:
        total = max(int(self.class_counts.sum()), 1)
        return {name: round(float(c) / total, 6) for name, c in zip(CLASS_NAMES, self.class_counts)}


def _describe_bad_row(where: str, row: int, line: bytes) -> str:
    """Why one data row is invalid, in one line (only called for rows the fast path rejected)."""
    fields = line.split(b",")
    if len(fields) != PIXELS + 1:
        return f"{where}: row {row} has {len(fields)} columns, expected {PIXELS + 1} (id + {PIXELS} pixels)"
    if fields[0] != b"%d" % row:
        return f"{where}: row {row} has id {fields[0][:20].decode(errors='replace')!r}, expected {row} (ids are 0-based rows in test-set order)"
    for column, value in enumerate(fields[1:]):
        if not re.fullmatch(rb"[0-9]", value):
            shown = value[:20].decode(errors="replace")
            return f"{where}: row {row}, column '{column}': value {shown!r} is not an integer class 0-{NUM_CLASSES - 1}"
        if int(value) >= NUM_CLASSES:
            return f"{where}: row {row}, column '{column}': class {int(value)} is outside 0-{NUM_CLASSES - 1}"
    return f"{where}: row {row} is malformed"


def _check_header(where: str, header: bytes) -> None:
    if header + b"\n" == HEADER:
        return
    got, want = header.split(b","), HEADER.rstrip(b"\n").split(b",")
    if len(got) != len(want):
        raise UserError(f"{where}: header has {len(got)} columns, expected {len(want)} ('id,0,1,...,{PIXELS - 1}')")
    first = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
    shown = got[first][:20].decode(errors="replace")
    raise UserError(f"{where}: header column {first + 1} is {shown!r}, expected {want[first].decode()!r}")


def _check_rows(where: str, lines: list[bytes], first_row: int, counts: np.ndarray) -> None:
    """Validate a block of data rows with NumPy; diagnose the first failing row precisely."""
    prefixes = [b"%d," % (first_row + i) for i in range(len(lines))]
    fast = [line.startswith(p) and len(line) == len(p) + _PIXEL_BYTES - 1 for line, p in zip(lines, prefixes)]
    if all(fast):
        body = np.frombuffer(b"".join(line[len(p):] + b"," for line, p in zip(lines, prefixes)), dtype=np.uint8)
        body = body.reshape(len(lines), _PIXEL_BYTES)
        digits, commas = body[:, 0::2], body[:, 1::2]
        good = _VALID_DIGITS[digits].all(axis=1) & (commas == _COMMA).all(axis=1)
        if good.all():
            counts += np.bincount((digits - _DIGIT_ZERO).ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
            return
        fast = list(good)
    bad = fast.index(False)
    raise UserError(_describe_bad_row(where, first_row + bad, lines[bad]))


def check_row_count(where: str, rows: int, expected_rows: int | None) -> None:
    """One data row per test image (``None``: any number)."""
    if expected_rows is not None and rows != expected_rows:
        raise UserError(f"{where}: {rows} rows but {expected_rows} expected (one per test image)")


def check_submission(path: str | Path, expected_rows: int | None = None) -> SubmissionSummary:
    """Validate a submission file completely; raise ``UserError`` naming the first problem."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise UserError(f"{where}: file not found")
    content = path.read_bytes()
    md5 = hashlib.md5(content).hexdigest()
    if not content:
        raise UserError(f"{where}: file is empty")
    lines = content.replace(b"\r\n", b"\n").split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the final newline
    _check_header(where, lines[0])
    data = lines[1:]
    check_row_count(where, len(data), expected_rows)
    if not data:
        raise UserError(f"{where}: no data rows after the header")
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for start in range(0, len(data), ROWS_PER_CHUNK):
        _check_rows(where, data[start:start + ROWS_PER_CHUNK], start, counts)
    return SubmissionSummary(rows=len(data), class_counts=counts, md5=md5)


# --------------------------------------------------------------------------- test images

def read_test_array(path: str | Path) -> tuple[str, np.ndarray]:
    arrays = read_npz(path)
    for key in ("test_images", "test_set"):
        if key in arrays:
            return key, arrays[key]
    raise UserError(f"{path}: no 'test_images' or 'test_set' array (has: {', '.join(sorted(arrays)) or 'none'})")


def load_test_images(path: str | Path) -> np.ndarray:
    """The competition test images of a canonical dataset file (``test_images``) or course file (``test_set``)."""
    key, images = read_test_array(path)
    check_images(images, str(path), key)
    if len(images) == 0:
        raise UserError(f"{path}: '{key}' holds no test images; nothing to submit")
    return images
