"""Training-set augmentation: the report's recipe, seeded per image, on albumentations.

Every training image is kept and joined by ``copies_min``-``copies_max`` augmented copies, or by
``rare_copies_min``-``rare_copies_max`` when it shows big rock (class 4), so the rare class gains
pixels. Each copy passes through geometric transforms (applied identically to image and mask,
masks by nearest neighbour, uncovered pixels filled with 0 = background in both) and photometric
ones (image only), then optionally CutMix, which pastes a box of another training pair.

Reproducibility: each image draws from its own generator, seeded by (``seed``, its ingested row),
so an image's copies do not depend on the other images, their order or the worker count. The
generator is shared by every transform of the pipeline through ``Compose.set_random_state``:
``A.Compose(seed=...)`` would give each transform its own generator with the *same* seed, and
transforms with equal probabilities would then always fire together (measured: with seed=1,
HorizontalFlip(p=0.5) and VerticalFlip(p=0.5) fired on exactly the same calls).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import cv2
import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network version check on import
import albumentations as A  # noqa: E402

from marsseg import IMAGE_SHAPE, NUM_CLASSES  # noqa: E402
from marsseg.datasets import LabelledSet  # noqa: E402
from marsseg.errors import UserError  # noqa: E402
from marsseg.config import AugmentConfig  # noqa: E402

RARE_CLASS = NUM_CLASSES - 1  # big rock
HEIGHT, WIDTH = IMAGE_SHAPE

# Geometric transforms leave uncovered pixels black in the image and background (0) in the mask:
# reflecting the border would invent labels the annotators never gave.
CONSTANT_BORDER = dict(border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, mask_interpolation=cv2.INTER_NEAREST)


# ---------------------------------------------------------------- transforms


class SquareRotate90(A.DualTransform):
    """A quarter turn of a random square window (side = image height), rotated in place.

    Turning a whole 64x128 image would make it 128x64. Turning a 64x64 window keeps the shape and
    every label, and still shows the network terrain at new orientations; the price is a seam at
    the window's edges, identical in image and mask. (Half turns are already flips.)
    """

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        side = min(height, width)
        return {
            "top": self.py_random.randint(0, height - side),
            "left": self.py_random.randint(0, width - side),
            "side": side,
            "turns": self.py_random.choice((1, 3)),
        }

    def apply(self, img: np.ndarray, top: int, left: int, side: int, turns: int, **params: Any) -> np.ndarray:
        out = img.copy()
        window = (slice(top, top + side), slice(left, left + side))
        out[window] = np.rot90(img[window], turns, axes=(0, 1))
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ()


TransformBuilder = Callable[[AugmentConfig, float], A.BasicTransform]


@dataclass(frozen=True)
class Augmentation:
    """One augmentation: its name (its probability is ``augment.p.<name>``), the other ``augment.*``
    params it reads, and its builder (``None``: applied between training pairs, see ``augment_dataset``)."""

    name: str
    reads: tuple[str, ...]
    build: TransformBuilder | None


# Applied in registration order: photometric first, so that the black border a geometric transform
# leaves stays exactly black and Emboss/Sharpen never outline it.
AUGMENTATIONS: dict[str, Augmentation] = {}


def augmentation(name: str, reads: tuple[str, ...] = ()):
    """Register a transform builder ``(config, p) -> albumentations transform`` under ``name``."""

    def register(build: TransformBuilder | None) -> TransformBuilder | None:
        AUGMENTATIONS[name] = Augmentation(name, tuple(reads), build)
        return build

    return register


augmentation("brightness_contrast", reads=("brightness_limit", "contrast_limit"))(
    lambda c, p: A.RandomBrightnessContrast(brightness_limit=c.brightness_limit, contrast_limit=c.contrast_limit, p=p))
augmentation("gamma", reads=("gamma_limit",))(lambda c, p: A.RandomGamma(gamma_limit=tuple(c.gamma_limit), p=p))
augmentation("emboss")(lambda c, p: A.Emboss(p=p))
augmentation("sharpen")(lambda c, p: A.Sharpen(p=p))
augmentation("hflip")(lambda c, p: A.HorizontalFlip(p=p))
augmentation("vflip")(lambda c, p: A.VerticalFlip(p=p))
augmentation("rotate90")(lambda c, p: SquareRotate90(p=p))
augmentation("rotate", reads=("rotate_limit",))(
    lambda c, p: A.Rotate(limit=c.rotate_limit, **CONSTANT_BORDER, p=p))
augmentation("affine", reads=("affine_scale", "affine_shift", "affine_rotate"))(
    lambda c, p: A.Affine(scale=tuple(c.affine_scale), translate_percent=(-c.affine_shift, c.affine_shift),
                          rotate=(-c.affine_rotate, c.affine_rotate), **CONSTANT_BORDER, p=p))
augmentation("crop", reads=("crop_min_height",))(
    lambda c, p: A.RandomSizedCrop(min_max_height=(c.crop_min_height, HEIGHT), size=IMAGE_SHAPE,
                                   w2h_ratio=WIDTH / HEIGHT, mask_interpolation=cv2.INTER_NEAREST, p=p))
# CutMix pastes a box of another training pair, so it needs the whole set: augment_dataset applies it.
augmentation("cutmix", reads=("cutmix_area",))(None)


def build_pipeline(config: AugmentConfig) -> A.Compose:
    """The albumentations pipeline of every transform with a non-zero probability."""
    transforms = [item.build(config, config.p[name]) for name, item in AUGMENTATIONS.items()
                  if item.build is not None and config.p[name] > 0]
    return A.Compose(transforms, p=1.0, strict=True)


def image_rng(seed: int, source_index: int) -> np.random.Generator:
    """The generator for one source image, keyed by its ingested row (not its position)."""
    return np.random.default_rng(np.random.SeedSequence([seed, int(source_index)]))


def draw_copy_count(rng: np.random.Generator, rare: bool, config: AugmentConfig) -> int:
    low, high = ((config.rare_copies_min, config.rare_copies_max) if rare
                 else (config.copies_min, config.copies_max))
    return int(rng.integers(low, high + 1))


def cutmix(image: np.ndarray, mask: np.ndarray, donor_image: np.ndarray, donor_mask: np.ndarray,
           area: tuple[float, float], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paste a random box (the image's aspect, ``area`` of its size) of the donor pair, in place."""
    side = np.sqrt(rng.uniform(*area))
    box_h, box_w = max(1, round(HEIGHT * side)), max(1, round(WIDTH * side))
    top, left = int(rng.integers(0, HEIGHT - box_h + 1)), int(rng.integers(0, WIDTH - box_w + 1))
    box = (slice(top, top + box_h), slice(left, left + box_w))
    image[box], mask[box] = donor_image[box], donor_mask[box]
    return image, mask


