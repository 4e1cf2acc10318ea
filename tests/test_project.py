"""Tests for curation.features.project: UMAP on the faiss graph, PCA, normalisation, caching."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from curation.features import project


def _knn_accuracy(coords: np.ndarray, y: np.ndarray, k: int = 5) -> float:
    d = ((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :k]
    votes = np.apply_along_axis(np.bincount, 1, y[nn], minlength=y.max() + 1)
    return float((votes.argmax(1) == y).mean())


@pytest.fixture(scope="module")
def mapped(tmp_path_factory, blobs):
    """One workspace and one UMAP fit shared by the tests of this module."""
    from curation.data.workspace import Workspace

    ws = Workspace.create(tmp_path_factory.mktemp("map") / "ws")
    x, y = blobs
    emb = SimpleNamespace(ids=np.arange(1, 601, dtype=np.int64), vectors=x, key="blobs")
    coords = project.compute_map(ws, emb, method="umap")
    return ws, emb, coords, y


@pytest.mark.slow
def test_umap_keeps_blob_separation(mapped):
    ws, emb, coords, y = mapped
    assert coords.shape == (600, 2) and coords.dtype == np.float32
    assert np.isfinite(coords).all()
    assert _knn_accuracy(coords, y) > 0.98
    assert np.abs(coords).max() < 50 and np.ptp(coords, axis=0).max() > 10  # normalised to about [-10, 10]


def test_map_cache_hit_returns_identical_without_recompute(mapped, monkeypatch):
    ws, emb, coords, _ = mapped
    monkeypatch.setattr(project, "umap_map", lambda *a, **k: pytest.fail("recomputed"))
    again = project.compute_map(ws, emb, method="umap")
    np.testing.assert_array_equal(again, coords)
    np.testing.assert_array_equal(project.load_map(ws, emb, method="umap"), coords)
    assert project.load_map(ws, emb, method="umap", min_dist=0.5) is None
    assert ws.artifacts.list()["kind"].eq("knn").sum() == 1  # UMAP used the shared kNN graph


def test_sampled_fit_places_and_refines_the_rest(blobs):
    x, y = blobs
    coords = project.umap_map(x, k=10, sample_limit=300)
    assert coords.shape == (600, 2) and np.isfinite(coords).all()
    assert _knn_accuracy(coords, y) > 0.95
    np.testing.assert_array_equal(coords, project.umap_map(x, k=10, sample_limit=300))  # seeded: same map
    placed_only = project.umap_map(x, k=10, sample_limit=300, refine_epochs=0)
    assert _knn_accuracy(placed_only, y) > 0.95 and not np.array_equal(placed_only, coords)


def test_place_out_of_sample_uses_an_approximate_index_above_its_limit(blobs, monkeypatch):
    from curation.features import neighbors

    x, y = blobs
    anchors = np.array([[10, 0], [0, 10], [0, 0]], np.float32)
    group = np.minimum(y, 2)  # blobs 0 and 1 each at their own anchor, the other four at the origin
    fit = np.arange(0, 600, 2)
    fit_coords = anchors[group[fit]] + np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32)
    kinds = []
    build = neighbors.build_index
    monkeypatch.setattr(neighbors, "build_index", lambda v, **kw: kinds.append(kw["kind"]) or build(v, **kw))
    monkeypatch.setattr(project, "PLACE_EXACT_LIMIT", 100)
    placed = project.place_out_of_sample(x[fit], fit_coords, x[fit + 1], k=10, refine_epochs=0)
    assert kinds == ["ivf"]
    nearest = np.argmin(((placed[:, None] - anchors[None]) ** 2).sum(-1), 1)
    assert np.mean(nearest == group[fit + 1]) > 0.9  # each new point lands at its blob's anchor


def test_reproducible_full_fit_is_deterministic(blobs):
    from curation.features.neighbors import knn

    x, _ = blobs
    idx, sims = knn(x, k=14)
    a = project.umap_map(x, idx=idx, sims=sims, reproducible=True, seed=3)
    np.testing.assert_array_equal(a, project.umap_map(x, idx=idx, sims=sims, reproducible=True, seed=3))
    assert not np.array_equal(a, project.umap_map(x, idx=idx, sims=sims, reproducible=True, seed=4))


@pytest.mark.slow
def test_fast_map_is_cached_apart_and_latest_map_finds_the_newest(tmp_path, blobs):
    from curation.data.workspace import Workspace

    ws = Workspace.create(tmp_path / "ws")
    x, y = blobs
    emb = SimpleNamespace(ids=np.arange(600, dtype=np.int64), vectors=x, key="blobs-fast")
    assert project.latest_map(ws, emb) is None
    seeded = project.compute_map(ws, emb, reproducible=True)
    assert project.latest_map(ws, emb)[1]["reproducible"] is True
    fast = project.compute_map(ws, emb, reproducible=False)  # parallel: its own artifact
    coords, config = project.latest_map(ws, emb)
    assert config["reproducible"] is False and config["algorithm"] == project.ALGORITHM
    np.testing.assert_array_equal(coords, fast)
    assert _knn_accuracy(fast, y) > 0.98
    np.testing.assert_array_equal(project.load_map(ws, emb, reproducible=True), seeded)
    assert project.latest_map(ws, emb, method="pca") is None


def test_pca_map_and_small_sets(ws, blobs):
    x, y = blobs
    p = project.pca_map(x)
    assert _knn_accuracy(p, y) > 0.9  # the instant layout separates the blobs too
    assert p.shape == (600, 2) and p.dtype == np.float32
    np.testing.assert_array_equal(p, project.pca_map(x))
    emb = SimpleNamespace(ids=np.arange(600, dtype=np.int64), vectors=x, key="blobs")
    np.testing.assert_array_equal(project.compute_map(ws, emb, method="pca"), p)
    assert project.umap_map(x[:10]).shape == (10, 2)  # too few for UMAP: PCA
    assert project.pca_map(np.zeros((0, 4), np.float32)).shape == (0, 2)
    with pytest.raises(ValueError, match="use one of"):
        project.compute_map(ws, emb, method="tsne")


def test_warm_umap_idempotent():
    project.warm_umap(parallel=False)
    assert "serial" in project._warmed
    project.warm_umap(parallel=False)
