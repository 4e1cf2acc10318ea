"""Pure helpers that turn label matrices and suggestions into text, and find an image's labelled neighbours."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from curation.core.vocab import POSITIVE

NONE = "(unlabelled)"
SOURCE_NAMES = {"p_knn": "neighbours", "p_prop": "propagation", "p_zeroshot": "zero-shot", "p_model": "model",
                "p_oof": "out-of-fold"}


def label_text(matrix: np.ndarray, class_names: Sequence[str], *, state: int = POSITIVE,
               empty: str = NONE) -> list[str]:
    """One string per row: its class names in ``state`` (positive by default) joined by ", ", or ``empty``.

    The text is built once per distinct row (pages label every sample of the map on each run)."""
    names = np.asarray(list(class_names), dtype=object)
    hit = np.asarray(matrix) == state
    if hit.shape[1] == 0:
        return [empty] * len(hit)
    packed = np.packbits(hit, axis=1)
    codes, _ = pd.factorize(packed.view(np.dtype((np.void, packed.shape[1]))).ravel())
    first = np.unique(codes, return_index=True)[1]  # a row of each distinct pattern, in code order
    text = np.array([", ".join(names[hit[r]]) or empty for r in first], dtype=object)
    return text[codes].tolist()


def sources_text(row: pd.Series) -> str:
    """The per-source probabilities of one suggestion (``p_*`` columns) as ``"neighbours 0.82 · zero-shot 0.61"``;
    "" when the frame has none. Missing values (a source that does not apply) read "–"."""
    cols = [str(c) for c in row.index if str(c).startswith("p_")]
    return " · ".join(f"{SOURCE_NAMES.get(c, c[2:])} {row[c]:.2f}" if pd.notna(row[c]) else
                      f"{SOURCE_NAMES.get(c, c[2:])} –" for c in cols)


def nearest_rows(vectors: np.ndarray, row: int, candidates: np.ndarray, *, k: int = 6) -> np.ndarray:
    """Row positions of the ``k`` candidates most similar (cosine) to ``vectors[row]``, itself excluded.

    Parameters
    ----------
    vectors : (N, D) float32, L2-normalised.
    candidates : (N,) bool, rows allowed as neighbours.
    """
    mask = np.asarray(candidates, bool).copy()
    mask[row] = False
    rows = np.flatnonzero(mask)
    if rows.size == 0:
        return rows
    sims = np.asarray(vectors[rows]) @ np.asarray(vectors[row])
    if k < len(sims):
        part = np.argpartition(-sims, k - 1)[:k]
        return rows[part[np.argsort(-sims[part], kind="stable")]]
    return rows[np.argsort(-sims, kind="stable")]
