"""The workspace at a glance: counts, encoder, and which pipeline results exist."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from curation.core.vocab import POSITIVE
from curation.data.workspace import Workspace
from curation.ui import loaders
from curation.ui.text import clean

FAILURES_SHOWN = 200
"""Embedding failures listed on Home (the rest are counted; ``python -m curation doctor`` lists them all)."""

OFFLINE_NOTICE = ("The encoder in use ({name}) has no text tower, so zero-shot suggestions and text search are "
                  "off; suggestions come from neighbours, clusters and trained models. To get them, make the "
                  "OpenCLIP weights available (a local checkpoint file or the Hugging Face cache) and re-embed.")


@dataclass
class Summary:
    """Counts and pipeline state of a workspace."""

    samples: int
    classes: int
    labelled: int
    unlabelled: int
    task: str
    encoder: str | None
    device: str | None
    has_text: bool | None
    embedded: int
    has_map: bool
    has_clusters: bool


def summarize(ws: Workspace) -> Summary:
    """Read the summary (labels fresh from the store; arrays through the cached loaders)."""
    ids = ws.store.sample_ids()
    m = ws.store.label_matrix(ids)
    labelled = int((m == POSITIVE).any(axis=1).sum()) if m.size else 0
    emb = loaders.embeddings(ws)
    has_map = has_clusters = False
    if emb is not None:
        has_map = loaders.coords(ws) is not None
        try:
            has_clusters = loaders.clusters(ws) is not None
        except ImportError:
            has_clusters = False
    return Summary(samples=len(ids), classes=len(ws.store.class_names()), labelled=labelled,
                   unlabelled=len(ids) - labelled, task=ws.store.task,
                   encoder=getattr(emb, "encoder_name", None), device=getattr(emb, "device", None),
                   has_text=getattr(emb, "has_text", None),
                   embedded=int(np.isin(ids, emb.ids).sum()) if emb is not None else 0,
                   has_map=has_map, has_clusters=has_clusters)


def failures_panel(ws: Workspace) -> None:
    """Images the active encoder could not embed: how many, why and when, and a button to retry them all."""
    from curation.features.embed import embedding_failures

    try:
        failed = embedding_failures(ws)
    except Exception:  # noqa: BLE001 - a damaged store is doctor's to report; Home stays usable
        return
    if not len(failed):
        return
    changed = int(failed["changed"].sum())
    st.warning(f"{len(failed):,} images could not be embedded" + (f" ({changed:,} changed since: the next embed "
               "retries them)" if changed else "") + ". Fix or restore the files, then run the pipeline again, "
               "or retry them all now.")
    with st.expander(f"Images that could not be embedded ({len(failed):,})"):
        shown = failed.head(FAILURES_SHOWN)
        table = pd.DataFrame({"id": shown.index, "file": [clean(p) for p in shown["path"]],
                              "reason": [clean(r) for r in shown["reason"]],
                              "when": pd.to_datetime(shown["time"], unit="s"), "attempts": shown["attempts"],
                              "file changed": shown["changed"]})
        st.dataframe(table, hide_index=True)
        if len(failed) > FAILURES_SHOWN:
            st.caption(f"... and {len(failed) - FAILURES_SHOWN:,} more: `python -m curation doctor WORKSPACE` "
                       "lists them all.")
        if st.button("Retry them all", key="retry_failed_embeddings", disabled=ws.read_only):
            from curation.ui.jobpanel import submit

            submit(ws, "embed", {"retry_failed": True})
