"""Benchmark: the clean stage on real terrain mixed with outliers of styles it never saw.

    .venv/bin/python benchmarks/clean_real_mix.py [--draws 8] [--terrain 700] [--outliers 28]
                                                  [--sources packaged,ai4mars,held-out,tuning] [--test-rows 0]
                                                  [--data ../shared/data/ai4mars64x128.npz]

The case the clean stage's issue describes, on real terrain: each draw takes ``--terrain`` random
terrain rows of the AI4Mars file (its contaminating photographs, the rows carrying its most repeated
mask, left out) and adds ``--outliers`` rows, half of them a whole frame of a picture and half a
picture pasted over 30-60% of a terrain frame (``marsseg.synthetic.paste``). Draw k takes the same
terrain rows for every source. The pictures come from a source:

``packaged``
    pictures that ship with the installed packages, styles that are not in the file and that
    no rule was developed on: matplotlib's portrait, gift box, MRI slice and logo, scikit-learn's
    temple and flower; each outlier a random crop (30-100% of the picture's size, mirrored half
    the time);
``ai4mars``
    the file's own 237 photographs, cropped the same way: styles the rules were developed on as
    whole frames, never cropped or pasted;
``held-out``
    the synthetic generator's held-out styles (``HELD_OUT_STYLES``: pages, grids, portraits, rooms,
    product shots), kept out of every tuning run: the synthetic benchmark's pictures, here among
    real terrain instead of synthetic terrain;
``tuning``
    the generator's styles the rules were developed on (``TUNING_STYLES``), among real terrain.

``--test-rows N`` gives each set N more terrain rows of the file, none of the set's, as its test images:
the clean stage measures the training rows among them (``clean.test_references``). The course data has
3.8 test images per training row; 0 (the default) measures the training rows alone.

Every outlier keeps a real terrain mask (a whole frame: a random terrain row's; a pasted one: its
frame's), so ``shared_mask`` has nothing to find: the figures are what the pictures give away. All
rules of params.yaml run (``degenerate`` also removes terrain rows whose mask is empty, counted as
terrain removed). Printed per draw and pooled per source: precision and recall of every rule and of
``embedding`` alone, terrain rows removed, recall per kind (whole, pasted), then recall per style.
"""
from __future__ import annotations

import argparse
import gzip
import sys
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ai4mars import DEFAULT_DATA, load_rows
from clean import photographs
from clean_synthetic import counts, precision_recall
from marsseg import IMAGE_SHAPE
from marsseg.clean import CleanWarning, find_outliers
from marsseg.config import load_config
from marsseg.datasets import LabelledSet
from marsseg.synthetic import HELD_OUT_STYLES, PASTE, TUNING_STYLES, paste, styled_outliers

ROOT = Path(__file__).resolve().parents[1]
TEST_STREAM = 1  # draw k's test rows: random stream (seed, k, TEST_STREAM), apart from its set's
CROP_SCALE = (0.3, 1.0)  # a crop's side, as a fraction of the largest crop of the frame's shape
# (rng, the terrain frames the outliers replace (k, H, W) uint8, which of them are pasted over (k,) bool)
#   -> the outliers (k, H, W) uint8 and each one's style
Source = Callable[[np.random.Generator, np.ndarray, np.ndarray], tuple[np.ndarray, list[str]]]


def packaged_pictures() -> dict[str, np.ndarray]:
    """Greyscale float pictures (0-1) shipped with matplotlib and scikit-learn, by what they show."""
    from matplotlib import cbook
    from sklearn.datasets import load_sample_images

    files = {"portrait": "grace_hopper.jpg", "gift_box": "Minduka_Present_Blue_Pack.png", "logo": "logo2.png"}
    pictures = {name: np.asarray(Image.open(cbook.get_sample_data(file)).convert("L"), np.float32) / 255
                for name, file in files.items()}
    with gzip.open(cbook.get_sample_data("s1045.ima.gz", asfileobj=False)) as scan:  # 256x256 uint16 MRI
        mri = np.frombuffer(scan.read(), np.uint16).reshape(256, 256).astype(np.float32)
    pictures["mri_slice"] = mri / mri.max()
    for name, rgb in zip(("temple", "flower"), load_sample_images().images):  # china.jpg, flower.jpg
        pictures[name] = np.asarray(Image.fromarray(rgb).convert("L"), np.float32) / 255
    return pictures


