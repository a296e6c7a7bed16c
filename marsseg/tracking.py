"""MLflow tracking: one run per trained model; evaluate and submit add to the same run.

The store defaults to ``sqlite:///<main checkout>/mlflow.db`` so that runs launched by
``dvc exp run --temp`` / ``--queue`` (which execute in a copy under ``.dvc/tmp/exps``) land in the same
store as workspace runs. The run id travels to the later stages through ``models/mlflow_run.json``.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import warnings
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from marsseg.errors import UserError

RUN_FILE = Path("models/mlflow_run.json")
DVC_TEMP_MARKER = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep


def main_checkout_root(cwd: Path | None = None) -> Path:
    """The user's checkout, also from inside a DVC temporary experiment copy."""
    cwd = (cwd or Path.cwd()).resolve()
    text = str(cwd) + os.sep
    if DVC_TEMP_MARKER in text:
        return Path(text.split(DVC_TEMP_MARKER)[0])
    return cwd


def tracking_uri(mlflow_params: dict) -> str:
    configured = mlflow_params.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    return f"sqlite:///{main_checkout_root() / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail fast, before any training, if the tracking store cannot be reached."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname, port), timeout=timeout).close()
        except OSError as exc:
            raise UserError(f"mlflow.tracking_uri {uri}: tracking server unreachable ({exc.strerror or exc})") from None
    elif parsed.scheme == "sqlite":
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise UserError(f"mlflow.tracking_uri {uri}: folder {folder} does not exist or is not writable")


def git_state() -> dict[str, str]:
    def git(*args):
        result = subprocess.run(["git", *args], capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    return {"git_commit": git("rev-parse", "HEAD") or "unknown",
            "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no")))}


class Tracker:
    """A thin handle on one MLflow run that turns into a no-op when tracking is optional and down."""

    def __init__(self, mlflow_params: dict):
        self.uri = tracking_uri(mlflow_params)
        self.experiment = mlflow_params.get("experiment") or "marsseg"
        self.required = bool(mlflow_params.get("required", True))
        self.enabled = True
        try:
            check_reachable(self.uri)
        except UserError as exc:
            if self.required:
                raise
            warnings.warn(f"{exc}; mlflow.required is false, so training goes on without tracking")
            print(f"warning: {exc}; training goes on without tracking")
            self.enabled = False
        if self.enabled:
            import mlflow

            mlflow.set_tracking_uri(self.uri)
            self._mlflow = mlflow

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


def write_run_file(run, uri: str, path: Path = RUN_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"run_id": run.info.run_id, "tracking_uri": uri} if run else {"run_id": None, "tracking_uri": None}
    path.write_text(json.dumps(payload, indent=2) + "\n")


def read_run_id(tracker: Tracker, path: Path = RUN_FILE) -> str | None:
    """The train stage's run in this store, or None (e.g. a model restored from another machine's cache)."""
    if not tracker.enabled or not path.is_file():
        return None
    run_id = json.loads(path.read_text()).get("run_id")
    if not run_id:
        return None
    try:
        tracker._mlflow.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow raises several types for an unknown run
        return None
    return run_id


def add_to_training_run(mlflow_params: dict, stage: str, metrics: dict, artifacts: list[Path],
                        tags: dict | None = None) -> None:
    """Evaluate and submit log into the train stage's run rather than starting runs of their own."""
    from marsseg.params import flatten

    tracker = Tracker(mlflow_params)
    run_id = read_run_id(tracker)
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
