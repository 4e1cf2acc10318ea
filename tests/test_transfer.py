"""Encoder transferability: LogME, kNN accuracy, linear probe, the workspace table and the advice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_ui import embedded, workspace  # noqa: F401 (fixtures)

from curation.models import transfer as T


def test_scores_rank_informative_features_above_noise(blobs):
    x, y = blobs
    rng = np.random.default_rng(0)
    noise = rng.normal(size=x.shape).astype(np.float32)
    good, bad = T.score_features(x, y), T.score_features(noise, y)
    for k in T.SCORES:
        assert good[k] > bad[k], k
    assert good["knn"] > 0.9 and bad["knn"] < 0.4
    # LogME on more dimensions than samples takes the SVD path and still ranks them
    wide = np.concatenate([x[:40], rng.normal(size=(40, 60)).astype(np.float32) * 0.01], 1)
    assert T.logme(wide, y[:40]) > T.logme(noise[:40], y[:40])
    with pytest.raises(T.TransferError):
        T.logme(x[:1], y[:1])


def test_logme_matches_the_reference_loop(blobs):
    x, y = blobs
    f = x[:200].astype(np.float64)
    yy = y[:200]
    # the reference implementation (thuml/LogME), one class at a time
    D, N = f.shape[1], f.shape[0]
    v, s, vh = np.linalg.svd(f.T @ f, full_matrices=True)
    ev = []
    for k in np.unique(yy):
        y_ = (yy == k).astype(np.float64)
        alpha, beta = 1.0, 1.0
        tmp = vh @ (f.T @ y_)
        for _ in range(11):
            gamma = (beta * s / (alpha + beta * s)).sum()
            m = v @ (tmp * beta / (alpha + beta * s))
            alpha_de = (m * m).sum()
            alpha = gamma / (alpha_de + 1e-5)
            beta_de = ((y_ - f @ m) ** 2).sum()
            beta = (N - gamma) / (beta_de + 1e-5)
        m = v @ (tmp * beta / (alpha + beta * s))
        alpha_de, beta_de = (m * m).sum(), ((y_ - f @ m) ** 2).sum()
        ev.append((D / 2 * np.log(alpha) + N / 2 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * s))
                   - beta / 2 * beta_de - alpha / 2 * alpha_de - N / 2 * np.log(2 * np.pi)) / N)
    assert T.logme(f, yy) == pytest.approx(float(np.mean(ev)), rel=1e-6)


def test_workspace_table_pixels_and_advice(embedded):  # noqa: F811
    table = T.transfer_scores(embedded, encoders=["precomputed:user", T.PIXELS, "no-such-encoder"], sample=40)
    assert list(table.index[:2]) == ["precomputed:user", T.PIXELS] or table.loc["precomputed:user", "linear"] >= \
        table.loc[T.PIXELS, "linear"]
    assert table.loc["precomputed:user", "source"] == "cached" and table.loc["precomputed:user", "dim"] == 16
    assert "Unknown encoder" in table.loc["no-such-encoder", "error"]
    assert 36 <= table.attrs["n"] <= 42  # stratified: each class keeps its share
    again = T.transfer_scores(embedded, encoders=["precomputed:user", T.PIXELS, "no-such-encoder"], sample=40)
    assert again.equals(table)  # cached
    t = pd.DataFrame({"linear": [0.9, 0.8, 0.5], "error": ["", "", ""]}, index=["b", "a", T.PIXELS])
    assert T.advice(t, "a").startswith("Re-embed with b")
    assert T.advice(t, "b") is None
    assert T.advice(t.assign(linear=[0.81, 0.8, 0.5]), "a") is None  # within the margin
    assert T.PIXELS in T.available_encoders(embedded) and "precomputed:user" in T.available_encoders(embedded)


def test_labelled_sample_is_stratified(embedded):  # noqa: F811
    ids, y = T.labelled_sample(embedded, sample=12, seed=0)
    assert len(ids) >= 12 and set(np.bincount(y).tolist()) == {4}
