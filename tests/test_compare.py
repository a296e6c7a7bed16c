"""`marsseg compare`: seed groups, paired bootstrap differences to the best, and a real MLflow store."""
from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from marsseg.compare import RunRecord, build_table, load_table, main, paired_differences, seed_rows
from marsseg.evaluation import write_per_image_confusion
from marsseg.metrics import bootstrap_intervals, mean_iou, per_image_confusion

from conftest import REPO

N_IMAGES = 60


def predictions(quality: float, seed: int, n_images: int = N_IMAGES):
    """Per-image confusions of a prediction that gets about ``quality`` of the pixels right."""
    rng = np.random.default_rng(100)  # the same validation images for every run
    truth = rng.choice(5, size=(n_images, 16, 32), p=[0.2, 0.4, 0.2, 0.15, 0.05]).astype(np.uint8)
    noise = np.random.default_rng(seed)
    pred = np.where(noise.random(truth.shape) < quality, truth, noise.integers(0, 5, truth.shape)).astype(np.uint8)
    return per_image_confusion(truth, pred)


def record(run_id: str, per_image: np.ndarray | None, seed: str = "42", val_md5: str = "v1", **params) -> RunRecord:
    metrics = {}
    if per_image is not None:
        metrics = {"val_miou": mean_iou(per_image.sum(axis=0)), **bootstrap_intervals(per_image, 200, 0, "val_")}
    return RunRecord(run_id=run_id, name=f"run-{run_id}", params={"model.arch": "unet", "model.depth": "3", **params},
                     seed=seed, metrics=metrics, tags={"val_md5": val_md5, "data_hash": "d0"}, per_image=per_image)


def test_runs_differing_only_in_seed_form_one_row():
    records = [record("a1", predictions(0.6, 1), seed="1"), record("a2", predictions(0.6, 2), seed="2"),
               record("a3", predictions(0.6, 3), seed="3"),
               record("b1", predictions(0.7, 4), seed="1", **{"model.depth": "4"}),
               record("c1", predictions(0.5, 5), seed="1", **{"data.limit": "1500"})]
    rows = seed_rows(records)
    assert [sorted(m.run_id for m in row.members) for row in rows] == [["b1"], ["a1", "a2", "a3"], ["c1"]]
    seeds = rows[1]
    scores = [m.val_miou for m in seeds.members]
    assert seeds.score == pytest.approx(np.mean(scores)) and seeds.std == pytest.approx(np.std(scores, ddof=1))
    assert scores == sorted(scores, reverse=True)  # the group's best seed first
    assert math.isnan(rows[0].std)

    table = build_table(records, resamples=200)
    assert list(table["seeds"]) == [1, 3, 1]
    assert table.loc[1, "run"] == f"{seeds.members[0].name} +2" and table.loc[1, "95% CI"] == ""
    assert table.loc[1, "val mIoU"] == pytest.approx(seeds.score)
    assert table.loc[0, "Δ best [95% CI]"] == "best"
    assert table.loc[0, "95% CI"].startswith("[")


def test_paired_difference_to_an_identical_run_is_exactly_zero():
    same = predictions(0.6, 1)
    rows = seed_rows([record("a", same), record("b", same.copy(), **{"model.depth": "4"})])
    difference = paired_differences(rows, resamples=500)[1]
    assert difference.best is rows[0]
    assert difference.point == 0.0 and difference.low == 0.0 and difference.high == 0.0
    assert not difference.distinguishable
    table = build_table([record("a", same), record("b", same.copy(), **{"model.depth": "4"})], resamples=500)
    assert table.loc[1, "Δ best [95% CI]"] == "+0.0000 [0.0000, 0.0000]" and table.loc[1, "≈ best"] == "≈"


def test_clearly_worse_run_is_marked_distinguishable_and_a_close_one_not():
    records = [record("best", predictions(0.8, 1)), record("close", predictions(0.795, 2), **{"model.depth": "4"}),
               record("worse", predictions(0.5, 3), **{"model.depth": "5"})]
    table = build_table(records, resamples=1000).set_index("run")
    assert table.loc["run-best", "Δ best [95% CI]"] == "best"
    assert table.loc["run-close", "≈ best"] == "≈"
    assert table.loc["run-worse", "≈ best"] == "" and table.loc["run-worse", "Δ best [95% CI]"].startswith("-0.")


def test_runs_on_other_validation_images_are_compared_with_their_own_best_only():
    records = [record("a", predictions(0.8, 1)), record("b", predictions(0.7, 2), val_md5="v2", **{"model.depth": "4"}),
               record("c", predictions(0.6, 3), val_md5="v2", **{"model.depth": "5"}),
               record("old", None, **{"model.depth": "2"})]  # not evaluated: listed last, not compared
    records[3].metrics = {}
    table = build_table(records, resamples=200).set_index("run")
    assert table.loc["run-a", "Δ best [95% CI]"] == "best" and table.loc["run-b", "Δ best [95% CI]"] == "best"
    assert table.loc["run-c", "Δ best [95% CI]"].startswith("-")
    assert list(table.index)[-1] == "run-old" and table.loc["run-old", "Δ best [95% CI]"] == ""
    assert table.loc["run-b", "val"] == "v2"


