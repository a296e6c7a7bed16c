"""The canonical dataset files passed between stages, read and written under the data contracts.

A labelled file holds ``images`` (N,64,128) uint8, ``masks`` (N,64,128) uint8 in 0-4 and ``index``
(N,) int64: each row's 0-based row in the ingested ``training_set``, so every later decision
(outlier removed, fold, augmented copy) can be traced back. Ingest and clean files also carry
``test_images`` (M,64,128) uint8, the unlabelled competition images.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marsseg import contracts
from marsseg.errors import UserError
from marsseg.io import save_npz


@dataclass
class LabelledSet:
    images: np.ndarray
    masks: np.ndarray
    index: np.ndarray
    test_images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, rows: np.ndarray) -> "LabelledSet":
        """The given rows (test images are carried along unchanged)."""
        return LabelledSet(self.images[rows], self.masks[rows], self.index[rows], self.test_images)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, with one clear line if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None


def _require(arrays: dict, key: str, path: Path) -> np.ndarray:
    if key not in arrays:
        raise UserError(f"{path}: missing array '{key}' (has: {', '.join(sorted(arrays)) or 'none'})")
    return arrays[key]


def validate(data: LabelledSet, where: str) -> None:
    contracts.check_pairs(data.images, data.masks, where)
    contracts.check_index(data.index, len(data.images), where)
    if data.test_images is not None:
        contracts.check_images(data.test_images, where, "test_images")


def load_labelled(path: str | Path, require_test: bool = False) -> LabelledSet:
    path = Path(path)
    arrays = read_npz(path)
    data = LabelledSet(
        images=_require(arrays, "images", path),
        masks=_require(arrays, "masks", path),
        index=_require(arrays, "index", path),
        test_images=_require(arrays, "test_images", path) if require_test else arrays.get("test_images"),
    )
    validate(data, str(path))
    return data


def save_labelled(path: str | Path, data: LabelledSet) -> None:
    """Validate, then write (atomic; uncompressed: faster, and byte-for-byte reproducible)."""
    validate(data, str(path))
    arrays = {"images": data.images, "masks": data.masks, "index": data.index.astype(np.int64)}
    if data.test_images is not None:
        arrays["test_images"] = data.test_images
    save_npz(path, **arrays)
