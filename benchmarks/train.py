"""Train-stage throughput against a bare ``model.fit`` on in-memory arrays, and against the machine's peak.

    .venv/bin/python benchmarks/train.py [--preset cpu-best] [--images 512] [--batch 32] [--rounds 2] [--no-bf16]
    .venv/bin/python benchmarks/train.py --onednn-ratio [--images 512] [--rounds 3]

Same model and loss (params.yaml's, or ``--preset``'s laid over them), optimiser, metrics and batch size
in both; each measured over one full epoch after a warm-up epoch, alternating the two ``--rounds`` times (best kept) so a noisy
neighbour hits both alike. Achieved GFLOP/s counts 3x the forward FLOPs per image (forward + backward),
compared with a measured float32 matmul (sgemm) peak in the same process.

The bf16 row runs the train-stage pipeline under mixed bfloat16 (``train.precision: bfloat16``); it is
skipped, with a note, on a CPU that lists none of avx512_bf16 / amx_bf16 (emulated bfloat16 only
measures the emulation) unless ``--force-bf16``.

``--onednn-ratio`` measures only the train-stage pipeline, in child processes with TensorFlow's oneDNN
kernels off and on (``TF_ENABLE_ONEDNN_OPTS`` is read when TensorFlow loads, so one process cannot
do both), alternating ``--rounds`` times, and prints the speed-up. ``import marsseg`` turns them on
unless the variable is set; TensorFlow itself does so only on CPUs with AVX-512 VNNI / BF16 / AMX.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

import marsseg  # noqa: F401  (first: it sets TensorFlow's environment before TensorFlow loads)
import keras
import numpy as np
import tensorflow as tf

from arguments import positive_int
from marsseg.config import load_config, read_params, validate
from marsseg.errors import stage_main
from marsseg.losses import build_loss
from marsseg.models import build_model
from marsseg.models.flops import forward_gflops_per_image
from marsseg.presets import load_preset, merged
from marsseg.synthetic import generate
from marsseg.train import precision
from marsseg.train.data import steps_per_epoch, train_dataset
from marsseg.train.loop import iou_metrics


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.last = time.perf_counter() - self.started


def compiled_model(cfg, policy: str = "float32"):
    keras.mixed_precision.set_global_policy(policy)
    model = build_model(cfg.model, seed=cfg.seed)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4), loss=build_loss(cfg.loss),
                  metrics=iou_metrics())
    keras.mixed_precision.set_global_policy("float32")
    return model


def pipeline_epoch_seconds(model, images, masks, batch):
    timer = EpochTimer()
    model.fit(train_dataset(images, masks, batch, seed=0, first_epoch=0, epochs=2),
              steps_per_epoch=steps_per_epoch(len(images), batch), epochs=2, shuffle=False, callbacks=[timer],
              verbose=0)
    return timer.last


def bare_epoch_seconds(model, images, masks, batch):
    timer = EpochTimer()
    # Raw grey levels, as the pipeline feeds them: the model scales them itself.
    model.fit(images[..., None], masks.astype(np.int32), batch_size=batch, epochs=2, shuffle=True, callbacks=[timer],
              verbose=0)
    return timer.last


def sgemm_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    tf.linalg.matmul(a, b).numpy()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            c = tf.linalg.matmul(a, b)
        c.numpy()
        best = min(best, (time.perf_counter() - start) / repeats)
    return 2 * n**3 / best / 1e9


def onednn_enabled() -> bool:
    from tensorflow.python.util import _pywrap_util_port  # TensorFlow's own check of the variable
    return bool(_pywrap_util_port.IsMklEnabled())


def onednn_ratio(args) -> None:
    """Train-stage pipeline images/s with oneDNN off and on, each in its own process, alternating."""
    rates = {"0": [], "1": []}
    for _ in range(args.rounds):
        for setting in rates:
            child = subprocess.run(
                [sys.executable, __file__, "--pipeline-only", "--images", str(args.images), "--batch", str(args.batch)]
                + (["--preset", args.preset] if args.preset else []),
                env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting}, capture_output=True, text=True, check=True)
            rates[setting].append(float(re.search(r"pipeline images/s ([0-9.]+)", child.stdout).group(1)))
    print(f"{args.images} images, batch {args.batch}, {args.rounds} alternating rounds (one epoch each after a warm-up); "
          f"float32 sgemm peak {sgemm_peak_gflops():.1f} GFLOP/s (oneDNN {'on' if onednn_enabled() else 'off'})")
    print("| TF_ENABLE_ONEDNN_OPTS | pipeline images/s per round | best |")
    print("|---|---|---|")
    for setting, values in rates.items():
        print(f"| {setting} | {' / '.join(f'{v:.1f}' for v in values)} | {max(values):.1f} |")
    print(f"oneDNN on / off speed-up: {max(rates['1']) / max(rates['0']):.2f}x")


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", help="measure presets/<name>.yaml's model and loss (e.g. cpu-best)")
    parser.add_argument("--images", type=positive_int, default=512)
    parser.add_argument("--batch", type=positive_int, default=32)
    parser.add_argument("--rounds", type=positive_int, default=2)
    parser.add_argument("--no-bf16", action="store_true", help="skip the mixed-bfloat16 row")
    parser.add_argument("--force-bf16", action="store_true", help="run the bf16 row even where it is emulated")
    parser.add_argument("--onednn-ratio", action="store_true",
                        help="train-stage pipeline with TensorFlow's oneDNN kernels off and on (child processes)")
    parser.add_argument("--pipeline-only", action="store_true", help=argparse.SUPPRESS)  # --onednn-ratio's child
    args = parser.parse_args()

    cfg = validate(merged(read_params(), load_preset(args.preset))) if args.preset else load_config()
    if args.onednn_ratio:  # after the params check: a bad --preset is one line here, not in each child
        onednn_ratio(args)
        return
    keras.utils.set_random_seed(cfg.seed)
    data = generate(n_train=args.images, n_test=1, outlier_fraction=0.0, seed=0)
    images, masks = data.train_images, data.train_masks
    if args.pipeline_only:
        seconds = pipeline_epoch_seconds(compiled_model(cfg), images, masks, args.batch)
        print(f"pipeline images/s {args.images / seconds:.2f}")
        return

    bf16_note = None
    if args.no_bf16:
        bf16_note = "bf16 row skipped (--no-bf16)"
    elif not (precision.cpu_has_bfloat16() or args.force_bf16 or precision.on_gpu()):
        bf16_note = (f"bf16 row skipped: this CPU lists none of {', '.join(precision.BF16_CPU_FLAGS)} "
                     "(bfloat16 would be emulated; --force-bf16 runs it anyway)")
    runs = {"pipeline": lambda: pipeline_epoch_seconds(compiled_model(cfg), images, masks, args.batch),
            "bare fit": lambda: bare_epoch_seconds(compiled_model(cfg), images, masks, args.batch)}
    if bf16_note is None:
        runs["pipeline, bf16"] = lambda: pipeline_epoch_seconds(
            compiled_model(cfg, "mixed_bfloat16"), images, masks, args.batch)

    peak = sgemm_peak_gflops()
    timings = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            timings[name].append(run())
    gflops = forward_gflops_per_image(compiled_model(cfg))

    model = cfg.model
    print(f"{'preset ' + args.preset + ': ' if args.preset else ''}model {model.arch} depth {model.depth} base {model.base_filters} norm {model.norm}, loss {cfg.loss.name}; "
          f"{args.images} images, batch {args.batch}; "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads, oneDNN {'on' if onednn_enabled() else 'off'}; "
          f"forward {gflops:.3f} GFLOP/image; float32 sgemm peak {peak:.1f} GFLOP/s")
    print("| input | images/s | training GFLOP/s | % of float32 sgemm peak |")
    print("|---|---|---|---|")
    rate = {}
    for name, seconds in timings.items():
        rate[name] = args.images / min(seconds)
        achieved = 3 * gflops * rate[name]
        print(f"| {name} | {rate[name]:.1f} | {achieved:.1f} | {100 * achieved / peak:.0f}% |")
    print(f"pipeline / bare fit throughput ratio: {rate['pipeline'] / rate['bare fit']:.3f}")
    if "pipeline, bf16" in rate:
        print(f"bf16 / float32 pipeline speed-up: {rate['pipeline, bf16'] / rate['pipeline']:.2f}x")
    else:
        print(bf16_note)


if __name__ == "__main__":
    main()
