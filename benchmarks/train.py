"""Train-stage throughput against a bare ``model.fit`` on in-memory arrays, and against the machine's peak.

    .venv/bin/python benchmarks/train.py [--images 512] [--batch 32] [--rounds 2]

Same model (params.yaml's ``model``), loss, optimiser, metrics and batch size in both; each measured
over one full epoch after a warm-up epoch, alternating the two ``--rounds`` times (best kept) so a noisy
neighbour hits both alike. Achieved GFLOP/s counts 3x the forward FLOPs per image (forward + backward),
compared with a measured float32 matmul (sgemm) peak in the same process.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from marsseg.losses import build_loss, validate_loss_params  # noqa: E402
from marsseg.models import build_model, validate_model_params  # noqa: E402
from marsseg.models.flops import forward_gflops_per_image  # noqa: E402
from marsseg.params import load_params, section  # noqa: E402
from marsseg.synthetic import generate  # noqa: E402
from marsseg.training import iou_metrics, train_dataset  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.last = time.perf_counter() - self.started


def compiled_model(model_params, loss_params, seed):
    keras.utils.set_random_seed(seed)
    model = build_model(model_params, seed=seed)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4), loss=build_loss(loss_params),
                  metrics=iou_metrics())
    return model


def pipeline_epoch_seconds(model, images, masks, batch):
    timer = EpochTimer()
    model.fit(train_dataset(images, masks, batch, seed=0, first_epoch=0, epochs=2),
              steps_per_epoch=-(-len(images) // batch), epochs=2, shuffle=False, callbacks=[timer], verbose=0)
    return timer.last


def bare_epoch_seconds(model, images, masks, batch):
    timer = EpochTimer()
    x = (images.astype(np.float32) / 255.0)[..., None]
    model.fit(x, masks.astype(np.int32), batch_size=batch, epochs=2, shuffle=True, callbacks=[timer], verbose=0)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    params = load_params()
    model_params = validate_model_params(section(params, "model"))
    loss_params = validate_loss_params(section(params, "loss"))
    data = generate(n_train=args.images, n_test=1, outlier_fraction=0.0, seed=0)
    images, masks = data.train_images, data.train_masks

    peak = sgemm_peak_gflops()
    timings = {"pipeline": [], "bare fit": []}
    for _ in range(args.rounds):
        timings["bare fit"].append(bare_epoch_seconds(compiled_model(model_params, loss_params, 0), images, masks, args.batch))
        timings["pipeline"].append(pipeline_epoch_seconds(compiled_model(model_params, loss_params, 0), images, masks, args.batch))
    gflops = forward_gflops_per_image(compiled_model(model_params, loss_params, 0))

    print(f"model {model_params['arch']} depth {model_params['depth']} base {model_params['base_filters']} "
          f"norm {model_params['norm']}; {args.images} images, batch {args.batch}; "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads; "
          f"forward {gflops:.3f} GFLOP/image; sgemm peak {peak:.1f} GFLOP/s")
    print("| input | images/s | training GFLOP/s | % of sgemm peak |")
    print("|---|---|---|---|")
    rate = {}
    for name, seconds in timings.items():
        rate[name] = args.images / min(seconds)
        achieved = 3 * gflops * rate[name]
        print(f"| {name} | {rate[name]:.1f} | {achieved:.1f} | {100 * achieved / peak:.0f}% |")
    print(f"pipeline / bare fit throughput ratio: {rate['pipeline'] / rate['bare fit']:.3f}")


if __name__ == "__main__":
    main()
