"""How fresh the scores on a page are: "updated N labels ago", and a refresh indicator that reruns the page when the
worker's newer scores land."""

from __future__ import annotations

import streamlit as st

from curation.data.workspace import Workspace
from curation.ui import loaders

POLL_SECONDS = 2.0


def scores_caption(ws: Workspace) -> str:
    """The line shown: scores up to date, or how many samples were labelled since, and whether a refresh runs."""
    from curation.runtime import rescore

    meta = loaders.scores_meta(ws)
    pending = rescore.pending_job(ws)
    if meta is None:
        return "Scores are being computed in the background…" if pending else "No scores yet."
    behind = rescore.labels_behind(ws, meta)
    if behind == 0 and not rescore.needs_rescore(ws, meta):
        return "Scores up to date."
    n = f"{behind - 1:,}+" if behind > 100_000 else f"{behind:,}"
    text = f"Scores updated {n} label{'' if behind == 1 else 's'} ago"
    if pending is None:
        return text + "."
    verb = "refreshing" if pending["status"] == "running" else "refresh queued"
    return f"{text} · {verb} in the background…"


def show(ws: Workspace) -> None:
    """Render the scores' age under the page title; while a refresh is pending, poll and rerun when it lands."""
    from curation.runtime import rescore

    meta = loaders.scores_meta(ws)
    text = scores_caption(ws)
    st.caption(("🔄 " if "background" in text else "") + text)
    if rescore.pending_job(ws) is not None:
        _poll(ws, None if meta is None else meta["folder"])


@st.fragment(run_every=POLL_SECONDS)
def _poll(ws: Workspace, shown: str | None) -> None:
    meta = loaders.scores_meta(ws)
    if (None if meta is None else meta["folder"]) != shown:
        st.rerun()  # the whole page: it shows the new scores
