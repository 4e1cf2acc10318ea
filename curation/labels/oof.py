"""Out-of-fold class probabilities on embeddings: no labelled sample is scored by a model that saw its label."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from curation.core.progress import ProgressFn, null_progress
from curation.core.vocab import POSITIVE, REJECTED, UNKNOWN

log = logging.getLogger(__name__)

DEFAULT_C = 0.001
"""Inverse L2 strength, scikit-learn semantics (objective ``C * sum(loss) + ||W||^2 / 2``) on standardised features.
Strong on purpose: a head that cannot memorise noisy labels ranks them better (docs/quality.md)."""


class OOFError(ValueError):
    """Inputs that cannot give out-of-fold probabilities; the message says what to do."""


# ---------------------------------------------------------------------- folds
def stratified_folds(labels: np.ndarray, *, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold number of every labelled sample, stratified by class.

    Parameters
    ----------
    labels : (N,) int, class index or -1 for unlabelled.
    folds : number of folds F.
    seed : shuffling seed.

    Returns
    -------
    (N,) int64 fold in ``0..F-1`` for labelled samples, -1 for unlabelled. Within each class the
    samples are dealt round-robin over the folds in random order (class c starts at a random fold), so
    every class with ≥ F samples appears in every fold's training set and fold sizes differ by at most
    the number of classes.
    """
    y = np.asarray(labels, np.int64).ravel()
    rng = np.random.default_rng(seed)
    fold = np.full(len(y), -1, np.int64)
    lab = np.flatnonzero(y >= 0)
    if lab.size == 0:
        return fold
    yl = y[lab]
    order = np.lexsort((rng.random(lab.size), yl))            # by class, random within class
    ys = yl[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ys)) + 1]
    rank = np.arange(ys.size) - np.repeat(starts, np.diff(np.r_[starts, ys.size]))
    offset = rng.integers(0, folds, size=int(ys.max()) + 1)
    fold[lab[order]] = (rank + offset[ys]) % folds
    return fold


def _standardise(X: np.ndarray) -> np.ndarray:
    """Centre and scale features (label-free, so fitting it on all rows leaks no label)."""
    X = np.asarray(X, np.float32)
    mu = X.mean(0, keepdims=True)
    sd = X.std(0, keepdims=True)
    return ((X - mu) / np.maximum(sd, 1e-6)).astype(np.float32)


# ---------------------------------------------------------------------- linear heads (torch, full batch L-BFGS)
def _fit_linear(X: Any, target: Any, *, n_out: int, C: float, kind: str, weight: Any = None,
                max_iter: int = 100) -> Any:
    """Full-batch L-BFGS fit of a linear head; returns (W (D, K), b (K,)) torch tensors.

    kind "softmax": ``target`` (n,) int64, cross-entropy. kind "sigmoid": ``target`` (n, K) float in {0, 1}
    with ``weight`` (n, K) cell weights (0 = unknown cell), binary cross-entropy per class.
    """
    import torch

    n, d = X.shape
    k = int(n_out)
    W = torch.zeros(d, k, requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    lam = 1.0 / (C * max(n, 1))                                 # sklearn: C*sum(loss) + |W|^2/2, divided by C*n
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> Any:
        opt.zero_grad()
        z = X @ W + b
        if kind == "softmax":
            loss = torch.nn.functional.cross_entropy(z, target)
        else:
            cell = torch.nn.functional.binary_cross_entropy_with_logits(z, target, reduction="none")
            loss = (cell * weight).sum() / n
        loss = loss + 0.5 * lam * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


def _torch_threads() -> None:
    import os

    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))


