"""Every issue of a workspace in one schema: per issue type an ``is_<type>_issue`` flag and a ``<type>_score``
in [0, 1], lower = worse (cleanlab Datalab's contract), plus a summary table; and the missing-label candidates.

The scoring itself lives in :mod:`curation.labels.label_quality` (single-label label errors, ambiguity),
:mod:`curation.labels.multilabel` (multi-label wrong and missing labels), :mod:`curation.labels.outliers` and
:mod:`curation.labels.duplicates`; their public names are re-exported here.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from curation.core.progress import ProgressFn, null_progress, sub_progress
from curation.labels.duplicates import duplicate_scores, near_duplicates
from curation.labels.label_quality import (
    AMBIGUOUS_MAX,
    METHODS,
    ambiguous_scores,
    class_thresholds,
    confident_joint,
    estimate_error_count,
    find_label_issues,
    label_quality_scores,
)
from curation.labels.multilabel import (
    cap_by_expected,
    missing_label_candidates,
    multilabel_issue_scores,
    multilabel_label_scores,
)
from curation.labels.outliers import (
    NOISE_FACTOR,
    OUTLIER_MAX,
    _gaussian_distances,
    _noise_mask,
    _outlier_frame,
    outlier_scores,
)
from curation.labels.validate import POSITIVE, REJECTED, UNKNOWN, IssuesError

__all__ = ["ISSUE_TYPES", "IssuesError", "METHODS", "NOISE_FACTOR", "POSITIVE", "REJECTED", "UNKNOWN",
           "ambiguous_scores", "class_thresholds", "compute_issues", "confident_joint", "duplicate_scores",
           "estimate_error_count", "find_label_issues", "issue_summary", "label_quality_scores", "missing_labels",
           "missing_label_candidates", "multilabel_issue_scores", "multilabel_label_scores", "near_duplicates",
           "outlier_scores"]

log = logging.getLogger(__name__)

ISSUE_TYPES = {
    "label": "Likely label errors",
    "outlier": "Outliers",
    "duplicate": "Near-duplicates",
    "ambiguous": "Ambiguous images",
}
"""Issue types of :func:`compute_issues`: each has columns ``is_<type>_issue`` and ``<type>_score``."""
ISSUES_VERSION = 3
NOISE_IN_USE = "in use"
"""``compute_issues(noise=...)`` default: take the noise of the clustering in use."""
GAUSS_KIND = "outlier_gauss"
MISSING_COLUMNS = ["sample", "class", "class_name", "score"]


def issue_summary(issues: pd.DataFrame) -> pd.DataFrame:
    """One row per issue type of an issue table (:func:`compute_issues`): how many samples have it.

    Parameters
    ----------
    issues : DataFrame with ``is_<type>_issue`` and ``<type>_score`` for the types of :data:`ISSUE_TYPES`.

    Returns
    -------
    DataFrame indexed by ``issue_type`` with ``name``, ``num_issues``, ``share`` (of all samples) and ``score``
    (mean score over all samples, in [0, 1], lower = worse), in :data:`ISSUE_TYPES` order. Label errors also
    get ``estimated`` (the expected number of label errors, when the table carries ``label_error_estimate``).
    """
    missing = [c for t in ISSUE_TYPES for c in (f"is_{t}_issue", f"{t}_score") if c not in issues]
    if missing:
        raise IssuesError(f"Not an issue table: columns {missing} are missing; compute it with compute_issues.")
    n = max(len(issues), 1)
    rows = []
    for t, name in ISSUE_TYPES.items():
        k = int(issues[f"is_{t}_issue"].sum())
        rows.append({"issue_type": t, "name": name, "num_issues": k, "share": k / n,
                     "score": float(issues[f"{t}_score"].mean()) if len(issues) else 1.0})
    out = pd.DataFrame(rows).set_index("issue_type")
    est = issues.attrs.get("label_error_estimate")
    out["estimated"] = [float(est) if (t == "label" and est is not None) else np.nan for t in ISSUE_TYPES]
    return out


def _issue_probs(state: Any) -> np.ndarray | None:
    """(N, K) out-of-sample probabilities that judge the given labels: the out-of-fold heads, averaged with
    the latest model's probabilities on the samples that model did not train on; None without OOF heads."""
    p = state.sources.get("oof")
    if p is None:
        return None
    p = np.asarray(p, np.float64)
    m = state.sources.get("model")
    if m is not None:
        held = np.isfinite(m).all(1)
        p = p.copy()
        p[held] = 0.5 * (p[held] + m[held])
    return p


