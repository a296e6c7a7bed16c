"""Ingest: read the configured data source and write the canonical dataset file."""
from pathlib import Path

import marsseg.environment  # noqa: F401  (one clear line outside the project's environment)
from marsseg.datasets import save_labelled
from marsseg.errors import stage_main
from marsseg.config import load_config
from marsseg.reporting import class_fractions, write_metrics
from marsseg.sources import load_source

OUTPUT = Path("data/ingested/dataset.npz")


@stage_main
def main() -> None:
    cfg = load_config()
    data = load_source(cfg.data, seed=cfg.seed)
    save_labelled(OUTPUT, data)
    write_metrics("ingest", {
        "train_rows": len(data),
        "test_rows": len(data.test_images),
        "class_fraction": class_fractions(data.masks),
    })
    print(f"ingest: {len(data)} labelled rows, {len(data.test_images)} test images -> {OUTPUT}")


if __name__ == "__main__":
    main()
