"""Map: the dataset as a 2-D map; select points with box or lasso, then label them in bulk."""

import numpy as np
import streamlit as st

from curation.ui import actions, jobpanel, labels, loaders, mapview, selection, state, widgets

st.set_page_config(page_title="Map · Curation studio", page_icon="🗺️", layout="wide")
st.title("Map")
ws = widgets.require_workspace()

emb = xy = None
with widgets.guard("loading the map"):
    emb = loaders.embeddings(ws)
    xy = loaders.coords(ws) if emb is not None else None
if xy is None:
    st.info("No map yet: run the pipeline (embed → map → suggestions).")
    if st.button("Run pipeline", type="primary"):
        jobpanel.submit(ws, "pipeline", {})
    jobpanel.jobs_panel(ws, key="map_jobs")
    st.stop()

ids = np.asarray(emb.ids, np.int64)
names = ws.store.class_names()
label_text = labels.label_text(ws.store.label_matrix(ids), names)
sugg = widgets.optional(loaders.suggestions, ws, "suggestions")
clusters = widgets.optional(loaders.clusters, ws, "clusters")
splits = ws.store.samples()["split"]

modes = [m for m in mapview.COLOUR_MODES if m != "cluster" or clusters is not None]
mode = st.segmented_control("Colour by", modes, default="label", key="map_colour") or "label"
rows = selection.subsample(len(ids), mapview.MAX_POINTS)
if len(rows) < len(ids):
    st.caption(f"Showing a random {len(rows):,} of {len(ids):,} points; selections act on the points shown.")
shown = ids[rows]
shown_text = [label_text[r] for r in rows]
cats, values = mapview.colour_by(mode, shown, label_text=shown_text, sugg=sugg, splits=splits, clusters=clusters)
colours = mapview.category_colours(cats) if cats is not None else None
fig = mapview.map_figure(xy[rows], shown, categories=cats, colours=colours, values=values,
                         value_name="confidence", hover=mapview.hover_text(shown, shown_text, sugg))

left, right = st.columns([4, 1])
with left:
    st.plotly_chart(fig, on_select="rerun", selection_mode=("points", "box", "lasso"), key=state.K_MAP_CHART,
                    config={"displaylogo": False})
with right:
    if colours is not None:
        key = mapview.legend_frame(cats, colours)
        st.dataframe(mapview.legend_style(key), hide_index=True, height=min(600, 36 * (len(key) + 1)),
                     column_config={"colour": st.column_config.TextColumn("", width="small"),
                                    "points": st.column_config.NumberColumn("n", width="small")})
    st.caption("Drag a box or lasso (toolbar) to select; double-click to clear.")

picked = np.intersect1d(selection.selected_ids(st.session_state.get(state.K_MAP_CHART)), shown)
if len(picked) == 0:
    widgets.undo_last_button(ws, key="map_undo")
    st.stop()

st.subheader(f"{len(picked):,} selected")
text_of = dict(zip(ids.tolist(), label_text))
with st.container(border=True):
    c1, c2, c3 = st.columns([2, 2, 1])
    action = c1.selectbox("Action", list(actions.BULK_ACTIONS), format_func=actions.BULK_ACTIONS.get,
                          key="bulk_action")
    target = c2.selectbox("Class (type to search or add a new one)", names, index=None, accept_new_options=True,
                          key="bulk_class")
    c3.write("")
    if c3.button("Apply", type="primary", key="bulk_apply", disabled=not target):
        with widgets.guard("labelling"):
            widgets.toast_batch(actions.bulk_label(ws, picked, target, action),
                                f"{actions.BULK_ACTIONS[action]} on {len(picked)}")
            st.rerun()
    b1, b2 = st.columns(2)
    n_sugg = 0 if sugg is None else int(sugg.index.isin(picked).sum())
    if b1.button(f"Accept suggestions ({n_sugg})", key="bulk_accept", disabled=n_sugg == 0):
        with widgets.guard("accepting suggestions"):
            widgets.toast_batch(actions.accept_suggestions(ws, picked, sugg), f"Accepted {n_sugg} suggestions")
            st.rerun()
    with b2:
        widgets.undo_last_button(ws, key="map_undo")

widgets.image_grid(ws, picked, [text_of[int(i)] for i in picked], key="map_grid_page")
