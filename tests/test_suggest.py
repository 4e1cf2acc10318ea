"""Tests for curation.labels.suggest: the vote, label propagation, zero-shot, the model source, the calibrated
ensemble of the workspace, and the cheap / expensive split of recomputation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from curation.features import neighbors
from curation.labels import oof, suggest, vote


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
    probs, conf = vote.neighbor_vote(lm, idx, sims)
    assert probs.shape == (600, 6) and probs.dtype == np.float32 and conf.shape == (600,)
    held = ~known
    assert (probs.argmax(1)[held] == y[held]).mean() > 0.97
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert ((conf > 0) & (conf <= 1)).all()


def _flipped(y: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """(N, 6) label matrix of ``y`` with the labels of ``wrong`` moved to the next class."""
    lm = np.zeros((len(y), 6), np.int8)
    lm[np.arange(len(y)), np.where(np.isin(np.arange(len(y)), wrong), (y + 1) % 6, y)] = 1
    return lm


def test_vote_ignores_own_label(blobs, graph):
    _, y = blobs
    idx, sims = graph
    wrong = np.arange(0, 600, 50)
    lm = _flipped(y, wrong)
    probs, _ = vote.neighbor_vote(lm, idx, sims)
    assert (probs.argmax(1)[wrong] == y[wrong]).all()   # suggestion disagrees with the (wrong) label


def test_vote_fallback_two_hops():
    # chain 0-1-2-3: only 3 is labelled; 0's neighbours (1) are unlabelled -> 2-hop evidence, lower confidence
    idx = np.array([[1, 2], [0, 2], [1, 3], [2, 1]])
    sims = np.full((4, 2), 0.9, np.float32)
    lm = np.zeros((4, 2), np.int8)
    lm[3, 1] = 1
    probs, conf = vote.neighbor_vote(lm, idx, sims)
    assert probs[2].argmax() == 1 and probs[1].argmax() == 1
    assert probs[0].argmax() == 1 and conf[0] < conf[2]
    # the labelled sample itself has no other labelled evidence: no leak of its own label
    assert conf[3] == 0 and probs[3].sum() == 0
    one_hop, c1 = vote.neighbor_vote(lm, idx, sims, hops=1)
    assert c1[0] == 0


def test_multilabel_vote():
    idx = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
    sims = np.full((4, 3), 0.9, np.float32)
    lm = np.zeros((4, 3), np.int8)
    lm[1] = [1, 1, 0]
    lm[2] = [1, 0, 0]
    lm[3] = [1, -1, 0]
    probs, conf = vote.neighbor_vote(lm, idx, sims, task="multi")
    assert probs[0, 0] > 0.7                 # all labelled neighbours carry class 0
    assert probs[0, 1] < 0.5                 # one positive, one rejection, one without it
    assert probs[0, 2] < 0.1
    assert conf[0] == pytest.approx(probs[0].max())
    with pytest.raises(ValueError):
        vote.neighbor_vote(lm, idx, sims, task="both")


def _chains(n_per: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two separate chains of ``n_per`` nodes (each node's neighbours: the previous and next node)."""
    n = 2 * n_per
    pos = np.arange(n) % n_per
    left = np.where(pos > 0, np.arange(n) - 1, np.arange(n) + 1)
    right = np.where(pos < n_per - 1, np.arange(n) + 1, np.arange(n) - 1)
    idx = np.c_[left, right]
    sims = np.full((n, 2), 0.95, np.float32)
    return idx, sims, np.repeat([0, 1], n_per)


def test_label_propagation_reaches_unlabelled_regions():
    idx, sims, y = _chains()
    lm = np.zeros((60, 2), np.int8)
    lm[[0, 30], [0, 1]] = 1                     # only the first node of each chain is labelled
    _, conf = vote.neighbor_vote(lm, idx, sims)
    assert (conf == 0).sum() > 50               # the vote reaches 2 hops at most
    p = suggest.label_propagation(lm, idx, sims)   # 30 iterations: 29 hops away still reached
    assert p.shape == (60, 2) and p.dtype == np.float32
    assert (p.sum(1) > 0).all() and (p.argmax(1) == y).all()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert p[1, 0] > p[28, 0]                    # farther from the label: flatter
    pm = suggest.label_propagation(lm, idx, sims, task="multi")
    assert (pm.argmax(1) == y).all()


