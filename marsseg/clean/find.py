"""Running every enabled rule on a labelled set, and dropping the rows they caught."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from threadpoolctl import threadpool_limits

from marsseg import IMAGE_SHAPE
from marsseg.clean.embedding import embed, reduce
from marsseg.clean.features import feature_views, image_features, standardise
from marsseg.clean.report import CleanReport
from marsseg.clean.rules import RULES, Evidence
from marsseg.datasets import LabelledSet
from marsseg.errors import UserError

REFERENCE_STREAM = 1  # the random stream that samples test references (seed, stream)


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[step] = timings.get(step, 0.0) + time.perf_counter() - start


def find_outliers(data: LabelledSet, config, seed: int) -> CleanReport:
    """Run every enabled rule on the training rows of ``data``."""
    # BLAS (PCA) and OpenMP (t-SNE's gradient) start one thread per core by default; on a shared
    # machine their waiting threads spin, and 2 threads on 2 busy cores ran t-SNE 20x slower than 1.
    # The results do not depend on the thread count.
    with threadpool_limits(limits=config.n_jobs):
        return _find_outliers(data, config, seed)


def _find_outliers(data: LabelledSet, config, seed: int) -> CleanReport:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    references = reference_images(data.test_images, config.test_references, seed)
    with _timed(timings, "features"):
        pictures = np.concatenate([data.images, references]) if len(references) else data.images
        views = feature_views(standardise(image_features(pictures, workers=config.n_jobs)))
    with _timed(timings, "pca"):
        reduced = reduce(views[0].values, config.pca_components, seed)
    with _timed(timings, "tsne"):
        embedding = embed(reduced, config, seed)
    evidence = Evidence(data.images, data.masks, embedding, views)
    with _timed(timings, "rules"):
        results = {rule: RULES[rule](evidence, config) for rule in config.rules}
    timings["total"] = time.perf_counter() - start
    return CleanReport(data.index.copy(), results, embedding, timings, references=len(references))


def reference_images(test_images: np.ndarray | None, limit: int, seed: int) -> np.ndarray:
    """The test images the ``embedding`` rule measures the training rows among: all of them, or a seeded
    sample of ``limit`` (in file order). They are terrain of the same kind, unlabelled and never removed;
    a rare real view (a horizon, rover hardware) has more of its kind among them, while a picture that
    is not terrain has none, or forms a group with its like in both sets and is found as one."""
    if test_images is None or limit == 0:
        return np.empty((0, *IMAGE_SHAPE), np.uint8)
    if len(test_images) <= limit:
        return test_images
    rows = np.random.default_rng([seed, REFERENCE_STREAM]).choice(len(test_images), limit, replace=False)
    return test_images[np.sort(rows)]


def remove_outliers(data: LabelledSet, report: CleanReport) -> LabelledSet:
    """The rows no rule caught (``index`` and ``test_images`` carried along)."""
    kept = np.flatnonzero(~report.removed)
    if kept.size == 0:
        counts = ", ".join(f"{rule} {int(r.flagged.sum())}" for rule, r in report.results.items())
        raise UserError(f"clean: every one of the {len(data)} training rows was flagged ({counts}); nothing is left "
                        "to train on - check the input data or loosen clean.rules and its thresholds")
    return data.subset(kept)
