"""Stop with one line when a stage runs outside the project's environment.

DVC runs each stage's `python` from PATH: `.venv/bin/dvc repro` without an activated environment finds
the system Python, which can import this package from the checkout but has none of its requirements.
Only the standard library is used here, so the check runs before anything that would fail with a traceback.
"""
import importlib.metadata
import re
import sys


def missing_requirement() -> str | None:
    """The first requirement of the marsseg distribution this interpreter lacks (or marsseg itself)."""
    try:
        requirements = importlib.metadata.requires("marsseg") or []
    except importlib.metadata.PackageNotFoundError:
        return "marsseg"
    for requirement in requirements:
        name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return name
    return None


missing = missing_requirement()
if missing:
    print(f"error: {sys.executable} is not the project's environment ({missing} is not installed there): "
          "run `source .venv/bin/activate` first, or use `make run`", file=sys.stderr)
    sys.exit(2)