def test_label_propagation_folds_never_use_own_label(blobs, graph):
    _, y = blobs
    idx, sims = graph
    wrong = np.arange(7, 600, 40)
    lm = _flipped(y, wrong)
    given = (y[wrong] + 1) % 6
    seeded = suggest.label_propagation(lm, idx, sims)              # every label a seed, its own included
    held = suggest.label_propagation(lm, idx, sims, folds=5)       # a labelled row never sees its own label
    assert (held[wrong, given] < seeded[wrong, given]).all()
    assert (held[wrong].argmax(1) == y[wrong]).all()
    unl = np.setdiff1d(np.arange(600), wrong)
    lm2 = lm.copy()
    lm2[unl[::2]] = 0                                              # unlabelled rows: propagation from every label
    both = suggest.label_propagation(lm2, idx, sims, folds=5)
    np.testing.assert_allclose(both[unl[::2]], suggest.label_propagation(lm2, idx, sims)[unl[::2]], atol=1e-6)


def test_zero_shot_probs_with_constructed_text(blobs):
    x, y = blobs
    centres = np.stack([x[y == c].mean(0) for c in range(6)])
    text = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    p = suggest.zero_shot_probs(x, text)
    assert p.shape == (600, 6) and (p.argmax(1) == y).mean() > 0.97
    pm = suggest.zero_shot_probs(x, text, task="multi", scale=10.0)   # blobs are far apart: no saturation
    assert (pm.argmax(1) == y).mean() > 0.97 and pm.max() <= 1
    with pytest.raises(ValueError, match="same OpenCLIP"):
        suggest.zero_shot_probs(x, text[:, :8])


def test_refit_threshold_rule():
    assert suggest.refit_threshold(0) == 5
    assert suggest.refit_threshold(20) == 20
    assert suggest.refit_threshold(300) == 50
    assert suggest.refit_threshold(10_000) == 200


# ---------------------------------------------------------------------- workspace level
def _register(ws, root, y: np.ndarray, labelled: np.ndarray, names=None):
    n = len(y)
    records = pd.DataFrame({"path": [f"img{i}.png" for i in range(n)], "sha1": [f"{i:040x}" for i in range(n)],
                            "bytes": 100, "width": 8, "height": 8})
    names = names or [f"c{c}" for c in range(6)]
    ws.store.add_classes(names)
    labels = [[names[y[i]]] if labelled[i] else [] for i in range(n)]
    ids, _ = ws.store.add_samples(ws.store.root_id(root), records, labels=labels)
    return np.sort(ids)


@pytest.fixture
def labelled_ws(ws, tmp_path, blobs):
    x, y = blobs
    labelled = np.arange(600) % 3 != 2                  # 400 labelled, 200 to suggest
    ids = _register(ws, tmp_path, y, labelled)
    return ws, SimpleNamespace(ids=ids, vectors=x, key="blobs"), labelled


def test_suggestions_contract(labelled_ws, blobs):
    ws, emb, labelled = labelled_ws
    _, y = blobs
    df = suggest.suggestions(ws, emb)
    assert df.index.name == "id" and (df.index.to_numpy() == emb.ids).all()
    assert list(df.columns) == suggest.COLUMNS + suggest.PROB_COLUMNS
    assert df["class_idx"].dtype == np.int64 and df["label_idx"].dtype == np.int64
    assert df["agrees"].dtype == bool and df["confidence"].between(0, 1).all()
    assert (df["class_name"] == [f"c{c}" for c in y]).mean() > 0.97
    assert (df.loc[emb.ids[~labelled], "label_idx"] == -1).all()
    assert df.loc[emb.ids[labelled], "agrees"].mean() > 0.97
    assert set(df["source"]) <= {"knn+prop+oof", "prop+oof"}
    assert df[["p_prop", "p_oof"]].notna().all(axis=None)
    assert df["p_knn"].notna().sum() > 550 and df["p_knn"].notna().eq(df["source"].str.contains("knn")).all()
    assert df["p_zeroshot"].isna().all() and df["p_model"].isna().all()   # no text tower, no run
    table = suggest.source_table(ws, emb)
    assert list(table.index) == list(suggest.SOURCES)
    assert table.loc["zeroshot", "available"] == False and "text tower" in table.loc["zeroshot", "reason"]  # noqa: E712
    assert "train" in table.loc["model", "reason"]
    assert table.loc[["knn", "prop", "oof"], "available"].all() and table["weight"].sum() > 0
    assert table.attrs["fitted"] and table.attrs["ece_pooled"] <= table.attrs["ece_mean"] + 1e-9
    assert suggest.load_suggestion_probs(ws, emb).shape == (600, 6)


def test_suggestions_without_classes(ws, tmp_path, blobs):
    x, _ = blobs
    records = pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "sha1": ["1" * 40, "2" * 40, "3" * 40],
                            "bytes": 1, "width": 1, "height": 1})
    ids, _ = ws.store.add_samples(ws.store.root_id(tmp_path), records)
    emb = SimpleNamespace(ids=ids, vectors=x[:3], key="tiny")
    df = suggest.suggestions(ws, emb)
    assert len(df) == 3 and (df["class_idx"] == -1).all() and (df["confidence"] == 0).all()
    assert (df["source"] == "").all() and df["p_knn"].isna().all()


