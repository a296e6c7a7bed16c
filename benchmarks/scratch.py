"""A scratch copy of this working tree for benchmarks that run the pipeline as DVC experiments.

The copy is a fresh git repo holding the tracked and untracked (not ignored) files, without the committed
``dvc.lock`` and ``metrics/`` (they describe the default params), so nothing in the checkout changes.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The real-data runs of the README: one augmented copy per image, 4-6 per big-rock image.
LIGHT_AUGMENTATION = {"copies_min": 1, "copies_max": 1, "rare_copies_min": 4, "rare_copies_max": 6}
GIT = ("git", "-c", "user.name=benchmark", "-c", "user.email=benchmark@localhost")


def scratch_copy(dest: Path) -> Path:
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    for name in filter(None, listing.split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    for generated in ("dvc.lock", "metrics"):
        path = dest / generated
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    commit(dest, "benchmark copy")
    return dest


def commit(root: Path, message: str) -> None:
    subprocess.run([*GIT, "add", "-A"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-q", "--allow-empty", "-m", message], cwd=root, check=True)


def environment() -> dict:
    """Stage commands say `python`: this interpreter's environment first on PATH (as `make` does)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)  # each scratch copy keeps its own store
    return env


def run_logged(root: Path, command: list[str], log: Path) -> tuple[int, str]:
    """Run ``command`` in ``root`` with its output in ``log``; the exit status and the last non-empty line."""
    with open(log, "w") as handle:
        status = subprocess.call(command, cwd=root, env=environment(), stdout=handle, stderr=subprocess.STDOUT)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return status, (lines[-1] if lines else f"exit {status}")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
