"""The Optuna search over DVC experiments: space checks, trials as DVC experiments + MLflow runs, resume,
and several search processes sharing one study (tiny params, scratch DVC repos)."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import types
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from marsseg import search
from marsseg.config import read_params
from marsseg.errors import UserError

from conftest import REPO, commit_all, copy_pipeline, copy_project, pipeline_env, project_env, run, train_marker

STORAGE = "sqlite:///optuna.db"
TINY_SPACE = {
    "fixed": {"train.epochs": 1},
    "params": {"train.learning_rate": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
               "model.base_filters": [4, 6]},
}


# ---------------------------------------------------------------- the space file (no DVC)

@pytest.fixture()
def base_params() -> dict:
    return read_params(REPO / "params.yaml")


def space_error(tmp_path: Path, base_params: dict, text: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        search.load_space(path, base_params)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


@pytest.mark.parametrize("text, expected", [
    ("params: {model.depht: [3, 4]}", "unknown parameter model.depht; did you mean model.depth?"),
    ("fixed: {train.epoch: 2}\nparams: {model.depth: [3]}", "did you mean train.epochs?"),
    ("params: {model.depth: {low: 5, high: 3}}", "model.depth: low (5) is above high (3)"),
    ("params: {train.learning_rate: {low: 0.0, high: 0.1, log: true}}", "a log range needs low > 0"),
    ("params: {loss.name: []}", "loss.name: empty list of choices"),
    ("params: {model.depth: [3, 7]}", "model.depth is 7; allowed"),
    ("params: {model.arch: [unet, nope]}", "unknown architecture 'nope'"),
    ("params: {model.depth: 3}", "put a single value under 'fixed:'"),
    ("fixed: {model.depth: 3}", "non-empty 'params:' section"),
])
def test_an_impossible_space_fails_with_one_line(tmp_path, base_params, text, expected):
    assert expected in space_error(tmp_path, base_params, text)


def test_space_ranges_and_list_choices(tmp_path, base_params):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({
        "fixed": {"train": {"epochs": 2}},
        "params": {"model.depth": {"low": 3, "high": 4}, "train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
                   "model.dropout": [[0.0, 0.1], 0.2]}}))
    space = search.load_space(path, base_params)
    depth, rate, dropout = (space.distributions[k] for k in ("model.depth", "train.learning_rate", "model.dropout"))
    assert isinstance(depth, optuna.distributions.IntDistribution) and (depth.low, depth.high) == (3, 4)
    assert isinstance(rate, optuna.distributions.FloatDistribution) and rate.log
    assert space.overrides({"model.dropout": dropout.choices[0]}) == {"train.epochs": 2, "model.dropout": [0.0, 0.1]}
    assert search.unflatten({"train.epochs": 2, "model.dropout": 0.2}) == {"train": {"epochs": 2}, "model": {"dropout": 0.2}}


def test_dvc_values_read_back_as_the_same_yaml():
    for value in (1e-05, 0.001, 3, True, "focal+dice", [0.0, 0.1]):
        assert yaml.safe_load(search.dvc_value(value)) == value


def test_a_failing_trial_is_recorded_with_its_error_line_and_uses_the_budget(tmp_path, monkeypatch, base_params):
    monkeypatch.chdir(tmp_path)
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(TINY_SPACE))
    space = search.load_space(space_file, base_params)

    def failing_run(self, number, name, overrides):
        raise UserError("error: params.yaml: model.depth is 2; allowed: 3, 4, 5")

    monkeypatch.setattr(search.Search, "dvc_exp_run", failing_run)
    finder = search.Search(space, base_params, "broken", STORAGE, trials=3, jobs=2)
    finder.run()
    trials = optuna.load_study(study_name="broken", storage=STORAGE).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    assert all(t.user_attrs[search.ERROR_ATTR].startswith("error: params.yaml: model.depth") for t in trials)
    assert search.report(finder) == 1


def queue_run(name: str, value: int) -> None:
    """Queue a ``--temp`` experiment the way ``dvc exp run --temp`` does before it starts it."""
    from dvc.repo import Repo

    with Repo() as repo:
        repo.experiments.queue_one(repo.experiments.tempdir_queue, name=name, params={"params.yaml": [f"a={value}"]})


@pytest.fixture()
def dvc_repo(tmp_path, monkeypatch) -> Path:
    """An empty git + DVC repository with a one-stage pipeline, as the working directory (no run needed)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("a: 1\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  s:\n    cmd: python -c 'print(1)'\n    params: [a]\n")
    run(tmp_path, "git", "init", "-q")
    run(tmp_path, "dvc", "init", "-q")
    commit_all(tmp_path, "pipeline")
    return tmp_path


