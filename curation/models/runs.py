"""Training runs: the labelled split, a head trained as a recorded run, its predictions and metrics, run comparison.

Image-tower fine-tuning lives in :mod:`curation.models.finetune`: ``run_finetune`` writes a run of kind
``"finetune"`` through the same run helpers (label snapshot, split, metrics, checkpoint kind
``checkpoints`` and predictions kind ``predictions``, key ``run-<id>``, arrays ``ids`` and ``probs``),
so :func:`load_predictions`, :func:`latest_run`, :func:`compare_runs` and every page that reads runs
work unchanged; its checkpoint adds the tuned tower tensors (``tower.*``) beside the head's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from curation.core.progress import Cancelled, ProgressFn, null_progress
from curation.core.vocab import POSITIVE, UNKNOWN
from curation.data.store import single_from_matrix

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from curation.data.workspace import Workspace

from curation.data.pins import pinned
from curation.features.tuned import CHECKPOINT_KIND
from curation.models.heads import (
    HeadConfig,
    TrainedHead,
    TrainingCancelled,
    TrainingError,
    free_device_memory,
    hash_unit,
    load_head_file,
    pick_device,
    save_head,
    train_head,
)

log = logging.getLogger(__name__)

RUN_KIND = "head"
PREDICTIONS_KIND = "predictions"


# ---------------------------------------------------------------------- runs
def split_labelled(ids: np.ndarray, splits: np.ndarray, labelled: np.ndarray, *, val_fraction: float = 0.2,
                   seed: int = 0) -> tuple[np.ndarray, str]:
    """Assign each sample to "train", "val", "test" or "" (unlabelled / unused).

    Parameters
    ----------
    ids : (N,) int64 sample ids.
    splits : (N,) str, the store's split column ("train", "val", "test" or "").
    labelled : (N,) bool.

    Returns
    -------
    (N,) object array of split names, and the source: "store" when some labelled sample is marked
    "val" (store splits are used as they are; unmarked labelled samples train), else "hash": labelled
    non-test samples go to val when ``hash_unit(id, seed) < val_fraction`` (deterministic, per id, so a
    sample stays on its side when the dataset grows), the rest to train.
    """
    splits = np.asarray(splits, object)
    out = np.where(labelled, splits, "").astype(object)
    if (out == "val").any():
        out[labelled & (out == "")] = "train"
        return out, "store"
    free = labelled & (out != "test")
    to_val = free & (hash_unit(ids, seed) < val_fraction)
    out[free] = "train"
    out[to_val] = "val"
    return out, "hash"


def _correct(task: str, Y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(N,) bool: single-label argmax == label; multi-label top-1 is one of the positive labels."""
    if task == "single":
        return probs.argmax(1) == Y
    from curation.models.evaluate import top1_correct

    return top1_correct(Y, probs)


def _evaluate(task: str, Y: np.ndarray, probs: np.ndarray, names: list[str], head: TrainedHead) -> dict[str, Any]:
    from curation.models.evaluate import classification_report, multilabel_report, report_to_json

    if task == "single":
        rep = classification_report(Y, probs, names)
    else:
        rep = multilabel_report(Y, probs, names, thresholds=head.thresholds_)
    return report_to_json(rep)


@dataclass
class RunData:
    """What a run trains and is judged on: its label snapshot replayed and its split, aligned with ``ids``.

    Attributes
    ----------
    task : "single" or "multi".
    names : K class names (column k of ``Y`` / of the run's probabilities).
    snapshot : the last label event the run saw.
    ids : (N,) int64 sample ids, ascending.
    Y : single-label (N,) int64 class index (-1 = unlabelled); multi-label (N, K) int8 cells 1 / 0 / -1.
    labelled : (N,) bool.
    split : (N,) object, "train" / "val" / "test" / "" (see :func:`split_labelled`).
    split_source : "store" or "hash".
    """

    task: str
    names: list[str]
    snapshot: int
    ids: np.ndarray
    Y: np.ndarray
    labelled: np.ndarray
    split: np.ndarray
    split_source: str

    def mask(self, name: str) -> np.ndarray:
        """(N,) bool rows of one split."""
        return self.split == name

    def subset(self, keep: np.ndarray) -> RunData:
        """The rows where ``keep`` (N,) bool is true (e.g. without unreadable images)."""
        return RunData(self.task, self.names, self.snapshot, self.ids[keep], self.Y[keep], self.labelled[keep],
                       self.split[keep], self.split_source)

    def base_metrics(self) -> dict[str, Any]:
        """The split summary every run record carries, also while training or after a cancel."""
        va, te = self.mask("val"), self.mask("test")
        return {"task": self.task, "classes": self.names, "split_source": self.split_source,
                "n_train": int(self.mask("train").sum()), "n_val": int(va.sum()), "n_test": int(te.sum()),
                "n_unlabelled": int((~self.labelled).sum()), "val_ids": self.ids[va].tolist(),
                "test_ids": self.ids[te].tolist()}


