"""Label issues, multi-label candidates, near-duplicates, outliers, ambiguity, and the workspace entry point."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from curation.features.neighbors import knn
from curation.labels.issues import (
    ISSUE_TYPES,
    IssuesError,
    ambiguous_scores,
    compute_issues,
    duplicate_scores,
    find_label_issues,
    issue_summary,
    label_quality_scores,
    missing_label_candidates,
    multilabel_issue_scores,
    multilabel_label_scores,
    near_duplicates,
    outlier_scores,
)
from curation.labels.oof import out_of_fold_probs, out_of_fold_probs_multi
from curation.labels.outliers import OUTLIER_MAX


@pytest.fixture(scope="module")
def noisy(blobs):
    X, y = blobs
    yn = y.copy()
    planted = np.arange(3, 600, 40)                    # 15 planted errors
    yn[planted] = (y[planted] + 2) % 6
    p = out_of_fold_probs(X, yn, n_classes=6)
    idx, sims = knn(X, k=15)
    return X, y, yn, planted, p, idx, sims


@pytest.mark.parametrize("method", ["ensemble", "self_confidence", "normalized_margin", "knn"])
def test_planted_errors_ranked_first(noisy, method):
    X, y, yn, planted, p, idx, sims = noisy
    s = label_quality_scores(yn, p, knn_idx=idx, knn_sims=sims, method=method)
    assert s.shape == (600,) and s.min() >= 0 and s.max() <= 1
    assert set(np.argsort(s)[:len(planted)]) == set(planted)


def test_find_label_issues_contract(noisy):
    X, y, yn, planted, p, idx, sims = noisy
    ids = np.arange(600) * 10 + 7
    df = find_label_issues(yn, p, knn_idx=idx, knn_sims=sims, ids=ids)
    assert list(df.columns[:4]) == ["is_issue", "score", "given", "suggested"]
    assert df.index.name == "id" and set(df.index) == set(ids)
    assert df["score"].is_monotonic_increasing
    flagged = set(df.index[df["is_issue"]])
    assert set(ids[planted]) <= flagged and len(flagged) <= 2 * len(planted)
    assert (df.loc[ids[planted], "suggested"].to_numpy() == y[planted]).all()
    with pytest.raises(IssuesError, match="align"):
        find_label_issues(yn[:10], p)


def test_unknown_method_is_refused_with_the_valid_ones(noisy):
    X, y, yn, planted, p, idx, sims = noisy
    for fn in (find_label_issues, label_quality_scores):
        with pytest.raises(ValueError, match="self_confidence, normalized_margin"):
            fn(yn, p, method="confidence")
    with pytest.raises(ValueError, match="ensemble, self_confidence, normalized"):
        multilabel_label_scores(np.zeros((3, 2), np.int8), np.full((3, 2), 0.5), method="margin")


def test_error_count_estimate_close_to_planted(noisy):
    from curation.labels.label_quality import estimate_error_count

    X, y, yn, planted, p, idx, sims = noisy
    est = estimate_error_count(yn, p, knn_idx=idx, knn_sims=sims)
    assert est.shape == (6,) and (est >= 0).all()
    assert 0.5 * len(planted) <= est.sum() <= 2.0 * len(planted)
    clean = estimate_error_count(y, out_of_fold_probs(X, y, n_classes=6), knn_idx=idx, knn_sims=sims)
    assert clean.sum() < est.sum()


def test_duplicate_scores_schema(blobs):
    X, y = blobs
    dup = X[[0, 150]] + 0.001
    Xd = np.r_[X, dup / np.linalg.norm(dup, axis=1, keepdims=True)].astype(np.float32)
    yd = np.r_[y, [y[0], (y[150] + 1) % 6]]
    idx, sims = knn(Xd, k=5)
    df = duplicate_scores(idx, sims, threshold=0.99, labels=yd, ids=np.arange(602) + 100)
    assert set(df.index[df["is_duplicate_issue"]]) == {100, 250, 700, 701}
    assert df["duplicate_score"].between(0, 1).all()
    assert (df.loc[df["is_duplicate_issue"], "duplicate_score"] <= 0.5).all()
    assert (df.loc[~df["is_duplicate_issue"], "duplicate_score"] > 0.5).all()
    assert df.loc[700, "duplicate_of"] == 100 and df.loc[100, "duplicate_of"] == 700
    assert set(df.index[df["duplicate_conflict"]]) == {250, 701}
    with pytest.raises(IssuesError, match="threshold"):
        duplicate_scores(idx, sims, threshold=1.5)


def test_unlabelled_samples_score_one(noisy):
    X, y, yn, planted, p, idx, sims = noisy
    y2 = yn.copy()
    y2[:50] = -1
    s = label_quality_scores(y2, p, knn_idx=idx, knn_sims=sims)
    assert (s[:50] == 1).all()


@pytest.fixture(scope="module")
def mosaics(blobs):
    """600 one-label images plus 300 two-label ones (the normalised mean of a class-a and a class-b vector),
    every other class rejected (reviewed), the second label of 30 of them hidden (UNKNOWN).

    Returns (X (900, 32), Y (900, 6) int8, b (300,) second classes, hidden (30,) rows)."""
    X, y = blobs
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 6, 300), rng.integers(0, 6, 300)
    b = np.where(a == b, (b + 1) % 6, b)
    ia = np.array([rng.choice(np.flatnonzero(y == c)) for c in a])
    ib = np.array([rng.choice(np.flatnonzero(y == c)) for c in b])
    mix = (X[ia] + X[ib]) / 2
    Xm = np.r_[X, mix / np.linalg.norm(mix, axis=1, keepdims=True)].astype(np.float32)
    Y = np.full((900, 6), -1, np.int8)
    Y[np.arange(600), y] = 1
    Y[600 + np.arange(300), a] = 1
    Y[600 + np.arange(300), b] = 1
    hidden = 600 + np.arange(0, 300, 10)
    Y[hidden, b[hidden - 600]] = 0
    return Xm, Y, b, hidden


@pytest.mark.slow
def test_missing_label_candidates_recover_hidden_positives(mosaics):
    Xm, Y, b, hidden = mosaics
    p = out_of_fold_probs_multi(Xm, Y, C=0.1)
    cand = missing_label_candidates(Y, p, thresholds=0.3)
    assert list(cand.columns) == ["sample", "class", "score"]
    top = set(zip(cand["sample"].head(40), cand["class"].head(40)))
    found = sum((int(h), int(b[h - 600])) in top for h in hidden)
    assert found >= 24
    assert (Y[cand['sample'], cand['class']] == 0).all()
    ms = multilabel_issue_scores(Y, p)
    assert ms["score"].between(0, 1).all() and {"worst_class", "score"} <= set(ms.columns)


@pytest.mark.slow
def test_multilabel_issue_scores_flag_wrong_positive(blobs):
    X, y = blobs
    Y = np.full((600, 6), -1, np.int8)
    Y[np.arange(600), y] = 1
    bad = np.arange(5, 600, 60)
    Y[bad, y[bad]] = -1
    Y[bad, (y[bad] + 3) % 6] = 1
    p = out_of_fold_probs_multi(X, Y, C=0.1)
    ms = multilabel_issue_scores(Y, p)
    assert set(ms.index[:len(bad)]) == set(bad)
    worst = ms.loc[bad, "worst_class"].to_numpy()
    assert ((worst == (y[bad] + 3) % 6) | (worst == y[bad])).all()


def test_near_duplicates_with_conflicting_labels(blobs):
    X, y = blobs
    rng = np.random.default_rng(2)
    src = np.array([0, 150, 320])
    dup = X[src] + 0.001 * rng.normal(size=(3, X.shape[1])).astype(np.float32)
    Xd = np.r_[X, dup / np.linalg.norm(dup, axis=1, keepdims=True)].astype(np.float32)
    yd = np.r_[y, [y[0], (y[150] + 1) % 6, (y[320] + 1) % 6]]
    idx, sims = knn(Xd, k=5)
    df = near_duplicates(Xd, knn_idx=idx, knn_sims=sims, threshold=0.99, labels=yd)
    pairs = set(zip(df["a"], df["b"]))
    assert {(0, 600), (150, 601), (320, 602)} <= pairs
    assert len(df) == len(pairs)                       # each pair once
    assert set(zip(df["a"][df["conflicting_labels"]], df["b"][df["conflicting_labels"]])) == {(150, 601), (320, 602)}
    assert df["conflicting_labels"].iloc[:2].all()


def test_outliers_ranked_lowest(blobs):
    X, y = blobs
    rng = np.random.default_rng(3)
    out = rng.normal(size=(6, X.shape[1]))
    Xo = np.r_[X, out / np.linalg.norm(out, axis=1, keepdims=True)].astype(np.float32)
    yo = np.r_[y, [-1] * 6]
    idx, sims = knn(Xo, k=10)
    df = outlier_scores(Xo, knn_sims=sims, labels=yo)
    assert {"knn_score", "gaussian_score", "score"} <= set(df.columns)
    assert df["score"].between(0, 1).all()
    assert set(df.index[:6]) == set(range(600, 606))
    assert set(df.sort_values("gaussian_score").index[:6]) == set(range(600, 606))


def test_ambiguous_scores():
    p = np.array([[0.5, 0.49, 0.01], [0.98, 0.01, 0.01], [0.4, 0.3, 0.3]])
    df = ambiguous_scores(p)
    assert df.index[0] == 0 and df.index[-1] == 1
    assert df.loc[0, "second"] == 1 and df["score"].between(0, 1).all()


def test_outlier_noise_hook(blobs):
    X, y = blobs
    idx, sims = knn(X, k=10)
    base = outlier_scores(X, knn_sims=sims, labels=y)
    ids = np.arange(600) * 3
    noisy_ids = ids[[5, 77, 300]]
    by_ids = outlier_scores(X, knn_sims=sims, labels=y, ids=ids, noise=noisy_ids)
    by_mask = outlier_scores(X, knn_sims=sims, labels=y, ids=ids, noise=np.isin(ids, noisy_ids))
    pd.testing.assert_frame_equal(by_ids, by_mask)
    assert set(by_ids.index[by_ids["noise"]]) == set(noisy_ids)
    np.testing.assert_allclose(by_ids.loc[noisy_ids, "score"].to_numpy(),
                               0.5 * base.loc[[5, 77, 300], "score"].to_numpy())
    assert by_ids["score"].between(0, 1).all()
    with pytest.raises(IssuesError, match="one entry per sample"):
        outlier_scores(X, knn_sims=sims, noise=np.zeros(5, bool))


def _workspace_with_samples(ws, X, labels, names):
    n = len(X)
    ws.store.add_classes(names)
    recs = pd.DataFrame({"path": [f"img{i}.png" for i in range(n)], "sha1": [f"{i:040x}" for i in range(n)],
                         "bytes": 100, "width": 8, "height": 8})
    ids, _ = ws.store.add_samples(ws.store.root_id(ws.images), recs, labels=labels)
    return np.sort(ids)


ISSUE_COLUMNS = ["given", "doubted", "suggested", "suggested_prob", "is_label_issue", "label_score",
                 "is_outlier_issue", "outlier_score", "cluster_noise", "is_duplicate_issue", "duplicate_score",
                 "duplicate_of", "duplicate_conflict", "is_ambiguous_issue", "ambiguous_score", "ambiguous_with"]


@pytest.mark.slow
def test_compute_issues_contract(ws, blobs):
    X, y = blobs
    X, y = X[:300], y[:300]
    names = [f"c{c}" for c in range(6)]
    yn = y.copy()
    planted = np.array([10, 110, 210])
    yn[planted] = (y[planted] + 1) % 6
    labels = [[names[c]] if i % 10 != 9 else [] for i, c in enumerate(yn)]
    ids = _workspace_with_samples(ws, X, labels, names)
    emb = SimpleNamespace(ids=ids, vectors=X, key="test-emb")
    calls = []
    df = compute_issues(ws, emb, noise=ids[[3, 4]], progress=lambda f, m: calls.append(f))
    assert df.index.name == "id" and (df.index.to_numpy() == ids).all()
    assert list(df.columns) == ISSUE_COLUMNS
    for t in ISSUE_TYPES:                                    # one schema: a flag and a [0, 1] score per type
        assert df[f"is_{t}_issue"].dtype == bool and df[f"{t}_score"].between(0, 1).all(), t
    assert (df["is_outlier_issue"] == (df["outlier_score"] <= OUTLIER_MAX)).all()
    summary = issue_summary(df)
    assert list(summary.index) == list(ISSUE_TYPES)
    assert summary.loc["label", "num_issues"] == df["is_label_issue"].sum() >= 2
    assert summary.loc["label", "estimated"] > 0                # the expected number of label errors
    with pytest.raises(IssuesError, match="is_duplicate_issue"):
        issue_summary(df.drop(columns=["is_duplicate_issue"]))
    assert set(df["label_score"].nsmallest(3).index) == set(ids[planted])
    assert df.loc[ids[planted[:2]], "is_label_issue"].all()     # (the third is the only sample of class 3)
    assert (df.loc[ids[planted], "suggested"].to_numpy() == y[planted]).all()
    assert (df.loc[ids[9::10], "label_score"] == 1).all()
    assert df["cluster_noise"].sum() == 2 and df.loc[ids[[3, 4]], "cluster_noise"].all()
    assert calls and calls[-1] == 1.0
    assert ws.artifacts.list().query("kind == 'issues'").empty          # per-click tables are not written...
    saved = compute_issues(ws, emb, noise=ids[[3, 4]], save=True)       # ...unless asked (job, CLI)
    pd.testing.assert_frame_equal(df, saved)
    assert len(ws.artifacts.list().query("kind == 'issues'")) == 1
    ws.store.set_label([int(ids[10])], ws.store.class_id(names[y[10]]))  # fix one planted error
    after = compute_issues(ws, emb)
    assert after.loc[ids[10], "given"] == y[10] and after.loc[ids[10], "label_score"] > 0.5
    assert len(ws.artifacts.list().query("kind == 'outlier_gauss'")) == 1  # the fit was reused


@pytest.mark.slow
def test_model_predictions_feed_label_scores_on_held_out_samples(ws, blobs):
    from curation.labels.suggest import label_state
    from curation.models.runs import run_training

    X, y = blobs
    names = [f"c{c}" for c in range(6)]
    ids = _workspace_with_samples(ws, X, [[names[c]] for c in y], names)
    emb = SimpleNamespace(ids=ids, vectors=X, key="blobs-model")
    before = compute_issues(ws, emb)
    run_id = run_training(ws, {"epochs": 20, "device": "cpu"}, emb=emb)
    val = np.asarray(ws.store.run(run_id)["metrics"]["val_ids"], np.int64)
    state = label_state(ws, emb)
    after = compute_issues(ws, emb)
    p_model = state.sources["model"]
    held = np.isin(ids, val)
    assert np.isfinite(p_model[held]).all() and np.isnan(p_model[~held]).all()
    changed = ~np.isclose(before["label_score"].to_numpy(), after["label_score"].to_numpy())
    assert changed[held].mean() > 0.9                      # the model's held-out opinion enters the score...
    ours = after["label_score"].to_numpy()[~held]
    assert np.all(ours >= 0) and np.all(ours <= 1)


@pytest.mark.slow
def test_missing_labels_multilabel_recover_hidden_positives(tmp_path, mosaics):
    from curation.data.workspace import Workspace
    from curation.labels.issues import missing_labels

    Xm, Y, b, hidden = mosaics
    ws = Workspace.create(tmp_path / "multi", task="multi")
    names = [f"c{c}" for c in range(6)]
    ids = _workspace_with_samples(ws, Xm, [[names[c] for c in np.flatnonzero(r == 1)] for r in Y], names)
    cids = np.array([ws.store.class_id(n) for n in names])
    r, c = np.nonzero(Y == -1)
    ws.store.apply(ids[r], cids[c], -1, source="human", actor="test", note="reviewed")
    emb = SimpleNamespace(ids=ids, vectors=Xm, key="mosaic")
    cand = missing_labels(ws, emb, C=0.1)
    assert list(cand.columns) == ["sample", "class", "class_name", "score"]
    assert cand["score"].is_monotonic_decreasing and cand["score"].between(0, 1).all()
    top = set(zip(cand["sample"].head(40), cand["class"].head(40)))
    found = sum((int(ids[h]), int(b[h - 600])) in top for h in hidden)
    assert found >= 24
    assert (cand["class_name"] == [names[k] for k in cand["class"]]).all()
    pos = {(int(ids[i]), int(k)) for i, k in zip(*np.nonzero(Y != 0))}
    assert not pos & set(zip(cand["sample"], cand["class"]))   # known cells (positive or rejected) never listed
    issues = compute_issues(ws, emb, C=0.1)
    assert issues["label_score"].between(0, 1).all() and list(issues.columns) == ISSUE_COLUMNS
    assert issues.attrs["task"] == "multi"


@pytest.mark.slow
def test_missing_labels_single_label_images_between_two_classes(ws, blobs):
    from curation.labels.issues import missing_labels

    X, y = blobs
    rng = np.random.default_rng(4)
    centre = X[y == 0].mean(0) + X[y == 1].mean(0)       # a region between classes 0 and 1 whose images the
    amb = centre + 0.05 * rng.normal(size=(40, X.shape[1]))  # annotators split between the two labels
    Xm = np.r_[X, amb / np.linalg.norm(amb, axis=1, keepdims=True)].astype(np.float32)
    names = [f"c{c}" for c in range(6)]
    given = np.r_[y, np.arange(40) % 2]
    ids = _workspace_with_samples(ws, Xm, [[names[c]] for c in given], names)
    emb = SimpleNamespace(ids=ids, vectors=Xm, key="between")
    cand = missing_labels(ws, emb)
    mixed = ids[600:]
    found = cand[cand["sample"].isin(mixed)]
    assert len(found) >= 30                               # most in-between images are listed...
    other = dict(zip(mixed, 1 - given[600:]))
    assert all(other[int(s)] == k for s, k in zip(found["sample"], found["class"]))   # ...with the other class
    assert cand["sample"].isin(mixed).mean() > 0.8        # and few clean images are
    assert cand["score"].is_monotonic_decreasing and (cand["score"] >= 0.5).all()


@pytest.mark.slow
def test_cli_issues_lists_errors_by_class_name_and_file(ws, blobs, tmp_path, capsys):
    """`python -m curation issues WS` names the given and suggested classes and the file of each likely error."""
    from curation.cli import main
    from curation.features import imported as embed

    X, y = blobs
    X, y = X[:300], y[:300]
    names = [f"class-{c}" for c in range(6)]
    yn = y.copy()
    planted = np.array([10, 110])
    yn[planted] = (y[planted] + 1) % 6
    ids = _workspace_with_samples(ws, X, [[names[c]] for c in yn], names)
    file = tmp_path / "vectors.parquet"
    pd.DataFrame({"id": ids, "embedding": list(X.astype(np.float32))}).to_parquet(file)
    embed.import_embeddings(ws, file, column="embedding", name="user")
    assert main(["issues", str(ws.root), "--top", "2"]) == 0
    errors = capsys.readouterr().out.split("likely label errors:")[1].split("outliers:")[0]
    for i in planted:
        assert f"img{i}.png" in errors and names[yn[i]] in errors and names[y[i]] in errors


@pytest.mark.slow
def test_compute_issues_takes_the_noise_of_the_clustering_in_use(ws, blobs):
    """By default the outlier score uses HDBSCAN's noise when HDBSCAN is the clustering in use; None: no noise."""
    from curation.structure.cluster import compute_clusters, noise_ids

    X, y = blobs
    stray = np.random.default_rng(5).normal(size=(12, X.shape[1]))        # scattered points: HDBSCAN noise
    X = np.vstack([X[:300], stray / np.linalg.norm(stray, axis=1, keepdims=True)]).astype(X.dtype)
    y = np.concatenate([y[:300], np.zeros(12, y.dtype)])
    names = [f"c{c}" for c in range(6)]
    ids = _workspace_with_samples(ws, X, [[names[c]] for c in y], names)
    emb = SimpleNamespace(ids=ids, vectors=X, key="test-emb", has_text=False, encoder_id="fake")
    assert not compute_issues(ws, emb)["cluster_noise"].any()           # no clustering yet
    noise = noise_ids(compute_clusters(ws, emb, method="hdbscan"))
    assert len(noise)
    df = compute_issues(ws, emb)
    assert set(df.index[df["cluster_noise"]]) == set(noise.tolist())
    assert not compute_issues(ws, emb, noise=None)["cluster_noise"].any()


