"""Label actions behind the buttons: the engine's decisions (:mod:`curation.labels.review`) plus UI-only ones.

Each writes exactly one store transaction (or none when nothing changes); the command line calls the same
engine functions.
"""

from __future__ import annotations

import numpy as np

from curation.core.vocab import MISTAKE_VERDICTS as VERDICTS
from curation.core.vocab import QUEUE_VERDICTS as REVIEW_VERDICTS
from curation.data.workspace import Workspace
from curation.labels.review import (
    BULK_ACTIONS,
    accept_suggestions,
    bulk_label,
    mark_reviewed,
    record_verdict,
    review_item,
    suggestions_to_accept,
)

__all__ = ["BULK_ACTIONS", "REVIEW_VERDICTS", "VERDICTS", "accept_suggestions", "bulk_label", "mark_reviewed",
           "pin_samples", "record_verdict", "review_item", "suggestions_to_accept"]


def pin_samples(ws: Workspace, ids: np.ndarray, *, pin: bool = True) -> int:
    """Add samples to (or remove them from) the must-not-fail slice every training run reports on.

    Returns
    -------
    The size of the slice afterwards.
    """
    from curation.data.pins import pin as add
    from curation.data.pins import unpin as remove

    return len((add if pin else remove)(ws, np.asarray(ids, np.int64)))


