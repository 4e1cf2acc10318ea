"""Tests for curation.project: UMAP on the faiss graph, PCA, normalisation, caching."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from curation import project


def _knn_accuracy(coords: np.ndarray, y: np.ndarray, k: int = 5) -> float:
    d = ((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :k]
    votes = np.apply_along_axis(np.bincount, 1, y[nn], minlength=y.max() + 1)
    return float((votes.argmax(1) == y).mean())


@pytest.fixture(scope="module")
def mapped(tmp_path_factory, blobs):
    """One workspace and one UMAP fit shared by the tests of this module."""
    from curation.workspace import Workspace

    ws = Workspace.create(tmp_path_factory.mktemp("map") / "ws")
    x, y = blobs
    emb = SimpleNamespace(ids=np.arange(1, 601, dtype=np.int64), vectors=x, key="blobs")
    coords = project.compute_map(ws, emb, method="umap")
    return ws, emb, coords, y


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


def test_sampled_fit_places_the_rest(blobs):
    x, y = blobs
    coords = project.umap_map(x, k=10, sample_limit=300)
    assert coords.shape == (600, 2) and np.isfinite(coords).all()
    assert _knn_accuracy(coords, y) > 0.95


def test_pca_map_and_small_sets(ws, blobs):
    x, y = blobs
    p = project.pca_map(x)
    assert p.shape == (600, 2) and p.dtype == np.float32
    np.testing.assert_array_equal(p, project.pca_map(x))
    emb = SimpleNamespace(ids=np.arange(600, dtype=np.int64), vectors=x, key="blobs")
    np.testing.assert_array_equal(project.compute_map(ws, emb, method="pca"), p)
    assert project.umap_map(x[:10]).shape == (10, 2)  # too few for UMAP: PCA
    assert project.pca_map(np.zeros((0, 4), np.float32)).shape == (0, 2)
    with pytest.raises(ValueError, match="choose one of"):
        project.compute_map(ws, emb, method="tsne")


def test_warm_umap_idempotent():
    project.warm_umap(parallel=False)
    assert "serial" in project._warmed
    project.warm_umap(parallel=False)
