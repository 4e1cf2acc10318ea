"""Heads on embeddings, runs in a workspace, checkpoints, cancel, run comparison."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from curation.core.progress import Cancelled
from curation.core.vocab import POSITIVE, REJECTED
from curation.data.pins import pin, pinned, unpin
from curation.data.workspace import Workspace
from curation.models.heads import HeadConfig, TrainingCancelled, TrainingError, hash_unit, pick_device, train_head
from curation.models.runs import compare_runs, latest_run, load_head, load_predictions, run_training, split_labelled

FAST = {"epochs": 30, "lr": 1e-2, "batch_size": 0, "patience": 0}


def _acc(head, X, y):
    return float((head.predict_proba(X).argmax(1) == y).mean())


# ---------------------------------------------------------------------- heads
def test_pick_device():
    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") in ("cpu", "cuda", "mps")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="auto"):
            pick_device("cuda")


@pytest.mark.slow
def test_linear_head_reaches_planted_accuracy(blobs):
    X, y = blobs
    test = np.arange(len(y)) % 5 == 0
    head = train_head(X[~test], y[~test], config={"epochs": 60})
    assert _acc(head, X[test], y[test]) >= 0.97
    assert head.curves_ and {"epoch", "train_loss", "val_loss", "val_metric"} <= set(head.curves_[0])
    p = head.predict_proba(X[:7])
    assert p.shape == (7, 6) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)


@pytest.mark.slow
def test_mlp_runs_and_reports_progress(blobs):
    X, y = blobs
    seen = []
    head = train_head(X, y, config={"kind": "mlp", "hidden": 32, "epochs": 20, "patience": 0},
                      progress=lambda f, m: seen.append((f, m)))
    assert len(seen) == 20 and seen[-1][0] == 1.0 and "epoch 20/20" in seen[-1][1]
    assert _acc(head, X, y) >= 0.95


@pytest.mark.slow
def test_elr_and_smoothing_run(blobs):
    X, y = blobs
    rng = np.random.default_rng(1)
    noisy = y.copy()
    flip = rng.random(len(y)) < 0.2
    noisy[flip] = rng.integers(0, 6, flip.sum())
    head = train_head(X, noisy, config={**FAST, "elr": True, "label_smoothing": 0.1})
    assert _acc(head, X, y) >= 0.9
    with pytest.raises(TrainingError, match="elr=False"):
        train_head(X, np.zeros((len(X), 2), np.int8) + 1, task="multi", config={"elr": True})


@pytest.mark.slow
def test_class_weight_helps_minority():
    rng = np.random.default_rng(3)
    n_maj, n_min = 1900, 100
    X = np.r_[rng.normal(0, 1, (n_maj, 8)), rng.normal(0, 1, (n_min, 8)) + np.r_[1.5, np.zeros(7)]]
    y = np.r_[np.zeros(n_maj, int), np.ones(n_min, int)]
    Xt = np.r_[rng.normal(0, 1, (500, 8)), rng.normal(0, 1, (500, 8)) + np.r_[1.5, np.zeros(7)]].astype(np.float32)
    yt = np.r_[np.zeros(500, int), np.ones(500, int)]
    rec = {}
    for cw in (False, True):
        h = train_head(X.astype(np.float32), y, config={**FAST, "class_weight": cw, "val_fraction": 0})
        rec[cw] = float((h.predict_proba(Xt).argmax(1)[yt == 1] == 1).mean())
    assert rec[True] > rec[False] + 0.05


def _multi_data(seed=0, n=600):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    true = np.c_[X[:, 0] > 0, X[:, 1] > 0]
    Y = np.where(true, POSITIVE, REJECTED).astype(np.int8)
    hidden = X[:, 2] <= 0          # class b unknown on these rows (positives included)
    Y[hidden, 1] = 0
    return X, Y, true, hidden


@pytest.mark.slow
def test_multilabel_unknown_is_masked_not_negative():
    X, Y, true, hidden = _multi_data()
    cfg = {**FAST, "epochs": 60}
    head = train_head(X, Y, task="multi", config=cfg)
    assert not head.weak_negatives_.any()       # plenty of rejections: strict masking
    p = head.predict_proba(X)
    recall_hidden = float((p[hidden & true[:, 1], 1] >= head.thresholds_[1]).mean())
    assert recall_hidden >= 0.9
    # treating unknown as negative learns the wrong rule (b depends on x2) and misses those positives
    wrong = train_head(X, Y, task="multi", config={**cfg, "unknown_weight": 1.0})
    recall_wrong = float((wrong.predict_proba(X)[hidden & true[:, 1], 1] >= 0.5).mean())
    assert recall_wrong < recall_hidden - 0.3
    assert head.thresholds_.shape == (2,) and ((head.thresholds_ > 0) & (head.thresholds_ < 1)).all()


@pytest.mark.slow
def test_single_positive_data_uses_weak_negatives(blobs):
    X, y = blobs
    Y = np.zeros((len(y), 6), np.int8)
    Y[np.arange(len(y)), y] = POSITIVE      # one positive, nothing rejected
    head = train_head(X, Y, task="multi", config=FAST)
    assert head.weak_negatives_.all()
    p = head.predict_proba(X)
    assert float((p.argmax(1) == y).mean()) >= 0.95
    # without weak negatives every class would drift to "always positive"; with them the others stay low
    assert float(np.median(p[np.arange(len(y)), (y + 1) % 6])) < 0.5


def test_train_head_cancel_keeps_best_weights(blobs):
    X, y = blobs

    def progress(f, m):
        if m.startswith("epoch 3/"):
            raise Cancelled()

    with pytest.raises(TrainingCancelled) as info:
        train_head(X, y, config=FAST, progress=progress)
    head = info.value.head
    assert head is not None and head.cancelled and len(head.curves_) == 3
    assert head.predict_proba(X).shape == (len(X), 6)


def test_hash_split_is_stable_and_seeded():
    ids = np.arange(10_000, dtype=np.int64)
    u = hash_unit(ids, 0)
    assert ((u >= 0) & (u < 1)).all() and abs((u < 0.2).mean() - 0.2) < 0.02
    np.testing.assert_array_equal(hash_unit(ids[5000:], 0), u[5000:])
    assert not np.array_equal(hash_unit(ids, 1), u)
    split, src = split_labelled(ids[:10], np.array([""] * 10, object), np.arange(10) < 8, val_fraction=0.5)
    assert src == "hash" and (split[8:] == "").all() and set(split[:8]) <= {"train", "val"}


# ---------------------------------------------------------------------- runs in a workspace
def _workspace(tmp_path: Path, X: np.ndarray, y: np.ndarray, *, names=None, labelled=None, task="single",
               splits=None):
    ws = Workspace.create(tmp_path / "ws", task=task)
    names = names or [f"c{k}" for k in range(int(np.max(y)) + 1)]
    root = tmp_path / "imgs"
    root.mkdir(exist_ok=True)
    n = len(X)
    rec = pd.DataFrame({"path": [f"{i}.png" for i in range(n)], "sha1": [f"{i:040x}" for i in range(n)],
                        "bytes": 1, "width": 1, "height": 1})
    if splits is not None:
        rec["split"] = splits
    labelled = np.ones(n, bool) if labelled is None else labelled
    if task == "single":
        labels = [[names[int(y[i])]] if labelled[i] else [] for i in range(n)]
    else:
        labels = [[names[k] for k in np.flatnonzero(y[i])] if labelled[i] else [] for i in range(n)]
    ws.store.add_classes(names)
    ids, _ = ws.store.add_samples(ws.store.root_id(root), rec, labels=labels)
    emb = SimpleNamespace(ids=ids, vectors=X, key="fake", encoder_id="fake-enc", encoder_name="fake", device="cpu")
    return ws, emb


@pytest.mark.slow
def test_run_training_records_everything(tmp_path, blobs):
    X, y = blobs
    labelled = np.arange(len(y)) % 4 != 0          # a quarter unlabelled
    ws, emb = _workspace(tmp_path, X, y, labelled=labelled)
    pin(ws, emb.ids[[1, 2, 3, 4]])
    unpin(ws, emb.ids[[4]])
    np.testing.assert_array_equal(pinned(ws), emb.ids[[1, 2, 3]])
    snap = ws.store.last_event_id()
    cfg = {**FAST, "seed": 3}
    run_id = run_training(ws, cfg, emb=emb)
    run = ws.store.run(run_id)
    assert run["status"] == "done" and run["kind"] == "head"
    assert run["config"] == HeadConfig.from_any(cfg).to_dict()
    assert run["last_event_id"] == snap and run["encoder"] == "fake-enc" and run["device"] == pick_device()
    assert run["duration"] > 0 and run["artifact"] == f"checkpoints/run-{run_id}"
    m = run["metrics"]
    json.dumps(m)
    assert m["split_source"] == "hash" and m["n_test"] == 0 and m["test"] == {}
    assert m["n_train"] + m["n_val"] == labelled.sum() and m["n_unlabelled"] == (~labelled).sum()
    val_ids = np.array(m["val_ids"])
    assert set(val_ids) <= set(emb.ids[labelled]) and len(val_ids) == m["n_val"] > 50
    v = m["val"]
    assert v["accuracy"] >= 0.95 and len(v["per_class"]) == 6 and np.array(v["confusion"]).shape == (6, 6)
    assert np.array(v["confusion"]).sum() == m["n_val"] and len(v["reliability"]) == 15
    assert m["headline_split"] == "val" and m["accuracy"] == v["accuracy"] and m["per_class"] == v["per_class"]
    assert m["pinned_accuracy"] == 1.0
    assert m["pinned"]["n"] == 3 and m["pinned"]["accuracy"] == 1.0 and m["pinned"]["failed_ids"] == []
    assert len(m["curves"]) == FAST["epochs"]
    ids, probs = load_predictions(ws, run_id)
    np.testing.assert_array_equal(ids, emb.ids)
    assert probs.shape == (len(X), 6)
    head = load_head(ws, run_id)
    np.testing.assert_array_equal(head.predict_proba(X), probs)
    assert latest_run(ws)["id"] == run_id
    assert load_predictions(ws, 999) is None


def test_run_training_uses_store_splits(tmp_path, blobs):
    X, y = blobs
    splits = np.array(["train", "train", "val", "test", ""] * (len(y) // 5), object)
    ws, emb = _workspace(tmp_path, X, y, splits=splits)
    run_id = run_training(ws, FAST, emb=emb)
    m = ws.store.run(run_id)["metrics"]
    assert m["split_source"] == "store"
    assert m["n_val"] == (splits == "val").sum() and m["n_test"] == (splits == "test").sum()
    assert m["n_train"] == (splits == "train").sum() + (splits == "").sum()
    assert m["test"]["accuracy"] >= 0.95
    np.testing.assert_array_equal(m["test_ids"], emb.ids[splits == "test"])


@pytest.mark.slow
def test_run_training_multilabel(tmp_path):
    X, Y, true, _ = _multi_data(n=300)
    ws, emb = _workspace(tmp_path, X, true.astype(int), names=["a", "b"], task="multi")
    run_id = run_training(ws, FAST, emb=emb)
    m = ws.store.run(run_id)["metrics"]
    assert m["task"] == "multi" and len(m["thresholds"]) == 2
    assert m["weak_negative_classes"] == ["a", "b"]     # imported positives only, nothing rejected
    assert m["val"]["real_accuracy"] > 0.7
    assert load_predictions(ws, run_id)[1].shape == (300, 2)


def test_run_training_cancel_marks_run(tmp_path, blobs):
    X, y = blobs
    ws, emb = _workspace(tmp_path, X, y)

    def progress(f, m):
        if m.startswith("epoch 2/"):
            raise Cancelled()

    with pytest.raises(Cancelled) as info:
        run_training(ws, FAST, emb=emb, progress=progress)
    run_id = info.value.run_id
    run = ws.store.run(run_id)
    assert run["status"] == "cancelled" and len(run["metrics"]["curves"]) == 2
    assert load_head(ws, run_id).predict_proba(X).shape == (len(X), 6)
    assert latest_run(ws) is None and latest_run(ws, status="cancelled")["id"] == run_id


def test_run_training_writes_live_curves(tmp_path, blobs):
    X, y = blobs
    ws, emb = _workspace(tmp_path, X, y)
    seen = []

    def progress(f, m):
        if m.startswith("epoch 3/"):
            seen.append(ws.store.run(int(ws.store.runs().index.max())))

    run_id = run_training(ws, FAST, emb=emb, progress=progress)
    live = seen[0]
    assert live["status"] == "running" and live["metrics"]["epochs"] == FAST["epochs"]
    assert [c["epoch"] for c in live["metrics"]["curves"]][:1] == [1]      # the first epoch is written at once
    assert ws.store.run(run_id)["status"] == "done" and "val" in ws.store.run(run_id)["metrics"]


def test_run_training_errors_tell_what_to_do(tmp_path, blobs, monkeypatch):
    X, y = blobs
    ws, emb = _workspace(tmp_path, X, y, labelled=np.zeros(len(y), bool))
    with pytest.raises(TrainingError, match="label some images"):
        run_training(ws, FAST, emb=emb)
    assert ws.store.run(1)["status"] == "failed"
    fake = types.ModuleType("curation.features.embed")
    fake.load_embeddings = lambda ws: None
    monkeypatch.setitem(sys.modules, "curation.features.embed", fake)
    with pytest.raises(TrainingError, match="python -m curation embed"):
        run_training(ws, FAST)
    with pytest.raises(TrainingError, match="known options"):
        run_training(ws, {"epoch": 3}, emb=emb)


@pytest.mark.slow
def test_compare_runs_exact(tmp_path, blobs):
    X, y = blobs
    ws, emb = _workspace(tmp_path, X, y)
    a = run_training(ws, {**FAST, "epochs": 1, "lr": 1e-4}, emb=emb)        # a weak model
    val_a = np.array(ws.store.run(a)["metrics"]["val_ids"])
    # relabel 5 validation samples and 3 training samples to the next class
    train_ids = np.setdiff1d(emb.ids, val_a)
    changed = np.r_[val_a[:5], train_ids[:3]]
    pos = np.searchsorted(emb.ids, changed)
    for sid, k in zip(changed, y[pos]):
        ws.store.set_label([sid], ws.store.class_id(f"c{(k + 1) % 6}"))
    b = run_training(ws, FAST, emb=emb)
    cmp = compare_runs(ws, a, b)
    np.testing.assert_array_equal(cmp["relabelled_ids"], np.sort(changed))
    assert len(cmp["label_events"]) == 2 * len(changed)      # old class -> unknown, new class -> positive
    shared = cmp["shared_val_ids"]
    np.testing.assert_array_equal(shared, val_a)             # the hash split does not move
    # independent recomputation of flips against B's labels
    yb = ws.store.single_labels(shared)
    ia, pa = load_predictions(ws, a)
    ib, pb = load_predictions(ws, b)
    ra = pa[np.searchsorted(ia, shared)].argmax(1) == yb
    rb = pb[np.searchsorted(ib, shared)].argmax(1) == yb
    np.testing.assert_array_equal(cmp["became_right"], shared[~ra & rb])
    np.testing.assert_array_equal(cmp["became_wrong"], shared[ra & ~rb])
    assert len(cmp["became_right"]) > 0
    va, vb = ws.store.run(a)["metrics"]["val"], ws.store.run(b)["metrics"]["val"]
    assert cmp["overall"].loc["accuracy", "delta"] == pytest.approx(vb["accuracy"] - va["accuracy"])
    assert cmp["per_class"].shape[0] == 6 and "f1_delta" in cmp["per_class"]
    assert cmp["accuracy_b"] == pytest.approx(rb.mean())


def test_cli_train_head_with_elr(tmp_path, blobs, monkeypatch, capsys):
    """`python -m curation train WS --elr` trains a noise-robust head; --elr with --finetune is refused."""
    import curation.models.runs as train_mod
    from curation.cli import main

    X, y = blobs
    ws, emb = _workspace(tmp_path, X, y)
    real = train_mod.run_training
    monkeypatch.setattr(train_mod, "run_training", lambda w, config, **kw: real(w, config, emb=emb, **kw))
    assert main(["train", str(ws.root), "--elr", "--epochs", "5"]) == 0
    run = latest_run(ws)
    assert run["config"]["elr"] is True and run["config"]["epochs"] == 5
    assert "accuracy" in capsys.readouterr().out
    assert main(["train", str(ws.root), "--elr", "--finetune"]) != 0
    assert "--elr applies to heads" in capsys.readouterr().err
