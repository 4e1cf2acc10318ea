"""Guidelines: per-class cards for annotators (typical examples, boundaries, confusions, worked verdicts, notes)."""

import streamlit as st

from curation.ui import beyond, jobpanel, widgets

st.set_page_config(page_title="Guidelines · Curation studio", page_icon="📘", layout="wide")
st.title("Guidelines")
ws = widgets.require_workspace()
emb = jobpanel.require_embeddings(ws, "No embeddings yet: run the pipeline to build guideline cards.",
                                  run_key="guidelines_pipeline")
names = ws.store.class_names()
if not names:
    st.info("No classes yet: label some images first.")
    st.stop()

chosen = st.multiselect("Classes", names, default=names[:1], key="guide_classes",
                        help="Cards for these classes; the export holds the same classes.")
guides = []
with widgets.guard("building the guideline cards"):
    from curation.labels.guidelines import class_guides

    guides = class_guides(ws, emb, classes=chosen or None)
beyond.export_form(ws, guides)
for g in guides:
    st.divider()
    beyond.guide_card(ws, g)
