"""Split: the cleaned rows into training and validation folds, rare-class-aware and leak-proof.

`--fold i` (the cv_split stages): the k-fold partition of split.folds, validating on fold i.
"""
import marsseg.environment  # noqa: F401  (one clear line outside the project's environment)
from marsseg import contracts
from marsseg.datasets import load_labelled, save_labelled
from marsseg.errors import stage_main
from marsseg.config import load_config
from marsseg.io import write_csv
from marsseg.layout import CLEANED, fold_layout
from marsseg.reporting import write_metrics
from marsseg.split import split_dataset

@stage_main
def main() -> None:
    layout = fold_layout(__doc__.splitlines()[0])
    cfg = load_config()
    data = load_labelled(CLEANED, require_test=True)
    result = split_dataset(data, cfg.split, seed=cfg.seed, where=str(CLEANED), fold=layout.fold)
    contracts.check_row_count(len(result.train) + len(result.val), len(data), str(layout.split_dir),
                              "train + val = input")
    save_labelled(layout.train_split, result.train)
    save_labelled(layout.val, result.val)
    write_csv(layout.split_dir / "split.csv", result.table)
    write_metrics(layout.metrics_name("split"), result.metrics)
    m = result.metrics
    fold = "" if layout.fold is None else f" (fold {layout.fold} of {cfg.split.folds})"
    print(f"split{fold}: {m['train_rows']} train ({m['train_rare_rows']} with big rock), {m['val_rows']} val "
          f"({m['val_rare_rows']} with big rock); {m['duplicate_groups']} duplicate groups kept whole")


if __name__ == "__main__":
    main()
