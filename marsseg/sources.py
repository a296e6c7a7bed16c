"""Data sources for the ingest stage: each turns its input into one canonical ``LabelledSet``.

``synthetic`` (default) needs no input; ``npz`` reads the course's Kaggle file format; ``ai4mars``
reads a folder in NASA/JPL's AI4Mars layout. Add a source with one function and one registry line.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from marsseg import IMAGE_SHAPE, NUM_CLASSES
from marsseg.datasets import LabelledSet, read_npz
from marsseg.errors import UserError

if TYPE_CHECKING:  # the config reads SOURCES to check data.source
    from marsseg.config import DataConfig

# AI4Mars labels: 0 soil, 1 bedrock, 2 sand, 3 big rock, 255 unlabelled -> our classes.
AI4MARS_LABEL_MAP = {0: 1, 1: 2, 2: 3, 3: 4, 255: 0}


def _as_uint8(values: np.ndarray, where: str, what: str, high: int) -> np.ndarray:
    """Any numeric array whose values are whole numbers in 0..high, as uint8."""
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
            or values.dtype == np.bool_):
        raise UserError(f"{where}: {what} has dtype {values.dtype}, expected a numeric array")
    if values.size == 0:
        return values.astype(np.uint8)
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        raise UserError(f"{where}: {what} contains NaN or infinite values")
    low_seen, high_seen = values.min(), values.max()
    if low_seen < 0 or high_seen > high:
        raise UserError(f"{where}: {what} has values in [{low_seen}, {high_seen}], outside 0-{high}")
    if np.issubdtype(values.dtype, np.floating) and not np.array_equal(values, np.round(values)):
        if high < 255:
            raise UserError(f"{where}: {what} holds fractional labels; expected whole numbers 0-{high}")
        if high_seen <= 1.0:
            # Rounding 0-1 floats would leave a black-and-white picture that later stages blame on themselves.
            print(f"note: {where}: {what} are floats in [0, 1]; read as grey levels scaled to 0-1 and rescaled to 0-255")
            values = values * 255.0
        values = np.round(values)
    return values.astype(np.uint8)


def load_npz(path: str | Path) -> LabelledSet:
    """The course format: ``training_set`` (N,2,64,128) image+mask, ``test_set`` (M,64,128)."""
    path = Path(path)
    arrays = read_npz(path)
    for key in ("training_set", "test_set"):
        if key not in arrays:
            raise UserError(f"{path}: missing array '{key}' (has: {', '.join(sorted(arrays)) or 'none'})")
    training, test = arrays["training_set"], arrays["test_set"]
    expected = (2, *IMAGE_SHAPE)
    if training.ndim != 4 or training.shape[1:] != expected:
        raise UserError(f"{path}: 'training_set' has shape {training.shape}, expected (N, 2, 64, 128)")
    if test.ndim != 3 or test.shape[1:] != IMAGE_SHAPE:
        raise UserError(f"{path}: 'test_set' has shape {test.shape}, expected (M, 64, 128)")
    return LabelledSet(
        images=_as_uint8(training[:, 0], str(path), "training_set images", 255),
        masks=_as_uint8(training[:, 1], str(path), "training_set masks", NUM_CLASSES - 1),
        index=np.arange(len(training), dtype=np.int64),
        test_images=_as_uint8(test, str(path), "test_set", 255),
    )


def _open(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{path}: not a readable image ({exc})") from None


def _to_square(image: Image.Image, resample: int) -> np.ndarray:
    side = IMAGE_SHAPE[1]
    return np.asarray(image.resize((side, side), resample=resample))


def _remap_ai4mars(mask: np.ndarray, path: Path) -> np.ndarray:
    unknown = np.setdiff1d(np.unique(mask), list(AI4MARS_LABEL_MAP))
    if unknown.size:
        raise UserError(f"{path}: labels {unknown[:5].tolist()} are not AI4Mars classes (0-3, 255)")
    lookup = np.zeros(256, dtype=np.uint8)
    for source, target in AI4MARS_LABEL_MAP.items():
        lookup[source] = target
    return lookup[mask]


def _labelled_half(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the 64-row half (top or bottom) with more labelled pixels, as the shared benchmark does."""
    rows = IMAGE_SHAPE[0]
    top, bottom = mask[:rows], mask[rows:]
    if np.count_nonzero(bottom) >= np.count_nonzero(top):
        return image[rows:], bottom
    return image[:rows], top


