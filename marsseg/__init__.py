"""marsseg: the library behind the DVC stages of the Mars terrain segmentation pipeline."""

IMAGE_SHAPE = (64, 128)
NUM_CLASSES = 5
CLASS_NAMES = ("background", "soil", "bedrock", "sand", "big_rock")
# The competition metric ignores class 0 (background / unlabelled).
SCORED_CLASSES = (1, 2, 3, 4)

import os as _os

# TensorFlow's C++ start-up chatter buries the stage output; warnings and errors still show.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI / BF16 / AMX; on an
# AVX2-only CPU it falls back to Eigen's, and the default model trained 1.8x slower there
# (benchmarks/train.py --onednn-ratio). Set before TensorFlow loads; a user's TF_ENABLE_ONEDNN_OPTS=0 wins.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
