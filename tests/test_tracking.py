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

from conftest import finish, finish_failing, project_env, train_stage, train_workdir


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
    tracker = Tracker({"tracking_uri": f"sqlite:///{store / 'mlflow.db'}", "experiment": "e"})
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
    assert "training goes on without tracking" in output
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
    assert {"git_commit", "git_dirty", "params_hash"} <= set(run.data.tags)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_miou")] == [1, 2]
    assert {"val_iou_soil", "val_iou_big_rock", "learning_rate", "val_loss"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"history.csv", "training_curves.png", "summary.txt"} <= artifacts

    import mlflow
    import numpy as np

    mlflow.set_tracking_uri(mlflow_server)
    logged = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list")
    assert [m.source_run_id for m in logged] == [run.info.run_id]
    model = mlflow.keras.load_model(f"models:/{logged[0].model_id}")
    assert model.predict(np.zeros((1, 64, 128, 1), "float32"), verbose=0).shape == (1, 64, 128, 5)
