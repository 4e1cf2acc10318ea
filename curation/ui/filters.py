"""The filter bar every page shares (Map, Grid, Clusters, Review): one filter in the session, saved views by name."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import streamlit as st

from curation.data.workspace import Workspace
from curation.labels.filters import ISSUES, REVIEWED, UNLABELLED, Filter, mask, parse_ids
from curation.ui import state, widgets
from curation.ui.text import clean

_FIELDS = ("labels", "suggestions", "confidence", "issue", "issue_max", "reviewed", "clusters", "splits", "tags",
           "ids")


def current() -> Filter:
    """The session's filter (the same on every page)."""
    raw = st.session_state.get(state.K_FILTER)
    try:
        return Filter.from_dict(raw) if raw else Filter()
    except (TypeError, ValueError):
        return Filter()


def set_current(flt: Filter) -> None:
    """Make ``flt`` the session's filter and drop the bar's widget states (they re-read it on the next run)."""
    st.session_state[state.K_FILTER] = flt.to_dict()
    for k in [k for k in st.session_state if str(k).startswith("fb_")]:
        del st.session_state[k]


def _sync() -> None:
    """Widget callback: read every widget of the bar into the session's filter."""
    flt = current().to_dict()
    for name in _FIELDS:
        key = f"fb_{name}"
        if key in st.session_state:
            value = st.session_state[key]
            flt[name] = parse_ids(value) if name == "ids" else (list(value) if name == "confidence" else value)
    try:
        st.session_state[state.K_FILTER] = Filter.from_dict(flt).to_dict()
    except ValueError:
        pass


def _init(name: str, value: Any) -> str:
    """The widget key of a field, seeded from the session's filter on every run (widget states do not travel
    between pages; the filter does)."""
    key = f"fb_{name}"
    st.session_state[key] = value
    return key


def bar(ws: Workspace, *, names: Sequence[str], clusters: Sequence[int] = (), splits: Sequence[str] = (),
        tags: Sequence[str] = (), has_sugg: bool = True, has_issues: bool = True, compact: bool = False) -> Filter:
    """The filter bar: the main fields in a row, the rest under "More", saved views; returns the filter.

    The filter lives in the session, so the next page opens with it. ``compact`` folds the bar into an expander
    titled with the filter (open while a filter is set), for pages where the work is below it (Review, Clusters).
    """
    flt = current()
    title = f"Filter: {widgets.md_escape(flt.describe())}"
    frame = (st.expander(title, expanded=flt.active, icon=":material/filter_alt:") if compact
             else st.container(border=True))
    with frame:
        c = st.columns([3, 3, 2, 2, 2], vertical_alignment="bottom")
        c[0].multiselect("Label", [UNLABELLED, *names], key=_init("labels", [n for n in flt.labels
                                                                           if n in names or n == UNLABELLED]),
                         on_change=_sync, placeholder="any label", format_func=clean)
        wanted = [n for n in flt.suggestions if n in names]
        c[1].multiselect("Suggestion", list(names), key=_init("suggestions", wanted),
                         on_change=_sync, placeholder="any suggestion", disabled=not has_sugg,
                         format_func=clean)
        c[2].slider("Confidence", 0.0, 1.0, key=_init("confidence", tuple(flt.confidence)), step=0.05,
                    on_change=_sync, disabled=not has_sugg)
        c[3].selectbox("Issue", list(ISSUES), format_func=ISSUES.get, key=_init("issue", flt.issue), on_change=_sync,
                       disabled=not has_issues)
        c[4].selectbox("Reviewed", list(REVIEWED), format_func=REVIEWED.get, key=_init("reviewed", flt.reviewed),
                       on_change=_sync)
        with st.expander("More filters · saved views", expanded=bool(flt.clusters or flt.splits or flt.tags
                                                                       or flt.ids)):
            m = st.columns([2, 2, 2, 2, 3])
            m[0].slider("Issue score ≤", 0.0, 1.0, key=_init("issue_max", flt.issue_max), step=0.05,
                        on_change=_sync, disabled=not flt.issue.endswith("score"))
            picked = [c for c in flt.clusters if c in clusters]
            m[1].multiselect("Cluster", list(clusters), key=_init("clusters", picked),
                             on_change=_sync, placeholder="any cluster")
            m[2].multiselect("Split", list(splits), key=_init("splits", [s for s in flt.splits if s in splits]),
                             on_change=_sync, placeholder="any split", format_func=lambda s: s or "(none)")
            m[3].multiselect("Tag", list(tags), key=_init("tags", [t for t in flt.tags if t in tags]),
                             on_change=_sync, placeholder="any tag", format_func=clean)
            m[4].text_area("Sample ids", key=_init("ids", " ".join(map(str, flt.ids))), height=68,
                           on_change=_sync, placeholder="12, 40 41 …")
            views_row(ws)
        now = current()
        left, right = st.columns([5, 1], vertical_alignment="center")
        left.caption("Filter: " + widgets.md_escape(now.describe()))
        right.button("Clear filter", key="fb_clear", disabled=not now.active, on_click=set_current, args=(Filter(),))
    return current()


