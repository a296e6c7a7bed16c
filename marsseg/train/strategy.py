"""Where training runs: deterministic ops, and the distribution strategy over replicas."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from marsseg.errors import UserError

_multiworker = None  # TF allows one MultiWorkerMirroredStrategy per process


def configure_determinism(seed: int) -> None:
    """Same params and seed give the same metrics on CPU."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def distribution_strategy(name: str):
    """``default`` (one device), ``mirrored`` (all local devices) or ``multiworker`` (TF_CONFIG's cluster)."""
    import tensorflow as tf

    global _multiworker
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if _multiworker is None:
            cluster_task()  # one clear line for a missing or malformed TF_CONFIG
            _multiworker = tf.distribute.MultiWorkerMirroredStrategy()
        return _multiworker
    return tf.distribute.get_strategy()


@dataclass(frozen=True)
class Worker:
    """This process's place in a TF_CONFIG cluster."""

    index: int
    workers: int
    is_chief: bool

    @property
    def scratch(self) -> Path:
        """Where a non-chief worker writes what the chief writes into the project: its own copy of the
        model and history (kept until its next run, to check that the workers agree), never DVC outputs."""
        return Path(tempfile.gettempdir()) / f"marsseg-train-worker{self.index}"


def cluster_task() -> Worker:
    """TF_CONFIG -> this worker. The chief writes the outputs: the ``chief`` task if the cluster names one,
    else worker 0 (TensorFlow's convention)."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise UserError("train.strategy 'multiworker' needs the TF_CONFIG environment variable describing the cluster")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task["index"])
        workers = sum(len(cluster.get(name, [])) for name in ("chief", "worker"))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"TF_CONFIG: expected {{\"cluster\": {{\"worker\": [host:port, ...]}}, \"task\": "
                        f"{{\"type\": \"worker\", \"index\": i}}}} ({exc!r})") from None
    chief = kind == "chief" or (kind == "worker" and index == 0 and not cluster.get("chief"))
    return Worker(index=index, workers=workers, is_chief=chief)


def start_cluster(name: str) -> Worker | None:
    """For ``multiworker``: create the strategy now — TensorFlow configures its collective ops only before
    it runs anything — and return this worker; None for the single-process strategies."""
    if name != "multiworker":
        return None
    worker = cluster_task()
    distribution_strategy(name)
    return worker


def _all_reduce_sum(values: list[float]):
    """The sum over all replicas of all workers of ``values`` (each replica adds this worker's)."""
    import tensorflow as tf

    cluster = distribution_strategy("multiworker")

    def mine():
        return tf.constant(values, tf.float32)

    @tf.function(autograph=False)
    def summed():
        return cluster.reduce("SUM", cluster.run(mine), axis=None)

    return summed().numpy()


def check_same_run(key: str) -> None:
    """All workers must train the same model on the same data; one whose params, data or code differ
    would wait forever for a step its peers never take, or silently train something else."""
    # Two 12-bit pieces of the run's hash: their sums stay exact in float32 for up to 4096 replicas.
    mine = [float(int(key[:3], 16)), float(int(key[3:6], 16))]
    *sums, replicas = _all_reduce_sum([*mine, 1.0])
    spread = _all_reduce_sum([abs(value - total / replicas) for value, total in zip(mine, sums)])
    if spread.any():
        raise UserError("train.strategy 'multiworker': the workers' params, data or code differ (run identity "
                        f"{key} here); give every machine the same commit, params.yaml and data")


def wait_for_all_workers() -> None:
    """The workers meet here before they exit: one that exits while its peers still write their outputs
    is reported to them as a crashed task."""
    _all_reduce_sum([1.0])