# ---------------------------------------------------------------- whole set


@dataclass
class AugmentResult:
    data: LabelledSet
    copies: np.ndarray        # per source row: copies made
    rare: np.ndarray          # per source row: shows big rock
    offsets: np.ndarray       # per source row: its original's row in ``data``; copies follow it
    cutmix_copies: int


def rare_rows(masks: np.ndarray) -> np.ndarray:
    return (masks == RARE_CLASS).reshape(len(masks), -1).any(axis=1)


def augment_dataset(data: LabelledSet, config: AugmentConfig, seed: int) -> AugmentResult:
    """Each source row followed by its augmented copies; ``index`` repeats the source's row."""
    pipeline = build_pipeline(config)
    rare = rare_rows(data.masks)
    copies = np.array([draw_copy_count(image_rng(seed, i), r, config) for i, r in zip(data.index, rare)],
                      dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(copies + 1)[:-1]]).astype(np.int64)
    total = int((copies + 1).sum())
    images = np.empty((total, HEIGHT, WIDTH), dtype=np.uint8)
    masks = np.empty_like(images)
    cutmix_copies = 0
    for row in range(len(data)):
        rng = image_rng(seed, data.index[row])
        draw_copy_count(rng, rare[row], config)  # the same first draw as above: keeps the stream aligned
        pipeline.set_random_state(rng, random.Random(int(rng.integers(2**63))))
        start = offsets[row]
        images[start], masks[start] = data.images[row], data.masks[row]
        for copy in range(1, copies[row] + 1):
            out = pipeline(image=data.images[row], mask=data.masks[row])
            image, mask = out["image"].reshape(IMAGE_SHAPE), out["mask"].reshape(IMAGE_SHAPE)
            if len(data) > 1 and rng.random() < config.p["cutmix"]:
                donor = int(rng.integers(len(data) - 1))
                donor += donor >= row  # any other training row
                image, mask = cutmix(image.copy(), mask.copy(), data.images[donor], data.masks[donor],
                                     tuple(config.cutmix_area), rng)
                cutmix_copies += 1
            images[start + copy], masks[start + copy] = image, mask
    augmented = LabelledSet(images, masks, np.repeat(data.index, copies + 1).astype(np.int64))
    return AugmentResult(augmented, copies, rare, offsets, cutmix_copies)


# ---------------------------------------------------------------- reports


def class_distribution_rows(before: Mapping[str, float], after: Mapping[str, float]) -> list[dict]:
    """Long-format rows for a DVC horizontal bar plot: one bar per class and stage, side by side."""
    rows = []
    for class_id, name in enumerate(before):
        for stage, fractions in (("before", before), ("after", after)):
            rows.append({"class": name, "stage": stage, "fraction": fractions[name],
                         "bar": f"{class_id} {name} {stage}"})
    return rows
