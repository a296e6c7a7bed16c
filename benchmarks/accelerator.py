"""Benchmark: a preset trained by Keras's own ``fit`` on any Keras backend, for a GPU box without TensorFlow.

    KERAS_BACKEND=jax python benchmarks/accelerator.py [--preset seed-best] [--data data] [--minutes 7]
        [--precisions float32,float16,bfloat16] [--train-precision auto] [--out result.json]

The train stage feeds its batches through tf.data and runs under a tf.distribute strategy, so it needs
TensorFlow; the model, the losses, the optimiser, the learning-rate schedule and the IoU metrics are Keras 3
code that runs on the JAX and PyTorch backends too. On a GPU machine that has JAX or PyTorch but no GPU
build of TensorFlow, this script measures what a preset does there, on the train stage's own inputs:
``DATA/augment/train.npz`` and ``DATA/split/val.npz`` as ``dvc repro augment`` writes them (run that here
with the data settings you want, then take the two files along). Only params.yaml's ``seed``, ``model``,
``loss``, ``train`` and ``evaluate`` groups are read, so neither PIL nor albumentations is needed there.

1. Throughput: images/s of training steps under each of ``--precisions`` (a fresh model each; one
   warm-up epoch over ``--throughput-images`` rows, which includes compiling, then the same epoch timed,
   best of ``--rounds``), and the TFLOP/s that makes (3x the forward FLOPs per image).
2. A training run under ``--train-precision`` (``auto`` as in the train stage: float16 on a GPU):
   the preset's epochs, batch size, schedule and early stopping, keeping the best epoch by val mIoU. The
   run as a whole has ``--minutes``: training stops after the epoch that ends past them, and says so
   (leave one epoch and the scoring as slack in any outer time limit). With ``--out`` every epoch's row
   is written at once, so a run killed from outside keeps its curve.
3. The kept epoch scored as the evaluate stage scores it: val mIoU, per-class IoU, flip TTA, 95%
   bootstrap intervals over validation images (``evaluate.bootstrap`` resamples).

What differs from the train stage: each epoch's row order is Keras's seeded shuffle, not the stage's
(seed, epoch) order; no checkpoint to resume from, no MLflow run; ``train.ema`` only on the TensorFlow
backend (its weight swaps inside ``fit`` need TensorFlow's variables).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import marsseg  # noqa: F401  (first: it sets TensorFlow's environment should the backend be TensorFlow)
import keras
import numpy as np

from arguments import positive_int
from marsseg.config import read_params, validate_group
from marsseg.datasets import load_labelled
from marsseg.errors import UserError, stage_main
from marsseg.io import write_json
from marsseg.losses import build_loss
from marsseg.metrics import per_image_confusion, scores_with_intervals
from marsseg.models import build_model
from marsseg.models.flops import forward_gflops_per_image
from marsseg.predict import predict_labels
from marsseg.presets import merged, preset_path, read_preset
from marsseg.train import ema, schedule
from marsseg.train.loop import iou_metrics, optimizer
from marsseg.train.data import steps_per_epoch
from marsseg.train.precision import POLICIES, cpu_has_bfloat16, resolve

ROOT = Path(__file__).resolve().parents[1]


def accelerator() -> str:
    """What the backend computes on: the GPU's name, or 'cpu'."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return device.device_kind if device.platform == "gpu" else "cpu"
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "cpu"