@pytest.fixture(scope="module")
def positive_only(blobs):
    """Positive-only multi-label data as users import it (nothing rejected): 600 one-label images and 300
    two-label mixes; 20 wrong labels added (extra), 30 true labels dropped (missing).

    Returns (X (900, 32), Y (900, 6) int8 with 1 / 0 only, extra (20, 2) (row, class), missing (30, 2))."""
    X, y = blobs
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 6, 300), rng.integers(0, 6, 300)
    b = np.where(a == b, (b + 1) % 6, b)
    ia = np.array([rng.choice(np.flatnonzero(y == c)) for c in a])
    ib = np.array([rng.choice(np.flatnonzero(y == c)) for c in b])
    mix = (X[ia] + X[ib]) / 2
    Xm = np.r_[X, mix / np.linalg.norm(mix, axis=1, keepdims=True)].astype(np.float32)
    T = np.zeros((900, 6), np.int8)
    T[np.arange(600), y] = 1
    T[600 + np.arange(300), a] = 1
    T[600 + np.arange(300), b] = 1
    Y = T.copy()
    rows = rng.choice(900, 50, replace=False)
    extra_rows, miss_rows = rows[:20], rows[20:]
    extra_cls = np.array([rng.choice(np.flatnonzero(T[r] == 0)) for r in extra_rows])
    Y[extra_rows, extra_cls] = 1
    miss_rows = miss_rows[T[miss_rows].sum(1) > 1][:30] if (T[miss_rows].sum(1) > 1).sum() >= 10 else miss_rows
    miss_cls = np.array([rng.choice(np.flatnonzero(T[r] == 1)) for r in miss_rows])
    Y[miss_rows, miss_cls] = 0
    return Xm, Y, np.c_[extra_rows, extra_cls], np.c_[miss_rows, miss_cls]


