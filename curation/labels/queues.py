"""Review queues ranked by the expected value of a look, and how well each queue measures up from its reviews.

A queue is a DataFrame indexed by sample id with the class it proposes (``class_idx``, ``class_name``,
``confidence``, ``source``), the current label (``given_idx``), the class it round-robins over
(``balance_idx``), the queue's own ``score`` and its ``value``: the expected value of reviewing the item,
``P(the item is a real problem) × impact``:

* ``confirm`` (unlabelled, with a suggestion): P = ``1 - confidence`` (the chance the machine's label is
  wrong, i.e. that a human answer differs from a bulk accept), impact = typicality ``min(1, 2 ×
  outlier_score)`` (a typical image's label teaches the model about many images; an outlier's about few:
  density-weighted uncertainty sampling, Settles & Craven 2008). Confident suggestions sink to the end:
  they are what "accept all above X" is for, with its measured precision.
* ``errors`` (``is_label_issue``): P = ``1 - label_score`` (label quality is the estimated probability
  that the given label is right), impact 1 (a wrong training label). Single-label: the item proposes the
  model's class instead of the label. Multi-label: the item is the doubted *positive* label (``doubted``),
  proposed for removal (``proposal`` = ``"remove"``: Reject records the "no"); a rejected cell is never an
  error, so a "no" stays a "no".
* ``missing`` (a second class fits): P = the candidate's score (its probability), impact 1. The candidates
  are capped per class at the expected number of real gaps (:func:`curation.labels.multilabel.cap_by_expected`),
  and a gap leaves the queue once filled, rejected or reviewed.
* ``duplicates`` (near-identical pairs): P = 1 when the two carry different labels (one is wrong in a
  single-label task), 0.5 when one is unlabelled (it most likely takes the other's label), 0.25 when
  both are unlabelled and 0.1 when they agree (only redundancy or a train/test leak); impact 1.
* ``outliers`` (``outlier_score`` ≤ :data:`OUTLIER_MAX`): P = ``1 - outlier_score``, impact 1.

Queues measure themselves from the store's ``reviews`` table: each verdict is a *hit* (the item was a
real problem: a label changed, a second label was added, the image is ambiguous or out of vocabulary)
or a *miss* (the label was right, the suggestion was right), see :func:`outcomes`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from curation.core.vocab import POSITIVE, REJECTED, REVIEW_QUEUES, UNKNOWN
from curation.data.store import single_from_matrix
from curation.labels.outliers import OUTLIER_MAX

log = logging.getLogger(__name__)

QUEUES = REVIEW_QUEUES
SCORES = {
    "confirm": "suggestion confidence",
    "errors": "label quality (lower = worse)",
    "missing": "second-label probability",
    "duplicates": "pair prior (1 = conflicting labels)",
    "outliers": "typicality (lower = more unusual)",
}
"""What each queue's ``score`` column means, for captions."""
COLUMNS = ["class_idx", "class_name", "confidence", "source", "given_idx", "balance_idx", "score", "value",
           "partner", "proposal"]
"""``proposal``: ``"add"`` (make ``class_idx`` a label) or ``"remove"`` (the multi-label errors queue: ``class_idx``
is a given label in doubt)."""
DUPLICATE_PRIOR = {"conflict": 1.0, "one_labelled": 0.5, "unlabelled": 0.25, "agree": 0.1}
RECENT = 20
"""Reviews in the "recent" window of the diminishing-returns check."""
DROP = 0.5
"""Diminishing returns: the recent hit rate is below this share of the overall rate."""
MIN_EARLIER = 10
"""Reviews needed before the recent window for the diminishing-returns check to speak."""

# verdicts written by the Review page (curation.ui.actions.review_item) and elsewhere
SKIPPED = frozenset({"skipped", "undone"})
"""Not a decision: the item stays in its queue and is not measured."""
UNMEASURED = SKIPPED | {"bulk_accepted"}
"""Not a human judgement of the item: left out of hit rates and precision."""
NOT_PROBLEM = frozenset({"label_right", "reviewed", "model_wrong"})
"""Misses in every queue: a person looked and the label was right."""
NOT_PROBLEM_IN = {"confirm": frozenset({"accepted", "both_valid"}),
                  "errors": frozenset({"rejected"}), "missing": frozenset({"rejected"}),
                  "duplicates": frozenset({"rejected"})}
