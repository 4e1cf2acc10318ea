"""Class management (fixed colours, order, rename, merge as one undoable batch, delete only unused), tags as an
undoable annotation, and the shared filter with saved views."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from curation.data import classes, tags
from curation.data.store import POSITIVE, REJECTED, UNKNOWN, StoreError
from curation.data.workspace import Workspace
from curation.labels.filters import UNLABELLED, Filter, delete_view, mask, parse_ids, save_view, views


def _records(n: int) -> pd.DataFrame:
    return pd.DataFrame({"path": [f"img{i}.png" for i in range(n)], "sha1": [f"{i:040x}" for i in range(n)],
                         "bytes": 10, "width": 4, "height": 4})


@pytest.fixture
def filled(ws: Workspace) -> tuple[Workspace, np.ndarray]:
    ids, _ = ws.store.add_samples(ws.store.root_id(ws.root), _records(12),
                                  labels=[["Trouser"]] * 4 + [["Coat"]] * 4 + [[]] * 4)
    return ws, ids


def test_colours_are_fixed_and_survive_label_changes(filled) -> None:
    ws, ids = filled
    before = classes.colour_map(ws.store)
    assert len(set(before.values())) == 2 and all(c in classes.PALETTE for c in before.values())
    ws.store.set_label(ids[8:], ws.store.class_id("Coat"))  # Coat becomes the biggest class
    classes.create(ws.store, "Sneaker")
    after = classes.colour_map(ws.store)
    assert {k: after[k] for k in before} == before and after["Sneaker"] not in before.values()
    classes.set_colour(ws.store, "Sneaker", "#000000")
    assert classes.colour_map(ws.store)["Sneaker"] == "#000000"
    with pytest.raises(StoreError, match="#rrggbb"):
        classes.set_colour(ws.store, "Sneaker", "black")


def test_create_is_explicit_and_refuses_duplicates(filled) -> None:
    ws, _ = filled
    with pytest.raises(StoreError, match="exists already"):
        classes.create(ws.store, " Coat ")
    assert classes.name_problem(ws.store, "Coat") and classes.name_problem(ws.store, "  ")
    assert classes.name_problem(ws.store, "Trous") is None


def test_reorder_moves_number_keys_not_columns(filled) -> None:
    ws, ids = filled
    classes.create(ws.store, "Bag")
    m = ws.store.label_matrix(ids)
    classes.reorder(ws.store, ["Bag"])
    assert classes.display_order(ws.store) == ["Bag", "Coat", "Trouser"]
    s = classes.styles(ws.store)
    assert s.loc[s["name"] == "Bag", "key"].item() == "1"
    classes.move(ws.store, "Bag", +1)
    assert classes.display_order(ws.store)[1] == "Bag"
    assert (ws.store.label_matrix(ids) == m).all()  # columns stay ordered by id


def test_rename_keeps_labels_and_colour(filled) -> None:
    ws, ids = filled
    colour = classes.colour_map(ws.store)["Trouser"]
    classes.rename(ws.store, "Trouser", "Trousers")
    assert "Trousers" in ws.store.class_names() and classes.colour_map(ws.store)["Trousers"] == colour
    assert (ws.store.label_matrix(ids[:4])[:, ws.store.class_names().index("Trousers")] == POSITIVE).all()
    with pytest.raises(StoreError, match="merge"):
        classes.rename(ws.store, "Trousers", "Coat")


def test_delete_only_when_unused(filled) -> None:
    ws, ids = filled
    with pytest.raises(StoreError, match="merge it"):
        classes.delete(ws.store, "Coat")
    # the "Trous" story: a class created by mistake, used, undone, then deleted
    cid = classes.create(ws.store, "Trous")
    batch = ws.store.set_label(ids[:4], cid, source="bulk")
    ws.store.undo(batch)
    classes.delete(ws.store, "Trous")
    assert ws.store.class_names() == ["Coat", "Trouser"] and ws.store.label_matrix(ids).shape[1] == 2
    assert ws.store.check() == []
    new = classes.create(ws.store, "Bag")
    assert new > cid  # a new class never takes a removed class's id


def test_merge_is_one_undoable_batch(filled) -> None:
    ws, ids = filled
    ws.store.reject_label(ids[8:9], ws.store.class_id("Trouser"))
    ws.store.reject_label(ids[9:10], ws.store.class_id("Trouser"))
    colour = classes.colour_map(ws.store)["Trouser"]
    n_batches = len(ws.store.batches())
    batch = classes.merge(ws.store, "Trouser", "Coat")
    assert len(ws.store.batches()) == n_batches + 1 and ws.store.batches().iloc[0]["source"] == "bulk"
    assert ws.store.class_names() == ["Coat"]
    m = ws.store.label_matrix(ids)
    assert (m[:8, 0] == POSITIVE).all() and m[8, 0] == REJECTED and m[9, 0] == REJECTED
    assert (m[10:, 0] == UNKNOWN).all()
    assert ws.store.check() == []
    ws.store.undo(batch)  # the merged class comes back: id, name, colour, labels
    assert ws.store.class_names() == ["Coat", "Trouser"]
    assert classes.colour_map(ws.store)["Trouser"] == colour
    m = ws.store.label_matrix(ids)
    assert (m[:4, 1] == POSITIVE).all() and (m[4:8, 0] == POSITIVE).all() and m[8, 1] == REJECTED
    assert (m[:4, 0] == UNKNOWN).all() and ws.store.check() == []
    with pytest.raises(StoreError, match="different"):
        classes.merge(ws.store, "Coat", "Coat")


def test_usage_counts(filled) -> None:
    ws, _ = filled
    classes.create(ws.store, "Bag")
    u = classes.usage(ws.store).set_index("name")
    assert u.loc["Trouser", "positive"] == 4 and bool(u.loc["Bag", "deletable"]) and not u.loc["Coat", "deletable"]


def test_tags_are_undoable_and_not_labels(filled) -> None:
    ws, ids = filled
    m = ws.store.label_matrix(ids)
    b1 = tags.tag(ws.store, ids[:3], "blurry")
    assert tags.tagged(ws.store, "blurry").tolist() == ids[:3].tolist()
    assert tags.tag(ws.store, ids[:3], "blurry") is None  # nothing changes: no batch
    b2 = tags.tag(ws.store, ids[1:2], "blurry", on=False)
    assert tags.tagged(ws.store, ["blurry"]).tolist() == [ids[0], ids[2]]
    assert tags.tags_of(ws.store, ids[:3]).tolist() == ["blurry", "", "blurry"]
    tags.undo(ws.store, b1)  # ids[1] was changed later: it keeps its newer state
    assert tags.tagged(ws.store, "blurry").tolist() == []
    with pytest.raises(StoreError, match="undone already"):
        tags.undo(ws.store, b1)
    assert b2 is not None and (ws.store.label_matrix(ids) == m).all()
    assert tags.counts(ws.store)["blurry"] == 0 and len(tags.batches(ws.store)) == 3
    with pytest.raises(StoreError, match="visible"):
        tags.tag(ws.store, ids[:1], "a\nb")


def test_filter_mask_and_saved_views(filled) -> None:
    ws, ids = filled
    names = ws.store.class_names()
    m = ws.store.label_matrix(ids)
    sugg = pd.DataFrame({"class_name": ["Coat"] * 12, "confidence": np.linspace(0, 1, 12)}, index=ids)
    issues = pd.DataFrame({"is_label_issue": [True] + [False] * 11, "label_score": np.linspace(0, 1, 12),
                           "is_outlier_issue": [False] * 11 + [True], "outlier_score": np.ones(12)}, index=ids)
    assert mask(Filter(), ids).all()
    assert mask(Filter(labels=["Coat"]), ids, matrix=m, names=names).tolist() == [False] * 4 + [True] * 4 + [False] * 4
    assert mask(Filter(labels=[UNLABELLED]), ids, matrix=m, names=names).sum() == 4
    assert mask(Filter(confidence=(0.5, 1.0)), ids, sugg=sugg).sum() == 6
    assert mask(Filter(issue="label"), ids, issues=issues).tolist() == [True] + [False] * 11
    assert mask(Filter(issue="label_score", issue_max=0.2), ids, issues=issues).sum() == 3
    assert mask(Filter(issue="outlier"), ids, issues=issues).tolist() == [False] * 11 + [True]
    assert mask(Filter(issue="duplicate"), ids, issues=issues).sum() == 0  # no such column: nothing matches
    assert mask(Filter(reviewed="no"), ids, reviewed=ids[:2]).sum() == 10
    assert mask(Filter(tags=["x"]), ids, tagged=ids[5:7]).tolist() == [i in (5, 6) for i in range(12)]
    assert mask(Filter(ids=[int(ids[3])], labels=["Trouser"]), ids, matrix=m, names=names).sum() == 1
    assert mask(Filter(suggestions=["Coat"]), ids, sugg=None).sum() == 0
    with pytest.raises(ValueError, match="one of"):
        Filter(issue="bogus")
    assert parse_ids("12, 40 41\n#7 12") == [12, 40, 41, 7]
    flt = Filter(labels=["Coat"], confidence=(0.2, 0.9), tags=["blurry"])
    save_view(ws.store, "coats to check", flt)
    assert views(ws.store) == {"coats to check": flt}
    assert "label: Coat" in flt.describe() and Filter().describe() == "everything" and not Filter().active
    delete_view(ws.store, "coats to check")
    assert views(ws.store) == {}
