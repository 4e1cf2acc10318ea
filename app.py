"""Home: the workspace summary, the pipeline, and the jobs panel (or, without a workspace, how to get one)."""

import streamlit as st

from curation.ui import beyond, classes, jobpanel, loaders, overview, setup, state, widgets
from curation.ui.text import plain

st.set_page_config(page_title="Curation studio", page_icon="🗂️", layout="wide")
st.title("Curation studio")
widgets.sidebar()

path = state.workspace_path()
ws = None
opened = False
with widgets.guard("opening the workspace"):
    ws = loaders.current_workspace()
    opened = True
if not opened:  # the folder holds a workspace that cannot be opened: say why, offer no "create" over it
    st.stop()

if ws is None:
    st.info(f"No workspace at {widgets.md_escape(str(path))} yet.")
    left, right = st.columns(2)
    with left:
        setup.build_demo_form(path)
    with right:
        setup.create_form(path)
    st.stop()

s = None
with widgets.guard("reading the workspace"):
    s = overview.summarize(ws)
if s is None:
    st.stop()
widgets.read_only_banner(ws)

cols = st.columns(5)
cols[0].metric("Samples", f"{s.samples:,}")
cols[1].metric("Classes", s.classes)
cols[2].metric("Labelled", f"{s.labelled:,}")
cols[3].metric("Unlabelled", f"{s.unlabelled:,}")
cols[4].metric("Task", "multi-label" if s.task == "multi" else "single-label")
if s.encoder:
    st.caption(f"Encoder: {plain(s.encoder)} on {plain(s.device)} · {s.embedded:,} of {s.samples:,} samples embedded")
    if s.has_text is False:
        st.info(overview.OFFLINE_NOTICE.format(name=plain(s.encoder)))
    overview.failures_panel(ws)
else:
    st.caption("No embeddings yet: run the pipeline.")

st.subheader("Pipeline")
c1, c2, c3, c4 = st.columns(4)
c1.write((":material/check_circle:" if s.encoder and s.embedded == s.samples else ":material/radio_button_unchecked:") + " Embeddings")
c2.write((":material/check_circle:" if s.has_map else ":material/radio_button_unchecked:") + " Map")
c3.write((":material/check_circle:" if s.has_clusters else ":material/radio_button_unchecked:") + " Clusters")
c4.write((":material/check_circle:" if s.encoder else ":material/radio_button_unchecked:") + " Suggestions")
running = jobpanel.active_pipeline(ws)
engine = jobpanel.engine_choice()
if st.button("Run pipeline (embed → map → clusters → suggestions → issues)", type="primary",
             disabled=s.samples == 0 or running is not None,
             help="One pipeline at a time: this is off while one runs." if running is not None else None):
    jobpanel.submit(ws, "pipeline", engine)
jobpanel.jobs_panel(ws, key="home_jobs")
if s.labelled:
    with st.expander("Which encoder fits your labels?"):
        beyond.transfer_panel(ws)

st.subheader("Next")
links = st.columns(6)
links[0].page_link("pages/1_Map.py", label="See the map", icon=":material/scatter_plot:")
links[1].page_link("pages/2_Clusters.py", label="Browse clusters", icon=":material/workspaces:")
links[2].page_link("pages/3_Review.py", label="Review queues", icon=":material/fact_check:")
links[3].page_link("pages/4_Train.py", label="Train", icon=":material/model_training:")
links[4].page_link("pages/5_Evaluate.py", label="Evaluate", icon=":material/analytics:")
links[5].page_link("pages/7_History.py", label="History & export", icon=":material/history:")

with st.expander(f"Classes ({s.classes})", expanded=False):
    classes.manager(ws)
with st.expander("Task: single- or multi-label"):
    classes.task_switch(ws)
with st.expander("Add images (folder or manifest)",
                 expanded=s.samples == 0 or setup.K_INGEST_REPORT in st.session_state):
    setup.ingest_form(ws)