def run_data(ws: Workspace, ids: np.ndarray, *, val_fraction: float, seed: int,
             snapshot: int | None = None) -> RunData:
    """Labels of ``ids`` replayed up to ``snapshot`` (default: the newest event) and their split."""
    store = ws.store
    snapshot = store.last_event_id() if snapshot is None else int(snapshot)
    ids = np.asarray(ids, np.int64)
    M = store.label_matrix(ids, upto_event=snapshot)
    if store.task == "single":
        Y = single_from_matrix(M)
        labelled = Y >= 0
    else:
        Y = M
        labelled = (M != UNKNOWN).any(1)
    split_col = store.samples()["split"].reindex(ids).fillna("").to_numpy(object)
    split, source = split_labelled(ids, split_col, labelled, val_fraction=val_fraction, seed=seed)
    return RunData(store.task, store.class_names(), snapshot, ids, Y, labelled, split, source)


METRIC_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "mAP", "micro_f1", "micro_precision", "micro_recall",
               "real_accuracy", "labels_per_image", "labels_per_image_given", "top_k", "ece", "pinned_accuracy")
"""The headline metrics of a run's record, single- and multi-label, in the order the CLI prints them."""


def run_metrics(ws: Workspace, data: RunData, probs: np.ndarray, head: TrainedHead) -> dict[str, Any]:
    """A finished run's metrics from its predictions ``probs`` (N, K) on ``data.ids`` (see :func:`run_training`)."""
    task, names, Y = data.task, data.names, data.Y
    va, te = data.mask("val"), data.mask("test")
    metrics = data.base_metrics()
    metrics["val"] = _evaluate(task, Y[va], probs[va], names, head) if va.any() else {}
    metrics["test"] = _evaluate(task, Y[te], probs[te], names, head) if te.any() else {}
    at = np.isin(data.ids, pinned(ws)) & data.labelled
    ok = _correct(task, Y[at], probs[at]) if at.any() else np.zeros(0, bool)
    metrics["pinned"] = {"n": int(at.sum()), "accuracy": float(ok.mean()) if at.any() else None,
                         "failed_ids": data.ids[at][~ok].tolist(), "n_in_train": int((at & data.mask("train")).sum())}
    # headline (val, else test) scalars and per-class table also at top level, for the CLI and tables
    headline_split = "val" if metrics["val"] else "test" if metrics["test"] else ""
    if headline_split:
        rep = metrics[headline_split]
        metrics.update({k: v for k, v in rep.items()
                        if isinstance(v, (int, float)) or v is None or k in ("assumption", "unknown_as")})
        metrics["per_class"] = rep["per_class"]
    metrics["headline_split"] = headline_split
    metrics["pinned_accuracy"] = metrics["pinned"]["accuracy"]
    metrics["curves"] = head.curves_
    metrics["best_epoch"] = int(head.best_epoch_)
    metrics["seconds_train"] = float(head.seconds)
    if task == "multi":
        metrics["thresholds"] = np.asarray(head.thresholds_, float).tolist()
        metrics["weak_negative_classes"] = [n for n, w in zip(names, head.weak_negatives_) if w]
    return metrics


def save_run_checkpoint(ws: Workspace, run_id: int, head: TrainedHead, *, extra: dict[str, Any],
                        tensors: dict[str, torch.Tensor] | None = None) -> str:
    """Write ``checkpoints/run-<id>.safetensors`` (head, plus ``tower.*`` tensors when given); returns the
    artifact name the run record keeps."""
    key = f"run-{int(run_id)}"
    path = ws.artifacts.path(CHECKPOINT_KIND, key, "safetensors")
    meta = save_head(head, path, extra=extra, tensors=tensors)
    ws.artifacts.register_file(CHECKPOINT_KIND, key, "safetensors", config=meta)
    return f"{CHECKPOINT_KIND}/{key}"


