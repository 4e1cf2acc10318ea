"""Pseudo-labels: kNN vote, label propagation, zero-shot, model and out-of-fold heads in one calibrated ensemble.

One cohesive module: the workspace's label state (graph sources, stale-tolerant refit, calibrated ensemble)
is one cache with one key; the pure kNN vote lives in :mod:`curation.labels.vote`.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from curation.core.progress import ProgressFn, null_progress, sub_progress
from curation.core.validate import check_choice
from curation.core.vocab import SUGGESTION_SOURCES
from curation.data.store import single_from_matrix
from curation.labels.calibrate import has_prediction
from curation.labels.vote import check_graph, class_prior, labelled_rows, neighbor_vote

if TYPE_CHECKING:  # pragma: no cover
    from curation.data.workspace import Workspace

log = logging.getLogger(__name__)

COLUMNS = ["class_idx", "class_name", "confidence", "source", "label_idx", "agrees"]
SOURCES = SUGGESTION_SOURCES
"""Suggestion sources, in the order of the ``p_<source>`` columns and of ``source`` strings."""
PROB_COLUMNS = [f"p_{s}" for s in SOURCES]
GRAPH_K = 30
"""Neighbours in the shared kNN graph (``curation.labels.issues`` scores label quality on all 30)."""
VOTE_K = 15
"""Neighbours in the vote and in the propagation graph (the first ``VOTE_K`` columns of the shared graph)."""
PROP_ALPHA = 0.99
PROP_ITERATIONS = 30
ZEROSHOT_SCALE = 100.0
"""CLIP's logit scale: zero-shot logits are ``100 * cosine``."""
REFIT_MIN = 50
REFIT_FRACTION = 0.02
REFIT_EARLY_MIN = 5
MODEL_KINDS = ("head", "finetune")
FIT_VERSION = 1
FIT_KIND, POINTER_KIND, ENSEMBLE_KIND = "label_fit", "label_fit_latest", "label_ensemble"
ZEROSHOT_KIND, HELDOUT_KIND = "zeroshot", "model_heldout"


# ---------------------------------------------------------------------- label propagation
def label_propagation(label_matrix: np.ndarray, knn_idx: np.ndarray, knn_sims: np.ndarray, *,
                      task: str = "single", alpha: float = PROP_ALPHA, iterations: int = PROP_ITERATIONS,
                      folds: int = 0, seed: int = 0) -> np.ndarray:
    """Class probabilities spread from the labelled samples over the whole kNN graph (Zhou et al. 2004).

    The affinity is the symmetrised kNN graph ``W_ij = exp(-(1 - sim_ij) / s)`` (``s`` = mean cosine
    distance of the graph), normalised ``S = D^-1/2 W D^-1/2``; ``iterations`` steps of
    ``F <- alpha S F + (1 - alpha) Y`` (one sparse product per step, scipy) carry the labels up to that many
    hops, through unlabelled regions the one-hop vote cannot reach. ``Y`` holds, per class, the positive
    labels and, in one more column, the labelled rows (single-label: a positive; multi-label: any known
    cell). Probabilities: ``p_c = (F_c + t pi_c) / (F_lab + t)`` with ``t`` a tenth of the median propagated
    mass (of the propagation from every label) and ``pi_c`` the class prior (uniform single-label, base rate
    multi-label), so a rejection or a labelled row without c counts against c, and far-away rows are flatter.

    Parameters
    ----------
    label_matrix : (N, K) int8 states (1 positive, 0 unknown, -1 rejected).
    knn_idx : (N, k) int64 neighbours (self excluded, -1 = none); knn_sims : (N, k) float32 cosine similarities.
    task : ``"single"`` or ``"multi"``.
    alpha : in (0, 1), how far labels spread (the rest of each step is pulled back to the seeds).
    iterations : propagation steps (hops).
    folds : 0 = one propagation from every label. ``F >= 2``: in addition, the labelled rows are split into
        ``F`` stratified folds and each fold's rows take the propagation seeded by the other folds, so no
        labelled row's probabilities saw its own label (unlabelled rows keep the one from every label). All
        ``F + 1`` propagations run together on stacked columns.
    seed : fold seed.

    Returns
    -------
    (N, K) float32; rows no label reaches are all zeros.
    """
    import scipy.sparse as sp

    from curation.labels.oof import stratified_folds

    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}.")
    lm, idx, sims = check_graph(label_matrix, knn_idx, knn_sims, task)
    n, kk = lm.shape
    pos = lm == 1
    labelled = labelled_rows(lm, task)
    if n == 0 or kk == 0 or idx.shape[1] == 0 or not labelled.any():
        return np.zeros((n, kk), np.float32)
    valid = idx >= 0
    dist = np.maximum(1.0 - sims, 0.0)
    scale = max(float(dist[valid].mean()), 1e-6)
    rows = np.repeat(np.arange(n), idx.shape[1]).reshape(idx.shape)[valid]
    W = sp.csr_matrix((np.exp(-dist[valid] / scale).astype(np.float32), (rows, idx[valid])), shape=(n, n))
    W = W.maximum(W.T).tocsr()
    deg = np.asarray(W.sum(1)).ravel()
    dinv = np.divide(1.0, np.sqrt(deg), out=np.zeros_like(deg), where=deg > 0).astype(np.float32)
    S = (sp.diags(dinv) @ W @ sp.diags(dinv)).tocsr().astype(np.float32)

    seeds = np.c_[pos, labelled].astype(np.float32)                # (N, K + 1)
    fold = np.full(n, -1, np.int64)
    if folds >= 2:
        strat = np.where(pos.any(1), pos.argmax(1), kk)
        fold = stratified_folds(np.where(labelled, strat, -1), folds=int(min(folds, labelled.sum())), seed=seed)
    n_f = int(fold.max()) + 1
    Y = np.concatenate([seeds] + [seeds * (fold != f)[:, None] for f in range(n_f)], 1)
    F = (1.0 - alpha) * Y
    for _ in range(int(iterations)):
        F = alpha * (S @ F) + (1.0 - alpha) * Y
    F = F.reshape(n, n_f + 1, kk + 1)
    full_mass = F[:, 0, kk]
    t = 0.1 * float(np.median(full_mass[full_mass > 0]))        # > 0 somewhere: every seed reaches itself
    out = F[:, 0]
    has_fold = fold >= 0
    out[has_fold] = F[np.flatnonzero(has_fold), fold[has_fold] + 1]
    mass = out[:, kk]
    reached = mass > 0
    probs = (out[:, :kk] + t * class_prior(lm, task)[None, :]) / (mass[:, None] + t)
    return np.where(reached[:, None], probs, 0.0).astype(np.float32)


