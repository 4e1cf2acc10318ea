"""Nearest neighbours: a faiss index (exact or HNSW by size) and the cached kNN graph reused downstream."""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

import numpy as np

from curation.progress import ProgressFn, null_progress

log = logging.getLogger(__name__)

EXACT_LIMIT = 200_000
"""Up to this many vectors the index is exact (``IndexFlatIP``); above it, HNSW."""
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
BATCH = 8192
"""Queries per faiss search call (bounds memory, gives progress ticks)."""


def _faiss(threads: int | None = None) -> Any:
    """Import faiss with ``threads`` OpenMP threads (default: every core; 1 for tiny problems is faster)."""
    # OpenMP threads that spin-wait between faiss calls starve numpy's BLAS threads and numba on small
    # machines (k-means auto-k ran 10x slower); PASSIVE must be set before libgomp loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("faiss is needed for neighbours: `pip install faiss-cpu`.") from exc
    faiss.omp_set_num_threads(int(threads or os.cpu_count() or 1))
    return faiss


def _as_f32(vectors: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"Expected an (N, D) array of vectors, got shape {x.shape}.")
    return x


def ef_search_for(k: int) -> int:
    """HNSW ``efSearch`` used for a k-neighbour query (recall@10 ≥ 0.95 measured, see docs/performance.md)."""
    return int(max(64, 4 * k))


def build_index(vectors: np.ndarray, *, exact_limit: int = EXACT_LIMIT) -> Any:
    """A faiss inner-product index over L2-normalised vectors (inner product = cosine similarity).

    Parameters
    ----------
    vectors : (N, D) float32, L2-normalised.
    exact_limit : up to this N the index is exact (``IndexFlatIP``); above it an approximate
        ``IndexHNSWFlat`` (M=32, inner product) whose ``efSearch`` is set per query by :func:`search`.

    Returns
    -------
    faiss.Index with all vectors added (row positions are the faiss ids).
    """
    faiss = _faiss()
    x = _as_f32(vectors)
    n, d = x.shape
    if n <= exact_limit:
        index = faiss.IndexFlatIP(d)
    else:
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        log.info("building HNSW index over %d x %d vectors", n, d)
    index.add(x)
    return index


def _search(index: Any, queries: np.ndarray, k: int, progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Batched ``index.search``; returns (idx (Q, k) int64, sims (Q, k) float32)."""
    progress = progress or null_progress
    q = _as_f32(queries)
    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = max(int(index.hnsw.efSearch), ef_search_for(k))
    idx = np.empty((len(q), k), np.int64)
    sims = np.empty((len(q), k), np.float32)
    for start in range(0, len(q), BATCH):
        stop = min(start + BATCH, len(q))
        s, i = index.search(q[start:stop], k)
        sims[start:stop], idx[start:stop] = s, i
        progress(stop / max(len(q), 1), f"neighbours {stop:,}/{len(q):,}")
    return idx, sims


def search(vectors: np.ndarray, queries: np.ndarray, *, k: int, index: Any = None,
           progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar database vectors of each query (self is *not* excluded).

    Parameters
    ----------
    vectors : (N, D) float32 L2-normalised database.
    queries : (Q, D) float32 L2-normalised queries.
    k : neighbours per query (capped at N).
    index : a prebuilt :func:`build_index` over ``vectors`` (built when None).

    Returns
    -------
    idx : (Q, k) int64 row positions into ``vectors``, most similar first.
    sims : (Q, k) float32 cosine similarities.
    """
    x = _as_f32(vectors)
    k = int(min(k, len(x)))
    if k <= 0 or len(queries) == 0:
        return np.zeros((len(queries), max(k, 0)), np.int64), np.zeros((len(queries), max(k, 0)), np.float32)
    index = build_index(x) if index is None else index
    return _search(index, queries, k, progress)


def knn(vectors: np.ndarray, *, k: int = 15, index: Any = None,
        progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest neighbours of every vector among the others (self excluded).

    Self is removed by position, not by dropping column 0: with exact duplicates faiss may rank
    a duplicate before the query itself, or not return the query at all (then the farthest extra
    neighbour is dropped instead).

    Parameters
    ----------
    vectors : (N, D) float32, L2-normalised.
    k : neighbours per sample; capped at N - 1.
    index : optional prebuilt index over ``vectors``.

    Returns
    -------
    idx : (N, k) int64 row positions, most similar first.
    sims : (N, k) float32 cosine similarities.
    """
    x = _as_f32(vectors)
    n = len(x)
    k = int(min(k, n - 1))
    if k <= 0:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    index = build_index(x) if index is None else index
    idx, sims = _search(index, x, k + 1, progress)
    is_self = idx == np.arange(n)[:, None]
    drop = is_self.copy()
    drop[~is_self.any(1), -1] = True          # self not returned: drop the extra (last) neighbour
    keep = ~drop
    idx = idx[keep].reshape(n, k)
    sims = sims[keep].reshape(n, k)
    if (idx < 0).any():  # HNSW may return -1 when it cannot find enough neighbours
        log.warning("approximate index returned missing neighbours for %d samples", int((idx < 0).any(1).sum()))
    return idx, sims


def ids_fingerprint(ids: np.ndarray) -> str:
    """Short hash of a sample-id vector (order matters)."""
    return hashlib.sha1(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]


def graph_key(emb: Any, *, k: int, method: str) -> tuple[str, dict[str, Any]]:
    """Artifact key and config of the kNN graph of an embeddings object."""
    from curation.artifacts import make_key

    config = {"emb": str(emb.key), "ids": ids_fingerprint(emb.ids), "k": int(k), "method": method}
    return make_key(config), config


def knn_graph(ws: Any, emb: Any, *, k: int = 15, exact_limit: int = EXACT_LIMIT,
              progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The kNN graph of a workspace's embeddings, cached as artifact kind ``knn``.

    Parameters
    ----------
    ws : Workspace.
    emb : embeddings-like object with ``ids`` (N,) int64, ``vectors`` (N, D) float32 L2-normalised, ``key`` str.
    k : neighbours per sample (self excluded).

    Returns
    -------
    idx : (N, k) int64 row positions into ``emb.ids``.
    sims : (N, k) float32 cosine similarities.
    """
    n = len(emb.ids)
    method = "exact" if n <= exact_limit else f"hnsw{HNSW_M}"
    key, config = graph_key(emb, k=k, method=method)
    idx = ws.artifacts.load_array("knn", key, name="idx", mmap=False)
    sims = ws.artifacts.load_array("knn", key, name="sims", mmap=False)
    if idx is not None and sims is not None:
        log.debug("kNN graph %s loaded from cache", key)
        return idx, sims
    index = build_index(emb.vectors, exact_limit=exact_limit)
    idx, sims = knn(emb.vectors, k=k, index=index, progress=progress)
    ws.artifacts.save_arrays("knn", key, {"idx": idx, "sims": sims}, config=config)
    log.info("kNN graph (%s, k=%d) of %d samples saved as knn/%s", method, k, n, key)
    idx.setflags(write=False)
    sims.setflags(write=False)
    return idx, sims
