"""`marsseg ensemble`: averaged probabilities, fold checks, and the command on a real MLflow store."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from marsseg.compare import RunRecord
from marsseg.datasets import LabelledSet, save_labelled
from marsseg.ensemble import check_same_fold, choose_members, main, predict_ensemble
from marsseg.errors import UserError
from marsseg.identity import file_md5
from marsseg.predict import load_model, predict_labels
from marsseg.submission import check_submission

from conftest import REPO


def member_model(path, seed: int, filters: int):
    """A stand-in for a trained model (raw 0-255 input, softmax output). Every member carries the same
    name, as models of one architecture do."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((64, 128, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(filters, (3, 5), padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(5, 1, activation="softmax")(x)
    keras.Model(inputs, outputs, name="unet_d3").save(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return [load_model(member_model(folder / "a.keras", 0, 4)), load_model(member_model(folder / "b.keras", 1, 3))]


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (5, 64, 128)).astype(np.uint8)


@pytest.mark.parametrize("tta", [False, True])
def test_ensemble_of_one_model_equals_that_models_prediction(models, images, tta):
    alone = predict_labels(models[0], images, batch_size=2, tta=tta).final
    np.testing.assert_array_equal(predict_ensemble(models[:1], images, batch_size=2, tta=tta), alone)


def test_ensemble_of_two_is_the_argmax_of_their_mean_probabilities(models, images):
    x = images[..., None].astype(np.float32)
    mean = (models[0].predict(x, verbose=0) + models[1].predict(x, verbose=0)) / 2
    got = predict_ensemble(models, images, batch_size=4)
    np.testing.assert_array_equal(got, mean.argmax(-1))
    assert (got != predict_labels(models[0], images, 4).plain).any()  # the second member changes something


def record(run_id: str, val_md5: str | None, val_miou: float = 0.5, **tags) -> RunRecord:
    return RunRecord(run_id=run_id, name=f"run-{run_id}", params={"model.depth": run_id}, seed="1",
                     metrics={"val_miou": val_miou}, tags={**({"val_md5": val_md5} if val_md5 else {}), **tags})


def test_refuses_members_evaluated_on_different_validation_folds():
    same = [record("a", "1" * 32), record("b", "1" * 32)]
    assert check_same_fold(same) == "1" * 32
    with pytest.raises(UserError, match=r"^ensemble: members were evaluated on different validation folds "
                                        r"\(run-a 11111111, run-c 22222222\); choose runs of one fold"):
        check_same_fold([same[0], record("c", "2" * 32)])
    with pytest.raises(UserError, match=r"data/split/val.npz: md5 33333333 is not the members' validation file"):
        check_same_fold(same, val_md5="3" * 32)
    with pytest.raises(UserError, match="records no validation file md5"):
        check_same_fold([same[0], record("d", None)])


def test_top_k_skips_runs_without_a_logged_model_ensembles_and_unevaluated_runs():
    records = [record("a", "v", 0.6), record("b", "v", 0.7), record("c", "v", 0.9), record("d", "v", 0.8),
               record("e", "v", 0.95, **{"marsseg.kind": "ensemble"}), record("f", "v", float("nan"))]
    logged = {r: f"m-{r}" for r in "abdef"}  # c logged no model
    assert [m.run_id for m in choose_members(records, logged, top=2)] == ["d", "b"]
    assert [m.run_id for m in choose_members(records, logged, run_ids=["a", "b"])] == ["a", "b"]
    with pytest.raises(UserError, match="--runs c: run 'run-c' has no logged model"):
        choose_members(records, logged, run_ids=["a", "c"])
    with pytest.raises(UserError, match="--runs zz: no finished run with that id"):
        choose_members(records, logged, run_ids=["zz"])


# --------------------------------------------------------------------------- the command, end to end

@pytest.fixture
def project(tmp_path, monkeypatch, models, images):
    """A checkout with a validation fold, test images, and two evaluated runs with logged models."""
    from marsseg.config import validate_group
    from marsseg.evaluation import write_per_image_confusion
    from marsseg.metrics import bootstrap_intervals, mean_iou, per_image_confusion
    from marsseg.tracking import Tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    masks = np.random.default_rng(1).integers(0, 5, images.shape).astype(np.uint8)
    save_labelled(tmp_path / "data/split/val.npz", LabelledSet(images, masks, np.arange(5, dtype=np.int64)))
    save_labelled(tmp_path / "data/clean/dataset.npz",
                  LabelledSet(images, masks, np.arange(5, dtype=np.int64), test_images=images[:3]))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["mlflow"] = {"tracking_uri": "", "experiment": "e", "required": True}
    params["evaluate"]["bootstrap"] = 200
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    val_md5 = file_md5(tmp_path / "data/split/val.npz")
    tracker = Tracker(validate_group("mlflow", params["mlflow"]))
    run_ids = []
    for number, model in enumerate(models):
        per_image = per_image_confusion(masks, predict_labels(model, images, 8).plain)
        with tracker.start(run_name=f"member-{number}", tags={"val_md5": val_md5}) as run:
            tracker.log_params({"seed": 1, "model.depth": number})
            tracker.log_metrics({"val_miou": mean_iou(per_image.sum(axis=0)),
                                 **bootstrap_intervals(per_image, 200, 0, "val_")})
            path = tmp_path / "per_image" / str(number) / "per_image_confusion.npz"  # evaluate's artifact name
            write_per_image_confusion(path, per_image, np.arange(5))
            tracker.log_artifact(str(path), artifact_path="evaluate")
            tracker.log_keras_model(model)
        run_ids.append(run.info.run_id)
    return tmp_path, run_ids, masks


def test_command_writes_a_valid_submission_and_records_itself(project, capsys):
    import mlflow
    from mlflow.tracking import MlflowClient

    root, run_ids, _ = project
    with pytest.raises(SystemExit) as exited:
        main(["--top", "2", "--tta", "--output", "out/ensemble.csv"])
    assert exited.value.code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "ensemble of 2" in out and "gain over the best member (paired bootstrap, same images)" in out
    assert check_submission(root / "out/ensemble.csv", expected_rows=3).rows == 3

    client = MlflowClient()
    experiment = mlflow.get_experiment_by_name("e")
    ensemble = client.search_runs([experiment.experiment_id], "tags.`marsseg.kind` = 'ensemble'")
    assert len(ensemble) == 1
    recorded = ensemble[0]
    assert set(recorded.data.tags["ensemble.members"].split(",")) == set(run_ids)
    assert {"val_miou", "val_miou_ci_low", "val_miou_ci_high", "gain_over_best_member"} <= set(recorded.data.metrics)
    assert recorded.data.params["ensemble.tta"] == "True"

    # Listed by compare beside its members, paired on the same images.
    from marsseg.compare import load_table

    table = load_table(mlflow.get_tracking_uri(), "e", resamples=100)
    assert len(table) == 3 and any(name.startswith("ensemble-2-tta-") for name in table["run"])
    assert (table["Δ best [95% CI]"] != "").all()


def test_command_refuses_members_of_different_folds_in_one_line(project, capsys):
    from mlflow.tracking import MlflowClient

    _, run_ids, _ = project
    MlflowClient().set_tag(run_ids[1], "val_md5", "f" * 32)
    with pytest.raises(SystemExit) as exited:
        main(["--runs", ",".join(run_ids)])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ensemble: members were evaluated on different validation folds") and "\n" not in err
