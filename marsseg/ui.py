"""MLflow UI for this project's tracking store (default http://127.0.0.1:5000)."""
from __future__ import annotations

import argparse
import subprocess
import sys

from marsseg.config import load_config
from marsseg.errors import UserError
from marsseg.tracking import tracking_uri


def port_number(text: str) -> int:
    """A TCP port to listen on: a bad one is refused here, not by a traceback from inside MLflow's server."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port_number, default=5000)


def run(args) -> int:
    uri = tracking_uri(load_config().mlflow)
    if uri.startswith(("http://", "https://")):
        raise UserError(f"mlflow tracking store {uri} is a server already: open it in a browser")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--host", args.host, "--port", str(args.port)]
    print("ui:", " ".join(command))
    return subprocess.call(command)


if __name__ == "__main__":
    from marsseg.cli import run_module

    run_module(__name__)
