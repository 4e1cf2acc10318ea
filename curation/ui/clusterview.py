"""The Clusters page's parts: recompute controls, the silhouette curve, cluster cards, a cluster's images,
labelling a whole cluster (minus exceptions) as one batch, splits and pockets."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from curation.core.vocab import POSITIVE
from curation.data.workspace import Workspace
from curation.structure import pockets
from curation.structure.cluster import K_REPEATS, K_SCAN_DIMS
from curation.ui import actions, classes, freshness, grid, jobpanel, labels, loaders, widgets

K_OPEN = "clusters_open"  # int: the cluster opened below the gallery
K_SPLIT = "clusters_split"  # (clustering key, cluster): the cluster whose split is shown
K_POCKETS = "clusters_pockets"  # (clustering key, cluster): the cluster whose pockets are shown
CHOICES = {"auto": "k-means, automatic k", "k": "k-means, chosen k", "hdbscan": "HDBSCAN (no k; noise = outliers)"}
SORTS = {"size": "Size (largest first)", "purity": "Purity (lowest first)", "issue_rate": "Issue rate (highest first)"}
LABEL_ACTIONS = ("assign", "add", "remove", "clear")
PICK_PAGE, PICK_COLUMNS = 36, 6
"""Images per page of a cluster's grid, and grid columns."""
CARDS_PER_PAGE = 12


# ---------------------------------------------------------------------- pure helpers
def job_params(choice: str, k: int | None = None) -> dict:
    """The ``clusters`` job parameters for a recompute choice of :data:`CHOICES`."""
    if choice == "auto":
        return {"method": "auto", "k": None}
    if choice == "k":
        if not k or k < 2:
            raise ValueError("Choose k ≥ 2 clusters (or pick the automatic k).")
        return {"method": "auto", "k": int(k)}
    if choice == "hdbscan":
        return {"method": "hdbscan", "k": None}
    raise ValueError(f"Unknown clustering choice {choice!r}; use one of {list(CHOICES)}.")


def sort_clusters(table: pd.DataFrame, by: str) -> pd.DataFrame:
    """Cluster rows ordered for the gallery: by size (descending), purity (ascending) or issue rate
    (descending); missing values last, ties by cluster id."""
    if by not in SORTS:
        raise ValueError(f"Unknown sort {by!r}; use one of {list(SORTS)}.")
    if by not in table.columns:
        return table
    return table.sort_values(by, ascending=by == "purity", na_position="last", kind="stable")


def targets(ids: np.ndarray, excluded: Sequence[int]) -> np.ndarray:
    """(M,) int64 ids to label: ``ids`` minus the exceptions, ascending."""
    return np.setdiff1d(np.asarray(ids, np.int64), np.asarray(list(excluded), np.int64))


def card_caption(row: pd.Series) -> str:
    """One line of a card's figures: size, purity, share unlabelled and, when known, issue rate."""
    size = int(row["size"])
    parts = [f"{size:,} image{'s' if size != 1 else ''}"]
    parts.append("purity —" if pd.isna(row["purity"]) else f"purity {row['purity']:.0%}")
    parts.append(f"unlabelled {row['unlabelled']:.0%}")
    if "issue_rate" in row.index and not pd.isna(row["issue_rate"]):
        parts.append(f"issues {row['issue_rate']:.0%}")
    return " · ".join(parts)


def silhouette_note(curve: pd.DataFrame, k: int) -> str:
    """Why the automatic k is what it is (``curve``: :func:`curation.structure.cluster.silhouette_curve`), in words."""
    top = int(curve["silhouette"].idxmax())
    best, se = curve.loc[top, "silhouette"], curve.loc[top, "se"]
    return (f"Each image's silhouette compares its mean cosine distance to its own cluster with that to the nearest "
            f"other cluster (1 = well separated, 0 = on a border); the curve is the mean over {K_REPEATS} seeded "
            f"samples (in a {K_SCAN_DIMS}-d PCA) for k in {int(curve.index.min())}..{int(curve.index.max())}. "
            f"The best is {best:.3f} ± {se:.3f} at k = {top}; k = {k} is the largest k within one standard error "
            "of it (more clusters are cheaper to browse than merged classes). Override it with a chosen k under "
            "Recompute.")


