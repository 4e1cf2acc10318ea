"""Tests for curation.suggest: neighbour vote (single and multi-label) and the suggestions() contract."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from curation import neighbors, suggest


@pytest.fixture(scope="module")
def graph(blobs):
    x, _ = blobs
    return neighbors.knn(x, k=15)


def test_vote_recovers_held_out_labels(blobs, graph):
    _, y = blobs
    idx, sims = graph
    rng = np.random.default_rng(0)
    lm = np.zeros((600, 6), np.int8)
    known = rng.random(600) < 0.3
    lm[np.flatnonzero(known), y[known]] = 1
    probs, conf = suggest.neighbor_vote(lm, idx, sims)
    assert probs.shape == (600, 6) and probs.dtype == np.float32 and conf.shape == (600,)
    held = ~known
    assert (probs.argmax(1)[held] == y[held]).mean() > 0.97
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert ((conf > 0) & (conf <= 1)).all()


def test_vote_ignores_own_label(blobs, graph):
    _, y = blobs
    idx, sims = graph
    lm = np.zeros((600, 6), np.int8)
    lm[np.arange(600), y] = 1
    wrong = np.arange(0, 600, 50)
    lm[wrong] = 0
    lm[wrong, (y[wrong] + 1) % 6] = 1          # flipped labels
    probs, _ = suggest.neighbor_vote(lm, idx, sims)
    assert (probs.argmax(1)[wrong] == y[wrong]).all()   # suggestion disagrees with the (wrong) label


def test_vote_fallback_two_hops():
    # chain 0-1-2-3: only 3 is labelled; 0's neighbours (1) are unlabelled -> 2-hop evidence, lower confidence
    idx = np.array([[1, 2], [0, 2], [1, 3], [2, 1]])
    sims = np.full((4, 2), 0.9, np.float32)
    lm = np.zeros((4, 2), np.int8)
    lm[3, 1] = 1
    probs, conf = suggest.neighbor_vote(lm, idx, sims)
    assert probs[2].argmax() == 1 and probs[1].argmax() == 1
    assert probs[0].argmax() == 1 and conf[0] < conf[2]
    # the labelled sample itself has no other labelled evidence: no leak of its own label
    assert conf[3] == 0 and probs[3].sum() == 0
    one_hop, c1 = suggest.neighbor_vote(lm, idx, sims, hops=1)
    assert c1[0] == 0


def test_multilabel_vote():
    idx = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
    sims = np.full((4, 3), 0.9, np.float32)
    lm = np.zeros((4, 3), np.int8)
    lm[1] = [1, 1, 0]
    lm[2] = [1, 0, 0]
    lm[3] = [1, -1, 0]
    probs, conf = suggest.neighbor_vote(lm, idx, sims, task="multi")
    assert probs[0, 0] > 0.7                 # all labelled neighbours carry class 0
    assert probs[0, 1] < 0.5                 # one positive, one rejection, one without it
    assert probs[0, 2] < 0.1
    assert conf[0] == pytest.approx(probs[0].max())
    with pytest.raises(ValueError):
        suggest.neighbor_vote(lm, idx, sims, task="both")


def _register(ws, tmp_path, y: np.ndarray, labelled: np.ndarray):
    n = len(y)
    records = pd.DataFrame({"path": [f"img{i}.png" for i in range(n)], "sha1": [f"{i:040x}" for i in range(n)],
                            "bytes": 100, "width": 8, "height": 8})
    names = [f"c{c}" for c in range(6)]
    ws.store.add_classes(names)
    labels = [[names[y[i]]] if labelled[i] else [] for i in range(n)]
    ids, _ = ws.store.add_samples(ws.store.root_id(tmp_path), records, labels=labels)
    return ids


def test_suggestions_contract_and_cache(ws, tmp_path, blobs, monkeypatch):
    x, y = blobs
    labelled = np.arange(600) % 3 == 0
    ids = _register(ws, tmp_path, y, labelled)
    emb = SimpleNamespace(ids=np.sort(ids), vectors=x, key="blobs")
    df = suggest.suggestions(ws, emb)
    assert df.index.name == "id" and (df.index.to_numpy() == emb.ids).all()
    assert list(df.columns) == suggest.COLUMNS
    assert df["class_idx"].dtype == np.int64 and df["label_idx"].dtype == np.int64
    assert df["agrees"].dtype == bool and (df["source"] == "knn").all()
    assert (df["class_name"] == [f"c{c}" for c in y]).mean() > 0.97
    assert (df.loc[emb.ids[~labelled], "label_idx"] == -1).all()
    assert df.loc[emb.ids[labelled], "agrees"].mean() > 0.97
    assert suggest.load_suggestion_probs(ws, emb).shape == (600, 6)
    # cached until a label changes
    monkeypatch.setattr(suggest, "neighbor_vote", lambda *a, **k: pytest.fail("recomputed"))
    pd.testing.assert_frame_equal(suggest.suggestions(ws, emb), df)
    monkeypatch.undo()
    ws.store.set_label([int(emb.ids[1])], ws.store.class_id("c5"))
    df2 = suggest.suggestions(ws, emb)
    assert df2.loc[emb.ids[1], "label_idx"] == 5


def test_suggestions_without_classes(ws, tmp_path, blobs):
    x, _ = blobs
    records = pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "sha1": ["1" * 40, "2" * 40, "3" * 40],
                            "bytes": 1, "width": 1, "height": 1})
    ids, _ = ws.store.add_samples(ws.store.root_id(tmp_path), records)
    emb = SimpleNamespace(ids=ids, vectors=x[:3], key="tiny")
    df = suggest.suggestions(ws, emb)
    assert len(df) == 3 and (df["class_idx"] == -1).all() and (df["confidence"] == 0).all()
