"""Split: the cleaned rows into training and validation folds, rare-class-aware and leak-proof."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python stages/split.py`

from marsseg import contracts
from marsseg.datasets import load_labelled, save_labelled
from marsseg.errors import stage_main
from marsseg.params import load_params, section, seed_of
from marsseg.reporting import write_json
from marsseg.split import SplitConfig, split_dataset

INPUT = Path("data/clean/dataset.npz")
OUTPUT = Path("data/split")



@stage_main
def main() -> None:
    params = load_params()
    config = SplitConfig.from_params(section(params, "split"))
    data = load_labelled(INPUT, require_test=True)
    result = split_dataset(data, config, seed=seed_of(params))
    contracts.check_row_count(len(result.train) + len(result.val), len(data), str(OUTPUT), "train + val = input")
    save_labelled(OUTPUT / "train.npz", result.train)
    save_labelled(OUTPUT / "val.npz", result.val)
    result.table.to_csv(OUTPUT / "split.csv", index=False)
    write_json("metrics/split.json", result.metrics)
    m = result.metrics
    print(f"split: {m['train_rows']} train ({m['train_rare_rows']} with big rock), {m['val_rows']} val "
          f"({m['val_rare_rows']} with big rock); {m['duplicate_groups']} duplicate groups kept whole")


if __name__ == "__main__":
    main()