# ---------------------------------------------------------------------- zero-shot
def zero_shot_probs(vectors: np.ndarray, text_vectors: np.ndarray, *, task: str = "single",
                    scale: float = ZEROSHOT_SCALE) -> np.ndarray:
    """CLIP zero-shot class probabilities from image and class-text embeddings.

    Parameters
    ----------
    vectors : (N, D) float32 L2-normalised image embeddings.
    text_vectors : (K, D) float32 L2-normalised class embeddings (:func:`curation.features.text.text_embeddings`).
    task : ``"single"``: ``softmax(scale * cos)``; ``"multi"``: per class ``sigmoid(scale * (cos - mean cos))``
        (the pooled ensemble recalibrates either).
    scale : logit scale (CLIP's is 100).

    Returns
    -------
    (N, K) float32.
    """
    X = np.asarray(vectors, np.float32)
    T = np.asarray(text_vectors, np.float32)
    if X.ndim != 2 or T.ndim != 2 or X.shape[1] != T.shape[1]:
        raise ValueError(f"Image embeddings {X.shape} and text embeddings {T.shape} must share their width: embed "
                         "images and prompts with the same OpenCLIP model.")
    z = scale * (X @ T.T).astype(np.float64)
    if task == "single":
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(1, keepdims=True)).astype(np.float32)
    return (1.0 / (1.0 + np.exp(-(z - z.mean(1, keepdims=True))))).astype(np.float32)


# ---------------------------------------------------------------------- workspace state: cheap + expensive parts
@dataclass
class LabelState:
    """Everything the label-derived frames need for the current labels (:func:`label_state`).

    Attributes
    ----------
    ids : (N,) int64 sample ids (``emb.ids``). task : "single" | "multi". class_names : K names.
    label_matrix : (N, K) int8 current states. labels : (N,) int64 current positive (lowest), -1 none.
    sources : name -> (N, K) float32 probabilities of each available source (NaN rows: no prediction);
        unavailable sources are absent (their reasons are in ``info["sources"]``).
    probs : (N, K) float32 calibrated ensemble (all-zero rows: no source has a prediction).
    knn_idx, knn_sims : (N, GRAPH_K) the shared kNN graph.
    info : fit key, anchor and last events, changed / threshold / stale, per-source availability, reasons
        and weights, the ensemble's fitted state, its ECE before / after fitting, multi-label thresholds.
    """

    ids: np.ndarray
    task: str
    class_names: list[str]
    label_matrix: np.ndarray
    labels: np.ndarray
    sources: dict[str, np.ndarray]
    probs: np.ndarray
    knn_idx: np.ndarray
    knn_sims: np.ndarray
    info: dict[str, Any]


