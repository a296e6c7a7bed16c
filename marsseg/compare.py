"""All MLflow runs of the experiment as one table, best validation mIoU first.

    python -m marsseg.compare [--markdown]      (or: make compare ARGS=--markdown)
"""
from __future__ import annotations

import argparse

import pandas as pd

from marsseg import CLASS_NAMES, SCORED_CLASSES
from marsseg.errors import UserError, stage_main
from marsseg.params import load_params, section
from marsseg.tracking import check_reachable, tracking_uri

COLUMNS = {
    "tags.mlflow.runName": "run",
    "params.model.arch": "arch",
    "params.loss.name": "loss",
    "params.model.depth": "depth",
    "params.model.norm": "norm",
    "metrics.val_miou": "val mIoU",
    **{f"metrics.val_iou_{CLASS_NAMES[c]}": f"IoU {CLASS_NAMES[c]}" for c in SCORED_CLASSES},
    "metrics.parameters": "params",
    "metrics.training_seconds": "train s",
}


def runs_table(uri: str, experiment: str) -> pd.DataFrame:
    import mlflow

    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        raise UserError(f"MLflow store {uri}: no experiment '{experiment}' yet; run the pipeline first")
    runs = mlflow.search_runs(experiment_names=[experiment])
    table = runs.reindex(columns=list(COLUMNS)).rename(columns=COLUMNS)
    if "params" in table:
        table["params"] = table["params"].astype("Int64")
    return table.sort_values("val mIoU", ascending=False, na_position="last").reset_index(drop=True)


@stage_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m marsseg.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for a PR)")
    args = parser.parse_args(argv)
    mlflow_params = section(load_params(), "mlflow")
    table = runs_table(tracking_uri(mlflow_params), mlflow_params.get("experiment") or "marsseg")
    if args.markdown:
        print(table.to_markdown(index=False, floatfmt=".4f"))
    else:
        with pd.option_context("display.width", 200, "display.max_columns", None, "display.float_format", "{:.4f}".format):
            print(table.to_string(index=False))


if __name__ == "__main__":
    main()