def compiled(cfg, policy: str, steps: int):
    """The preset's model under ``policy``, compiled as the train stage compiles it."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model(cfg.model, seed=cfg.seed)
        model.compile(optimizer=optimizer(cfg.train, steps), loss=build_loss(cfg.loss),
                      metrics=iou_metrics())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


class EpochClock(keras.callbacks.Callback):
    """Seconds per epoch; stops the fit after the epoch that ends past ``deadline`` (a ``perf_counter`` time)."""

    def __init__(self, deadline: float = float("inf")):
        super().__init__()
        self.deadline, self.seconds, self.out_of_time = deadline, [], False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.epoch_started)
        if time.perf_counter() > self.deadline:
            self.out_of_time = self.model.stop_training = True


class KeepBest(keras.callbacks.Callback):
    """The weights of the epoch with the best val mIoU (the averaged ones under weight averaging), in memory;
    ``on_epoch(history)`` after every epoch (the results file: a run killed from outside keeps its epochs)."""

    def __init__(self, on_epoch=lambda history: None):
        super().__init__()
        self.best_miou, self.best_epoch, self.weights, self.history = -1.0, 0, None, []
        self.on_epoch = on_epoch

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        self.history.append(row)
        shown = ("loss", "miou", "val_loss", "val_miou", "learning_rate")
        print(f"epoch {epoch + 1}: " + ", ".join(f"{k} {row[k]:.4g}" for k in shown if k in row), flush=True)
        if row.get("val_miou", -1.0) > self.best_miou:
            self.best_miou, self.best_epoch = row["val_miou"], epoch + 1
            with ema.averaged_weights(self.model):
                self.weights = self.model.get_weights()
        self.on_epoch(self.history)


def throughput(cfg, policy: str, images: np.ndarray, masks: np.ndarray, rounds: int) -> float:
    """Training images/s under ``policy``: best of ``rounds`` epochs after a warm-up epoch."""
    batch = cfg.train.batch_size
    model = compiled(cfg, policy, steps_per_epoch(len(images), batch))
    clock = EpochClock()
    model.fit(images[..., None], masks, batch_size=batch, epochs=rounds + 1, shuffle=True, callbacks=[clock],
              verbose=0)
    return len(images) / min(clock.seconds[1:])


def train_and_score(cfg, policy: str, train, val, deadline: float, resamples: int, on_epoch) -> dict:
    """Fit until the preset's epochs, early stopping or the epoch that ends past ``deadline``; score the best epoch."""
    batch = cfg.train.batch_size
    steps = steps_per_epoch(len(train.images), batch)
    model = compiled(cfg, policy, steps)
    clock, best = EpochClock(deadline), KeepBest(on_epoch)
    stopping = keras.callbacks.EarlyStopping(monitor="val_miou", mode="max",
                                             patience=cfg.train.early_stopping_patience, verbose=1)
    averaging = [ema.ValidateAveraged()] if cfg.train.ema else []
    started = time.perf_counter()
    model.fit(train.images[..., None], train.masks.astype(np.int32), batch_size=batch, epochs=cfg.train.epochs,
              shuffle=True, validation_data=(val.images[..., None], val.masks.astype(np.int32)),
              callbacks=[*averaging, *schedule.callbacks(cfg.train, steps).values(), clock, stopping, best],
              verbose=0)
    seconds = time.perf_counter() - started
    if best.weights is None:
        raise UserError("training ran no epoch; check train.epochs")
    model.set_weights(best.weights)
    predictions = predict_labels(model, val.images, batch_size=batch, tta=True)
    scores = scores_with_intervals(per_image_confusion(val.masks, predictions.plain), resamples, cfg.seed)
    scores.update(scores_with_intervals(per_image_confusion(val.masks, predictions.tta), resamples, cfg.seed,
                                        prefix="val_tta_"))
    return {"policy": policy, "train_seconds": seconds, "epochs_run": len(best.history), "best_epoch": best.best_epoch,
            "stopped_by_time": clock.out_of_time, "epoch_seconds": clock.seconds,
            "median_epoch_seconds": float(np.median(clock.seconds)),
            "history": best.history, **scores}


def write_results(path: Path | None, result: dict) -> None:
    if path is not None:
        write_json(path, result)


def precision_list(text: str) -> list[str]:
    """Comma-separated ``train.precision`` values; empty: no throughput measurement."""
    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown precision {unknown[0]!r}; known: {', '.join(POLICIES)}")
    return names


def positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of minutes")
    return value


def load_settings(preset: str | None) -> SimpleNamespace:
    """The groups this run reads (``seed``, ``model``, ``loss``, ``train``, ``evaluate``) of params.yaml with
    presets/PRESET.yaml laid over them, each validated on its own: the data and augment groups are not
    read, so neither PIL nor albumentations has to be installed on the GPU box."""
    os.chdir(ROOT)
    params, source = read_params(), "params.yaml"
    if preset:
        params, source = merged(params, read_preset(preset)), str(preset_path(preset))
    return SimpleNamespace(seed=validate_group("seed", params["seed"], source),
                           **{name: validate_group(name, params[name], source)
                              for name in ("model", "loss", "train", "evaluate")})


