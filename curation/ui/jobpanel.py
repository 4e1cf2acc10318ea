"""Submitting jobs and a polling panel that shows their progress, with Cancel and Resume."""

from __future__ import annotations

import time
from typing import Any, NoReturn, Sequence

import pandas as pd
import streamlit as st

from curation.data.workspace import Workspace
from curation.ui import loaders, state
from curation.ui.text import plain
from curation.ui.widgets import guard, md_escape

ACTIVE = ("queued", "running", "cancelling")
ICONS = {"done": ":material/check_circle:", "failed": ":material/error:", "cancelled": ":material/stop_circle:",
         "interrupted": ":material/warning:"}


PIPELINE_KINDS = ("pipeline", "embed", "map", "clusters", "reembed")
"""Jobs that (re)build what the pages draw: while one runs, pages show its progress instead of "nothing yet"."""


def active_pipeline(ws: Workspace) -> pd.Series | None:
    """The oldest queued or running pipeline-building job (a row of ``jobs``), or None."""
    from curation.runtime import jobs

    df = jobs.active_jobs(ws)
    df = df[df["kind"].isin(PIPELINE_KINDS)]
    return None if df.empty else df.sort_index().iloc[0]


def submit(ws: Workspace, kind: str, params: dict | None = None) -> int | None:
    """Queue a job for the workspace's warm worker; returns its id (None, with an error shown, when it cannot start).

    One pipeline at a time: while a ``pipeline`` job is queued or running, another is not queued (its id is
    returned and the user told so)."""
    from curation.runtime import jobs

    if kind == "pipeline":
        running = active_pipeline(ws)
        if running is not None and running["kind"] == "pipeline":
            st.toast(f"The pipeline is running already (job {int(running.name)}): its progress is shown here.")
            return int(running.name)
    with guard(f"starting the {kind} job"):
        job_id = jobs.submit(ws, kind, params or {})
        st.session_state.setdefault(state.K_SEEN_ACTIVE, set()).add(int(job_id))
        st.toast(f"Started {kind} job {job_id}")
        return job_id
    return None


def engine_choice(*, key: str = "engine_choice") -> dict:
    """When a Ray cluster is configured (``CURATION_RAY_ADDRESS``), a toggle to run the heavy stages on it;
    returns the job params it adds (``engine``, ``address``), empty for the local engine."""
    from curation.runtime.engines import ADDRESS_ENV, configured_address

    address = configured_address()
    if address is None:
        return {}
    on_ray = st.toggle("Run embedding, kNN and out-of-fold scoring on the Ray cluster", key=key,
                       help=f"The cluster is set by {ADDRESS_ENV}; the map, clusters and issue table stay here.")
    st.caption(f"Ray cluster: {md_escape(address)}")
    return {"engine": "ray", "address": address} if on_ray else {}


def _recent(ws: Workspace, kinds: Sequence[str] | None) -> pd.DataFrame:
    from curation.runtime import jobs

    df = jobs.refresh(ws)
    return df[df["kind"].isin(kinds)] if kinds else df


def _job_row(ws: Workspace, job_id: int, rec: pd.Series, *, key: str) -> None:
    from curation.runtime import jobs

    left, right = st.columns([5, 1])
    with left:
        st.progress(float(min(max(rec["progress"] or 0.0, 0.0), 1.0)),
                    text=f"Job {job_id} · {rec['kind']} · {rec['status']} — "
                         f"{plain(rec['message']) or ('waiting in the queue' if rec['status'] == 'queued' else '…')}")
    with right:
        if st.button("Cancel", key=f"{key}_cancel_{job_id}", disabled=rec["status"] == "cancelling"):
            with guard("cancelling"):
                jobs.cancel(ws, job_id)
                st.toast(f"Cancelling job {job_id}")


def _finished_row(ws: Workspace, job_id: int, rec: pd.Series, *, key: str) -> None:
    from curation.runtime import jobs

    when = time.strftime("%H:%M:%S", time.localtime(rec["finished"])) if rec["finished"] else ""
    line = f"{ICONS.get(rec['status'], '')} Job {job_id} · {rec['kind']} · {rec['status']} {when}"
    left, right = st.columns([5, 1])
    with left:
        st.write(line)
        if rec["status"] == "failed" and rec["error"]:
            st.error(plain(rec["error"]))
        elif rec["status"] == "interrupted":
            st.caption(plain(rec["message"]))
    with right:
        if rec["status"] in ("failed", "interrupted", "cancelled"):
            if st.button("Resume", key=f"{key}_resume_{job_id}"):
                with guard("resuming"):
                    new = jobs.resume(ws, job_id)
                    st.session_state.setdefault(state.K_SEEN_ACTIVE, set()).add(int(new))
                    st.rerun()


def jobs_panel(ws: Workspace, *, kinds: Sequence[str] | None = None, key: str = "jobs", n_finished: int = 3) -> None:
    """Running jobs (progress, message, Cancel) and the last finished ones, refreshed every second.

    When a job this session saw running finishes, the whole page reruns so new artifacts appear.
    """

    @st.fragment(run_every="1s")
    def panel() -> None:
        with guard("reading jobs"):
            df = _recent(ws, kinds)
            active = df[df["status"].isin(ACTIVE)]
            seen: set = st.session_state.setdefault(state.K_SEEN_ACTIVE, set())
            ended = {j for j in seen if j in df.index and df.loc[j, "status"] not in ACTIVE}
            seen.update(int(j) for j in active.index)
            if active.empty:
                st.caption("No job running.")
            for job_id, rec in active.iterrows():
                _job_row(ws, int(job_id), rec, key=key)
            for job_id, rec in df[~df["status"].isin(ACTIVE)].head(n_finished).iterrows():
                _finished_row(ws, int(job_id), rec, key=key)
            if ended:
                seen.difference_update(ended)
                st.rerun(scope="app")

    panel()


def require_embeddings(ws: Workspace, missing: str, *, run_key: str | None = None) -> Any:
    """The workspace's embeddings (``loaders.embeddings``); before the pipeline made them, :func:`stop_for_pipeline`."""
    emb = None
    with guard("loading the embeddings"):
        emb = loaders.embeddings(ws)
    if emb is None:
        stop_for_pipeline(ws, missing, run_key=run_key)
    return emb


def stop_for_pipeline(ws: Workspace, missing: str, *, run_key: str | None = None) -> NoReturn:
    """Say what the pipeline has not made yet (``missing``) and stop the page, offering a "Run pipeline" button
    and its jobs (widget keys ``run_key`` and ``{run_key}_jobs``), or without ``run_key`` a link to Home.

    While a pipeline job is queued or running, the page shows its progress instead (and no second "Run
    pipeline"); it fills in when the job ends."""
    running = active_pipeline(ws)
    if running is not None:
        st.info(f"The pipeline is running (job {int(running.name)}, {running['kind']}): this page fills in as soon as "
                "it has made what the page shows.", icon=":material/hourglass_top:")
        jobs_panel(ws, key=f"{run_key or 'pipeline'}_jobs")
        st.stop()
    st.info(plain(missing))
    if run_key:
        if st.button("Run pipeline", type="primary", key=run_key):
            submit(ws, "pipeline", {})
        jobs_panel(ws, key=f"{run_key}_jobs")
    else:
        st.page_link("app.py", label="Home", icon=":material/home:")
    st.stop()
