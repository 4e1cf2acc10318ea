"""Temperature scaling: one scalar that makes class probabilities honest (Guo et al. 2017)."""

from __future__ import annotations

import logging

import numpy as np

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
    from curation.evaluate import expected_calibration_error

    p = np.asarray(probs, np.float64)
    y = np.asarray(labels, np.int64).ravel()
    keep = y >= 0
    p, y = p[keep], y[keep]
    return expected_calibration_error(p.max(1), p.argmax(1) == y, bins=bins)
