"""What identifies a training run: its data, params and code.

The same identity keys the resume checkpoint and names the MLflow run, so a rerun with the same inputs
resumes (and logs into) the same run, and any change starts a fresh one. The params groups that shape the
training data are part of it: the same model trained on a subset and on all rows are two runs, with two
names and two ``data_hash`` tags.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from marsseg.params import flatten, params_hash

# Groups that decide which images and masks training sees (``seed`` too, but it is kept apart so that
# runs differing only in their seed can be grouped).
DATA_PARAM_GROUPS = ("data", "clean", "split", "augment")
TRAINING_PARAM_GROUPS = ("seed", *DATA_PARAM_GROUPS, "model", "loss", "train")
PACKAGE_DIR = Path(__file__).resolve().parent
# Keys that choose which stages run, not what a model sees: adding a fold must not rename the others' runs.
NOT_IDENTITY = {"split": ("cv_folds",)}


def training_params_of(params: dict) -> dict:
    """The params groups that identify a training run, without ``NOT_IDENTITY`` keys."""
    chosen = {key: params[key] for key in TRAINING_PARAM_GROUPS if key in params}
    for group, keys in NOT_IDENTITY.items():
        if isinstance(chosen.get(group), dict):
            chosen[group] = {key: value for key, value in chosen[group].items() if key not in keys}
    return chosen




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
    fold: int | None = None  # cross-validation fold (``split.folds``); None: the single split

    @classmethod
    def of(cls, params: dict, data_files: list[Path], fold: int | None = None) -> "RunIdentity":
        return cls(training_params_of(params), {str(p): file_md5(p) for p in data_files}, code_md5(), fold)

    @property
    def params_hash(self) -> str:
        return params_hash(self.training_params)

    @property
    def data_hash(self) -> str:
        """Short hash of the data-shaping params (without the seed): equal data settings, equal hash."""
        return params_hash({key: self.training_params[key] for key in DATA_PARAM_GROUPS if key in self.training_params})

    @property
    def key(self) -> str:
        return params_hash({"params": self.training_params, "data": self.data_md5, "code": self.code}, length=16)

    @property
    def flat_params(self) -> dict:
        # A fold is logged like a param, so the folds of one configuration are separate rows in compare.
        return {**flatten(self.training_params), **({"cv.fold": self.fold} if self.fold is not None else {})}

    def run_name(self, params: dict) -> str:
        model, loss = params["model"], params["loss"]
        fold = "" if self.fold is None else f"-fold{self.fold}"
        return f"{model['arch']}-{loss['name']}-d{model['depth']}-{self.params_hash}{fold}"

    def tags(self, params: dict) -> dict[str, str]:
        from marsseg.tracking import git_state

        tags = {
            **git_state(),
            "params_hash": self.params_hash,
            "data_hash": self.data_hash,
            "code_md5": self.code,
            **{f"data_md5.{Path(name).name}": md5 for name, md5 in self.data_md5.items()},
            "arch": params["model"]["arch"],
            "loss": params["loss"]["name"],
        }
        if os.environ.get("DVC_EXP_NAME"):
            tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
        preset = os.environ.get("MARSSEG_PRESET")  # set by `marsseg exp`
        if preset:
            tags["preset"] = str(preset)
        return tags
