"""Clusters: cards of the dataset's clusters; open one to label it whole (with exceptions), split it or find pockets."""

import streamlit as st

from curation.ui import clusterview, jobpanel, loaders, widgets

st.set_page_config(page_title="Clusters · Curation studio", page_icon="🧩", layout="wide")
st.title("Clusters")
ws = widgets.require_workspace()

emb = jobpanel.require_embeddings(
    ws, "No embeddings yet: run the pipeline (embed → map → clusters → suggestions).", run_key="clusters_pipeline")

clusterview.recompute_controls(ws)
clustering = widgets.optional(loaders.clustering, ws, "clusters")
if clustering is None:
    st.info("No clusters yet: recompute them above (or run the pipeline on the Home page).")
    st.stop()

clusterview.criterion(clustering)
table = None
with widgets.guard("summarising the clusters"):
    table = clusterview.summary_table(ws, emb, clustering)
if table is None:
    st.stop()
clusterview.gallery(ws, table)

opened = st.session_state.get(clusterview.K_OPEN)
if opened is not None:
    st.divider()
    clusterview.detail(ws, clustering, table, int(opened))
