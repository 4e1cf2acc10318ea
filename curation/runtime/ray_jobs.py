"""The heavy stages on a Ray cluster: Ray Data embedding, sharded kNN graph search, one task per out-of-fold fold."""

from __future__ import annotations

import functools
import logging
import os
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from curation.core.progress import ProgressFn, null_progress
from curation.runtime.engines import check_engine, connect, require_ray

log = logging.getLogger(__name__)

BLOCK_BATCHES = 2
"""Batches of image paths per Ray Data input block (a block is the unit a decode task or an actor call takes)."""
DECODE_CPUS = 0.25
"""CPU share a decode task reserves on a CPU-only cluster (the encoder actors hold the rest of each node)."""
GPU_BATCH = 256
"""Images per forward pass of a GPU actor when the job does not set one."""
WAIT_S = 0.5
"""Longest the driver waits on Ray between progress ticks (how fast a cancel is seen)."""


# ---------------------------------------------------------------------- embedding (Ray Data)
class RayEmbedRunner:
    """A chunk runner for :func:`curation.features.embed.embed_workspace` that embeds on Ray Data.

    Image paths go into a Ray Dataset; decode + preprocessing run as CPU tasks (:func:`decode_batch`);
    the encoder runs in an actor pool of :class:`~curation.features.embedder.Embedder` (the model is
    loaded once per actor); the driver writes each chunk, keyed by sample id, with the same
    :func:`~curation.features.embed.write_chunk` as the local path, as soon as all its rows are back.
    A killed run resumes from its written chunks; a dead actor is restarted by Ray and its batch retried.

    Parameters
    ----------
    workers : encoder actors (default: one per node; on GPUs one per GPU).
    num_gpus : GPUs per actor (0 on CPU-only clusters; 1 puts one actor on each GPU).
    actor_cpus : CPUs each actor reserves (default 1 with GPUs, else ``1 - DECODE_CPUS`` so decode tasks fit).
    threads : torch threads per actor (default: its whole CPUs, at least 1).
    """

    def __init__(self, *, workers: int | None = None, num_gpus: float = 0.0, actor_cpus: float | None = None,
                 threads: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError("workers must be at least 1.")
        self.workers, self.num_gpus = workers, float(num_gpus)
        self.actor_cpus = float(actor_cpus if actor_cpus is not None else (1.0 if num_gpus else 1.0 - DECODE_CPUS))
        self.threads = int(threads or max(1, int(self.actor_cpus)))
        self.device = "ray:cuda" if num_gpus else "ray:cpu"
        """Where the vectors were computed, as recorded in the embedding store (``Embeddings.device``)."""
        self.stats: dict[str, Any] = {}

    def _pool_size(self, ray: Any) -> int:
        if self.workers:
            return int(self.workers)
        if self.num_gpus:
            return max(1, int(ray.cluster_resources().get("GPU", 0) // self.num_gpus))
        return max(1, len([n for n in ray.nodes() if n.get("Alive")]))

    def __call__(self, ws: Any, enc: Any, d: Any, frame: pd.DataFrame, todo: np.ndarray, *,
                 num_workers: int | None = None, progress: ProgressFn = null_progress) -> None:
        from curation.features.embed import write_chunk
        from curation.features.embedder import Embedder, decode_batch

        ray = require_ray()
        ids, chunk_of = todo[:, 0], todo[:, 1]
        paths = (frame["root"].astype(str) + os.sep + frame["path"].astype(str)).reindex(ids).to_numpy().astype(str)
        chunks, expected = np.unique(chunk_of, return_counts=True)
        left = dict(zip(chunks.tolist(), expected.tolist()))
        bs = int(todo[0, 2])
        pool = self._pool_size(ray)
        rows = pd.DataFrame({"id": ids, "chunk": chunk_of, "path": paths})
        per = BLOCK_BATCHES * bs
        blocks = [rows.iloc[s:s + per] for s in range(0, len(rows), per)]
        allowed = [os.path.realpath(p) for p in map(str, ws.allowed_roots())]
        scoped = str(enc.name).startswith("finetuned:")
        _quiet_ray_data(ray)
        ds = ray.data.from_pandas(blocks)
        ds = ds.map_batches(decode_batch, batch_size=bs, batch_format="numpy",
                            fn_kwargs={"transform": enc.transform, "size": int(enc.transform.size), "allowed": allowed},
                            num_cpus=1.0 if self.num_gpus else DECODE_CPUS)
        ds = ds.map_batches(Embedder, batch_size=bs, batch_format="numpy",
                            fn_constructor_kwargs={"encoder": enc.name, "device": "cuda" if self.num_gpus else "cpu",
                                                   "fingerprint": enc.fingerprint, "threads": self.threads,
                                                   "workspace_root": str(ws.root) if scoped else None},
                            compute=ray.data.ActorPoolStrategy(size=pool), num_gpus=self.num_gpus or None,
                            num_cpus=self.actor_cpus)
        total, n_done, t0 = len(todo), 0, time.perf_counter()
        buf: dict[int, list[dict[str, np.ndarray]]] = {}
        workers_seen: set[int] = set()
        written = 0
        log.info("embedding %d images in %d chunks with %s on Ray (%d actors, %s GPU each)", total, len(chunks),
                 enc.name, pool, self.num_gpus)
        progress(0.0, f"embedding {total:,} images with {enc.name} on Ray ({pool} workers)")
        it = iter(ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1))
        try:
            for batch in it:
                workers_seen.update(np.unique(batch["worker"]).tolist())
                for c in np.unique(batch["chunk"]).tolist():
                    m = batch["chunk"] == c
                    buf.setdefault(c, []).append({k: np.asarray(batch[k])[m] for k in ("id", "path", "reason", "vector")})
                    left[c] -= int(m.sum())
                    if left[c] == 0:
                        _write(write_chunk, d, c, buf.pop(c), enc.dim)
                        written += 1
                n_done += len(batch["id"])
                rate = n_done / max(time.perf_counter() - t0, 1e-9)
                progress(n_done / total, f"embedded {n_done:,}/{total:,} images on Ray · {rate:.1f} img/s · "
                                         f"chunk {written}/{len(chunks)} · {len(workers_seen)} workers")
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # stops the streaming execution, also on Cancelled
        if any(v != 0 for v in left.values()):
            raise RuntimeError(f"Ray returned {n_done} of {total} rows; run the embedding again to finish the rest.")
        dt = time.perf_counter() - t0
        self.stats = {"images": total, "seconds": dt, "workers": len(workers_seen), "actors": pool}
        log.info("embedded %d images on Ray in %.1fs (%.1f img/s, %d worker processes)", total, dt,
                 total / max(dt, 1e-9), len(workers_seen))


def _quiet_ray_data(ray: Any) -> None:
    """No Ray Data progress bars or per-dataset banners in the job log: the job's own progress says it."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _write(write_chunk: Any, d: Any, c: int, parts: list[dict[str, np.ndarray]], dim: int) -> None:
    """One chunk's rows (in any order) → ids ascending, failures apart, written as the local path writes it."""
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(cat["id"], kind="stable")
    cat = {k: v[order] for k, v in cat.items()}
    ok = cat["reason"].astype(str) == ""
    failed = [(int(i), str(p), str(r)) for i, p, r in zip(cat["id"][~ok], cat["path"][~ok], cat["reason"][~ok])]
    for sid, path, reason in failed:
        log.warning("skipping sample %d (%s): %s", sid, path, reason)
    vecs = cat["vector"][ok].reshape(-1, dim) if ok.any() else np.zeros((0, dim), np.float32)
    write_chunk(d, int(c), cat["id"][ok].astype(np.int64), vecs, failed)


def embed_on_ray(ws: Any, encoder: Any = None, *, address: str | None = None, workers: int | None = None,
                 num_gpus: float = 0.0, chunk_size: int = 1024, batch_size: int | None = None,
                 retry_failed: bool = False, progress: ProgressFn | None = None) -> Any:
    """:func:`~curation.features.embed.embed_workspace` with its chunks computed on the Ray cluster at ``address``.

    The driver (this process) plans the chunks and loads the encoder once on its CPU for the store key; the
    chunk store is the local engine's (same key), so either engine resumes the other's run. Every node must
    import this package (same checkout and environment) and read the image paths.

    Returns
    -------
    :class:`~curation.features.embed.Embeddings`, the same artifact (and vectors, within float tolerance) as local.
    """
    from curation.features.embed import embed_workspace

    connect(address)
    runner = RayEmbedRunner(workers=workers, num_gpus=num_gpus)
    if batch_size is None and num_gpus:
        batch_size = GPU_BATCH  # the driver plans on its CPU, where the automatic batch would be 32
    return embed_workspace(ws, encoder, chunk_size=chunk_size, batch_size=batch_size, device="cpu",
                           retry_failed=retry_failed, progress=progress, runner=runner)


def embed_function(engine: str, address: str | None = None) -> Callable[..., Any]:
    """``fn(ws, encoder, *, progress, ...) -> Embeddings`` of an engine: ``embed_workspace`` or :func:`embed_on_ray`."""
    if check_engine(engine) == "ray":
        return functools.partial(embed_on_ray, address=address)
    from curation.features.embed import embed_workspace

    return embed_workspace


# ---------------------------------------------------------------------- kNN graph (sharded search)
def _search_shard(index_blob: np.ndarray, vectors: np.ndarray, start: int, stop: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ray task: the k neighbours (self excluded) of rows ``start:stop`` in the serialised faiss index."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as curation.features.neighbors does, before faiss loads
    import faiss

    from curation.features.neighbors import exclude_self, search

    faiss.omp_set_num_threads(1)
    index = faiss.deserialize_index(index_blob)
    idx, sims = search(vectors, vectors[start:stop], k=k + 1, index=index)
    return exclude_self(idx, sims, np.arange(start, stop))


def _wait_all(ray: Any, refs: list[Any], progress: ProgressFn, what: str) -> list[Any]:
    """Results of ``refs`` in order, ticking progress as they finish; cancels the rest on Cancelled or error."""
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=WAIT_S)
            progress((len(refs) - len(pending)) / len(refs), f"{what} {len(refs) - len(pending)}/{len(refs)} on Ray")
        return ray.get(refs)
    except BaseException:
        for r in pending:
            ray.cancel(r, force=True)
        raise


def knn_graph_on_ray(ws: Any, emb: Any, *, k: int = 15, shards: int | None = None, address: str | None = None,
                     recall_sample: int = 500, progress: ProgressFn | None = None) -> dict[str, Any]:
    """The kNN graph of :func:`curation.features.neighbors.knn_graph`, searched in shards by Ray tasks.

    The faiss index is built (trained) once, here, serialised into the object store and searched by one
    task per shard of query rows; the graph is saved under the same artifact key and format as the local
    one (a cached graph is reused). Recall@k against exact search is measured on a seeded sample of rows.

    Returns
    -------
    dict: ``key``, ``method``, ``shards``, ``seconds``, ``recall`` (mean recall@k of the sample vs exact),
    ``cached`` (the graph already existed).
    """
    from curation.features.neighbors import embedding_index, graph_key, graph_method

    progress = progress or null_progress
    n = len(emb.ids)
    k = int(min(k, n - 1))
    if k < 1:
        raise ValueError(f"A kNN graph needs at least 2 embedded samples and k >= 1; got {n} samples, k={k}.")
    method = graph_method(n)
    key, config = graph_key(emb, k=k, method=method)
    if ws.artifacts.load_array("knn", key, name="idx", mmap=False) is not None:
        progress(1.0, "kNN graph already computed")
        idx, sims = knn_graph_arrays(ws, key)
        return {"key": key, "method": method, "shards": 0, "seconds": 0.0, "cached": True,
                "recall": recall_at_k(emb.vectors, idx, k=k, sample=recall_sample)}
    ray = connect(address)
    import faiss

    t0 = time.perf_counter()
    progress(0.0, "building the faiss index")
    index = embedding_index(ws, emb)
    blob = ray.put(faiss.serialize_index(index))
    vec_ref = ray.put(np.ascontiguousarray(emb.vectors, np.float32))
    n_shards = int(shards or max(2 * int(ray.cluster_resources().get("CPU", 1)), 1))
    bounds = np.linspace(0, n, n_shards + 1).astype(int)
    task = ray.remote(num_cpus=1)(_search_shard)
    refs = [task.remote(blob, vec_ref, int(a), int(b), k) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    parts = _wait_all(ray, refs, progress, "kNN shard")
    idx = np.concatenate([p[0] for p in parts]).astype(np.int64)
    sims = np.concatenate([p[1] for p in parts]).astype(np.float32)
    ws.artifacts.save_arrays("knn", key, {"idx": idx, "sims": sims}, config=config)
    dt = time.perf_counter() - t0
    recall = recall_at_k(emb.vectors, idx, k=k, sample=recall_sample)
    log.info("kNN graph (%s, k=%d) of %d samples on Ray in %.1fs (%d shards), recall@%d %.4f; saved as knn/%s",
             method, k, n, dt, len(refs), k, recall, key)
    return {"key": key, "method": method, "shards": len(refs), "seconds": dt, "recall": recall, "cached": False}


def knn_graph_arrays(ws: Any, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(idx (N, k) int64, sims (N, k) float32) of a saved kNN graph artifact."""
    return (ws.artifacts.load_array("knn", key, name="idx", mmap=False),
            ws.artifacts.load_array("knn", key, name="sims", mmap=False))


def recall_at_k(vectors: np.ndarray, idx: np.ndarray, *, k: int, sample: int = 500, seed: int = 0) -> float:
    """Mean recall@k of a kNN graph against exact inner-product search on ``sample`` seeded rows.

    Parameters
    ----------
    vectors : (N, D) float32 L2-normalised. idx : (N, k) int64 neighbours, self excluded.

    Returns
    -------
    float in [0, 1]: the share of each sampled row's exact k neighbours that the graph lists.
    """
    x = np.asarray(vectors, np.float32)
    n = len(x)
    if n < 2 or k < 1:
        return 1.0
    rows = np.sort(np.random.default_rng(seed).choice(n, min(sample, n), replace=False))
    s = x[rows] @ x.T
    s[np.arange(len(rows)), rows] = -np.inf
    exact = np.argpartition(-s, k - 1, axis=1)[:, :k]
    hits = [len(np.intersect1d(exact[i], idx[r, :k])) for i, r in enumerate(rows)]
    return float(np.mean(hits) / k)


# ---------------------------------------------------------------------- out-of-fold (one task per fold)
def _fold_task(threads: int, Xs: np.ndarray, target: np.ndarray, fold: np.ndarray, f: int,
               options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Ray task: :func:`curation.labels.oof.fit_fold` of fold ``f`` with ``threads`` torch threads."""
    import torch

    from curation.labels.oof import fit_fold

    torch.set_num_threads(int(threads))
    return fit_fold(Xs, target, fold, f, **options)


class RayFoldMap:
    """A :data:`curation.labels.oof.FoldMap` that fits every fold as its own Ray task (``threads`` CPUs each).

    The features, targets and fold numbers go into the object store once; the folds run in parallel across
    the cluster; results come back in fold order. Closing the iterator early (a cancel) cancels the
    tasks still running.
    """

    def __init__(self, *, threads: int = 1) -> None:
        self.threads = int(threads)
        self.seconds = 0.0

    def __call__(self, folds: Iterable[int], Xs: np.ndarray, target: np.ndarray, fold: np.ndarray,
                 **options: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        ray = require_ray()
        t0 = time.perf_counter()
        task = ray.remote(num_cpus=self.threads)(_fold_task)
        x, t, fo = ray.put(np.ascontiguousarray(Xs)), ray.put(np.ascontiguousarray(target)), ray.put(fold)
        refs = [task.remote(self.threads, x, t, fo, int(f), options) for f in folds]
        pending = set(refs)
        try:
            for r in refs:
                out = ray.get(r)
                pending.discard(r)
                yield out
        finally:
            for r in pending:
                ray.cancel(r, force=True)
            self.seconds = time.perf_counter() - t0


@contextmanager
def oof_on_ray(address: str | None = None, *, threads: int = 1) -> Iterator[RayFoldMap]:
    """Inside the block, out-of-fold scoring (:mod:`curation.labels.oof`) runs one Ray task per fold."""
    from curation.labels.oof import fold_map

    connect(address)
    fm = RayFoldMap(threads=threads)
    with fold_map(fm):
        yield fm