def _label_stem(path: Path) -> str:
    # AI4Mars test labels carry a suffix such as "_merged"; training labels match the image name.
    return path.stem.removesuffix("_merged")


def load_ai4mars(folder: str | Path) -> LabelledSet:
    """A folder in AI4Mars layout: ``images/edr/*.JPG`` and ``labels/train/*.png``.

    Any resolution: image and mask are resized to 128x128 (image: area averaging, mask: nearest
    neighbour), then the half with more labelled pixels is kept. Test images are those with a label
    under ``labels/test/`` if that folder exists, else the images without a training label; their
    bottom (ground) half is kept.
    """
    folder = Path(folder)
    image_dir, label_dir = folder / "images" / "edr", folder / "labels" / "train"
    for needed in (image_dir, label_dir):
        if not needed.is_dir():
            raise UserError(f"{folder}: not an AI4Mars folder, missing {needed.relative_to(folder)}/")
    images_by_stem = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in {".jpg", ".jpeg", ".png"}}
    label_paths = sorted(label_dir.glob("*.png"))
    if not label_paths:
        raise UserError(f"{label_dir}: no .png label files")
    missing = [p.name for p in label_paths if p.stem not in images_by_stem]
    if missing:
        raise UserError(f"{label_dir}: {len(missing)} label(s) without an image in images/edr, e.g. {missing[0]}")

    train_images, train_masks = [], []
    for label_path in label_paths:
        image = _to_square(_open(images_by_stem[label_path.stem], "L"), Image.BOX)
        mask = _remap_ai4mars(_to_square(_open(label_path, "L"), Image.NEAREST), label_path)
        image, mask = _labelled_half(image, mask)
        train_images.append(image)
        train_masks.append(mask)

    test_dir = folder / "labels" / "test"
    if test_dir.is_dir():
        test_stems = sorted({_label_stem(p) for p in test_dir.rglob("*.png")} & set(images_by_stem))
    else:
        test_stems = sorted(set(images_by_stem) - {p.stem for p in label_paths})
    rows = IMAGE_SHAPE[0]
    test_images = [_to_square(_open(images_by_stem[s], "L"), Image.BOX)[rows:] for s in test_stems]
    return LabelledSet(
        images=np.stack(train_images).astype(np.uint8),
        masks=np.stack(train_masks).astype(np.uint8),
        index=np.arange(len(train_images), dtype=np.int64),
        test_images=np.stack(test_images).astype(np.uint8) if test_images else np.zeros((0, *IMAGE_SHAPE), np.uint8),
    )


def load_synthetic(data: DataConfig, seed: int) -> LabelledSet:
    from marsseg.synthetic import generate

    # Every data.synthetic key is a keyword of the generator, so a new generator option needs no wiring.
    generated = generate(seed=seed, **data.synthetic.model_dump())
    return LabelledSet(
        images=generated.train_images,
        masks=generated.train_masks,
        index=np.arange(len(generated.train_images), dtype=np.int64),
        test_images=generated.test_images,
    )


SOURCES: dict[str, Callable[["DataConfig", int], LabelledSet]] = {
    "synthetic": load_synthetic,
    "npz": lambda data, seed: load_npz(data.path),
    "ai4mars": lambda data, seed: load_ai4mars(data.path),
}


def subsample(data: LabelledSet, limit: int, seed: int) -> LabelledSet:
    """A seeded random subset of ``limit`` training rows (in their original order); 0 keeps all."""
    if limit <= 0 or limit >= len(data):
        return data
    rows = np.sort(np.random.default_rng(seed).choice(len(data), size=limit, replace=False))
    subset = data.subset(rows)
    subset.index = np.arange(limit, dtype=np.int64)
    return subset


def load_source(data: DataConfig, seed: int) -> LabelledSet:
    """The configured source (``data.source``, checked by the config), subsampled to ``data.limit``."""
    return subsample(SOURCES[data.source](data, seed), data.limit, seed)
