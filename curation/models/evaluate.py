"""Single- and multi-label metrics: accuracy, F1, mAP, calibration, confusion, per-class tables."""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from curation.core.vocab import MISTAKE_VERDICTS as VERDICT_NAMES
from curation.core.vocab import POSITIVE, REJECTED, UNKNOWN

log = logging.getLogger(__name__)



# ---------------------------------------------------------------------- calibration
def _bin_index(conf: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bins on [0, 1]: bin b holds confidences in (b/bins, (b+1)/bins]; 0 goes to bin 0."""
    idx = np.ceil(np.asarray(conf, np.float64) * bins).astype(np.int64) - 1
    return np.clip(idx, 0, bins - 1)


def reliability_bins(conf: np.ndarray, correct: np.ndarray, *, bins: int = 15) -> pd.DataFrame:
    """Reliability-diagram table.

    Parameters
    ----------
    conf : (N,) float, confidence of each prediction in [0, 1].
    correct : (N,) bool, whether each prediction was right.
    bins : number of equal-width bins on [0, 1].

    Returns
    -------
    DataFrame with one row per bin: lo, hi, count, accuracy, confidence (NaN in empty bins).
    """
    conf = np.asarray(conf, np.float64).ravel()
    correct = np.asarray(correct, np.float64).ravel()
    idx = _bin_index(conf, bins)
    count = np.bincount(idx, minlength=bins).astype(np.int64)
    s_acc = np.bincount(idx, weights=correct, minlength=bins)
    s_conf = np.bincount(idx, weights=conf, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, s_acc / np.maximum(count, 1), np.nan)
        mean_conf = np.where(count > 0, s_conf / np.maximum(count, 1), np.nan)
    edges = np.linspace(0.0, 1.0, bins + 1)
    return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "count": count, "accuracy": acc,
                         "confidence": mean_conf})


def expected_calibration_error(conf: np.ndarray, correct: np.ndarray, *, bins: int = 15) -> float:
    """Expected calibration error: ``sum_b (n_b / N) |accuracy_b - confidence_b|`` over equal-width bins.

    Parameters
    ----------
    conf : (N,) float in [0, 1], the confidence of each prediction (e.g. the max softmax probability).
    correct : (N,) bool, whether each prediction was right.
    bins : number of equal-width bins (15 as in Guo et al. 2017).

    Returns
    -------
    float in [0, 1]; NaN when N == 0.
    """
    conf = np.asarray(conf, np.float64).ravel()
    if conf.size == 0:
        return float("nan")
    rb = reliability_bins(conf, correct, bins=bins)
    full = rb["count"].to_numpy() > 0
    gap = np.abs(rb["accuracy"].to_numpy()[full] - rb["confidence"].to_numpy()[full])
    return float(np.sum(rb["count"].to_numpy()[full] * gap) / conf.size)


# ---------------------------------------------------------------------- single-label
def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) int64 counts, rows = true class, columns = predicted class."""
    y_true = np.asarray(y_true, np.int64).ravel()
    y_pred = np.asarray(y_pred, np.int64).ravel()
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def confusion_cell(y_true: np.ndarray, y_pred: np.ndarray, true_k: int, pred_k: int) -> np.ndarray:
    """Row positions of the samples behind one confusion-matrix cell.

    Parameters
    ----------
    y_true, y_pred : (N,) int class indices.
    true_k, pred_k : the cell (row = true class, column = predicted class).

    Returns
    -------
    (M,) int64 positions into ``y_true`` (map them to sample ids with ``ids[positions]``).
    """
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    return np.flatnonzero((y_true == true_k) & (y_pred == pred_k)).astype(np.int64)


def _safe_div(a: np.ndarray, b: np.ndarray, empty: float = 0.0) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    out = np.full(np.broadcast(a, b).shape, empty, np.float64)
    np.divide(a, b, out=out, where=b > 0)
    return out


def _f1(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    return _safe_div(2 * p * r, p + r)


def _class_names(class_names: Sequence[str] | None, k: int) -> list[str]:
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"Got {len(names)} class names for {k} probability columns; pass one name per column.")
    return names


def classification_report(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str] | None = None, *,
                          k: int = 5, bins: int = 15) -> dict[str, Any]:
    """Single-label metrics from predicted probabilities.

    Parameters
    ----------
    y_true : (N,) int, true class index of each sample (columns of ``probs``).
    probs : (N, K) float, predicted class probabilities (rows sum to 1).
    class_names : K names (default "0".."K-1").
    k : top-k accuracy (clipped to K).
    bins : ECE / reliability bins.

    Returns
    -------
    dict with ``n``, ``accuracy``, ``balanced_accuracy`` (mean recall over classes with support),
    ``macro_f1`` (over classes with support), ``top_k`` and ``k``, ``nll``, ``ece``, ``reliability``
    (DataFrame of bins), ``per_class`` (DataFrame indexed by class name: precision, recall, f1, support,
    predicted), ``confusion`` ((K, K) int64, rows true) and ``y_pred`` ((N,) int64).
    """
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, K), got shape {probs.shape}.")
    n, n_classes = probs.shape
    y_true = np.asarray(y_true, np.int64).ravel()
    if y_true.shape[0] != n:
        raise ValueError(f"y_true has {y_true.shape[0]} rows but probs has {n}.")
    if n and (y_true.min() < 0 or y_true.max() >= n_classes):
        raise ValueError("y_true must hold class indices in [0, K); drop unlabelled rows (-1) first.")
    names = _class_names(class_names, n_classes)
    y_pred = probs.argmax(1) if n else np.zeros(0, np.int64)
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1)
    predicted = cm.sum(0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support, empty=np.nan)
    f1 = np.where(support > 0, _f1(precision, np.nan_to_num(recall)), np.nan)
    has = support > 0
    kk = int(min(max(k, 1), n_classes)) if n_classes else 0
    if n and kk:
        topk = np.argpartition(-probs, kk - 1, axis=1)[:, :kk]
        top_k = float((topk == y_true[:, None]).any(1).mean())
    else:
        top_k = float("nan")
    correct = y_pred == y_true
    conf = probs.max(1) if n else np.zeros(0)
    p_true = probs[np.arange(n), y_true] if n else np.zeros(0)
    per_class = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "support": support,
                              "predicted": predicted}, index=pd.Index(names, name="class"))
    return {
        "n": int(n),
        "accuracy": float(correct.mean()) if n else float("nan"),
        "balanced_accuracy": float(np.nanmean(recall[has])) if has.any() else float("nan"),
        "macro_f1": float(np.mean(f1[has])) if has.any() else float("nan"),
        "top_k": top_k,
        "k": kk,
        "nll": float(-np.mean(np.log(np.clip(p_true, 1e-12, 1.0)))) if n else float("nan"),
        "ece": expected_calibration_error(conf, correct, bins=bins),
        "reliability": reliability_bins(conf, correct, bins=bins),
        "per_class": per_class,
        "confusion": cm,
        "y_pred": y_pred.astype(np.int64),
    }


