"""Text towers: class prompts and their embeddings (cached), text search and image-similarity search."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

import numpy as np

from curation.data.artifacts import make_key
from curation.features.embed import TEXT_KIND, EmbeddingError, Embeddings
from curation.features.encoders import DEFAULT_ENCODER, Encoder, NoTextTower, get_encoder

if TYPE_CHECKING:  # pragma: no cover
    from curation.data.workspace import Workspace

log = logging.getLogger(__name__)

CLIP_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a low resolution photo of a {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a cropped photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a good photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a rendering of a {}.",
    "a drawing of a {}.",
    "itap of a {}.",
    "art of the {}.",
)
"""CLIP's zero-shot prompt ensemble (a subset of the 80 ImageNet templates, incl. the 7 "best")."""


# ---------------------------------------------------------------------- text
def _encoder_for(encoder: str | Encoder, device: str | None = None) -> Encoder:
    enc = encoder if isinstance(encoder, Encoder) else get_encoder(str(encoder), device=device)
    if not enc.has_text:
        enc.encode_text([])  # raises NoTextTower with the how-to
    return enc


def class_prompts(class_names: Sequence[str], *, templates: Sequence[str] | None = None,
                  prompts: Sequence[str | None] | None = None) -> list[list[str]]:
    """The texts of each class: its own prompt (one per line; ``{}`` → class name) when given, else every
    template filled with the class name."""
    templates = list(templates or CLIP_TEMPLATES)
    out = []
    for k, name in enumerate(class_names):
        own = (prompts[k] if prompts is not None and k < len(prompts) else None) or ""
        lines = [ln.strip() for ln in str(own).splitlines() if ln.strip()]
        if lines:
            out.append([ln.replace("{}", name) for ln in lines])
        else:
            out.append([t.replace("{}", name) for t in templates])
    return out


def text_embeddings(encoder: str | Encoder, class_names: Sequence[str], *, templates: Sequence[str] | None = None,
                    prompts: Sequence[str | None] | None = None, ws: "Workspace" = None) -> np.ndarray:
    """CLIP zero-shot class embeddings: per class, the mean of its L2-normalised prompt embeddings,
    renormalised.

    Parameters
    ----------
    encoder : an encoder with a text tower (or its name).
    class_names : K names.
    templates : prompt templates with ``{}`` for the name (default :data:`CLIP_TEMPLATES`).
    prompts : optional per-class override (e.g. ``Store.classes()["prompt"]``; empty = use templates).
    ws : when given, results are cached as artifact kind ``text_embeddings`` keyed by encoder and texts.

    Returns
    -------
    (K, D) float32, L2-normalised.
    """
    enc = _encoder_for(encoder)
    texts = class_prompts(class_names, templates=templates, prompts=prompts)
    key = make_key({"encoder": enc.id, "fingerprint": enc.fingerprint, "texts": texts})
    if ws is not None:
        hit = ws.artifacts.load_array(TEXT_KIND, key, mmap=False)
        if hit is not None:
            return np.asarray(hit, np.float32)
    if not texts:
        return np.zeros((0, enc.dim), np.float32)
    flat = [t for ts in texts for t in ts]
    starts = np.r_[0, np.cumsum([len(ts) for ts in texts])[:-1]]
    e = enc.encode_text(flat)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    m = np.add.reduceat(e, starts, axis=0) / np.array([len(ts) for ts in texts], np.float32)[:, None]
    out = (m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    if ws is not None:
        ws.artifacts.save_array(TEXT_KIND, key, out, config={"encoder": enc.id, "n_classes": len(texts),
                                                             "n_texts": len(flat)})
    return out


def class_text_embeddings(ws: "Workspace", encoder: str | Encoder | None = None, *,
                          templates: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Text embeddings of the workspace's classes (their prompts override the templates).

    Returns
    -------
    class_ids : (K,) int64, the classes by id (row k = column k of label matrices).
    vectors : (K, D) float32 L2-normalised.
    """
    classes = ws.store.classes()
    enc = encoder if encoder is not None else (ws.store.meta("encoder") or DEFAULT_ENCODER)
    vecs = text_embeddings(enc, classes["name"].tolist(), templates=templates,
                           prompts=classes["prompt"].tolist(), ws=ws)
    return classes.index.to_numpy(np.int64), vecs


# ---------------------------------------------------------------------- search
def _top_k(emb: Embeddings, q: np.ndarray, k: int, ws: "Workspace" = None) -> tuple[np.ndarray, np.ndarray]:
    """(Q, D) queries → (Q, k) row positions and cosine similarities, best first, on the embeddings' one
    faiss index (built once per process, see ``curation.features.neighbors.embedding_index``)."""
    from curation.features.neighbors import embedding_index, search

    return search(emb.vectors, q.astype(np.float32), k=k, index=embedding_index(ws, emb))


def search_text(ws: "Workspace", emb: Embeddings, query: str, *, k: int = 48,
                encoder: Encoder | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images best matching a text query.

    Returns
    -------
    ids : (k,) int64 sample ids, best first.
    scores : (k,) float32 cosine similarities.
    """
    if not emb.has_text:
        raise NoTextTower(f"Text search needs an encoder with a text tower; these embeddings come from "
                          f"{emb.encoder_name}. Embed with OpenCLIP (`--encoder {DEFAULT_ENCODER}` or "
                          "`openclip:ViT-B-32:/path/to/open_clip_pytorch_model.bin`).")
    enc = encoder or get_encoder(emb.encoder_name)
    if len(emb.ids) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    q = enc.encode_text([query])
    idx, sims = _top_k(emb, q, k, ws)
    return emb.ids[idx[0]], sims[0]


def similar_images(emb: Embeddings, sample_id: int | Sequence[int], *, k: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Images most similar to one sample (or to the mean of several), the query samples excluded.

    Returns
    -------
    ids : (≤k,) int64 sample ids, best first.
    scores : (≤k,) float32 cosine similarities.
    """
    qids = np.atleast_1d(np.asarray(sample_id, np.int64))
    rows = emb.rows(qids)
    if (rows < 0).any():
        raise EmbeddingError(f"Samples {qids[rows < 0][:5].tolist()} have no embedding (unreadable image or not "
                             "embedded yet): run the embedding step first.")
    q = np.asarray(emb.vectors[rows], np.float32).mean(0, keepdims=True)
    q /= max(float(np.linalg.norm(q)), 1e-12)
    idx, sims = _top_k(emb, q, min(k + len(qids), len(emb.ids)))
    ids, sims = emb.ids[idx[0]], sims[0]
    keep = ~np.isin(ids, qids)
    return ids[keep][:k], sims[keep][:k]
