"""Clusters: cards of the dataset's clusters; open one to label it whole (with exceptions), split it or find pockets."""

import numpy as np
import streamlit as st

from curation.ui import clusterview, filters, jobpanel, loaders, widgets

st.set_page_config(page_title="Clusters · Curation studio", page_icon="🧩", layout="wide")
st.title("Clusters")
ws = widgets.require_workspace()

emb = jobpanel.require_embeddings(
    ws, "No embeddings yet: run the pipeline (embed → map → clusters → suggestions).", run_key="clusters_pipeline")

clusterview.recompute_controls(ws)
clustering = widgets.optional(loaders.clustering, ws, "clusters")
if clustering is None:
    jobpanel.stop_for_pipeline(ws, "No clusters yet: recompute them above (or run the pipeline on the Home page).")

ids = np.asarray(emb.ids, np.int64)
members = widgets.optional(loaders.clusters, ws, "clusters")
flt, keep = filters.page_bar(ws, ids, names=ws.store.class_names(),
                             sugg=widgets.optional(loaders.suggestions, ws, "suggestions"), clusters=members,
                             compact=True)
table = None
with widgets.guard("summarising the clusters"):
    table = clusterview.summary_table(ws, emb, clustering)
if table is None:
    st.stop()

opened = st.session_state.get(clusterview.K_OPEN)
if opened is not None:  # at the top, where the eye is after "Open" (not 1,600 px below the gallery)
    with st.container(border=True):
        clusterview.detail(ws, clustering, table, int(opened), keep=ids[keep] if flt.active else None)
clusterview.criterion(clustering)
matching = members.reindex(ids[keep]).value_counts() if flt.active and members is not None else None
clusterview.gallery(ws, table, matching=matching)