def finish_run(ws: Workspace, run_id: int, data: RunData, probs: np.ndarray, head: TrainedHead, *,
               duration: float, checkpoint_extra: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None,
               metrics_extra: dict[str, Any] | None = None) -> None:
    """Evaluate; save the predictions (``ids``, ``probs`` of every row of ``data``) and the checkpoint; mark it done."""
    metrics = {**run_metrics(ws, data, probs, head), **(metrics_extra or {})}
    ws.artifacts.save_arrays(PREDICTIONS_KIND, f"run-{int(run_id)}", {"ids": data.ids, "probs": probs},
                             config={"run_id": int(run_id), "task": data.task, "classes": data.names,
                                     "thresholds": np.asarray(head.thresholds_, float).tolist()})
    artifact = save_run_checkpoint(ws, run_id, head, extra=checkpoint_extra, tensors=tensors)
    ws.store.update_run(run_id, status="done", duration=duration, metrics=metrics, artifact=artifact)


class LiveCurves:
    """``on_epoch`` callback that writes a running run's per-epoch curves to its record, so pages can plot
    them while it trains: the first epoch at once, then at most every ``interval`` seconds.

    The record's metrics hold ``curves`` (the epoch records so far) and ``epochs`` (the planned count)
    until the run ends and its full metrics replace them."""

    def __init__(self, store: Any, run_id: int, *, epochs: int, interval: float = 1.0) -> None:
        self.store, self.run_id, self.epochs, self.interval = store, int(run_id), int(epochs), float(interval)
        self._last: float | None = None

    def __call__(self, curves: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval:
            return
        self._last = now
        self.store.update_run(self.run_id, status="running",
                              metrics={"curves": list(curves), "epochs": self.epochs})


def run_training(ws: Workspace, config: HeadConfig | dict | None = None, *, emb: Any = None,
                 progress: ProgressFn | None = None) -> int:
    """Train a head on the workspace's embeddings and labels, evaluate it, and record the run.

    Steps: snapshot ``last_event_id``; labels replayed up to it; split (store's, else seeded hash
    80/20, see :func:`split_labelled`); run record (kind "head"); train, writing the curves to the
    run record as it goes (:class:`LiveCurves`); evaluate on val and test; predict every embedded
    sample (labelled or not) -> artifact ``predictions/run-<id>`` (``ids``, ``probs``); checkpoint ->
    ``checkpoints/run-<id>.safetensors``; metrics, duration, status.

    Parameters
    ----------
    ws : the workspace.
    config : HeadConfig or a dict of its fields (the job's params).
    emb : embeddings (``ids`` (N,) int64 ascending, ``vectors`` (N, D) float32, ``encoder_id``);
        default ``curation.features.embed.load_embeddings(ws)``.
    progress : ``progress(fraction, message)``; raising ``Cancelled`` marks the run "cancelled",
        keeps the best checkpoint so far, and re-raises (a :class:`TrainingCancelled` with ``run_id``).

    Returns
    -------
    The run id. Run metrics (JSON): ``task, classes, split_source, n_train, n_val, n_test, n_unlabelled,
    val`` / ``test`` (``report_to_json`` of the report; ``{}`` when the split is empty), the scalar
    metrics and ``per_class`` records of the headline report (val, else test; named by
    ``headline_split``) repeated at top level, ``pinned`` (n, accuracy, failed_ids, n_in_train) and
    ``pinned_accuracy``, ``curves``, ``best_epoch``, ``seconds_train``, ``val_ids``, ``test_ids``,
    and for multi-label ``thresholds`` and ``weak_negative_classes``.
    """
    t0 = time.perf_counter()
    cfg = HeadConfig.from_any(config)
    progress = progress or null_progress
    if emb is None:
        from curation.features.embed import load_embeddings
        emb = load_embeddings(ws)
        if emb is None:
            raise TrainingError(f"No embeddings for {ws.root}: embed the dataset first: "
                                f"`python -m curation embed {ws.root}`.")
    X = np.asarray(emb.vectors, np.float32)
    data = run_data(ws, emb.ids, val_fraction=cfg.val_fraction, seed=cfg.seed)
    device = pick_device(cfg.device)
    encoder = str(getattr(emb, "encoder_id", ""))
    run_id = ws.store.add_run(RUN_KIND, cfg.to_dict(), last_event_id=data.snapshot, encoder=encoder, device=device)
    ckpt_extra = {"run_id": run_id, "classes": data.names, "encoder": encoder, "last_event_id": data.snapshot}
    tr, va = data.mask("train"), data.mask("val")
    try:
        if not tr.any():
            raise TrainingError("No labelled training samples: label some images (or import labels) before training.")
        progress(0.0, f"training {cfg.kind} head on {int(tr.sum())} samples ({device})")
        head = train_head(X[tr], data.Y[tr], task=data.task, config=cfg, X_val=X[va] if va.any() else None,
                          Y_val=data.Y[va] if va.any() else None, n_classes=len(data.names),
                          progress=lambda f, m: progress(0.9 * f, m),
                          on_epoch=LiveCurves(ws.store, run_id, epochs=cfg.epochs))
        progress(0.9, "predicting every sample")
        finish_run(ws, run_id, data, head.predict_proba(X), head, duration=time.perf_counter() - t0,
                   checkpoint_extra=ckpt_extra)
        progress(1.0, f"run {run_id} done")
        log.info("run %d done in %.2fs", run_id, time.perf_counter() - t0)
        return run_id
    except TrainingCancelled as exc:
        exc.run_id = run_id
        metrics = data.base_metrics()
        artifact = ""
        if exc.head is not None:
            artifact = save_run_checkpoint(ws, run_id, exc.head, extra=ckpt_extra)
            metrics["curves"] = exc.head.curves_
            metrics["best_epoch"] = int(exc.head.best_epoch_)
        ws.store.update_run(run_id, status="cancelled", duration=time.perf_counter() - t0, metrics=metrics,
                            artifact=artifact)
        log.info("run %d cancelled", run_id)
        raise
    except BaseException as exc:
        ws.store.update_run(run_id, status="cancelled" if isinstance(exc, Cancelled) else "failed",
                            duration=time.perf_counter() - t0,
                            metrics={**data.base_metrics(), "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        free_device_memory(device)


def load_predictions(ws: Workspace, run_id: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids (N,) int64, probs (N, K) float32) predicted by a run for every embedded sample, or None."""
    key = f"run-{int(run_id)}"
    ids = ws.artifacts.load_array(PREDICTIONS_KIND, key, name="ids")
    probs = ws.artifacts.load_array(PREDICTIONS_KIND, key, name="probs")
    if ids is None or probs is None:
        return None
    return ids, probs


def load_head(ws: Workspace, run_id: int, *, device: str = "cpu") -> TrainedHead:
    """The head a run saved (safetensors, checked against its recorded sha256), on ``device``."""
    key = f"run-{int(run_id)}"
    if not ws.artifacts.exists(CHECKPOINT_KIND, key):
        raise TrainingError(f"Run {run_id} has no checkpoint (it failed or was cancelled before the first epoch); "
                            "train again.")
    ws.artifacts.verify(CHECKPOINT_KIND, key)  # a tampered or truncated file is refused, not loaded
    return load_head_file(ws.artifacts.path(CHECKPOINT_KIND, key, "safetensors"), device=device)


def latest_run(ws: Workspace, status: str | None = "done", *, kind: str | None = RUN_KIND) -> dict[str, Any] | None:
    """The newest run with this status (None = any) and kind (None = any), as ``store.run`` returns it."""
    run_id = ws.store.newest_run_id(status=status, kinds=None if kind is None else [kind])
    return None if run_id is None else {**ws.store.run(run_id), "id": run_id}


def compare_runs(ws: Workspace, run_a: int, run_b: int) -> dict[str, Any]:
    """What changed from run A to run B.

    Both runs are judged on their shared validation samples against the labels of B's snapshot (so a
    flip reflects the model, not a relabel; label changes are listed separately).

    Returns
    -------
    dict with
    ``overall`` : DataFrame indexed by metric: a, b, delta (= b - a), from each run's own val report;
    ``per_class`` : DataFrame indexed by class: f1_a, f1_b, f1_delta, precision_delta, recall_delta;
    ``shared_val_ids`` : (M,) int64; ``became_right`` / ``became_wrong`` : (·,) int64 sample ids whose
    correctness flipped from A to B; ``accuracy_a`` / ``accuracy_b`` on the shared samples;
    ``label_events`` : DataFrame of ``store.events`` between the two snapshots;
    ``relabelled_ids`` : (·,) int64 samples whose labels differ between the snapshots.
    """
    ra, rb = ws.store.run(run_a), ws.store.run(run_b)
    ma, mb = ra["metrics"], rb["metrics"]
    va, vb = ma.get("val") or {}, mb.get("val") or {}
    keys = [k for k in va if k in vb and isinstance(va[k], (int, float)) and isinstance(vb[k], (int, float))
            and not isinstance(va[k], bool) and k not in ("k",)]
    overall = pd.DataFrame({"a": [va[k] for k in keys], "b": [vb[k] for k in keys]},
                           index=pd.Index(keys, name="metric"), dtype=float)
    overall["delta"] = overall["b"] - overall["a"]
    pa = pd.DataFrame(va.get("per_class") or []).set_index("class") if va.get("per_class") else pd.DataFrame()
    pb = pd.DataFrame(vb.get("per_class") or []).set_index("class") if vb.get("per_class") else pd.DataFrame()
    per_class = pd.DataFrame(index=pd.Index(sorted(set(pa.index) | set(pb.index)), name="class"))
    for col in ("f1", "precision", "recall"):
        if col in pa and col in pb:
            a = pa[col].reindex(per_class.index).astype(float)
            b = pb[col].reindex(per_class.index).astype(float)
            if col == "f1":
                per_class["f1_a"], per_class["f1_b"] = a, b
            per_class[f"{col}_delta"] = b - a
    shared = np.intersect1d(np.asarray(ma.get("val_ids", []), np.int64), np.asarray(mb.get("val_ids", []), np.int64))
    task = mb.get("task", ws.store.task)
    became_right = became_wrong = np.zeros(0, np.int64)
    acc_a = acc_b = None
    preds_a, preds_b = load_predictions(ws, run_a), load_predictions(ws, run_b)
    if len(shared) and preds_a is not None and preds_b is not None:
        M = ws.store.label_matrix(shared, upto_event=int(rb["last_event_id"]))
        names_b = mb.get("classes", ws.store.class_names())

        def probs_on(pred: tuple[np.ndarray, np.ndarray], names: list[str]) -> np.ndarray:
            ids, probs = pred
            pos = np.searchsorted(ids, shared)
            pos = np.clip(pos, 0, len(ids) - 1)
            if not (ids[pos] == shared).all():
                raise TrainingError("A run's predictions miss some of its validation samples; retrain it.")
            p = np.asarray(probs)[pos]
            # align columns with B's classes (classes added after A get probability 0)
            out = np.zeros((len(shared), len(names_b)), np.float32)
            col = {n: j for j, n in enumerate(names)}
            for j, n in enumerate(names_b):
                if n in col:
                    out[:, j] = p[:, col[n]]
            return out

        if task == "single":
            Y = single_from_matrix(M[:, :len(names_b)])
        else:
            Y = M[:, :len(names_b)]
        ok_rows = (Y >= 0) if task == "single" else (Y == POSITIVE).any(1)
        ca = _correct(task, Y, probs_on(preds_a, ma.get("classes", names_b))) & ok_rows
        cb = _correct(task, Y, probs_on(preds_b, names_b)) & ok_rows
        became_right = shared[ok_rows & ~ca & cb]
        became_wrong = shared[ok_rows & ca & ~cb]
        if ok_rows.any():
            acc_a, acc_b = float(ca[ok_rows].mean()), float(cb[ok_rows].mean())
    lo, hi = sorted((int(ra["last_event_id"]), int(rb["last_event_id"])))
    events = ws.store.events(after_event=lo, upto_event=hi)
    all_ids = ws.store.sample_ids()
    diff = (ws.store.label_matrix(all_ids, upto_event=lo) != ws.store.label_matrix(all_ids, upto_event=hi)).any(1)
    return {"run_a": int(run_a), "run_b": int(run_b), "overall": overall, "per_class": per_class,
            "shared_val_ids": shared, "became_right": became_right.astype(np.int64),
            "became_wrong": became_wrong.astype(np.int64), "accuracy_a": acc_a, "accuracy_b": acc_b,
            "label_events": events, "relabelled_ids": all_ids[diff]}
