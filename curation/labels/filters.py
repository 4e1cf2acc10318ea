"""One filter over every field people slice a dataset by (label, suggestion, confidence, issues, review, cluster,
split, tag, ids), shared by the pages, and saved views: filters kept under a name in the workspace."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

import numpy as np
import pandas as pd

from curation.data.store import POSITIVE, Store

log = logging.getLogger(__name__)

UNLABELLED = "(unlabelled)"
"""The label choice that keeps images without a positive label."""
ISSUES = {"": "any", "label": "likely label error", "outlier": "outlier", "duplicate": "near-duplicate",
          "ambiguous": "ambiguous", "label_score": "label score ≤ max", "outlier_score": "outlier score ≤ max"}
"""Issue choices: a type keeps the images flagged ``is_<type>_issue`` (``curation.labels.issues`` schema); a
``<type>_score`` keeps scores ≤ ``issue_max`` (scores in [0, 1], low = worse)."""
REVIEWED = {"any": "any", "yes": "reviewed", "no": "not reviewed"}
VIEWS_KEY = "saved_views"
"""Meta key holding the saved views (JSON {name: filter})."""


@dataclass
class Filter:
    """What to keep; an empty field keeps everything. Fields combine with AND, choices within one with OR.

    Attributes
    ----------
    labels : class names (``UNLABELLED`` keeps images without a positive label).
    suggestions : suggested class names.
    confidence : (low, high) range of the suggestion's confidence; (0, 1) keeps all.
    issue : a key of ISSUES; a type keeps flagged images, ``*_score`` keeps scores ≤ ``issue_max``.
    issue_max : the score bound of the ``*_score`` issues (scores in [0, 1], low = worse).
    reviewed : a key of REVIEWED.
    clusters : cluster ids.
    splits : split names ("" = none).
    tags : tag names.
    ids : sample ids.
    """

    labels: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    confidence: tuple[float, float] = (0.0, 1.0)
    issue: str = ""
    issue_max: float = 1.0
    reviewed: str = "any"
    clusters: list[int] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.issue not in ISSUES:
            raise ValueError(f"Unknown issue filter {self.issue!r}; use one of {list(ISSUES)}.")
        if self.reviewed not in REVIEWED:
            raise ValueError(f"Unknown reviewed filter {self.reviewed!r}; use one of {list(REVIEWED)}.")
        lo, hi = (float(v) for v in self.confidence)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"Confidence range {self.confidence} must satisfy 0 ≤ low ≤ high ≤ 1.")
        self.confidence = (lo, hi)

    @property
    def active(self) -> bool:
        """Whether the filter keeps less than everything."""
        return self != Filter()

    def needs(self) -> set[str]:
        """Which inputs :func:`mask` reads for this filter (``labels``, ``sugg``, ``issues``, ``clusters``, ``splits``,
        ``tags``, ``reviews``), so a page loads only those."""
        out = set()
        if self.labels:
            out.add("labels")
        if self.suggestions or self.confidence != (0.0, 1.0):
            out.add("sugg")
        if self.issue:
            out.add("issues")
        for name in ("clusters", "splits", "tags"):
            if getattr(self, name):
                out.add(name)
        if self.reviewed != "any":
            out.add("reviews")
        return out

    def describe(self) -> str:
        """The filter in a few words ("label: Coat, Shirt · confidence 0.50–1.00"), "everything" when empty."""
        parts = []
        if self.labels:
            parts.append("label: " + ", ".join(self.labels))
        if self.suggestions:
            parts.append("suggestion: " + ", ".join(self.suggestions))
        if self.confidence != (0.0, 1.0):
            parts.append(f"confidence {self.confidence[0]:.2f}–{self.confidence[1]:.2f}")
        if self.issue:
            parts.append(ISSUES[self.issue] + (f" {self.issue_max:.2f}" if self.issue.endswith("score") else ""))
        if self.reviewed != "any":
            parts.append(REVIEWED[self.reviewed])
        if self.clusters:
            parts.append("cluster: " + ", ".join(map(str, self.clusters)))
        if self.splits:
            parts.append("split: " + ", ".join(s or "(none)" for s in self.splits))
        if self.tags:
            parts.append("tag: " + ", ".join(self.tags))
        if self.ids:
            parts.append(f"{len(self.ids):,} listed ids")
        return " · ".join(parts) or "everything"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["confidence"] = list(self.confidence)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Filter":
        """A filter from :meth:`to_dict` output; unknown keys (from a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in dict(d).items() if k in known}
        if "confidence" in kw:
            kw["confidence"] = tuple(kw["confidence"])
        return cls(**kw)


def parse_ids(text: str) -> list[int]:
    """Sample ids from free text ("12, 40 41\\n#7"): every run of digits, in order, duplicates dropped."""
    return list(dict.fromkeys(int(t) for t in re.findall(r"\d+", str(text or ""))))