def test_unqueueing_a_stopped_run_leaves_the_other_queued_runs(dvc_repo):
    queue_run("s-t1", 2)
    queue_run("s-t2", 3)
    assert sorted(search.stashed_runs()) == ["s-t1", "s-t2"]
    search.drop_stashed_runs(["s-t1", "s-t9"])
    assert search.stashed_runs() == ["s-t2"]


def search_in(repo: Path, base_params: dict, study: str, trials: int = 2) -> search.Search:
    space_file = repo / "space.yaml"
    space_file.write_text(yaml.safe_dump(TINY_SPACE))
    return search.Search(search.load_space(space_file, base_params), base_params, study, STORAGE, trials=trials, jobs=1)


def fake_dvc_runs(monkeypatch, dvc_run) -> None:
    """The search's ``dvc exp run -n NAME`` becomes ``dvc_run(NAME, log)``, which returns its exit code."""
    class FakeDvc:
        def __init__(self, command, stdout, **kwargs):
            self.returncode = dvc_run(command[command.index("-n") + 1], stdout)
            stdout.flush()
            self.pid = os.getpid()

        def wait(self):
            return self.returncode

    faked = types.ModuleType("subprocess")
    faked.__dict__.update(vars(subprocess), Popen=FakeDvc)  # the search's own Popen only
    monkeypatch.setattr(search, "subprocess", faked)


def test_a_trial_stopped_after_dvc_queued_its_run_is_unqueued_and_retried(dvc_repo, monkeypatch, base_params):
    """Ctrl-C between DVC queueing a ``--temp`` run and starting it left the run queued, and the next trial's
    ``dvc exp run --temp`` ran it too: an extra experiment under the stopped trial's name."""
    finder = search_in(dvc_repo, base_params, "stopped")

    def stopped_after_queueing(name, log):
        queue_run("stopped-t9", 3)  # another worker's run, queued just before
        queue_run(name, 2)
        finder.stop.set()  # the Ctrl-C
        return 255

    fake_dvc_runs(monkeypatch, stopped_after_queueing)
    finder.run_trial(finder.claim())
    trials = optuna.load_study(study_name="stopped", storage=STORAGE).get_trials()
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["search.interrupted"]
    assert trials[1].state == TrialState.WAITING and trials[1].user_attrs["search.retry_of"] == 0
    assert search.stashed_runs() == ["stopped-t9"]


def test_a_run_refused_the_lock_after_dvc_queued_it_is_unqueued_before_it_is_retried(dvc_repo, monkeypatch, base_params):
    finder = search_in(dvc_repo, base_params, "busy")
    queued_when_started = []

    def refused_then_failing(name, log):
        queued_when_started.append(search.stashed_runs())
        if len(queued_when_started) == 1:
            queue_run(name, 2)
            log.write("ERROR: '.dvc/tmp/exps' is busy, it is being blocked by another DVC process\n")
        else:
            log.write("error: params.yaml: model.depth is 2; allowed: 3, 4, 5\n")
        return 255

    fake_dvc_runs(monkeypatch, refused_then_failing)
    with pytest.raises(UserError, match="model.depth is 2"):
        finder.dvc_exp_run(0, "busy-t0", {})
    assert queued_when_started == [[], []]  # the retry did not find the refused run still queued


def test_a_killed_workers_queued_run_is_unqueued_when_the_next_trial_is_claimed(dvc_repo, base_params):
    finder = search_in(dvc_repo, base_params, "killed", trials=3)
    dead = finder.claim()
    finder.finish(dead.number, TrialState.FAIL)  # as fail_stale_trials records a worker that stopped beating
    queue_run(f"killed-t{dead.number}", 2)
    queue_run("killed-t7", 3)  # a trial another process is starting
    assert finder.claim() is not None
    assert search.stashed_runs() == ["killed-t7"]


# ---------------------------------------------------------------- end to end, DVC for real