def crop(rng: np.random.Generator, picture: np.ndarray) -> np.ndarray:
    """A random crop of ``picture`` with the frame's aspect ratio, resized to the frame, maybe mirrored."""
    h, w = IMAGE_SHAPE
    full_h = min(picture.shape[0], picture.shape[1] * h / w)
    crop_h = max(int(full_h * rng.uniform(*CROP_SCALE)), 4)
    crop_w = max(int(crop_h * w / h), 4)
    top = rng.integers(0, picture.shape[0] - crop_h + 1)
    left = rng.integers(0, picture.shape[1] - crop_w + 1)
    part = Image.fromarray(picture[top:top + crop_h, left:left + crop_w]).resize((w, h), Image.BILINEAR)
    out = np.asarray(part, np.float32)
    return out[:, ::-1] if rng.random() < 0.5 else out


def photograph_source(pictures: list[np.ndarray], names: list[str]) -> Source:
    """Random crops of ``pictures``, whole or pasted; each outlier's style is its picture's name."""
    def draw(rng: np.random.Generator, frames: np.ndarray, pasted: np.ndarray) -> tuple[np.ndarray, list[str]]:
        outliers, styles = np.empty_like(frames), []
        for row, (frame, over_terrain) in enumerate(zip(frames, pasted)):
            which = rng.integers(len(pictures))
            picture, name = crop(rng, pictures[which]), names[which]
            if over_terrain:
                picture = paste(rng, frame / np.float32(255), picture)
            outliers[row] = np.clip(np.rint(picture * 255), 0, 255).astype(np.uint8)
            styles.append(PASTE + name if over_terrain else name)
        return outliers, styles
    return draw


def generated_source(styles: tuple[str, ...]) -> Source:
    """The synthetic generator's pictures of ``styles``: its whole-frame styles where a whole frame is
    asked for, its pasted ones over the terrain frame otherwise."""
    kinds = {pasted: tuple(style for style in styles if style.startswith(PASTE) == pasted) for pasted in (False, True)}

    def draw(rng: np.random.Generator, frames: np.ndarray, pasted: np.ndarray) -> tuple[np.ndarray, list[str]]:
        outliers, drawn = np.empty_like(frames), np.empty(len(frames), object)
        for over_terrain, chosen in kinds.items():
            rows = np.flatnonzero(pasted == over_terrain)
            if rows.size:
                outliers[rows], _, drawn[rows] = styled_outliers(chosen, frames[rows], rng)
        return outliers, list(drawn)
    return draw


