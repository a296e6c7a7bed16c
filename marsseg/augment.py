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
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

import cv2
import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network version check on import
import albumentations as A  # noqa: E402

from marsseg import IMAGE_SHAPE, NUM_CLASSES  # noqa: E402
from marsseg.datasets import LabelledSet  # noqa: E402
from marsseg.errors import UserError  # noqa: E402
from marsseg.params import reject_unknown_keys  # noqa: E402

RARE_CLASS = NUM_CLASSES - 1  # big rock
HEIGHT, WIDTH = IMAGE_SHAPE

DEFAULT_PROBABILITIES = {
    # geometric: image and mask together
    "hflip": 0.5,
    "vflip": 0.5,
    "rotate90": 0.25,
    "rotate": 0.3,
    "affine": 0.5,
    "crop": 0.3,
    # photometric: image only
    "brightness_contrast": 0.5,
    "gamma": 0.3,
    "emboss": 0.2,
    "sharpen": 0.2,
    # between training pairs
    "cutmix": 0.1,
}

# Geometric transforms leave uncovered pixels black in the image and background (0) in the mask:
# reflecting the border would invent labels the annotators never gave.
CONSTANT_BORDER = dict(border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, mask_interpolation=cv2.INTER_NEAREST)


@dataclass(frozen=True)
class AugmentConfig:
    copies_min: int = 4
    copies_max: int = 6
    rare_copies_min: int = 24
    rare_copies_max: int = 36
    p: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PROBABILITIES))
    rotate_limit: float = 15.0          # degrees, small rotation
    affine_shift: float = 0.0625        # fraction of width/height
    affine_scale: tuple = (0.9, 1.1)
    affine_rotate: float = 15.0         # degrees
    crop_min_height: int = 40           # random sized crop: smallest crop height (width = 2x)
    brightness_limit: float = 0.2
    contrast_limit: float = 0.2
    gamma_limit: tuple = (80, 120)      # percent
    cutmix_area: tuple = (0.1, 0.3)     # fraction of the image a pasted box covers

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "AugmentConfig":
        """Build from the ``augment`` group of params.yaml, naming any bad key."""
        reject_unknown_keys("augment", params, {f.name for f in fields(cls)})
        values = dict(params)
        probabilities = values.get("p", {})
        if not isinstance(probabilities, Mapping):
            raise UserError("params.yaml: augment.p must be a mapping of transform name -> probability")
        bad = sorted(set(probabilities) - set(DEFAULT_PROBABILITIES))
        if bad:
            raise UserError(f"params.yaml: unknown transform augment.p.{bad[0]} "
                            f"(known: {', '.join(DEFAULT_PROBABILITIES)})")
        values["p"] = {**DEFAULT_PROBABILITIES, **probabilities}
        for name in ("affine_scale", "gamma_limit", "cutmix_area"):
            if name in values:
                values[name] = _pair(values[name], f"augment.{name}")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        for low, high in (("copies_min", "copies_max"), ("rare_copies_min", "rare_copies_max")):
            lo, hi = getattr(self, low), getattr(self, high)
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) or not 0 <= lo <= hi:
                raise UserError(f"params.yaml: augment.{low}/{high} must be integers with 0 <= {low} <= {high}, "
                                f"got {lo!r}/{hi!r}")
        for name, value in self.p.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                raise UserError(f"params.yaml: augment.p.{name} must be a probability in [0, 1], got {value!r}")
        if not isinstance(self.crop_min_height, int) or not 1 <= self.crop_min_height <= HEIGHT:
            raise UserError(f"params.yaml: augment.crop_min_height must be an integer 1-{HEIGHT}, "
                            f"got {self.crop_min_height!r}")
        low, high = self.cutmix_area
        if not 0 < low <= high < 1:
            raise UserError(f"params.yaml: augment.cutmix_area must be [low, high] with 0 < low <= high < 1, "
                            f"got {list(self.cutmix_area)}")
        for name in ("rotate_limit", "affine_shift", "affine_rotate", "brightness_limit", "contrast_limit"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise UserError(f"params.yaml: augment.{name} must be a non-negative number, got {value!r}")


def _pair(value: Any, name: str) -> tuple[float, float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            or value[0] > value[1]):
        raise UserError(f"params.yaml: {name} must be a [low, high] pair of numbers, got {value!r}")
    return (value[0], value[1])


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

# Applied in this order: photometric first, so that the black border a geometric transform leaves
# stays exactly black and Emboss/Sharpen never outline it.
TRANSFORMS: dict[str, TransformBuilder] = {
    "brightness_contrast": lambda c, p: A.RandomBrightnessContrast(
        brightness_limit=c.brightness_limit, contrast_limit=c.contrast_limit, p=p),
    "gamma": lambda c, p: A.RandomGamma(gamma_limit=c.gamma_limit, p=p),
    "emboss": lambda c, p: A.Emboss(p=p),
    "sharpen": lambda c, p: A.Sharpen(p=p),
    "hflip": lambda c, p: A.HorizontalFlip(p=p),
    "vflip": lambda c, p: A.VerticalFlip(p=p),
    "rotate90": lambda c, p: SquareRotate90(p=p),
    "rotate": lambda c, p: A.Rotate(limit=c.rotate_limit, **CONSTANT_BORDER, p=p),
    "affine": lambda c, p: A.Affine(
        scale=c.affine_scale, translate_percent=(-c.affine_shift, c.affine_shift),
        rotate=(-c.affine_rotate, c.affine_rotate), **CONSTANT_BORDER, p=p),
    "crop": lambda c, p: A.RandomSizedCrop(
        min_max_height=(c.crop_min_height, HEIGHT), size=IMAGE_SHAPE, w2h_ratio=WIDTH / HEIGHT,
        mask_interpolation=cv2.INTER_NEAREST, p=p),
}


def build_pipeline(config: AugmentConfig) -> A.Compose:
    """The albumentations pipeline of every transform with a non-zero probability."""
    transforms = [build(config, config.p[name]) for name, build in TRANSFORMS.items() if config.p[name] > 0]
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
                                     config.cutmix_area, rng)
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


