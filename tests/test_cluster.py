"""Tests for curation.structure.cluster, curation.structure.naming and curation.structure.pockets: k-means (flat and hierarchical),
automatic k, HDBSCAN noise, summaries, names, splits, pockets and the cached workspace clustering."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from curation.structure import cluster as C
from curation.structure import naming, pockets


def _blobs(k: int, *, n: int = 80, dim: int = 48, spread: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` seeded Gaussian blobs of unequal sizes (n .. 2n), L2-normalised."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(n, 2 * n, size=k)
    y = np.repeat(np.arange(k), sizes)
    x = rng.normal(size=(k, dim))[y] * 3 + rng.normal(size=(len(y), dim)) * spread
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, np.ndarray]:
    """9 blobs (unequal sizes, 48-d): a planted k that is not the grid's edge nor the session fixture's 6."""
    return _blobs(9)


def _pocket_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A big blob A (600) with a tight pocket of 25 set off to one side, and a blob B (400); rows 600..624
    are the pocket. Returns vectors (1025, 32) and the truth (0 = A, 1 = pocket, 2 = B)."""
    rng = np.random.default_rng(seed)
    a, b, d = rng.normal(size=(3, 32))
    a /= np.linalg.norm(a)
    b /= np.linalg.norm(b)
    d -= (d @ a) * a
    d /= np.linalg.norm(d)
    centre = a * np.cos(0.9) + d * np.sin(0.9)
    x = np.concatenate([a + rng.normal(size=(600, 32)) * 0.15, centre + rng.normal(size=(25, 32)) * 0.03,
                        b + rng.normal(size=(400, 32)) * 0.15])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), np.repeat([0, 1, 2], [600, 25, 400])


def _emb(x: np.ndarray, *, encoder: str | None = None, encoder_id: str = "precomputed:test") -> SimpleNamespace:
    """Embeddings-like: ids 5.., ``x``; with ``encoder`` (a registry name) it has a text tower."""
    return SimpleNamespace(ids=np.arange(5, 5 + len(x), dtype=np.int64), vectors=x, key="e",
                           has_text=encoder is not None, encoder_name=encoder or "precomputed:test",
                           encoder_id=encoder_id)


# ---------------------------------------------------------------------- algorithms
def test_automatic_k_recovers_blobs(blobs):
    x, y = blobs
    fit = C.fit_clusters(x)
    curve = fit.silhouette
    assert fit.k == 6 and int(curve["silhouette"].idxmax()) == 6 and curve.index.name == "k"
    assert (curve["se"] >= 0).all() and list(curve.columns) == ["silhouette", "se"]
    assert fit.labels.max() + 1 == 6 and adjusted_rand_score(y, fit.labels) > 0.99
    k, scores = C.choose_k(x, repeats=1, k_grid=range(4, 9))
    assert k == 6 and list(scores.index) == [4, 5, 6, 7, 8] and scores.name == "silhouette"
    assert (C.silhouette_curve(x, repeats=1, k_grid=[5, 6])["se"] == 0).all()
    curve = pd.DataFrame({"silhouette": [0.30, 0.35, 0.34, 0.20], "se": [0.01, 0.02, 0.01, 0.01]}, index=[5, 6, 7, 8])
    assert C.pick_k(curve, n=100) == 7  # the largest k within one standard error of the best
    assert C.pick_k(curve.iloc[:0], n=3) == 2


@pytest.mark.slow
def test_automatic_k_recovers_a_planted_k(planted):
    x, y = planted
    fit = C.fit_clusters(x)
    assert fit.k == 9 and fit.method == "kmeans"
    assert list(fit.silhouette.index) == list(range(5, 41)) and fit.silhouette["silhouette"].idxmax() == 9
    assert adjusted_rand_score(y, fit.labels) > 0.99
    assert np.all(np.diff(np.bincount(fit.labels)) <= 0)  # largest cluster first


def test_user_k_hdbscan_and_noise_ids(blobs):
    x, y = blobs
    assert C.cluster(x, k=3).max() + 1 == 3
    lab = C.cluster(x, method="hdbscan")
    assert lab.min() >= -1 and adjusted_rand_score(y[lab >= 0], lab[lab >= 0]) > 0.9
    s = pd.Series(lab, index=np.arange(100, 100 + len(lab)))
    np.testing.assert_array_equal(C.noise_ids(s), np.flatnonzero(lab == -1) + 100)
    assert C.noise_ids(s.to_frame("cluster")).dtype == np.int64
    with pytest.raises(ValueError, match="use one of"):
        C.cluster(x, method="nope")