_MEMO: dict[str, Any] = {}
_MEMO_LOCK = threading.Lock()
"""Streamlit runs each session in its own thread: the last state is read and replaced under this lock."""
"""The last :class:`LabelState` of this process and its key (workspace, fit, labels token, newest run): the
app's suggestions, issues, missing-label and source loaders of one label state share one computation."""


def refit_threshold(n_labelled: int) -> int:
    """How many samples' labels may change before the expensive fit is refreshed.

    ``min(max(50, ceil(2 % of n)), max(n, 5))`` for ``n`` samples labelled at the last fit: 2 % of the
    labels (at least 50) on a labelled dataset; while few samples are labelled, as many changes as there
    were labels (at least 5), so the first labels take effect quickly (a fit on few labels is fast).
    The fit is refreshed when *more* samples than this changed.
    """
    n = int(n_labelled)
    return int(min(max(REFIT_MIN, math.ceil(REFIT_FRACTION * n)), max(n, REFIT_EARLY_MIN)))


def changed_samples(store: Any, after_event: int) -> int:
    """Samples whose label state differs now from what it was at event ``after_event`` (edits undone or
    set back do not count), from ``store.events(after_event=...)``."""
    ev = store.events(after_event=int(after_event))
    if ev.empty:
        return 0
    g = ev.groupby(["sample_id", "class_id"], sort=False)
    diff = g["prev_state"].first().to_numpy() != g["state"].last().to_numpy()
    cells = g["state"].last().index.get_level_values(0)
    return int(pd.Index(cells[diff]).nunique())


def _static_config(ws: Workspace, emb: Any, *, folds: int, seed: int, C: float) -> tuple[str, dict[str, Any]]:
    """Key and config of everything that forces a full refit when it changes (not the labels)."""
    from curation.data.artifacts import make_key
    from curation.features.neighbors import ids_fingerprint

    config = {"emb": str(emb.key), "ids": ids_fingerprint(emb.ids), "task": ws.store.task,
              "classes": ws.store.class_names(), "graph_k": GRAPH_K, "vote_k": VOTE_K, "folds": int(folds),
              "seed": int(seed), "C": float(C), "version": FIT_VERSION}
    return make_key(config), config


def _default_C(C: float | None) -> float:
    from curation.labels.oof import DEFAULT_C

    return DEFAULT_C if C is None else float(C)


def fit_status(ws: Workspace, emb: Any, *, folds: int = 5, seed: int = 0, C: float | None = None) -> dict[str, Any]:
    """Where the expensive fit stands, without computing anything.

    Returns
    -------
    dict: ``key`` (fit artifact key, None before the first fit), ``anchor_event`` (last label event the fit
    saw), ``n_labelled`` (labelled samples at the fit), ``changed`` (samples whose labels changed since),
    ``threshold`` (:func:`refit_threshold`), ``stale`` (True when a refit is due: no fit for the current
    embeddings / classes / settings, or ``changed > threshold``).
    """
    static_key, _ = _static_config(ws, emb, folds=folds, seed=seed, C=_default_C(C))
    ptr = ws.artifacts.load_json(POINTER_KIND, static_key)
    if ptr is None or not ws.artifacts.exists(FIT_KIND, ptr["key"]):
        return {"key": None, "anchor_event": None, "n_labelled": 0, "changed": 0, "threshold": 0, "stale": True}
    changed = changed_samples(ws.store, ptr["anchor"])
    threshold = refit_threshold(ptr["n_labelled"])
    return {"key": ptr["key"], "anchor_event": int(ptr["anchor"]), "n_labelled": int(ptr["n_labelled"]),
            "changed": changed, "threshold": threshold, "stale": changed > threshold}


