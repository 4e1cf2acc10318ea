"""Nearest neighbours: one faiss index per embeddings (exact or approximate by size) and the cached kNN graph."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from curation.core.progress import ProgressFn, null_progress
from curation.data.atomic import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    from curation.data.workspace import Workspace

log = logging.getLogger(__name__)

EXACT_LIMIT = 200_000
"""Up to this many vectors the index is exact (``IndexFlatIP``; the all-pairs kNN graph of 100k x 64 takes
8.5 s on 2 cores, 200k about 35 s, once, cached); above it, approximate (``APPROXIMATE``). See
docs/performance.md."""
APPROXIMATE = "ivf"
"""The approximate index kind above ``EXACT_LIMIT``: IVF builds 3x faster than HNSW (29 s vs 93 s for 1M x 64
on 2 cores), which is what a search of a fresh index waits for; recall@10 0.994 at 100k, 0.998 at 1M."""
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
IVF_NPROBE = 16
"""IVF lists scanned per query at least (of about ``4 * sqrt(N)``); big indexes scan ``nlist / 128``."""
IVF_TRAIN_PER_LIST = 40
"""IVF k-means is trained on this many seeded vectors per list (faiss wants at least 39)."""
BATCH = 8192
"""Queries per faiss search call (bounds memory, gives progress ticks)."""
INDEX_CACHE = 2
"""Embedding indexes kept in memory per process by :func:`embedding_index`."""

_index_lock = threading.Lock()
_indexes: OrderedDict[str, Any] = OrderedDict()


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


def nprobe_for(nlist: int) -> int:
    """IVF ``nprobe`` used for a search (recall@10 ≥ 0.99 measured, see docs/performance.md)."""
    return int(min(nlist, max(IVF_NPROBE, nlist // 128)))


def index_kind(n: int, *, exact_limit: int = EXACT_LIMIT) -> str:
    """The index :func:`build_index` makes for ``n`` vectors: ``"flat"`` up to ``exact_limit``, else ``APPROXIMATE``."""
    return "flat" if n <= exact_limit else APPROXIMATE


def build_index(vectors: np.ndarray, *, exact_limit: int = EXACT_LIMIT, kind: str = "auto", seed: int = 0) -> Any:
    """A faiss inner-product index over L2-normalised vectors (inner product = cosine similarity).

    Parameters
    ----------
    vectors : (N, D) float32, L2-normalised.
    exact_limit : with ``kind="auto"``, up to this N the index is exact, above it approximate.
    kind : ``"auto"``, ``"flat"`` (exact ``IndexFlatIP``), ``"hnsw"`` (``IndexHNSWFlat``, M=32: slow to
        build, fast single queries) or ``"ivf"`` (``IndexIVFFlat`` over about ``4 * sqrt(N)`` k-means
        lists, trained on a seeded sample: quick to build, fast for big query batches). The
        approximate kinds get their search breadth (``efSearch`` / ``nprobe``) per query in :func:`search`.
    seed : seeds the IVF training sample and k-means.

    Returns
    -------
    faiss.Index with all vectors added (row positions are the faiss ids).
    """
    faiss = _faiss()
    x = _as_f32(vectors)
    n, d = x.shape
    kind = index_kind(n, exact_limit=exact_limit) if kind == "auto" else kind
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        log.info("building HNSW index over %d x %d vectors", n, d)
    elif kind == "ivf":
        nlist = int(np.clip(4 * np.sqrt(n), 1, max(n // 39, 1)))  # faiss wants >= 39 training points a list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed, index.cp.niter = seed, 10
        m = IVF_TRAIN_PER_LIST * nlist
        train = x if n <= m else x[np.sort(np.random.default_rng(seed).choice(n, m, replace=False))]
        log.info("training IVF index (%d lists) over %d x %d vectors", nlist, n, d)
        index.train(train)
    else:
        raise ValueError(f"Unknown index kind {kind!r}; use auto, flat, hnsw or ivf.")
    index.add(x)
    return index


def _search(index: Any, queries: np.ndarray, k: int, progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Batched ``index.search``; returns (idx (Q, k) int64, sims (Q, k) float32)."""
    progress = progress or null_progress
    q = _as_f32(queries)
    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = max(int(index.hnsw.efSearch), ef_search_for(k))
    if hasattr(index, "nprobe"):
        index.nprobe = max(int(index.nprobe), nprobe_for(int(index.nlist)))
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
    idx, sims = exclude_self(*_search(index, x, k + 1, progress), np.arange(n))
    if (idx < 0).any():  # an approximate index may return -1 when it cannot find enough neighbours
        log.warning("approximate index returned missing neighbours for %d samples", int((idx < 0).any(1).sum()))
    return idx, sims


