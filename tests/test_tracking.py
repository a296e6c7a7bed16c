"""MLflow tracking: the store, what a run holds, a real server, and an unreachable one."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from marsseg.tracking import main_checkout_root, tracking_uri

from conftest import REPO, finish, finish_failing, project_env, train_stage, train_workdir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_store_resolves_to_the_main_checkout_from_a_dvc_temp_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    temp_copy = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc123"
    assert main_checkout_root(temp_copy) == tmp_path
    monkeypatch.chdir(tmp_path)
    assert tracking_uri({"tracking_uri": ""}) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking_uri({"tracking_uri": ""}) == "http://127.0.0.1:1"


def test_file_store_keeps_artifacts_beside_the_database_whatever_the_working_folder(tmp_path, monkeypatch):
    import mlflow

    from marsseg.tracking import Tracker

    store = tmp_path / "checkout"
    store.mkdir()
    elsewhere = tmp_path / "checkout" / ".dvc" / "tmp" / "exps" / "tmp1"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    from marsseg.config import validate_group

    tracker = Tracker(validate_group("mlflow", {"tracking_uri": f"sqlite:///{store / 'mlflow.db'}", "experiment": "e",
                                                "required": True}))
    with tracker.start(run_name="r"):
        tracker.log_artifact(str(Path(__file__)))
    location = mlflow.get_experiment_by_name("e").artifact_location
    assert location == (store / "mlruns").as_uri()
    assert list((store / "mlruns").rglob(Path(__file__).name))


def test_unreachable_server_fails_before_training_in_one_line(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    root = train_workdir(tmp_path, epochs=1, extra={"mlflow": {"tracking_uri": uri, "required": True}})
    output = finish_failing(train_stage(root))
    assert "Traceback" not in output and "Epoch 1/" not in output
    assert output.strip().splitlines()[-1].startswith(f"error: mlflow.tracking_uri {uri}: tracking server unreachable")


def test_optional_tracking_trains_and_warns_when_the_server_is_down(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    root = train_workdir(tmp_path, epochs=1, extra={"mlflow": {"tracking_uri": uri, "required": False}})
    output = finish(train_stage(root))
    assert "mlflow.required is false, so the stage goes on without tracking" in output
    assert (root / "models/model.keras").is_file()


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
        env=project_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("mlflow server did not come up within 120 s")
    yield uri
    server.terminate()
    server.wait(timeout=30)


def test_train_logs_to_a_real_tracking_server(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    root = train_workdir(tmp_path / "work", epochs=2, extra={"mlflow": {"tracking_uri": mlflow_server}})
    finish(train_stage(root))
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("marsseg")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name.startswith("unet-weighted_ce-d3-")
    assert run.data.params["model.depth"] == "3" and run.data.params["loss.name"] == "weighted_ce"
    assert {"git_commit", "git_dirty", "params_hash", "data_hash"} <= set(run.data.tags)
    # Every group that shapes the training data is logged, not only the model's.
    assert run.data.params["data.source"] == "synthetic" and run.data.params["augment.copies_min"] == "1"
    assert {"seed", "clean.perplexity", "split.val_fraction", "augment.p.hflip"} <= set(run.data.params)
    # Per-epoch numbers have their own names: the unprefixed ones are left to the evaluated model.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch_val_miou")] == [1, 2]
    assert {"epoch_val_iou_soil", "epoch_val_iou_big_rock", "epoch_learning_rate", "epoch_val_loss"} <= set(run.data.metrics)
    assert not {"val_miou", "val_loss", "loss", "learning_rate"} & set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"history.csv", "training_curves.png", "summary.txt"} <= artifacts

    import mlflow
    import numpy as np

    mlflow.set_tracking_uri(mlflow_server)
    logged = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list")
    assert [m.source_run_id for m in logged] == [run.info.run_id]
    model = mlflow.keras.load_model(f"models:/{logged[0].model_id}")
    assert model.predict(np.zeros((1, 64, 128, 1), "float32"), verbose=0).shape == (1, 64, 128, 5)


def test_run_identity_covers_the_data_params_and_keeps_the_seed_apart(tmp_path):
    import yaml

    from marsseg.identity import RunIdentity

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    data_file = tmp_path / "train.npz"
    data_file.write_bytes(b"x")

    def identity(**changes):
        changed = yaml.safe_load(yaml.safe_dump(params))
        for dotted, value in changes.items():
            group, key = dotted.split("__")
            changed[group][key] = value
        return RunIdentity.of(changed, [data_file]), changed

    base, base_params = identity()
    subset, subset_params = identity(data__limit=1500)
    assert subset.run_name(subset_params) != base.run_name(base_params)
    assert subset.data_hash != base.data_hash and subset.flat_params["data.limit"] == 1500
    for other in (identity(augment__copies_min=1)[0], identity(split__val_fraction=0.3)[0],
                  identity(clean__perplexity=15)[0]):
        assert other.data_hash != base.data_hash and other.params_hash != base.params_hash
    reseeded = RunIdentity.of({**base_params, "seed": 7}, [data_file])
    assert reseeded.params_hash != base.params_hash and reseeded.data_hash == base.data_hash
    deeper, _ = identity(model__depth=4)
    assert deeper.data_hash == base.data_hash
    # Which cross-validation folds run is not what a model sees: adding one renames no run.
    more_folds, more_folds_params = identity(split__cv_folds=[0, 1, 2])
    assert more_folds.run_name(more_folds_params) == base.run_name(base_params)
    fold = RunIdentity.of(base_params, [data_file], fold=1)
    assert fold.run_name(base_params) == base.run_name(base_params) + "-fold1" and fold.flat_params["cv.fold"] == 1


def test_the_runs_val_miou_is_the_evaluated_models_and_compare_ranks_by_it(tmp_path):
    """Train 2 epochs, evaluate: MLflow's val_miou is evaluate's (with its interval and per-image artifact),
    the epochs' numbers live under epoch_*, and the compare table shows the evaluated number."""
    import json

    import mlflow
    from mlflow.tracking import MlflowClient

    from marsseg.compare import load_table

    root = train_workdir(tmp_path / "work", epochs=2, extra={"evaluate": {"bootstrap": 200}})
    finish(train_stage(root))
    evaluated = subprocess.run([sys.executable, str(REPO / "stages" / "evaluate.py")],
                               cwd=root, env=project_env(), capture_output=True, text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    metrics = json.loads((root / "metrics" / "evaluate.json").read_text())

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("marsseg").experiment_id])
    logged = run.data.metrics
    assert logged["val_miou"] == pytest.approx(metrics["val_miou"])
    assert logged["val_miou_ci_low"] == pytest.approx(metrics["val_miou_ci_low"])
    assert logged["val_iou_soil_ci_high"] == pytest.approx(metrics["val_iou_soil_ci_high"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_miou")] == [0]
    assert len(client.get_metric_history(run.info.run_id, "epoch_val_miou")) == 2
    assert run.data.tags["val_md5"] == run.data.tags["data_md5.val.npz"]
    assert "evaluate/per_image_confusion.npz" in {a.path for a in client.list_artifacts(run.info.run_id, "evaluate")}

    mlflow.set_tracking_uri(uri)
    table = load_table(uri, "marsseg", resamples=100)
    assert table.loc[0, "val mIoU"] == pytest.approx(metrics["val_miou"])
    assert table.loc[0, "Δ best [95% CI]"] == "best" and table.loc[0, "data"] == run.data.tags["data_hash"]