def silhouette_figure(curve: pd.DataFrame, k: int) -> go.Figure:
    """Mean silhouette by k with ± one standard error, the chosen k marked."""
    fig = go.Figure(go.Scatter(x=curve.index, y=curve["silhouette"], mode="lines+markers", name="mean silhouette",
                               error_y={"type": "data", "array": curve["se"], "visible": True, "thickness": 1}))
    fig.add_vline(x=k, line_dash="dash", annotation_text=f"k = {k}")
    fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10}, xaxis_title="k",
                      yaxis_title="mean silhouette", showlegend=False)
    return fig


# ---------------------------------------------------------------------- page parts
def recompute_controls(ws: Workspace) -> None:
    """Method, k and a button that recomputes the clusters as a background job, with its progress."""
    with st.expander("Recompute clusters"):
        c1, c2, c3 = st.columns([3, 1, 1])
        choice = c1.radio("Method", list(CHOICES), format_func=CHOICES.get, horizontal=True, key="clusters_method")
        k = c2.number_input("k", min_value=2, max_value=5000, value=10, step=1, key="clusters_k",
                            disabled=choice != "k")
        c3.write("")
        if c3.button("Recompute", key="clusters_recompute", type="primary"):
            with widgets.guard("starting the clustering"):
                jobpanel.submit(ws, "clusters", job_params(choice, int(k)))
        st.caption("Above 200,000 images (or k ≥ 256) k-means runs hierarchically (two levels). HDBSCAN finds "
                   "its own number of clusters and leaves outliers as noise.")
        jobpanel.jobs_panel(ws, kinds=["clusters"], key="clusters_jobs", n_finished=1)


def criterion(clustering: Any) -> None:
    """How the clustering was made; for an automatic k, the silhouette curve that explains it."""
    n = int((clustering.clusters >= 0).sum())
    noise = int((clustering.labels < 0).sum())
    how = {"kmeans": "k-means", "hkmeans": "hierarchical k-means", "hdbscan": "HDBSCAN"}.get(clustering.method,
                                                                                            clustering.method)
    st.caption(f"{n} clusters by {how}" + (f", {noise:,} images left as noise" if noise else "")
               + (f" (k = {clustering.k} chosen by you)" if clustering.k else ""))
    if len(clustering.silhouette) and clustering.k_used:
        with st.expander(f"Why k = {clustering.k_used}? (silhouette by k)"):
            st.plotly_chart(silhouette_figure(clustering.silhouette, clustering.k_used), key="clusters_curve",
                            config={"displaylogo": False})
            st.caption(silhouette_note(clustering.silhouette, clustering.k_used))


def summary_table(ws: Workspace, emb: Any, clustering: Any) -> pd.DataFrame:
    """Per-cluster summary for the current labels, suggestions and (when available) label-issue flags."""
    ids = np.asarray(emb.ids, np.int64)
    sugg = widgets.optional(loaders.suggestions, ws, "suggestions")
    freshness.show(ws)
    issues = widgets.optional(loaders.issues, ws, "issue scores")
    suggested = None if sugg is None else sugg["class_idx"].reindex(ids).fillna(-1).to_numpy(np.int64)
    flags = None if issues is None else issues["is_label_issue"].reindex(ids).fillna(False).to_numpy(bool)
    return clustering.summary(ws.store.label_matrix(ids), ws.store.class_names(), suggested=suggested, issues=flags)


def gallery(ws: Workspace, table: pd.DataFrame, *, matching: pd.Series | None = None) -> None:
    """Cluster cards (medoid thumbnails, name, figures), sortable, paged; "Open" opens one at the top of the page.

    ``matching``: images per cluster that the shared filter keeps (None: no filter); clusters without any are
    left out and each card says how many match."""
    sorts = [s for s in SORTS if s in table.columns]
    by = st.segmented_control("Sort by", sorts, format_func=SORTS.get, default="size", key="clusters_sort") or "size"
    rows = sort_clusters(table, by)
    if matching is not None:
        rows = rows[matching.reindex(rows.index).fillna(0).to_numpy() > 0]
        st.caption(f"{len(rows):,} of {len(table):,} clusters hold images that match the filter.")
    page = widgets.page_slice(len(rows), key="clusters_page", per_page=CARDS_PER_PAGE)
    cols = st.columns(3)
    for i, (cid, row) in enumerate(rows.iloc[page].iterrows()):  # a loop over the clusters of one page
        with cols[i % 3].container(border=True):
            st.markdown(f"**{widgets.md_escape(row['name'])}**")
            paths, _ = widgets.thumbnails(ws, [m for m in row["medoids"] if m >= 0])
            if paths:
                st.image(paths, width=64)
            st.caption(card_caption(row))
            if matching is not None:
                st.caption(f"{int(matching.get(cid, 0)):,} match the filter")
            if row["majority"]:
                st.caption(f"mostly {widgets.md_escape(row['majority'])}"
                           + (f" · suggestion {widgets.md_escape(row['suggested'])}" if row.get("suggested") else ""))
            if st.button("Open", key=f"clusters_open_{cid}"):
                st.session_state[K_OPEN] = int(cid)
                st.rerun()  # the opened cluster is drawn at the top of the page


