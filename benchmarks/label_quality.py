"""Label-error detection and suggestion accuracy on real Fashion-MNIST images, against cleanlab.

cleanlab is a benchmark peer only (its AGPL licence keeps it out of the runtime dependencies). Install it
into a separate folder, which this script puts on ``sys.path``:

    .venv/bin/pip install --no-deps --target .bench-deps cleanlab termcolor
    apt-get install -y dataset-fashion-mnist            # the images
    .venv/bin/python -m benchmarks.label_quality        # --n 3000 --seed 1 --cache /tmp/fmnist-emb

Both rankings get the same EfficientNet-Lite0 embeddings and the same 5-fold logistic-regression
out-of-fold probabilities; ours may add the kNN graph over the embeddings. Then the suggestion sources
(kNN vote, label propagation, a trained head, OOF heads) and their calibrated ensemble, run through the
workspace code path (``curation.labels.suggest.label_state``), against the number of labels per class, with the
ensemble's ECE before (plain mean of the sources) and after fitting; and a smoke run of the zero-shot path
with the tiny random OpenCLIP (the offline encoder has no text tower, so zero-shot gives no figure here).
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CONFUSABLE = {0: [6, 3, 2], 6: [0, 2, 4], 2: [4, 6], 4: [2, 6], 3: [0, 4], 5: [7, 9], 7: [5, 9], 9: [7, 5],
              1: [3], 8: [2]}
"""Class-confusion noise: a wrong label is drawn among the visually close classes of the true one."""
RATES = (0.05, 0.10, 0.20, 0.40)
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
            from curation.features.embed import get_encoder  # type: ignore[attr-defined]
        except ImportError:
            from curation.features.encoders import get_encoder
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


ONE_TO_ONE = {0: 6, 6: 0, 2: 4, 4: 2, 5: 7, 7: 5, 9: 7, 3: 0, 1: 3, 8: 2}
"""One-to-one confusion: every class flips to one fixed, visually close partner."""
ASYMMETRIC = {6: [0, 2, 4], 4: [2, 6], 2: [4]}
"""Asymmetric noise concentrated in a few classes: only Shirt, Coat and Pullover are ever mislabelled."""
KINDS = ("uniform", "confusion", "one_to_one", "asymmetric")


def inject(y: np.ndarray, rate: float, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy labels and the error mask. ``kind``: ``uniform`` (any other class), ``confusion`` (one of several
    look-alikes, :data:`CONFUSABLE`), ``one_to_one`` (:data:`ONE_TO_ONE`) or ``asymmetric`` (only the classes of
    :data:`ASYMMETRIC` are mislabelled; ``rate`` of all images, capped at 60 % of those classes)."""
    rng = np.random.default_rng(seed)
    m = int(round(rate * len(y)))
    pool = np.arange(len(y))
    if kind == "asymmetric":
        pool = np.flatnonzero(np.isin(y, list(ASYMMETRIC)))
        m = min(m, int(0.6 * len(pool)))
    sel = rng.choice(pool, m, replace=False)
    yn = y.copy()
    if kind == "uniform":
        yn[sel] = (y[sel] + rng.integers(1, 10, m)) % 10
    elif kind == "one_to_one":
        yn[sel] = [ONE_TO_ONE[c] for c in y[sel]]
    else:
        table = ASYMMETRIC if kind == "asymmetric" else CONFUSABLE
        choice = rng.random(m)
        yn[sel] = [table[c][int(u * len(table[c]))] for c, u in zip(y[sel], choice)]
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


