"""Cluster-balanced subsets: SemDeDup on the kNN graph, even allocation, hard examples, workspace and export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_ui import embedded, workspace  # noqa: F401 (fixtures)

from curation.labels import subsets as S


def test_semdedup_keeps_one_of_each_duplicate_group_by_priority():
    idx = np.array([[1, 2], [0, 2], [0, 1], [0, 1]])
    sims = np.array([[0.99, 0.5], [0.99, 0.5], [0.5, 0.5], [0.2, 0.2]], np.float32)
    keep = S.semdedup(idx, sims, threshold=0.95)
    assert keep.tolist() == [True, False, True, True]  # row 0 wins by default priority
    keep = S.semdedup(idx, sims, threshold=0.95, priority=np.array([0.0, 1.0, 0.0, 0.0]))
    assert keep.tolist() == [False, True, True, True]
    # equal priority: exactly one twin survives
    keep = S.semdedup(idx, sims, threshold=0.95, priority=np.zeros(4))
    assert keep[:2].sum() == 1
    with pytest.raises(S.SubsetError, match="threshold"):
        S.semdedup(idx, sims, threshold=0.0)


def test_even_allocation_water_fills():
    assert S.even_allocation(np.array([1, 10, 10]), 9).tolist() == [1, 4, 4]
    assert S.even_allocation(np.array([2, 2, 2]), 100).tolist() == [2, 2, 2]
    a = S.even_allocation(np.array([5, 3, 7, 1]), 10)
    assert a.sum() == 10 and (a <= [5, 3, 7, 1]).all() and a.max() - a[a < [5, 3, 7, 1]].min() <= 1


def test_weighted_allocation_one_each_then_by_size():
    sizes = np.array([100, 10, 10, 0])
    assert S.weighted_allocation(sizes, 2).tolist() == [1, 1, 0, 0]  # fewer picks than groups: the largest
    assert S.weighted_allocation(sizes, 24, balance=0.0).tolist() == [20, 2, 2, 0]  # by size
    assert S.weighted_allocation(np.array([100, 1, 1]), 10, balance=0.0).tolist() == [8, 1, 1]  # one each
    even = S.weighted_allocation(sizes, 24, balance=1.0)
    assert even.tolist() == [8, 8, 8, 0] and S.even_allocation(sizes, 24).tolist() == [8, 8, 8, 0]
    assert S.weighted_allocation(sizes, 500, balance=0.5).tolist() == [100, 10, 10, 0]
    a = S.weighted_allocation(np.array([3, 50, 7]), 30, balance=0.5)
    assert a.sum() == 30 and a[0] <= 3 and a[1] > a[2]
    with pytest.raises(S.SubsetError, match="balance"):
        S.weighted_allocation(sizes, 5, balance=2.0)


def test_balanced_subset_covers_clusters_evenly_and_drops_duplicates(blobs):
    x, y = blobs
    # an imbalanced pool: class 0 keeps 100 images, the others 20; plus 50 exact copies of class-0 images
    rows = np.r_[np.flatnonzero(y == 0), *[np.flatnonzero(y == k)[:20] for k in range(1, 6)]]
    xs, ys = x[rows], y[rows]
    xs = np.concatenate([xs, xs[:50]])
    ys = np.concatenate([ys, ys[:50]])
    sub = S.balanced_subset(xs, 30, k=6, balance=1.0, seed=0)
    assert len(sub.ids) == 30 and len(np.unique(sub.ids)) == 30
    assert sub.duplicates_removed >= 50
    counts = np.bincount(ys[sub.ids], minlength=6)
    assert counts.min() >= 4, counts  # random would give class 0 about 19 of 30
    rand = np.bincount(ys[S.random_subset(np.arange(len(xs)), 30, seed=0)], minlength=6)
    assert counts.std() < rand.std()
    # one image per cluster: "auto" takes each cluster's most typical image, like "typical"
    lab = np.repeat(np.arange(6), 40)[: len(xs)]
    lab = np.r_[lab, np.full(len(xs) - len(lab), 5)]
    t = S.balanced_subset(xs, 6, clusters=lab, within="typical", dedup_threshold=None)
    a = S.balanced_subset(xs, 6, clusters=lab, within="auto", dedup_threshold=None, seed=3)
    assert sorted(t.ids.tolist()) == sorted(a.ids.tolist())
    r = S.balanced_subset(xs, 48, clusters=lab, within="auto", dedup_threshold=None, balance=1.0, seed=3)
    assert set(t.ids.tolist()) <= set(r.ids.tolist()) and np.bincount(lab[r.ids]).tolist() == [8] * 6
    # above TYPICAL_SHARE of the candidates "auto" is a plain stratified draw: the typical ones are not forced in
    big = S.balanced_subset(xs, 120, clusters=lab, within="auto", dedup_threshold=None, balance=1.0, seed=3)
    rand = S.balanced_subset(xs, 120, clusters=lab, within="random", dedup_threshold=None, balance=1.0, seed=3)
    assert sorted(big.ids.tolist()) == sorted(rand.ids.tolist())
    hard = np.full(len(xs), np.nan)
    hard[[200, 201, 202]] = [0.01, 0.02, 0.03]
    sub = S.balanced_subset(xs, 10, k=6, hard_scores=hard, hard_fraction=0.3, within="random", seed=1)
    assert sub.ids[:3].tolist() == [200, 201, 202]
    assert (sub.table["reason"] == "hard").sum() == 3
    with pytest.raises(S.SubsetError, match="hard_scores"):
        S.balanced_subset(xs, 10, hard_fraction=0.5)
    with pytest.raises(S.SubsetError, match="within"):
        S.balanced_subset(xs, 10, within="nope")


def test_workspace_subset_and_export(embedded, tmp_path):  # noqa: F811
    from curation.features.embed import load_embeddings

    emb = load_embeddings(embedded)
    sub = S.workspace_subset(embedded, emb, 0.25, seed=0)
    assert len(sub.ids) == 15 and set(sub.ids.tolist()) <= set(emb.ids.tolist())
    lab = S.workspace_subset(embedded, emb, 6, scope="unlabelled")
    m = embedded.store.label_matrix(lab.ids)
    assert (m != 1).all()
    out = S.write_subset(sub, tmp_path / "sub.csv", ws=embedded)
    df = pd.read_csv(out)
    assert df["id"].tolist() == sub.ids.tolist() and df["path"].str.endswith(".png").all()
    txt = S.write_subset(sub, tmp_path / "ids.txt")
    assert txt.read_text().split() == [str(i) for i in sub.ids]
    with pytest.raises(S.SubsetError, match="scope"):
        S.workspace_subset(embedded, emb, 5, scope="nope")