def test_hierarchical_kmeans(planted):
    x, _ = planted
    labels, cents = C.hkmeans(x, 9, seed=0)
    assert cents.shape == (9, x.shape[1]) and set(np.unique(labels)) == set(range(9))
    big, yb = _blobs(40, n=20, dim=32, seed=2)  # many clusters: what the two levels are for
    lab = C.cluster(big, k=40, method="hkmeans")
    flat = adjusted_rand_score(yb, C.cluster(big, k=40, method="kmeans"))
    assert lab.max() + 1 == 40 and adjusted_rand_score(yb, lab) > max(0.9, flat - 0.03)
    assert C.resolve_method("auto", C.HKMEANS_MIN_N + 1) == "hkmeans"
    assert C.resolve_method("auto", 1000, C.HKMEANS_MIN_K) == "hkmeans"
    assert C.resolve_method("auto", 1000, 10) == "kmeans" and C.resolve_method("hdbscan", 10**7) == "hdbscan"


def test_allocate_fine_clusters():
    np.testing.assert_array_equal(C._allocate(10, np.array([500, 300, 200])), [5, 3, 2])
    np.testing.assert_array_equal(C._allocate(7, np.array([1000, 1, 1, 1])), [4, 1, 1, 1])
    np.testing.assert_array_equal(C._allocate(5, np.array([3, 0, 10])), [1, 0, 4])
    np.testing.assert_array_equal(C._allocate(6, np.array([50, 50]), np.array([1.0, 2.0])), [2, 4])  # by spread


def test_split_cluster(planted):
    x, y = planted
    members = np.isin(y, [0, 1, 2])  # three true blobs clustered as one
    fit = C.split_cluster(x[members])
    assert fit.k == 3 and adjusted_rand_score(y[members], fit.labels) > 0.99 and len(fit.silhouette)
    assert C.split_cluster(x[members], k=2).labels.max() == 1
    with pytest.raises(ValueError, match="too small"):
        C.split_cluster(x[:3])
    with pytest.raises(ValueError, match="k ≥ 2"):
        C.split_cluster(x[members], k=1)


# ---------------------------------------------------------------------- summaries
def test_cluster_summary_constructed_case():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(14, 4)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    clus = np.array([0] * 6 + [1] * 6 + [-1] * 2)
    lm = np.zeros((14, 3), np.int8)
    lm[[0, 1, 2], 0] = 1   # cluster 0: 3x a, 1x b, 2 unlabelled
    lm[3, 1] = 1
    lm[[6, 7], 2] = 1      # cluster 1: 2x c, 4 unlabelled
    lm[8, 0] = -1          # a rejection is not a label
    sugg = np.array([-1] * 6 + [-1, -1, 2, 2, 1, -1] + [0, -1])
    issues = np.array([1, 0, 0, 1, 0, 0] + [0] * 6 + [1, 1], bool)
    df = C.cluster_summary(clus, v, lm, ["a", "b", "c"], suggested=sugg, issues=issues)
    assert list(df.index) == [-1, 0, 1]
    assert df.loc[0, "size"] == 6 and df.loc[0, "majority"] == "a" and df.loc[0, "majority_idx"] == 0
    assert df.loc[0, "purity"] == pytest.approx(0.75)
    assert df.loc[0, "unlabelled"] == pytest.approx(2 / 6)
    assert df.loc[0, "label_counts"] == {"a": 3, "b": 1}
    assert df.loc[1, "majority"] == "c" and df.loc[1, "purity"] == pytest.approx(1.0)
    assert df.loc[1, "suggested"] == "c" and df.loc[1, "suggested_share"] == pytest.approx(2 / 3)
    assert df.loc[1, "with_suggestion"] == pytest.approx(3 / 6) and df.loc[0, "with_suggestion"] == 0
    assert df.loc[0, "suggested"] == "" and np.isnan(df.loc[0, "suggested_share"])
    assert df.loc[0, "issue_rate"] == pytest.approx(2 / 6) and df.loc[-1, "issue_rate"] == 1.0
    assert df.loc[-1, "majority"] == "" and np.isnan(df.loc[-1, "purity"]) and df.loc[-1, "unlabelled"] == 1.0
    assert 0 <= df.loc[0, "medoid"] < 6 and 6 <= df.loc[1, "medoid"] < 12
    d = 1 - v[:6] @ v[:6].T  # the 1-medoid minimises the summed cosine distance
    assert df.loc[0, "medoid"] == d.sum(1).argmin()
    assert len(df.loc[0, "medoids"]) == 3
    pre = np.array([[12, -1], [40, 41], [50, -1]])  # precomputed medoids (e.g. sample ids) are copied
    df2 = C.cluster_summary(clus, None, lm, ["a", "b", "c"], medoids=pre)
    assert df2["medoids"].tolist() == [[12], [40, 41], [50]] and df2.loc[0, "medoid"] == 40
    assert "issue_rate" not in df2 and "suggested" not in df2
    assert df2[["size", "purity", "unlabelled"]].equals(df[["size", "purity", "unlabelled"]])


