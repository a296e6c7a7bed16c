"""Restore the pipeline's outputs from the DVC remote (outputs and run-cache) instead of rerunning stages.

Two machines, one commit: a GPU box ran the pipeline and pushed (``dvc push --run-cache``); this checkout
wants its outputs without training.

- When the committed ``dvc.lock`` names what the GPU box pushed, ``dvc pull`` alone restores everything.
- When it names other outputs (the lock was committed from another run, e.g. a CPU run that is not
  bit-identical to the GPU's), ``dvc pull`` cannot find them and ``dvc repro --pull`` retrains: DVC looks
  a stage up in the run-cache only when the lock has no usable entry for it. This command pulls the
  run-cache, and for each stage that is not up to date after the pull, replaces the outputs its lock
  entry names by the run-cache's result for the stage's current inputs (code, params, data), checked
  out and committed (``dvc commit``): the new dvc.lock is the one to commit.

No stage command ever runs: a stage the run-cache has no result for stops the command with one line
before anything else changes (``dvc repro`` would rerun that stage, for train: retrain).

    marsseg restore [-r REMOTE]        (make restore)
"""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import yaml

from marsseg.errors import UserError
from marsseg.io import write_text

LOCK = Path("dvc.lock")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-r", "--remote", help="DVC remote to restore from (default: the project's default remote)")


def _dvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], capture_output=True, text=True)


def _last_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit status {result.returncode}"


def pipeline_stages() -> list[str]:
    """Every stage's address (``train``, ``cv_train@0``, ...), each after the stages it depends on."""
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo() as repo:
        # DVC's graph points from a stage to the stages it depends on.
        order = reversed(list(nx.topological_sort(repo.index.graph)))
        return [stage.addressing for stage in order if isinstance(stage, PipelineStage)]


def pull(remote: str | None) -> None:
    """Every locked output the remote has, and the remote's whole run-cache (entries and their outputs)."""
    result = _dvc("pull", "--run-cache", "--allow-missing", *(["-r", remote] if remote else []))
    if result.returncode != 0:
        raise UserError(f"dvc pull --run-cache failed: {_last_line(result)}")


def _changed(name: str) -> bool:
    from dvc.repo import Repo

    with Repo() as repo, repo.lock:
        (stage,) = repo.stage.collect(name)
        return stage.changed()


def _forget_locked_outputs(name: str) -> str:
    """Drop the output hashes of ``name``'s lock entry, so that DVC consults the run-cache for them;
    returns the old text to put back. The entry keeps its place: ``dvc commit`` refills it there."""
    text = LOCK.read_text()
    lock = yaml.safe_load(text)
    entry = lock.get("stages", {}).get(name)
    if entry is not None:
        entry["outs"] = [{"path": out["path"]} for out in entry.get("outs", [])]
        write_text(LOCK, yaml.safe_dump(lock, sort_keys=False))
    return text


def _restore_from_run_cache(name: str) -> bool:
    """Check out the run-cache's outputs for ``name``'s current inputs; False when it has none."""
    from dvc.repo import Repo
    from dvc.stage.cache import RunCacheNotFoundError

    with Repo() as repo, repo.lock:
        (stage,) = repo.stage.collect(name)
        try:
            repo.stage_cache.restore(stage, pull=True)
        except RunCacheNotFoundError:
            return False
    return True


def restore_stage(name: str) -> None:
    old_lock = _forget_locked_outputs(name)
    try:
        restored = _restore_from_run_cache(name)
    except BaseException:
        write_text(LOCK, old_lock)
        raise
    if not restored:
        write_text(LOCK, old_lock)
        raise UserError(f"{name}: neither its locked outputs nor a run-cache result for its current inputs are in "
                        f"this cache or the remote; DVC cannot restore it (`dvc repro` would run it again)")
    committed = _dvc("commit", "--force", "--quiet", name)
    if committed.returncode != 0:
        raise UserError(f"dvc commit {name} failed: {_last_line(committed)}")


def run(args) -> None:
    if not Path("dvc.yaml").is_file() or not Path(".dvc").is_dir():
        raise UserError(f"{Path.cwd()}: not the root of a DVC project (no dvc.yaml / .dvc); run restore there")
    pull(args.remote)
    restored, current = [], []
    for name in pipeline_stages():
        if not _changed(name):
            current.append(name)
            continue
        try:
            restore_stage(name)
        except UserError as exc:
            if restored:
                raise UserError(f"{exc}; restored before it: {', '.join(restored)}") from None
            raise
        restored.append(name)
    if restored:
        print(f"restore: {', '.join(restored)} restored from the run-cache (dvc.lock updated: commit it); "
              f"{', '.join(current) or 'no other stage'} pulled as locked; no stage ran")
    else:
        print(f"restore: every stage pulled as locked ({', '.join(current)}); no stage ran")


if __name__ == "__main__":
    from marsseg.cli import run_module

    run_module("marsseg.restore")  # under -m, __name__ is "__main__"
