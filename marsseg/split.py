"""Leak-proof, rare-class-aware train/validation split.

Two rules, from the report's recipe and from what the data really holds:

* Images with big rock (class 4) are split on their own, so the rare class reaches validation at a
  controlled rate (``rare_val_fraction``) instead of by luck; the others split at ``val_fraction``.
* Copies of one picture never sit on both sides. The course data (like AI4Mars) holds the same
  frame several times: exact copies, frames shifted by a few pixels, re-exposed frames, the same
  frame labelled by different people. Such rows are grouped and each group goes to one side whole;
  a group counts as rare if any member shows big rock.

Near-duplicates are found in two cheap steps: candidates are each image's nearest neighbours by
the magnitude of its Fourier spectrum (unchanged by a shift, so shifted copies rank first), and a
candidate pair is confirmed when, at the shift phase correlation finds (at most ``max_shift``
pixels), the fine texture of the two images correlates at ``min_correlation`` or more. Texture
means the image minus its blur, so brightness, contrast and smooth illumination changes do not
matter, while two unrelated images of smooth sand do not match.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from marsseg import NUM_CLASSES
from marsseg.datasets import LabelledSet
from marsseg.errors import UserError
from marsseg.config import SplitConfig
from marsseg.reporting import class_fractions

RARE_CLASS = NUM_CLASSES - 1  # big rock
# Candidate search: how many spectral neighbours per image are checked, and how alike their
# spectra must be. Measured on AI4Mars: planted shifted copies score >= 0.8 and rank first or second.
CANDIDATE_NEIGHBOURS = 5
CANDIDATE_MIN_SIMILARITY = 0.7
SPECTRUM_BAND = 12  # lowest spatial frequencies kept in the spectral signature
TEXTURE_BLUR_SIGMA = 2.0
ILLUMINATION_BLUR_SIGMA = 8.0


@dataclass
class SplitResult:
    train: LabelledSet
    val: LabelledSet
    table: pd.DataFrame  # one row per input row: index, fold, has_rare, group
    metrics: dict


# ---------------------------------------------------------------- duplicates


def content_hashes(images: np.ndarray) -> list[str]:
    return [hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images]


def exact_duplicate_pairs(images: np.ndarray) -> np.ndarray:
    """(E, 2) row pairs with byte-identical images: each copy paired with the first one seen."""
    first_seen: dict[str, int] = {}
    pairs = []
    for row, digest in enumerate(content_hashes(images)):
        if digest in first_seen:
            pairs.append((first_seen[digest], row))
        else:
            first_seen[digest] = row
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _texture(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.float32)
    return image - cv2.GaussianBlur(image, (0, 0), TEXTURE_BLUR_SIGMA)


def spectral_signatures(images: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Unit vectors of low-frequency log spectrum magnitudes: a shift barely changes them."""
    height, width = images.shape[1:]
    window = np.outer(np.hanning(height), np.hanning(width)).astype(np.float32)
    band = SPECTRUM_BAND
    signatures = []
    for start in range(0, len(images), chunk):
        batch = images[start:start + chunk].astype(np.float32)
        detail = batch - np.stack([cv2.GaussianBlur(image, (0, 0), ILLUMINATION_BLUR_SIGMA) for image in batch])
        # One FFT per image: numpy's batched rfft2 is several times slower on these small arrays.
        magnitude = np.abs(np.stack([np.fft.rfft2(image * window) for image in detail]))
        # The lowest positive and negative vertical frequencies; column 0 is dropped because it
        # carries the vertical illumination profile that unrelated frames share.
        low = np.concatenate([magnitude[:, :band, 1:band], magnitude[:, -band:, 1:band]], axis=1)
        signatures.append(np.log1p(low).reshape(len(batch), -1))
    signatures = np.concatenate(signatures).astype(np.float32)
    signatures -= signatures.mean(axis=1, keepdims=True)
    return signatures / (np.linalg.norm(signatures, axis=1, keepdims=True) + 1e-8)


