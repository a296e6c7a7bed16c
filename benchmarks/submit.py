"""Time the submit stage's two halves: predicting the test set and writing + checking the CSV.

    python benchmarks/submit.py [--images 10022] [--threads 2] [--batch-size 64] [--tta]

The model is the default architecture of params.yaml (``marsseg.models.build_model``), untrained:
prediction time does not depend on the weights. Images are seeded random uint8, the size of the
course's test set. TensorFlow is limited to ``--threads`` CPU threads (the 2-core budget).
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from marsseg import IMAGE_SHAPE
from marsseg.config import Config, load_config
from marsseg.errors import stage_main

from arguments import count_or_zero, positive_int

COURSE_TEST_IMAGES = 10022


def default_model(cfg: Config):
    from marsseg.models import build_model

    return build_model(cfg.model, seed=cfg.seed)


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=positive_int, default=COURSE_TEST_IMAGES)
    parser.add_argument("--threads", type=count_or_zero, default=2, help="TensorFlow intra/inter-op threads (0: all)")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="default: submit.batch_size")
    parser.add_argument("--tta", action="store_true", help="flip TTA (two forward passes)")
    args = parser.parse_args()

    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    from marsseg.predict import predict_labels
    from marsseg.submission import check_submission, write_submission

    cfg = load_config()
    batch_size = args.batch_size or cfg.submit.batch_size
    model = default_model(cfg)
    images = np.random.default_rng(0).integers(0, 256, (args.images, *IMAGE_SHAPE), dtype=np.uint8)
    predict_labels(model, images[:batch_size], batch_size, args.tta)  # build and trace once, untimed

    timings, cpu = {}, {}

    def timed(step, work):
        # CPU seconds too: on a shared machine wall time also counts other processes' load.
        wall, process = time.perf_counter(), time.process_time()
        result = work()
        timings[step], cpu[step] = time.perf_counter() - wall, time.process_time() - process
        return result

    labels = timed("predict", lambda: predict_labels(model, images, batch_size, args.tta).final)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "submission.csv"
        timed("write", lambda: write_submission(path, labels))
        timed("check", lambda: check_submission(path, expected_rows=args.images))
        megabytes = path.stat().st_size / 1e6
    total = sum(timings.values())

    print(f"model {model.name}: {model.count_params():,} parameters; {args.images} images; batch {batch_size}; "
          f"tta {'on' if args.tta else 'off'}; {args.threads or 'all'} threads; CSV {megabytes:.0f} MB")
    print(f"{'step':<10}{'wall s':>9}{'cpu s':>9}{'images/s':>10}{'share':>8}")
    for step, seconds in timings.items():
        print(f"{step:<10}{seconds:>9.1f}{cpu[step]:>9.1f}{args.images / seconds:>10.0f}{seconds / total:>8.0%}")
    print(f"{'total':<10}{total:>9.1f}{sum(cpu.values()):>9.1f}{args.images / total:>10.0f}")


if __name__ == "__main__":
    main()