def bench_workspace(root: Path, X: np.ndarray, labels: np.ndarray, *, has_text: bool = False,
                    encoder_name: str = "efficientnet-lite0") -> tuple[object, object]:
    """A workspace at ``root`` holding ``len(labels)`` samples with these labels (-1 = none) and embeddings ``X``."""
    import pandas as pd

    from curation.data.workspace import Workspace

    ws = Workspace.create(root)
    names = [c.replace("/", "-") for c in CLASSES]
    ws.store.add_classes(names)
    n = len(labels)
    rec = pd.DataFrame({"path": [f"img{i:05d}.png" for i in range(n)], "sha1": [f"{i:040x}" for i in range(n)],
                        "bytes": 1, "width": 28, "height": 28})
    ids, _ = ws.store.add_samples(ws.store.root_id(root), rec, labels=[[names[c]] if c >= 0 else [] for c in labels])
    emb = SimpleNamespace(ids=np.sort(np.asarray(ids, np.int64)), vectors=X, key=f"bench-{n}-{X.shape[1]}",
                          has_text=has_text, encoder_name=encoder_name)
    return ws, emb


def _boot_ap_diff(err: np.ndarray, a: np.ndarray, b: np.ndarray, n: int, seed: int) -> tuple[float, float]:
    """95 % bootstrap interval (resampling images) of AP(a) - AP(b)."""
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        i = rng.integers(0, len(err), len(err))
        if err[i].any():
            out.append(average_precision_score(err[i], -a[i]) - average_precision_score(err[i], -b[i]))
    return tuple(np.percentile(out, [2.5, 97.5]))


def label_errors(X: np.ndarray, y: np.ndarray, seed: int, *, kinds: tuple[str, ...] = KINDS,
                 rates: tuple[float, ...] = RATES, boot: int = 200, draw: str = "report") -> list[dict]:
    """Label-error ranking against every cleanlab scoring method, the error count against ``num_label_issues``.

    Rows: ours (``label_quality_scores``, ensemble), ours without the kNN graph, and cleanlab's
    ``get_label_quality_scores`` with self_confidence / normalized_margin / confidence_weighted_entropy, the first two
    also with ``adjust_pred_probs`` (cleanlab refuses it for the third), all on the same out-of-fold probabilities. Returns one dict per setting.
    """
    from cleanlab.count import num_label_issues
    from cleanlab.rank import get_label_quality_scores as cl_scores

    from curation.features.neighbors import knn
    from curation.labels.label_quality import estimate_error_count, label_quality_scores
    from curation.labels.oof import out_of_fold_probs

    idx, sims = knn(X, k=30)
    results = []
    print(f"\n[{draw} draw] {len(y)} images; AP of each ranking; 'Δ best' = ours - the best cleanlab method with its "
          "95 % bootstrap interval; R@1.5m = share of errors a reviewer finds checking 1.5 × the true count; "
          "count = estimated number of errors (ours: estimate_error_count; cleanlab: num_label_issues)")
    for kind in kinds:
        for rate in rates:
            nseed = seed * 7919 + int(rate * 100) + 1000 * KINDS.index(kind)
            yn, err = inject(y, rate, kind, nseed)
            p = out_of_fold_probs(X, yn, n_classes=10)
            rows = {"ours": label_quality_scores(yn, p, knn_idx=idx, knn_sims=sims),
                    "ours, no kNN": label_quality_scores(yn, p)}
            for m in ("self_confidence", "normalized_margin", "confidence_weighted_entropy"):
                for adj in (False, True) if m != "confidence_weighted_entropy" else (False,):
                    rows[f"cl {m}{' adj' if adj else ''}"] = cl_scores(yn, p, method=m, adjust_pred_probs=adj)
            mt = {k: ranking_metrics(err, v) for k, v in rows.items()}
            best = max((k for k in mt if k.startswith("cl ")), key=lambda k: mt[k]["AP"])
            lo, hi = _boot_ap_diff(err, rows["ours"], rows[best], boot, nseed)
            est = float(estimate_error_count(yn, p, knn_idx=idx, knn_sims=sims).sum())
            cl_n = int(num_label_issues(yn, p))
            true = int(err.sum())
            res = {"kind": kind, "rate": rate, "errors": true, "AP": {k: v["AP"] for k, v in mt.items()},
                   "R@1.5m": mt["ours"]["R@1.5m"], "best_cl": best, "delta": mt["ours"]["AP"] - mt[best]["AP"],
                   "ci": (lo, hi), "default_delta": mt["ours"]["AP"] - mt["cl self_confidence"]["AP"],
                   "count": est, "cl_count": cl_n}
            results.append(res)
            print(f"{kind:10s} {rate:4.2f} {true:4d} errs | ours {mt['ours']['AP']:.3f} no-kNN "
                  f"{mt['ours, no kNN']['AP']:.3f} | best cl {mt[best]['AP']:.3f} ({best[3:]}) default "
                  f"{mt['cl self_confidence']['AP']:.3f} | Δ best {res['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}] "
                  f"Δ default {res['default_delta']:+.3f} | R@1.5m {mt['ours']['R@1.5m']:.2f} "
                  f"(cl best {mt[best]['R@1.5m']:.2f}) | count ours {est:6.0f} ({100 * (est - true) / true:+4.0f} %) "
                  f"cl {cl_n:5d} ({100 * (cl_n - true) / true:+4.0f} %)", flush=True)
            print("      all: " + ", ".join(f"{k} {v['AP']:.3f}" for k, v in mt.items()), flush=True)
    return results