def _oof(X: np.ndarray, lm: np.ndarray, task: str, *, folds: int, seed: int, C: float,
         progress: ProgressFn) -> np.ndarray:
    """Out-of-fold probabilities of the current labels; raises OOFError (with what to do) when impossible."""
    from curation.labels.oof import OOFError, out_of_fold_probs, out_of_fold_probs_multi

    if task == "multi":
        return out_of_fold_probs_multi(X, lm, folds=folds, seed=seed, C=C, progress=progress)
    y = single_from_matrix(lm)
    if len(np.unique(y[y >= 0])) < 2:
        raise OOFError("Out-of-fold heads need labelled samples of at least 2 classes; label a few of each.")
    return out_of_fold_probs(X, y, n_classes=lm.shape[1], folds=folds, seed=seed, C=C, progress=progress)


def _graph(ws: Workspace, emb: Any, progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    from curation.features.neighbors import knn_graph

    idx, sims = knn_graph(ws, emb, k=GRAPH_K, progress=progress)
    return np.asarray(idx), np.asarray(sims)


def refresh(ws: Workspace, emb: Any, *, force: bool = False, folds: int = 5, seed: int = 0, C: float | None = None,
            progress: ProgressFn | None = None) -> dict[str, Any]:
    """Refresh the expensive fit when it is stale (or ``force``): out-of-fold heads and K-fold label
    propagation on the current labels, saved as artifact kind ``label_fit`` under a key made of the
    settings and the current last label event (the *anchor*); the previous fit of the same settings is
    deleted. The ``issues`` job runs this in the background.

    Returns
    -------
    :func:`fit_status` after the refresh, plus ``refitted`` (bool).
    """
    from curation.data.artifacts import make_key
    from curation.labels.oof import OOFError

    progress = progress or null_progress
    C = _default_C(C)
    status = fit_status(ws, emb, folds=folds, seed=seed, C=C)
    if not (force or status["stale"]):
        progress(1.0, "fit is current")
        return {**status, "refitted": False}
    static_key, config = _static_config(ws, emb, folds=folds, seed=seed, C=C)
    anchor = ws.store.last_event_id()                 # before the labels: an edit in between counts as a change
    ids = np.asarray(emb.ids, np.int64)
    lm = ws.store.label_matrix(ids)
    task = ws.store.task
    labelled = labelled_rows(lm, task)
    idx, sims = _graph(ws, emb, sub_progress(progress, 0.0, 0.2))
    arrays: dict[str, np.ndarray] = {}
    reasons: dict[str, str] = {}
    if lm.shape[1] == 0:
        reasons["oof"] = reasons["prop"] = "no classes yet: add classes or import labels"
    else:
        try:
            arrays["oof"] = _oof(np.asarray(emb.vectors, np.float32), lm, task, folds=folds, seed=seed, C=C,
                                 progress=sub_progress(progress, 0.2, 0.75))
        except OOFError as exc:
            reasons["oof"] = str(exc)
        progress(0.8, "label propagation")
        if labelled.any():
            arrays["prop"] = label_propagation(lm, idx[:, :VOTE_K], sims[:, :VOTE_K], task=task, folds=folds,
                                               seed=seed)
        else:
            reasons["prop"] = "no labelled samples yet: label a few images of each class"
    fit_key = make_key({**config, "anchor": anchor})
    extra = {"anchor": anchor, "n_labelled": int(labelled.sum()), "arrays": sorted(arrays), "reasons": reasons}
    ws.artifacts.save_arrays(FIT_KIND, fit_key, arrays, config={**config, "anchor": anchor}, extra=extra)
    ws.artifacts.save_json(POINTER_KIND, static_key, {"key": fit_key, "anchor": anchor,
                                                      "n_labelled": int(labelled.sum())}, config=config)
    if status["key"] and status["key"] != fit_key:
        ws.artifacts.delete(FIT_KIND, status["key"])
    log.info("label fit %s at event %d: %s (%s)", fit_key, anchor, sorted(arrays) or "nothing", reasons or "ok")
    progress(1.0, f"fit on {int(labelled.sum()):,} labelled samples")
    return {**fit_status(ws, emb, folds=folds, seed=seed, C=C), "refitted": True}


def _load_fit(ws: Workspace, key: str) -> tuple[dict[str, np.ndarray], dict[str, str]] | None:
    """(arrays of the fit: ``oof`` / ``prop`` (N, K) float32, reasons for the missing ones), or None when gone."""
    meta = ws.artifacts.meta(FIT_KIND, key)
    if meta is None:
        return None
    try:
        arrays = {name: np.asarray(ws.artifacts.load_array(FIT_KIND, key, name=name, mmap=False))
                  for name in meta.get("arrays", [])}
    except (FileNotFoundError, ValueError):           # replaced by a concurrent refit
        return None
    return arrays, dict(meta.get("reasons", {}))


def _zero_shot(ws: Workspace, emb: Any, task: str) -> tuple[str | None, np.ndarray | None, str]:
    """(key, (N, K) zero-shot probabilities, reason when unavailable), cached as artifact ``zeroshot`` by the
    embeddings, the encoder and the prompt texts (so an edited prompt recomputes it, a label edit never)."""
    from curation.data.artifacts import make_key
    from curation.features.encoders import EncoderError, get_encoder
    from curation.features.neighbors import ids_fingerprint
    from curation.features.text import class_prompts, text_embeddings

    if not getattr(emb, "has_text", False):
        return None, None, (f"the encoder {getattr(emb, 'encoder_name', '?')} has no text tower: zero-shot is off "
                            "(embed with OpenCLIP to enable it)")
    classes = ws.store.classes()
    names, prompts = classes["name"].tolist(), classes["prompt"].tolist()
    texts = class_prompts(names, prompts=prompts)
    config = {"emb": str(emb.key), "ids": ids_fingerprint(emb.ids), "encoder": str(emb.encoder_name),
              "texts": texts, "task": task, "scale": ZEROSHOT_SCALE}
    key = make_key(config)
    hit = ws.artifacts.load_array(ZEROSHOT_KIND, key, mmap=False)
    if hit is not None:
        return key, np.asarray(hit), ""
    try:
        text = text_embeddings(get_encoder(str(emb.encoder_name)), names, prompts=prompts, ws=ws)
    except (EncoderError, ImportError, OSError) as exc:
        return None, None, f"zero-shot unavailable: {exc}"
    probs = zero_shot_probs(emb.vectors, text, task=task)
    ws.artifacts.save_array(ZEROSHOT_KIND, key, probs, config=config)
    return key, probs, ""


def _heldout(ws: Workspace, ids: np.ndarray, run: dict[str, Any], task: str) -> np.ndarray:
    """(N,) bool: samples the run did NOT train on (its val / test ids and whatever was not labelled at its
    snapshot), cached as artifact ``model_heldout`` per run and id set."""
    from curation.data.artifacts import make_key
    from curation.features.neighbors import ids_fingerprint

    config = {"run": int(run["id"]), "ids": ids_fingerprint(ids)}
    key = make_key(config)
    hit = ws.artifacts.load_array(HELDOUT_KIND, key, mmap=False)
    if hit is not None:
        return np.asarray(hit, bool)
    metrics = run.get("metrics") or {}
    at_snapshot = labelled_rows(ws.store.label_matrix(ids, upto_event=int(run["last_event_id"])), task)
    evaluated = np.isin(ids, np.asarray(metrics.get("val_ids", []) + metrics.get("test_ids", []), np.int64))
    held = ~(at_snapshot & ~evaluated)
    ws.artifacts.save_array(HELDOUT_KIND, key, held, config=config)
    return held


def _newest_run(ws: Workspace) -> int | None:
    """Id of the newest finished run of a kind in :data:`MODEL_KINDS`, or None."""
    return ws.store.newest_run_id(kinds=MODEL_KINDS)


def _model_source(ws: Workspace, ids: np.ndarray, names: list[str], task: str,
                  run_id: int | None) -> tuple[np.ndarray | None, str]:
    """((N, K) probabilities of run ``run_id`` (:func:`_newest_run`) on its held-out samples — NaN rows
    elsewhere —, reason when unavailable)."""
    from curation.models.runs import load_predictions

    if run_id is None:
        return None, "no finished training run yet: train a head (Train page or `python -m curation train`)"
    run = {**ws.store.run(run_id), "id": run_id}
    trained_on = (run.get("metrics") or {}).get("classes")
    if trained_on is not None and list(trained_on) != list(names):
        return None, f"run {run_id} was trained on other classes ({len(trained_on)}); train again"
    pred = load_predictions(ws, run_id)
    if pred is None or np.shape(pred[1])[1] != len(names):
        return None, f"run {run_id} saved no predictions for these classes; train again"
    p_ids, p_probs = np.asarray(pred[0], np.int64), np.asarray(pred[1], np.float32)
    order = np.argsort(p_ids)
    at = np.clip(np.searchsorted(p_ids[order], ids), 0, max(len(p_ids) - 1, 0))
    present = (p_ids[order][at] == ids) if len(p_ids) else np.zeros(len(ids), bool)
    use = present & _heldout(ws, ids, run, task)
    out = np.full((len(ids), len(names)), np.nan, np.float32)
    out[use] = p_probs[order][at[use]]
    return out, ""


def _nan_rows(p: np.ndarray, keep: np.ndarray) -> np.ndarray:
    out = np.asarray(p, np.float32).copy()
    out[~keep] = np.nan
    return out


def _fit_ensemble(ws: Workspace, key: str, config: dict[str, Any], sources: dict[str, np.ndarray], lm: np.ndarray,
                  task: str) -> dict[str, Any]:
    """Fit the pooled ensemble on the labelled samples (every source is out-of-sample there), save it as
    artifact ``label_ensemble`` with ECE before / after and (multi-label) per-class thresholds."""
    from curation.labels.calibrate import PooledEnsemble, ece
    from curation.models.evaluate import tune_thresholds

    y = single_from_matrix(lm) if task == "single" else lm
    pool = PooledEnsemble(task=task).fit(sources, y)
    pooled = pool.predict_proba(sources)
    record: dict[str, Any] = {"ensemble": pool.to_dict(), "ece_mean": None, "ece_pooled": None, "thresholds": None}
    if task == "single" and pool.fitted_:
        rows = (y >= 0) & (pooled.sum(1) > 0)
        mean = PooledEnsemble.from_dict({**pool.to_dict(), "fitted": False}).predict_proba(sources)
        record["ece_mean"] = float(ece(mean[rows], y[rows]))
        record["ece_pooled"] = float(ece(pooled[rows], y[rows]))
    if task == "multi":
        from curation.models.heads import pu_cell_weights

        record["thresholds"] = tune_thresholds(lm, pooled, weights=pu_cell_weights(lm)).astype(float).tolist()
    ws.artifacts.save_json(ENSEMBLE_KIND, key, record, config=config)
    return record


def label_state(ws: Workspace, emb: Any, *, refit: str = "auto", folds: int = 5, seed: int = 0, C: float | None = None,
                progress: ProgressFn | None = None) -> LabelState:
    """The sources, the calibrated ensemble and the kNN graph for the current labels.

    Cheap per label state (vectorised; well under a second at 50k samples): the current labels, the
    neighbour vote on the cached graph, loading the cached expensive parts and applying the pooled
    ensemble. Expensive, cached and refreshed only when needed:

    * out-of-fold heads and K-fold label propagation (:func:`refresh`), refitted when more samples changed
      label since the fit than :func:`refit_threshold` allows, or when the embeddings, the classes (one
      added, renamed or removed) or the settings changed;
    * zero-shot probabilities, keyed by the prompts (an edited prompt recomputes them);
    * the model source, keyed by the newest finished run (kind head / finetune) and used only on samples
      that run did not train on;
    * the ensemble (weights, calibration, thresholds), keyed by all of the above and fitted on the labels
      current when it is first needed.

    Every source's prediction for a labelled sample is out-of-sample: the vote excludes self, propagation
    and heads are K-fold (a sample labelled after the fit was not a seed of it), zero-shot sees no labels,
    and the model is used only off its training set. So the ensemble is fitted on the labelled samples and
    applied to all.

    Parameters
    ----------
    ws : Workspace.
    emb : embeddings-like object: ``ids`` (N,) int64, ``vectors`` (N, D) float32 L2-normalised, ``key``
        str, optionally ``has_text`` and ``encoder_name`` (zero-shot).
    refit : ``"auto"`` (refresh when stale), ``"never"`` (use the newest fit of these settings even when
        stale; fit only when there is none), ``"always"``.
    folds, seed, C : out-of-fold and propagation settings (:func:`curation.labels.oof.out_of_fold_probs`).
    progress : ``progress(fraction, message)`` (only a refit reports much).
    """
    from curation.data.artifacts import make_key

    check_choice("refit", refit, ("auto", "never", "always"))
    progress = progress or null_progress
    C = _default_C(C)
    status = fit_status(ws, emb, folds=folds, seed=seed, C=C)
    refitted = False
    if refit == "always" or status["key"] is None or (refit == "auto" and status["stale"]):
        status = refresh(ws, emb, force=True, folds=folds, seed=seed, C=C, progress=sub_progress(progress, 0, 0.9))
        refitted = True
    run_id = _newest_run(ws)
    memo_key = (str(ws.root), status["key"], state_token(ws), run_id)
    with _MEMO_LOCK:
        memo = dict(_MEMO)
    if not refitted and memo.get("key") == memo_key:
        return replace(memo["state"], info={**memo["state"].info, "refitted": False})
    fit = _load_fit(ws, status["key"])
    if fit is None:                                   # deleted by a concurrent refit: take the new one
        status = refresh(ws, emb, force=True, folds=folds, seed=seed, C=C)
        fit = _load_fit(ws, status["key"])
        assert fit is not None
        memo_key = (str(ws.root), status["key"], state_token(ws), run_id)
    arrays, reasons = fit
    ids = np.asarray(emb.ids, np.int64)
    task = ws.store.task
    names = ws.store.class_names()
    last_event = ws.store.last_event_id()
    lm = ws.store.label_matrix(ids)
    idx, sims = _graph(ws, emb)
    info_sources: dict[str, dict[str, Any]] = {}
    sources: dict[str, np.ndarray] = {}
    zs_key = model_run = None
    if names:
        vote, conf = neighbor_vote(lm, idx[:, :VOTE_K], sims[:, :VOTE_K], task=task)
        sources["knn"] = _nan_rows(vote, conf > 0)
        if "prop" in arrays:
            sources["prop"] = _nan_rows(arrays["prop"], arrays["prop"].sum(1) > 0)
        zs_key, zs, reasons["zeroshot"] = _zero_shot(ws, emb, task)
        if zs is not None:
            sources["zeroshot"] = zs
        model, reasons["model"] = _model_source(ws, ids, names, task, run_id)
        if model is not None:
            sources["model"], model_run = model, run_id
        if "oof" in arrays:
            sources["oof"] = arrays["oof"]
        if not (lm != 0).any():
            reasons["knn"] = "no labelled samples yet: label a few images of each class"
    else:
        reasons = {s: "no classes yet: add classes or import labels" for s in SOURCES}
    sources = {s: sources[s] for s in SOURCES if s in sources}
    ens_config = {"fit": status["key"], "zeroshot": zs_key, "model": model_run, "sources": list(sources),
                  "version": FIT_VERSION}
    ens_key = make_key(ens_config)
    record = ws.artifacts.load_json(ENSEMBLE_KIND, ens_key) if sources else None
    if record is None and sources:
        progress(0.95, "fitting the ensemble")
        record = _fit_ensemble(ws, ens_key, ens_config, sources, lm, task)
    if sources:
        from curation.labels.calibrate import PooledEnsemble

        pool = PooledEnsemble.from_dict(record["ensemble"])
        probs = pool.predict_proba(sources)
        weights = dict(zip(pool.sources_, pool.weights_.tolist()))
    else:
        probs, weights, record = np.zeros((len(ids), len(names)), np.float32), {}, {}
    for s in SOURCES:
        n_avail = int(has_prediction(sources[s]).sum()) if s in sources else 0
        info_sources[s] = {"available": n_avail > 0, "reason": "" if n_avail else reasons.get(s, "no predictions"),
                           "n": n_avail, "weight": float(weights.get(s, 0.0))}
    info = {**status, "fit_key": status["key"], "last_event": last_event, "refitted": refitted,
            "ensemble_key": ens_key if sources else None, "sources": info_sources, "run_id": model_run, **record}
    progress(1.0, "suggestions ready")
    labels = single_from_matrix(lm)
    for a in (probs, lm, labels, idx, sims, *sources.values()):
        a.setflags(write=False)
    state = LabelState(ids=ids, task=task, class_names=names, label_matrix=lm, labels=labels, sources=sources,
                       probs=probs, knn_idx=idx, knn_sims=sims, info=info)
    with _MEMO_LOCK:
        _MEMO.update(key=memo_key, state=state)
    return state


def state_token(ws: Workspace) -> tuple[int, str]:
    """A cheap token that changes whenever label-derived frames may change without a new artifact: the last
    label event and the classes with their prompts (a prompt edit writes no label event)."""
    from curation.data.artifacts import make_key

    classes = ws.store.classes()
    return ws.store.last_event_id(), make_key({"names": classes["name"].tolist(),
                                               "prompts": classes["prompt"].fillna("").tolist()})


# ---------------------------------------------------------------------- frames
def _row_sources(sources: dict[str, np.ndarray], n: int) -> np.ndarray:
    """(N,) str: the ``+``-joined sources with a prediction for each row, in :data:`SOURCES` order."""
    names = [s for s in SOURCES if s in sources]
    if not names:
        return np.full(n, "", dtype=object)
    bits = np.stack([has_prediction(sources[s]) for s in names]).astype(np.int64)
    mask = (bits << np.arange(len(names))[:, None]).sum(0)
    uniq, inv = np.unique(mask, return_inverse=True)
    labels = np.array(["+".join(s for j, s in enumerate(names) if u >> j & 1) for u in uniq], dtype=object)
    return labels[inv]


def suggestion_frame(state: LabelState) -> pd.DataFrame:
    """The suggestions table of a :class:`LabelState` (see :func:`suggestions`)."""
    ids, probs, lm = state.ids, state.probs, state.label_matrix
    n, kk = probs.shape
    has = probs.sum(1) > 0 if kk else np.zeros(n, bool)
    cls = np.where(has, probs.argmax(1) if kk else -1, -1).astype(np.int64)
    r = np.arange(n)
    at = np.maximum(cls, 0)
    conf = np.where(has, probs[r, at] if kk else 0.0, 0.0).astype(np.float32)
    pos = lm == 1
    agrees = (pos[r, at] & has) if kk else np.zeros(n, bool)
    name_arr = np.array([*state.class_names, ""], dtype=object)
    df = pd.DataFrame({"class_idx": cls, "class_name": name_arr[cls].astype(str), "confidence": conf,
                       "source": np.where(has, _row_sources(state.sources, n), "").astype(str),
                       "label_idx": state.labels, "agrees": agrees.astype(bool)}, index=pd.Index(ids, name="id"))
    for s, col in zip(SOURCES, PROB_COLUMNS):
        p = state.sources.get(s)
        df[col] = np.where(has, p[r, at], np.nan).astype(np.float32) if p is not None and kk else np.float32(np.nan)
    return df


def suggestions(ws: Workspace, emb: Any, *, refit: str = "auto", progress: ProgressFn | None = None) -> pd.DataFrame:
    """Calibrated suggestions for every sample from the pooled sources (:func:`label_state`).

    Parameters
    ----------
    ws : Workspace.
    emb : embeddings-like object (``ids``, ``vectors``, ``key``; ``has_text`` / ``encoder_name`` for zero-shot).
    refit : as in :func:`label_state`.

    Returns
    -------
    DataFrame indexed by sample id (``id``, the order of ``emb.ids``) with ``class_idx`` (int64, column of
    ``label_matrix``, -1 when no source has a prediction), ``class_name`` ("" when none), ``confidence``
    (float32, the calibrated ensemble probability of the suggested class), ``source`` (the sources with a
    prediction for the row, ``+``-joined in :data:`SOURCES` order, e.g. ``"knn+prop+oof"``), ``label_idx``
    (current positive label, lowest index in multi-label, -1 when none), ``agrees`` (bool: the suggested
    class is a positive label of the sample), and ``p_knn``, ``p_prop``, ``p_zeroshot``, ``p_model``,
    ``p_oof`` (float32: each source's probability of the suggested class, NaN where it has none).
    Availability, reasons and weights of the sources: :func:`source_table`; the full (N, K) ensemble
    probabilities: :func:`load_suggestion_probs`.
    """
    return suggestion_frame(label_state(ws, emb, refit=refit, progress=progress))


def load_suggestion_probs(ws: Workspace, emb: Any, *, refit: str = "auto") -> np.ndarray:
    """(N, K) float32 calibrated ensemble probabilities for the current labels (rows of ``emb.ids``)."""
    return label_state(ws, emb, refit=refit).probs


def source_table(ws: Workspace, emb: Any, *, refit: str = "auto") -> pd.DataFrame:
    """One row per source (index ``source``, :data:`SOURCES` order): ``available`` (bool), ``reason`` (why
    not, "" when available), ``n`` (samples it has a prediction for), ``weight`` (its fitted weight in the
    pooled ensemble, 0 when unused). ``attrs`` carry the ensemble summary: ``fitted``, ``reason``, ``n_fit``,
    ``ece_mean`` / ``ece_pooled`` (on the labelled samples, before / after fitting), ``temperatures``,
    ``changed`` / ``threshold`` / ``anchor_event`` (the refit rule, :func:`refit_threshold`)."""
    info = label_state(ws, emb, refit=refit).info
    df = pd.DataFrame.from_dict(info["sources"], orient="index")
    df.index.name = "source"
    ens = info.get("ensemble") or {}
    df.attrs = {"fitted": bool(ens.get("fitted", False)), "reason": ens.get("reason", "no sources"),
                "n_fit": ens.get("n_fit", 0), "ece_mean": info.get("ece_mean"), "ece_pooled": info.get("ece_pooled"),
                "temperatures": ens.get("temperatures", {}), "changed": info["changed"],
                "threshold": info["threshold"], "anchor_event": info["anchor_event"]}
    return df
