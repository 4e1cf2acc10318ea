"""Grid: the images of a selection (lasso, cluster, filter, search, confusion cell) as paged cards with one bulk bar,
keyboard movement, number keys for the first classes and "find similar" on every card."""

import numpy as np
import streamlit as st

from curation.ui import filters, grid, jobpanel, loaders, state, widgets

st.set_page_config(page_title="Grid · Curation studio", page_icon="🔲", layout="wide")
st.title("Grid")
ws = widgets.require_workspace()

emb = jobpanel.require_embeddings(ws, "No embeddings yet: the grid opens the images of a selection once the "
                                      "pipeline has run.", run_key="grid_pipeline")
all_ids = np.asarray(emb.ids, np.int64)
chosen = st.session_state.get(state.K_GRID)
base = np.asarray(chosen["ids"], np.int64) if chosen else all_ids
source = chosen["source"] if chosen else "every image"
top = st.columns([4, 1], vertical_alignment="center")
top[0].caption(f"Showing: {widgets.md_escape(source)} ({len(base):,} images), narrowed by the filter below.")
if chosen and top[1].button("Show every image", key="grid_all"):
    st.session_state.pop(state.K_GRID, None)
    st.rerun()

names = ws.store.class_names()
sugg = widgets.optional(loaders.suggestions, ws, "suggestions")
clusters = widgets.optional(loaders.clusters, ws, "clusters")
flt, keep = filters.page_bar(ws, base, names=names, sugg=sugg, clusters=clusters)
grid.grid(ws, base[keep], key="grid", sugg=sugg, source=source if not flt.active else f"{source}, filtered")