@pytest.mark.slow
def test_multilabel_wrong_labels_found_from_positive_only_labels(positive_only):
    """Issue #20: with no rejections, masking unknown cells makes every given label score ~1; positive-unlabelled
    heads (unknown = weak negative) rank the planted extra labels first."""
    from sklearn.metrics import average_precision_score

    Xm, Y, extra, _ = positive_only
    idx, sims = knn(Xm, k=15)
    is_extra = np.zeros(Y.shape, bool)
    is_extra[extra[:, 0], extra[:, 1]] = True
    pos = Y == 1
    masked = out_of_fold_probs_multi(Xm, Y, C=0.1, weak_negatives=0.0)
    assert np.median(masked[pos]) > 0.9 and np.median(masked[~pos]) > 0.5      # no negatives: all "yes"
    p = out_of_fold_probs_multi(Xm, Y, C=0.1)                                   # default: label-prior weights
    s = multilabel_label_scores(Y, p, knn_idx=idx, knn_sims=sims)
    assert s.shape == Y.shape and (s[~pos] == 1).all() and s[pos].min() >= 0
    ap = average_precision_score(is_extra[pos], -s[pos])
    assert ap >= 0.8
    assert average_precision_score(is_extra[pos], -multilabel_label_scores(Y, masked)[pos]) < ap - 0.2
    rows = multilabel_issue_scores(Y, p, knn_idx=idx, knn_sims=sims)
    top = rows.index[:len(extra)]
    assert len(set(top) & set(extra[:, 0])) >= 0.8 * len(extra)
    assert (rows.loc[extra[:, 0], "worst_class"].to_numpy() == extra[:, 1]).mean() >= 0.8
    assert rows["is_issue"].sum() <= 3 * len(extra)


