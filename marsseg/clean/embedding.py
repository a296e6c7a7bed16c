"""PCA of the standardised features and the 2-D t-SNE map the ``embedding`` rule groups rows on."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from marsseg.clean.fallback import announce



@dataclass
class Embedding:
    xy: np.ndarray  # (n, 2) coordinates to draw
    method: str  # "tsne", or the fallback: "pca" (too few rows) or "none" (identical features)
    perplexity: float | None = None  # the perplexity t-SNE used (None when it did not run)

    @property
    def is_map(self) -> bool:
        return self.method == "tsne"


def reduce(features: np.ndarray, components: int, seed: int) -> np.ndarray:
    """PCA to at most ``components`` dimensions (fewer when there are fewer rows or columns)."""
    n, d = features.shape
    k = min(components, n, d)
    if k < 1 or not np.ptp(features, axis=0).any():
        return np.zeros((n, max(k, 1)))
    return PCA(n_components=k, svd_solver="full", random_state=seed).fit_transform(features)


def embed(features: np.ndarray, config, seed: int) -> Embedding:
    """The 2-D t-SNE map of the PCA features, or a documented fallback."""
    n = len(features)
    if not np.ptp(features, axis=0).any():
        announce(f"all {n} images have identical features: no t-SNE map, the embedding rule is skipped")
        return Embedding(np.zeros((n, 2)), "none")
    if n < config.min_embedding_rows:
        announce(f"{n} rows is below clean.min_embedding_rows={config.min_embedding_rows}: no t-SNE map "
                      "(the first two principal components are drawn instead), the embedding rule is skipped")
        xy = np.zeros((n, 2))
        xy[:, :min(2, features.shape[1])] = features[:, :2]
        return Embedding(xy, "pca")
    perplexity = float(config.perplexity)
    limit = (n - 1) / 3
    if perplexity > limit:
        announce(f"clean.perplexity={config.perplexity:g} is too large for {n} rows; using {limit:.1f} "
                      "((rows - 1) / 3)")
        perplexity = limit
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                max_iter=config.tsne_iterations, method="barnes_hut", random_state=seed, n_jobs=config.n_jobs)
    return Embedding(tsne.fit_transform(features), "tsne", perplexity)

