"""Augment: the training fold and its seeded augmented copies (validation is never augmented)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python stages/augment.py`

import pandas as pd

from marsseg.augment import AugmentConfig, augment_dataset, class_distribution_rows, save_sample_grid
from marsseg.datasets import load_labelled, save_labelled
from marsseg.errors import stage_main
from marsseg.params import load_params, section, seed_of
from marsseg.reporting import class_fractions, write_json

INPUT = Path("data/split/train.npz")
OUTPUT = Path("data/augment")



@stage_main
def main() -> None:
    params = load_params()
    config = AugmentConfig.from_params(section(params, "augment"))
    train = load_labelled(INPUT)
    result = augment_dataset(train, config, seed=seed_of(params))
    save_labelled(OUTPUT / "train.npz", result.data)

    before, after = class_fractions(train.masks), class_fractions(result.data.masks)
    pd.DataFrame(class_distribution_rows(before, after)).to_csv(OUTPUT / "class_distribution.csv", index=False)
    save_sample_grid(result, OUTPUT / "samples.png")
    write_json("metrics/augment.json", {
        "rows_in": len(train),
        "rows_out": len(result.data),
        "copies_made": int(result.copies.sum()),
        "rare_rows_in": int(result.rare.sum()),
        "rare_copies_made": int(result.copies[result.rare].sum()),
        "cutmix_copies": result.cutmix_copies,
        "class_fraction_before": before,
        "class_fraction_after": after,
    })
    print(f"augment: {len(train)} training rows -> {len(result.data)} "
          f"({int(result.rare.sum())} with big rock got {int(result.copies[result.rare].sum())} copies)")


if __name__ == "__main__":
    main()
