"""The project's words, defined once: label states, event sources, tasks, review queues and verdicts, job states.

Every layer imports these names from here; the store checks them on write (an unknown source, state, task,
queue or verdict is refused with the list of valid ones), so a typo can never reach the event log.
"""

from __future__ import annotations

# ---------------------------------------------------------------------- label states (one per (sample, class))
POSITIVE, UNKNOWN, REJECTED = 1, 0, -1
"""A class applies (positive), nobody said (unknown), or a person said it does not (rejected)."""
STATES = (POSITIVE, UNKNOWN, REJECTED)
STATE_NAMES = {POSITIVE: "positive", UNKNOWN: "unknown", REJECTED: "rejected"}

# ---------------------------------------------------------------------- tasks
TASKS = ("single", "multi")
"""single: exactly one positive class per labelled sample; multi: any number (unknown is not negative)."""

# ---------------------------------------------------------------------- label event sources (batches.source)
SOURCES = ("import", "human", "suggestion", "bulk", "undo", "review")

# ---------------------------------------------------------------------- suggestion sources (machine proposals)
SUGGESTION_SOURCES = ("knn", "prop", "zeroshot", "model", "oof")
"""kNN vote, label propagation, zero-shot text prompts, the latest trained model, out-of-fold heads."""

# ---------------------------------------------------------------------- review queues (reviews.queue)
REVIEW_QUEUES = {
    "confirm": "Suggestions to confirm",
    "errors": "Likely label errors",
    "missing": "Missing labels",
    "duplicates": "Near-duplicates",
    "outliers": "Outliers",
}
"""The ranked queues of the Review page, in page order."""
QUEUES = {
    **REVIEW_QUEUES,
    "evaluate": "Model mistakes (Evaluate)",
    "evaluate_agreed": "Model and label agree (Evaluate)",
    "map": "Map and grid selections",
    "clusters": "Clusters",
}
"""Every place a review row can come from."""

# ---------------------------------------------------------------------- verdicts (reviews.verdict)
QUEUE_VERDICTS = {
    "accepted": "Accept",
    "corrected": "Correct",
    "both_valid": "Both valid",
    "rejected": "Reject",
    "ambiguous": "Ambiguous",
    "out_of_vocabulary": "Out of vocabulary",
    "label_right": "Label is right",
    "duplicate": "Same image",
    "skipped": "Skip",
}
"""Decisions on one item of a review queue (:func:`curation.labels.review.review_item`)."""
MISTAKE_VERDICTS = {
    "label_wrong": "Label wrong",
    "model_wrong": "Model wrong",
    "both_valid": "Both valid",
    "both_wrong": "Both wrong",
    "ambiguous": "Ambiguous",
}
"""Decisions on a model mistake (:func:`curation.labels.review.record_verdict`): who was wrong."""
BOOKKEEPING_VERDICTS = {
    "bulk_accepted": "Accepted in bulk",
    "reviewed": "Looked at, labels right",
    "undone": "Decision undone",
}
"""Rows written by bulk actions and undo: not a judgement of one item."""
VERDICTS = {**QUEUE_VERDICTS, **MISTAKE_VERDICTS, **BOOKKEEPING_VERDICTS}

# ---------------------------------------------------------------------- jobs
JOB_STATES = ("queued", "running", "cancelling", "done", "failed", "cancelled", "interrupted")
ACTIVE_JOB_STATES = ("queued", "running", "cancelling")