def _gaussian(ws: Any, state: Any, X: np.ndarray) -> np.ndarray:
    """(N,) squared Mahalanobis distances to the nearest class (:func:`_gaussian_distances`), cached per expensive
    fit: the class Gaussians come from the labels current when it is first computed after a fit."""
    from curation.data.artifacts import make_key

    config = {"fit": state.info["fit_key"], "version": ISSUES_VERSION}
    key = make_key(config)
    hit = ws.artifacts.load_array(GAUSS_KIND, key, mmap=False)
    if hit is not None and len(hit) == len(X):
        return np.asarray(hit)
    d2 = _gaussian_distances(X, state.labels) if len(X) > 2 else np.zeros(len(X))
    ws.artifacts.save_array(GAUSS_KIND, key, d2, config=config)
    return d2


def _multilabel_suggestion(lm: np.ndarray, probs: np.ndarray, thresholds: Any) -> tuple[np.ndarray, np.ndarray]:
    """The label the model believes is missing: per row the most probable UNKNOWN class above its threshold
    ((N,) class, -1 when none; (N,) probability)."""
    t = np.broadcast_to(np.asarray(0.5 if thresholds is None else thresholds, np.float64), (lm.shape[1],))
    cand = np.where((lm == UNKNOWN) & (probs >= t[None, :]), probs, -1.0)
    c = cand.argmax(1) if lm.shape[1] else np.zeros(len(lm), np.int64)
    p = cand[np.arange(len(lm)), c] if lm.shape[1] else np.zeros(len(lm))
    return np.where(p >= 0, c, -1).astype(np.int64), np.maximum(p, 0.0)


