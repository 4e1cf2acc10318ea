"""Argument checks shared by the public functions: they validate, the private functions they call compute."""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np


def check_choice(what: str, value: object, valid: Iterable[object] | Mapping[object, object]) -> None:
    """Raise ValueError when ``value`` is not one of ``valid``, naming the valid choices.

    Parameters
    ----------
    what : what the value is, for the message ("queue", "verdict", "method", ...).
    value : the value given.
    valid : the allowed values (a mapping's keys).
    """
    choices = list(valid)
    if value not in choices:
        raise ValueError(f"Unknown {what} {value!r}; use one of: {', '.join(map(str, choices))}.")


def check_matrix(name: str, arr: object, *, rows: int | None = None, cols: int | None = None,
                 dtype: type | np.dtype = np.float32) -> np.ndarray:
    """``arr`` as a 2-D array of ``dtype``, or ValueError naming ``name``, the shape found and the one expected.

    Parameters
    ----------
    rows, cols : the required number of rows / columns (None: any).
    """
    a = np.asarray(arr, dtype=dtype)
    want = f"({'N' if rows is None else rows}, {'K' if cols is None else cols})"
    if a.ndim != 2 or (rows is not None and a.shape[0] != rows) or (cols is not None and a.shape[1] != cols):
        raise ValueError(f"{name} must be a {want} array, got shape {a.shape}.")
    return a
