"""Train: a head on the cached embeddings or a fine-tune of the image tower, as jobs with live curves; the runs."""

import streamlit as st

from curation.ui import jobpanel, runs, trainview, widgets

st.set_page_config(page_title="Train · Curation studio", page_icon="🏋️", layout="wide")
st.title("Train")
ws = widgets.require_workspace()

device = trainview.device_line()
mode = st.radio("What to train", list(trainview.MODES), format_func=trainview.MODES.get, horizontal=True,
                key="train_mode")
if mode == trainview.HEAD:
    trainview.head_form(ws)
else:
    trainview.finetune_form(ws, device)

jobpanel.jobs_panel(ws, kinds=["train", "finetune", "reembed"], key="train_jobs")
all_runs = ws.store.runs()
trainview.live_curves(ws, all_runs)
trainview.reembed_form(ws, all_runs)

st.subheader("Runs")
table = runs.runs_table(all_runs)
if table.empty:
    st.caption("No runs yet.")
else:
    st.dataframe(table, hide_index=True, column_config={
        "accuracy": st.column_config.NumberColumn("accuracy (val)", format="%.3f"),
        "macro_f1": st.column_config.NumberColumn("macro-F1 (val)", format="%.3f"),
        "duration_s": st.column_config.NumberColumn("duration (s)", format="%.1f")})
