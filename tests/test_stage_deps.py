"""Every stage's dvc.yaml deps are exactly the code it runs: its script and the marsseg modules it imports.

Imports are followed through the whole package, function-level imports included (the config reads the
registries lazily), so a module a stage needs can't be missing from its cache key and a module it never
loads can't rerun it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    parts = name.split(".")
    for candidate in (ROOT.joinpath(*parts).with_suffix(".py"), ROOT.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, package: str | None) -> set[str]:
    """marsseg modules named by the imports of one file (``from marsseg.x import y`` may name a module y)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    found = set()
    for name in names:
        if name.split(".")[0] == "marsseg" and module_file(name):
            parts = name.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}  # importing a.b.c runs a and a.b
    return found


def code_closure(script: Path) -> set[Path]:
    """The script and every marsseg file reachable from it."""
    files = {script}
    todo = list(imported_modules(script, None))
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        files.add(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        todo += imported_modules(path, package)
    return files


def declared_code(deps: list[str]) -> set[Path]:
    files = set()
    for dep in deps:
        path = ROOT / dep
        if dep.endswith(".py"):
            files.add(path)
        elif path.is_dir() and (path / "__init__.py").is_file():
            files |= set(path.rglob("*.py"))
    return {f for f in files if "__pycache__" not in f.parts}


def stage_script(command: str) -> Path:
    """``python -m stages.train --fold ${item}`` -> stages/train.py"""
    words = command.split()
    assert words[:2] == ["python", "-m"], f"stage command {command!r}: expected `python -m stages.<name>`"
    return ROOT.joinpath(*words[2].split(".")).with_suffix(".py")


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_are_the_code_it_imports(name):
    stage = STAGES[name]
    if "foreach" in stage or "matrix" in stage:
        stage = stage["do"]
    script = stage_script(stage["cmd"])
    needed = {p.relative_to(ROOT).as_posix() for p in code_closure(script)}
    declared = {p.relative_to(ROOT).as_posix() for p in declared_code(stage["deps"])}
    assert not needed - declared, f"stage {name} imports code its deps do not list: {sorted(needed - declared)}"
    assert not declared - needed, f"stage {name} lists code it never imports: {sorted(declared - needed)}"