def exceptions(key: str) -> set[int]:
    """The images ticked "leave out" in the group ``key`` this session (kept across grid pages)."""
    return st.session_state.setdefault(f"{key}_except", set())


def _toggle_exception(key: str, sample_id: int) -> None:
    exceptions(key).symmetric_difference_update({int(sample_id)})


def _clear_exceptions(key: str) -> None:
    """Forget the group's ticks, and their checkboxes' own states (which would otherwise stay ticked)."""
    exceptions(key).clear()
    for widget in [k for k in st.session_state if str(k).startswith(f"{key}_x")]:
        del st.session_state[widget]


def label_panel(ws: Workspace, ids: np.ndarray, *, key: str) -> None:
    """Label every image of ``ids`` except the exceptions with one class, as ONE undoable batch.

    Exceptions are the images ticked "leave out" in the grid below and, when asked, every image that already
    carries another label (to label only the rest of a cluster without touching reviewed work)."""
    with st.container(border=True):
        c1, c2 = st.columns([2, 2])
        with c1:
            target = classes.class_picker(ws, "Class", key=f"{key}_class")
        action = c2.radio("Action", LABEL_ACTIONS, format_func=actions.BULK_ACTIONS.get, horizontal=True,
                          key=f"{key}_action")
        keep_labelled = st.checkbox("Leave out images that already carry another label", key=f"{key}_keep")
        ticked = exceptions(key) & set(np.asarray(ids, np.int64).tolist())
        excluded = ticked | (set(labelled_otherwise(ws, ids, target).tolist()) if keep_labelled else set())
        chosen = targets(ids, sorted(excluded))
        st.caption(f"Tick images below to leave them out: {len(ticked):,} ticked"
                   + (f", {len(excluded) - len(ticked):,} more already labelled otherwise" if keep_labelled else ""))
        b1, b2 = st.columns(2)
        if b1.button(f"Label {len(chosen):,} images", key=f"{key}_apply", type="primary",
                     disabled=not target or len(chosen) == 0):
            with widgets.guard("labelling the cluster"):
                widgets.toast_batch(actions.bulk_label(ws, chosen, target, action),
                                    f"{actions.BULK_ACTIONS[action]} on {len(chosen)}")
                _clear_exceptions(key)
                st.rerun()
        with b2:
            widgets.undo_last_button(ws, key=f"{key}_undo")


def labelled_otherwise(ws: Workspace, ids: np.ndarray, target: str | None) -> np.ndarray:
    """(M,) int64 ids among ``ids`` with a positive label other than ``target``."""
    ids = np.asarray(ids, np.int64)
    matrix = ws.store.label_matrix(ids) == POSITIVE
    names = ws.store.class_names()
    if target in names:
        matrix[:, names.index(target)] = False
    return ids[matrix.any(1)] if matrix.size else ids[:0]


def image_grid(ws: Workspace, ids: np.ndarray, *, key: str) -> None:
    """Paged thumbnails of ``ids`` with their current labels, each with a "leave out" tick for the label panel."""
    ids = np.asarray(ids, np.int64)
    if len(ids) == 0:
        st.caption("No images.")
        return
    shown = ids[widgets.page_slice(len(ids), key=f"{key}_grid", per_page=PICK_PAGE)]
    text = labels.label_text(ws.store.label_matrix(shown), ws.store.class_names())
    ticked = exceptions(key)
    for sid, caption in zip(widgets.cards(ws, shown, columns=PICK_COLUMNS, width=110), text):
        st.checkbox(f"#{sid} {widgets.md_escape(caption)}", value=sid in ticked, key=f"{key}_x{sid}",
                    on_change=_toggle_exception, args=(key, sid), help="Leave this image out of the label")


def _close() -> None:
    st.session_state.pop(K_OPEN, None)


