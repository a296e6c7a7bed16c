"""What identifies a training run: its data, params and code.

The same identity keys the resume checkpoint and names the MLflow run, so a rerun with the same inputs
resumes (and logs into) the same run, and any change starts a fresh one.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from marsseg.params import flatten, params_hash

TRAINING_PARAM_GROUPS = ("seed", "model", "loss", "train")
PACKAGE_DIR = Path(__file__).resolve().parent


def file_md5(path: Path) -> str:
    """The md5 DVC records for a file output."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_md5() -> str:
    """Hash of the library and the train stage script."""
    digest = hashlib.md5()
    files = sorted(PACKAGE_DIR.rglob("*.py")) + [PACKAGE_DIR.parent / "stages" / "train.py"]
    for path in files:
        if path.is_file():
            digest.update(path.relative_to(PACKAGE_DIR.parent).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass
class RunIdentity:
    training_params: dict
    data_md5: dict[str, str]
    code: str

    @classmethod
    def of(cls, params: dict, data_files: list[Path]) -> "RunIdentity":
        training_params = {key: params[key] for key in TRAINING_PARAM_GROUPS if key in params}
        return cls(training_params, {str(p): file_md5(p) for p in data_files}, code_md5())

    @property
    def params_hash(self) -> str:
        return params_hash(self.training_params)

    @property
    def key(self) -> str:
        return params_hash({"params": self.training_params, "data": self.data_md5, "code": self.code}, length=16)

    @property
    def flat_params(self) -> dict:
        return flatten(self.training_params)

    def run_name(self, params: dict) -> str:
        model, loss = params["model"], params["loss"]
        return f"{model['arch']}-{loss['name']}-d{model['depth']}-{self.params_hash}"

    def tags(self, params: dict, preset: str | None = None) -> dict[str, str]:
        from marsseg.tracking import git_state

        tags = {
            **git_state(),
            "params_hash": self.params_hash,
            "code_md5": self.code,
            **{f"data_md5.{Path(name).name}": md5 for name, md5 in self.data_md5.items()},
            "arch": params["model"]["arch"],
            "loss": params["loss"]["name"],
        }
        if os.environ.get("DVC_EXP_NAME"):
            tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
        preset = preset or os.environ.get("MARSSEG_PRESET")
        if preset:
            tags["preset"] = str(preset)
        return tags
