"""The configuration layer: every mistake in params.yaml is one line naming the key, before any work."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from marsseg import config as config_module
from marsseg.augment import AUGMENTATIONS
from marsseg.config import AugmentConfig, Config, LossConfig, MODEL_FLAGS, load_config, validate, validate_group
from marsseg.errors import UserError
from marsseg.models.registry import ARCHITECTURES

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_change(path: str, value=None, delete: bool = False) -> dict:
    params = copy.deepcopy(PARAMS)
    *parents, last = path.split(".")
    node = params
    for key in parents:
        node = node[key]
    if delete:
        del node[last]
    else:
        node[last] = value
    return params


def error_of(params: dict) -> str:
    with pytest.raises(UserError) as caught:
        validate(params)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_committed_params_are_valid():
    cfg = load_config(ROOT / "params.yaml")
    assert cfg.model.arch == PARAMS["model"]["arch"]
    assert len(cfg.model.dropout) == cfg.model.depth + 1


@pytest.mark.parametrize("typo, suggestion", [
    ("train.epoch", "train.epochs"),
    ("data.sourse", "data.source"),
    ("evaluate.overlay_wrost", "evaluate.overlay_worst"),
    ("submit.bach_size", "submit.batch_size"),
    ("mlflow.experimnt", "mlflow.experiment"),
    ("data.synthetic.n_trian", "data.synthetic.n_train"),
    ("sed", "seed"),
    ("clean.perplexty", "clean.perplexity"),
    ("model.dept", "model.depth"),
])
def test_an_unknown_key_in_any_group_names_it_and_the_nearest_known_key(typo, suggestion):
    message = error_of(with_change(typo, 3))
    assert f"unknown key {typo};" in message
    assert f"did you mean {suggestion}?" in message


def test_an_unknown_augmentation_suggests_the_registered_one():
    message = error_of(with_change("augment.p.hflp", 0.5))
    assert "params.yaml: unknown augmentation augment.p.hflp; did you mean augment.p.hflip?" in message


@pytest.mark.parametrize("path, value, expected", [
    ("train.epochs", "3", "train.epochs"),
    ("train.epochs", 0, "greater than or equal to 1"),
    ("model.se", 1, "model.se"),
    ("model.arch", "unet4", "did you mean 'unet'"),
    ("model.depth", 7, "allowed: 3, 4, 5"),
    ("model.norm", "layer", "allowed: 'batch'"),
    ("loss.name", "focal+dise", "did you mean 'dice'"),
    ("loss.class_weights", [1, 1], "model" if False else "loss.class_weights"),
    ("split.val_fraction", 1.0, "split.val_fraction"),
    ("augment.copies_min", 9, "augment.copies_min (9) is above augment.copies_max"),
    ("augment.cutmix_area", [0.3, 0.1], "low <= high"),
    ("clean.rules", ["embedding", "embedding"], "twice"),
    ("data.source", "csv", "unknown data source 'csv'"),
    ("seed", -1, "seed"),
    ("train.learning_rate", float("inf"), "train.learning_rate is inf; Input should be a finite number"),
    ("loss.smooth", float("nan"), "loss.smooth is nan"),
    ("augment.gamma_limit", [0.8, float("inf")], "augment.gamma_limit.1 is inf; Input should be a finite number"),
])
def test_a_bad_value_is_one_line_naming_the_key(path, value, expected):
    assert expected in error_of(with_change(path, value))


def test_a_missing_key_is_an_error_not_a_silent_default():
    assert "missing key train.epochs" in error_of(with_change("train.epochs", delete=True))


def test_params_yaml_is_the_only_place_defaults_live():
    for name, field in Config.model_fields.items():
        assert field.is_required(), name
        schema = field.annotation
        if isinstance(schema, type) and hasattr(schema, "model_fields"):
            assert all(f.is_required() for f in schema.model_fields.values()), name


def test_each_group_is_validated_once_per_load(monkeypatch):
    calls = []
    original = config_module.Config.model_validate
    monkeypatch.setattr(config_module.Config, "model_validate", classmethod(
        lambda cls, raw: calls.append(1) or original(raw)))
    load_config(ROOT / "params.yaml")
    assert len(calls) == 1


# ---------------------------------------------------------------- registries agree with params.yaml

def test_architecture_registry_and_model_options_agree():
    for arch in ARCHITECTURES.values():
        assert set(arch.forces) <= set(MODEL_FLAGS), arch.name
        forced = validate_group("model", {**PARAMS["model"], "arch": arch.name})
        assert all(getattr(forced, key) == value for key, value in arch.forces.items())


def test_augmentation_registry_and_params_yaml_agree():
    assert set(PARAMS["augment"]["p"]) == set(AUGMENTATIONS)
    declared = {param for item in AUGMENTATIONS.values() for param in item.reads}
    copy_counts = {"copies_min", "copies_max", "rare_copies_min", "rare_copies_max", "p"}
    assert declared <= set(AugmentConfig.model_fields)
    assert set(AugmentConfig.model_fields) - copy_counts == declared, "an augment.* param no augmentation reads"


def test_loss_registry_and_params_yaml_agree():
    from marsseg.losses import LOSSES

    declared = {param for loss in LOSSES.values() for param in getattr(loss, "reads", ())}
    assert declared <= set(LossConfig.model_fields)
    assert set(LossConfig.model_fields) - {"name", "sum_weights"} == declared, "a loss.* param no loss reads"


# ---------------------------------------------------------------- stages and commands

def run_stage(tmp_path: Path, stage: str, params: dict, *python_flags: str) -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, *python_flags, str(ROOT / "stages" / f"{stage}.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_a_stage_with_a_typo_stops_with_one_line_and_status_2(tmp_path):
    result = run_stage(tmp_path, "ingest", with_change("train.epoch", 3))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        result.stderr.strip()] and "unknown key train.epoch; did you mean train.epochs?" in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_stage_outside_the_environment_says_what_to_do():
    # As DVC runs it from the checkout, but with -S: no site-packages, like a system Python without the project.
    result = subprocess.run([sys.executable, "-S", "-m", "stages.ingest"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert "source .venv/bin/activate" in result.stderr and "Traceback" not in result.stderr


def test_the_cli_reports_a_bad_preset_in_one_line(tmp_path):
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "bad.yaml").write_text("model:\n  depht: 4\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    result = subprocess.run([sys.executable, "-m", "marsseg.cli", "exp", "bad"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: presets/bad.yaml: unknown key model.depht; did you mean model.depth? "
                                     "known: " + ", ".join(PARAMS["model"]))


def test_marsseg_check_accepts_the_committed_params():
    result = subprocess.run([sys.executable, "-m", "marsseg.cli", "check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "params.yaml: OK" in result.stdout


# ---------------------------------------------------------------- inputs a user can get wrong

def write_course_file(path: Path, images: np.ndarray, masks: np.ndarray) -> None:
    np.savez(path, training_set=np.stack([images, masks], axis=1), test_set=images[:2])


def test_float_images_scaled_to_0_1_are_rescaled_not_rounded(tmp_path, capsys):
    from marsseg.sources import load_npz

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(4, 64, 128)).astype(np.uint8)
    masks = rng.integers(0, 5, size=(4, 64, 128)).astype(np.float32)
    write_course_file(tmp_path / "course.npz", grey.astype(np.float32) / 255.0, masks)
    data = load_npz(tmp_path / "course.npz")
    assert np.array_equal(data.images, grey)
    assert "floats in [0, 1]" in capsys.readouterr().out


def test_an_all_duplicates_data_set_says_so():
    from marsseg.datasets import LabelledSet
    from marsseg.split import split_dataset

    image = np.random.default_rng(0).integers(0, 256, size=(64, 128)).astype(np.uint8)
    data = LabelledSet(np.stack([image] * 12), np.ones((12, 64, 128), np.uint8), np.arange(12))
    with pytest.raises(UserError, match="all 12 rows are copies of one picture"):
        split_dataset(data, load_config(ROOT / "params.yaml").split, seed=0, where="data/clean/dataset.npz")


@pytest.mark.slow
def test_a_data_file_anywhere_on_disk_is_a_dependency_of_ingest(tmp_path):
    from conftest import copy_project, run, stages_run

    rng = np.random.default_rng(0)
    course = tmp_path / "elsewhere" / "course.npz"
    course.parent.mkdir()
    write_course_file(course, rng.integers(0, 256, (6, 64, 128)).astype(np.uint8),
                      rng.integers(0, 5, (6, 64, 128)).astype(np.uint8))
    root = copy_project(tmp_path / "project", {"data": {"source": "npz", "path": str(course)}})
    assert stages_run(run(root, "dvc", "repro", "ingest").stdout) == {"ingest"}
    assert stages_run(run(root, "dvc", "repro", "ingest").stdout) == set()
    write_course_file(course, rng.integers(0, 256, (6, 64, 128)).astype(np.uint8),
                      rng.integers(0, 5, (6, 64, 128)).astype(np.uint8))
    assert stages_run(run(root, "dvc", "repro", "ingest").stdout) == {"ingest"}


def test_an_unreachable_tracking_server_from_the_environment_is_named_as_such(monkeypatch):
    from marsseg.tracking import Tracker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    cfg = load_config(ROOT / "params.yaml")
    with pytest.raises(UserError, match=r"^MLFLOW_TRACKING_URI http://127\.0\.0\.1:9: tracking server unreachable"):
        Tracker(cfg.mlflow)


def test_an_optional_unreachable_tracker_warns_once(monkeypatch, capsys):
    from marsseg.tracking import Tracker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    cfg = validate(with_change("mlflow.required", False))
    assert not Tracker(cfg.mlflow).enabled
    assert capsys.readouterr().err.count("warning:") == 1


def test_marsseg_exp_without_a_preset_names_the_known_ones(capsys):
    from marsseg.cli import main

    assert main(["exp"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: marsseg exp: name a preset") and "cpu-small" in err and "\n" not in err


def test_marsseg_help_lists_every_command_with_its_summary(capsys):
    from marsseg.cli import COMMANDS, main

    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    assert stopped.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the summaries
    assert all(name in out for name in COMMANDS)
    assert "with 95% intervals" in out  # a literal % in a summary is not taken for a format


@pytest.mark.parametrize("port", ["0", "99999", "-1", "x"])
def test_marsseg_ui_refuses_a_bad_port_in_one_line_before_starting_mlflow(port, capsys):
    from marsseg.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["ui", "--port", port])
    assert stopped.value.code == 2
    assert f"argument --port: {port!r} is not a port number (1-65535)" in capsys.readouterr().err
