"""Clean: remove the training rows that are not Mars terrain, each with the rule that caught it."""
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python stages/clean.py`

from marsseg import contracts  # noqa: E402
from marsseg.datasets import load_labelled, save_labelled  # noqa: E402
from marsseg.errors import stage_main  # noqa: E402
from marsseg.outlier_plots import plot_embedding, plot_removed  # noqa: E402
from marsseg.outliers import CleanConfig, find_outliers, remove_outliers  # noqa: E402
from marsseg.params import load_params, section, seed_of  # noqa: E402
from marsseg.reporting import write_json  # noqa: E402

INPUT = Path("data/ingested/dataset.npz")
OUTPUT = Path("data/clean")
METRICS = Path("metrics/clean.json")


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


@stage_main
def main() -> None:
    params = load_params()
    config = CleanConfig.from_params(section(params, "clean"))
    data = load_labelled(INPUT, require_test=True)
    warnings.showwarning = _print_warning  # fallbacks are announced in one line, not with a source line
    report = find_outliers(data, config, seed=seed_of(params))
    cleaned = remove_outliers(data, report)
    metrics = report.metrics()
    contracts.check_row_count(metrics["rows_out"] + metrics["removed_total"], metrics["rows_in"],
                              str(OUTPUT / "dataset.npz"), "rows out + removed = rows in")
    contracts.check_row_count(len(cleaned), metrics["rows_out"], str(OUTPUT / "dataset.npz"), "rows kept")

    save_labelled(OUTPUT / "dataset.npz", cleaned)
    report.table().to_csv(OUTPUT / "outliers.csv", index=False)
    report.map_table().to_csv(OUTPUT / "tsne.csv", index=False)
    plot_embedding(OUTPUT / "tsne.png", report)
    plot_removed(OUTPUT / "removed.png", data.images, report)
    write_json(METRICS, metrics)
    per_rule = ", ".join(f"{rule} {metrics[f'removed_{rule}']}" for rule in config.rules)
    print(f"clean: {metrics['rows_in']} rows in, {metrics['removed_total']} removed ({per_rule or 'no rules'}), "
          f"{metrics['rows_out']} kept -> {OUTPUT / 'dataset.npz'} ({metrics['seconds_total']:.1f} s)")


if __name__ == "__main__":
    main()