"""Queue-specific misses: accepting a suggestion means it was right; rejecting the flagged class means
the flag was wrong."""
CHANGES = frozenset({"accepted", "corrected", "both_valid"})
"""Verdicts that find a problem only when they changed a label: one whose review has no batch (the proposed
class was the label already) is a miss."""
UNACCEPTABLE = frozenset({"rejected", "ambiguous", "out_of_vocabulary"})
"""Verdicts that leave an image without the suggested label: its suggestion counts as wrong."""


# ---------------------------------------------------------------------- alignment
@dataclass(frozen=True)
class Aligned:
    """The current labels and the suggestions on one sample order (computed once per page run).

    Attributes
    ----------
    ids : (N,) int64 sample ids.
    matrix : (N, K) int8 current label states.
    given : (N,) int64 lowest positive class index, -1 when unlabelled.
    cls : (N,) int64 suggested class index, -1 when no suggestion (confidence 0 or absent).
    conf : (N,) float64 suggestion confidence (0 when none).
    source : (N,) categorical suggestion source (categoricals keep queue building fast: no per-row strings).
    per_source : ``{"p_knn": (N,) float64, ...}`` the suggestions' per-source probability columns, if any.
    names : (K + 1,) object class names with "" last (so ``names[-1]`` names "no class").
    """

    ids: np.ndarray
    matrix: np.ndarray
    given: np.ndarray
    cls: np.ndarray
    conf: np.ndarray
    source: pd.Categorical
    per_source: dict[str, np.ndarray]
    names: np.ndarray

    def cell(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``matrix[rows, cols]``, UNKNOWN where ``cols`` < 0."""
        if self.matrix.shape[1] == 0:
            return np.zeros(len(rows), np.int8)
        return np.where(cols >= 0, self.matrix[rows, np.clip(cols, 0, self.matrix.shape[1] - 1)], UNKNOWN)

    def rows_of(self, sample_ids: np.ndarray) -> np.ndarray:
        """(M,) int64 row of each sample id, -1 for ids not here."""
        sample_ids = np.asarray(sample_ids, np.int64)
        if len(self.ids) == 0:
            return np.full(len(sample_ids), -1, np.int64)
        order = np.argsort(self.ids, kind="stable")
        pos = np.clip(np.searchsorted(self.ids[order], sample_ids), 0, len(self.ids) - 1)
        return np.where(self.ids[order][pos] == sample_ids, order[pos], -1).astype(np.int64)


def align(ids: np.ndarray, matrix: np.ndarray, sugg: pd.DataFrame, *, class_names: Sequence[str]) -> Aligned:
    """Put the current label matrix and the suggestions on the order of ``ids``.

    Parameters
    ----------
    ids : (N,) int64 sample ids; ``matrix`` rows follow them.
    matrix : (N, K) int8 current label states (read fresh: queue membership follows the labels of now even
        when ``sugg`` or the issue scores were computed on older labels).
    sugg : ``curation.labels.suggest.suggestions`` output indexed by sample id (class_idx, confidence, source;
        optional ``p_*`` per-source columns).
    class_names : names of the K label-matrix columns.
    """
    ids = np.asarray(ids, np.int64)
    m = np.asarray(matrix, np.int8)
    if m.ndim != 2 or len(m) != len(ids):
        raise ValueError(f"The label matrix has {len(m)} rows for {len(ids)} ids; read it with "
                         "`store.label_matrix(ids)`.")
    s = sugg if sugg.index.equals(pd.Index(ids)) else sugg.reindex(ids)
    conf = s["confidence"].fillna(0.0).to_numpy(np.float64)
    cls = np.where(conf > 0, s["class_idx"].fillna(-1).to_numpy(np.int64), -1)
    given = single_from_matrix(m)
    cols = [str(c) for c in sugg.columns if str(c).startswith("p_")]
    return Aligned(ids, m, given, cls, conf, pd.Categorical(s["source"].fillna("").astype(str)),
                   {c: s[c].to_numpy(np.float64) for c in cols},
                   np.array([*map(str, class_names), ""], dtype=object))


def task_of(a: Aligned) -> str:
    """``"multi"`` when some sample carries two positive labels, else ``"single"`` (what the queues can tell from
    the label matrix alone; the issue table's ``attrs["task"]`` says it for sure)."""
    return "multi" if ((a.matrix == POSITIVE).sum(1) > 1).any() else "single"


def _frame(a: Aligned, rows: np.ndarray, *, class_idx: np.ndarray, confidence: np.ndarray,
           source: str | pd.Categorical, balance: np.ndarray, score: np.ndarray, value: np.ndarray,
           partner: np.ndarray | None = None, proposal: str = "add", **extra: Any) -> pd.DataFrame:
    """Assemble one queue from rows of ``a`` (the other arrays already taken at those rows); a str
    ``source`` is the same for every row."""
    class_idx = np.asarray(class_idx, np.int64)
    if isinstance(source, str):
        source = pd.Categorical.from_codes(np.zeros(len(rows), np.int64), [source])
    names = pd.Categorical.from_codes(np.where(class_idx >= 0, class_idx, len(a.names) - 1), a.names)
    data = {"class_idx": class_idx, "class_name": names,
            "confidence": np.asarray(confidence, np.float64), "source": source, "given_idx": a.given[rows],
            "balance_idx": np.asarray(balance, np.int64), "score": np.asarray(score, np.float64),
            "value": np.nan_to_num(np.asarray(value, np.float64)),
            "partner": np.full(len(rows), -1, np.int64) if partner is None else np.asarray(partner, np.int64),
            "proposal": pd.Categorical.from_codes(np.zeros(len(rows), np.int64), [proposal]), **extra, **{c: p[rows] for c, p in a.per_source.items()}}
    return pd.DataFrame(data, index=pd.Index(a.ids[rows], name="id"))


def _issue(a: Aligned, issues: pd.DataFrame, column: str, fill: Any) -> np.ndarray:
    """One column of the issues frame on the order of ``a.ids``."""
    col = issues[column] if issues.index.equals(pd.Index(a.ids)) else issues[column].reindex(a.ids)
    return col.fillna(fill).to_numpy() if col.hasnans else col.to_numpy()


# ---------------------------------------------------------------------- queues
def confirm_queue(a: Aligned, issues: pd.DataFrame | None = None) -> pd.DataFrame:
    """Unlabelled samples with a suggestion (not a class a person already rejected) to confirm.

    ``issues`` (``curation.labels.issues.compute_issues`` output) gives the typicality weight; without it every
    image weighs 1.
    """
    ok = (a.cls >= 0) & (a.given < 0) & (a.cell(np.arange(len(a.ids)), a.cls) != REJECTED)
    rows = np.flatnonzero(ok)
    typical = np.ones(len(rows))
    if issues is not None and "outlier_score" in issues:
        typical = np.clip(2.0 * _issue(a, issues, "outlier_score", 0.5)[rows].astype(np.float64), 0.0, 1.0)
    conf = a.conf[rows]
    return _frame(a, rows, class_idx=a.cls[rows], confidence=conf, source=a.source[rows], balance=a.cls[rows],
                  score=conf, value=(1.0 - conf) * typical)


def errors_queue(a: Aligned, issues: pd.DataFrame) -> pd.DataFrame:
    """Labelled samples flagged ``is_label_issue`` whose doubted label is still what was scored.

    Single-label: the proposed class is the label-quality ranking's ``suggested`` class, and the item stays
    while the label is the one that was scored. Multi-label: the item is the doubted positive label
    (``doubted``), proposed for removal (``proposal`` = ``"remove"``), and stays while that cell is still
    positive (a label a person rejected or confirmed never comes back as an error). Value ``1 - label_score``.
    """
    flagged = _issue(a, issues, "is_label_issue", False).astype(bool)
    score_all = _issue(a, issues, "label_score", 1.0).astype(np.float64)
    task = issues.attrs.get("task") or task_of(a)
    if task == "multi" and "doubted" in issues:
        doubted = _issue(a, issues, "doubted", -1).astype(np.int64)
        rows = np.flatnonzero(flagged & (doubted >= 0) & (a.cell(np.arange(len(a.ids)), doubted) == POSITIVE))
        score = score_all[rows]
        return _frame(a, rows, class_idx=doubted[rows], confidence=1.0 - score,
                      source="label doubted (out-of-fold + kNN)", balance=doubted[rows], score=score,
                      value=1.0 - score, proposal="remove")
    scored = _issue(a, issues, "given", -1).astype(np.int64)
    suggested = _issue(a, issues, "suggested", -1).astype(np.int64)
    rows = np.flatnonzero(flagged & (a.given >= 0) & (scored == a.given) & (suggested >= 0))
    score = score_all[rows]
    return _frame(a, rows, class_idx=suggested[rows],
                  confidence=_issue(a, issues, "suggested_prob", 0.0).astype(np.float64)[rows],
                  source="label quality (out-of-fold + kNN)", balance=a.given[rows], score=score, value=1.0 - score)


def missing_queue(a: Aligned, missing: pd.DataFrame) -> pd.DataFrame:
    """Labelled samples with a likely second label: per sample, the strongest candidate class still unknown.

    Parameters
    ----------
    missing : DataFrame[sample, class, score] (``curation.labels.issues.missing_labels``; a higher score is a
        stronger candidate), any number of rows per sample.
    """
    rows = a.rows_of(missing["sample"].to_numpy(np.int64))
    cls = missing["class"].to_numpy(np.int64)
    score = missing["score"].to_numpy(np.float64)
    ok = rows >= 0
    ok[ok] = (a.given[rows[ok]] >= 0) & (cls[ok] >= 0) & (a.cell(rows[ok], cls[ok]) == UNKNOWN)
    rows, cls, score = rows[ok], cls[ok], score[ok]
    best = np.lexsort((-score, rows))  # per sample, the strongest candidate first
    first = best[np.r_[True, rows[best][1:] != rows[best][:-1]]] if len(best) else best
    rows, cls, score = rows[first], cls[first], score[first]
    return _frame(a, rows, class_idx=cls, confidence=score, source="second-label candidates", balance=cls,
                  score=score, value=score)


def duplicates_queue(a: Aligned, issues: pd.DataFrame) -> pd.DataFrame:
    """Near-duplicate pairs, one row per pair, indexed by the image to act on, with its ``partner``.

    The row's image is the unlabelled one of a half-labelled pair (it is proposed the partner's label),
    else the lower id; a labelled partner's label is the proposal, else the image's own suggestion.
    ``conflict`` marks pairs whose labels differ now.
    """
    dup = _issue(a, issues, "duplicate_of", -1).astype(np.int64)
    first = np.flatnonzero(dup >= 0)
    second = a.rows_of(dup[first])
    x, y = first[second >= 0], second[second >= 0]
    given = a.given
    # act on the unlabelled one of a half-labelled pair, else on the lower id
    swap = ((given[x] >= 0) & (given[y] < 0)) | (((given[x] >= 0) == (given[y] >= 0)) & (a.ids[x] > a.ids[y]))
    pair = np.unique(np.stack([np.where(swap, y, x), np.where(swap, x, y)], 1), axis=0).reshape(-1, 2)
    x, y = pair[:, 0], pair[:, 1]
    gx, gy = given[x], given[y]
    conflict = (gx >= 0) & (gy >= 0) & (gx != gy)
    prior = np.select([conflict, (gx >= 0) != (gy >= 0), (gx < 0) & (gy < 0)],
                      [DUPLICATE_PRIOR["conflict"], DUPLICATE_PRIOR["one_labelled"], DUPLICATE_PRIOR["unlabelled"]],
                      DUPLICATE_PRIOR["agree"])
    proposed = np.where(gy >= 0, gy, a.cls[x])
    cats = [*a.source.categories, "the duplicate's label"]
    source = pd.Categorical.from_codes(np.where(gy >= 0, len(cats) - 1, a.source.codes[x]), cats)
    df = _frame(a, x, class_idx=proposed, confidence=np.where(gy >= 0, 1.0, a.conf[x]), source=source,
                balance=np.where(gx >= 0, gx, proposed), score=prior, value=prior, partner=a.ids[y],
                conflict=conflict)
    df = df.sort_values("value", ascending=False, kind="stable")
    return df[~df.index.duplicated()]


def outliers_queue(a: Aligned, issues: pd.DataFrame, *, max_score: float = OUTLIER_MAX) -> pd.DataFrame:
    """Samples with ``outlier_score`` ≤ ``max_score``, proposed their suggestion; value ``1 - outlier_score``."""
    score = _issue(a, issues, "outlier_score", 1.0).astype(np.float64)
    rows = np.flatnonzero(score <= max_score)
    given = a.given[rows]
    return _frame(a, rows, class_idx=a.cls[rows], confidence=a.conf[rows], source=a.source[rows],
                  balance=np.where(given >= 0, given, a.cls[rows]), score=score[rows], value=1.0 - score[rows])


def build_queues(a: Aligned, issues: pd.DataFrame | None = None, missing: pd.DataFrame | None = None, *,
                 reviews: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Every queue of :data:`QUEUES`, each ordered by value (descending, ties by id).

    Parameters
    ----------
    a : :func:`align` output.
    issues : ``curation.labels.issues.compute_issues`` output, or None (then only ``confirm`` has members).
    missing : DataFrame[sample, class, score] of second-label candidates, or None.
    reviews : ``Store.reviews()``; samples whose latest verdict in a queue is a decision (not a skip or an
        undo) leave that queue.

    Returns
    -------
    ``{queue name: DataFrame}`` with :data:`COLUMNS` (plus the ``p_*`` per-source columns, and ``conflict``
    for duplicates), indexed by sample id.
    """
    none = np.zeros(0, np.int64)
    empty = _frame(a, none, class_idx=none, confidence=none, source="", balance=none, score=none, value=none)
    out = {"confirm": confirm_queue(a, issues),
           "errors": errors_queue(a, issues) if issues is not None else empty,
           "missing": missing_queue(a, missing) if missing is not None else empty,
           "duplicates": duplicates_queue(a, issues) if issues is not None else empty,
           "outliers": outliers_queue(a, issues) if issues is not None else empty}
    if reviews is not None and len(reviews):
        done = decided(reviews)
        out = {k: q[~q.index.isin(done.get(k, none))] for k, q in out.items()}
    return {k: order(q) for k, q in out.items()}


def order(queue: pd.DataFrame, *, balanced: bool = False) -> pd.DataFrame:
    """A queue ordered by ``value`` (descending, ties by id), or class-balanced.

    Class-balanced: round robin over ``balance_idx`` — the best item of every class, ordered by value,
    then every class's second best, and so on — so that a large easy class does not crowd the others
    out of the first pages (query imbalance makes naive active learning lose to random sampling:
    Bang et al. 2024, "Active Prompt Learning in Vision Language Models").
    """
    ids = queue.index.to_numpy(np.int64)
    v = -queue["value"].to_numpy(np.float64)
    if not balanced or len(queue) == 0:
        return queue.iloc[np.lexsort((ids, v))]
    g = queue["balance_idx"].to_numpy(np.int64)
    by_group = np.lexsort((ids, v, g))
    gs = g[by_group]
    starts = np.r_[0, np.flatnonzero(gs[1:] != gs[:-1]) + 1]
    rank = np.empty(len(g), np.int64)
    rank[by_group] = np.arange(len(g)) - np.repeat(starts, np.diff(np.r_[starts, len(g)]))
    return queue.iloc[np.lexsort((ids, v, rank))]


def to_front(queue: pd.DataFrame, sample_id: int | None) -> pd.DataFrame:
    """The queue with ``sample_id`` moved first when it is a member (an undone item comes back first)."""
    if sample_id is None or int(sample_id) not in queue.index:
        return queue
    first = queue.index == int(sample_id)
    return pd.concat([queue[first], queue[~first]])


# ---------------------------------------------------------------------- self-measurement
def outcomes(reviews: pd.DataFrame, *, task: str = "single") -> pd.DataFrame:
    """The latest verdict per (queue, sample), in review order, judged hit or miss.

    Parameters
    ----------
    reviews : ``Store.reviews()`` (indexed by review id, with sample_id, queue, verdict).
    task : ``"single"`` or ``"multi"``: in a multi-label workspace the errors queue proposes removing a doubted
        label, so Reject there is a hit (the label was wrong), not a miss.

    Returns
    -------
    DataFrame indexed by review id: ``sample_id``, ``queue``, ``verdict``, ``measured`` (a human judgement:
    not a skip, an undo or a bulk accept) and ``hit`` (measured and the item was a real problem: any
    verdict but :data:`NOT_PROBLEM`, the queue's :data:`NOT_PROBLEM_IN` and :data:`CHANGES` that changed no
    label).
    """
    if reviews is None or reviews.empty:
        return pd.DataFrame({"sample_id": pd.Series(dtype=np.int64), "queue": pd.Series(dtype=object),
                             "verdict": pd.Series(dtype=object), "measured": pd.Series(dtype=bool),
                             "hit": pd.Series(dtype=bool)})
    r = reviews.sort_index()
    r = r[~r.duplicated(["queue", "sample_id"], keep="last")]
    miss = r["verdict"].isin(NOT_PROBLEM)
    if "batch_id" in r:
        miss = miss | (r["verdict"].isin(CHANGES) & r["batch_id"].isna())
    r = r[["sample_id", "queue", "verdict"]].copy()
    if task not in ("single", "multi"):
        raise ValueError(f"Unknown task {task!r}; use one of: single, multi.")
    for queue, verdicts in NOT_PROBLEM_IN.items():
        if task == "multi" and queue == "errors":
            verdicts = verdicts - {"rejected"}
        miss = miss | (r["queue"].eq(queue) & r["verdict"].isin(verdicts))
    r["measured"] = ~r["verdict"].isin(UNMEASURED)
    r["hit"] = r["measured"] & ~miss
    return r


def decided(reviews: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per queue, the (M,) int64 samples whose latest verdict there is a decision (not a skip or an undo)."""
    o = outcomes(reviews)
    o = o[~o["verdict"].isin(SKIPPED)]
    return {q: g["sample_id"].to_numpy(np.int64) for q, g in o.groupby("queue")}


def hit_rates(reviews: pd.DataFrame, *, by: pd.Series | None = None, recent: int = RECENT, drop: float = DROP,
              min_earlier: int = MIN_EARLIER, task: str = "single") -> pd.DataFrame:
    """Share of reviewed items that were real problems, per queue (and per group), with a diminishing-returns flag.

    Parameters
    ----------
    reviews : ``Store.reviews()``.
    by : optional Series sample id -> group (e.g. the suggested class name); samples it lacks fall in
        ``"(none)"``.
    task : the workspace's task (:func:`outcomes`).
    recent : size of the recent window (the last ``recent`` measured reviews of the queue / group).
    drop, min_earlier : ``diminishing`` is set when at least ``recent + min_earlier`` reviews exist and the
        recent hit rate is below ``drop`` × the overall one: the queue has run past its real problems.

    Returns
    -------
    DataFrame indexed by queue (or (queue, group)): ``reviewed``, ``hits``, ``hit_rate``, ``recent_hit_rate``,
    ``diminishing``.
    """
    o = outcomes(reviews, task=task)
    o = o[o["measured"]].copy()
    keys = ["queue"]
    if by is not None:
        o["group"] = by.reindex(o["sample_id"].to_numpy()).fillna("(none)").astype(str).to_numpy()
        keys.append("group")
    g = o.groupby(keys, sort=True)["hit"]
    out = pd.DataFrame({"reviewed": g.size(), "hits": g.sum().astype(np.int64)})
    out["hit_rate"] = out["hits"] / out["reviewed"]
    out["recent_hit_rate"] = o.groupby(keys).tail(recent).groupby(keys, sort=True)["hit"].mean()
    out["diminishing"] = ((out["reviewed"] >= recent + min_earlier)
                          & (out["recent_hit_rate"] < drop * out["hit_rate"]))
    return out


def _wilson_low(k: int, n: int, z: float = 1.96) -> float:
    """Lower end of the Wilson score interval of a proportion k / n (nan when n = 0)."""
    if n == 0:
        return float("nan")
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float((centre - half) / (1 + z * z / n))


def measured_correct(a: Aligned, reviews: pd.DataFrame | None = None) -> np.ndarray:
    """Whether each sample's suggestion is right, where that is known; (N,) float64, nan = unknown.

    Known for labelled samples (the suggestion is right when its class is a positive label: a held-out
    judgement because the neighbour vote never sees the sample's own label), except samples whose latest
    review is a bulk accept (their label *is* the suggestion, so agreement proves nothing); and for
    unlabelled samples whose latest review is :data:`UNACCEPTABLE` (rejected, ambiguous, out of
    vocabulary): their suggestion was not acceptable, so wrong.

    Caveat: suggestions that blend in a trained model's predictions on its own training samples are not
    held out, and flatter the labelled part.
    """
    right = (a.cell(np.arange(len(a.ids)), a.cls) == POSITIVE).astype(np.float64)
    out = np.where((a.given >= 0) & (a.cls >= 0), right, np.nan)
    if reviews is not None and len(reviews):
        o = outcomes(reviews)
        o = o[~o["verdict"].isin(SKIPPED)]
        o = o[~o.duplicated("sample_id", keep="last")]
        rows = a.rows_of(o["sample_id"].to_numpy(np.int64))
        verdict = o["verdict"].to_numpy(object)
        out[rows[(rows >= 0) & (verdict == "bulk_accepted")]] = np.nan
        wrong = rows[(rows >= 0) & np.isin(verdict, list(UNACCEPTABLE))]
        out[wrong[(a.given[wrong] < 0) & (a.cls[wrong] >= 0)]] = 0.0
    return out


@dataclass(frozen=True)
class AcceptPlan:
    """What "accept all above confidence X" would write, and how precise suggestions at X measured.

    Attributes
    ----------
    threshold : X.
    ids : (M,) int64 unlabelled, unreviewed samples whose suggestion has confidence ≥ X (in the scope).
    class_idx : (M,) int64 their suggested classes.
    precision : accuracy of the suggestions with confidence ≥ X (in the scope) where it is known
        (:func:`measured_correct`); nan when nothing is measured.
    measured : how many samples ``precision`` rests on.
    low : lower end of its 95 % Wilson interval.
    """

    threshold: float
    ids: np.ndarray
    class_idx: np.ndarray
    precision: float
    measured: int
    low: float

    @property
    def n(self) -> int:
        return int(len(self.ids))


def accept_plan(a: Aligned, *, threshold: float, scope: np.ndarray | None = None,
                reviews: pd.DataFrame | None = None, correct: np.ndarray | None = None) -> AcceptPlan:
    """The samples "accept all above confidence X" would label, with the precision measured at X.

    Parameters
    ----------
    a : :func:`align` output.
    threshold : X in [0, 1].
    scope : (N,) bool, e.g. "suggested class is c" or "in cluster c"; None = all samples.
    reviews : ``Store.reviews()``: samples with a decision on record are never bulk-accepted, and review
        outcomes count in the precision.
    correct : :func:`measured_correct` output, when the caller has it already.
    """
    scope = np.ones(len(a.ids), bool) if scope is None else np.asarray(scope, bool)
    if correct is None:
        correct = measured_correct(a, reviews)
    above = scope & (a.cls >= 0) & (a.conf >= threshold)
    todo = above & (a.given < 0) & (a.cell(np.arange(len(a.ids)), a.cls) != REJECTED)
    if reviews is not None and len(reviews):
        seen = np.concatenate([np.zeros(0, np.int64), *decided(reviews).values()])
        todo &= ~np.isin(a.ids, seen)
    known = above & ~np.isnan(correct)
    n, k = int(known.sum()), int(np.nansum(correct[known]))
    return AcceptPlan(float(threshold), a.ids[todo], a.cls[todo], k / n if n else float("nan"), n,
                      _wilson_low(k, n))


def suggestion_accuracy(a: Aligned, *, reviews: pd.DataFrame | None = None,
                        correct: np.ndarray | None = None) -> pd.DataFrame:
    """Per class, how right the suggestions are where it is known, and how many pseudo-labels each class gets.

    Pseudo-labels favour easy classes (Huang et al. 2024, "Enhancing CLIP with CLIP"): compare a class's
    ``accuracy`` with the others, and its share of pseudo-labels with its share of labels.

    Returns
    -------
    DataFrame indexed by class name: ``labelled`` (known samples labelled c: lowest positive),
    ``accuracy`` (share of them whose suggestion is right), ``suggested`` (known samples suggested c),
    ``precision`` (share of those that are right), ``pseudo_labels`` (unlabelled samples suggested c),
    ``pseudo_share`` and ``label_share`` (shares of all pseudo-labels and of all labels).
    """
    k = len(a.names) - 1
    if correct is None:
        correct = measured_correct(a, reviews)
    known = ~np.isnan(correct)
    ok = np.nan_to_num(correct)

    def count(idx: np.ndarray, mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        sel = mask & (idx >= 0)
        return np.bincount(idx[sel], weights=None if weights is None else weights[sel], minlength=k)[:k]

    labelled, suggested = count(a.given, known), count(a.cls, known)
    pseudo = count(a.cls, (a.given < 0) & ~known)
    labels = count(a.given, a.given >= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({"labelled": labelled, "accuracy": count(a.given, known, ok) / labelled,
                             "suggested": suggested, "precision": count(a.cls, known, ok) / suggested,
                             "pseudo_labels": pseudo, "pseudo_share": pseudo / max(pseudo.sum(), 1),
                             "label_share": labels / max(labels.sum(), 1)},
                            index=pd.Index(a.names[:-1].astype(str), name="class"))
