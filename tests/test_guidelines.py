"""Guideline cards: typical examples, boundaries, confusions, worked verdicts, notes, escaped exports."""

from __future__ import annotations

import numpy as np
import pytest
from test_ui import CLASSES, embedded, workspace  # noqa: F401 (fixtures)

from curation.labels import guidelines as G

EVIL = "<script>alert(1)</script> **bold** [x](http://e.vil)"


def test_confusion_pairs_and_nearest_pairs():
    m = G.confusion_pairs(np.array([0, 0, 1, 2, -1]), np.array([1, 0, 0, 0, 1]), 3)
    assert m.tolist() == [[0, 1, 0], [1, 0, 0], [1, 0, 0]]
    a = np.array([[1, 0], [0, 1]], np.float32)
    b = np.array([[0.8, 0.6], [0.0, 1.0]], np.float32)
    ra, rb, s = G.nearest_pairs(a, b, n=2)
    assert ra.tolist() == [1, 0] and rb.tolist() == [1, 0] and s[0] == pytest.approx(1.0)


def test_cards_notes_and_worked_examples(embedded):  # noqa: F811
    from curation.features.embed import load_embeddings

    ws = embedded
    emb = load_embeddings(ws)
    cid = ws.store.class_id("square")
    G.set_note(ws, cid, EVIL)
    assert G.get_note(ws, cid) == EVIL
    with pytest.raises(G.GuidelineError, match="No class"):
        G.set_note(ws, 999, "x")
    ids = ws.store.sample_ids()
    sq = ids[ws.store.label_matrix(ids)[:, CLASSES.index("square")] == 1]
    ws.store.add_reviews(sq[:2], queue="evaluate", verdict="ambiguous")
    ws.store.add_reviews(sq[2:3], queue="evaluate", verdict="model_wrong")
    guides = G.class_guides(ws, emb, n_typical=3, n_boundary=2)
    assert [g.name for g in guides] == CLASSES
    g = guides[1]
    assert g.note == EVIL and g.n_labelled == len(sq)
    assert len(g.typical) == 3 and set(g.typical.tolist()) <= set(sq.tolist())
    assert g.boundaries and all(len(b.ours) == 2 for b in g.boundaries)
    assert set(g.boundaries[0].ours.tolist()) <= set(sq.tolist())
    assert g.worked["verdict"].tolist() == ["ambiguous", "ambiguous", "model_wrong"]
    with pytest.raises(G.GuidelineError, match="Unknown class"):
        G.class_guides(ws, emb, classes=["nope"])


def test_exports_inline_images_and_escape_user_text(embedded, tmp_path):  # noqa: F811
    from curation.features.embed import load_embeddings

    ws = embedded
    emb = load_embeddings(ws)
    G.set_note(ws, ws.store.class_id("circle"), EVIL)
    guides = G.class_guides(ws, emb, n_typical=2, n_boundary=1)
    out = G.export_guidelines(ws, guides, tmp_path / "g.html")
    text = out.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert text.count("data:image/") >= 6 and "src=\"http" not in text
    with pytest.raises(G.GuidelineError, match="exists"):
        G.export_guidelines(ws, guides, out)
    folder = G.export_guidelines(ws, guides, tmp_path / "md", fmt="markdown")
    md = (folder / "README.md").read_text()
    assert "\\<script\\>" in md and "](http" not in md and "\\[x\\]" in md
    assert len(list((folder / "images").iterdir())) >= 6
    with pytest.raises(G.GuidelineError, match="format"):
        G.export_guidelines(ws, guides, tmp_path / "x", fmt="pdf")