# ---------------------------------------------------------------------- multi-label
def average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """Non-interpolated average precision ``sum_n (R_n - R_{n-1}) P_n`` (as scikit-learn), NaN without positives.

    Parameters
    ----------
    y : (M,) bool, positive or negative (known cells only).
    scores : (M,) float, higher = more likely positive.
    """
    y = np.asarray(y, bool).ravel()
    if not y.any():
        return float("nan")
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, np.asarray(scores, np.float64).ravel()))


UNKNOWN_AS = {
    "negative": "unknown labels counted as negatives (an image's unlisted classes are assumed absent)",
    "ignore": "unknown labels left out (only positive and rejected cells count: optimistic when few are rejected)",
}
"""How :func:`multilabel_report` treats UNKNOWN cells of labelled images, with the sentence to show beside it."""


def multilabel_report(Y: np.ndarray, probs: np.ndarray, class_names: Sequence[str] | None = None, *,
                      thresholds: np.ndarray | float | None = None, unknown: str = "negative",
                      verified: np.ndarray | None = None) -> dict[str, Any]:
    """Multi-label metrics, with the assumption about unknown labels stated in the result.

    Parameters
    ----------
    Y : (N, K) int8, POSITIVE=1 / UNKNOWN=0 / REJECTED=-1.
    probs : (N, K) float, independent per-class probabilities (sigmoid outputs).
    class_names : K names.
    thresholds : (K,) or scalar decision thresholds (default 0.5).
    unknown : a key of :data:`UNKNOWN_AS`. ``"negative"`` (default): an UNKNOWN cell of an image that has a
        positive label counts as a negative, as in every multi-label benchmark (a model that predicts a class
        nobody listed is charged a false positive); ``"ignore"``: only known cells count. With no rejections
        at all, ``"ignore"`` has no negatives and reports precision 1.0 everywhere. Rows without a positive
        label only count their rejected cells either way.
    verified : optional (N,) bool, images whose every label was reviewed (:func:`verified_rows`): their
        report, with unknowns as negatives (there it is not an assumption: nothing is missing), comes back
        under ``"verified"``; None or no such image: ``"verified"`` is None.

    Returns
    -------
    dict with ``n`` (rows with at least one counted cell), ``unknown_as`` and ``assumption`` (the sentence to
    show), ``mAP`` (mean over classes with a positive of the AP on that class's counted cells), ``micro_f1``,
    ``macro_f1`` (over classes with a positive), ``micro_precision``, ``micro_recall``, ``labels_per_image``
    (predicted and given, over images with a positive), ``real_accuracy`` (ReaL-style: the top-1 class is
    correct when it is any positive label of the image, over images with a positive), ``real_by_n_labels``
    (DataFrame: n_labels, n, accuracy), ``per_class`` (DataFrame indexed by class: ap, precision, recall, f1,
    support (positives), negatives (counted negatives: rejected, plus unknown ones when counted), rejected,
    unknown, threshold), and ``verified`` (the same dict for the verified images, or None).
    """
    if unknown not in UNKNOWN_AS:
        raise ValueError(f"Unknown unknown={unknown!r}; use one of: {', '.join(UNKNOWN_AS)}.")
    Y = np.asarray(Y)
    probs = np.asarray(probs, np.float64)
    if Y.shape != probs.shape or Y.ndim != 2:
        raise ValueError(f"Y {Y.shape} and probs {probs.shape} must both be (N, K).")
    n, n_classes = Y.shape
    names = _class_names(class_names, n_classes)
    thr = np.broadcast_to(np.asarray(0.5 if thresholds is None else thresholds, np.float64), (n_classes,))
    pos = Y == POSITIVE
    rejected = Y == REJECTED
    neg = rejected | ((Y == UNKNOWN) & pos.any(1, keepdims=True)) if unknown == "negative" else rejected
    known = pos | neg
    pred = probs >= thr[None, :]
    tp = (pred & pos).sum(0).astype(np.float64)
    fp = (pred & neg).sum(0).astype(np.float64)
    fn = (~pred & pos).sum(0).astype(np.float64)
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn, empty=np.nan)
    n_pos = pos.sum(0)
    f1 = np.where(n_pos > 0, _f1(precision, np.nan_to_num(recall)), np.nan)
    ap = np.array([average_precision(pos[known[:, j], j], probs[known[:, j], j]) for j in range(n_classes)])
    has = n_pos > 0
    mp = float(_safe_div(tp.sum(), tp.sum() + fp.sum()))
    mr = float(_safe_div(tp.sum(), tp.sum() + fn.sum()))
    # ReaL-style top-1 accuracy, split by the number of positive labels of the image
    n_labels = pos.sum(1)
    rows = n_labels > 0
    hit = top1_correct(Y, probs)
    by = pd.DataFrame({"n_labels": n_labels[rows], "hit": hit[rows].astype(np.float64)})
    by = by.groupby("n_labels")["hit"].agg(["size", "mean"]).reset_index()
    by.columns = ["n_labels", "n", "accuracy"]
    per_class = pd.DataFrame({"ap": ap, "precision": precision, "recall": recall, "f1": f1, "support": n_pos,
                              "negatives": neg.sum(0), "rejected": rejected.sum(0), "unknown": (Y == UNKNOWN).sum(0),
                              "threshold": thr}, index=pd.Index(names, name="class"))
    sub = None
    if verified is not None:
        v = np.asarray(verified, bool)
        if v.shape != (n,):
            raise ValueError(f"verified must be (N,) = ({n},) bool, got {v.shape}.")
        if (v & rows).any():
            sub = multilabel_report(Y[v], probs[v], names, thresholds=thr, unknown="negative")
            sub["assumption"] = "images whose every label was reviewed: no assumption about unknown labels"
    return {
        "n": int(known.any(1).sum()),
        "unknown_as": unknown,
        "assumption": UNKNOWN_AS[unknown],
        "mAP": float(np.nanmean(ap[has])) if has.any() else float("nan"),
        "micro_f1": float(_f1(np.array(mp), np.array(mr))),
        "micro_precision": mp,
        "micro_recall": mr,
        "macro_f1": float(np.mean(f1[has])) if has.any() else float("nan"),
        "labels_per_image": float(pred[rows].sum(1).mean()) if rows.any() else float("nan"),
        "labels_per_image_given": float(n_labels[rows].mean()) if rows.any() else float("nan"),
        "real_accuracy": float(hit[rows].mean()) if rows.any() else float("nan"),
        "real_by_n_labels": by,
        "per_class": per_class,
        "verified": sub,
    }