@pytest.mark.slow
def test_single_edit_keeps_the_fit_enough_edits_refit(labelled_ws, blobs, monkeypatch):
    ws, emb, labelled = labelled_ws
    _, y = blobs
    calls = []
    real = oof.out_of_fold_probs
    monkeypatch.setattr(oof, "out_of_fold_probs", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = suggest.label_state(ws, emb)
    assert len(calls) == 1 and first.info["refitted"]
    key = first.info["fit_key"]
    sid = int(emb.ids[0])                                # labelled c{y[0]}: relabel it
    new = (int(y[0]) + 3) % 6
    ws.store.set_label([sid], ws.store.class_id(f"c{new}"))
    df = suggest.suggestions(ws, emb)
    assert len(calls) == 1                               # no refit of the expensive part...
    assert suggest.fit_status(ws, emb)["key"] == key and suggest.fit_status(ws, emb)["changed"] == 1
    assert df.loc[sid, "label_idx"] == new and not df.loc[sid, "agrees"]   # ...but the cheap part follows
    assert df.loc[sid, "class_idx"] == y[0]
    # relabel more samples than the rule allows (50 of 400): the next call refits
    todo = emb.ids[labelled & (y != 0)][:50]            # 50 + the one above = 51 changed samples
    ws.store.set_label(todo, ws.store.class_id("c0"))
    assert suggest.fit_status(ws, emb)["stale"]
    state = suggest.label_state(ws, emb)
    assert len(calls) == 2 and state.info["fit_key"] != key and not suggest.fit_status(ws, emb)["stale"]
    assert not ws.artifacts.exists(suggest.FIT_KIND, key)          # the superseded fit is deleted
    # adding a class refits at once
    ws.store.add_classes(["extra"])
    assert suggest.fit_status(ws, emb)["stale"]


@pytest.mark.slow
def test_model_source_only_on_held_out_samples(labelled_ws, blobs):
    from curation.models.runs import run_training

    ws, emb, labelled = labelled_ws
    _, y = blobs
    run_id = run_training(ws, {"epochs": 20, "device": "cpu"}, emb=emb)
    metrics = ws.store.run(run_id)["metrics"]
    val = np.asarray(metrics["val_ids"], np.int64)
    state = suggest.label_state(ws, emb)
    assert state.info["run_id"] == run_id and "model" in state.sources
    has = np.isfinite(state.sources["model"]).all(1)
    trained = labelled & ~np.isin(emb.ids, val)
    assert not has[trained].any()                        # never scored by a model that saw its label
    assert has[~trained].all() and np.isin(emb.ids, val).sum() > 0
    df = suggest.suggestion_frame(state)
    assert df.loc[emb.ids[trained], "p_model"].isna().all()
    assert df.loc[emb.ids[~labelled], "p_model"].notna().all()
    assert (df.loc[emb.ids[~labelled], "class_idx"].to_numpy() == y[~labelled]).mean() > 0.97
    assert df.loc[emb.ids[~labelled], "source"].str.contains("model").all()
    assert state.info["sources"]["model"]["weight"] >= 0


@pytest.mark.slow
def test_zero_shot_source_with_tiny_openclip_follows_prompts(ws, tmp_path, blobs):
    from curation.features.encoders import register_tiny_openclip

    x, y = blobs
    labelled = np.arange(600) % 2 == 0
    ids = _register(ws, tmp_path, y, labelled, names=["cat", "dog", "car", "tree", "ship", "cup"])
    emb = SimpleNamespace(ids=ids, vectors=x, key="blobs-tiny", has_text=True, encoder_name=register_tiny_openclip())
    state = suggest.label_state(ws, emb)
    assert "zeroshot" in state.sources and state.info["sources"]["zeroshot"]["available"]
    zs = state.sources["zeroshot"]
    assert zs.shape == (600, 6) and np.isfinite(zs).all()
    np.testing.assert_allclose(zs.sum(1), 1.0, atol=1e-4)
    df = suggest.suggestion_frame(state)
    assert df["p_zeroshot"].notna().all() and df["source"].str.contains("zeroshot").all()
    fit_key, ens_key, token = state.info["fit_key"], state.info["ensemble_key"], suggest.state_token(ws)
    ws.store.set_prompt(ws.store.class_id("cat"), "a tabby kitten\na photo of a {} on a sofa")
    after = suggest.label_state(ws, emb)
    assert after.info["fit_key"] == fit_key                       # a prompt edit refits no head...
    assert after.info["ensemble_key"] != ens_key                  # ...but the zero-shot source and the pool
    assert not np.allclose(after.sources["zeroshot"], zs)
    assert suggest.state_token(ws) != token                       # the app's loaders see the edit
