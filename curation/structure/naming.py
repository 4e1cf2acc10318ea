"""Cluster names: the vocabulary and class-name terms that best match each centroid (CLIP text tower)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from curation.data.workspace import Workspace

log = logging.getLogger(__name__)

VOCABULARY_FILE = Path(__file__).resolve().parent / "vocabulary.txt"
"""A few hundred common visual nouns and attributes, one per line (``#`` comments), shipped with the package."""
NAME_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a close-up photo of a {}.", "a low resolution photo of a {}.")
"""Prompts for vocabulary terms (class names keep their own prompts / the zero-shot templates)."""
NAMES_KIND = "cluster_names"
PROFILE_KIND = "cluster_profiles"
"""Artifact kind of a clustering's label-free profile (centroids, medoids, clusters); written by curation.structure.cluster."""
N_TERMS = 2
SEP = " · "


def vocabulary(path: Path = VOCABULARY_FILE) -> list[str]:
    """The naming vocabulary: non-empty, non-comment lines of ``path``, first occurrence kept."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"Naming vocabulary {path} is missing; restore curation/structure/vocabulary.txt "
                                "from the repository.")
    lines = (ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines())
    return list(dict.fromkeys(ln for ln in lines if ln and not ln.startswith("#")))


def term_names(centroids: np.ndarray, text_emb: np.ndarray, terms: Sequence[str], *, n_terms: int = N_TERMS,
               sep: str = SEP) -> list[str]:
    """For each centroid, its best-matching terms joined by ``sep`` (e.g. ``"sneaker · running shoe"``).

    A term's score for a cluster is its cosine similarity to the centroid minus its mean similarity
    to all centroids (with 3 or more clusters), so terms that fit every cluster ("clothing") lose to
    terms that single this one out. A term contained in an already chosen one (or containing it) is
    skipped, so the second term adds information.

    Parameters
    ----------
    centroids : (C, D) float32 cluster centroids (image space).
    text_emb : (T, D) float32 text embeddings of ``terms`` (same CLIP space), L2-normalised or not.
    terms : T candidate names.

    Returns
    -------
    list of C strings.
    """
    cents = np.asarray(centroids, np.float32)
    t = np.asarray(text_emb, np.float32)
    if len(cents) == 0 or len(terms) == 0:
        return [""] * len(cents)
    cn = cents / np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)
    tn = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    sims = cn @ tn.T
    if len(cents) >= 3:
        sims = sims - sims.mean(0, keepdims=True)
    ranked = np.argsort(-sims, axis=1, kind="stable")[:, : 4 * n_terms]
    out = []
    for row in ranked:  # a loop over clusters, over a handful of top terms each
        chosen: list[str] = []
        for j in row:
            term = str(terms[j])
            low = term.lower()
            if not any(low in c.lower() or c.lower() in low for c in chosen):
                chosen.append(term)
            if len(chosen) == n_terms:
                break
        out.append(sep.join(chosen))
    return out


def unique_names(base: Sequence[str], *, ids: Sequence[int] | None = None) -> list[str]:
    """Display names: blanks become ``"cluster <id>"`` (``"noise"`` for id -1), repeats get `` (2)``, `` (3)``.

    Parameters
    ----------
    base : one proposed name per cluster ("" or non-str = none).
    ids : the cluster ids (default 0..C-1).
    """
    ids = list(range(len(base))) if ids is None else [int(i) for i in ids]
    out, seen = [], {}
    for cid, name in zip(ids, base):
        name = name if isinstance(name, str) and name else ("noise" if cid == -1 else f"cluster {cid}")
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def candidate_terms(class_names: Sequence[str], vocab: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Class names first, then vocabulary terms that are not class names (case-insensitive).

    Returns
    -------
    terms : the candidates.
    from_vocab : (T,) int64, for each candidate its row in ``vocab`` (-1 for a class name).
    """
    classes = [str(c) for c in class_names]
    taken = {c.lower() for c in classes}
    extra = [(i, v) for i, v in enumerate(vocab) if v.lower() not in taken]
    return classes + [v for _, v in extra], np.array([-1] * len(classes) + [i for i, _ in extra], np.int64)


def _names_key(emb: Any, clusters_key: str, class_names: Sequence[str], vocab: Sequence[str]) -> tuple[str, dict]:
    from curation.data.artifacts import make_key

    config = {"clusters": clusters_key, "encoder": str(emb.encoder_id), "classes": list(map(str, class_names)),
              "vocabulary": hashlib.sha1("\n".join(vocab).encode()).hexdigest()[:16], "templates": NAME_TEMPLATES}
    return make_key(config), config


def load_names(ws: Workspace, emb: Any, clusters_key: str) -> list[str] | None:
    """Names stored by :func:`compute_names` for this clustering, the current class names and vocabulary."""
    key, _ = _names_key(emb, clusters_key, ws.store.class_names(), vocabulary())
    names = ws.artifacts.load_json(NAMES_KIND, key)
    return None if names is None else [str(n) for n in names]


def compute_names(ws: Workspace, emb: Any, clusters_key: str) -> list[str] | None:
    """Name each cluster of a stored clustering with the text tower (vocabulary + class names), cached.

    Text embeddings come from :func:`curation.features.text.text_embeddings` / ``class_text_embeddings`` with
    ``ws`` (artifact ``text_embeddings``, keyed by encoder and texts, i.e. by the vocabulary's
    content), and the names are stored as artifact ``cluster_names`` keyed by the clustering, the
    encoder, the class names and the vocabulary hash.

    Returns
    -------
    One name per entry of the clustering's ``clusters`` (noise gets ""), or None when the encoder's
    text tower cannot be loaded (names then fall back to majority labels).
    """
    class_names = ws.store.class_names()
    vocab = vocabulary()
    key, config = _names_key(emb, clusters_key, class_names, vocab)
    hit = ws.artifacts.load_json(NAMES_KIND, key)
    if hit is not None:
        return [str(n) for n in hit]
    from curation.features.encoders import get_encoder
    from curation.features.text import class_text_embeddings, text_embeddings
    try:
        enc = get_encoder(emb.encoder_name)
        vocab_emb = text_embeddings(enc, vocab, templates=NAME_TEMPLATES, ws=ws)
        class_emb = class_text_embeddings(ws, enc)[1]
    except Exception as exc:  # names are a convenience: any failure falls back to majority labels
        log.warning("cluster names from the text tower unavailable (%s); using majority labels", exc)
        return None
    terms, from_vocab = candidate_terms(class_names, vocab)
    text = np.concatenate([class_emb, vocab_emb[from_vocab[len(class_names):]]]).astype(np.float32)
    clusters = np.asarray(ws.artifacts.load_array(PROFILE_KIND, clusters_key, name="clusters", mmap=False))
    cents = np.asarray(ws.artifacts.load_array(PROFILE_KIND, clusters_key, name="centroids", mmap=False))
    named = term_names(cents, text, terms)
    names = ["" if c < 0 else named[int(c)] for c in clusters]
    ws.artifacts.save_json(NAMES_KIND, key, names, config=config)
    return names