def compute_issues(ws: Any, emb: Any, *, folds: int = 5, seed: int = 0, C: float | None = None,
                   duplicate_threshold: float = 0.98, noise: np.ndarray | str | None = NOISE_IN_USE,
                   refit: str = "auto",
                   save: bool = False, progress: ProgressFn | None = None) -> pd.DataFrame:
    """Every per-sample issue of a workspace for the current labels, in one schema.

    The expensive inputs (out-of-fold heads, the ensemble, class Gaussians) come from the fit shared with
    the suggestions (:func:`curation.labels.suggest.label_state`), refreshed only when labels changed enough
    (:func:`curation.labels.suggest.refit_threshold`); everything else follows each label event and costs well
    under a second at 50k samples.

    Parameters
    ----------
    ws : Workspace.
    emb : embeddings-like object: ``ids`` (N,) int64, ``vectors`` (N, D) float32 L2-normalised, ``key`` str.
    folds, seed, C : out-of-fold head settings (:func:`curation.labels.oof.out_of_fold_probs`).
    duplicate_threshold : cosine similarity above which two images count as near-duplicates.
    noise : cluster-noise samples feeding the outlier score (:func:`outlier_scores`): an (N,) bool mask
        aligned with ``emb.ids`` or an array of sample ids; :data:`NOISE_IN_USE` (default): the noise of the
        clustering in use (HDBSCAN's -1; none after k-means or without clusters); None: no noise.
    refit : ``"auto"`` / ``"never"`` / ``"always"`` (:func:`curation.labels.suggest.label_state`).
    save : also store the table as artifact kind ``issues``, keyed by the fit, the ensemble, the last label
        event, the noise set and the settings (the ``issues`` job and the CLI do; the app recomputes it
        instead of writing a file per click). A stored table for the same key is returned as is.
    progress : ``progress(fraction, message)``.

    Returns
    -------
    DataFrame indexed by sample id (the order of ``emb.ids``). For every type of :data:`ISSUE_TYPES` a flag
    ``is_<type>_issue`` and a score ``<type>_score`` in [0, 1], lower = worse:

    * ``label``: single-label, confident learning + kNN (:func:`find_label_issues`) on the out-of-fold
      probabilities (averaged with the latest model's where it did not train on the sample); multi-label, the
      most doubtful *positive* label (:func:`multilabel_issue_scores`; rejections are never doubted). 1.0 for
      unlabelled samples.
    * ``outlier``: :func:`outlier_scores`, flagged at ≤ :data:`OUTLIER_MAX`.
    * ``duplicate``: :func:`duplicate_scores`, flagged at cosine ≥ ``duplicate_threshold``.
    * ``ambiguous``: 1 - ambiguity of the calibrated ensemble (:func:`ambiguous_scores`), flagged at ≤
      :data:`AMBIGUOUS_MAX`.

    Context columns: ``given`` (class index, -1 none; the lowest positive in multi-label), ``doubted`` (the class
    whose given label is in doubt: the label in single-label, the worst positive in multi-label; -1 none),
    ``suggested`` / ``suggested_prob`` (single-label: the most probable class; multi-label: the most probable
    class not yet labelled that clears its threshold, -1 none), ``ambiguous_with``, ``duplicate_of`` (id, -1
    none), ``duplicate_conflict``, ``cluster_noise``. ``df.attrs["label_error_estimate"]`` holds the expected
    number of label errors (:func:`estimate_error_count`); :func:`issue_summary` makes the summary table.
    """
    from curation.data.artifacts import make_key
    from curation.labels.suggest import label_state

    progress = progress or null_progress
    X = np.asarray(emb.vectors, np.float32)
    if X.ndim != 2 or len(X) != len(emb.ids):
        raise IssuesError(f"Embeddings vectors {X.shape} do not match {len(emb.ids)} ids; re-run `python -m curation "
                          "embed`.")
    state = label_state(ws, emb, refit=refit, folds=folds, seed=seed, C=C, progress=sub_progress(progress, 0.0, 0.8))
    ids, y, lm = state.ids, state.labels, state.label_matrix
    index = pd.Index(ids, name="id")
    if isinstance(noise, str) and noise == NOISE_IN_USE:
        from curation.structure.cluster import load_clusters, noise_ids

        clusters = load_clusters(ws, emb)
        noise = None if clusters is None else noise_ids(clusters)
    noise_mask = _noise_mask(noise, index)
    config = {"fit": state.info["fit_key"], "ensemble": state.info["ensemble_key"],
              "last_event": state.info["last_event"], "dup": float(duplicate_threshold),
              "noise": make_key({"ids": ids[noise_mask].tolist()}), "version": ISSUES_VERSION}
    key = make_key(config)
    cached = ws.artifacts.load_frame("issues", key)
    if cached is not None:
        return cached
    idx, sims = state.knn_idx, state.knn_sims
    n, K = lm.shape
    has = state.probs.sum(1) > 0                        # rows the ensemble has a prediction for
    p = _issue_probs(state)
    label_score, is_issue, doubted = np.ones(n), np.zeros(n, bool), np.full(n, -1, np.int64)
    suggested, suggested_prob = np.full(n, -1, np.int64), np.zeros(n)
    estimate = None
    if p is None:
        log.warning("Label issues need out-of-fold probabilities: %s", state.info["sources"]["oof"]["reason"])
    elif state.task == "single":
        lab = find_label_issues(y, p, knn_idx=idx, knn_sims=sims, ids=ids).reindex(ids)
        label_score, is_issue = lab["score"].to_numpy(), lab["is_issue"].to_numpy(bool)
        suggested, suggested_prob = lab["suggested"].to_numpy(np.int64), lab["suggested_prob"].to_numpy()
        doubted = np.where(y >= 0, y, -1).astype(np.int64)
        estimate = float(estimate_error_count(y, p, knn_idx=idx, knn_sims=sims).sum())
    else:
        ms = multilabel_issue_scores(lm, p, knn_idx=idx, knn_sims=sims, ids=ids).reindex(ids)
        label_score, is_issue = ms["score"].to_numpy(), ms["is_issue"].to_numpy(bool)
        doubted = ms["worst_class"].to_numpy(np.int64)
        suggested, suggested_prob = _multilabel_suggestion(lm, np.asarray(state.probs, np.float64),
                                                           state.info.get("thresholds"))
        estimate = float(is_issue.sum())               # rough in multi-label: see estimate_wrong_labels
    ambiguity, amb_with = np.ones(n), np.full(n, -1, np.int64)
    if K >= 2:
        amb = ambiguous_scores(state.probs, ids=ids).reindex(ids)
        ambiguity = np.where(has, amb["score"].to_numpy(), 1.0)
        first, second = amb["first"].to_numpy(np.int64), amb["second"].to_numpy(np.int64)
        amb_with = np.where(has, np.where(first == y, second, first), -1)
    progress(0.85, "outliers and duplicates")
    out = _outlier_frame(sims, _gaussian(ws, state, X), noise_mask, index)       # already in the order of ids
    dup = duplicate_scores(idx, sims, threshold=duplicate_threshold, labels=y, ids=ids)
    outlier = out["score"].to_numpy()
    df = pd.DataFrame({"given": y, "doubted": doubted, "suggested": suggested, "suggested_prob": suggested_prob,
                       "is_label_issue": is_issue, "label_score": np.clip(label_score, 0.0, 1.0),
                       "is_outlier_issue": outlier <= OUTLIER_MAX, "outlier_score": outlier,
                       "cluster_noise": noise_mask,
                       "is_duplicate_issue": dup["is_duplicate_issue"].to_numpy(bool),
                       "duplicate_score": dup["duplicate_score"].to_numpy(),
                       "duplicate_of": dup["duplicate_of"].to_numpy(np.int64),
                       "duplicate_conflict": dup["duplicate_conflict"].to_numpy(bool),
                       "is_ambiguous_issue": ambiguity <= AMBIGUOUS_MAX, "ambiguous_score": ambiguity,
                       "ambiguous_with": np.asarray(amb_with, np.int64)}, index=index)
    df.attrs["label_error_estimate"] = estimate
    df.attrs["task"] = state.task
    if save:
        ws.artifacts.save_frame("issues", key, df, config=config)
    progress(1.0, "issues ready")
    log.info("issues of %d samples (%d likely label errors)", len(df), int(is_issue.sum()))
    return df


