"""History: every label batch (undoable), its events, and exporting the curated labels."""


import pandas as pd
import streamlit as st

from curation.ui import beyond, grid, history, state, widgets

st.set_page_config(page_title="History · Curation studio", page_icon="🕘", layout="wide")
st.title("History")
ws = widgets.require_workspace()

batches = ws.store.batches(limit=500)
table = history.batches_table(batches)
if table.empty:
    st.caption("No label changes yet.")
else:
    st.dataframe(table, hide_index=True, height=320)
    batch_id = st.selectbox("Batch", table["batch"].tolist(), key="history_batch",
                            format_func=lambda b: f"Batch {b} · {batches.loc[b, 'source']} · "
                                                  f"{batches.loc[b, 'n_events']} events · {batches.loc[b, 'note']}")
    undone_by = batches.loc[batch_id, "undone_by"]
    with st.container(border=True):
        events = ws.store.events(batch_id, limit=history.EVENTS_SHOWN)
        touched = ws.store.batch_samples(int(batch_id))
        st.dataframe(history.events_table(events), hide_index=True, height=240)
        if int(batches.loc[batch_id, "n_events"]) > len(events):
            st.caption(f"The first {len(events):,} of {int(batches.loc[batch_id, 'n_events']):,} events.")
        st.caption(f"{len(touched):,} images in this batch" + (" (the first 12 below)" if len(touched) > 12 else ""))
        paths, _ = widgets.thumbnails(ws, touched[:12])
        if paths:
            st.image(paths, width=72)
        grid.open_button(touched, f"images of batch {batch_id}", key="history_open_grid")
        if pd.notna(undone_by):
            st.caption(f"Already undone by batch {int(undone_by)}.")
        n_events = int(batches.loc[batch_id, "n_events"])
        sure = widgets.undo_is_confirmed(n_events, len(touched), key=f"history_undo_{batch_id}")
        if st.button(f"Undo batch {batch_id}", key="history_undo", disabled=bool(pd.notna(undone_by)) or not sure):
            with widgets.guard("undoing"):
                new = ws.store.undo(int(batch_id))
                st.toast(f"Undid batch {batch_id}: new batch {new}")
                st.rerun()

with st.expander("Tag changes"):
    history.tag_history(ws)

st.subheader("Export")
with st.form("export"):
    c1, c2 = st.columns([1, 3])
    fmt = c1.selectbox("Format", history.EXPORT_FORMATS)
    dest = c2.text_input("Destination", placeholder=f"automatic: {ws.root / 'exports'}/<format>-<date and time>",
                         help="A file for csv / jsonl / parquet / cleanlab, a folder for the others.")
    drop = st.checkbox("Leave out images reviewed as “Same image” as their near-duplicate", value=False)
    if st.form_submit_button("Export"):
        with widgets.guard("exporting"):
            from curation.data.export import export
            from curation.labels.heldout import export_cleanlab

            where = state.confine(dest, what="export to") if dest.strip() else None
            path = export_cleanlab(ws, where) if fmt == "cleanlab" else export(ws, fmt, where, drop_same_images=drop)
            st.success(f"Written to {widgets.md_escape(path)}")

st.subheader("Cluster-balanced subset")
st.caption("A training or labelling subset of a given budget: near-duplicates left out, then spread over clusters "
           "(optionally the hardest images first). Written as a manifest CSV or an id list under exports/.")
beyond.subset_form(ws)
