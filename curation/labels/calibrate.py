"""Calibration: temperature scaling (Guo et al. 2017) and a calibrated log-linear pool of probability sources."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from curation.core.validate import check_choice
from curation.core.vocab import TASKS

log = logging.getLogger(__name__)

_EPS = 1e-12


def _as_logits(logits_or_probs: np.ndarray) -> np.ndarray:
    """Logits as given, or ``log(p)`` when the rows are probabilities (non-negative, summing to 1)."""
    z = np.asarray(logits_or_probs, np.float64)
    if z.ndim != 2:
        raise ValueError(f"Expected an (N, K) array of logits or probabilities, got shape {z.shape}.")
    if z.size and z.min() >= 0 and np.allclose(z.sum(1), 1.0, atol=1e-3):
        return np.log(np.clip(z, _EPS, 1.0))
    return z


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _nll(z: np.ndarray, y: np.ndarray, T: float) -> float:
    s = z / T
    s = s - s.max(1, keepdims=True)
    lse = np.log(np.exp(s).sum(1))
    return float(np.mean(lse - s[np.arange(len(y)), y]))


def fit_temperature(logits_or_probs: np.ndarray, labels: np.ndarray, *, bounds: tuple[float, float] = (0.05, 20.0)
                    ) -> float:
    """The temperature T that minimises the negative log-likelihood of ``softmax(logits / T)``.

    Parameters
    ----------
    logits_or_probs : (N, K) logits, or probabilities (rows summing to 1; ``log p`` is used as logits).
        Fit on held-out (e.g. out-of-fold) predictions, never on the training predictions.
    labels : (N,) int class index; rows with -1 are ignored.
    bounds : search range for T.

    Returns
    -------
    float T > 0 (T > 1 softens over-confident predictions, T < 1 sharpens under-confident ones).
    """
    from scipy.optimize import minimize_scalar

    z = _as_logits(logits_or_probs)
    y = np.asarray(labels, np.int64).ravel()
    if len(y) != len(z):
        raise ValueError(f"labels has {len(y)} rows but the predictions have {len(z)}.")
    keep = y >= 0
    if keep.sum() < 2:
        raise ValueError("Temperature scaling needs at least 2 labelled samples; label more images.")
    z, y = z[keep], y[keep]
    res = minimize_scalar(lambda t: _nll(z, y, float(np.exp(t))), bounds=tuple(np.log(bounds)), method="bounded",
                          options={"xatol": 1e-4})
    T = float(np.exp(res.x))
    log.info("temperature %.3f (NLL %.4f -> %.4f)", T, _nll(z, y, 1.0), _nll(z, y, T))
    return T


def apply_temperature(logits_or_probs: np.ndarray, T: float) -> np.ndarray:
    """(N, K) float32 probabilities ``softmax(logits / T)`` (probabilities are taken as ``log p`` logits)."""
    if not T > 0:
        raise ValueError(f"Temperature must be positive, got {T}.")
    return _softmax(_as_logits(logits_or_probs) / float(T)).astype(np.float32)


def ece(probs: np.ndarray, labels: np.ndarray, *, bins: int = 15) -> float:
    """Expected calibration error of the top-1 predictions (labelled rows only; -1 rows ignored)."""
    from curation.models.evaluate import expected_calibration_error

    p = np.asarray(probs, np.float64)
    y = np.asarray(labels, np.int64).ravel()
    keep = y >= 0
    p, y = p[keep], y[keep]
    return expected_calibration_error(p.max(1), p.argmax(1) == y, bins=bins)


# ---------------------------------------------------------------------- calibrated ensemble of sources
PATTERN_T_BOUNDS = (0.2, 5.0)
"""Range of the per-pattern temperatures: a correction of the jointly fitted sharpness, not a refit of it."""


def has_prediction(p: np.ndarray) -> np.ndarray:
    """(N,) bool: the rows of an (N, K) source's probabilities that hold a prediction (a row with a NaN, or all
    zero, means "no prediction for this sample")."""
    return np.isfinite(p).all(1) & (np.nan_to_num(p).sum(1) > 0)


def _source_features(p: np.ndarray, task: str, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, K) float64, available (N,) bool) of one source: centred log p (single) or logit p (multi).

    A row without a prediction (:func:`has_prediction`) gets features 0, which in the pooled logits is
    exactly "no evidence" (a uniform distribution for softmax, 0.5 for a sigmoid).
    """
    p = np.asarray(p, np.float64)
    ok = has_prediction(p)
    q = np.clip(np.nan_to_num(p, nan=0.5), eps, 1.0 - eps)
    if task == "single":
        z = np.log(q)
        z -= z.mean(1, keepdims=True)
    else:
        z = np.log(q) - np.log1p(-q)
    z[~ok] = 0.0
    return z, ok