def missing_labels(ws: Any, emb: Any, *, min_score: float = 0.5, folds: int = 5, seed: int = 0, C: float | None = None,
                   refit: str = "auto", cap: bool = True, progress: ProgressFn | None = None) -> pd.DataFrame:
    """Candidates for a second label of labelled images, strongest first.

    Multi-label workspaces: UNKNOWN cells of rows with a positive whose calibrated ensemble score clears the
    class threshold (tuned on the known cells, :func:`curation.models.evaluate.tune_thresholds`;
    :func:`missing_label_candidates`), at most the expected number of missing labels per class
    (:func:`curation.labels.multilabel.cap_by_expected`, so a retrained model cannot flood the queue). Rejected
    cells are never candidates.
    Single-label workspaces: images that fit their label *and* another class (both probable in the
    ensemble): the other class, scored ``sqrt((p_lo / p_hi) * min(1, 2 p_lo))`` over the pair ``(p_label,
    p_other)``, kept when ``score >= min_score`` (a label that is merely wrong scores low: its own
    probability is small).

    Parameters
    ----------
    ws, emb : as in :func:`compute_issues`.
    min_score : single-label only: the least pair score kept.
    folds, seed, C, refit : as in :func:`compute_issues`.
    cap : multi-label only: keep per class only as many candidates as are expected to be right.

    Returns
    -------
    DataFrame with columns ``sample`` (id), ``class`` (column index), ``class_name``, ``score`` (in [0, 1];
    *higher* = stronger candidate: it ranks additions, not problems), sorted by score descending.
    """
    from curation.labels.suggest import label_state

    state = label_state(ws, emb, refit=refit, folds=folds, seed=seed, C=C, progress=progress)
    lm, P, ids = state.label_matrix, np.asarray(state.probs, np.float64), state.ids
    names = np.asarray(state.class_names, dtype=object)
    if lm.shape[1] < 2 or not (P.sum(1) > 0).any():
        return pd.DataFrame({"sample": np.zeros(0, np.int64), "class": np.zeros(0, np.int64),
                             "class_name": np.zeros(0, object), "score": np.zeros(0)})[MISSING_COLUMNS]
    if state.task == "multi":
        t = state.info.get("thresholds") or 0.5
        df = missing_label_candidates(lm, P, thresholds=np.asarray(t, np.float64), ids=ids)
        df = cap_by_expected(df, lm.shape[1]) if cap else df
    else:
        y = state.labels
        r = np.flatnonzero((y >= 0) & (P.sum(1) > 0))
        py = P[r, y[r]]
        other = P[r].copy()
        other[np.arange(len(r)), y[r]] = -1.0
        c = other.argmax(1)
        po = other[np.arange(len(r)), c]
        lo, hi = np.minimum(py, po), np.maximum(py, po)
        score = np.sqrt(np.divide(lo, hi, out=np.zeros_like(lo), where=hi > 0) * np.minimum(1.0, 2.0 * lo))
        keep = score >= min_score
        df = pd.DataFrame({"sample": ids[r[keep]], "class": c[keep].astype(np.int64), "score": score[keep]})
        df = df.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    df["class_name"] = names[df["class"].to_numpy(np.int64)].astype(str) if len(df) else ""
    return df[MISSING_COLUMNS]
