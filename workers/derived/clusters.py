"""k-means clusters of embeddings (faiss), their labels (TF-IDF of the answers) and examples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backend.queue.embeddings import Embeddings
from workers.derived.blocks import blocks, subsample

POINTS_PER_CENTROID = 256  # faiss trains on at most this many points per cluster (its own default)
EXAMPLES = 6


def kmeans(emb: Embeddings, source: str, k: int, iterations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(cluster of every row int32, squared distance to its centroid float32); spherical k-means (cosine)."""
    import faiss

    train = subsample(emb, source, k * POINTS_PER_CENTROID, seed)
    km = faiss.Kmeans(
        train.shape[1],
        k,
        niter=iterations,
        seed=seed,
        spherical=True,
        verbose=False,
        max_points_per_centroid=POINTS_PER_CENTROID,
        min_points_per_centroid=1,
    )
    km.train(train)
    labels = np.empty(len(emb), dtype=np.int32)
    dist = np.empty(len(emb), dtype=np.float32)
    for i, m in blocks(emb, source):
        d, lab = km.index.search(np.ascontiguousarray(m), 1)
        labels[i : i + len(m)] = lab[:, 0]
        dist[i : i + len(m)] = d[:, 0]
    return labels, dist


def examples(labels: np.ndarray, dist: np.ndarray, ids: np.ndarray, k: int, n: int = EXAMPLES) -> list[list[int]]:
    """Per cluster, the sample ids nearest its centroid (the most typical members). Spherical k-means in
    faiss searches by inner product: a larger score is nearer."""
    order = np.lexsort((-dist, labels))
    starts = np.searchsorted(labels[order], np.arange(k))
    ends = np.searchsorted(labels[order], np.arange(k), side="right")
    return [[int(ids[j]) for j in order[s : min(e, s + n)]] for s, e in zip(starts, ends, strict=True)]


def tfidf_labels(texts: Sequence[str], labels: np.ndarray, k: int, words: int = 3) -> list[str]:
    """A short label per cluster: its answers' words of highest TF-IDF, a cluster's answers being one
    document (class-based TF-IDF, as BERTopic and Embedding Atlas label clusters)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = [""] * k
    joined: list[list[str]] = [[] for _ in range(k)]
    for t, lab in zip(texts, labels, strict=True):
        if t:
            joined[int(lab)].append(t)
    docs = [" ".join(parts) for parts in joined]
    if not any(docs):
        return [""] * k
    vec = TfidfVectorizer(stop_words="english", max_features=50_000, token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b")
    try:
        m = vec.fit_transform(docs)
    except ValueError:  # only stop words
        return [""] * k
    vocab = np.asarray(vec.get_feature_names_out())
    out = []
    for c in range(k):
        row = m.getrow(c).toarray()[0]
        top = [vocab[j] for j in np.argsort(-row)[:words] if row[j] > 0]
        out.append(" ".join(top))
    return out