def verified_rows(ids: np.ndarray, Y: np.ndarray, reviews: pd.DataFrame | None = None) -> np.ndarray:
    """(N,) bool: images whose every label is settled, so their metrics need no assumption about unknown cells.

    An image is verified when no cell of it is UNKNOWN, or when a person's latest decision on it (any queue,
    not a skip, an undo or a bulk accept) confirmed or corrected its label set after looking at the image:
    ``label_right``, ``reviewed``, ``accepted``, ``corrected``, ``both_valid``, ``label_wrong``,
    ``model_wrong``, ``both_wrong``.

    Parameters
    ----------
    ids : (N,) int64 sample ids (rows of ``Y``).
    Y : (N, K) int8 label states.
    reviews : ``Store.reviews()`` (sample_id, verdict, in time order), or None.
    """
    Y = np.asarray(Y)
    out = ~(Y == UNKNOWN).any(1) & (Y == POSITIVE).any(1)
    if reviews is not None and len(reviews):
        r = reviews.sort_index()
        r = r[~r["verdict"].isin(("skipped", "undone", "bulk_accepted"))]
        r = r[~r.duplicated("sample_id", keep="last")]
        ok = r["verdict"].isin(VERIFYING_VERDICTS)
        out |= np.isin(np.asarray(ids, np.int64), r.loc[ok, "sample_id"].to_numpy(np.int64))
    return out


