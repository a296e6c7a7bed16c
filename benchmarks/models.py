"""Size and speed of every architecture at the ``model`` params of params.yaml (arch overridden).

    .venv/bin/python benchmarks/models.py [--archs unet unetpp] [--batch 32] [--batches 3] [--profiler]

Per arch: parameter count, GFLOPs per image, train and predict images/s. FLOPs are counted
analytically: 2 x the multiply-accumulates of every Conv2D / Dense layer (a nested model, as in
patch mode, counted once per call); normalisation, activations, pooling, upsampling and the
elementwise gates are left out, as is the backward pass. ``--profiler`` adds the TensorFlow
profiler's count of the frozen inference graph (every float op) as a cross-check.
Speeds use random data: a warm-up batch (graph tracing) first, then ``--batches`` timed ones.
"""
from __future__ import annotations

import argparse
import time

import marsseg  # noqa: F401  (first: it sets TensorFlow's environment before TensorFlow loads)
import keras
import numpy as np

from arguments import positive_int
from marsseg import IMAGE_SHAPE, NUM_CLASSES
from marsseg.losses import build_loss
from marsseg.models import ARCHITECTURES, build_model
from marsseg.models.flops import model_macs
from marsseg.config import load_config, validate_group
from marsseg.errors import stage_main

INPUT_SHAPE = (*IMAGE_SHAPE, 1)


def profiler_flops(model: keras.Model) -> int:
    """Float ops of the frozen single-image inference graph, as tf.compat.v1.profiler counts them."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    forward = tf.function(lambda x: model(x, training=False))
    frozen = convert_variables_to_constants_v2(forward.get_concrete_function(tf.TensorSpec((1, *INPUT_SHAPE))))
    options = tf.compat.v1.profiler.ProfileOptionBuilder(
        tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    ).with_empty_output().build()
    return tf.compat.v1.profiler.profile(graph=frozen.graph, cmd="op", options=options).total_float_ops


def images_per_second(step, images, masks, batches: int) -> float:
    step(images, masks)  # warm-up: traces the graph
    start = time.perf_counter()
    for _ in range(batches):
        step(images, masks)
    return batches * len(images) / (time.perf_counter() - start)


def benchmark(arch: str, model_params: dict, loss, batch: int, batches: int, profiler: bool) -> dict:
    keras.backend.clear_session()
    model = build_model(validate_group("model", {**model_params, "arch": arch}), INPUT_SHAPE, NUM_CLASSES, seed=0)
    row = {"arch": arch, "params": model.count_params(), "gflops": 2 * model_macs(model) / 1e9}
    if profiler:
        row["profiler_gflops"] = profiler_flops(model) / 1e9
    rng = np.random.default_rng(0)
    images = rng.random((batch, *INPUT_SHAPE), dtype=np.float32)
    masks = rng.integers(0, NUM_CLASSES, size=(batch, *IMAGE_SHAPE), dtype=np.uint8)
    model.compile(optimizer="adam", loss=build_loss(loss))
    row["train_img_s"] = images_per_second(model.train_on_batch, images, masks, batches)
    row["predict_img_s"] = images_per_second(lambda x, _: model.predict_on_batch(x), images, masks, batches)
    return row


def print_table(rows: list[dict]) -> None:
    columns = [("arch", "arch", "{}"), ("params", "params", "{:,}"), ("gflops", "GFLOPs/img", "{:.3f}")]
    if "profiler_gflops" in rows[0]:
        columns.append(("profiler_gflops", "GFLOPs/img (tf profiler)", "{:.3f}"))
    columns += [("train_img_s", "train img/s", "{:.1f}"), ("predict_img_s", "predict img/s", "{:.1f}")]
    print("| " + " | ".join(title for _, title, _ in columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in columns) + " |")


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--archs", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--batch", type=positive_int, default=32)
    parser.add_argument("--batches", type=positive_int, default=3, help="timed batches per arch, after one warm-up")
    parser.add_argument("--profiler", action="store_true", help="cross-check FLOPs with the TF profiler")
    args = parser.parse_args()

    cfg = load_config(args.params)
    model_params, loss_params = cfg.group_dict("model"), cfg.loss
    import tensorflow as tf

    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(f"model params: {model_params}; loss: {loss_params.name}; batch {args.batch}; {device}; "
          f"keras {keras.__version__}, tensorflow {tf.__version__}")
    rows = [benchmark(arch, model_params, loss_params, args.batch, args.batches, args.profiler) for arch in args.archs]
    print_table(rows)


if __name__ == "__main__":
    main()
