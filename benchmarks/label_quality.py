"""Label-error detection and suggestion accuracy on real Fashion-MNIST images, against cleanlab.

cleanlab is a benchmark peer only (its AGPL licence keeps it out of the runtime dependencies). Install it
into a separate folder, which this script puts on ``sys.path``:

    .venv/bin/pip install --no-deps --target .bench-deps cleanlab termcolor
    apt-get install -y dataset-fashion-mnist            # the images
    .venv/bin/python -m benchmarks.label_quality        # --n 3000 --seed 1 --cache /tmp/fmnist-emb

Both rankings get the same EfficientNet-Lite0 embeddings and the same 5-fold logistic-regression
out-of-fold probabilities; ours may add the kNN graph over the embeddings.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CONFUSABLE = {0: [6, 3, 2], 6: [0, 2, 4], 2: [4, 6], 4: [2, 6], 3: [0, 4], 5: [7, 9], 7: [5, 9], 9: [7, 5],
              1: [3], 8: [2]}
"""Class-confusion noise: a wrong label is drawn among the visually close classes of the true one."""
RATES = (0.05, 0.10, 0.20)
log = logging.getLogger("benchmarks.label_quality")


def load_fashion(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random training images (n, 28, 28) uint8 and labels (n,) int64."""
    if not FASHION.exists():
        sys.exit(f"No Fashion-MNIST at {FASHION}: run `apt-get install -y dataset-fashion-mnist`.")
    with gzip.open(FASHION / "train-images-idx3-ubyte.gz") as f:
        X = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION / "train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    sel = np.sort(np.random.default_rng(seed).choice(len(X), n, replace=False))
    return X[sel], y[sel]


def embed(images: np.ndarray, cache: Path) -> tuple[np.ndarray, str]:
    """EfficientNet-Lite0 embeddings (cached to ``cache``), else PCA-64 of the pixels (said loudly)."""
    if cache.exists():
        return np.load(cache), "efficientnet-lite0 (cached)"
    try:
        try:
            from curation.embed import get_encoder  # type: ignore[attr-defined]
        except ImportError:
            from curation.encoders import get_encoder
        import torch
        from PIL import Image

        enc = get_encoder("efficientnet-lite0", device="cpu")
        out, t0 = [], time.time()
        for s in range(0, len(images), 64):
            batch = torch.stack([enc.preprocess(Image.fromarray(x).convert("RGB")) for x in images[s:s + 64]])
            out.append(enc.encode_images(batch))
            print(f"\rembedding {s + len(batch)}/{len(images)} ({time.time() - t0:.0f} s)", end="", flush=True)
        print()
        X = np.concatenate(out).astype(np.float32)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, X)
        return X, "efficientnet-lite0"
    except Exception as exc:  # noqa: BLE001 - any failure falls back, loudly
        print(f"!!! EfficientNet-Lite0 unavailable ({exc}); FALLING BACK TO PCA-64 OF PIXELS: numbers are not "
              "comparable with docs/quality.md !!!")
        from sklearn.decomposition import PCA

        X = PCA(64, random_state=0).fit_transform(images.reshape(len(images), -1) / 255.0).astype(np.float32)
        return X / np.linalg.norm(X, axis=1, keepdims=True), "pca-64 (fallback)"