def _acc(p: np.ndarray, y: np.ndarray, rows: np.ndarray) -> str:
    """Accuracy on the rows where the source has a prediction, and that coverage."""
    ok = rows & np.isfinite(p).all(1) & (np.nan_to_num(p).sum(1) > 0)
    if not ok.any():
        return f"{'n/a':>13s}"
    return f"{(p[ok].argmax(1) == y[ok]).mean():6.3f} ({ok.sum() / rows.sum():4.0%})"


def suggestion_accuracy(X: np.ndarray, y: np.ndarray, seed: int, work: Path) -> None:
    """Accuracy of every source and of the ensemble against the number of labels per class; ECE before / after."""
    from curation.labels.calibrate import PooledEnsemble, ece
    from curation.labels.suggest import label_state
    from curation.models.runs import run_training

    print("\nSuggestion accuracy on the unlabelled rest (clean labels, sampled per class with seed "
          f"{seed}; 'all' = every sample labelled, each scored out-of-sample: the model on its 20 % validation "
          "split only). Zero-shot: n/a, EfficientNet-Lite0 has no text tower. (coverage in brackets)")
    cols = ["kNN vote", "propagation", "trained head", "OOF head", "ensemble"]
    print(f"{'labels/class':>12s} " + " ".join(f"{c:>13s}" for c in cols) + f" {'mean acc':>9s} {'ECE mean':>9s} "
          f"{'ECE pooled':>10s}")
    rng = np.random.default_rng(seed)
    for per in (1, 5, 10, 50, None):
        if per is None:
            given, rows = y.copy(), np.ones(len(y), bool)
        else:
            given = np.full(len(y), -1)
            for c in range(10):
                given[rng.choice(np.flatnonzero(y == c), per, replace=False)] = c
            rows = given < 0
        ws, emb = bench_workspace(work / f"suggest-{per}", X, given)
        run_training(ws, {"kind": "linear", "device": "cpu"}, emb=emb)
        st = label_state(ws, emb)
        src = st.sources
        pool = PooledEnsemble.from_dict(st.info["ensemble"])
        mean = PooledEnsemble.from_dict({**pool.to_dict(), "fitted": False}).predict_proba(src)
        has = rows & (st.probs.sum(1) > 0)
        nan = np.full(st.probs.shape, np.nan, np.float32)
        cells = [_acc(src.get(s, nan), y, rows) for s in ("knn", "prop", "model", "oof")] + [_acc(st.probs, y, rows)]
        print(f"{'all' if per is None else per:>12} " + " ".join(cells) +
              f" {(mean[has].argmax(1) == y[has]).mean():9.3f} {ece(mean[has], y[has]):9.3f} "
              f"{ece(st.probs[has], y[has]):10.3f}   weights "
              + ", ".join(f"{k} {v['weight']:.2f}" for k, v in st.info["sources"].items() if v["available"]),
              flush=True)