pytest_slow = pytest.mark.slow


def search_project(pipeline_baseline: Path, dest: Path) -> Path:
    """The tiny pipeline, run and committed, with the tiny space: a trial reruns train onwards only, in seconds
    (1 epoch of a 4-filter net)."""
    root = copy_pipeline(pipeline_baseline, dest)
    (root / "search/space.yaml").write_text(yaml.safe_dump(TINY_SPACE, sort_keys=False))
    commit_all(root, "tiny search space")
    return root


def search_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "marsseg.search", *args]


def start_search(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(search_command(*args), cwd=root, env=project_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def counted_trials(root: Path, study: str) -> list:
    url = f"sqlite:///{root / 'optuna.db'}"
    try:
        # Under the search's own lock: opened while a starting search creates the store's schema, the read
        # would stamp the schema version too and one of the two would fail (UNIQUE constraint).
        with search.storage_lock(url):
            trials = optuna.load_study(study_name=study, storage=url).get_trials()
    except KeyError:  # the store exists but the search has not created its study yet
        return []
    return [t for t in trials if search.counts_toward_budget(t)]


def experiment_names(root: Path) -> list[str]:
    shown = json.loads(run(root, "dvc", "exp", "show", "--json").stdout)
    return sorted(e["name"] for rev in shown for e in (rev.get("experiments") or []))


def tagged_runs(root: Path, study: str) -> dict[str, str]:
    """MLflow run id -> search.trial tag, for the trial runs of the study (not its summary run)."""
    with sqlite3.connect(root / "mlflow.db") as db:
        return dict(db.execute("select s.run_uuid, t.value from tags s join tags t on t.run_uuid = s.run_uuid "
                               "and t.key = 'search.trial' where s.key = 'search.study' and s.value = ?", (study,)))


OPEN_STUDY = """
import sys
from pathlib import Path
from marsseg import search
from marsseg.config import read_params
base = read_params(Path(sys.argv[3]))
search.Search(search.load_space(Path(sys.argv[1]), base), base, "race", sys.argv[2], trials=1, jobs=1)
"""


def test_workers_starting_together_on_a_new_store_all_open_it(tmp_path):
    """Every worker of a new study creates the store's schema at the same moment: none may lose that race."""
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    workers = [subprocess.Popen([sys.executable, "-c", OPEN_STUDY, str(space), url, str(REPO / "params.yaml")], cwd=tmp_path,
                                env=project_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(4)]
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 4, outputs
    assert len(optuna.get_all_study_summaries(url)) == 1


@pytest_slow
def test_a_stopped_search_resumes_to_its_budget_of_three_dvc_experiments_and_writes_the_best_preset(pipeline_baseline, tmp_path):
    root = search_project(pipeline_baseline, tmp_path / "repo")
    process = start_search(root, "--trials", "3", "--jobs", "1", "--study", "resume")
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if (root / "optuna.db").is_file():
            done = [t for t in counted_trials(root, "resume") if t.state == TrialState.COMPLETE]
            if len(done) >= 1:
                break
        time.sleep(1)
    # Like Ctrl-C: the running trial is stopped and left for the next run.
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=300)
    assert process.returncode != 0, output
    first = counted_trials(root, "resume")
    assert 1 <= sum(t.state == TrialState.COMPLETE for t in first) < 3, output

    resumed = run(root, *search_command("--trials", "3", "--jobs", "2", "--study", "resume"))
    trials = counted_trials(root, "resume")
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials), output + resumed.stdout
    everything = optuna.load_study(study_name="resume", storage=f"sqlite:///{root / 'optuna.db'}").get_trials()
    interrupted = [t for t in everything if t.user_attrs.get("search.interrupted")]
    for trial in interrupted:  # rerun with the same params, not lost
        retry = next(t for t in everything if t.user_attrs.get("search.retry_of") == trial.number)
        assert retry.params == trial.params and retry.state == TrialState.COMPLETE

    # The finished 3-trial study (JOBS=2 after the resume): 3 DVC experiments, 3 tagged MLflow runs,
    # the best trial's preset, the leaderboard and the plots.
    names = experiment_names(root)
    assert len(names) == 3 and all(name.startswith("resume-t") for name in names), names
    assert sorted(tagged_runs(root, "resume").values()) == sorted(str(t.number) for t in trials)
    best = max(trials, key=lambda t: t.value)
    preset = yaml.safe_load((root / "presets/resume-best.yaml").read_text())
    assert preset["train"]["epochs"] == 1
    assert preset["model"]["base_filters"] == best.params["model.base_filters"]
    assert preset["train"]["learning_rate"] == pytest.approx(best.params["train.learning_rate"])
    assert "leaderboard" in resumed.stdout and f"best trial {best.number}" in resumed.stdout
    assert (root / "reports/search/resume/history.png").is_file()
    with sqlite3.connect(root / "mlflow.db") as db:
        summaries = db.execute("select r.run_uuid from runs r join experiments e on r.experiment_id = e.experiment_id "
                               "where e.name = 'marsseg-search'").fetchall()
    assert summaries

    # Asking again for the same study with the budget spent runs nothing new.
    again = run(root, *search_command("--trials", "3", "--study", "resume"))
    assert "search: trial" not in again.stdout
    assert len(counted_trials(root, "resume")) == 3


@pytest_slow
def test_two_search_processes_share_one_study_and_its_budget(pipeline_baseline, tmp_path):
    root = search_project(pipeline_baseline, tmp_path / "repo")
    # A budget of 2: unshared, each process would run 2 trials; shared, each runs one (a trial takes far
    # longer than a process takes to start and claim).
    processes = [start_search(root, "--trials", "2", "--jobs", "1", "--study", "shared") for _ in range(2)]
    outputs = [p.communicate(timeout=900)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs

    trials = counted_trials(root, "shared")
    assert sorted(t.number for t in trials) == [0, 1]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # Each trial ran exactly once, in one process or the other, and both processes ran one.
    started = [line for out in outputs for line in out.splitlines() if line.startswith("search: trial") and "(shared-t" in line]
    assert sorted(started) == sorted(set(started)) and len(started) == 2
    assert all(any("(shared-t" in line for line in out.splitlines()) for out in outputs)
    assert experiment_names(root) == ["shared-t0", "shared-t1"]
    # Seeded per position in the study: the processes did not propose the same configuration.
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 2


@pytest_slow
def test_a_configuration_dvc_already_trained_is_restored_from_the_run_cache_not_retrained(pipeline_baseline, tmp_path):
    root = copy_pipeline(pipeline_baseline, tmp_path / "repo")
    trained = read_params(root / "params.yaml")
    space = {"fixed": {"train.epochs": trained["train"]["epochs"]},
             "params": {"model.base_filters": [trained["model"]["base_filters"]]}}
    (root / "search/space.yaml").write_text(yaml.safe_dump(space))
    commit_all(root, "a space whose one configuration is the committed, trained one")
    marker = train_marker(root)
    trainings_before = marker.read_text() if marker.is_file() else ""

    result = run(root, *search_command("--trials", "1", "--study", "cached"), env=pipeline_env(root))
    [trial] = counted_trials(root, "cached")
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["search.restored"], result.stdout
    assert "restored from DVC's run-cache" in result.stdout
    assert (marker.read_text() if marker.is_file() else "") == trainings_before


def test_a_bad_space_stops_the_search_before_any_trial_with_one_line(tmp_path):
    root = copy_project(tmp_path / "repo")
    (root / "search/space.yaml").write_text("params:\n  model.depht: [3, 4]\n")
    result = run(root, *search_command("--trials", "2"), check=False)
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if "error" in line.lower()] == [
        "error: search/space.yaml: unknown parameter model.depht; did you mean model.depth?"]
    assert not (root / "optuna.db").exists() and not experiment_names(root)


@pytest.mark.parametrize("argv, message", [
    (["--trials", "0"], "error: --trials and --jobs must be at least 1, got 0 and 1"),
    (["--timeout", "nan"], "error: --timeout must be positive seconds, got nan"),
    (["--timeout", "inf"], "error: --timeout must be positive seconds, got inf"),
    (["--timeout", "-5"], "error: --timeout must be positive seconds, got -5.0"),
])
def test_bad_search_arguments_stop_in_one_line_before_anything_opens(argv, message, tmp_path, monkeypatch, capsys):
    from marsseg.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["search", *argv]) == 2
    assert capsys.readouterr().err.strip() == message
    assert not list(tmp_path.iterdir())