def inject(y: np.ndarray, rate: float, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy labels and the error mask; ``kind`` is ``uniform`` or ``confusion``."""
    rng = np.random.default_rng(seed)
    m = int(round(rate * len(y)))
    sel = rng.choice(len(y), m, replace=False)
    yn = y.copy()
    if kind == "uniform":
        yn[sel] = (y[sel] + rng.integers(1, 10, m)) % 10
    else:
        choice = rng.random(m)
        yn[sel] = [CONFUSABLE[c][int(u * len(CONFUSABLE[c]))] for c, u in zip(y[sel], choice)]
    return yn, yn != y


def ranking_metrics(err: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """AP, AUROC, precision at m (m = injected errors), recall of a reviewer checking the lowest 1.5 m."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    m = int(err.sum())
    order = np.argsort(score, kind="stable")
    return {"AP": average_precision_score(err, -score), "AUROC": roc_auc_score(err, -score),
            "P@m": err[order[:m]].mean(), "R@1.5m": err[order[:int(1.5 * m)]].sum() / m}


def set_metrics(err: np.ndarray, flagged: np.ndarray) -> str:
    tp = (err & flagged).sum()
    return f"{flagged.sum():4d} flagged P={tp / max(flagged.sum(), 1):.2f} R={tp / max(err.sum(), 1):.2f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="images (default 3000)")
    ap.add_argument("--seed", type=int, default=1, help="noise seed base (the method was tuned on seed 0)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/curation-bench"), help="embedding cache folder")
    ap.add_argument("--skip-suggest", action="store_true", help="skip the suggestion-accuracy table")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.append(str(ROOT / ".bench-deps"))
    try:
        from cleanlab.filter import find_label_issues as cl_find
        from cleanlab.rank import get_label_quality_scores as cl_scores
    except ImportError:
        sys.exit("cleanlab not found: `.venv/bin/pip install --no-deps --target .bench-deps cleanlab termcolor`.")
    from curation.issues import find_label_issues, label_quality_scores
    from curation.neighbors import knn
    from curation.oof import DEFAULT_C, knn_oof_probs, out_of_fold_probs

    images, y = load_fashion(args.n, seed=0)
    X, source = embed(images, args.cache / f"fmnist-effnet-lite0-{args.n}-seed0.npy")
    print(f"Fashion-MNIST, {len(y)} train images (sample seed 0), embeddings: {source}, {X.shape[1]}-d; "
          f"OOF: 5-fold softmax regression C={DEFAULT_C}; kNN k=30")
    idx, sims = knn(X, k=30)
    header = f"{'noise':9s} {'rate':>4s} {'errs':>4s} | {'method':8s} {'AP':>6s} {'AUROC':>6s} {'P@m':>6s} {'R@1.5m':>6s} | find_label_issues"
    print(header)
    print("-" * len(header))
    for kind in ("uniform", "confusion"):
        for rate in RATES:
            seed = args.seed * 7 + int(rate * 100) + (1000 if kind == "confusion" else 0)
            yn, err = inject(y, rate, kind, seed)
            p = out_of_fold_probs(X, yn, n_classes=10)
            ours = label_quality_scores(yn, p, knn_idx=idx, knn_sims=sims)
            theirs = cl_scores(yn, p)
            ours_set = find_label_issues(yn, p, knn_idx=idx, knn_sims=sims).sort_index()["is_issue"].to_numpy()
            theirs_set = cl_find(yn, p)
            for name, s, flagged in (("ours", ours, ours_set), ("cleanlab", theirs, theirs_set)):
                mt = ranking_metrics(err, s)
                print(f"{kind:9s} {rate:4.2f} {err.sum():4d} | {name:8s} {mt['AP']:6.3f} {mt['AUROC']:6.3f} "
                      f"{mt['P@m']:6.3f} {mt['R@1.5m']:6.3f} | {set_metrics(err, flagged)}  (seed {seed})",
                      flush=True)
    if args.skip_suggest:
        return
    print("\nSuggestion accuracy on the unlabelled rest (clean labels; zero-shot is unavailable offline: "
          "EfficientNet-Lite0 has no text tower)")
    print(f"{'labels/class':>12s} {'kNN vote':>9s} {'OOF head':>9s} {'ensemble':>9s}")
    rng = np.random.default_rng(args.seed)
    for per in (1, 5, 10, 50, None):
        if per is None:
            given = y.copy()
            test = np.ones(len(y), bool)
        else:
            given = np.full(len(y), -1)
            for c in range(10):
                pick = rng.choice(np.flatnonzero(y == c), per, replace=False)
                given[pick] = c
            test = given < 0
        pk = knn_oof_probs(given, idx, sims, n_classes=10, temperature=0.05)
        ph = out_of_fold_probs(X, given, n_classes=10)
        pe = 0.5 * pk + 0.5 * ph
        acc = [(q.argmax(1) == y)[test].mean() for q in (pk, ph, pe)]
        print(f"{'all (OOF)' if per is None else per:>12} {acc[0]:9.3f} {acc[1]:9.3f} {acc[2]:9.3f}", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    main()
