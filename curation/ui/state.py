"""Session-state keys and the workspace path the app was started with."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Mapping, Sequence

import streamlit as st

WORKSPACE_ENV = "CURATION_WORKSPACE"
DEFAULT_WORKSPACE = "./demo-workspace"

# session-state keys, one place so pages and tests agree on them
K_WORKSPACE = "workspace_path"  # str: a path chosen in the app, overriding the command line
K_MAP_CHART = "map_chart"  # the plotly_chart selection state of the Map page
K_LAST_BATCH = "last_batch"  # int: the newest label batch written from this session (for Undo)
K_REVIEW_DONE = "review_done"  # list[int]: samples handled in the review queue, in order
K_REVIEW_BATCHES = "review_batches"  # list[(int | None, str)]: the batch each handled sample wrote, and its queue
K_REVIEW_FRONT = "review_front"  # int: a sample put back by Undo, shown first while it is in the queue
K_LAST_TAG_BATCH = "last_tag_batch"  # int: the newest tag batch written from this session
K_LAST_KIND = "last_kind"  # "label" | "tag": which of the two the newest undoable action was
K_FILTER = "shared_filter"  # dict: the filter bar's filter (curation.labels.filters.Filter.to_dict), on every page
K_GRID = "grid_set"  # dict: the images the Grid page shows ({"ids": [...], "source": "..."})
K_SEEN_ACTIVE = "seen_active_jobs"  # set[int]: jobs this session saw running (to refresh when they end)


def launch_workspace() -> Path:
    """The workspace the app was started with (command line, else environment, else the default)."""
    import sys

    return Path(parse_workspace_arg(sys.argv[1:], os.environ)).expanduser().resolve()


def allowed_roots() -> list[Path]:
    """The folders this app may open, read and export to (see :func:`curation.ui.confine.parse_roots`)."""
    import sys

    from curation.ui.confine import parse_roots

    return parse_roots(sys.argv[1:], os.environ, launch_workspace())


def confine(path: Path | str, *, what: str) -> Path:
    """``path`` resolved, or :class:`~curation.ui.confine.PathRefused` when outside :func:`allowed_roots`."""
    from curation.ui.confine import confine as _confine

    return _confine(path, allowed_roots(), what=what)


def check_host() -> None:
    """Stop the page when the browser reached the server under a host name it was not started for (the
    opening a DNS-rebinding page needs); ``server.allowedHosts`` lists more names (the websocket checks it too)."""
    from streamlit import config

    from curation.ui.confine import host_allowed

    try:
        host = st.context.headers.get("Host")
    except Exception:  # noqa: BLE001 - no request (AppTest, bare mode): nothing to check
        return
    if host is None:
        return
    listed = [h for h in (config.get_option("server.allowedHosts") or [])]
    if not host_allowed(host, listed):
        st.error("This server does not answer for that host name. Open it at http://localhost or "
                 "http://127.0.0.1, or list the name in `server.allowedHosts`.")
        st.stop()


def parse_workspace_arg(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """The workspace path from ``-- --workspace DIR``, else ``$CURATION_WORKSPACE``, else the default.

    Unknown arguments are ignored, so the parser also works under pytest's ``sys.argv``.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workspace", default=None)
    args, _ = parser.parse_known_args(list(argv))
    return args.workspace or env.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE


def workspace_path() -> Path:
    """The workspace this session works on: the one chosen in the app, else the one it was started with."""
    import sys

    chosen = st.session_state.get(K_WORKSPACE)
    raw = chosen or parse_workspace_arg(sys.argv[1:], os.environ)
    return Path(raw).expanduser().resolve()


def remember_batch(batch_id: int | None) -> None:
    """Remember the newest batch written by this session (the target of "Undo last")."""
    if batch_id is not None:
        st.session_state[K_LAST_BATCH] = int(batch_id)
        st.session_state[K_LAST_KIND] = "label"
