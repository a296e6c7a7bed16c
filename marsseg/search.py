"""Search params with Optuna: every trial a DVC experiment and an MLflow run; resumable, several workers.

    marsseg search [--space search/space.yaml] [--trials 20] [--jobs 1] [--study NAME] [--timeout S]
                   [--storage sqlite:///optuna.db]
    (or: make search SPACE= TRIALS= JOBS= STUDY= TIMEOUT=)

Optuna's TPE sampler proposes each trial through ask/tell; the trial runs as
``dvc exp run --temp -n <study>-t<number> -S key=value ...``, so it is cached, shows in ``dvc exp show``,
can be applied with ``dvc exp apply`` and restores from DVC's run-cache when that configuration was
trained before. Its objective is the evaluated ``val_miou`` in the experiment's metrics/evaluate.json.

The study lives in Optuna's RDB storage. Any process (on this machine or another one with the same
``--storage`` URL) that runs the same command joins the study: the ``--trials`` budget is shared, so the
study ends with exactly that many counted trials. A failed trial is recorded as FAIL with its error
line; a trial cut off by Ctrl-C or a kill is retried with the same params when the search runs again.

Space file (dotted params.yaml keys)::

    fixed:                        # the same in every trial (dotted keys or nested groups)
      train.epochs: 4
    params:
      model.arch: [unet, unet3p]                      # categorical: a list (or {choices: [...]})
      model.depth: {low: 3, high: 4}                  # int range (both ends ints)
      train.learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}   # float range, log scale
      model.dropout: {low: 0.0, high: 0.3, step: 0.05}              # float range with a step
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from marsseg.config import load_yaml
from marsseg.errors import UserError
from marsseg.params import flatten

DEFAULT_SPACE = Path("search/space.yaml")
DEFAULT_STORAGE = "sqlite:///optuna.db"
METRICS_FILE = "metrics/evaluate.json"
OBJECTIVE = "val_miou"
PRESET_DIR = Path("presets")
REPORT_DIR = Path("reports/search")
STUDY_TAG, TRIAL_TAG = "search.study", "search.trial"
# A trial's own FAIL (its stage failed) uses the budget; a trial cut off by an interrupt or a dead worker
# does not (it is retried), and neither does one asked past the budget by a racing worker.
ERROR_ATTR = "search.error"
HEARTBEAT_SECONDS, GRACE_SECONDS = 30, 300
LOCK_RETRIES = 20
# DVC queues a ``--temp`` run in the workspace stash before it starts it; each entry's message ends in its name.
RUN_STASH = "refs/exps/stash"
STASHED_NAME = re.compile(r"dvc-exp:[0-9a-f]+:[0-9a-f]+:([^:]*)")
SPACE_SECTIONS = ("fixed", "params")


# ---------------------------------------------------------------- the space file

@dataclass
class Space:
    path: Path
    fixed: dict = field(default_factory=dict)          # dotted key -> value
    distributions: dict = field(default_factory=dict)  # dotted key -> optuna distribution
    # Optuna's categorical choices must be scalars: list choices (e.g. model.dropout) travel as JSON text.
    encoded: set = field(default_factory=set)

    def decode(self, sampled: dict) -> dict:
        return {key: json.loads(value) if key in self.encoded else value for key, value in sampled.items()}

    def overrides(self, sampled: dict) -> dict:
        """Dotted key -> value: the fixed overrides and the trial's sampled values."""
        return {**self.fixed, **self.decode(sampled)}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _distribution(path: Path, key: str, spec):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    where = f"{path}: {key}"
    if isinstance(spec, dict) and set(spec) == {"choices"}:
        spec = spec["choices"]
    if isinstance(spec, list):
        if not spec:
            raise UserError(f"{where}: empty list of choices; give at least one value")
        scalar = all(value is None or isinstance(value, (bool, int, float, str)) for value in spec)
        choices = spec if scalar else [json.dumps(value) for value in spec]
        if len(set(map(json.dumps, spec))) != len(spec):
            raise UserError(f"{where}: a choice is listed twice in {spec}")
        return CategoricalDistribution(choices), not scalar
    if not isinstance(spec, dict):
        raise UserError(f"{where}: expected a list of choices or a range {{low: ..., high: ..., log: true}}; "
                        f"put a single value under 'fixed:'")
    unknown = sorted(set(spec) - {"low", "high", "log", "step", "type"})
    if unknown:
        raise UserError(f"{where}: unknown range field '{unknown[0]}' (known: low, high, log, step, type)")
    if "low" not in spec or "high" not in spec:
        raise UserError(f"{where}: a range needs both low and high")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    if not _number(low) or not _number(high) or (step is not None and not _number(step)):
        raise UserError(f"{where}: low, high and step must be numbers, got low={low!r} high={high!r} step={step!r}")
    if not isinstance(log, bool):
        raise UserError(f"{where}: log must be true or false, got {log!r}")
    kind = spec.get("type") or ("int" if all(isinstance(v, int) for v in (low, high, step or 1)) else "float")
    if kind not in ("int", "float"):
        raise UserError(f"{where}: type must be int or float, got {kind!r}")
    if low > high:
        raise UserError(f"{where}: low ({low}) is above high ({high})")
    if log and low <= 0:
        raise UserError(f"{where}: a log range needs low > 0, got low={low}")
    if log and step is not None:
        raise UserError(f"{where}: log and step cannot be combined")
    if step is not None and step <= 0:
        raise UserError(f"{where}: step must be positive, got {step}")
    if kind == "int":
        if not all(float(v).is_integer() for v in (low, high, step or 1)):
            raise UserError(f"{where}: an int range needs whole numbers, got low={low} high={high} step={step}")
        return IntDistribution(int(low), int(high), log=log, step=int(step or 1)), False
    return FloatDistribution(float(low), float(high), log=log, step=None if step is None else float(step)), False


