"""Augment: the training fold and its seeded augmented copies (validation is never augmented).

`--fold i` (the cv_augment stages): the training part of cross-validation fold i.
"""
import pandas as pd

import marsseg.environment  # noqa: F401  (one clear line outside the project's environment)
from marsseg.augment import augment_dataset, class_distribution_rows
from marsseg.datasets import load_labelled, save_labelled
from marsseg.errors import stage_main
from marsseg.config import load_config
from marsseg.io import write_csv
from marsseg.layout import fold_layout
from marsseg.plots import plot_augment_samples
from marsseg.reporting import class_fractions, write_metrics

@stage_main
def main() -> None:
    layout = fold_layout(__doc__.splitlines()[0])
    cfg = load_config()
    train = load_labelled(layout.train_split)
    result = augment_dataset(train, cfg.augment, seed=cfg.seed)
    save_labelled(layout.augmented, result.data)

    before, after = class_fractions(train.masks), class_fractions(result.data.masks)
    write_csv(layout.augment_dir / "class_distribution.csv", pd.DataFrame(class_distribution_rows(before, after)))
    plot_augment_samples(layout.augment_dir / "samples.png", result)
    write_metrics(layout.metrics_name("augment"), {
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
