"""train.strategy: multiworker — two worker processes on 127.0.0.1 forming one TF_CONFIG cluster.

MultiWorkerMirroredStrategy all-reduces every gradient: each worker trains on its own shard of the data,
yet both must end with the same weights. The real train stage runs on both workers (its explicit
distributed loop, marsseg/train/distributed.py: Keras 3's ``model.fit`` cannot run under this strategy).
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, TRAIN_SCRIPT, project_env, set_params, train_workdir
from marsseg.config import read_params, validate_group
from marsseg.errors import UserError
from marsseg.train.distributed import check_batches, validation_logs
from marsseg.train.strategy import cluster_task

def cluster_env(ports: list[int], index: int) -> dict:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return {**project_env(), "CUDA_VISIBLE_DEVICES": "",
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def start_train_stages(tmp_path, epochs: int, train_params) -> list[subprocess.Popen]:
    """Two train stages (worker0, worker1 under tmp_path) forming one cluster; ``train_params(index)`` gives
    each worker's train group overrides. A worker's temp folder is tmp_path/tmp<index>."""
    ports = free_ports(2)
    processes = []
    for index in range(2):
        root = train_workdir(tmp_path / f"worker{index}", epochs=epochs, n_train=16)
        set_params(root, {"train": {"strategy": "multiworker", "batch_size": 8, **train_params(index)}})
        scratch = tmp_path / f"tmp{index}"  # where tempfile puts a non-chief worker's copy
        scratch.mkdir()
        processes.append(subprocess.Popen([sys.executable, str(TRAIN_SCRIPT)], cwd=root,
                                          env={**cluster_env(ports, index), "TMPDIR": str(scratch)},
                                          text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    return processes


def finish_all(processes: list[subprocess.Popen], timeout: int = 600) -> list[str]:
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=timeout)[0])
    finally:
        for process in processes:  # a worker whose peer died waits for it forever
            if process.poll() is None:
                process.kill()
    return outputs


@pytest.mark.slow
def test_two_train_stages_form_one_multiworker_run(tmp_path):
    processes = start_train_stages(tmp_path, epochs=2, train_params=lambda index: {})
    outputs = finish_all(processes)
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
        assert "strategy 'multiworker' over 2 replica(s)" in output, output[-3000:]
    # Only the chief (worker 0) writes the stage's outputs; worker 1 keeps its copy in its temp folder.
    chief, other = tmp_path / "worker0", tmp_path / "worker1"
    assert (chief / "metrics/train.json").is_file() and (chief / "models/history.csv").is_file()
    assert not (other / "models").exists() and not (other / "metrics").exists() and not (other / "mlflow.db").exists()
    other_model = tmp_path / "tmp1/marsseg-train-worker1/models/model.keras"
    assert json.loads((chief / "metrics/train.json").read_text())["epochs_run"] == 2
    import keras

    weights = [keras.saving.load_model(path, compile=False).get_weights()
               for path in (chief / "models/model.keras", other_model)]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_workers_with_different_params_refuse_to_train(tmp_path):
    processes = start_train_stages(tmp_path, epochs=1, train_params=lambda index: {"learning_rate": 0.01 * (index + 1)})
    for process, output in zip(processes, finish_all(processes, timeout=300)):
        assert process.returncode == 2, output[-3000:]
        assert "error: train.strategy 'multiworker': the workers' params, data or code differ" in output, output[-3000:]
    assert not (tmp_path / "worker0/models").exists()


# --- what the multiworker loop refuses, in one line naming the param --------------------------------

def multiworker_train(**overrides):
    return validate_group("train", {**read_params(REPO / "params.yaml")["train"], "strategy": "multiworker", **overrides})


@pytest.mark.parametrize("change, message", [
    ({"ema": True}, "train.ema"),
    ({"precision": "float16"}, "train.precision"),
])
def test_unsupported_multiworker_combinations_are_refused(change, message):
    with pytest.raises(UserError, match=message) as caught:
        multiworker_train(**change)
    assert "\n" not in str(caught.value)
    multiworker_train(precision="bfloat16")  # the rest is supported


@pytest.mark.parametrize("batch_size, n_train, message", [(1, 100, "at least the 2 replicas"), (64, 50, "exceeds")])
def test_batches_that_leave_a_replica_idle_are_refused(batch_size, n_train, message):
    with pytest.raises(UserError, match=f"train.batch_size.*{message}"):
        check_batches(batch_size, n_train, replicas=2)
    assert check_batches(8, 20, replicas=2) == 2  # whole global batches only


def test_tf_config_names_the_chief(monkeypatch):
    cluster = {"worker": ["a:1", "b:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert (cluster_task().index, cluster_task().workers, cluster_task().is_chief) == (1, 2, False)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert cluster_task().is_chief
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {**cluster, "chief": ["c:3"]}, "task": {"type": "worker", "index": 0}}))
    assert not cluster_task().is_chief and cluster_task().workers == 3
    for bad in ("", "{not json", json.dumps({"cluster": cluster})):
        monkeypatch.setenv("TF_CONFIG", bad)
        with pytest.raises(UserError, match="TF_CONFIG"):
            cluster_task()


def test_validation_miou_is_the_keras_metric_of_the_single_process_fit():
    from marsseg.metrics import confusion_matrix
    from marsseg.train.loop import iou_metrics

    rng = np.random.default_rng(3)
    truth = rng.integers(0, 5, (4, 8, 16))
    logits = rng.normal(size=(4, 8, 16, 5)).astype("float32")
    logs = validation_logs(confusion_matrix(truth, logits.argmax(-1)), iou_metrics())
    assert set(logs) == {"val_miou", "val_iou_soil", "val_iou_bedrock", "val_iou_sand", "val_iou_big_rock"}
    for metric in iou_metrics():
        metric.update_state(truth, logits)
        assert logs[f"val_{metric.name}"] == pytest.approx(float(metric.result()), abs=1e-6)
