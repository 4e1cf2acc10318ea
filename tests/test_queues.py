"""Review queues: membership, value order, class-balanced round robin, and the queues' self-measurement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from curation.core.vocab import POSITIVE, REJECTED
from curation.labels import queues

NAMES = ["cat", "dog", "fox"]


def _sugg(cls: list[int], conf: list[float], ids: list[int], **extra: list[float]) -> pd.DataFrame:
    names = np.array([*NAMES, ""], dtype=object)
    return pd.DataFrame({"class_idx": cls, "class_name": names[cls], "confidence": conf, "source": "knn",
                         "label_idx": -1, "agrees": False, **extra}, index=pd.Index(ids, name="id"))


def _matrix(given: list[int], k: int = 3) -> np.ndarray:
    m = np.zeros((len(given), k), np.int8)
    for r, g in enumerate(given):
        if g >= 0:
            m[r, g] = POSITIVE
    return m


def _align(ids: np.ndarray, m: np.ndarray, cls: list[int]) -> queues.Aligned:
    """Aligned labels with one suggestion per sample (confidence 0.5)."""
    return queues.align(ids, m, _sugg(cls, [0.5] * len(cls), list(ids)), class_names=NAMES)


def _issues(ids: list[int], **cols: list) -> pd.DataFrame:
    n = len(ids)
    base = {"given": [-1] * n, "label_score": [1.0] * n, "is_label_issue": [False] * n, "suggested": [-1] * n,
            "suggested_prob": [0.0] * n, "outlier_score": [0.5] * n, "ambiguous_score": [1.0] * n,
            "ambiguous_with": [-1] * n, "duplicate_of": [-1] * n, "duplicate_conflict": [False] * n}
    base.update(cols)
    return pd.DataFrame(base, index=pd.Index(ids, name="id"))


def _reviews(rows: list[tuple[int, str, str]]) -> pd.DataFrame:
    """Reviews in order: (sample, queue, verdict)."""
    df = pd.DataFrame(rows, columns=["sample_id", "queue", "verdict"])
    df.index = pd.RangeIndex(1, len(df) + 1, name="id")
    return df


# ---------------------------------------------------------------------- membership and order
def test_confirm_queue_unlabelled_with_a_suggestion_least_confident_first():
    ids = np.array([1, 2, 3, 4, 5])
    m = _matrix([-1, 0, -1, -1, -1])
    m[4, 1] = REJECTED  # a person said "not dog": never proposed again
    sugg = _sugg([0, 1, 2, 0, 1], [0.9, 0.8, 0.6, 0.0, 0.7], [1, 2, 3, 4, 5], p_knn=[0.9, 0.8, 0.6, 0.0, 0.7])
    q = queues.confirm_queue(queues.align(ids, m, sugg, class_names=NAMES))
    assert q.index.tolist() == [1, 3]  # 2 labelled, 4 without evidence, 5 rejected
    ordered = queues.order(q)
    assert ordered.index.tolist() == [3, 1]
    np.testing.assert_allclose(ordered["value"], [0.4, 0.1])
    assert ordered["class_name"].tolist() == ["fox", "cat"] and "p_knn" in ordered


def test_confirm_value_weighs_typical_images_higher():
    ids = np.array([1, 2])
    sugg = _sugg([0, 0], [0.5, 0.5], [1, 2])
    found = _issues([1, 2], outlier_score=[0.05, 0.6])
    q = queues.order(queues.confirm_queue(queues.align(ids, _matrix([-1, -1]), sugg, class_names=NAMES), found))
    assert q.index.tolist() == [2, 1]
    np.testing.assert_allclose(q["value"], [0.5, 0.05])


def test_errors_queue_by_label_score_and_only_while_the_label_is_unchanged():
    ids = np.array([10, 11, 12, 13])
    found = _issues([10, 11, 12, 13], given=[0, 1, 0, 2], label_score=[0.30, 0.05, 0.9, 0.1],
                    is_label_issue=[True, True, False, True], suggested=[1, 0, 0, 0], suggested_prob=[0.9, 0.7, 0.9, 0.8])
    m = _matrix([0, 1, 0, 1])  # 13 was relabelled since it was scored
    q = queues.order(queues.errors_queue(_align(ids, m, [0] * 4), found))
    assert q.index.tolist() == [11, 10]
    assert q["class_name"].tolist() == ["cat", "dog"] and q["given_idx"].tolist() == [1, 0]
    np.testing.assert_allclose(q["value"], [0.95, 0.70])


def test_multilabel_errors_queue_proposes_removing_the_doubted_label_and_never_a_rejection():
    """Issue #20: a doubted positive label is proposed for removal; a rejected cell is never an error, and an item
    leaves once its doubted label is no longer positive (rejected, or confirmed and so re-scored)."""
    ids = np.array([1, 2, 3])
    m = np.array([[1, 1, 0], [1, 0, -1], [1, 1, 0]], np.int8)
    found = _issues([1, 2, 3], given=[0, 0, 0], doubted=[1, 0, 1], label_score=[0.1, 0.2, 0.15],
                    is_label_issue=[True, True, True], suggested=[2, -1, -1], suggested_prob=[0.8, 0, 0])
    found.attrs["task"] = "multi"
    m[2, 1] = REJECTED                                   # 3: the doubted label was removed since: it leaves
    q = queues.order(queues.errors_queue(_align(ids, m, [0] * 3), found))
    assert q.index.tolist() == [1, 2]
    assert q["class_name"].tolist() == ["dog", "cat"] and (q["proposal"] == "remove").all()
    np.testing.assert_allclose(q["value"], [0.9, 0.8])
    # without the attrs, two positives in a row tell the queue it is multi-label
    found.attrs.clear()
    assert (queues.errors_queue(_align(ids, m, [0] * 3), found)["proposal"] == "remove").all()


def test_reject_in_the_multilabel_errors_queue_is_a_hit():
    rv = _reviews([(1, "errors", "rejected"), (2, "errors", "label_right")])
    single = queues.outcomes(rv).set_index("sample_id")["hit"]
    multi = queues.outcomes(rv, task="multi").set_index("sample_id")["hit"]
    assert not single[1] and multi[1] and not multi[2]
    assert queues.hit_rates(rv, task="multi").loc["errors", "hit_rate"] == 0.5
    with pytest.raises(ValueError, match="single, multi"):
        queues.outcomes(rv, task="both")


def test_missing_queue_best_unknown_candidate_per_labelled_sample():
    ids = np.array([1, 2, 3])
    m = _matrix([0, 1, -1])
    m[1, 2] = REJECTED
    missing = pd.DataFrame({"sample": [1, 1, 2, 3, 1], "class": [1, 2, 2, 0, 0], "score": [0.6, 0.8, 0.9, 0.9, 0.95]})
    q = queues.order(queues.missing_queue(_align(ids, m, [0, 1, 0]), missing))
    # 1: class 0 is its label already, so fox (0.8) beats dog (0.6); 2: fox is rejected, cat (no row) none;
    # 3: unlabelled (a labelling task, not a missing label)
    assert q.index.tolist() == [1] and q["class_name"].tolist() == ["fox"]
    np.testing.assert_allclose(q["value"], [0.8])


def test_duplicates_one_row_per_pair_acting_on_the_unlabelled_image():
    ids = np.array([1, 2, 3, 4, 5, 6])
    m = _matrix([0, -1, 0, 1, 2, 2])
    found = _issues(list(ids), duplicate_of=[2, 1, 4, 3, 6, 5])  # three mutual pairs
    q = queues.order(queues.duplicates_queue(_align(ids, m, [1] * 6), found))
    assert q.index.tolist() == [3, 2, 5]  # conflict (cat vs dog) first, then half-labelled, then agreeing
    assert q["partner"].tolist() == [4, 1, 6]
    assert q["conflict"].tolist() == [True, False, False]
    assert q.loc[2, "class_name"] == "cat"  # the unlabelled image is proposed its duplicate's label


def test_outliers_queue_below_the_threshold_most_unusual_first():
    ids = np.array([1, 2, 3])
    found = _issues([1, 2, 3], outlier_score=[0.2, 0.5, 0.05])
    q = queues.order(queues.outliers_queue(_align(ids, _matrix([0, 0, -1]), [0, 0, 1]), found))
    assert q.index.tolist() == [3, 1]


def test_build_queues_drops_decided_samples_but_not_skipped_ones():
    ids = np.array([1, 2, 3])
    sugg = _sugg([0, 1, 2], [0.5, 0.6, 0.7], [1, 2, 3])
    reviews = _reviews([(1, "confirm", "ambiguous"), (2, "confirm", "skipped"), (3, "confirm", "ambiguous"),
                        (3, "confirm", "undone")])
    built = queues.build_queues(queues.align(ids, _matrix([-1, -1, -1]), sugg, class_names=NAMES),
                                reviews=reviews)
    assert set(built) == set(queues.QUEUES)
    assert all(set(queues.COLUMNS) <= set(q.columns) for q in built.values())
    assert built["confirm"].index.tolist() == [2, 3]
    assert all(built[k].empty for k in ("errors", "missing", "duplicates", "outliers"))


def test_class_balanced_order_is_a_round_robin():
    q = pd.DataFrame({"value": [0.9, 0.8, 0.7, 0.6, 0.5, 0.2], "balance_idx": [0, 0, 0, 0, 1, 2]},
                     index=pd.Index([1, 2, 3, 4, 5, 6], name="id"))
    assert queues.order(q).index.tolist() == [1, 2, 3, 4, 5, 6]
    assert queues.order(q, balanced=True).index.tolist() == [1, 5, 6, 2, 3, 4]
    tie = pd.DataFrame({"value": [0.5, 0.5], "balance_idx": [0, 0]}, index=[9, 4])
    assert queues.order(tie).index.tolist() == [4, 9]


def test_to_front_puts_an_undone_sample_first():
    q = pd.DataFrame({"value": [0.9, 0.5, 0.1]}, index=[1, 2, 3])
    assert queues.to_front(q, 3).index.tolist() == [3, 1, 2]
    assert queues.to_front(q, 7).index.tolist() == [1, 2, 3]


# ---------------------------------------------------------------------- self-measurement
def test_hit_rates_by_queue_and_class_latest_verdict_wins():
    reviews = _reviews([(1, "errors", "accepted"), (2, "errors", "label_right"), (3, "errors", "corrected"),
                        (4, "errors", "skipped"), (2, "errors", "corrected"),  # a second look at 2: a hit now
                        (5, "confirm", "accepted"), (6, "confirm", "corrected"), (7, "confirm", "ambiguous"),
                        (8, "missing", "rejected"), (9, "missing", "both_valid"), (10, "confirm", "bulk_accepted")])
    rates = queues.hit_rates(reviews)
    assert rates.loc["errors", "reviewed"] == 3 and rates.loc["errors", "hit_rate"] == 1.0
    assert rates.loc["confirm", "reviewed"] == 3 and rates.loc["confirm", "hits"] == 2
    assert rates.loc["missing", "hit_rate"] == 0.5
    reviews["batch_id"] = 1.0
    reviews.loc[1, "batch_id"] = np.nan  # "accepted" what was the label already: nothing was wrong
    assert queues.hit_rates(reviews).loc["errors", "hits"] == 2
    by = queues.hit_rates(reviews, by=pd.Series({5: "cat", 6: "cat", 7: "dog"}))
    assert by.loc[("confirm", "cat"), "hit_rate"] == 0.5 and by.loc[("confirm", "dog"), "hit_rate"] == 1.0
    assert by.loc[("errors", "(none)"), "reviewed"] == 3


def test_diminishing_returns_when_the_recent_hit_rate_falls():
    good = [(i, "errors", "corrected" if i % 5 else "label_right") for i in range(30)]   # 80 % hits
    bad = [(100 + i, "errors", "label_right" if i % 5 else "corrected") for i in range(20)]  # then 20 %
    rates = queues.hit_rates(_reviews(good + bad))
    assert rates.loc["errors", "recent_hit_rate"] == pytest.approx(0.2)
    assert rates.loc["errors", "hit_rate"] == pytest.approx((24 + 4) / 50)
    assert bool(rates.loc["errors", "diminishing"])
    steady = queues.hit_rates(_reviews(good + good[:20]))
    assert not bool(steady.loc["errors", "diminishing"])
    short = queues.hit_rates(_reviews(good[:5] + bad))  # too few earlier reviews to judge
    assert not bool(short.loc["errors", "diminishing"])


def test_precision_at_x_on_a_constructed_case():
    ids = np.arange(1, 11)
    # 1-6 labelled; suggestions right on 1, 2, 3, 5 (1-4 confident), wrong on 4 and 6
    m = _matrix([0, 0, 1, 1, 2, 0, -1, -1, -1, -1])
    sugg = _sugg([0, 0, 1, 2, 2, 1, 0, 0, 1, 0], [0.95, 0.92, 0.91, 0.97, 0.5, 0.4, 0.96, 0.93, 0.99, 0.3], list(ids))
    a = queues.align(ids, m, sugg, class_names=NAMES)
    plan = queues.accept_plan(a, threshold=0.9)
    assert plan.ids.tolist() == [7, 8, 9] and plan.class_idx.tolist() == [0, 0, 1]
    assert plan.measured == 4 and plan.precision == pytest.approx(0.75)
    assert 0 < plan.low < 0.75
    cats = queues.accept_plan(a, threshold=0.9, scope=sugg["class_idx"].to_numpy() == 0)
    assert cats.ids.tolist() == [7, 8] and cats.measured == 2 and cats.precision == 1.0
    # reviews: 8 was judged ambiguous (its suggestion counts as wrong and it is never bulk-accepted);
    # 1's label came from a bulk accept (agreement proves nothing: not measured)
    reviews = _reviews([(8, "confirm", "ambiguous"), (1, "confirm", "bulk_accepted")])
    cats = queues.accept_plan(a, threshold=0.9, scope=sugg["class_idx"].to_numpy() == 0, reviews=reviews)
    assert cats.ids.tolist() == [7]
    assert cats.measured == 2 and cats.precision == 0.5  # 2 right, 8 wrong
    none = queues.accept_plan(a, threshold=0.999)
    assert none.n == 0 and none.measured == 0 and np.isnan(none.precision)


def test_suggestion_accuracy_per_class():
    ids = np.arange(1, 9)
    m = _matrix([0, 0, 0, 1, 1, -1, -1, -1])
    sugg = _sugg([0, 0, 1, 1, 0, 0, 0, 1], [0.9] * 8, list(ids))
    acc = queues.suggestion_accuracy(queues.align(ids, m, sugg, class_names=NAMES))
    assert acc.loc["cat", "labelled"] == 3 and acc.loc["cat", "accuracy"] == pytest.approx(2 / 3)
    assert acc.loc["dog", "accuracy"] == 0.5
    assert acc.loc["cat", "suggested"] == 3 and acc.loc["cat", "precision"] == pytest.approx(2 / 3)
    assert acc.loc["dog", "precision"] == 0.5
    assert acc["pseudo_labels"].tolist() == [2, 1, 0]
    assert acc.loc["cat", "pseudo_share"] == pytest.approx(2 / 3) and acc.loc["cat", "label_share"] == 0.6
    assert acc.loc["fox", "labelled"] == 0 and np.isnan(acc.loc["fox", "accuracy"])


def test_queues_refuse_a_misaligned_label_matrix():
    with pytest.raises(ValueError, match="label_matrix"):
        queues.align(np.array([1, 2]), _matrix([0]), _sugg([0], [0.5], [1]), class_names=NAMES)
