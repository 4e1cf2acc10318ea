"""Metrics on tiny hand-computed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curation.evaluate import (classification_report, confusion_cell, expected_calibration_error,
                               multilabel_report, reliability_bins, report_from_json, report_to_json,
                               tune_thresholds)


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
    r = multilabel_report(Y, probs, ["a", "b"], thresholds=np.array([0.5, 0.5]))
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
