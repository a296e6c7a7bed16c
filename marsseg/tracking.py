"""MLflow tracking: one run per trained model; evaluate and submit add to the same run.

The store defaults to ``sqlite:///<main checkout>/mlflow.db`` so that runs launched by
``dvc exp run --temp`` / ``--queue`` (which execute in a copy under ``.dvc/tmp/exps``) land in the same
store as workspace runs. Evaluate and submit find the training run by the md5 of ``models/model.keras``
(tag ``model_md5``): no DVC output carries a run id, which would differ on every rerun.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from marsseg.errors import UserError
from marsseg.identity import file_md5

MODEL_FILE = Path("models/model.keras")
MODEL_TAG = "model_md5"
DVC_TEMP_MARKER = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep


def main_checkout_root(cwd: Path | None = None) -> Path:
    """The user's checkout, also from inside a DVC temporary experiment copy."""
    cwd = (cwd or Path.cwd()).resolve()
    text = str(cwd) + os.sep
    if DVC_TEMP_MARKER in text:
        return Path(text.split(DVC_TEMP_MARKER)[0])
    return cwd


def tracking_uri(mlflow_cfg) -> str:
    return tracking_source(mlflow_cfg)[0]


def tracking_source(mlflow_cfg) -> tuple[str, str]:
    """(uri, where it came from): ``mlflow.tracking_uri`` in params.yaml, then ``MLFLOW_TRACKING_URI``,
    then this checkout's sqlite store, so a message can point at the setting to fix."""
    configured = mlflow_cfg.tracking_uri if hasattr(mlflow_cfg, "tracking_uri") else mlflow_cfg.get("tracking_uri")
    if configured:
        return configured, "mlflow.tracking_uri"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI"
    return f"sqlite:///{main_checkout_root() / 'mlflow.db'}", "the default tracking store"


def check_reachable(uri: str, timeout: float = 3.0, origin: str = "mlflow.tracking_uri") -> None:
    """Fail fast, before any training, if the tracking store cannot be reached (``origin``: where the
    address came from, named in the message)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname, port), timeout=timeout).close()
        except OSError as exc:
            raise UserError(f"{origin} {uri}: tracking server unreachable ({exc.strerror or exc})") from None
    elif parsed.scheme == "sqlite":
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise UserError(f"{origin} {uri}: folder {folder} does not exist or is not writable")


def git_state() -> dict[str, str]:
    def git(*args):
        result = subprocess.run(["git", *args], capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    return {"git_commit": git("rev-parse", "HEAD") or "unknown",
            "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no")))}


class Tracker:
    """A thin handle on one MLflow run that turns into a no-op when tracking is optional and down."""

    def __init__(self, mlflow_cfg):
        self.uri, origin = tracking_source(mlflow_cfg)
        self.experiment = mlflow_cfg.experiment
        self.required = mlflow_cfg.required
        self.enabled = True
        try:
            check_reachable(self.uri, origin=origin)
        except UserError as exc:
            if self.required:
                raise
            print(f"warning: {exc}; mlflow.required is false, so the stage goes on without tracking", file=sys.stderr)
            self.enabled = False
        if self.enabled:
            import mlflow

            mlflow.set_tracking_uri(self.uri)
            self._mlflow = mlflow

    @classmethod
    def off(cls) -> "Tracker":
        """A tracker that logs nothing and contacts no store (a multiworker run's non-chief workers)."""
        tracker = cls.__new__(cls)
        tracker.uri, tracker.experiment, tracker.required, tracker.enabled = None, None, False, False
        return tracker

    @contextmanager
    def start(self, run_name: str | None = None, run_id: str | None = None, tags: dict | None = None):
        if not self.enabled:
            yield None
            return
        mlflow = self._mlflow
        self._ensure_experiment()
        mlflow.set_experiment(self.experiment)
        with mlflow.start_run(run_id=run_id, run_name=run_name, tags=tags) as run:
            yield run

    def _ensure_experiment(self) -> None:
        """A file store's artifacts go beside mlflow.db, not into whatever folder ran first.

        MLflow's default artifact root is ``./mlruns`` of the process that creates the experiment;
        from a DVC temporary experiment copy that would be deleted with the copy.
        """
        if self._mlflow.get_experiment_by_name(self.experiment) is not None:
            return
        location = None
        if self.uri.startswith("sqlite:///"):
            location = (Path(self.uri.removeprefix("sqlite:///")).parent / "mlruns").as_uri()
        self._mlflow.create_experiment(self.experiment, artifact_location=location)

    # Each logging call is a no-op when tracking is optional and the store is down.
    def log_params(self, params: dict) -> None:
        if self.enabled:
            self._mlflow.log_params(params)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if self.enabled:
            self._mlflow.log_metrics(metrics, step=step)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        if self.enabled:
            self._mlflow.log_artifact(path, artifact_path=artifact_path)

    def set_tags(self, tags: dict) -> None:
        if self.enabled:
            self._mlflow.set_tags(tags)

    def log_keras_model(self, model) -> None:
        """The model in MLflow's Keras flavour: ``mlflow.keras.load_model("models:/<model id>")``."""
        if self.enabled:
            import mlflow.keras

            # Explicit requirements: inferring them imports and inspects the whole environment (slow).
            mlflow.keras.log_model(model, name="model", pip_requirements=["tensorflow", "keras"])


def tag_model(tracker: Tracker, model_path: Path = MODEL_FILE) -> None:
    """Mark the active training run with the md5 of the model it saved: how evaluate and submit find it.

    The tag survives a run-cache restore: a restored model with the same bytes finds the same run.
    """
    tracker.set_tags({MODEL_TAG: file_md5(model_path)})


def find_training_run(tracker: Tracker, model_path: Path = MODEL_FILE) -> str | None:
    """The newest run in this store that saved exactly this model, or None (e.g. a model restored from
    another machine's cache, whose run lives in that machine's store)."""
    if not tracker.enabled or not model_path.is_file():
        return None
    try:
        runs = tracker._mlflow.search_runs(
            experiment_names=[tracker.experiment], filter_string=f"tags.{MODEL_TAG} = '{file_md5(model_path)}'",
            order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    except Exception:  # noqa: BLE001 - MLflow raises several types for an unknown experiment or store
        return None
    return runs[0].info.run_id if runs else None


def add_to_training_run(mlflow_cfg, stage: str, metrics: dict, artifacts: list[Path],
                        tags: dict | None = None, model_path: Path = MODEL_FILE) -> None:
    """Evaluate and submit log into the run that trained ``model_path`` rather than starting runs of their own."""
    from marsseg.params import flatten

    tracker = Tracker(mlflow_cfg)
    run_id = find_training_run(tracker, model_path)
    if run_id is None:
        if tracker.enabled:
            print(f"{stage}: the model's MLflow run is not in {tracker.uri} (model restored from a cache?); not logged")
        return
    numbers = {key: float(value) for key, value in flatten(metrics).items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    with tracker.start(run_id=run_id):
        tracker.log_metrics(numbers)
        for path in artifacts:
            tracker.log_artifact(str(path), artifact_path=stage)
        if tags:
            tracker.set_tags(tags)
