"""The review queue's session state: which samples were handled, and the batch each one wrote."""

from __future__ import annotations

import streamlit as st

from curation.workspace import Workspace

from curation.ui import state


def handled() -> list[int]:
    """Samples handled (accepted, corrected or skipped) in this session, oldest first."""
    return st.session_state.setdefault(state.K_REVIEW_DONE, [])


def mark(sample_id: int, batch_id: int | None) -> None:
    """Record that a sample was handled, with the label batch it wrote (None for Skip)."""
    handled().append(int(sample_id))
    st.session_state.setdefault(state.K_REVIEW_BATCHES, []).append(batch_id)
    state.remember_batch(batch_id)


def undo_last(ws: Workspace) -> int | None:
    """Put the last handled sample back at the front of the queue, undoing its batch; returns the sample."""
    done, batches = handled(), st.session_state.setdefault(state.K_REVIEW_BATCHES, [])
    if not done:
        return None
    sample_id, batch = done.pop(), batches.pop() if batches else None
    if batch is not None:
        ws.store.undo(int(batch))
    return sample_id