MASK_COLOURS = np.array([[0, 0, 0], [214, 160, 90], [140, 140, 160], [240, 220, 120], [220, 40, 40]], np.uint8)


def save_sample_grid(result: AugmentResult, path, sources: int = 6, copies_shown: int = 4) -> None:
    """Image rows over colour-coded mask rows: each source's original, then some of its copies.

    Half the sources show big rock (when the set has any), so the rare-class recipe is visible.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rare_sources = np.flatnonzero(result.rare)[: sources // 2]
    common_sources = np.flatnonzero(~result.rare)[: sources - len(rare_sources)]
    chosen = np.concatenate([rare_sources, common_sources])
    columns = 1 + copies_shown
    figure, axes = plt.subplots(2 * len(chosen), columns, figsize=(2.2 * columns, 2.4 * len(chosen)),
                                squeeze=False)
    for r, source in enumerate(chosen):
        for c in range(columns):
            image_axis, mask_axis = axes[2 * r, c], axes[2 * r + 1, c]
            image_axis.axis("off")
            mask_axis.axis("off")
            if c > result.copies[source]:
                continue
            row = result.offsets[source] + c
            image_axis.imshow(result.data.images[row], cmap="gray", vmin=0, vmax=255)
            mask_axis.imshow(MASK_COLOURS[result.data.masks[row]])
            label = "original" if c == 0 else f"copy {c}"
            tag = " (big rock)" if result.rare[source] else ""
            image_axis.set_title(f"row {result.data.index[row]} {label}{tag}", fontsize=7)
    figure.suptitle("Augmented samples: image over mask (black background, red big rock)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