def _check_key(path: Path, key: str, known: dict) -> None:
    if key not in known:
        nearest = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
        hint = f"; did you mean {nearest[0]}?" if nearest else "; see params.yaml for the valid keys"
        raise UserError(f"{path}: unknown parameter {key}{hint}")


def load_space(path: Path, base_params: dict) -> Space:
    """Parse and check the space file; every endpoint and choice is validated against the params schema."""
    if not path.is_file():
        raise UserError(f"{path}: no such search space file")
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not raw.get("params"):
        raise UserError(f"{path}: expected a mapping with a non-empty 'params:' section (and optional 'fixed:')")
    extra = sorted(set(raw) - set(SPACE_SECTIONS))
    if extra:
        raise UserError(f"{path}: unknown section '{extra[0]}' (known: {', '.join(SPACE_SECTIONS)})")
    if not isinstance(raw["params"], dict) or not isinstance(raw.get("fixed") or {}, dict):
        raise UserError(f"{path}: 'params:' and 'fixed:' must be mappings of params.yaml keys")
    known = flatten(base_params)
    space = Space(path, fixed=flatten(raw.get("fixed") or {}))
    for key in space.fixed:
        _check_key(path, key, known)
    for key, spec in raw["params"].items():
        _check_key(path, key, known)
        if key in space.fixed:
            raise UserError(f"{path}: {key} is both fixed and searched; keep it in one section")
        space.distributions[key], encoded = _distribution(path, key, spec)
        if encoded:
            space.encoded.add(key)
    _check_values(space, base_params)
    return space


def _endpoints(distribution) -> list:
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


def _check_values(space: Space, base_params: dict) -> None:
    """Each choice and range end, with the fixed overrides, is a valid params.yaml: bad spaces fail before trial 0."""
    from marsseg.config import validate

    validate(base_params)  # a broken params.yaml is reported as such, not as a fault of the space
    for key, distribution in space.distributions.items():
        for value in _endpoints(distribution):
            sampled = space.overrides({key: value})
            validate_trial_params(base_params, sampled, source=f"{space.path} ({key}={sampled[key]!r})")


def unflatten(flat: dict) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        *groups, leaf = key.split(".")
        target = nested
        for group in groups:
            target = target.setdefault(group, {})
        target[leaf] = value
    return nested


def trial_params(base_params: dict, overrides: dict) -> dict:
    from marsseg.presets import merged

    return merged(base_params, unflatten(overrides))


def validate_trial_params(base_params: dict, overrides: dict, source: str):
    """The trial's params.yaml as the stages will read it (a ``Config``), or one ``UserError`` line."""
    from marsseg.config import validate

    return validate(trial_params(base_params, overrides), source=source)


# ---------------------------------------------------------------- DVC

def dvc_value(value) -> str:
    """A ``-S`` value DVC reads back as the same YAML value (``1e-05`` would be a string in YAML 1.1)."""
    if isinstance(value, float) and math.isfinite(value):
        text = repr(value)
        return text.replace("e", ".0e") if "e" in text and "." not in text else text
    return json.dumps(value)