class PooledEnsemble:
    """Calibrated log-linear pooling of several class-probability sources (a fitted product of experts).

    Single-label: ``p(c | x) = softmax_c((b_c + sum_s w_s log p_s(c | x)) / T_g)``; multi-label, per class:
    ``sigmoid((b_c + sum_s w_s logit p_s(c | x)) / T_g)``. A source without a prediction for a sample (a NaN
    row) contributes nothing, exactly like a uniform prediction. The weights ``w_s >= 0`` and the class
    biases ``b`` are fitted together by (L2-regularised) negative log-likelihood with L-BFGS-B: the weights
    set the mix *and* the sharpness, so the fitted pool is calibrated on the samples it was fitted on. The
    temperature ``T_g`` (within :data:`PATTERN_T_BOUNDS`) is then fitted per *availability pattern* ``g``
    (which sources a sample has) with at least ``min_pattern`` fitting samples, 1 otherwise: a sample scored
    by fewer sources (e.g. the training samples of a model, which never get the model's probabilities) is not
    left under-confident.

    Fit it only on predictions that are out-of-sample for every fitting label (out-of-fold heads, a kNN vote
    without self, zero-shot, a model's held-out samples), then apply it to every sample.

    Parameters
    ----------
    task : ``"single"`` (softmax over classes) or ``"multi"`` (independent sigmoids; UNKNOWN cells are
        never fitted as negatives, REJECTED cells are).
    l2 : L2 penalty on weights and biases (per fitting sample).
    min_samples : fewer fitting samples (or, single-label, fewer than 2 classes; multi-label, fewer than
        ``min_samples`` known positive and negative cells) leave the pool unfitted: it then returns the plain
        mean of the available sources' probabilities and ``fitted_`` is False with ``reason_`` saying why.
    min_pattern : fitting samples an availability pattern needs for its own temperature.
    eps : probabilities are clipped to ``[eps, 1 - eps]`` before the log.

    Attributes
    ----------
    sources_ : list[str] source names seen in ``fit`` (order of ``weights_``).
    weights_ : (S,) float64 source weights (0 for a source with no prediction on the fitting samples).
    bias_ : (K,) float64 class biases.
    temperatures_ : dict[int, float] availability bitmask (bit s = source s available) -> temperature.
    fitted_ : bool; reason_ : str ("" when fitted); n_fit_ : int fitting samples (cells, multi-label).
    """

    def __init__(self, *, task: str = "single", l2: float = 1e-3, min_samples: int = 20, min_pattern: int = 30,
                 eps: float = 1e-6) -> None:
        self.task, self.l2, self.min_samples, self.min_pattern, self.eps = task, l2, min_samples, min_pattern, eps

    # ------------------------------------------------------------------ helpers
    def _features(self, sources: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(Z (S, N, K) float64, available (S, N) bool) in the order of ``sources_``."""
        names = self.sources_
        missing = [s for s in names if s not in sources]
        if missing:
            raise ValueError(f"Sources {missing} were fitted but not given; pass every source in `sources_` "
                             "(an unavailable one as an all-NaN array).")
        shapes = {np.shape(sources[s]) for s in names}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"Every source must be an (N, K) array of the same shape; got {sorted(shapes)}.")
        feats = [_source_features(sources[s], self.task, self.eps) for s in names]
        return np.stack([f[0] for f in feats]), np.stack([f[1] for f in feats])

    def _patterns(self, avail: np.ndarray) -> np.ndarray:
        return (avail.astype(np.int64) << np.arange(len(avail))[:, None]).sum(0)

    def _loss(self, theta: np.ndarray, Z: np.ndarray, target: np.ndarray, mask: np.ndarray) -> tuple[float, Any]:
        S, n, K = Z.shape
        w, b = theta[:S], theta[S:]
        z = np.tensordot(w, Z, 1) + b
        if self.task == "single":
            z = z - z.max(1, keepdims=True)
            e = np.exp(z)
            P = e / e.sum(1, keepdims=True)
            nll = float(np.mean(np.log(e.sum(1)) - z[np.arange(n), target]))
            G = P
            G[np.arange(n), target] -= 1.0
            G /= n
        else:
            m = mask.sum()
            nll = float((mask * (np.logaddexp(0.0, z) - target * z)).sum() / m)
            G = mask * (1.0 / (1.0 + np.exp(-z)) - target) / m
        gw = np.tensordot(Z, G, ((1, 2), (0, 1)))
        gb = G.sum(0)
        reg = 0.5 * self.l2 * float(theta @ theta)
        return nll + reg, np.r_[gw, gb] + self.l2 * theta

    def _fit_T(self, z: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
        from scipy.optimize import minimize_scalar

        if self.task == "single":
            return fit_temperature(z, target, bounds=PATTERN_T_BOUNDS)

        def bce(t: float) -> float:
            s = z / np.exp(t)
            return float((mask * (np.logaddexp(0.0, s) - target * s)).sum() / mask.sum())

        return float(np.exp(minimize_scalar(bce, bounds=tuple(np.log(PATTERN_T_BOUNDS)), method="bounded").x))

    # ------------------------------------------------------------------ API
    def fit(self, sources: dict[str, np.ndarray], labels: np.ndarray) -> PooledEnsemble:
        """Fit weights, biases and per-pattern temperatures.

        Parameters
        ----------
        sources : name -> (N, K) probabilities (rows summing to 1 single-label, independent in [0, 1]
            multi-label); a NaN row = no prediction for that sample.
        labels : single-label (N,) int class index, -1 = not used for fitting; multi-label (N, K) int8
            states (1 positive = target 1, -1 rejected = target 0, 0 unknown = not used).
        """
        from scipy.optimize import minimize

        check_choice("task", self.task, TASKS)
        self.sources_ = list(sources)
        Z, avail = self._features(sources)
        S, N, K = Z.shape
        y = np.asarray(labels)
        if self.task == "single":
            y = y.astype(np.int64).ravel()
            if len(y) != N:
                raise ValueError(f"labels has {len(y)} entries for {N} source rows; align them by sample.")
            rows = np.flatnonzero((y >= 0) & avail.any(0))
            target, mask = y[rows], None
            enough = len(rows) >= self.min_samples and len(np.unique(target)) >= 2
            why = f"{len(rows)} labelled samples with a prediction (need {self.min_samples}, of 2+ classes)"
        else:
            if y.shape != (N, K):
                raise ValueError(f"labels must be (N, K) = {(N, K)} label states, got {y.shape}.")
            rows = np.flatnonzero((y != 0).any(1) & avail.any(0))
            mask = (y[rows] != 0).astype(np.float64)
            target = (y[rows] == 1).astype(np.float64)
            n_pos, n_neg = int((y[rows] == 1).sum()), int((y[rows] == -1).sum())
            enough = min(n_pos, n_neg) >= self.min_samples
            why = (f"{n_pos} positive and {n_neg} rejected labels with a prediction (need {self.min_samples} of "
                   "each: reject wrong suggestions to teach the ensemble what a negative looks like)")
        self.n_fit_ = int(len(rows) if self.task == "single" else mask.sum())
        self.weights_ = np.zeros(S)
        self.bias_ = np.zeros(K)
        self.temperatures_: dict[int, float] = {}
        if not enough:
            self.fitted_, self.reason_ = False, f"not fitted: {why}; showing the mean of the sources"
            log.info("ensemble %s", self.reason_)
            return self
        Zf = Z[:, rows]
        used = avail[:, rows].any(1)
        theta0 = np.r_[np.where(used, 1.0 / max(int(used.sum()), 1), 0.0), np.zeros(K)]
        bounds = [(0.0, None) if u else (0.0, 0.0) for u in used] + [(None, None)] * K
        res = minimize(self._loss, theta0, args=(Zf, target, mask), jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 500})
        self.weights_, self.bias_ = res.x[:S].copy(), res.x[S:].copy()
        z = np.tensordot(self.weights_, Zf, 1) + self.bias_
        pat = self._patterns(avail[:, rows])
        for g in np.unique(pat):
            sel = pat == g
            if sel.sum() >= self.min_pattern:
                self.temperatures_[int(g)] = self._fit_T(z[sel], target[sel], None if mask is None else mask[sel])
        self.fitted_, self.reason_ = True, ""
        log.info("ensemble fitted on %d samples: weights %s, temperatures %s", self.n_fit_,
                 dict(zip(self.sources_, np.round(self.weights_, 3))), self.temperatures_)
        return self

    def predict_proba(self, sources: dict[str, np.ndarray]) -> np.ndarray:
        """(N, K) float32 pooled probabilities; a row with no source at all is all zeros."""
        Z, avail = self._features(sources)
        any_src = avail.any(0)
        if not self.fitted_:
            P = np.zeros(Z.shape[1:])
            for s, ok in zip(self.sources_, avail):
                P[ok] += np.asarray(sources[s], np.float64)[ok]
            P /= np.maximum(avail.sum(0), 1)[:, None]
            return P.astype(np.float32)
        z = np.tensordot(self.weights_, Z, 1) + self.bias_
        pat = self._patterns(avail)
        T = np.array([self.temperatures_.get(int(g), 1.0) for g in pat]) if len(pat) else np.zeros(0)
        z = z / T[:, None]
        if self.task == "single":
            P = _softmax(z)
        else:
            P = 1.0 / (1.0 + np.exp(-z))
        P[~any_src] = 0.0
        return P.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fitted state (:meth:`from_dict` restores it)."""
        return {"task": self.task, "l2": self.l2, "min_samples": self.min_samples, "min_pattern": self.min_pattern,
                "eps": self.eps, "sources": self.sources_, "weights": self.weights_.tolist(),
                "bias": self.bias_.tolist(), "temperatures": {str(k): v for k, v in self.temperatures_.items()},
                "fitted": self.fitted_, "reason": self.reason_, "n_fit": self.n_fit_}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PooledEnsemble:
        """The ensemble saved by :meth:`to_dict`."""
        self = cls(task=d["task"], l2=d["l2"], min_samples=d["min_samples"], min_pattern=d["min_pattern"],
                   eps=d["eps"])
        self.sources_ = list(d["sources"])
        self.weights_ = np.asarray(d["weights"], np.float64)
        self.bias_ = np.asarray(d["bias"], np.float64)
        self.temperatures_ = {int(k): float(v) for k, v in d["temperatures"].items()}
        self.fitted_, self.reason_, self.n_fit_ = bool(d["fitted"]), str(d["reason"]), int(d["n_fit"])
        return self
