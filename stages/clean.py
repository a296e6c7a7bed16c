"""Clean: remove the training rows that are not Mars terrain, each with the rule that caught it."""
import sys
import warnings
from pathlib import Path

import marsseg.environment  # noqa: F401  (one clear line outside the project's environment)
from marsseg import contracts
from marsseg.datasets import load_labelled, save_labelled
from marsseg.errors import stage_main
from marsseg.clean import find_outliers, remove_outliers
from marsseg.config import load_config
from marsseg.io import write_csv
from marsseg.plots import plot_embedding, plot_removed
from marsseg.reporting import write_metrics

INPUT = Path("data/ingested/dataset.npz")
OUTPUT = Path("data/clean")


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


@stage_main
def main() -> None:
    cfg = load_config()
    config = cfg.clean
    data = load_labelled(INPUT, require_test=True)
    warnings.showwarning = _print_warning  # fallbacks are announced in one line, not with a source line
    report = find_outliers(data, config, seed=cfg.seed)
    cleaned = remove_outliers(data, report)
    metrics = report.metrics()
    contracts.check_row_count(metrics["rows_out"] + metrics["removed_total"], metrics["rows_in"],
                              str(OUTPUT / "dataset.npz"), "rows out + removed = rows in")
    contracts.check_row_count(len(cleaned), metrics["rows_out"], str(OUTPUT / "dataset.npz"), "rows kept")

    save_labelled(OUTPUT / "dataset.npz", cleaned)
    write_csv(OUTPUT / "outliers.csv", report.table())
    write_csv(OUTPUT / "tsne.csv", report.map_table())
    plot_embedding(OUTPUT / "tsne.png", report)
    plot_removed(OUTPUT / "removed.png", data.images, report)
    log = write_metrics("clean", metrics)
    per_rule = ", ".join(f"{rule} {metrics[f'removed_{rule}']}" for rule in config.rules)
    print(f"clean: {metrics['rows_in']} rows in, {metrics['removed_total']} removed ({per_rule or 'no rules'}), "
          f"{metrics['rows_out']} kept -> {OUTPUT / 'dataset.npz'} ({log['seconds_total']:.1f} s)")


if __name__ == "__main__":
    main()
