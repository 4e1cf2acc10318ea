"""Background rescoring: saved scores, their age in labels, the worker's refresh landing, debounced requests."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from curation.data.workspace import Workspace
from curation.features.imported import import_embeddings
from curation.runtime import jobs, rescore


@pytest.fixture
def scored(tmp_path: Path, blobs) -> tuple[Workspace, np.ndarray, np.ndarray]:
    """600 samples (blob vectors imported), 2 of every 3 labelled with their blob, scores saved once."""
    x, y = blobs
    ws = Workspace.create(tmp_path / "ws")
    recs = pd.DataFrame({"path": [f"s{i}.png" for i in range(len(x))], "sha1": [f"{i:040x}" for i in range(len(x))],
                         "bytes": 1, "width": 1, "height": 1})
    names = [f"c{k}" for k in range(6)]
    lab = [[names[k]] if i % 3 != 2 else [] for i, k in enumerate(y.tolist())]
    ids, _ = ws.store.add_samples(ws.store.root_id(tmp_path), recs, labels=lab)
    np.save(tmp_path / "v.npy", x)
    import_embeddings(ws, tmp_path / "v.npy")
    rescore.rescore(ws, debounce=0)
    return ws, ids, y


def test_saved_scores_and_their_age(scored) -> None:
    ws, ids, _ = scored
    meta = rescore.scores_meta(ws)
    assert meta is not None and meta["last_event"] == ws.store.last_event_id()
    frames = rescore.load_scores(ws)
    assert set(frames) == set(rescore.FRAMES)
    assert (frames["suggestions"].index.to_numpy() == ids).all()
    assert not rescore.needs_rescore(ws) and rescore.labels_behind(ws, meta) == 0
    unlabelled = ids[2::3][:7]
    ws.store.set_label(unlabelled, ws.store.class_id("c0"))
    assert rescore.needs_rescore(ws) and rescore.labels_behind(ws, meta) == 7
    assert rescore.labels_behind(ws, meta, cap=3) == 4  # "more than 3"
    again = rescore.rescore(ws, debounce=0)
    assert not again["skipped"] and again["last_event"] == ws.store.last_event_id()
    assert rescore.rescore(ws, debounce=0)["skipped"]  # current: nothing recomputed


def test_background_refresh_lands(scored) -> None:
    """A label change leaves the saved scores stale; the worker's rescore job replaces them with scores of the
    new labels (the suggestions' label column shows the new class)."""
    ws, ids, _ = scored
    old = rescore.scores_meta(ws)
    changed = ids[2::3][:5]
    c5 = ws.store.class_id("c5")
    ws.store.set_label(changed, c5)
    stale = rescore.load_scores(ws)["suggestions"]
    assert (stale.loc[changed, "label_idx"] == -1).all()  # the page still has the old scores
    job = jobs.submit(ws, rescore.KIND, {"debounce": 0.2})
    rec = jobs.wait(ws, job, timeout=300)
    assert rec["status"] == "done", rec
    meta = rescore.scores_meta(ws)
    assert meta["folder"] != old["folder"] and meta["last_event"] == ws.store.last_event_id()
    fresh = rescore.load_scores(ws)["suggestions"]
    assert (fresh.loc[changed, "label_idx"] == 5).all()
    assert rescore.pending_job(ws) is None and not rescore.needs_rescore(ws)


def test_requests_in_a_burst_share_one_queued_job(scored) -> None:
    from curation.ui import loaders

    ws, ids, _ = scored
    assert loaders.request_rescore(ws) is None  # scores current: nothing to do
    ws.store.set_label(ids[2::3][:3], ws.store.class_id("c1"))
    queued = ws.store.submit_job(rescore.KIND, {})  # a job waiting for the worker (none started here)
    ws.store.set_label(ids[2::3][3:6], ws.store.class_id("c2"))
    assert loaders.request_rescore(ws) == queued
    assert loaders.request_rescore(ws) == queued
    assert rescore.pending_job(ws)["id"] == queued
    assert (ws.store.jobs()["kind"] == rescore.KIND).sum() == 1


def test_a_failed_rescore_is_not_resubmitted_on_every_rerun(scored) -> None:
    from curation.ui import loaders

    ws, ids, _ = scored
    ws.store.set_label(ids[2::3][:3], ws.store.class_id("c1"))
    job = ws.store.submit_job(rescore.KIND, {})
    ws.store.update_job(job, status="failed", finished=time.time(), error="boom")
    assert rescore.failed_recently(ws)
    assert loaders.request_rescore(ws) is None
    assert (ws.store.jobs()["kind"] == rescore.KIND).sum() == 1
