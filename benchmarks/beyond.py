"""Issue-19 measurements on real Fashion-MNIST EfficientNet-Lite0 features (cached by ``benchmarks.beyond_data``):
group contrast (planted differences found first / in the top 5), cluster-balanced subsets vs random ones
(linear-head accuracy, mean ± sd over seeds), encoder transferability (Spearman of each score with the
linear-probe accuracy).

    .venv/bin/python -m benchmarks.beyond_data --n 2500 --shifted 200 --random-init 600   # once, ~15 min here
    .venv/bin/python -m benchmarks.beyond [contrast|subsets|transfer|all] --n 2500 --shifted 200 --random-init 600
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.beyond_data import CACHE, TAPS, shift_brightness, shift_colour, to_rgb

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
WORDS = {  # ImageNet categories a person would accept as describing the class
    0: {"jersey", "sweatshirt", "brassiere", "maillot", "bulletproof vest", "cardigan", "apron"},
    1: {"jean", "pajama", "swimming trunks", "miniskirt", "sarong", "stretcher", "military uniform"},
    2: {"sweatshirt", "cardigan", "wool", "jersey", "poncho", "fur coat", "trench coat"},
    3: {"gown", "overskirt", "hoopskirt", "miniskirt", "sarong", "abaya", "kimono", "apron", "vestment", "maillot"},
    4: {"trench coat", "fur coat", "lab coat", "cardigan", "poncho", "cloak", "sweatshirt", "military uniform",
        "kimono", "abaya"},
    5: {"sandal", "clog", "Loafer", "running shoe", "shoe shop"},
    6: {"jersey", "cardigan", "sweatshirt", "suit", "lab coat", "military uniform", "bow tie", "Windsor tie"},
    7: {"running shoe", "Loafer", "clog", "sandal", "shoe shop", "cowboy boot"},
    8: {"purse", "mailbag", "backpack", "plastic bag", "wallet", "envelope", "sleeping bag", "pencil box", "binder",
        "handkerchief", "pillow"},
    9: {"cowboy boot", "clog", "Loafer", "running shoe", "sandal", "shoe shop", "knee pad"},
}
PAIRS = [(0, 6), (2, 4), (5, 7), (7, 9), (0, 3), (2, 6), (4, 6), (8, 2)]


def _load(n: int, shifted: int, random_init: int) -> dict:
    d = dict(np.load(CACHE / f"fmnist-{n}.npz"))
    sp = CACHE / f"fmnist-{n}-shifted-{shifted}.npz"
    if sp.exists():
        d.update({f"shift_{k}": v for k, v in np.load(sp).items()})
    rp = CACHE / f"fmnist-{n}-random-{random_init}.npz"
    if rp.exists():
        d["random_final"] = np.load(rp)["final"]
    return d


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _attr_scores(rgb: np.ndarray) -> np.ndarray:
    from curation.structure.contrast import _colour_stats

    return np.array([_colour_stats(a) for a in rgb], np.float64)


# ---------------------------------------------------------------------- 1. contrast
def bench_contrast(d: dict, shifted: int, seeds: int = 5) -> None:
    from curation.structure.contrast import LITE0_TYPICAL_NORM, auroc, imagenet_categories, imagenet_term_scores

    cats = imagenet_categories()
    norms = np.linalg.norm(d["final"], axis=1)
    print(f"raw EfficientNet-Lite0 feature norm on Fashion-MNIST: median {np.median(norms):.1f} "
          f"(5-95%: {np.percentile(norms, 5):.1f}-{np.percentile(norms, 95):.1f}); constant used "
          f"{LITE0_TYPICAL_NORM}")
    # the normalised cache vs the raw head: how often does the top-5 ImageNet class agree per image?
    W_logit_raw = d["final"] @ __import__("curation.structure.contrast", fromlist=["x"]).lite0_head()[0].T
    raw_top = np.argsort(-W_logit_raw, 1)[:, :1]
    unit_top = np.argsort(-imagenet_term_scores(_unit(d["final"])), 1)[:, :1]
    print(f"top-1 ImageNet class from normalised vectors x typical norm = from raw features: "
          f"{(raw_top == unit_top).mean():.3f} of images")
    images = d["images"]
    rgb = to_rgb(images)
    base_attr = _attr_scores(rgb)
    from curation.structure.contrast import COLOUR_ATTRIBUTES

    terms = [*COLOUR_ATTRIBUTES, *cats]
    luminance = ("brightness", "black level", "white level")
    for name, shift, true in (("brightness x1.6+20", shift_brightness, luminance),
                              ("orange tint", shift_colour, ("colourfulness",))):
        fa = _unit(d[f"shift_{'bright' if 'bright' in name else 'colour'}"])
        aa = _attr_scores(shift(rgb[:shifted]))
        ranks = []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            ia = rng.choice(shifted, shifted // 2, replace=False)
            ib = rng.choice(np.arange(shifted, len(images)), 4 * (shifted // 2), replace=False)
            s_attr = np.concatenate([aa[ia], base_attr[ib]])
            s_word = imagenet_term_scores(np.concatenate([fa[ia], _unit(d["final"][ib])]))
            a = np.r_[np.ones(len(ia), bool), np.zeros(len(ib), bool)]
            au = auroc(np.concatenate([s_attr, s_word], 1), a)
            order = np.argsort(-np.abs(2 * au - 1), kind="stable")
            ranks.append(int(np.flatnonzero(np.isin(np.array(terms)[order], true))[0]) + 1)
            if seed == 0:
                print(f"  {name}: top 5 = " + ", ".join(f"{terms[i]} ({au[i]:.2f})" for i in order[:5]))
        r = np.array(ranks)
        print(f"planted {name}: a true term {true} ranked first {np.mean(r == 1):.0%}, top-5 {np.mean(r <= 5):.0%} "
              f"of {seeds} draws ({len(ia)} shifted vs {len(ib)} plain images; 1,003 terms)")
    # class vs rest and confusable pairs, ImageNet words only
    for kind in ("logit", "prob"):
        _words(d, cats, kind)


def _words(d: dict, cats: list[str], kind: str) -> None:
    from curation.structure.contrast import auroc, imagenet_term_scores

    print(f"ImageNet words scored as {kind}:")
    X = _unit(d["final"])
    y = d["y"]
    S = imagenet_term_scores(X, kind=kind)
    hits1 = hits5 = 0
    rows = []
    for k in range(10):
        au = auroc(S, y == k)
        order = np.argsort(-au)  # words higher in the class
        top = [cats[i] for i in order[:5]]
        h1, h5 = top[0] in WORDS[k], any(t in WORDS[k] for t in top)
        hits1 += h1
        hits5 += h5
        rows.append(f"  {CLASSES[k]} vs rest: " + ", ".join(f"{cats[i]} {au[i]:.2f}" for i in order[:5]))
    print("\n".join(rows))
    print(f"class vs rest (10 classes): an acceptable ImageNet word ranked first for {hits1}/10, in the top 5 "
          f"for {hits5}/10")
    p1 = p5 = 0
    for a, b in PAIRS:
        m = (y == a) | (y == b)
        au = auroc(S[m], y[m] == a)
        order = np.argsort(-np.abs(2 * au - 1), kind="stable")

        def ok(i: int) -> bool:
            return (au[i] > 0.5 and cats[i] in WORDS[a] - WORDS[b]) or (au[i] < 0.5 and cats[i] in WORDS[b] - WORDS[a])
        p1 += ok(order[0])
        p5 += any(ok(i) for i in order[:5])
        print(f"  {CLASSES[a]} vs {CLASSES[b]}: " + ", ".join(
            f"{cats[i]} {'+' if au[i] > 0.5 else '-'}{abs(2 * au[i] - 1):.2f}" for i in order[:5]))
    print(f"confusable pairs ({len(PAIRS)}): a word of the right class (not shared) first for {p1}/{len(PAIRS)}, "
          f"top 5 for {p5}/{len(PAIRS)}")


# ---------------------------------------------------------------------- 2. subsets
def _probe(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=300).fit(xtr, ytr)
    return float((clf.predict(xte) == yte).mean())


def bench_subsets(d: dict, seeds: int = 5, test: int = 500, budgets: tuple[float, ...] = (0.05, 0.10, 0.20, 0.50),
                  balances: tuple[float, ...] = (0.0, 0.5, 1.0)) -> None:
    from sklearn.decomposition import PCA

    from curation.features.neighbors import knn
    from curation.labels.subsets import balanced_subset, random_subset

    X = _unit(d["final"])
    y = d["y"]
    pool, te = np.arange(len(X) - test), np.arange(len(X) - test, len(X))
    # the linear head trains on a standardised PCA-128 of the embeddings (fit on the pool, no labels): ten
    # times faster on the shared CPU; selection uses the full 1280-d vectors
    Z = PCA(128, random_state=0).fit(X[pool]).transform(X)
    Z = (Z / Z[pool].std(0)).astype(np.float32)
    idx, sims = knn(X[pool], k=10)
    dup = (sims[:, 0] >= 0.95).sum()
    print(f"pool {len(pool)}, test {len(te)}; {dup} pool images have a neighbour at cosine >= 0.95")
    full = _probe(Z[pool], y[pool], Z[te], y[te])
    print(f"linear head on the whole pool: {full:.3f}")
    print("| budget | random | clusters, proportional after one each (balance 0, default) | clusters, sqrt (balance 0.5) "
          "| clusters, even (balance 1) |")
    print("|---|---|---|---|---|")
    for frac in budgets:
        b = int(round(frac * len(pool)))
        res = {"random": [], "b0": [], "b0.5": [], "b1": []}
        for seed in range(seeds):
            r = random_subset(pool, b, seed=seed)
            res["random"].append(_probe(Z[r], y[r], Z[te], y[te]))
            for bal, name in ((0.0, "b0"), (0.5, "b0.5"), (1.0, "b1")):
                if bal not in balances or (frac >= 0.5 and bal == 1.0):
                    res[name].append(np.nan)  # measured before: 0.807 ± 0.015 (docs/beyond.md)
                    continue
                s = balanced_subset(X[pool], b, knn_idx=idx, knn_sims=sims, balance=bal, seed=seed)
                res[name].append(_probe(Z[pool][s.ids], y[pool][s.ids], Z[te], y[te]))
            print(f"  {frac:.0%} seed {seed}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in res.items()), flush=True)
        cells = [f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}" if np.isfinite(v).any() else "–" for v in res.values()]
        print(f"| {frac:.0%} ({b}) | " + " | ".join(cells) + " |")


# ---------------------------------------------------------------------- 3. transfer
def bench_transfer(d: dict, n: int = 600, sample: int = 200, seeds: int = 3) -> None:
    from scipy.stats import spearmanr
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from curation.models.transfer import knn_accuracy, linear_probe, logme

    y = d["y"][:n]
    pix = d["images"][:n].reshape(n, -1).astype(np.float32) / 255.0
    feats = {"lite0 final": d["final"][:n], **{f"lite0 block {t}": d[f"b{t}"][:n] for t in TAPS},
             "pixels 28x28": pix - pix.mean(1, keepdims=True),
             "pixels PCA-16": PCA(16, random_state=0).fit_transform(pix).astype(np.float32),
             "pixels 7x7": pix.reshape(n, 28, 28)[:, ::4, ::4].reshape(n, -1)}
    if "random_final" in d:
        feats["lite0 random weights"] = d["random_final"][:n]
    truth, scores = {}, {k: {} for k in ("logme", "knn", "linear")}
    secs = {}
    for name, f in feats.items():
        pipe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500))
        truth[name] = float(cross_val_score(pipe, f, y, cv=5).mean())
        vals = {k: [] for k in scores}
        t0 = time.perf_counter()
        for seed in range(seeds):
            rows = np.random.default_rng(seed).choice(n, sample, replace=False)
            vals["logme"].append(logme(f[rows], y[rows]))
            vals["knn"].append(knn_accuracy(f[rows], y[rows]))
            vals["linear"].append(linear_probe(f[rows], y[rows], seed=seed))
        secs[name] = (time.perf_counter() - t0) / seeds
        for k in scores:
            scores[k][name] = float(np.mean(vals[k]))
    print(f"| feature set | dim | probe acc. ({n} images, 5-fold) | LogME | kNN | linear ({sample}) | s |")
    print("|---|---|---|---|---|---|---|")
    for name in sorted(truth, key=truth.get, reverse=True):
        print(f"| {name} | {feats[name].shape[1]} | {truth[name]:.3f} | {scores['logme'][name]:.3f} | "
              f"{scores['knn'][name]:.3f} | {scores['linear'][name]:.3f} | {secs[name]:.2f} |")
    names = list(truth)
    for k in scores:
        rho = spearmanr([scores[k][m] for m in names], [truth[m] for m in names]).statistic
        best = max(names, key=lambda m: scores[k][m])
        print(f"Spearman({k}, probe accuracy) = {rho:.2f} over {len(names)} feature sets; picks '{best}' "
              f"(truth's best: '{max(names, key=truth.get)}')")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="all", choices=("contrast", "subsets", "transfer", "all"))
    ap.add_argument("--n", type=int, default=2500)
    ap.add_argument("--shifted", type=int, default=200)
    ap.add_argument("--random-init", type=int, default=600)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.05, 0.10, 0.20, 0.50])
    ap.add_argument("--balances", type=float, nargs="+", default=[0.0, 0.5, 1.0], help="subset balance settings")
    a = ap.parse_args(argv)
    d = _load(a.n, a.shifted, a.random_init)
    if a.what in ("contrast", "all"):
        bench_contrast(d, a.shifted, seeds=a.seeds)
    if a.what in ("subsets", "all"):
        bench_subsets(d, seeds=a.seeds, budgets=tuple(a.budgets), balances=tuple(a.balances))
    if a.what in ("transfer", "all"):
        bench_transfer(d, n=min(a.random_init or 600, len(d["y"])))


if __name__ == "__main__":
    main()
