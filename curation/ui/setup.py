"""Getting a workspace: build the demo, create an empty one, ingest a folder or manifest."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from curation.data.workspace import Workspace
from curation.ui import loaders, state
from curation.ui.text import plain_lines
from curation.ui.widgets import guard

K_INGEST_REPORT = "ingest_report"
"""The last ingest's report, shown once after the page reran to count the new images."""
LABEL_MODES = {"auto": "Automatic (folder names or manifest column)", "folders": "Folder names", "none": "No labels"}


def progress_bar(text: str):
    """A ``progress(fraction, message)`` callback drawing an ``st.progress`` bar."""
    bar = st.progress(0.0, text=text)

    def progress(fraction: float, message: str = "") -> None:
        bar.progress(float(min(max(fraction, 0.0), 1.0)), text=f"{text}: {message}" if message else text)

    return progress


def build_demo_form(path: Path) -> None:
    """A button that builds the demo workspace (real Fashion-MNIST images) at ``path``."""
    st.subheader("Build the demo workspace")
    st.caption("Real Fashion-MNIST photos with some labels flipped and some removed, ready to curate.")
    n = st.number_input("Images", min_value=100, max_value=70_000, value=3000, step=500, key="demo_n")
    if st.button("Build the demo workspace", type="primary", key="build_demo"):
        with guard("building the demo"):
            from curation.data.demo import build_demo

            build_demo(path, n=int(n), progress=progress_bar("Building the demo"))
            loaders.forget_workspace()
            st.session_state[state.K_WORKSPACE] = str(path)
            st.rerun()


def create_form(path: Path) -> None:
    """Create (or open) a workspace at a chosen path."""
    st.subheader("Create or open a workspace")
    with st.form("create_ws"):
        target = st.text_input("Workspace folder", value=str(path))
        task = st.radio("Task", ["single", "multi"], horizontal=True,
                        format_func=lambda t: {"single": "Single-label", "multi": "Multi-label"}[t])
        if st.form_submit_button("Create / open"):
            with guard("creating the workspace"):
                ws = Workspace.create(state.confine(target, what="create a workspace in"), task=task)
                loaders.forget_workspace()
                st.session_state[state.K_WORKSPACE] = str(ws.root)
                st.rerun()


def ingest_form(ws: Workspace) -> None:
    """Add an image folder or a manifest (CSV, JSONL, Parquet, HF metadata.jsonl) and show the report."""
    with st.form("ingest"):
        source = st.text_input("Image folder or manifest file", placeholder="/data/images or /data/labels.csv")
        labels = st.selectbox("Labels", list(LABEL_MODES), format_func=LABEL_MODES.get)
        image_root = st.text_input("Image root for manifest paths (optional)")
        go = st.form_submit_button("Ingest")
    if go and source.strip():
        with guard("ingesting"):
            from curation.data.ingest import ingest

            report = ingest(ws, state.confine(source, what="read images from"), labels=labels,
                            image_root=state.confine(image_root, what="read images from") if image_root.strip()
                            else None,
                            progress=progress_bar("Ingesting"))
            st.session_state[K_INGEST_REPORT] = report
            st.rerun()  # the whole page (counts, the pipeline button) reflects the new images at once
    report = st.session_state.pop(K_INGEST_REPORT, None)
    if report is not None:
        show_report(report)


def show_report(report) -> None:
    """The ingest report: counts, and every skipped file with its reason."""
    st.success(plain_lines(report.summary()))
    skipped: pd.DataFrame = report.skipped
    if len(skipped):
        st.warning(f"{len(skipped)} files were skipped:")
        st.dataframe(skipped, hide_index=True)