def candidate_pairs(signatures: np.ndarray, neighbours: int = CANDIDATE_NEIGHBOURS,
                    min_similarity: float = CANDIDATE_MIN_SIMILARITY, chunk: int = 1024) -> np.ndarray:
    """(E, 2) pairs i < j where j is among i's most similar signatures (or i among j's)."""
    n = len(signatures)
    found = [np.empty((0, 2), dtype=np.int64)]
    for start in range(0, n, chunk):  # chunks keep the similarity matrix small for large sets
        rows = np.arange(start, min(start + chunk, n))
        similarity = signatures[rows] @ signatures.T
        similarity[np.arange(len(rows)), rows] = -np.inf
        row, col = np.nonzero(similarity >= min_similarity)  # few per row: sort only those
        order = np.lexsort((-similarity[row, col], row))
        row, col = row[order], col[order]
        rank = np.arange(len(row)) - np.searchsorted(row, row)  # position within its row
        keep = rank < neighbours
        found.append(np.stack([rows[row[keep]], col[keep]], axis=1))
    pairs = np.sort(np.concatenate(found), axis=1)
    return np.unique(pairs, axis=0).astype(np.int64)


def shifted_texture_correlation(first: np.ndarray, second: np.ndarray, max_shift: int) -> float:
    """Correlation of the two textures over their overlap at the best shift (-1 if it exceeds max_shift)."""
    a, b = _texture(first), _texture(second)
    (dx, dy), _ = cv2.phaseCorrelate(a, b)
    dx, dy = int(round(dx)), int(round(dy))
    if abs(dx) > max_shift or abs(dy) > max_shift:
        return -1.0
    height, width = a.shape
    u = a[max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)].ravel()
    v = b[max(0, dy):height - max(0, -dy), max(0, dx):width - max(0, -dx)].ravel()
    u, v = u - u.mean(), v - v.mean()
    denominator = float(np.linalg.norm(u) * np.linalg.norm(v))
    return float(u @ v) / denominator if denominator > 1e-6 else 0.0


def near_duplicate_pairs(images: np.ndarray, max_shift: int, min_correlation: float) -> np.ndarray:
    """(E, 2) pairs of confirmed near-duplicates (shifted, re-exposed or re-labelled frames)."""
    candidates = candidate_pairs(spectral_signatures(images))
    confirmed = [
        (i, j) for i, j in candidates
        if shifted_texture_correlation(images[i], images[j], max_shift) >= min_correlation
    ]
    return np.array(confirmed, dtype=np.int64).reshape(-1, 2)