def detail(ws: Workspace, clustering: Any, table: pd.DataFrame, cluster: int, *,
           keep: np.ndarray | None = None) -> None:
    """One cluster, at the top of the page: its images, labelling it whole (with exceptions), splitting it, its
    pockets, and "Open in grid". ``keep``: the sample ids the shared filter keeps (None: all)."""
    if cluster not in table.index:
        st.session_state.pop(K_OPEN, None)
        return
    row = table.loc[cluster]
    ids = clustering.members(cluster)
    counts = ", ".join(f"{widgets.md_escape(k)} {v}" for k, v in row["label_counts"].items())
    head, close = st.columns([5, 1], vertical_alignment="bottom")
    head.subheader(f"Cluster {cluster}: {widgets.md_escape(row['name'])}", anchor=False)
    close.button("Close", key="clusters_close", on_click=_close, icon=":material/close:")
    st.caption(card_caption(row) + (f" · labels: {counts}" if counts else ""))
    if keep is not None:
        ids = ids[np.isin(ids, keep)]
        st.caption(f"{len(ids):,} of its images match the filter; the actions below act on those.")
    grid.open_button(ids, f"cluster {cluster}", key="clusters_open_grid")
    images, split_tab, pocket_tab, apart_tab = st.tabs(["Images", "Split this cluster", "Pockets",
                                                        "What sets it apart"])
    with images:
        label_panel(ws, ids, key=f"cl{cluster}")
        image_grid(ws, ids, key=f"cl{cluster}")
    with split_tab:
        split_view(ws, clustering, cluster)
    with pocket_tab:
        pockets_view(ws, clustering, cluster)
    with apart_tab:
        from curation.ui.beyond import contrast_panel

        contrast_panel(ws, ids, key=f"cl{cluster}_apart", what_a="this cluster", what_b="the other images")


def _on_demand(ws: Workspace, clustering: Any, cluster: int, *, label: str, state_key: str, hint: str,
               what: str, load: Any) -> Any:
    """A button that computes ``load(ws, cluster)`` for this cluster and keeps showing it until another
    cluster's is asked for; returns the result, or None (with ``hint``) before the button is pressed."""
    mark = (clustering.key, int(cluster))
    if st.button(label, key=f"{state_key}_go"):
        st.session_state[state_key] = mark
    if st.session_state.get(state_key) != mark:
        st.caption(hint)
        return None
    with widgets.guard(what):
        return load(ws, int(cluster))
    return None


def labelled_group(ws: Workspace, title: str, ids: np.ndarray, *, key: str, expanded: bool) -> None:
    """An expander with a group's label panel and its images."""
    with st.expander(title, expanded=expanded):
        label_panel(ws, ids, key=key)
        image_grid(ws, ids, key=key)


def split_view(ws: Workspace, clustering: Any, cluster: int) -> None:
    """Re-cluster one cluster (automatic k ≥ 2) and show its sub-clusters, each labelable on its own."""
    fit = _on_demand(ws, clustering, cluster, label="Split this cluster", state_key=K_SPLIT,
                     what="splitting the cluster", load=loaders.cluster_split,
                     hint="Re-clusters this cluster's images (k chosen by silhouette, at least 2).")
    if fit is None:
        return
    ids = clustering.members(cluster)
    st.caption(f"{int(fit.labels.max()) + 1} sub-clusters" +
               (f" (k by silhouette: best {fit.silhouette['silhouette'].max():.3f})" if len(fit.silhouette) else ""))
    for sub in range(int(fit.labels.max()) + 1):
        members = ids[fit.labels == sub]
        labelled_group(ws, f"Sub-cluster {sub} · {len(members):,} images", members, key=f"cl{cluster}_sub{sub}",
                       expanded=sub == 0)


def pockets_view(ws: Workspace, clustering: Any, cluster: int) -> None:
    """Small, tight, set-apart groups inside one cluster (candidate rare classes), with thumbnails."""
    found = _on_demand(ws, clustering, cluster, label="Find pockets", state_key=K_POCKETS,
                       what="looking for pockets", load=loaders.cluster_pockets,
                       hint="Looks for small groups far out from the rest of the cluster that still hang "
                            "together: often a rare class or a distinct kind of image hiding in a common one.")
    if found is None:
        return
    if found.empty:
        st.info(f"No pocket stands out in this cluster (clusters of {pockets.MIN_CLUSTER}+ images are searched).")
        return
    for i, p in found.iterrows():
        labelled_group(ws, f"Pocket {i + 1} · {p['size']} images ({p['share']:.0%} of the cluster) · "
                           f"{p['distinctness']:.1f}x further out than the rest · tightness ×{p['tightness']:.2f}",
                       np.asarray(p["ids"], np.int64), key=f"cl{cluster}_pocket{i}", expanded=i == 0)