def test_seed_groups_are_paired_seed_by_seed_when_each_seed_has_its_own_split():
    """A seed reshuffles the split: seed k of one configuration is compared with seed k of the other."""
    def split_of(seed: int, quality: float, run_seed: int):
        per_image = predictions(quality, run_seed, n_images=40 + 10 * seed)  # each seed: its own images
        return record(f"{quality}-{seed}", per_image, seed=str(seed), val_md5=f"split-{seed}",
                      **({"model.depth": "4"} if quality < 0.8 else {}))

    best = [split_of(1, 0.8, 1), split_of(2, 0.8, 2)]
    worse = [split_of(1, 0.6, 3), split_of(2, 0.6, 4)]
    same = [record(f"copy-{m.run_id}", m.per_image, seed=m.seed, val_md5=m.val_md5, **{"model.depth": "5"}) for m in best]
    rows = seed_rows(best + worse + same)
    assert [len(row.members) for row in rows] == [2, 2, 2]
    differences = paired_differences(rows, resamples=300)
    worse_row = next(position for position, row in enumerate(rows) if row.members[0] in worse)
    difference = differences[worse_row]
    assert difference.best.members[0].run_id in {m.run_id for m in best + same}
    assert difference.point == pytest.approx(rows[worse_row].score - difference.best.score)
    assert difference.high < 0 and difference.distinguishable
    copy_row = next(position for position, row in enumerate(rows) if row.members[0] in same)
    if differences[copy_row].best is not rows[copy_row]:  # the two identical rows: exactly no difference
        assert differences[copy_row].low == differences[copy_row].high == 0.0
    table = build_table(best + worse, resamples=300)
    assert list(table["val"]) == ["2 splits", "2 splits"] and table.loc[1, "Δ best [95% CI]"].startswith("-0.")
    # Seeds on other splits than the best's: no pairing.
    lonely = [split_of(3, 0.7, 5)]
    lonely[0].params["model.depth"] = "6"
    assert build_table(best + lonely, resamples=100).loc[1, "Δ best [95% CI]"] == "best"


# --------------------------------------------------------------------------- a real MLflow store

def log_run(mlflow, tmp_path, name: str, per_image, seed: int, epoch_val_miou: list[float], study: str | None = None,
            depth: int = 3):
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_params({"seed": seed, "model.arch": "unet", "model.depth": depth, "loss.name": "ce"})
        mlflow.set_tags({"val_md5": "abc123", "data_hash": "d0", **({"search.study": study} if study else {})})
        for step, value in enumerate(epoch_val_miou, start=1):
            mlflow.log_metric("epoch_val_miou", value, step=step)
        mlflow.log_metrics({"val_miou": mean_iou(per_image.sum(axis=0)), **bootstrap_intervals(per_image, 100, 0, "val_")})
        path = tmp_path / name / "per_image_confusion.npz"
        write_per_image_confusion(path, per_image, np.arange(len(per_image)))
        mlflow.log_artifact(str(path), artifact_path="evaluate")
    return run.info.run_id


@pytest.fixture
def store(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("e", artifact_location=(tmp_path / "mlruns").as_uri()))
    good, poor = predictions(0.8, 1), predictions(0.5, 2)
    # The poor model peaked high at some epoch: only the evaluated number may rank it.
    log_run(mlflow, tmp_path, "poor", poor, 1, [0.2, 0.99], study="s1", depth=4)
    log_run(mlflow, tmp_path, "good-1", good, 1, [0.1, 0.3], study="s1")
    log_run(mlflow, tmp_path, "good-2", predictions(0.78, 3), 2, [0.1, 0.3])
    return uri, tmp_path


def test_table_from_mlflow_ranks_by_the_evaluated_model_and_pairs_on_downloaded_confusions(store):
    uri, _ = store
    table = load_table(uri, "e", resamples=300)
    assert list(table["run"]) == ["good-1 +1", "poor"]
    assert list(table["seeds"]) == [2, 1]
    assert table.loc[1, "Δ best [95% CI]"].startswith("-0.") and table.loc[1, "≈ best"] == ""
    assert table.loc[1, "val"] == "abc123" and table.loc[1, "data"] == "d0"

    study = load_table(uri, "e", study="s1", resamples=300)
    assert list(study["run"]) == ["good-1", "poor"]


def test_command_prints_markdown_and_refuses_an_unknown_study(store, monkeypatch, capsys):
    uri, root = store
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["mlflow"] = {**params["mlflow"], "tracking_uri": uri, "experiment": "e"}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(root)
    with pytest.raises(SystemExit) as exited:
        main(["--markdown", "--resamples", "100"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("| run") and "good-1 +1" in out and "Δ best [95% CI]" in out
    with pytest.raises(SystemExit) as exited:
        main(["--study", "nope"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --study nope: no finished run is tagged search.study=nope in experiment 'e'"