@pytest.mark.slow
def test_a_rejection_is_never_an_error(positive_only):
    """A person's "no" stays a "no": a rejected cell the model believes in is not a label error."""
    Xm, Y, extra, missing = positive_only
    Y2 = Y.copy()
    Y2[missing[:, 0], missing[:, 1]] = -1             # someone wrongly rejected true labels
    p = out_of_fold_probs_multi(Xm, Y2, C=0.1)
    assert np.median(p[missing[:, 0], missing[:, 1]]) > 0.3   # the model still believes in them...
    s = multilabel_label_scores(Y2, p)
    assert (s[Y2 == -1] == 1).all()                           # ...but they are never scored as errors
    rows = multilabel_issue_scores(Y2, p)
    worst = rows["worst_class"].to_numpy()
    r = rows.index.to_numpy()
    assert (Y2[r[worst >= 0], worst[worst >= 0]] == 1).all()  # the doubted cell is always a given positive


def test_cap_by_expected_keeps_the_expected_count_per_class():
    from curation.labels.multilabel import cap_by_expected

    cand = pd.DataFrame({"sample": np.arange(8), "class": [0, 0, 0, 0, 1, 1, 1, 1],
                         "score": [0.9, 0.8, 0.35, 0.3, 0.95, 0.9, 0.9, 0.85]}).sort_values("score", ascending=False)
    kept = cap_by_expected(cand, 2)
    # class 0: 0.9 + 0.8 + 0.35 + 0.3 = 2.35 -> 3 kept; class 1: 3.6 -> 4 kept
    assert sorted(kept["sample"]) == [0, 1, 2, 4, 5, 6, 7]
    assert kept.index.equals(cand.index[cand["sample"] != 3])