def zero_shot_smoke(images: np.ndarray, y: np.ndarray, work: Path) -> None:
    """The zero-shot path end to end with the tiny random OpenCLIP: a smoke check, not a figure."""
    import torch
    from PIL import Image

    from curation.features.encoders import get_encoder, register_tiny_openclip
    from curation.labels.suggest import label_state

    name = register_tiny_openclip()
    enc = get_encoder(name, device="cpu")
    sel = np.arange(300)
    batch = torch.stack([enc.preprocess(Image.fromarray(x).convert("RGB")) for x in images[sel]])
    V = enc.encode_images(batch).astype(np.float32)
    given = np.where(np.arange(len(sel)) % 10 == 0, y[sel], -1)
    ws, emb = bench_workspace(work / "zeroshot-smoke", V, given, has_text=True, encoder_name=name)
    st = label_state(ws, emb)
    zs = st.info["sources"]["zeroshot"]
    acc = (st.sources["zeroshot"].argmax(1) == y[sel]).mean() if "zeroshot" in st.sources else float("nan")
    print(f"\nZero-shot smoke (tiny random OpenCLIP, {len(sel)} images, {V.shape[1]}-d): available={zs['available']} "
          f"{zs['reason']} accuracy {acc:.3f} (random weights: chance is 0.100; not a figure), "
          f"ensemble weight {zs['weight']:.2f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="images (default 3000)")
    ap.add_argument("--seed", type=int, default=1, help="noise seed base of the report draw (tuning used seed 0)")
    ap.add_argument("--draw", choices=("report", "tune", "both"), default="report",
                    help="label errors on the report half of the images (default), the tuning half, or both: the "
                         "--n images are split in two disjoint halves; constants were tuned on the 'tune' half")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS), help="noise kinds")
    ap.add_argument("--rates", nargs="+", type=float, default=list(RATES), help="noise rates")
    ap.add_argument("--boot", type=int, default=200, help="bootstrap resamples for the intervals")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/curation-bench"), help="embedding cache folder")
    ap.add_argument("--skip-issues", action="store_true", help="skip the label-error table")
    ap.add_argument("--skip-suggest", action="store_true", help="skip the suggestion-accuracy table")
    ap.add_argument("--skip-zeroshot", action="store_true", help="skip the tiny-OpenCLIP zero-shot smoke check")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.append(str(ROOT / ".bench-deps"))
    if not args.skip_issues:
        try:
            import cleanlab  # noqa: F401
        except ImportError:
            sys.exit("cleanlab not found: `.venv/bin/pip install --no-deps --target .bench-deps cleanlab termcolor`.")
    from curation.labels.oof import DEFAULT_C

    images, y = load_fashion(args.n, seed=0)
    X, source = embed(images, args.cache / f"fmnist-effnet-lite0-{args.n}-seed0.npy")
    print(f"Fashion-MNIST, {len(y)} train images (sample seed 0), embeddings: {source}, {X.shape[1]}-d; "
          f"OOF: 5-fold softmax regression C={DEFAULT_C}; kNN k=30")
    t0 = time.time()
    if not args.skip_issues:
        half = np.random.default_rng(12345).permutation(len(y)) < len(y) // 2      # disjoint image halves
        draws = {"tune": (half, 0), "report": (~half, args.seed)}
        for name in (["tune", "report"] if args.draw == "both" else [args.draw]):
            rows, seed = draws[name]
            label_errors(X[rows], y[rows], seed, kinds=tuple(args.kinds), rates=tuple(args.rates), boot=args.boot,
                         draw=name)
    with tempfile.TemporaryDirectory(prefix="curation-bench-") as tmp:
        if not args.skip_suggest:
            suggestion_accuracy(X, y, args.seed, Path(tmp))
        if not args.skip_zeroshot:
            zero_shot_smoke(images, y, Path(tmp))
    print(f"\n{time.time() - t0:.0f} s after embedding; load: {os.getloadavg()[0]:.2f} (1-min average)")


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    main()