VERIFYING_VERDICTS = ("label_right", "reviewed", "accepted", "corrected", "both_valid", "label_wrong",
                      "model_wrong", "both_wrong")
"""Review verdicts taken after a person looked at the whole image and settled its labels."""


def top1_correct(Y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Whether each image's top-1 prediction is one of its positive labels (ReaL-style correctness).

    Parameters
    ----------
    Y : (N, K) int8 label matrix, POSITIVE / UNKNOWN / REJECTED. With one positive per row this is
        plain single-label correctness (argmax == label).
    probs : (N, K) float probabilities.

    Returns
    -------
    (N,) bool; False for rows without a positive label.
    """
    Y = np.asarray(Y)
    probs = np.asarray(probs)
    if Y.shape != probs.shape or Y.ndim != 2:
        raise ValueError(f"Y {Y.shape} and probs {probs.shape} must both be (N, K).")
    if Y.shape[1] == 0:
        return np.zeros(len(Y), bool)
    return Y[np.arange(len(Y)), probs.argmax(1)] == POSITIVE


def multilabel_confusion_pairs(Y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true label, top-1 prediction) pairs that make a confusion matrix of a multi-label set.

    An image whose top-1 class is one of its positive labels gives one pair on the diagonal of that
    class; an image whose top-1 class is not one of its labels gives one off-diagonal pair per
    positive label. Images without a positive label give none. Off-diagonal cells therefore hold
    exactly the ReaL-style mistakes.

    Parameters
    ----------
    Y : (N, K) int8, POSITIVE / UNKNOWN / REJECTED.
    probs : (N, K) float probabilities.

    Returns
    -------
    rows : (P,) int64 row positions into ``Y``; true_k, pred_k : (P,) int64 class indices
    (feed them to :func:`confusion_matrix` and :func:`confusion_cell`).
    """
    pos = np.asarray(Y) == POSITIVE
    hit = top1_correct(Y, probs)
    rows, true_k = np.nonzero(pos)
    pred_k = np.asarray(probs).argmax(1)[rows] if len(rows) else np.zeros(0, np.int64)
    keep = ~hit[rows] | (true_k == pred_k)
    return rows[keep].astype(np.int64), true_k[keep].astype(np.int64), pred_k[keep].astype(np.int64)


NOT_MISTAKES = ("label_wrong", "both_valid", "ambiguous")
MISTAKE_VERDICTS = tuple(VERDICT_NAMES)


def review_outcomes(reviews: pd.DataFrame, *, queue: str = "evaluate") -> pd.DataFrame:
    """How many reviewed model mistakes were not the model's fault ("when does dough become a bagel?").

    Only the latest verdict counts: per (run, sample) for a run's row, per sample for the ``"all"`` row
    (a sample reviewed under two runs counts once overall).

    Parameters
    ----------
    reviews : ``Store.reviews()``: sample_id, queue, verdict, run_id (may be null), in time order
        (ascending ``id`` index).
    queue : the queue holding verdicts on model mistakes (cells off the confusion diagonal).

    Returns
    -------
    DataFrame indexed by ``run`` (run ids ascending, then ``"all"``) with columns ``reviewed`` and one
    count per verdict of ``MISTAKE_VERDICTS``, ``not_mistakes`` (label_wrong + both_valid +
    ambiguous) and ``share`` (= not_mistakes / reviewed, NaN when nothing was reviewed).
    """
    cols = ["reviewed", *MISTAKE_VERDICTS, "not_mistakes", "share"]
    r = reviews[(reviews["queue"] == queue) & reviews["verdict"].isin(MISTAKE_VERDICTS)] if len(reviews) else reviews
    if r.empty:
        return pd.DataFrame([[0] * (len(cols) - 1) + [np.nan]], columns=cols, index=pd.Index(["all"], name="run"))
    r = r.sort_index()

    def count(latest: pd.DataFrame, by: str | None) -> pd.DataFrame:
        key = latest[by] if by else pd.Series("all", index=latest.index)
        t = pd.crosstab(key, latest["verdict"]).reindex(columns=list(MISTAKE_VERDICTS), fill_value=0)
        t.insert(0, "reviewed", t.sum(1))
        t["not_mistakes"] = t[list(NOT_MISTAKES)].sum(1)
        t["share"] = t["not_mistakes"] / t["reviewed"]
        return t

    per_run = r.dropna(subset=["run_id"]).astype({"run_id": np.int64})
    per_run = count(per_run.drop_duplicates(["run_id", "sample_id"], keep="last"), "run_id")
    overall = count(r.drop_duplicates("sample_id", keep="last"), None)
    out = pd.concat([per_run, overall])
    out.index = pd.Index(list(per_run.index) + ["all"], name="run", dtype=object)
    out.columns.name = None
    return out[cols]


def tune_thresholds(Y: np.ndarray, probs: np.ndarray, *, weights: np.ndarray | None = None,
                    default: float = 0.5) -> np.ndarray:
    """Per-class thresholds that maximise F1 over the cells that carry a label.

    Parameters
    ----------
    Y : (N, K) int8, POSITIVE / UNKNOWN / REJECTED. Only POSITIVE and REJECTED cells count.
    probs : (N, K) float probabilities.
    weights : optional (N, K) float cell weights (0 = ignored); lets callers count weak negatives.
    default : threshold of a class without a known positive and a known negative.

    Returns
    -------
    (K,) float32 thresholds: the midpoint between the best-F1 score and the next lower score.
    """
    Y = np.asarray(Y)
    probs = np.asarray(probs, np.float64)
    w_all = (Y != UNKNOWN).astype(np.float64) if weights is None else np.asarray(weights, np.float64)
    out = np.full(Y.shape[1], default, np.float32)
    for j in range(Y.shape[1]):
        m = w_all[:, j] > 0
        y = Y[m, j] == POSITIVE
        if not y.any() or y.all():
            continue
        w = w_all[m, j]
        s = probs[m, j]
        order = np.argsort(-s, kind="stable")
        s, y, w = s[order], y[order], w[order]
        tp = np.cumsum(w * y)
        fp = np.cumsum(w * ~y)
        # only cut between distinct scores
        last = np.r_[s[1:] != s[:-1], True]
        f1 = _safe_div(2 * tp, tp + fp + (w * y).sum())
        f1 = np.where(last, f1, -1.0)
        i = int(np.argmax(f1))
        nxt = s[i + 1] if i + 1 < len(s) else 0.0
        out[j] = np.float32((s[i] + nxt) / 2)
    return out


# ---------------------------------------------------------------------- JSON
def _jsonable(x: Any) -> Any:
    if isinstance(x, pd.DataFrame):
        df = x.reset_index() if (x.index.name is not None or not isinstance(x.index, pd.RangeIndex)) else x
        return [{str(k): _jsonable(v) for k, v in rec.items()} for rec in df.to_dict(orient="records")]
    if isinstance(x, pd.Series):
        return _jsonable(x.to_dict())
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return None if math.isnan(v) or math.isinf(v) else v
    return x


def report_to_json(report: dict[str, Any], *, drop: Sequence[str] = ("y_pred",)) -> dict[str, Any]:
    """A JSON-able copy of a report: DataFrames become lists of records (index as a column), arrays
    nested lists, NaN becomes None. ``drop`` names per-sample keys left out (stored elsewhere)."""
    return {k: _jsonable(v) for k, v in report.items() if k not in drop}


def report_from_json(obj: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`report_to_json` for display: record lists become DataFrames, confusion an array."""
    out = dict(obj)
    if isinstance(out.get("per_class"), list):
        out["per_class"] = pd.DataFrame(out["per_class"]).set_index("class")
    for key in ("reliability", "real_by_n_labels"):
        if isinstance(out.get(key), list):
            out[key] = pd.DataFrame(out[key])
    if isinstance(out.get("confusion"), list):
        out["confusion"] = np.asarray(out["confusion"], np.int64)
    if isinstance(out.get("verified"), dict):
        out["verified"] = report_from_json(out["verified"])
    return out
