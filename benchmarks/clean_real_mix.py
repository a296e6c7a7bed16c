"""Benchmark: the clean stage on real terrain mixed with real photographs of styles it never saw.

    .venv/bin/python benchmarks/clean_real_mix.py [--draws 8] [--terrain 700] [--outliers 28]
                                                  [--data ../shared/data/ai4mars64x128.npz]

The case the clean stage's issue describes, built from real pictures: each draw takes ``--terrain``
random terrain rows of the AI4Mars file (its contaminating photographs, the rows carrying its most
repeated mask, left out) and adds ``--outliers`` rows, half of them a whole frame of a photograph and
half a photograph pasted over 30-60% of a terrain frame (``marsseg.synthetic.paste``). Each outlier
is a random crop (30-100% of the picture's size, mirrored half the time) of one picture from a
source:

``packaged``
    pictures that ship with the installed packages, styles that are not in the file and that
    no rule was developed on: matplotlib's portrait, gift box, MRI slice and logo, scikit-learn's
    temple and flower;
``ai4mars``
    the file's own 237 photographs: styles the rules were developed on as whole frames, never
    cropped or pasted.

Every outlier keeps a real terrain mask (a whole frame: a random terrain row's; a pasted one: its
frame's), so ``shared_mask`` has nothing to find: the figures are what the pictures give away. All
rules of params.yaml run (``degenerate`` also removes terrain rows whose mask is empty, counted as
terrain removed). Printed per draw and pooled per source: precision and recall of every rule and of
``embedding`` alone, terrain rows removed, and recall per kind (whole, pasted).
"""
from __future__ import annotations

import argparse
import gzip
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ai4mars import DEFAULT_DATA, load_rows
from clean import photographs
from clean_synthetic import counts, precision_recall
from marsseg import IMAGE_SHAPE
from marsseg.clean import CleanWarning, find_outliers
from marsseg.config import load_config
from marsseg.datasets import LabelledSet
from marsseg.synthetic import paste

ROOT = Path(__file__).resolve().parents[1]
CROP_SCALE = (0.3, 1.0)  # a crop's side, as a fraction of the largest crop of the frame's shape


def packaged_pictures() -> list[np.ndarray]:
    """Greyscale float pictures (0-1) shipped with matplotlib and scikit-learn."""
    from matplotlib import cbook
    from sklearn.datasets import load_sample_images

    pictures = [np.asarray(Image.open(cbook.get_sample_data(name)).convert("L"), np.float32) / 255
                for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")]
    with gzip.open(cbook.get_sample_data("s1045.ima.gz", asfileobj=False)) as scan:  # 256x256 uint16 MRI
        mri = np.frombuffer(scan.read(), np.uint16).reshape(256, 256).astype(np.float32)
    pictures.append(mri / mri.max())
    pictures += [np.asarray(Image.fromarray(rgb).convert("L"), np.float32) / 255
                 for rgb in load_sample_images().images]
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


def mixed_set(rng: np.random.Generator, data: LabelledSet, terrain: np.ndarray, pictures: list[np.ndarray],
              n_terrain: int, n_outliers: int) -> tuple[LabelledSet, np.ndarray, np.ndarray]:
    """Terrain rows, then outliers (first half whole, second half pasted); (set, truth, pasted)."""
    rows = rng.choice(terrain, n_terrain + n_outliers, replace=False)
    images, masks = data.images[rows].copy(), data.masks[rows].copy()
    outliers = np.arange(n_terrain, n_terrain + n_outliers)
    pasted = np.zeros(len(rows), bool)
    pasted[outliers[n_outliers // 2:]] = True
    for row in outliers:
        picture = crop(rng, pictures[rng.integers(len(pictures))])
        if pasted[row]:
            picture = paste(rng, images[row] / np.float32(255), picture)
        images[row] = np.clip(np.rint(picture * 255), 0, 255).astype(np.uint8)
    truth = np.zeros(len(rows), bool)
    truth[outliers] = True
    return LabelledSet(images, masks, np.arange(len(rows))), truth, pasted


def print_row(label: str, tally: np.ndarray, kinds: np.ndarray, sets: int) -> None:
    """``tally``: (2, 3) counts, every rule and embedding alone; ``kinds``: [found, injected] of whole
    and pasted outliers (every rule); ``sets``: how many sets the counts add up."""
    every, alone = precision_recall(tally[0]), precision_recall(tally[1])
    terrain_removed = (tally[0, 1] - tally[0, 0]) / sets
    print(f"{label} | {every[0]:>11.3f}{every[1]:>7.3f}{terrain_removed:>12.2f} | {alone[0]:>16.3f}{alone[1]:>7.3f}"
          f" | {kinds[0, 0] / kinds[0, 1]:>7.3f}{kinds[1, 0] / kinds[1, 1]:>9.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=8, help="mixed sets per source")
    parser.add_argument("--terrain", type=int, default=700, help="terrain rows per set")
    parser.add_argument("--outliers", type=int, default=28, help="outlier rows per set (half pasted)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    data = load_rows(args.data, 0)
    if data is None:
        return 0
    photo = photographs(data.masks)
    terrain = np.flatnonzero(~photo)
    if args.draws < 1 or args.terrain < 1 or args.outliers < 2 or args.terrain + args.outliers > len(terrain):
        print(f"error: --draws and --terrain must be at least 1, --outliers at least 2, and --terrain + --outliers "
              f"at most {len(terrain)} (the file's terrain rows)", file=sys.stderr)
        return 2
    cfg = load_config(ROOT / "params.yaml")
    sources = {"packaged": packaged_pictures(),
               "ai4mars": [image.astype(np.float32) / 255 for image in data.images[photo]]}

    print(f"{'source':<9}{'draw':>5}{'rows':>6} | {'all rules P':>11}{'R':>7}{'terrain/set':>12} | "
          f"{'embedding only P':>16}{'R':>7} | {'whole R':>7}{'pasted R':>9}")
    for name, pictures in sources.items():
        tallies, kinds = [], []
        for draw in range(args.draws):
            rng = np.random.default_rng([cfg.seed, draw])
            mixed, truth, pasted = mixed_set(rng, data, terrain, pictures, args.terrain, args.outliers)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CleanWarning)
                report = find_outliers(mixed, cfg.clean, cfg.seed + draw)
            alone = report.results["embedding"].flagged if "embedding" in report.results else np.zeros_like(truth)
            tallies.append(np.stack([counts(report.removed, truth), counts(alone, truth)]))
            kinds.append([[report.removed[rows].sum(), rows.sum()] for rows in (truth & ~pasted, pasted)])
            print_row(f"{name:<9}{draw:>5}{len(mixed):>6}", tallies[-1], np.array(kinds[-1]), 1)
        print_row(f"{name:<9}{'pooled':>11}", np.sum(tallies, axis=0), np.sum(kinds, axis=0), len(tallies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