def set_param_args(overrides: dict) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("-S", f"{key}={dvc_value(value)}")]


def tool_env() -> dict:
    """Stage commands say ``python``/``dvc``: make them this interpreter's, however the search was started."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()


def experiment_ref(name: str) -> str | None:
    """The git ref DVC stored the experiment ``name`` under (on this baseline if several)."""
    refs = [ref for ref in git("for-each-ref", "--format=%(refname)", "refs/exps").splitlines()
            if ref.endswith(f"/{name}")]
    head = git("rev-parse", "HEAD")
    on_head = [ref for ref in refs if ref.startswith(f"refs/exps/{head[:2]}/{head[2:]}/")]
    return (on_head or refs or [None])[0]


def stashed_runs() -> list[str]:
    """Names of the experiments DVC has queued for ``dvc exp run --temp`` and not started yet."""
    lines = git("reflog", "show", "--format=%gs", RUN_STASH).splitlines()
    return [match.group(1) for line in lines if (match := STASHED_NAME.search(line))]


def drop_stashed_runs(names) -> None:
    """Unqueue the experiments ``names`` if DVC queued them but was stopped before it started them: every
    ``dvc exp run --temp`` runs the whole queue, so the next trial's run would also run them, under their
    old names, as extra experiments."""
    names = set(names).intersection(stashed_runs())
    if not names:
        return
    from dvc.repo import Repo
    from dvc.repo.experiments.utils import get_exp_rwlock

    for attempt in range(LOCK_RETRIES):
        try:
            with Repo() as repo:
                stash = repo.experiments.tempdir_queue.stash
                with get_exp_rwlock(repo, writes=[stash.ref]):
                    stash.remove_revs([entry for entry in stash.stash_revs.values() if entry.name in names])
            return
        except Exception as exc:  # noqa: BLE001 - DVC's LockError while another DVC process edits the queue
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            time.sleep(0.5 + random.random() * min(5, 2 ** attempt))
    print(f"search: could not unqueue {', '.join(sorted(names))} ({error}); the next trial's DVC run will "
          "run it too", flush=True)


def experiment_metric(name: str) -> tuple[float, str]:
    """The objective as DVC recorded it in the experiment's commit, and the experiment's git ref."""
    ref = experiment_ref(name)
    if ref is None:
        raise UserError(f"dvc experiment {name}: finished but not found under refs/exps")
    text = git("show", f"{ref}:{METRICS_FILE}")
    try:
        value = json.loads(text)[OBJECTIVE]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"dvc experiment {name}: {METRICS_FILE} has no {OBJECTIVE}") from None
    return float(value), ref


def error_line(output: str) -> str:
    """The line that says why a trial failed: the stage's own ``error:`` line, else DVC's last ERROR."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for prefix in ("error:", "ERROR:"):
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            return found[0] if prefix == "error:" else found[-1]
    return lines[-1] if lines else "no output"


LOCK_MESSAGES = ("Unable to acquire lock", "is busy", "database is locked")


def lock_contention(output: str) -> bool:
    return any(message in output for message in LOCK_MESSAGES)


# ---------------------------------------------------------------- MLflow

def locked_model_md5(ref: str) -> str | None:
    """The md5 of the model the experiment's train stage produced (trained or restored), from its dvc.lock."""
    from marsseg.tracking import MODEL_FILE

    try:
        lock = yaml.safe_load(git("show", f"{ref}:dvc.lock")) or {}
        outs = lock["stages"]["train"]["outs"]
    except (yaml.YAMLError, KeyError, TypeError):
        return None
    return next((out.get("md5") for out in outs if out.get("path") == MODEL_FILE.as_posix()), None)