@stage_main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="seed-best", help="presets/NAME.yaml over params.yaml ('' for none)")
    parser.add_argument("--data", type=Path, default=Path("data"), help="folder holding augment/train.npz and split/val.npz")
    parser.add_argument("--minutes", type=positive_minutes, default=7.0,
                        help="the whole run's time budget: training stops after the epoch that ends past it")
    parser.add_argument("--precisions", type=precision_list, default=precision_list("float32,float16,bfloat16"),
                        help="throughput under each ('' for none)")
    parser.add_argument("--train-precision", default="auto", choices=["auto", *POLICIES])
    parser.add_argument("--throughput-images", type=positive_int, default=2048)
    parser.add_argument("--rounds", type=positive_int, default=2)
    parser.add_argument("--skip-training", action="store_true", help="throughput only")
    parser.add_argument("--out", type=Path, help="also write the results here (JSON)")
    args = parser.parse_args()
    deadline = time.perf_counter() + args.minutes * 60
    data = args.data if args.data.is_absolute() else Path.cwd() / args.data
    cfg = load_settings(args.preset or None)
    if cfg.train.ema and keras.backend.backend() != "tensorflow":
        raise UserError(f"train.ema: the weight averaging swaps weights inside fit, which only the TensorFlow backend "
                        f"allows (KERAS_BACKEND is {keras.backend.backend()}); use a preset without it, e.g. seed-best")
    train = load_labelled(data / "augment" / "train.npz")
    val = load_labelled(data / "split" / "val.npz")
    keras.utils.set_random_seed(cfg.seed)

    device = accelerator()
    gflops = forward_gflops_per_image(build_model(cfg.model, seed=cfg.seed))
    print(f"backend {keras.backend.backend()} (keras {keras.__version__}), device {device}; preset "
          f"{args.preset or 'none'}: {cfg.model.arch} depth {cfg.model.depth}, {cfg.model.base_filters} filters, "
          f"{gflops:.2f} forward GFLOP/image; {len(train)} training rows, {len(val)} validation images", flush=True)
    result = {"backend": keras.backend.backend(), "keras": keras.__version__, "device": device,
              "preset": args.preset, "train_rows": len(train), "val_images": len(val),
              "forward_gflops_per_image": gflops, "throughput": {}}

    rows = np.random.default_rng(cfg.seed).permutation(len(train))[:args.throughput_images]
    if args.precisions:
        print("| precision | policy | training images/s | TFLOP/s (3x forward) |\n|---|---|---|---|", flush=True)
    for precision in args.precisions:
        policy = resolve(precision, device != "cpu", cpu_has_bfloat16())
        rate = throughput(cfg, policy, train.images[rows], train.masks[rows].astype(np.int32), args.rounds)
        result["throughput"][precision] = rate
        print(f"| {precision} | {policy} | {rate:.0f} | {rate * 3 * gflops / 1e3:.3g} |", flush=True)

    if not args.skip_training:
        policy = resolve(args.train_precision, device != "cpu", cpu_has_bfloat16())

        def save_epochs(history):
            write_results(args.out, {**result, "training": {"policy": policy, "history": history}})

        run = train_and_score(cfg, policy, train, val, deadline, cfg.evaluate.bootstrap, save_epochs)
        result["training"] = run
        stop = ("the time budget" if run["stopped_by_time"] else
                "its last epoch" if run["epochs_run"] == cfg.train.epochs else "early stopping")
        print(f"trained under {policy}: {run['epochs_run']} epochs in {run['train_seconds']:.0f} s (the first, "
              f"compiling, {run['epoch_seconds'][0]:.0f} s; median {run['median_epoch_seconds']:.1f} s), stopped by "
              f"{stop}; best epoch {run['best_epoch']}")
        print(f"val mIoU {run['val_miou']:.4f} [{run['val_miou_ci_low']:.4f}, {run['val_miou_ci_high']:.4f}], "
              f"with flip TTA {run['val_tta_miou']:.4f} [{run['val_tta_miou_ci_low']:.4f}, "
              f"{run['val_tta_miou_ci_high']:.4f}]; IoU soil {run['val_iou_soil']:.3f}, bedrock "
              f"{run['val_iou_bedrock']:.3f}, sand {run['val_iou_sand']:.3f}, big rock {run['val_iou_big_rock']:.3f}")
    write_results(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
