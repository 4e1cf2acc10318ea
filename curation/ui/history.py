"""Label history as display tables: batches (who, when, what, undone?) and a batch's events; tag batches."""

from __future__ import annotations

import time

import pandas as pd

from curation.core.vocab import STATE_NAMES

EVENTS_SHOWN = 10_000
"""Events of a batch listed on the History page (a bulk batch of a million images lists its first ones)."""
EXPORT_FORMATS = ("csv", "jsonl", "parquet", "hf", "hf-parquet", "imagefolder", "fiftyone", "coco", "cleanlab")


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def batches_table(batches: pd.DataFrame) -> pd.DataFrame:
    """One row per batch, newest first: batch, time, actor, source, note, events, undoes, undone by."""
    if batches.empty:
        return pd.DataFrame(columns=["batch", "time", "actor", "source", "note", "events", "undoes", "undone_by"])
    return pd.DataFrame({
        "batch": batches.index.astype(int),
        "time": [_when(t) for t in batches["time"]],
        "actor": batches["actor"].to_numpy(),
        "source": batches["source"].to_numpy(),
        "note": batches["note"].to_numpy(),
        "events": batches["n_events"].astype(int).to_numpy(),
        "undoes": pd.array(batches["undoes"], dtype="Int64"),
        "undone_by": pd.array(batches["undone_by"], dtype="Int64"),
    })


def events_table(events: pd.DataFrame) -> pd.DataFrame:
    """A batch's events: sample, class, and old → new state in words."""
    return pd.DataFrame({
        "sample": events["sample_id"].astype(int).to_numpy(),
        "class": events["class_name"].to_numpy(),
        "change": [f"{STATE_NAMES.get(int(a), a)} → {STATE_NAMES.get(int(b), b)}"
                   for a, b in zip(events["prev_state"], events["state"])],
    })


def tag_history(ws) -> None:
    """Tag batches (newest first), each undoable (streamlit parts: the page stays thin)."""
    import streamlit as st

    from curation.data import tags
    from curation.ui import widgets

    df = tags.batches(ws.store)
    if df.empty:
        st.caption("No tag changes yet. Tag images from the grid's bulk bar.")
        return
    table = pd.DataFrame({"tag batch": df.index.astype(int), "time": [_when(t) for t in df["time"]],
                          "note": df["note"].to_numpy(), "images": df["n_events"].astype(int).to_numpy()})
    st.dataframe(table, hide_index=True, height=200)
    pick = st.selectbox("Tag batch", table["tag batch"].tolist(), key="history_tag_batch",
                        format_func=lambda b: f"Tag batch {b} · {df.loc[b, 'note']}")
    if st.button(f"Undo tag batch {pick}", key="history_tag_undo"):
        with widgets.guard("undoing the tag batch"):
            st.toast(f"Undid tag batch {pick}: new tag batch {tags.undo(ws.store, int(pick))}")
            st.rerun()
