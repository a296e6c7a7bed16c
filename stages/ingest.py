"""Ingest: read the configured data source and write the canonical dataset file."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python stages/ingest.py`

from marsseg.datasets import save_labelled
from marsseg.errors import stage_main
from marsseg.params import load_params, section, seed_of
from marsseg.reporting import class_fractions, write_json
from marsseg.sources import load_source

OUTPUT = Path("data/ingested/dataset.npz")


@stage_main
def main() -> None:
    params = load_params()
    data = load_source(section(params, "data"), seed=seed_of(params))
    save_labelled(OUTPUT, data)
    write_json("metrics/ingest.json", {
        "train_rows": len(data),
        "test_rows": len(data.test_images),
        "class_fraction": class_fractions(data.masks),
    })
    print(f"ingest: {len(data)} labelled rows, {len(data.test_images)} test images -> {OUTPUT}")


if __name__ == "__main__":
    main()