def exclude_self(idx: np.ndarray, sims: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop each query's own row from its k + 1 results (by position; else the farthest extra neighbour).

    Parameters
    ----------
    idx : (Q, k + 1) int64 row positions returned for the queries; sims : (Q, k + 1) float32.
    rows : (Q,) int64 row position of each query in the database (a shard of a graph passes its own rows).

    Returns
    -------
    idx (Q, k) int64, sims (Q, k) float32.
    """
    q, k1 = idx.shape
    is_self = idx == np.asarray(rows, np.int64)[:, None]
    drop = is_self.copy()
    drop[~is_self.any(1), -1] = True          # self not returned: drop the extra (last) neighbour
    keep = ~drop
    return idx[keep].reshape(q, k1 - 1), sims[keep].reshape(q, k1 - 1)


def ids_fingerprint(ids: np.ndarray) -> str:
    """Short hash of a sample-id vector (order matters)."""
    return hashlib.sha1(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]


def graph_key(emb: Any, *, k: int, method: str) -> tuple[str, dict[str, Any]]:
    """Artifact key and config of the kNN graph of an embeddings object."""
    from curation.data.artifacts import make_key

    config = {"emb": str(emb.key), "ids": ids_fingerprint(emb.ids), "k": int(k), "method": method}
    return make_key(config), config


def _method(kind: str) -> str:
    """How a graph or index was searched, as recorded in its artifact config."""
    return {"flat": "exact", "hnsw": f"hnsw{HNSW_M}", "ivf": "ivf"}[kind]


def graph_method(n: int, *, exact_limit: int = EXACT_LIMIT) -> str:
    """How the kNN graph of ``n`` vectors is searched (``exact``, ``ivf``), as recorded in its artifact key."""
    return _method(index_kind(n, exact_limit=exact_limit))


def embedding_index(ws: Workspace, emb: Any, *, exact_limit: int = EXACT_LIMIT) -> Any:
    """The one faiss index of an embeddings artifact, built once per process and reused by every search.

    Exact (``IndexFlatIP``) up to ``exact_limit`` vectors, approximate above (saved as artifact kind
    ``index`` and reloaded, since it takes a while to build). The last ``INDEX_CACHE`` indexes stay
    in memory, keyed by the embeddings key and the sample ids.

    Parameters
    ----------
    ws : Workspace (where approximate indexes are saved), or None to keep them in memory only.
    emb : embeddings-like object with ``ids`` (N,) int64, ``vectors`` (N, D) float32 L2-normalised, ``key`` str.

    Returns
    -------
    faiss.Index over ``emb.vectors`` (row positions are the faiss ids); pass it to :func:`search` / :func:`knn`.
    """
    from curation.data.artifacts import make_key

    kind = index_kind(len(emb.ids), exact_limit=exact_limit)
    config = {"emb": str(emb.key), "ids": ids_fingerprint(emb.ids), "method": _method(kind)}
    key = make_key(config)
    with _index_lock:
        if key in _indexes:
            _indexes.move_to_end(key)
            return _indexes[key]
    faiss = _faiss()
    index = None
    saved = kind != "flat" and ws is not None
    if saved and ws.artifacts.exists("index", key):
        index = faiss.read_index(str(ws.artifacts.path("index", key, "faiss")))
        log.debug("faiss index %s loaded", key)
    if index is None:
        index = build_index(emb.vectors, kind=kind)
        if saved:
            path = ws.artifacts.path("index", key, "faiss")
            atomic_write(path, lambda tmp: faiss.write_index(index, str(tmp)))
            ws.artifacts.register_file("index", key, "faiss", config=config)
    with _index_lock:
        _indexes[key] = index
        while len(_indexes) > INDEX_CACHE:
            _indexes.popitem(last=False)
    return index


def knn_graph(ws: Workspace, emb: Any, *, k: int = 15, exact_limit: int = EXACT_LIMIT,
              progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The kNN graph of a workspace's embeddings, cached as artifact kind ``knn`` (searched in :func:`embedding_index`).

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
    method = graph_method(n, exact_limit=exact_limit)
    key, config = graph_key(emb, k=k, method=method)
    idx = ws.artifacts.load_array("knn", key, name="idx", mmap=False)
    sims = ws.artifacts.load_array("knn", key, name="sims", mmap=False)
    if idx is not None and sims is not None:
        log.debug("kNN graph %s loaded from cache", key)
        return idx, sims
    index = embedding_index(ws, emb, exact_limit=exact_limit)
    idx, sims = knn(emb.vectors, k=k, index=index, progress=progress)
    ws.artifacts.save_arrays("knn", key, {"idx": idx, "sims": sims}, config=config)
    log.info("kNN graph (%s, k=%d) of %d samples saved as knn/%s", method, k, n, key)
    idx.setflags(write=False)
    sims.setflags(write=False)
    return idx, sims
