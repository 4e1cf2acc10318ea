"""Tests for curation.features.neighbors: exact kNN, duplicates, HNSW and IVF paths, one index per embedding, cached graph."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from curation.features import neighbors


def _brute(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(s, idx, 1)


def test_knn_equals_brute_force(blobs):
    x, _ = blobs
    idx, sims = neighbors.knn(x, k=10)
    bidx, bsims = _brute(x, 10)
    assert idx.shape == (600, 10) and idx.dtype == np.int64 and sims.dtype == np.float32
    np.testing.assert_allclose(sims, bsims, atol=1e-5)
    assert (idx == bidx).mean() > 0.999  # ties may swap order
    assert not (idx == np.arange(600)[:, None]).any()


def test_knn_exact_duplicates_drop_self_not_column0():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    x[10:20] = x[10]  # ten identical vectors: faiss may rank another copy before self, or omit self
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx, sims = neighbors.knn(x, k=5)
    assert not (idx == np.arange(50)[:, None]).any()
    for i in range(10, 20):
        assert set(idx[i]) <= set(range(10, 20)) - {i}
        np.testing.assert_allclose(sims[i], 1.0, atol=1e-5)
    assert len({tuple(sorted(r)) for r in idx[10:20]}) >= 1
    assert all(len(set(r)) == 5 for r in idx)


def test_knn_small_and_search(blobs):
    x, _ = blobs
    idx, _ = neighbors.knn(x[:4], k=15)
    assert idx.shape == (4, 3)
    qi, qs = neighbors.search(x, x[:5], k=3)
    assert (qi[:, 0] == np.arange(5)).all() and qs.shape == (5, 3)


def test_hnsw_path_high_recall(blobs):
    x, _ = blobs
    index = neighbors.build_index(x, kind="hnsw")
    assert hasattr(index, "hnsw")
    idx, _ = neighbors.knn(x, k=10, index=index)
    bidx, _ = _brute(x, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, bidx)])
    assert recall > 0.95


def test_knn_graph_cached(ws, blobs, monkeypatch):
    x, _ = blobs
    emb = SimpleNamespace(ids=np.arange(100, 700, dtype=np.int64), vectors=x, key="test-emb")
    idx, sims = neighbors.knn_graph(ws, emb, k=7)
    calls = []
    monkeypatch.setattr(neighbors, "knn", lambda *a, **kw: calls.append(1))
    idx2, sims2 = neighbors.knn_graph(ws, emb, k=7)
    assert not calls
    np.testing.assert_array_equal(idx, idx2)
    np.testing.assert_array_equal(sims, sims2)
    assert ws.artifacts.list()["kind"].eq("knn").sum() == 1


def test_ivf_path_high_recall(blobs):
    x, _ = blobs
    index = neighbors.build_index(x, exact_limit=100)  # above the exact limit: the approximate default
    assert hasattr(index, "nprobe") and index.nlist > 1
    idx, _ = neighbors.knn(x, k=10, index=index)
    bidx, _ = _brute(x, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, bidx)]) > 0.95


def test_one_index_per_embedding_and_approximate_ones_saved(ws, blobs, monkeypatch):
    x, _ = blobs
    neighbors._indexes.clear()
    emb = SimpleNamespace(ids=np.arange(600, dtype=np.int64), vectors=x, key="idx-emb")
    flat = neighbors.embedding_index(ws, emb)
    assert neighbors.embedding_index(ws, emb) is flat and not hasattr(flat, "hnsw")
    approx = neighbors.embedding_index(ws, emb, exact_limit=100)
    assert type(approx) is not type(flat) and ws.artifacts.list()["kind"].eq("index").sum() == 1
    neighbors._indexes.clear()  # a new process: the saved index is read back, not rebuilt
    monkeypatch.setattr(neighbors, "build_index", lambda *a, **k: pytest.fail("rebuilt"))
    again = neighbors.embedding_index(ws, emb, exact_limit=100)
    assert again.ntotal == 600
    idx, sims = neighbors.knn_graph(ws, emb, k=10, exact_limit=100)
    bidx, _ = _brute(x, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, bidx)]) > 0.95
    method = ws.artifacts.list().query("kind == 'knn'")["config"].iloc[0]["method"]
    assert method == neighbors._method(neighbors.APPROXIMATE) != "exact"