def group_rows(n_rows: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of the duplicate graph, numbered by their first row."""
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_rows, n_rows))
    _, labels = connected_components(graph, directed=False)
    # Relabel by first member so group ids do not depend on scipy's numbering.
    first_row = {}
    for row, label in enumerate(labels):
        first_row.setdefault(label, row)
    return np.array([first_row[label] for label in labels], dtype=np.int64)


# ---------------------------------------------------------------- folds


def rare_rows(masks: np.ndarray) -> np.ndarray:
    return (masks == RARE_CLASS).reshape(len(masks), -1).any(axis=1)


def _pick_validation_groups(group_ids: np.ndarray, sizes: np.ndarray, fraction: float,
                            rng: np.random.Generator) -> set[int]:
    """Groups in a seeded random order, taken while they fit under ``fraction`` of the rows."""
    target = int(round(fraction * sizes.sum()))
    chosen, taken = set(), 0
    for position in rng.permutation(len(group_ids)):
        if taken + sizes[position] <= target:
            chosen.add(int(group_ids[position]))
            taken += int(sizes[position])
    return chosen


def assign_folds(groups: np.ndarray, rare: np.ndarray, config: SplitConfig, seed: int) -> np.ndarray:
    """True for validation rows. Whole groups move; rare groups and the others split apart."""
    group_ids, inverse = np.unique(groups, return_inverse=True)
    sizes = np.bincount(inverse)
    group_rare = np.bincount(inverse, weights=rare.astype(float)) > 0
    validation: set[int] = set()
    for stratum, fraction in ((True, config.rare_val_fraction), (False, config.val_fraction)):
        members = group_rare == stratum
        rng = np.random.default_rng([seed, int(stratum)])
        validation |= _pick_validation_groups(group_ids[members], sizes[members], fraction, rng)
    return np.isin(groups, list(validation))


def assign_kfold(groups: np.ndarray, rare: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold id (0..folds-1) per row. Whole groups move; big-rock groups and the others are each spread
    over the folds, largest group first onto the lightest fold, so every fold gets its share of both."""
    group_ids, inverse = np.unique(groups, return_inverse=True)
    sizes = np.bincount(inverse)
    group_rare = np.bincount(inverse, weights=rare.astype(float)) > 0
    group_fold = np.zeros(len(group_ids), dtype=np.int64)
    for stratum in (True, False):
        members = np.random.default_rng([seed, int(stratum), folds]).permutation(np.flatnonzero(group_rare == stratum))
        members = members[np.argsort(-sizes[members], kind="stable")]
        load = np.zeros(folds)
        for group in members:
            fold = int(np.argmin(load))
            group_fold[group] = fold
            load[fold] += sizes[group]
    return group_fold[inverse]


# ---------------------------------------------------------------- whole split


def find_duplicate_groups(images: np.ndarray, config: SplitConfig) -> tuple[np.ndarray, dict]:
    exact = exact_duplicate_pairs(images)
    near = (near_duplicate_pairs(images, config.max_shift, config.min_correlation)
            if config.near_duplicates else np.empty((0, 2), dtype=np.int64))
    groups = group_rows(len(images), np.concatenate([exact, near]))
    sizes = np.bincount(np.unique(groups, return_inverse=True)[1])
    stats = {
        "exact_duplicate_pairs": len(exact),
        "near_duplicate_pairs": len(near),
        "duplicate_groups": int((sizes > 1).sum()),
        "rows_in_duplicate_groups": int(sizes[sizes > 1].sum()),
    }
    return groups, stats


def _fold_metrics(name: str, data: LabelledSet, groups: np.ndarray, rare: np.ndarray) -> dict:
    _, counts = np.unique(groups, return_counts=True)
    return {
        f"{name}_rows": len(data),
        f"{name}_rare_rows": int(rare.sum()),
        f"{name}_duplicate_groups": int((counts > 1).sum()),
        f"{name}_class_fraction": class_fractions(data.masks),
    }


def split_dataset(data: LabelledSet, config: SplitConfig, seed: int, where: str = "the data set",
                  fold: int | None = None) -> SplitResult:
    """The single train/val split, or with ``fold`` the k-fold split (``config.folds``) validating on that fold."""
    groups, duplicate_stats = find_duplicate_groups(data.images, config)
    distinct = len(np.unique(groups))
    if distinct < 2:
        raise UserError(
            f"{where}: all {len(data)} rows are copies of one picture (exact or near duplicates), so no "
            "validation fold can be kept apart from training; the input needs distinct images"
        )
    rare = rare_rows(data.masks)
    if fold is not None:
        if distinct < config.folds:
            raise UserError(f"params.yaml: split.folds is {config.folds} but {where} holds only {distinct} distinct "
                            "pictures (duplicates stay together); use fewer folds")
        is_val = assign_kfold(groups, rare, config.folds, seed) == fold
    else:
        is_val = assign_folds(groups, rare, config, seed)
    if is_val.all() or not is_val.any():
        side = "training" if is_val.all() else "validation"
        raise UserError(
            f"params.yaml: split.val_fraction={config.val_fraction}, split.rare_val_fraction="
            f"{config.rare_val_fraction} leave the {side} fold empty for {len(data)} rows; adjust them"
        )
    train = LabelledSet(data.images[~is_val], data.masks[~is_val], data.index[~is_val])
    val = LabelledSet(data.images[is_val], data.masks[is_val], data.index[is_val])
    table = pd.DataFrame({
        "index": data.index,
        "fold": np.where(is_val, "val", "train"),
        "has_rare": rare.astype(int),
        "group": data.index[groups],  # a group is named by its first member's ingested row
    })
    metrics = {"input_rows": len(data), **duplicate_stats,
               **_fold_metrics("train", train, groups[~is_val], rare[~is_val]),
               **_fold_metrics("val", val, groups[is_val], rare[is_val])}
    return SplitResult(train, val, table, metrics)