def tag_training_runs(mlflow_cfg, exp_name: str, ref: str, tags: dict) -> int:
    """Tag the trial's train-stage run: found by its ``dvc_exp_name``, or (train restored from the
    run-cache) as the newest run that saved the same model bytes."""
    from mlflow.tracking import MlflowClient

    from marsseg.tracking import MODEL_TAG, tracking_uri

    client = MlflowClient(tracking_uri(mlflow_cfg))
    experiment = client.get_experiment_by_name(mlflow_cfg.experiment)
    if experiment is None:
        return 0
    runs = client.search_runs([experiment.experiment_id], f"tags.dvc_exp_name = '{exp_name}'")
    model_md5 = locked_model_md5(ref) if not runs else None
    if model_md5:
        runs = client.search_runs([experiment.experiment_id], f"tags.{MODEL_TAG} = '{model_md5}'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
    for run in runs:
        for key, value in tags.items():
            client.set_tag(run.info.run_id, key, value)
    return len(runs)


def retrying(action, attempts: int = 5):
    """SQLite stores shared by several processes answer 'database is locked' under load: wait and retry."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - MLflow and SQLAlchemy raise several types for a busy store
            if attempt == attempts - 1 or "locked" not in str(exc):
                raise
            time.sleep(1 + random.random() * 2)


# ---------------------------------------------------------------- storage and the shared budget

def open_storage(url: str):
    import optuna

    engine_kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None

    def connect():
        # A worker that died mid-trial stops sending heartbeats: its trial becomes FAIL after the grace
        # period and a copy with the same params is queued (WAITING) for the next ask.
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))

    try:
        # Two workers starting together on a new store would both create its schema: on SQLite the file
        # lock lets one create it and the other find it; a server store that lost that race has its
        # schema by the time of the second try.
        with storage_lock(url):
            try:
                return connect()
            except Exception as exc:  # noqa: BLE001 - SQLAlchemy's IntegrityError, per driver
                if "unique" not in str(exc).lower() and "already exists" not in str(exc).lower():
                    raise
                time.sleep(1 + random.random())
                return connect()
    except Exception as exc:  # noqa: BLE001 - bad URL, missing driver, unreachable server
        raise UserError(f"--storage {url}: cannot open the study storage ({str(exc).splitlines()[0]})") from None


@contextlib.contextmanager
def storage_lock(url: str):
    """Serialise budget check + ask among processes sharing a local SQLite file (a no-op for servers,
    where the rank check in ``Search.claim`` keeps the budget instead)."""
    if not url.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock_path = Path(url.removeprefix("sqlite:///") + ".lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def optuna_state(name: str):
    from optuna.trial import TrialState

    return TrialState[name]


def counts_toward_budget(trial) -> bool:
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    return trial.state == TrialState.FAIL and ERROR_ATTR in trial.user_attrs


class Interrupted(Exception):
    pass


class Search:
    def __init__(self, space: Space, base_params: dict, study_name: str, storage_url: str, trials: int, jobs: int,
                 timeout: float | None = None):
        import optuna

        from marsseg.config import validate

        # Heartbeats, stale-trial retries and the matplotlib plots are flagged experimental; they are used as documented.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space, self.base_params, self.config = space, base_params, validate(base_params)
        self.study_name, self.storage_url, self.budget, self.jobs = study_name, storage_url, trials, jobs
        self.deadline = time.monotonic() + timeout if timeout else None
        self.storage = open_storage(storage_url)
        with storage_lock(storage_url):
            self.study = retrying(lambda: optuna.create_study(
                study_name=study_name, storage=self.storage, direction="maximize", load_if_exists=True))
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.running: dict[int, int] = {}            # trial number -> trial id (heartbeats)
        self.children: dict[int, subprocess.Popen] = {}
        self.log_dir = REPORT_DIR / study_name
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # -- asking
    def sampler(self, position: int):
        import optuna

        # Seeded by the trial's position in the study, so the same history gives the same proposal
        # whichever worker asks, and two workers never share a random stream (and its first proposals).
        startup = max(2, min(10, self.budget // 3))
        return optuna.samplers.TPESampler(seed=self.config.seed + position, n_startup_trials=startup, constant_liar=True)

    def claim(self):
        """Ask a trial if the shared budget has room, else None."""
        import optuna

        with self.lock, storage_lock(self.storage_url):
            optuna.storages.fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            # A worker killed outright can leave its trial's run queued in DVC (a stopped run unqueues its own).
            drop_stashed_runs(f"{self.study_name}-t{t.number}" for t in trials if t.state.is_finished())
            if sum(map(counts_toward_budget, trials)) >= self.budget:
                return None
            study = optuna.load_study(study_name=self.study_name, storage=self.storage,
                                      sampler=self.sampler(len(trials)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trial = study.ask(self.space.distributions)
            self.storage.record_heartbeat(trial._trial_id)
            self.running[trial.number] = trial._trial_id
        # Without a shared lock (a database server), racing workers can overshoot: the lowest numbers win.
        counted = sorted(t.number for t in self.study.get_trials(deepcopy=False) if counts_toward_budget(t))
        if trial.number in counted and counted.index(trial.number) >= self.budget:
            trial.set_user_attr("search.skipped", "asked past the trial budget by a racing worker")
            self.finish(trial.number, optuna.trial.TrialState.FAIL)
            return None
        return trial

    def finish(self, number: int, state, value: float | None = None) -> None:
        retrying(lambda: self.study.tell(number, value, state=state, skip_if_finished=True))
        with self.lock:
            self.running.pop(number, None)

    def heartbeats(self) -> None:
        while not self.stop.wait(HEARTBEAT_SECONDS):
            with self.lock:
                ids = list(self.running.values())
            for trial_id in ids:
                with contextlib.suppress(Exception):
                    self.storage.record_heartbeat(trial_id)

    # -- running
    def worker(self) -> None:
        while not self.stop.is_set():
            if self.deadline and time.monotonic() > self.deadline:
                return
            trial = self.claim()
            if trial is None:
                return
            try:
                self.run_trial(trial)
            except Exception as exc:  # noqa: BLE001 - one broken trial must not leave it RUNNING for ever
                message = f"search: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                print(f"search: trial {trial.number} failed: {message}", flush=True)
                with contextlib.suppress(Exception):
                    trial.set_user_attr(ERROR_ATTR, message)
                    self.finish(trial.number, optuna_state("FAIL"))

    def run_trial(self, trial) -> None:
        from optuna.trial import TrialState

        number, name = trial.number, f"{self.study_name}-t{trial.number}"
        overrides = self.space.overrides(trial.params)
        trial.set_user_attr("search.overrides", overrides)
        trial.set_user_attr("search.dvc_exp", name)
        shown = ", ".join(f"{key}={value}" for key, value in self.space.decode(trial.params).items())
        print(f"search: trial {number} ({name}): {shown}", flush=True)
        try:
            validate_trial_params(self.base_params, overrides, source=f"trial {number}")
            output = self.dvc_exp_run(number, name, overrides)
            value, ref = experiment_metric(name)
        except Interrupted:
            # Not the trial's fault: it does not use the budget, and the next run retries the same params.
            trial.set_user_attr("search.interrupted", True)
            self.finish(number, TrialState.FAIL)
            retrying(lambda: self.study.enqueue_trial(trial.params, user_attrs={"search.retry_of": number}))
            print(f"search: trial {number} interrupted; it reruns when the search is resumed", flush=True)
            return
        except UserError as exc:
            trial.set_user_attr(ERROR_ATTR, str(exc))
            self.finish(number, TrialState.FAIL)
            print(f"search: trial {number} failed: {exc}", flush=True)
            return
        restored = "Stage 'train' is cached - skipping run" in output or "Stage 'train' didn't change" in output
        trial.set_user_attr("search.dvc_rev", git("rev-parse", ref))
        trial.set_user_attr("search.restored", restored)
        try:
            tagged = retrying(lambda: tag_training_runs(
                self.config.mlflow, name, ref, {STUDY_TAG: self.study_name, TRIAL_TAG: str(number)}))
        except Exception as exc:  # noqa: BLE001 - a tracking hiccup must not lose a finished trial
            tagged = 0
            print(f"search: trial {number}: MLflow run not tagged ({str(exc).splitlines()[0]})", flush=True)
        trial.set_user_attr("search.mlflow_runs_tagged", tagged)
        self.finish(number, TrialState.COMPLETE, value)
        note = " (train restored from DVC's run-cache)" if restored else ""
        print(f"search: trial {number} {OBJECTIVE} {value:.4f}{note}", flush=True)

    def dvc_exp_run(self, number: int, name: str, overrides: dict) -> str:
        """Run the trial as a temporary-dir DVC experiment; retried while another DVC process holds the lock."""
        dvc = Path(sys.executable).parent / "dvc"
        command = [str(dvc) if dvc.is_file() else "dvc", "exp", "run", "--temp", "-n", name,
                   *set_param_args(overrides)]
        log_path = self.log_dir / f"t{number}.log"
        for attempt in range(LOCK_RETRIES):
            if self.stop.is_set():
                raise Interrupted()
            with open(log_path, "w") as log:
                # Own session: a terminal Ctrl-C reaches the search, which stops its DVC children cleanly.
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=tool_env(),
                                           start_new_session=True)
                with self.lock:
                    self.children[number] = process
                returncode = process.wait()
                with self.lock:
                    self.children.pop(number, None)
            output = log_path.read_text(errors="replace")
            if returncode == 0:
                return output
            if self.stop.is_set() and experiment_ref(name) is not None:  # stored before the stop came
                return output
            # Stopped, or refused the lock, after DVC queued the run but before it started it (or neither).
            drop_stashed_runs([name])
            if self.stop.is_set():
                raise Interrupted()
            if not lock_contention(output):
                raise UserError(error_line(output))
            time.sleep(1 + random.random() * min(30, 2 ** attempt))
        raise UserError(f"dvc exp run {name}: repository lock still busy after {LOCK_RETRIES} tries")

    def interrupt_children(self) -> None:
        with self.lock:
            children = list(self.children.values())
        for process in children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
        for process in children:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)

    def run(self) -> None:
        beat = threading.Thread(target=self.heartbeats, daemon=True)
        beat.start()
        finished = [threading.Event() for _ in range(self.jobs)]

        def work(done: threading.Event) -> None:
            try:
                self.worker()
            finally:
                done.set()

        workers = [threading.Thread(target=work, args=(done,), name=f"search-{i}") for i, done in enumerate(finished)]
        for thread in workers:
            thread.start()

        def wait_for_workers() -> None:
            # Polled with sleep, not Thread.join: a KeyboardInterrupt inside join() can leave the thread
            # looking finished, and the interpreter then exits under a trial it has not recorded yet.
            while not all(done.is_set() for done in finished):
                time.sleep(0.2)

        try:
            wait_for_workers()
        except KeyboardInterrupt:
            print("search: interrupted; stopping the running trials (run the same command to resume)", flush=True)
            self.stop.set()
            while True:
                try:
                    self.interrupt_children()
                    wait_for_workers()
                    break
                except KeyboardInterrupt:  # a second Ctrl-C must not lose the trials being recorded
                    continue
            raise
        finally:
            self.stop.set()


# ---------------------------------------------------------------- the study's outcome

def leaderboard(study):
    import pandas as pd
    from optuna.trial import TrialState

    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.WAITING or not counts_toward_budget(trial):
            continue
        overrides = trial.user_attrs.get("search.overrides", {})
        sampled = {key: overrides.get(key, value) for key, value in trial.params.items()}
        rows.append({"trial": trial.number, "state": trial.state.name,
                     OBJECTIVE: trial.value if trial.state == TrialState.COMPLETE else float("nan"),
                     "experiment": trial.user_attrs.get("search.dvc_exp", ""),
                     **{key: _short(value) for key, value in sampled.items()},
                     "note": trial.user_attrs.get(ERROR_ATTR) or ("run-cache" if trial.user_attrs.get("search.restored") else "")})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values([OBJECTIVE, "trial"], ascending=[False, True], na_position="last").reset_index(drop=True)


def _short(value):
    return float(f"{value:.4g}") if isinstance(value, float) else value


def best_trial(study):
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def write_best_preset(study_name: str, trial) -> Path:
    from marsseg import io

    path = PRESET_DIR / f"{study_name}-best.yaml"
    header = (f"# Best trial of search study '{study_name}': trial {trial.number} "
              f"(dvc exp {trial.user_attrs.get('search.dvc_exp')}), {OBJECTIVE} {trial.value:.4f}.\n"
              f"# Written by `marsseg search`; rerun with `make exp PRESET={study_name}-best`.\n")
    body = yaml.safe_dump(unflatten(trial.user_attrs["search.overrides"]), sort_keys=False)
    io.write_text(path, header + body)
    return path


def write_plots(study, folder: Path) -> list[Path]:
    """Optimisation history always; parameter importances once two finished trials differ."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna.visualization.matplotlib as plots

    from marsseg import io

    written = []
    for name, plot in (("history", plots.plot_optimization_history), ("importance", plots.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = plot(study)
        except Exception as exc:  # noqa: BLE001 - importances need >= 2 completed trials with varied params
            print(f"search: no {name} plot yet ({str(exc).splitlines()[0]})")
            continue
        if name == "history":
            axes.set_ylabel(OBJECTIVE)
        figure = axes.figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        path = folder / f"{name}.png"
        io.save_figure(figure, path)
        written.append(path)
    return written


def log_summary(mlflow_cfg, study, best, artifacts: list[Path]) -> None:
    """One run per search invocation in the '<experiment>-search' experiment, so it never enters the
    model tables of `marsseg compare`."""
    from optuna.trial import TrialState

    from marsseg.tracking import Tracker

    tracker = Tracker(mlflow_cfg.model_copy(update={"experiment": f"{mlflow_cfg.experiment}-search"}))
    states = [t.state for t in study.get_trials(deepcopy=False) if counts_toward_budget(t)]
    with tracker.start(run_name=f"{study.study_name}-summary",
                       tags={STUDY_TAG: study.study_name, "search.best_trial": str(best.number),
                             "search.best_dvc_exp": best.user_attrs.get("search.dvc_exp", "")}):
        tracker.log_params({f"best.{key}": value for key, value in best.user_attrs["search.overrides"].items()})
        tracker.log_metrics({f"best_{OBJECTIVE}": best.value, "best_trial": best.number,
                             "trials_run": len(states),
                             "trials_complete": states.count(TrialState.COMPLETE),
                             "trials_failed": states.count(TrialState.FAIL)})
        for path in artifacts:
            tracker.log_artifact(str(path))


def report(search: Search) -> int:
    import pandas as pd
    from marsseg import io

    study = search.study
    table = leaderboard(study)
    folder = REPORT_DIR / study.study_name
    if not table.empty:
        io.write_csv(folder / "leaderboard.csv", table)
        with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 60):
            print(f"\nsearch: study '{study.study_name}' leaderboard ({search.storage_url})")
            print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    elsewhere = sum(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False))
    if elsewhere:
        print(f"search: {elsewhere} trial(s) still running in other workers; the last worker to finish "
              f"reports the whole study")
    best = best_trial(study)
    if best is None:
        print(f"search: study '{study.study_name}' has no completed trial yet")
        return 1
    preset = write_best_preset(study.study_name, best)
    artifacts = write_plots(study, folder) + ([folder / "leaderboard.csv"] if not table.empty else [])
    try:
        retrying(lambda: log_summary(search.config.mlflow, study, best, artifacts))
    except Exception as exc:  # noqa: BLE001 - the study itself is safe in its storage
        print(f"search: study summary not logged to MLflow ({str(exc).splitlines()[0]})")
    print(f"search: best trial {best.number} ({best.user_attrs.get('search.dvc_exp')}) {OBJECTIVE} {best.value:.4f} "
          f"-> {preset} (make exp PRESET={preset.stem}; dvc exp apply {best.user_attrs.get('search.dvc_exp')})")
    return 0


# ---------------------------------------------------------------- command

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE, help=f"search space file (default {DEFAULT_SPACE})")
    parser.add_argument("--trials", type=int, default=20, help="trials in the whole study, all workers together")
    parser.add_argument("--jobs", type=int, default=1, help="trials run at once by this process")
    parser.add_argument("--study", default="search", help="study name (prefix of the DVC experiment names)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds after which no new trial starts")
    parser.add_argument("--storage", default=os.environ.get("MARSSEG_SEARCH_STORAGE", DEFAULT_STORAGE),
                        help=f"Optuna storage URL shared by all workers (default {DEFAULT_STORAGE})")