def mask(flt: Filter, ids: np.ndarray, *, matrix: np.ndarray | None = None, names: Sequence[str] = (),
         sugg: pd.DataFrame | None = None, issues: pd.DataFrame | None = None, clusters: pd.Series | None = None,
         splits: pd.Series | None = None, tagged: np.ndarray | None = None,
         reviewed: np.ndarray | None = None) -> np.ndarray:
    """Which of ``ids`` the filter keeps.

    Parameters
    ----------
    ids : (N,) int64 sample ids.
    matrix : (N, K) int8 label matrix aligned with ``ids``; ``names`` its K class names (needed for labels).
    sugg : suggestions indexed by sample id (``class_name``, ``confidence``).
    issues : issue table indexed by sample id (``is_<type>_issue`` flags and ``<type>_score`` columns).
    clusters, splits : indexed by sample id.
    tagged : (M,) ids carrying any of ``flt.tags``; reviewed : (R,) ids with a review.
    An input a field needs but that is None keeps nothing for that field (no suggestions: no suggestion
    matches), except ``issues`` and ``clusters``, which say so the same way.

    Returns
    -------
    (N,) bool.
    """
    ids = np.asarray(ids, np.int64)
    keep = np.ones(len(ids), bool)
    if flt.labels:
        if matrix is None:
            raise ValueError("A label filter needs the label matrix of the samples (matrix=, names=).")
        pos = np.asarray(matrix) == POSITIVE
        cols = [list(names).index(n) for n in flt.labels if n in names]
        hit = pos[:, cols].any(1) if cols else np.zeros(len(ids), bool)
        if UNLABELLED in flt.labels:
            hit |= ~pos.any(1) if pos.shape[1] else True
        keep &= hit
    if flt.suggestions or flt.confidence != (0.0, 1.0):
        if sugg is None:
            keep &= False
        else:
            s = sugg.reindex(ids)
            if flt.suggestions:
                keep &= s["class_name"].isin(list(flt.suggestions)).to_numpy(bool)
            if flt.confidence != (0.0, 1.0):
                conf = s["confidence"].to_numpy(float)
                keep &= (conf >= flt.confidence[0]) & (conf <= flt.confidence[1])
    if flt.issue:
        if issues is None:
            keep &= False
        else:
            col = flt.issue if flt.issue.endswith("_score") else f"is_{flt.issue}_issue"
            if col not in issues:
                keep &= False
            elif col.startswith("is_"):
                keep &= issues[col].reindex(ids).fillna(False).to_numpy(bool)
            else:
                keep &= issues[col].reindex(ids).to_numpy(float) <= flt.issue_max
    if flt.reviewed != "any":
        seen = np.isin(ids, np.asarray(reviewed if reviewed is not None else [], np.int64))
        keep &= seen if flt.reviewed == "yes" else ~seen
    if flt.clusters:
        keep &= False if clusters is None else clusters.reindex(ids).isin(list(flt.clusters)).to_numpy(bool)
    if flt.splits:
        keep &= False if splits is None else splits.reindex(ids).fillna("").isin(list(flt.splits)).to_numpy(bool)
    if flt.tags:
        keep &= np.isin(ids, np.asarray(tagged if tagged is not None else [], np.int64))
    if flt.ids:
        keep &= np.isin(ids, np.asarray(flt.ids, np.int64))
    return keep


# ---------------------------------------------------------------------- saved views
def views(store: Store) -> dict[str, Filter]:
    """The saved views by name (alphabetical)."""
    raw = json.loads(store.meta(VIEWS_KEY, "{}") or "{}")
    out = {}
    for name in sorted(raw):
        try:
            out[name] = Filter.from_dict(raw[name])
        except (TypeError, ValueError):
            log.warning("saved view %r cannot be read; skipped", name, exc_info=True)
    return out


def save_view(store: Store, name: str, flt: Filter) -> None:
    """Save (or replace) a view under ``name`` (one atomic read-modify-write of the workspace's views)."""
    clean = str(name or "").strip()
    if not clean or any(ord(ch) < 32 for ch in clean):
        raise ValueError("Give the view a name of one line of visible text.")

    def put(old: str | None) -> str:
        d = json.loads(old or "{}")
        d[clean] = flt.to_dict()
        return json.dumps(d, sort_keys=True)

    store.update_meta(VIEWS_KEY, put)


def delete_view(store: Store, name: str) -> None:
    """Forget a saved view (no error when it does not exist)."""

    def drop(old: str | None) -> str:
        d = json.loads(old or "{}")
        d.pop(name, None)
        return json.dumps(d, sort_keys=True)

    store.update_meta(VIEWS_KEY, drop)
