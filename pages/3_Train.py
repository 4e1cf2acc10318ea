"""Train: a classifier head on the cached embeddings, as a job with live progress; the list of runs."""

import streamlit as st

from curation.ui import jobpanel, runs, widgets

st.set_page_config(page_title="Train · Curation studio", page_icon="🏋️", layout="wide")
st.title("Train")
ws = widgets.require_workspace()

device = "unknown"
with widgets.guard("finding the device"):
    from curation.train import pick_device

    device = pick_device()

with st.form("train"):
    c1, c2, c3 = st.columns(3)
    kind = c1.selectbox("Head", ["linear", "mlp"], format_func={"linear": "Linear", "mlp": "MLP"}.get)
    epochs = c2.number_input("Epochs (at most; stops early)", min_value=1, max_value=2000, value=100, step=10)
    class_weight = c3.checkbox("Weight classes by inverse frequency", value=True)
    st.caption(f"Trains on {device}.")
    if st.form_submit_button("Train", type="primary"):
        jobpanel.submit(ws, "train", {"kind": kind, "epochs": int(epochs), "class_weight": bool(class_weight)})

jobpanel.jobs_panel(ws, kinds=["train"], key="train_jobs")

st.subheader("Runs")
table = runs.runs_table(ws.store.runs())
if table.empty:
    st.caption("No runs yet.")
else:
    st.dataframe(table, hide_index=True, column_config={
        "accuracy": st.column_config.NumberColumn("accuracy (val)", format="%.3f"),
        "macro_f1": st.column_config.NumberColumn("macro-F1 (val)", format="%.3f"),
        "duration_s": st.column_config.NumberColumn("duration (s)", format="%.1f")})
