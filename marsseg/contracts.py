"""Data contracts: what every stage checks in the arrays it reads and writes.

Each check raises ``UserError`` with one line naming the file and the problem. A real failure
these guard against: a public solution to this task saved its augmented masks in place of the
images and trained on them.
"""
from __future__ import annotations

import numpy as np

from marsseg import IMAGE_SHAPE, NUM_CLASSES
from marsseg.errors import UserError


def check_images(images: np.ndarray, where: str, name: str = "images") -> None:
    if not isinstance(images, np.ndarray):
        raise UserError(f"{where}: '{name}' is not an array")
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise UserError(
            f"{where}: '{name}' has shape {images.shape}, expected (N, {IMAGE_SHAPE[0]}, {IMAGE_SHAPE[1]})"
        )
    if images.dtype != np.uint8:
        raise UserError(f"{where}: '{name}' has dtype {images.dtype}, expected uint8 greyscale 0-255")


def check_masks(masks: np.ndarray, where: str, name: str = "masks") -> None:
    check_images(masks, where, name)
    if masks.size and masks.max() >= NUM_CLASSES:
        bad = np.unique(masks[masks >= NUM_CLASSES])[:5].tolist()
        raise UserError(f"{where}: '{name}' holds labels {bad} outside 0-{NUM_CLASSES - 1}")


def check_pairs(images: np.ndarray, masks: np.ndarray, where: str) -> None:
    """Images and masks line up, and no image is its own mask."""
    check_images(images, where)
    check_masks(masks, where)
    if len(images) != len(masks):
        raise UserError(f"{where}: {len(images)} images but {len(masks)} masks")
    if len(images) == 0:
        raise UserError(f"{where}: no training rows")
    identical = np.flatnonzero((images == masks).reshape(len(images), -1).all(axis=1))
    if identical.size:
        raise UserError(
            f"{where}: image and mask are identical in {identical.size} row(s) (first: {identical[0]}); "
            "masks were saved in place of images?"
        )


def check_index(index: np.ndarray, n_rows: int, where: str) -> None:
    """``index`` maps each row back to its row in the ingested training set."""
    if index.ndim != 1 or len(index) != n_rows:
        raise UserError(f"{where}: 'index' has shape {index.shape}, expected ({n_rows},)")
    if not np.issubdtype(index.dtype, np.integer) or (index.size and index.min() < 0):
        raise UserError(f"{where}: 'index' must hold non-negative integers")


def check_row_count(actual: int, expected: int, where: str, what: str) -> None:
    if actual != expected:
        raise UserError(f"{where}: {actual} rows but {expected} expected ({what})")
