"""Metrics on tiny hand-computed cases."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from curation.models.evaluate import (
    classification_report,
    confusion_cell,
    confusion_matrix,
    expected_calibration_error,
    multilabel_confusion_pairs,
    multilabel_report,
    reliability_bins,
    report_from_json,
    report_to_json,
    review_outcomes,
    top1_correct,
    tune_thresholds,
)


def test_classification_report_hand_computed():
    y = np.array([0, 0, 1, 1, 2])
    probs = np.array([[0.8, 0.1, 0.1],     # 0 -> 0
                      [0.3, 0.6, 0.1],     # 0 -> 1 (0 second)
                      [0.1, 0.7, 0.2],     # 1 -> 1
                      [0.1, 0.2, 0.7],     # 1 -> 2 (1 second)
                      [0.2, 0.1, 0.7]])    # 2 -> 2
    r = classification_report(y, probs, ["a", "b", "c"], k=2)
    assert r["n"] == 5
    assert r["accuracy"] == pytest.approx(3 / 5)
    np.testing.assert_array_equal(r["confusion"], [[1, 1, 0], [0, 1, 1], [0, 0, 1]])
    pc = r["per_class"]
    np.testing.assert_allclose(pc["precision"], [1.0, 0.5, 0.5])
    np.testing.assert_allclose(pc["recall"], [0.5, 0.5, 1.0])
    f1 = [2 * 0.5 / 1.5, 0.5, 2 * 0.5 / 1.5]
    np.testing.assert_allclose(pc["f1"], f1)
    assert r["macro_f1"] == pytest.approx(np.mean(f1))
    assert r["balanced_accuracy"] == pytest.approx(2 / 3)
    assert r["top_k"] == pytest.approx(1.0) and r["k"] == 2
    assert r["nll"] == pytest.approx(-np.mean(np.log([0.8, 0.3, 0.7, 0.2, 0.7])))
    np.testing.assert_array_equal(confusion_cell(y, r["y_pred"], 1, 2), [3])
    np.testing.assert_array_equal(confusion_cell(y, r["y_pred"], 2, 0), [])


def test_classes_without_support_do_not_drag_macro_metrics():
    y = np.array([0, 0, 1])
    probs = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
    r = classification_report(y, probs, ["a", "b", "c"])
    assert r["macro_f1"] == pytest.approx(1.0)
    assert r["balanced_accuracy"] == pytest.approx(1.0)
    assert np.isnan(r["per_class"].loc["c", "recall"])


def test_ece_constructed_case():
    conf = np.r_[np.full(10, 0.95), np.full(10, 0.55)]
    correct = np.r_[np.arange(10) < 9, np.arange(10) < 7]
    # bin (0.933, 1]: acc .9 vs conf .95 -> .05 ; bin (.533, .6]: acc .7 vs .55 -> .15 ; each half the mass
    assert expected_calibration_error(conf, correct, bins=15) == pytest.approx(0.10)
    rb = reliability_bins(conf, correct, bins=15)
    assert rb["count"].sum() == 20 and rb["count"].iloc[-1] == 10 and rb["count"].iloc[8] == 10
    # edges: 0 falls in the first bin, 1 in the last; perfectly calibrated -> 0
    rb2 = reliability_bins(np.array([0.0, 1.0]), np.array([False, True]), bins=15)
    assert rb2["count"].iloc[0] == 1 and rb2["count"].iloc[-1] == 1
    assert expected_calibration_error(np.array([0.0, 1.0]), np.array([False, True])) == pytest.approx(0.0)


def test_multilabel_report_masks_unknown_cells():
    # 4 images, 2 classes. Y: 1 positive, -1 rejected, 0 unknown
    Y = np.array([[1, 0],
                  [-1, 1],
                  [1, 1],
                  [0, -1]], np.int8)
    probs = np.array([[0.9, 0.8],     # class1 unknown but predicted positive: not a false positive
                      [0.6, 0.7],
                      [0.4, 0.3],
                      [0.99, 0.2]])   # class0 unknown, highest score: ignored by AP
    r = multilabel_report(Y, probs, ["a", "b"], thresholds=np.array([0.5, 0.5]), unknown="ignore")
    assert r["unknown_as"] == "ignore" and "left out" in r["assumption"]
    pc = r["per_class"]
    # class a, known cells rows 0,1,2: scores .9(+) .6(-) .4(+): AP = 0.5*1 + 0.5*(2/3)
    assert pc.loc["a", "ap"] == pytest.approx(0.5 + 1 / 3)
    # class b, known rows 1,2,3: .7(+) .3(+) .2(-): AP = 1
    assert pc.loc["b", "ap"] == pytest.approx(1.0)
    assert r["mAP"] == pytest.approx((0.5 + 1 / 3 + 1.0) / 2)
    # a: pred rows 0,1 (row 3 unknown ignored): tp=1 fp=1 fn=1 ; b: pred row 1: tp=1 fp=0 fn=1
    np.testing.assert_allclose(pc["precision"], [0.5, 1.0])
    np.testing.assert_allclose(pc["recall"], [0.5, 0.5])
    assert r["micro_precision"] == pytest.approx(2 / 3)
    assert r["micro_recall"] == pytest.approx(2 / 4)
    assert r["micro_f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert r["macro_f1"] == pytest.approx(np.mean([0.5, 2 * 0.5 / 1.5]))
    np.testing.assert_array_equal(pc["unknown"], [1, 1])
    # ReaL: rows with positives 0,1,2; top1 = a, b, a -> a pos, b pos, a pos -> all right
    assert r["real_accuracy"] == pytest.approx(1.0)
    by = r["real_by_n_labels"].set_index("n_labels")
    assert by.loc[1, "n"] == 2 and by.loc[2, "n"] == 1
    json.dumps(report_to_json(r))


def test_multilabel_report_counts_unknowns_of_labelled_images_as_negatives_by_default():
    Y = np.array([[1, 0],
                  [-1, 1],
                  [1, 1],
                  [0, -1]], np.int8)
    probs = np.array([[0.9, 0.8], [0.6, 0.7], [0.4, 0.3], [0.99, 0.2]])
    r = multilabel_report(Y, probs, ["a", "b"], thresholds=np.array([0.5, 0.5]))
    assert r["unknown_as"] == "negative" and "assumed absent" in r["assumption"]
    pc = r["per_class"]
    # b: row 0's unknown cell (its image has a positive) is now a negative predicted positive: a false positive
    assert pc.loc["b", "negatives"] == 2 and pc.loc["b", "precision"] == pytest.approx(0.5)
    # a: row 3 has no positive, so its unknown a-cell still is not counted (an unlabelled image says nothing)
    assert pc.loc["a", "negatives"] == 1 and pc.loc["a", "precision"] == pytest.approx(0.5)
    assert r["micro_precision"] == pytest.approx(2 / 4)
    ignored = multilabel_report(Y, probs, ["a", "b"], thresholds=np.array([0.5, 0.5]), unknown="ignore")
    assert ignored["micro_precision"] > r["micro_precision"]        # the optimistic view
    with pytest.raises(ValueError, match="negative, ignore"):
        multilabel_report(Y, probs, unknown="positive")


def test_verified_subset_report_and_rows():
    import pandas as pd

    from curation.models.evaluate import report_from_json, verified_rows

    Y = np.array([[1, -1], [1, 0], [0, 1], [1, 1]], np.int8)
    probs = np.array([[0.9, 0.1], [0.8, 0.9], [0.3, 0.8], [0.7, 0.6]])
    ids = np.array([10, 11, 12, 13])
    reviews = pd.DataFrame({"sample_id": [11, 12, 12], "verdict": ["label_right", "label_right", "skipped"]},
                           index=pd.Index([1, 2, 3], name="id"))
    v = verified_rows(ids, Y, reviews)
    # row 0 and 3 have no unknown cell; row 1 was looked at; row 2's latest decision is a skip: the earlier one
    # counts (skips are not decisions)
    np.testing.assert_array_equal(v, [True, True, True, True])
    v2 = verified_rows(ids, Y, reviews.iloc[:1])
    np.testing.assert_array_equal(v2, [True, True, False, True])
    r = multilabel_report(Y, probs, ["a", "b"], verified=v2)
    assert r["verified"]["n"] == 3 and "no assumption" in r["verified"]["assumption"]
    # row 1 was verified with only "a": its top-1 "b" is wrong there
    assert r["verified"]["real_accuracy"] == pytest.approx(2 / 3)
    back = report_from_json(json.loads(json.dumps(report_to_json(r))))
    assert isinstance(back["verified"]["per_class"], pd.DataFrame)
    assert multilabel_report(Y, probs, verified=np.zeros(4, bool))["verified"] is None


def test_real_accuracy_counts_any_positive():
    Y = np.array([[1, 1, -1], [1, 0, 0], [0, 1, 0]], np.int8)
    probs = np.array([[0.1, 0.9, 0.0], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    r = multilabel_report(Y, probs, ["a", "b", "c"])
    assert r["real_accuracy"] == pytest.approx(1 / 3)
    by = r["real_by_n_labels"].set_index("n_labels")
    assert by.loc[2, "accuracy"] == 1.0 and by.loc[1, "accuracy"] == 0.0


def test_tune_thresholds_separates_and_ignores_unknown():
    Y = np.array([[1], [1], [-1], [-1], [0]], np.int8)
    probs = np.array([[0.9], [0.7], [0.4], [0.2], [0.99]])
    thr = tune_thresholds(Y, probs)
    assert 0.4 < thr[0] < 0.7
    # a class without a known negative keeps the default
    assert tune_thresholds(np.array([[1], [0]], np.int8), np.array([[0.3], [0.1]]))[0] == 0.5


def test_report_json_roundtrip():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=50)
    y = rng.integers(0, 4, 50)
    r = classification_report(y, probs, list("abcd"))
    j = json.loads(json.dumps(report_to_json(r)))
    assert "y_pred" not in j
    assert j["confusion"] == r["confusion"].tolist()
    assert j["per_class"][0]["class"] == "a"
    back = report_from_json(j)
    np.testing.assert_allclose(back["per_class"]["f1"].to_numpy(float), r["per_class"]["f1"].to_numpy(float))
    np.testing.assert_array_equal(back["confusion"], r["confusion"])


def test_bad_inputs_say_what_to_do():
    with pytest.raises(ValueError, match="unlabelled"):
        classification_report(np.array([-1, 0]), np.array([[0.5, 0.5], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="one name per column"):
        classification_report(np.array([0]), np.array([[1.0, 0.0]]), ["a"])


def test_multilabel_report_hand_computed_with_per_class_thresholds():
    # 5 images, 3 classes; row 3 has no positive (rejections only), row 4 carries all three labels
    Y = np.array([[1, 1, 0],
                  [1, -1, -1],
                  [-1, 1, 0],
                  [0, -1, -1],
                  [1, 1, 1]], np.int8)
    probs = np.array([[0.2, 0.6, 0.9],
                      [0.7, 0.8, 0.1],
                      [0.3, 0.5, 0.4],
                      [0.9, 0.2, 0.3],
                      [0.4, 0.45, 0.5]])
    r = multilabel_report(Y, probs, ["a", "b", "c"], thresholds=np.array([0.5, 0.55, 0.35]),
                          unknown="ignore")
    pc = r["per_class"]
    # a: known rows 0,1,2,4 ranked .7+ .4+ .3- .2+ -> AP = (1 + 1 + 3/4) / 3; predicted rows 1 (and 3, unknown)
    #    -> tp 1, fp 0, fn 2
    # b: ranked .8- .6+ .5+ .45+ .2- -> AP = (1/2 + 2/3 + 3/4) / 3; predicted rows 0, 1 -> tp 1, fp 1, fn 2
    # c: known rows 1,3,4 ranked .5+ .3- .1- -> AP = 1; predicted rows 0, 2 (unknown), 4 -> tp 1, fp 0, fn 0
    ap = [2.75 / 3, (0.5 + 2 / 3 + 0.75) / 3, 1.0]
    np.testing.assert_allclose(pc["ap"], ap)
    np.testing.assert_allclose(pc["precision"], [1.0, 0.5, 1.0])
    np.testing.assert_allclose(pc["recall"], [1 / 3, 1 / 3, 1.0])
    np.testing.assert_allclose(pc["f1"], [0.5, 0.4, 1.0])
    np.testing.assert_array_equal(pc["support"], [3, 3, 1])
    np.testing.assert_array_equal(pc["negatives"], [1, 2, 2])
    np.testing.assert_array_equal(pc["unknown"], [1, 0, 2])
    np.testing.assert_allclose(pc["threshold"], [0.5, 0.55, 0.35])
    assert r["mAP"] == pytest.approx(np.mean(ap))
    assert r["micro_precision"] == pytest.approx(3 / 4) and r["micro_recall"] == pytest.approx(3 / 7)
    assert r["micro_f1"] == pytest.approx(6 / 11)                     # 2 tp / (2 tp + fp + fn)
    assert r["macro_f1"] == pytest.approx((0.5 + 0.4 + 1.0) / 3)
    assert r["n"] == 5
    # ReaL: top-1 c (unknown: miss), b (rejected: miss), b (hit), row 3 skipped, c (hit)
    assert r["real_accuracy"] == pytest.approx(0.5)
    by = r["real_by_n_labels"].set_index("n_labels")
    assert by["n"].to_dict() == {1: 2, 2: 1, 3: 1}
    assert by["accuracy"].to_dict() == {1: 0.5, 2: 0.0, 3: 1.0}


def test_ece_from_a_report_on_a_constructed_case():
    # 10 predictions at confidence .8 of which 6 right (gap .2), 10 at .6 of which 6 right (gap 0)
    probs = np.r_[np.tile([0.8, 0.2], (10, 1)), np.tile([0.6, 0.4], (10, 1))]
    y = np.r_[np.arange(10) >= 6, np.arange(10) >= 6].astype(int)  # class a (predicted) on 6 of each 10
    r = classification_report(y, probs, ["a", "b"], bins=10)
    assert r["accuracy"] == pytest.approx(0.6)
    assert r["ece"] == pytest.approx(0.5 * 0.2)
    rb = r["reliability"]
    full = rb[rb["count"] > 0]
    assert full["count"].tolist() == [10, 10]
    np.testing.assert_allclose(full["accuracy"], [0.6, 0.6])
    np.testing.assert_allclose(full["confidence"], [0.6, 0.8])


def test_top1_correct_and_multilabel_confusion_pairs():
    Y = np.array([[1, 1, 0],      # top-1 b: one of its labels -> diagonal (b, b) only
                  [1, 0, 1],      # top-1 b: not a label -> (a, b) and (c, b)
                  [0, 0, -1],     # no positive: no pair
                  [0, 0, 1]], np.int8)
    probs = np.array([[0.3, 0.6, 0.1], [0.2, 0.5, 0.3], [0.9, 0.05, 0.05], [0.1, 0.1, 0.8]])
    np.testing.assert_array_equal(top1_correct(Y, probs), [True, False, False, True])
    rows, t, p = multilabel_confusion_pairs(Y, probs)
    assert sorted(zip(rows.tolist(), t.tolist(), p.tolist())) == [(0, 1, 1), (1, 0, 1), (1, 2, 1), (3, 2, 2)]
    np.testing.assert_array_equal(confusion_matrix(t, p, 3), [[0, 1, 0], [0, 1, 0], [0, 1, 1]])
    # the off-diagonal cells hold exactly the ReaL mistakes
    assert set(rows[t != p]) == set(np.flatnonzero(~top1_correct(Y, probs) & (Y == 1).any(1)))


def test_review_outcomes_share_of_mistakes_that_were_not_mistakes():
    reviews = pd.DataFrame({
        "sample_id": [1, 1, 2, 3, 4, 5, 6, 2],
        "queue": ["evaluate"] * 5 + ["map", "evaluate_agreed", "evaluate"],
        "verdict": ["model_wrong", "label_wrong", "ambiguous", "model_wrong", "both_valid", "reviewed",
                    "ambiguous", "ambiguous"],
        "run_id": [1, 1, 1, 2, None, None, 2, 2],
    }, index=pd.Index(range(1, 9), name="id"))
    t = review_outcomes(reviews)
    assert list(t.index) == [1, 2, "all"]
    # run 1: sample 1 (latest label_wrong), sample 2 ambiguous -> 2 of 2
    assert t.loc[1, ["reviewed", "not_mistakes", "label_wrong", "model_wrong"]].tolist() == [2, 2, 1, 0]
    # run 2: sample 3 model_wrong, sample 2 ambiguous -> 1 of 2
    assert t.loc[2, "share"] == pytest.approx(0.5)
    # overall, one verdict per sample: 1 label_wrong, 2 ambiguous, 3 model_wrong, 4 both_valid -> 3 of 4
    assert t.loc["all", "reviewed"] == 4 and t.loc["all", "share"] == pytest.approx(0.75)
    empty = review_outcomes(reviews.iloc[:0])
    assert empty.loc["all", "reviewed"] == 0 and np.isnan(empty.loc["all", "share"])