def run(args) -> int:
    from marsseg.config import read_params

    if args.trials < 1 or args.jobs < 1:
        raise UserError(f"--trials and --jobs must be at least 1, got {args.trials} and {args.jobs}")
    if args.timeout is not None and not 0 < args.timeout < math.inf:  # nan fails both comparisons
        raise UserError(f"--timeout must be positive seconds, got {args.timeout}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.study):
        raise UserError(f"--study {args.study!r}: use letters, digits, '.', '_' or '-' (it names DVC experiments)")
    base_params = read_params()
    untracked = git("ls-files", "--others", "--exclude-standard", "--", "marsseg", "stages", "dvc.yaml").split()
    if untracked:
        # DVC builds each trial from the commit plus changes to tracked files: new files stay behind.
        print(f"search: warning: untracked files are not part of the trials ({', '.join(untracked[:5])}"
              f"{', ...' if len(untracked) > 5 else ''}); `git add` them first", file=sys.stderr)
    search = Search(load_space(args.space, base_params), base_params, args.study, args.storage, args.trials,
                    args.jobs, args.timeout)
    # `kill` stops as cleanly as Ctrl-C (and SIGINT counts even where a shell started us ignoring it)
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, signal.default_int_handler)
    search.run()
    return report(search)


if __name__ == "__main__":
    from marsseg.cli import run_module

    run_module(__name__)
