"""Tests for curation.cluster: spherical k-means, automatic k, summaries, names, caching."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from curation import cluster as C


def test_automatic_k_recovers_blobs(blobs):
    x, y = blobs
    k, scores = C.choose_k(x)
    assert k == 6
    labels = C.cluster(x)
    assert labels.max() + 1 == 6
    assert adjusted_rand_score(y, labels) > 0.99


def test_user_k_and_hdbscan(blobs):
    x, y = blobs
    assert C.cluster(x, k=3).max() + 1 == 3
    lab = C.cluster(x, method="hdbscan")
    assert lab.min() >= -1 and adjusted_rand_score(y[lab >= 0], lab[lab >= 0]) > 0.9
    with pytest.raises(ValueError, match="choose one of"):
        C.cluster(x, method="nope")


def test_cluster_summary_constructed_case():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(12, 4)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    clus = np.array([0] * 6 + [1] * 6)
    lm = np.zeros((12, 3), np.int8)
    lm[[0, 1, 2], 0] = 1   # cluster 0: 3x a, 1x b, 2 unlabelled
    lm[3, 1] = 1
    lm[[6, 7], 2] = 1      # cluster 1: 2x c, 4 unlabelled
    lm[8, 0] = -1          # a rejection is not a label
    sugg = np.array([-1] * 6 + [-1, -1, 2, 2, 1, -1])
    df = C.cluster_summary(clus, v, lm, ["a", "b", "c"], suggested=sugg)
    assert list(df.index) == [0, 1]
    assert df.loc[0, "size"] == 6 and df.loc[0, "majority"] == "a"
    assert df.loc[0, "purity"] == pytest.approx(0.75)
    assert df.loc[0, "unlabelled"] == pytest.approx(2 / 6)
    assert df.loc[0, "label_counts"] == {"a": 3, "b": 1}
    assert df.loc[1, "majority"] == "c" and df.loc[1, "purity"] == pytest.approx(1.0)
    assert df.loc[1, "suggested"] == "c" and df.loc[1, "suggested_share"] == pytest.approx(2 / 3)
    assert 0 <= df.loc[0, "medoid"] < 6 and 6 <= df.loc[1, "medoid"] < 12
    # the 1-medoid minimises the summed cosine distance
    d = 1 - v[:6] @ v[:6].T
    assert df.loc[0, "medoid"] == d.sum(1).argmin()
    assert len(df.loc[0, "medoids"]) == 3


def test_name_clusters_text_and_fallback():
    t = np.eye(4, dtype=np.float32)
    cents = np.array([[0.1, 0.9, 0, 0], [0, 0, 0.2, 0.8], [0.7, 0.1, 0, 0.1]], np.float32)
    assert C.name_clusters(cents, t, ["cat", "dog", "car", "boat"]) == ["dog", "boat", "cat"]
    assert C.name_clusters(cents, None, [], fallback=["a", "", "a"]) == ["a", "cluster 1", "a (2)"]


def test_compute_clusters_cached(ws, blobs, monkeypatch):
    x, _ = blobs
    emb = SimpleNamespace(ids=np.arange(5, 605, dtype=np.int64), vectors=x, key="e")
    df = C.compute_clusters(ws, emb, k=6)
    assert df.index.name == "id" and list(df.index[:2]) == [5, 6] and df["cluster"].nunique() == 6
    monkeypatch.setattr(C, "cluster", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    df2 = C.compute_clusters(ws, emb, k=6)
    assert df2["cluster"].equals(df["cluster"])