def fit_fold(Xs: np.ndarray, target: np.ndarray, fold: np.ndarray, f: int, *, kind: str, n_out: int, C: float,
             max_iter: int = 100, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``f``'s head, fitted on the other folds' rows: probabilities of its held-out rows and of the rows in no fold.

    Parameters
    ----------
    Xs : (N, D) float32 standardised features. target : (N,) int64 class (``kind="softmax"``) or (N, K) float32
        in {0, 1} (``kind="sigmoid"``, with ``weight`` (N, K) float32 cell weights). fold : (N,) int64, -1 = in no fold.

    Returns
    -------
    (rows with ``fold == f``, K) and (rows with ``fold < 0``, K) float32 probabilities.
    """
    import torch

    tr, te, unl = np.flatnonzero((fold >= 0) & (fold != f)), np.flatnonzero(fold == f), np.flatnonzero(fold < 0)
    Xt = torch.from_numpy(np.ascontiguousarray(Xs, np.float32))
    w = None if weight is None else torch.from_numpy(np.ascontiguousarray(weight[tr], np.float32))
    W, b = _fit_linear(Xt[tr], torch.from_numpy(np.ascontiguousarray(target[tr])), n_out=n_out, C=C, kind=kind,
                       weight=w, max_iter=max_iter)
    act = (lambda z: torch.softmax(z, 1)) if kind == "softmax" else torch.sigmoid
    with torch.no_grad():
        return act(Xt[te] @ W + b).numpy(), act(Xt[unl] @ W + b).numpy()


FoldMap = Callable[..., Iterable[tuple[np.ndarray, np.ndarray]]]
"""``fold_map(folds, Xs, target, fold, **options)``: :func:`fit_fold` of each fold, in order (on a cluster, say)."""
_FOLD_MAP: ContextVar[FoldMap | None] = ContextVar("curation_oof_fold_map", default=None)


def _map_here(folds: Iterable[int], Xs: np.ndarray, target: np.ndarray, fold: np.ndarray,
              **options: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    return (fit_fold(Xs, target, fold, f, **options) for f in folds)


@contextmanager
def fold_map(fn: FoldMap) -> Iterator[None]:
    """Inside the block, the out-of-fold functions fit their folds through ``fn`` (the Ray engine's, say)."""
    token = _FOLD_MAP.set(fn)
    try:
        yield
    finally:
        _FOLD_MAP.reset(token)


def _assemble(fits: Iterable[tuple[np.ndarray, np.ndarray]], out: np.ndarray, fold: np.ndarray, unl: np.ndarray,
              F: int, progress: ProgressFn) -> np.ndarray:
    """Fill ``out`` (N, K) from the ``F`` per-fold fits: each fold's held-out rows, and the mean over folds for
    the unlabelled rows ``unl``; reports progress per fold."""
    for f, (p_te, p_unl) in enumerate(fits):
        out[fold == f] = p_te
        if unl.size:
            out[unl] += p_unl / F
        progress((f + 1) / F, f"out-of-fold model {f + 1}/{F}")
    return out


def out_of_fold_probs(X: np.ndarray, labels: np.ndarray, *, n_classes: int | None = None, folds: int = 5,
                      seed: int = 0, C: float = DEFAULT_C, max_iter: int = 100,
                      progress: ProgressFn | None = None) -> np.ndarray:
    """Cross-validated softmax-regression probabilities for every sample.

    Each labelled sample is scored by the fold model that was trained without it; unlabelled samples
    get the average of the fold models. Features are standardised (label-free), heads are multinomial
    logistic regression fitted full batch with L-BFGS in torch (50k x 512, 5 folds: a few seconds on
    2 cores).

    Parameters
    ----------
    X : (N, D) float32 embeddings.
    labels : (N,) int, class index in ``0..K-1`` or -1 for unlabelled.
    n_classes : K (default ``labels.max() + 1``).
    folds : number of stratified folds F ≥ 2 (reduced to the number of labelled samples when fewer).
    seed : fold shuffling seed.
    C : inverse L2 regularisation (scikit-learn semantics, on standardised features).
    max_iter : L-BFGS iterations per fold.
    progress : ``progress(fraction, message)``.

    Returns
    -------
    (N, K) float32 rows summing to 1.

    Notes
    -----
    A class with fewer labelled samples than folds is missing from some fold models' training sets;
    its held-out samples then get a low probability for their own class. Such classes are reported in
    the log; label more of them (≥ ``folds`` each) for trustworthy scores.
    """
    progress = progress or null_progress
    X = np.asarray(X)
    y = np.asarray(labels, np.int64).ravel()
    if X.ndim != 2 or len(X) != len(y):
        raise OOFError(f"X must be (N, D) and labels (N,); got {X.shape} and {y.shape}.")
    K = int(n_classes if n_classes is not None else (y.max() + 1 if y.size else 0))
    if K < 2:
        raise OOFError("Out-of-fold probabilities need at least 2 classes; label samples of a second class.")
    if y.max(initial=-1) >= K or y.min(initial=-1) < -1:
        raise OOFError(f"labels must lie in -1..{K - 1}; got {y.min()}..{y.max()}.")
    lab = np.flatnonzero(y >= 0)
    if lab.size < 2:
        raise OOFError("Out-of-fold probabilities need at least 2 labelled samples; label some images first.")
    F = int(min(max(folds, 2), lab.size))
    counts = np.bincount(y[lab], minlength=K)
    few = np.flatnonzero((counts > 0) & (counts < F))
    if few.size:
        log.warning("classes %s have fewer than %d labelled samples: their out-of-fold scores are unreliable; "
                    "label at least %d of each.", few.tolist()[:10], F, F)
    _torch_threads()
    Xs = _standardise(X)
    fold = stratified_folds(y, folds=F, seed=seed)
    out = np.zeros((len(y), K), np.float32)
    unl = np.flatnonzero(y < 0)
    fits = (_FOLD_MAP.get() or _map_here)(range(F), Xs, y, fold, kind="softmax", n_out=K, C=C, max_iter=max_iter)
    return _assemble(fits, out, fold, unl, F, progress)


def out_of_fold_probs_multi(X: np.ndarray, Y: np.ndarray, *, folds: int = 5, seed: int = 0, C: float = DEFAULT_C,
                            weak_negatives: float | str = "prior", max_iter: int = 100,
                            progress: ProgressFn | None = None) -> np.ndarray:
    """Cross-validated per-class sigmoid probabilities for a multi-label matrix.

    Parameters
    ----------
    X : (N, D) float32 embeddings.
    Y : (N, K) int8 label states: POSITIVE=1 (target 1), REJECTED=-1 (target 0), UNKNOWN=0 (masked:
        an unknown cell is never a negative).
    folds, seed, C, max_iter : as in :func:`out_of_fold_probs`; rows are split into folds stratified
        by their first positive class.
    weak_negatives : how UNKNOWN cells of rows that have a positive elsewhere count as negatives (rows without a
        positive are never training cells). ``"prior"`` (default, positive-unlabelled learning): weight
        ``1 - prior_k`` per class (:func:`curation.models.heads.pu_cell_weights`), so a model that would
        otherwise see no negatives learns what a class is *not*, while a class common enough that its unknown
        cells are often missing positives counts them less. A float in [0, 1]: that weight for every class
        (0 = unknown cells masked out: then every given label scores near 1 and no wrong label can be found;
        1 = "assume negative"). Out of fold, a row's own unknown cells never train the model that scores it,
        so a missing positive still gets a high probability.

    Returns
    -------
    (N, K) float32 independent per-class probabilities; rows with no known cell get the fold-model average.
    """
    progress = progress or null_progress
    Y = np.asarray(Y)
    if Y.ndim != 2 or len(Y) != len(X):
        raise OOFError(f"Y must be (N, K) aligned with X; got {Y.shape} for X {np.shape(X)}.")
    if not np.isin(Y, (POSITIVE, UNKNOWN, REJECTED)).all():
        raise OOFError("Y must hold 1 (positive), 0 (unknown) or -1 (rejected).")
    N, K = Y.shape
    pos = Y == POSITIVE
    weight = (Y != UNKNOWN).astype(np.float32)
    if isinstance(weak_negatives, str):
        if weak_negatives != "prior":
            raise OOFError(f"Unknown weak_negatives {weak_negatives!r}; use 'prior' or a weight in [0, 1].")
        from curation.models.heads import pu_cell_weights

        weight = pu_cell_weights(Y)
    elif not 0.0 <= weak_negatives <= 1.0:
        raise OOFError("weak_negatives must be 'prior' or lie in [0, 1].")
    elif weak_negatives > 0:
        weight[(Y == UNKNOWN) & pos.any(1, keepdims=True)] = weak_negatives
    known = weight.sum(1) > 0
    if known.sum() < 2:
        raise OOFError("Need at least 2 samples with known labels; label some images first.")
    strat = np.where(pos.any(1), pos.argmax(1), K)            # rows with only rejections form their own stratum
    strat[~known] = -1
    F = int(min(max(folds, 2), known.sum()))
    fold = stratified_folds(strat, folds=F, seed=seed)
    _torch_threads()
    Xs = _standardise(np.asarray(X))
    out = np.zeros((N, K), np.float32)
    unl = np.flatnonzero(~known)
    fits = (_FOLD_MAP.get() or _map_here)(range(F), Xs, pos.astype(np.float32), fold, kind="sigmoid", n_out=K, C=C,
                                          max_iter=max_iter, weight=weight)
    return _assemble(fits, out, fold, unl, F, progress)


# ---------------------------------------------------------------------- kNN classifier (out-of-fold by construction)
def knn_oof_probs(labels: np.ndarray, knn_idx: np.ndarray, knn_sims: np.ndarray, *, n_classes: int,
                  temperature: float = 0.05, prior: float = 0.5) -> np.ndarray:
    """Similarity-weighted neighbour vote over the given labels (a sample never votes for itself).

    The scale-free form of :func:`curation.labels.vote.neighbor_vote` (one implementation): each sample's labelled
    neighbours cast ``k`` votes in all, shared by weight, plus ``prior`` pseudo-votes spread over the
    classes. Label-quality scoring needs *which share* of the neighbours agree with a label, whatever their
    number and distance; suggestions keep the amount of evidence in their confidence instead.

    Parameters
    ----------
    labels : (N,) int, class index or -1 (unlabelled neighbours do not vote).
    knn_idx : (N, k) int64 row positions of each sample's neighbours, self excluded (-1 = none).
    knn_sims : (N, k) float32 cosine similarities.
    n_classes : K.
    temperature : vote weight ``exp((sim - sim_nearest) / temperature)``: small values trust the closest
        neighbours.
    prior : pseudo-count spread uniformly over classes (a sample with no labelled neighbour gets 1/K).

    Returns
    -------
    (N, K) float32 rows summing to 1.
    """
    from curation.labels.vote import neighbor_vote

    y = np.asarray(labels, np.int64).ravel()
    idx = np.asarray(knn_idx, np.int64)
    sims = np.asarray(knn_sims, np.float32)
    if idx.shape != sims.shape or len(idx) != len(y):
        raise OOFError(f"knn_idx {idx.shape} and knn_sims {sims.shape} must both be (N, k) with N = {len(y)}.")
    K = int(n_classes)
    lm = np.zeros((len(y), K), np.int8)
    lab = np.flatnonzero(y >= 0)
    lm[lab, y[lab]] = POSITIVE
    probs, conf = neighbor_vote(lm, idx, sims, temperature=temperature, hops=1, prior=prior, scale_free=True)
    probs[conf <= 0] = 1.0 / K
    return probs
