"""Benchmark: building the Review page's queues and their self-measurement at 50k samples.

Run: ``.venv/bin/python benchmarks/queues.py [--n 50000] [--classes 20] [--reviews 5000] [--repeat 7]``.
Prints the median time of each step and of one page run's worth of them (all five queues built, the
shown queue ordered class-balanced, hit rates by queue and by class, "accept all above X", per-class
suggestion accuracy). Not a test: the budget is 0.3 s for one page run at 50k samples.

Data: synthetic frames shaped like ``curation.labels.suggest.suggestions`` (with per-source ``p_*`` columns),
``curation.labels.issues.compute_issues``, ``curation.labels.issues.missing_labels`` and ``Store.reviews()``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.data.store import POSITIVE  # noqa: E402
from curation.labels import queues  # noqa: E402

BUDGET_S = 0.3


def synthetic(n: int, k: int, n_reviews: int, seed: int = 0) -> dict:
    """Frames for ``n`` samples and ``k`` classes: 60 % labelled (Zipf-like class sizes), 5 % label issues,
    2 % near-duplicates, a missing-label table of n / 10 rows and ``n_reviews`` reviews over five queues."""
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1, dtype=np.int64) * 3
    sizes = 1.0 / np.arange(1, k + 1)
    truth = rng.choice(k, n, p=sizes / sizes.sum())
    labelled = rng.random(n) < 0.6
    given = np.where(labelled, np.where(rng.random(n) < 0.08, rng.integers(0, k, n), truth), -1)
    matrix = np.zeros((n, k), np.int8)
    matrix[np.flatnonzero(given >= 0), given[given >= 0]] = POSITIVE
    right = rng.random(n) < 0.85
    cls = np.where(right, truth, rng.integers(0, k, n))
    conf = np.clip(rng.beta(5, 2, n), 0.01, 1.0)
    names = [f"class {i}" for i in range(k)]
    sugg = pd.DataFrame({"class_idx": cls, "class_name": np.asarray(names, object)[cls], "confidence": conf,
                         "source": "ensemble", "label_idx": given, "agrees": cls == given,
                         "p_knn": conf, "p_zeroshot": rng.random(n), "p_oof": rng.random(n)},
                        index=pd.Index(ids, name="id"))
    dup = np.full(n, -1, np.int64)
    d = rng.choice(n - 1, n // 50, replace=False)
    dup[d], dup[d + 1] = ids[d + 1], ids[d]
    outlier, ambiguous = rng.beta(4, 4, n), rng.random(n)
    issues = pd.DataFrame({"given": given, "doubted": given, "suggested": cls, "suggested_prob": conf,
                           "is_label_issue": rng.random(n) < 0.05, "label_score": rng.random(n),
                           "is_outlier_issue": outlier <= 0.25, "outlier_score": outlier, "cluster_noise": False,
                           "is_duplicate_issue": dup >= 0, "duplicate_score": np.where(dup >= 0, 0.2, 0.9),
                           "duplicate_of": dup, "duplicate_conflict": False,
                           "is_ambiguous_issue": ambiguous <= 0.3, "ambiguous_score": ambiguous,
                           "ambiguous_with": rng.integers(0, k, n)}, index=pd.Index(ids, name="id"))
    m = n // 10
    missing = pd.DataFrame({"sample": rng.choice(ids[labelled], m), "class": rng.integers(0, k, m),
                            "score": rng.random(m)})
    verdicts = np.array(["accepted", "corrected", "label_right", "ambiguous", "skipped", "both_valid"], object)
    reviews = pd.DataFrame({"sample_id": rng.choice(ids, n_reviews),
                            "queue": rng.choice(list(queues.QUEUES), n_reviews),
                            "verdict": rng.choice(verdicts, n_reviews)},
                           index=pd.RangeIndex(1, n_reviews + 1, name="id"))
    return {"ids": ids, "matrix": matrix, "sugg": sugg, "issues": issues, "missing": missing, "reviews": reviews,
            "names": names}


def median_time(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--reviews", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    d = synthetic(args.n, args.classes, args.reviews)
    rv, sugg = d["reviews"], d["sugg"]
    scope = sugg["class_idx"].to_numpy() == 0

    def align() -> queues.Aligned:
        return queues.align(d["ids"], d["matrix"], sugg, class_names=d["names"])

    a = align()
    correct = queues.measured_correct(a, rv)
    built = queues.build_queues(a, d["issues"], d["missing"], reviews=rv)
    steps: dict[str, Callable[[], object]] = {
        "align labels": align,
        "build all five queues": lambda: queues.build_queues(a, d["issues"], d["missing"], reviews=rv),
        "order (class-balanced)": lambda: queues.order(built["confirm"], balanced=True),
        "hit rates by queue": lambda: queues.hit_rates(rv),
        "hit rates by class": lambda: queues.hit_rates(rv, by=sugg["class_name"]),
        "measured correctness": lambda: queues.measured_correct(a, rv),
        "accept plan at X": lambda: queues.accept_plan(a, threshold=0.9, scope=scope, reviews=rv, correct=correct),
        "suggestion accuracy": lambda: queues.suggestion_accuracy(a, correct=correct),
    }

    def page() -> None:
        for fn in steps.values():
            fn()

    print(f"{args.n:,} samples, {args.classes} classes, {args.reviews:,} reviews; "
          f"{platform.processor() or platform.machine()}, python {platform.python_version()}")
    print("queue sizes: " + ", ".join(f"{k} {len(q):,}" for k, q in built.items()))
    for name, fn in steps.items():
        print(f"  {name:<24} {median_time(fn, args.repeat) * 1000:7.1f} ms")
    total = median_time(page, args.repeat)
    print(f"  {'one page run':<24} {total * 1000:7.1f} ms  (budget {BUDGET_S * 1000:.0f} ms: "
          f"{'within' if total <= BUDGET_S else 'OVER'})")


if __name__ == "__main__":
    main()
