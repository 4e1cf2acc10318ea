"""Training runs as tables: the run list, the runs worth evaluating, metric deltas between runs."""

from __future__ import annotations

import time
from typing import Mapping

import numpy as np
import pandas as pd

METRICS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "macro_f1": "Macro-F1", "ece": "ECE"}
MULTI_METRICS = {"mAP": "mAP", "micro_f1": "Micro-F1", "macro_f1": "Macro-F1", "real_accuracy": "ReaL accuracy"}
LOWER_IS_BETTER = {"ece"}


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One display row per run: when, kind, head, status, device, duration (s), accuracy, macro-F1."""
    if runs.empty:
        return pd.DataFrame(columns=["run", "created", "kind", "head", "status", "device", "duration_s",
                                     "accuracy", "macro_f1"])
    return pd.DataFrame({
        "run": runs.index.astype(int),
        "created": [time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) for t in runs["created"]],
        "kind": runs["kind"].to_numpy(),
        "head": [c.get("kind", "") if isinstance(c, dict) else "" for c in runs["config"]],
        "status": runs["status"].to_numpy(),
        "device": runs["device"].to_numpy(),
        "duration_s": pd.to_numeric(runs["duration"], errors="coerce").round(1).to_numpy(),
        "accuracy": [_metric(m, "accuracy") for m in runs["metrics"]],
        "macro_f1": [_metric(m, "macro_f1") for m in runs["metrics"]],
    })


def headline(metrics: object) -> dict:
    """The report a run is judged by: its validation report, else its test report, else the metrics themselves."""
    if not isinstance(metrics, dict):
        return {}
    return metrics.get("val") or metrics.get("test") or metrics


def _metric(metrics: object, name: str) -> float:
    value = headline(metrics).get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


EVAL_SETS = {"val": "Validation samples", "test": "Test samples", "labelled": "All labelled (includes training)"}


def eval_subset(pred_ids: np.ndarray, probs: np.ndarray, y_true: np.ndarray, metrics: dict, which: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The samples a run is evaluated on, with their current labels and predicted probabilities.

    Parameters
    ----------
    pred_ids : (N,) int64 ids the run predicted; ``probs`` (N, K) and ``y_true`` (N,) follow them
        (``y_true`` = current class index, -1 when unlabelled).
    metrics : the run's metrics (``val_ids`` / ``test_ids``).
    which : a key of EVAL_SETS.

    Returns
    -------
    ids (M,), y_true (M,), probs (M, K): only labelled samples of the chosen set (classes created after
    the run, which it cannot predict, are left out).
    """
    pred_ids = np.asarray(pred_ids, np.int64)
    keep = (np.asarray(y_true) >= 0) & (np.asarray(y_true) < np.asarray(probs).shape[1])
    if which in ("val", "test"):
        keep &= np.isin(pred_ids, np.asarray(metrics.get(f"{which}_ids", []), np.int64))
    elif which != "labelled":
        raise ValueError(f"Unknown evaluation set {which!r}; use one of {list(EVAL_SETS)}.")
    return pred_ids[keep], np.asarray(y_true)[keep], np.asarray(probs)[keep]


def done_runs(runs: pd.DataFrame) -> list[int]:
    """Ids of finished runs, newest first."""
    return [int(i) for i in runs.index[runs["status"] == "done"]] if len(runs) else []


def metric_deltas(current: dict, previous: dict | None, *, names: Mapping[str, str] = METRICS
                  ) -> dict[str, tuple[float, float | None]]:
    """For each headline metric (``names``: METRICS, or MULTI_METRICS for multi-label runs): (value,
    change vs the previous run or None)."""
    out = {}
    for name in names:
        value = _metric(current, name)
        prev = _metric(previous, name) if previous is not None else float("nan")
        out[name] = (value, None if np.isnan(prev) or np.isnan(value) else value - prev)
    return out
