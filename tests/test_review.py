"""Review decisions as engine functions: one transaction for labels and review rows; the store checks the words."""

from __future__ import annotations

import numpy as np
import pytest

from curation.core import vocab
from curation.core.vocab import POSITIVE, REJECTED, UNKNOWN
from curation.data import store as store_mod
from curation.data.store import Review, StoreError
from curation.data.workspace import Workspace
from curation.labels import review


@pytest.fixture
def workspace_factory(tmp_path):
    """Workspaces of either task with classes cat and dog: samples 0-2 labelled cat, sample 3 unlabelled."""
    import pandas as pd

    def make(task: str) -> Workspace:
        ws = Workspace.create(tmp_path / task, task=task)
        recs = pd.DataFrame({"path": [f"img{i}.png" for i in range(4)], "sha1": [f"{i:040d}" for i in range(4)],
                             "bytes": 10, "width": 8, "height": 8})
        ws.store.add_classes(["cat", "dog"])
        ws.store.add_samples(ws.store.root_id(tmp_path), recs, labels=[["cat"], ["cat"], ["cat"], []])
        return ws

    return make


def _cells(ws: Workspace, sid: int) -> dict[str, int]:
    names = ws.store.class_names()
    row = ws.store.label_matrix(np.array([sid], np.int64))[0]
    return {n: int(v) for n, v in zip(names, row) if v != UNKNOWN}


def test_store_refuses_unknown_words(workspace_factory) -> None:
    ws = workspace_factory("single")
    sid = int(ws.store.sample_ids()[0])
    with pytest.raises(ValueError, match="queue .*use one of"):
        ws.store.add_reviews([sid], queue="errorz", verdict="accepted")
    with pytest.raises(ValueError, match="verdict .*use one of"):
        ws.store.add_reviews([sid], queue="errors", verdict="acceptd")
    with pytest.raises(StoreError, match="source"):
        ws.store.apply([sid], [int(ws.store.classes().index[0])], POSITIVE, source="robot")
    with pytest.raises(ValueError, match="bulk action"):
        review.bulk_label(ws, np.array([sid]), "cat", "erase")
    assert ws.store.reviews().empty


def test_review_item_writes_labels_and_review_in_one_transaction(workspace_factory, monkeypatch) -> None:
    ws = workspace_factory("single")
    sid = int(ws.store.sample_ids()[0])
    before = ws.store.batches()
    labels_before = _cells(ws, sid)

    def boom(*a, **k):
        raise RuntimeError("disk went away between the label batch and its review")

    monkeypatch.setattr(store_mod, "_insert_reviews", boom)
    with pytest.raises(RuntimeError, match="disk went away"):
        review.review_item(ws, sid, "corrected", queue="errors", class_name="dog")
    monkeypatch.undo()
    assert len(ws.store.batches()) == len(before) and _cells(ws, sid) == labels_before  # rolled back together
    batch = review.review_item(ws, sid, "corrected", queue="errors", class_name="dog")
    rows = ws.store.reviews("errors")
    assert _cells(ws, sid) == {"dog": POSITIVE}
    assert rows["verdict"].tolist() == ["corrected"] and rows["batch_id"].tolist() == [batch]


def test_no_label_change_still_records_the_review(workspace_factory) -> None:
    ws = workspace_factory("single")
    sid = int(ws.store.sample_ids()[1])
    assert review.review_item(ws, sid, "label_right", queue="errors") is None
    assert ws.store.reviews("errors")["verdict"].tolist() == ["label_right"]


@pytest.mark.parametrize("verdict, single_after, multi_after", [
    ("label_wrong", {"dog": POSITIVE}, {"cat": REJECTED, "dog": POSITIVE}),
    ("both_wrong", {"cat": REJECTED}, {"cat": REJECTED, "dog": REJECTED}),
    ("both_valid", {"cat": POSITIVE}, {"cat": POSITIVE, "dog": POSITIVE}),
    ("model_wrong", {"cat": POSITIVE}, {"cat": POSITIVE, "dog": REJECTED}),
    ("ambiguous", {"cat": POSITIVE}, {"cat": POSITIVE}),
])
def test_mistake_verdicts(workspace_factory, verdict, single_after, multi_after) -> None:
    for task, after in (("single", single_after), ("multi", multi_after)):
        ws = workspace_factory(task)
        names = ws.store.class_names()
        sid = int(ws.store.sample_ids()[0])  # labelled "cat"; the model predicted "dog"
        review.record_verdict(ws, sid, verdict, predicted_idx=names.index("dog"), run_id=None,
                              true_idx=names.index("cat"))
        assert _cells(ws, sid) == after, (task, verdict)
        assert ws.store.reviews("evaluate")["verdict"].tolist() == [verdict]


def test_bulk_remove_is_a_no_and_clear_forgets(workspace_factory) -> None:
    ws = workspace_factory("multi")
    ids = ws.store.sample_ids()[:2]
    review.bulk_label(ws, ids, "cat", "remove")
    assert all(_cells(ws, int(s)).get("cat") == REJECTED for s in ids)
    review.bulk_label(ws, ids, "cat", "clear")
    assert all("cat" not in _cells(ws, int(s)) for s in ids)


def test_accept_suggestions_records_bulk_reviews_with_the_batch(workspace_factory) -> None:
    import pandas as pd

    ws = workspace_factory("single")
    sid = int(ws.store.sample_ids()[-1])  # unlabelled
    sugg = pd.DataFrame({"class_idx": [ws.store.class_names().index("dog")]}, index=[sid])
    batch = review.accept_suggestions(ws, np.array([sid]), sugg)
    rows = ws.store.reviews("confirm")
    assert _cells(ws, sid) == {"dog": POSITIVE}
    assert rows["verdict"].tolist() == ["bulk_accepted"] and rows["batch_id"].tolist() == [batch]


def test_review_rows_validate_on_construction() -> None:
    with pytest.raises(ValueError, match="use one of"):
        Review([1], queue="nowhere", verdict="accepted")
    assert set(vocab.REVIEW_QUEUES) <= set(vocab.QUEUES)
    assert set(vocab.MISTAKE_VERDICTS) <= set(vocab.VERDICTS)