def views_row(ws: Workspace) -> None:
    """Open, save and delete saved views (filters under a name, kept in the workspace)."""
    from curation.labels.filters import delete_view, save_view, views

    saved = views(ws.store)
    v = st.columns([3, 3, 1, 1], vertical_alignment="bottom")
    pick = v[0].selectbox("Saved view", list(saved), index=None, key="fbv_pick", placeholder="open a saved view…",
                        format_func=clean)
    if v[2].button("Open", key="fbv_open", disabled=pick is None):
        set_current(saved[pick])
        st.rerun()
    name = v[1].text_input("Save this filter as", key="fbv_name", placeholder="e.g. coats to check")
    if v[3].button("Save", key="fbv_save", disabled=not str(name).strip()):
        with widgets.guard("saving the view"):
            save_view(ws.store, name, current())
            st.toast(f"Saved view {widgets.md_escape(repr(str(name).strip()))}")
    if pick is not None and st.button(f"Delete view “{widgets.md_escape(pick)}”", key="fbv_delete"):
        delete_view(ws.store, pick)
        st.rerun()


def keep(ws: Workspace, flt: Filter, ids: np.ndarray, *, matrix: np.ndarray | None = None,
         names: Sequence[str] = (), sugg: pd.DataFrame | None = None, issues: pd.DataFrame | None = None,
         clusters: pd.Series | None = None) -> np.ndarray:
    """(N,) bool: which of ``ids`` the filter keeps, reading from the store only what the filter needs."""
    from curation.data import tags as tag_store

    need = flt.needs()
    if "labels" in need and matrix is None:
        matrix = ws.store.label_matrix(np.asarray(ids, np.int64))
        names = ws.store.class_names()
    splits = ws.store.samples()["split"] if "splits" in need else None
    tagged = tag_store.tagged(ws.store, flt.tags) if "tags" in need else None
    reviewed = None
    if "reviews" in need:
        reviewed = ws.store.reviews()
        reviewed = np.unique(reviewed.loc[~reviewed["verdict"].isin(["skipped", "undone"]), "sample_id"]
                             .to_numpy(np.int64))
    return mask(flt, ids, matrix=matrix, names=names, sugg=sugg, issues=issues, clusters=clusters, splits=splits,
                tagged=tagged, reviewed=reviewed)


def page_bar(ws: Workspace, ids: np.ndarray, *, names: Sequence[str], matrix: np.ndarray | None = None,
             sugg: pd.DataFrame | None = None, issues: pd.DataFrame | None = None,
             clusters: pd.Series | None = None, compact: bool = False) -> tuple[Filter, np.ndarray]:
    """The bar with the choices this workspace has (``compact``: folded, see :func:`bar`), and the mask of ``ids``
    it keeps."""
    from curation.data import tags as tag_store

    split_choices = sorted(r[0] or "" for r in ws.store._read("SELECT DISTINCT split FROM samples"))
    cluster_choices = [] if clusters is None else sorted(pd.unique(clusters.dropna()).astype(int).tolist())
    flt = bar(ws, names=names, clusters=cluster_choices, splits=split_choices, tags=tag_store.names(ws.store),
              has_sugg=sugg is not None, has_issues=True, compact=compact)
    if flt.issue and issues is None:
        from curation.ui import loaders

        issues = widgets.optional(loaders.issues, ws, "issue scores")
    return flt, keep(ws, flt, ids, matrix=matrix, names=names, sugg=sugg, issues=issues, clusters=clusters)
