"""Map: the dataset as a 2-D map; filter and colour it, click a point to preview it, select to act in bulk."""

import numpy as np
import streamlit as st

from curation.ui import beyond, filters, freshness, grid, jobpanel, labels, loaders, mapview, selection, state, widgets

st.set_page_config(page_title="Map · Curation studio", page_icon="🗺️", layout="wide")
st.title("Map")
ws = widgets.require_workspace()

emb = jobpanel.require_embeddings(ws, "No map yet: run the pipeline (embed → map → suggestions).",
                                 run_key="map_pipeline")

c1, c2, c3 = st.columns([1, 2, 1], vertical_alignment="bottom")
method = c1.segmented_control("Layout", list(mapview.LAYOUTS), format_func=mapview.LAYOUTS.get, default="umap",
                              key="map_layout") or "umap"
run_mode = c2.segmented_control("Next UMAP job", list(mapview.RUN_MODES), format_func=mapview.RUN_MODES.get,
                                default="fast", key="map_run_mode",
                                help="How the next “Compute UMAP” runs; the caption under the map says how the map "
                                     "shown was made.") or "fast"
if c3.button("Compute UMAP", key="map_compute"):
    jobpanel.submit(ws, "map", {"method": "umap", "reproducible": run_mode == "reproducible"})
jobpanel.jobs_panel(ws, kinds=["map", "pipeline"], key="map_jobs", n_finished=1)

found = None
with widgets.guard("loading the map"):
    found = loaders.layout(ws, method)
    if found is None:
        st.info("No UMAP map yet: choose fast or reproducible and press Compute UMAP. Showing PCA meanwhile.")
        found = loaders.layout(ws, "pca")
if found is None:
    st.stop()
xy, config = found
st.caption(mapview.layout_caption(config, len(xy)))

ids = np.asarray(emb.ids, np.int64)
names = ws.store.class_names()
matrix = ws.store.label_matrix(ids)
label_text = labels.label_text(matrix, names)
sugg = widgets.optional(loaders.suggestions, ws, "suggestions")
freshness.show(ws)
clusters = widgets.optional(loaders.clusters, ws, "clusters")

modes = [m for m in mapview.COLOUR_MODES if m != "cluster" or clusters is not None]
m1, m2 = st.columns([3, 2], vertical_alignment="bottom")
mode = m1.segmented_control("Colour by", modes, default="label", key="map_colour") or "label"
mouse = m2.segmented_control("Mouse", list(mapview.MOUSE), format_func=mapview.MOUSE.get, default="lasso",
                             key="map_mouse") or "lasso"
issues = None
if mode in mapview.ISSUE_COLUMNS:
    issues = widgets.optional(loaders.issues, ws, "issue scores")
flt, keep = filters.page_bar(ws, ids, names=names, matrix=matrix, sugg=sugg, issues=issues, clusters=clusters)
kind = "filter" if flt.active else "all"
rows = selection.rows_to_draw(xy, keep, mapview.MAX_POINTS)
caption = mapview.drawn_caption(len(ids), len(rows), int(keep.sum()), int(keep[rows].sum()), filtered=kind != "all")
if caption:
    st.caption(caption)
shown, shown_keep = ids[rows], keep[rows]
shown_text = [label_text[r] for r in rows]
clicked = np.intersect1d(selection.selected_ids(st.session_state.get(state.K_MAP_CHART)), shown)
# the whole samples table, read only when the split is shown (the colour, or the clicked point's facts)
splits = ws.store.samples()["split"] if mode == "split" or len(clicked) == 1 else None
cats, values = mapview.colour_by(mode, shown, label_text=shown_text, sugg=sugg, splits=splits, clusters=clusters,
                                 issues=issues)
colours = mapview.category_colours(cats, fixed=mapview.fixed_colours(ws)) if cats is not None else None
value_name, scale = mapview.SCALES.get(mode, ("", "Viridis"))
fig = mapview.map_figure(xy[rows], shown, categories=cats, colours=colours, values=values, value_name=value_name,
                         colorscale=scale, faded=None if kind == "all" else ~shown_keep,
                         hover=mapview.hover_text(shown, shown_text, sugg) if len(rows) <= mapview.HOVER_LIMIT
                         else None, dragmode=mouse,
                         hint="click to preview" if mouse == "pan" else "Mouse → click to preview, then click",
                         revision=f"{method}-{mouse}")

picked = np.intersect1d(clicked, shown[shown_keep])  # bulk actions: the filter's points only
label_arr = np.asarray(label_text, dtype=object)
by_id = np.argsort(ids, kind="stable")


def text_of(sample_ids: np.ndarray) -> list[str]:
    """Label text of these sample ids (a binary search: no per-run dict of every sample)."""
    pos = np.searchsorted(ids[by_id], np.asarray(sample_ids, np.int64))
    return label_arr[by_id[np.clip(pos, 0, len(ids) - 1)]].tolist()


left, right = st.columns([5, 2])
with left:
    st.plotly_chart(fig, on_select="rerun", selection_mode=("points", "box", "lasso"), key=state.K_MAP_CHART,
                    config={"displaylogo": False})
with right:
    if len(clicked) == 1:
        mapview.point_panel(ws, int(clicked[0]), labels=text_of(clicked[:1])[0], sugg=sugg, issues=issues,
                            clusters=clusters, splits=splits)
    elif colours is not None:
        key = mapview.legend_frame([c for c, k in zip(cats, shown_keep) if k], colours)
        st.dataframe(mapview.legend_style(key), hide_index=True, height=min(600, 36 * (len(key) + 1)),
                     column_config={"colour": st.column_config.TextColumn("", width="small"),
                                    "points": st.column_config.NumberColumn("n", width="small")})
    st.caption("Drag a lasso (or a box: toolbar) to select; with Mouse set to *click to preview*, click a point "
               "to see its image. Double-click clears the selection.")

if len(picked) == 0:
    widgets.undo_last_button(ws, key="map_undo")
    grid.open_button(ids[keep], f"map filter: {flt.describe()}", key="map_open_filter",
                     label="Open the filter's images in the grid")
    st.stop()

st.subheader(f"{len(picked):,} selected")
grid.open_button(picked, "map selection", key="map_open_grid")
with st.expander("What sets the selection apart"):
    beyond.contrast_panel(ws, picked, key="map_apart", what_a="the selection", what_b="the other images")
grid.grid(ws, picked, key="bulk", sugg=sugg, source="map selection")
