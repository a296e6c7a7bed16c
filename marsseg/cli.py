"""marsseg: the commands users run outside `dvc repro`.

    marsseg check                      validate params.yaml (what every stage does first)
    marsseg exp seed-best [--queue]    run a preset as a DVC experiment; `marsseg exp --list`
    marsseg compare [--markdown]       MLflow runs ranked by the evaluated val mIoU, with intervals
    marsseg search / ensemble / restore / reproduce / submit-check / ui

Each command is a module with ``add_arguments(parser)`` and ``run(args)``; its docstring's first line
is its help. Modules are imported only when their command runs, so ``marsseg check`` stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from marsseg.errors import UserError

COMMANDS = {
    "check": "marsseg.check",
    "exp": "marsseg.presets",
    "compare": "marsseg.compare",
    "search": "marsseg.search",
    "ensemble": "marsseg.ensemble",
    "cv": "marsseg.cv",
    "restore": "marsseg.restore",
    "reproduce": "marsseg.reproduce",
    "submit-check": "marsseg.submission_check",
    "ui": "marsseg.ui",
}


def _summary(module_name: str) -> str:
    """The first docstring line of a command module, read without importing it."""
    import ast
    from importlib.util import find_spec

    spec = find_spec(module_name)
    if spec is None or spec.origin is None:
        return ""
    with open(spec.origin, encoding="utf-8") as handle:
        docstring = ast.get_docstring(ast.parse(handle.read())) or ""
    return docstring.splitlines()[0] if docstring else ""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marsseg", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        help_text = _summary(module_name)
        # argparse %-formats a command's help ("%(prog)s"): a literal "95%" must reach it as "95%%".
        sub = commands.add_parser(name, help=help_text.replace("%", "%%"), description=help_text)
        if name == command:
            importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        status = importlib.import_module(COMMANDS[args.command]).run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


def run_module(module_name: str, argv: list[str] | None = None) -> None:
    """``python -m marsseg.<module>`` runs the same command as ``marsseg <command>``."""
    if module_name == "__main__":  # run as `python -m marsseg.<module>`: the spec knows the real name
        module_name = sys.modules["__main__"].__spec__.name
    command = next(name for name, module in COMMANDS.items() if module == module_name)
    sys.exit(main([command, *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