def mixed_set(rng: np.random.Generator, data: LabelledSet, terrain: np.ndarray, source: Source,
              n_terrain: int, n_outliers: int) -> tuple[LabelledSet, np.ndarray, np.ndarray, list[str]]:
    """Terrain rows, then outliers (first half whole, second half pasted); (set, truth, pasted, styles).
    The set's index holds the file rows its frames come from."""
    rows = rng.choice(terrain, n_terrain + n_outliers, replace=False)
    images, masks = data.images[rows].copy(), data.masks[rows].copy()
    pasted = np.zeros(len(rows), bool)
    pasted[n_terrain + n_outliers // 2:] = True
    images[n_terrain:], styles = source(rng, images[n_terrain:], pasted[n_terrain:])
    truth = np.zeros(len(rows), bool)
    truth[n_terrain:] = True
    return LabelledSet(images, masks, rows), truth, pasted, styles


def with_test_images(rng: np.random.Generator, mixed: LabelledSet, data: LabelledSet, terrain: np.ndarray,
                     n_test: int) -> LabelledSet:
    """``mixed`` (whose index holds its file rows) with ``n_test`` other terrain rows as its test images."""
    if n_test == 0:
        return mixed
    others = rng.choice(np.setdiff1d(terrain, mixed.index), n_test, replace=False)
    return LabelledSet(mixed.images, mixed.masks, mixed.index, data.images[np.sort(others)])


def packaged_source(_file_photographs: np.ndarray) -> Source:
    pictures = packaged_pictures()
    return photograph_source(list(pictures.values()), list(pictures))


def file_source(file_photographs: np.ndarray) -> Source:
    return photograph_source([image.astype(np.float32) / 255 for image in file_photographs],
                             ["photograph"] * len(file_photographs))


# Source name -> its builder, given the file's photographs (each builder loads only what it needs).
SOURCES: dict[str, Callable[[np.ndarray], Source]] = {
    "packaged": packaged_source,
    "ai4mars": file_source,
    "held-out": lambda _file_photographs: generated_source(HELD_OUT_STYLES),
    "tuning": lambda _file_photographs: generated_source(TUNING_STYLES),
}
SOURCE_NAMES = tuple(SOURCES)


def print_row(label: str, tally: np.ndarray, kinds: np.ndarray, sets: int) -> None:
    """``tally``: (2, 3) counts, every rule and embedding alone; ``kinds``: [found, injected] of whole
    and pasted outliers (every rule); ``sets``: how many sets the counts add up."""
    every, alone = precision_recall(tally[0]), precision_recall(tally[1])
    terrain_removed = (tally[0, 1] - tally[0, 0]) / sets
    print(f"{label} | {every[0]:>11.3f}{every[1]:>7.3f}{terrain_removed:>12.2f} | {alone[0]:>16.3f}{alone[1]:>7.3f}"
          f" | {kinds[0, 0] / kinds[0, 1]:>7.3f}{kinds[1, 0] / kinds[1, 1]:>9.3f}")


def source_names(text: str) -> list[str]:
    """Comma-separated names of the sources, all checked before any set is built."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SOURCE_NAMES]
    if unknown or not names:
        problem = f"unknown source {unknown[0]!r}" if unknown else "no source named"
        raise argparse.ArgumentTypeError(f"{problem}; known: {', '.join(SOURCE_NAMES)}")
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=8, help="mixed sets per source")
    parser.add_argument("--terrain", type=int, default=700, help="terrain rows per set")
    parser.add_argument("--outliers", type=int, default=28, help="outlier rows per set (half pasted)")
    parser.add_argument("--sources", type=source_names, default=list(SOURCE_NAMES),
                        help=f"comma-separated, any of {', '.join(SOURCE_NAMES)}")
    parser.add_argument("--test-rows", type=int, default=0, help="terrain rows given to each set as its test images")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    data = load_rows(args.data, 0)
    if data is None:
        return 0
    photo = photographs(data.masks)
    terrain = np.flatnonzero(~photo)
    if (args.draws < 1 or args.terrain < 1 or args.outliers < 2 or args.test_rows < 0
            or args.terrain + args.outliers + args.test_rows > len(terrain)):
        print(f"error: --draws and --terrain must be at least 1, --outliers at least 2, --test-rows at least 0, "
              f"and --terrain + --outliers + --test-rows at most {len(terrain)} (the file's terrain rows)",
              file=sys.stderr)
        return 2
    cfg = load_config(ROOT / "params.yaml")

    print(f"{'source':<9}{'draw':>5}{'rows':>6} | {'all rules P':>11}{'R':>7}{'terrain/set':>12} | "
          f"{'embedding only P':>16}{'R':>7} | {'whole R':>7}{'pasted R':>9}")
    for name in args.sources:
        source = SOURCES[name](data.images[photo])
        tallies, kinds, found_by_style = [], [], defaultdict(lambda: np.zeros(3, int))
        for draw in range(args.draws):
            rng = np.random.default_rng([cfg.seed, draw])
            mixed, truth, pasted, styles = mixed_set(rng, data, terrain, source, args.terrain, args.outliers)
            mixed = with_test_images(np.random.default_rng([cfg.seed, draw, TEST_STREAM]), mixed, data, terrain,
                                     args.test_rows)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CleanWarning)
                report = find_outliers(mixed, cfg.clean, cfg.seed + draw)
            alone = report.results["embedding"].flagged if "embedding" in report.results else np.zeros_like(truth)
            tallies.append(np.stack([counts(report.removed, truth), counts(alone, truth)]))
            kinds.append([[report.removed[rows].sum(), rows.sum()] for rows in (truth & ~pasted, pasted)])
            for row, style in zip(np.flatnonzero(truth), styles):
                found_by_style[style] += [report.removed[row], alone[row], 1]
            print_row(f"{name:<9}{draw:>5}{len(mixed):>6}", tallies[-1], np.array(kinds[-1]), 1)
        print_row(f"{name:<9}{'pooled':>11}", np.sum(tallies, axis=0), np.sum(kinds, axis=0), len(tallies))
        print(f"{name:<9}{'style':<20}{'outliers':>9} | {'all rules R':>11} | {'embedding only R':>16}")
        for style, (every, by_embedding, injected) in sorted(found_by_style.items()):
            print(f"{name:<9}{style:<20}{injected:>9} | {every / injected:>11.3f} | {by_embedding / injected:>16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