# ---------------------------------------------------------------------- names
def test_term_names_and_unique_names():
    t = np.eye(5, dtype=np.float32)
    terms = ["cat", "dog", "car", "boat", "dog bed"]
    cents = np.array([[0.1, 0.9, 0, 0, 0.5], [0, 0, 0.2, 0.8, 0], [0.7, 0.1, 0, 0.1, 0]], np.float32)
    assert naming.term_names(cents, t, terms, n_terms=1) == ["dog", "boat", "cat"]
    two = naming.term_names(cents, t, terms)
    assert two[1] == "boat · car" and two[0].startswith("dog · ") and "dog bed" not in two[0]
    assert naming.unique_names(["a", "", "a", None], ids=[0, 1, 2, -1]) == ["a", "cluster 1", "a (2)", "noise"]


def test_vocabulary_and_candidates():
    vocab = naming.vocabulary()
    assert len(vocab) >= 300 and len(set(vocab)) == len(vocab) and not any(v.startswith("#") for v in vocab)
    assert {"sneaker", "dog", "striped"} <= set(vocab)
    terms, src = naming.candidate_terms(["Sneaker", "my class"], ["sneaker", "dog"])
    assert terms == ["Sneaker", "my class", "dog"] and src.tolist() == [-1, -1, 1]


def test_names_with_a_tiny_openclip(ws, monkeypatch):
    from curation.features import embed, text
    from curation.features.encoders import get_encoder, register_tiny_openclip

    name = register_tiny_openclip()
    enc = get_encoder(name, device="cpu")
    x, _ = _blobs(3, n=30, dim=enc.dim, seed=2)
    ws.store.add_classes(["sneaker", "my odd class"])
    emb = _emb(x, encoder=name, encoder_id=enc.id)
    C.compute_clusters(ws, emb, k=3)
    cl = C.load_clustering(ws, emb)
    terms, _ = naming.candidate_terms(ws.store.class_names(), naming.vocabulary())
    assert cl.names is not None and len(cl.names) == 3
    assert all(0 < len(n.split(naming.SEP)) <= 2 and set(n.split(naming.SEP)) <= set(terms) for n in cl.names)
    assert ws.artifacts.list()["kind"].eq(embed.TEXT_KIND).sum() == 2  # vocabulary + class names, cached
    monkeypatch.setattr(text, "text_embeddings", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-encoded")))
    assert naming.compute_names(ws, emb, cl.key) == cl.names
    table = cl.summary(ws.store.label_matrix(emb.ids), ws.store.class_names())
    assert table["name"].tolist() == naming.unique_names(cl.names)


# ---------------------------------------------------------------------- pockets
def test_pockets_found_in_a_blob_with_a_pocket():
    x, truth = _pocket_case()
    lab = C.cluster(x, k=2)
    big = lab[0]
    assert (lab[truth == 1] == big).all()  # the coarse clustering swallowed the pocket
    ids = np.arange(1000, 1000 + len(x))
    df = pockets.find_pockets(x, lab, ids=ids)
    assert len(df) == 1 and list(df.columns) == pockets.COLUMNS
    p = df.iloc[0]
    assert p["cluster"] == big and set(p["ids"]) == set(ids[truth == 1]) and p["size"] == 25
    assert p["distinctness"] > 1.5 and p["tightness"] > 1.2 and p["separation"] > 0.5
    plain = pockets.find_pockets(x[truth != 1], lab[truth != 1])
    assert plain.empty  # no pocket without one planted
    assert pockets.find_pockets(x, lab, clusters=[1 - big]).empty


# ---------------------------------------------------------------------- workspace
@pytest.mark.slow
def test_compute_clusters_cached_and_current(ws, blobs, monkeypatch):
    x, _ = blobs
    emb = _emb(x)
    df = C.compute_clusters(ws, emb, k=6)
    assert df.index.name == "id" and list(df.index[:2]) == [5, 6] and df["cluster"].nunique() == 6
    assert C.load_clusters(ws, emb)["cluster"].equals(df["cluster"])  # the one in use
    auto = C.compute_clusters(ws, emb)
    cl = C.load_clustering(ws, emb)
    assert cl.k is None and cl.k_used == 6 and cl.method == "kmeans" and cl.names is None
    assert cl.silhouette["silhouette"].idxmax() == 6 and cl.silhouette["se"].notna().all()
    assert cl.centroids.shape == (6, x.shape[1]) and cl.medoids.shape == (6, C.N_MEDOIDS)
    assert np.isin(cl.medoids, emb.ids).all() and (cl.labels[np.searchsorted(emb.ids, cl.medoids[:, 0])] ==
                                                  cl.clusters).all()
    np.testing.assert_array_equal(cl.members(0), emb.ids[auto["cluster"].to_numpy() == 0])
    hd = C.compute_clusters(ws, emb, method="hdbscan", current=False)
    assert hd.index.equals(df.index) and (hd["cluster"] >= -1).all()
    assert C.load_clustering(ws, emb).method == "kmeans"  # computing HDBSCAN aside did not switch clusterings
    monkeypatch.setattr(C, "fit_clusters", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert C.compute_clusters(ws, emb, k=6)["cluster"].equals(df["cluster"])
    assert C.load_clustering(ws, emb).k == 6 and len(C.load_clustering(ws, emb).silhouette) == 0
    assert C.load_clusters(ws, emb, method="hdbscan") is not None
