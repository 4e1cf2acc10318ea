"""Training benchmark: heads on embeddings and image-tower fine-tuning (prints figures; not a test).

Measures:

* linear / MLP head training time and held-out accuracy on 10k / 50k / 100k synthetic-but-realistic
  embeddings: 512-d, 10 classes, each class a mixture of 3 Gaussian sub-clusters with per-class
  spread, L2-normalised (like CLIP vectors), 5 % of the training labels flipped;
* a learning curve (test accuracy vs labels per class: 1, 5, 10, 50, all) on real Fashion-MNIST:
  ``--effnet N`` embeds N training images with EfficientNet-Lite0 (cached; the helpers of
  ``benchmarks/label_quality.py``) and holds out the last third as the test set; otherwise pixels ->
  PCA 64-d (fitted on the training images) stands in for embeddings, or ``--embeddings FILE.npy``
  with 70,000 rows (60k train then 10k test, the IDX order) of real encoder features;
* fine-tune throughput (training images/s) of ``--ft-encoders`` on ``--ft-n`` real Fashion-MNIST
  images, with mixed precision off, and on CUDA also with it on (``amp="auto"``: bf16 or fp16);
* the "fix 100 labels -> retrain head -> re-evaluate" loop on a real workspace (relabel 100
  labelled samples, ``run_training``, ``compare_runs``, then undo the batch): ``--workspace DIR``, or
  ``--demo DIR``, which builds (once) and reuses the 3,000-image demo embedded with EfficientNet-Lite0.

Example::

    .venv/bin/python benchmarks/train.py
    .venv/bin/python benchmarks/train.py --skip sizes,finetune --effnet 3000 --demo workspaces/bench-demo-3000
    .venv/bin/python benchmarks/train.py --skip sizes,curve,loop --ft-n 256
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CURATION_OFFLINE", "1")

FASHION = Path("/usr/share/datasets/fashion-mnist")


def synthetic(n: int, *, d: int = 512, k: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float32 L2-normalised mixture-of-Gaussians embeddings and (n,) labels."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, 3, d))
    centers /= np.linalg.norm(centers, axis=2, keepdims=True)
    spread = rng.uniform(0.8, 1.4, k)
    y = rng.integers(0, k, n)
    sub = rng.integers(0, 3, n)
    x = centers[y, sub] + rng.normal(size=(n, d)) * (spread[y, None] / np.sqrt(d)) * 3.5
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), y


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_features(embeddings: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    ytr = read_idx(FASHION / "train-labels-idx1-ubyte.gz").astype(np.int64)
    yte = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    if embeddings:
        v = np.load(embeddings).astype(np.float32)
        return v[:60000], ytr, v[60000:70000], yte, f"embeddings {embeddings} ({v.shape[1]}-d)"
    xtr = read_idx(FASHION / "train-images-idx3-ubyte.gz").reshape(60000, -1).astype(np.float32) / 255
    xte = read_idx(FASHION / "t10k-images-idx3-ubyte.gz").reshape(10000, -1).astype(np.float32) / 255
    mu = xtr.mean(0)
    rng = np.random.default_rng(0)
    _, _, vt = np.linalg.svd(xtr[rng.choice(60000, 10000, replace=False)] - mu, full_matrices=False)
    p = vt[:64].T
    f = lambda x: ((x - mu) @ p).astype(np.float32)  # noqa: E731
    return f(xtr), ytr, f(xte), yte, "pixels -> PCA 64-d"


def bench_sizes(sizes: list[int], kinds: list[str]) -> None:
    from curation.models.heads import pick_device, train_head

    print(f"\n== head training on synthetic 512-d embeddings, 10 classes, 5% flipped labels "
          f"(device {pick_device()}, torch threads {__import__('torch').get_num_threads()}) ==")
    print(f"{'n train':>8} {'kind':>6} {'seconds':>8} {'epochs':>6} {'best':>5} {'test acc':>8}")
    train_head(*synthetic(200), config={"epochs": 2})  # warm torch
    for n in sizes:
        x, y = synthetic(n + 10000, seed=n)
        rng = np.random.default_rng(1)
        y_noisy = y.copy()
        flip = rng.random(len(y)) < 0.05
        y_noisy[flip] = rng.integers(0, 10, flip.sum())
        for kind in kinds:
            t = time.perf_counter()
            head = train_head(x[:n], y_noisy[:n], config={"kind": kind})
            dt = time.perf_counter() - t
            acc = float((head.predict_proba(x[n:]).argmax(1) == y[n:]).mean())
            print(f"{n:>8} {kind:>6} {dt:>8.2f} {len(head.curves_):>6} {head.best_epoch_:>5} {acc:>8.4f}", flush=True)


def effnet_features(n: int, cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """EfficientNet-Lite0 embeddings of ``n`` real Fashion-MNIST training images (cached): the first two
    thirds to learn from, the last third to test on."""
    from benchmarks.label_quality import embed, load_fashion

    images, y = load_fashion(n, seed=0)
    X, source = embed(images, cache / f"fmnist-effnet-lite0-{n}-seed0.npy")
    cut = 2 * n // 3
    return X[:cut], y[:cut], X[cut:], y[cut:], f"{source} embeddings ({X.shape[1]}-d) of {n} images"


def bench_learning_curve(embeddings: str | None, seeds: int, effnet: int, cache: Path) -> None:
    from curation.models.heads import train_head

    if not embeddings and not FASHION.exists():
        print("\n(skipping the learning curve: `apt-get install dataset-fashion-mnist`)")
        return
    xtr, ytr, xte, yte, what = effnet_features(effnet, cache) if effnet else fashion_features(embeddings)
    print(f"\n== learning curve on Fashion-MNIST ({what}), linear head, test = {len(yte):,} images ==")
    print(f"{'labels/class':>12} {'n labels':>8} {'seconds':>8} {'test acc (mean ± sd over seeds)':>34}")
    for per in (1, 5, 10, 50, 0):
        accs, secs = [], []
        for seed in range(seeds if per else 1):
            rng = np.random.default_rng(seed)
            if per:
                idx = np.concatenate([rng.choice(np.flatnonzero(ytr == c), per, replace=False) for c in range(10)])
                cfg = {"val_fraction": 0.0, "patience": 0, "epochs": 100, "batch_size": 0, "seed": seed}
            else:
                idx = np.arange(len(ytr))
                cfg = {"seed": seed}
            t = time.perf_counter()
            head = train_head(xtr[idx], ytr[idx], config=cfg, n_classes=10)
            secs.append(time.perf_counter() - t)
            accs.append(float((head.predict_proba(xte).argmax(1) == yte).mean()))
        label = str(per) if per else f"all (~{len(ytr) // 10})"
        print(f"{label:>12} {len(idx):>8} {np.mean(secs):>8.2f} "
              f"{np.mean(accs):>26.4f} ± {np.std(accs):.4f}", flush=True)


def fashion_workspace(root: Path, n: int) -> object:
    """A workspace of ``n`` real Fashion-MNIST images written as PNG files, all labelled (hash split)."""
    import pandas as pd
    from PIL import Image

    from benchmarks.label_quality import CLASSES, load_fashion
    from curation.data.workspace import Workspace

    images, y = load_fashion(n, seed=1)
    folder = root / "images"
    folder.mkdir(parents=True)
    rows = []
    for i, img in enumerate(images):
        path = folder / f"{i:05d}.png"
        Image.fromarray(img).save(path)
        rows.append({"path": path.name, "sha1": hashlib.sha1(path.read_bytes()).hexdigest(),
                     "bytes": path.stat().st_size, "width": 28, "height": 28})
    ws = Workspace.create(root / "ws")
    names = [c.replace("/", "-") for c in CLASSES]
    ws.store.add_classes(names)
    ws.store.add_samples(ws.store.root_id(folder), pd.DataFrame(rows), labels=[[names[k]] for k in y])
    return ws


def bench_finetune(encoders: list[str], n: int, epochs: int, unfreeze: int, batch_size: int) -> None:
    import torch

    from curation.models.finetune import run_finetune

    if not FASHION.exists():
        print("\n(skipping the fine-tune benchmark: `apt-get install dataset-fashion-mnist`)")
        return
    cuda = torch.cuda.is_available()
    amps = ["off", "auto"] if cuda else ["off"]
    print(f"\n== fine-tune throughput: {n} real Fashion-MNIST images (28 px, resized by each encoder), "
          f"{epochs} epoch(s), last {unfreeze} blocks + head, batch {batch_size}, device "
          f"{torch.cuda.get_device_name(0) if cuda else 'cpu'} ==")
    if not cuda:
        print("(no CUDA GPU here: mixed precision runs on CUDA only, so only the float32 rows are measured)")
    print(f"{'encoder':>28} {'amp':>9} {'train img/s':>11} {'run s':>7} {'val acc':>7} {'peak GPU MiB':>12}")
    with tempfile.TemporaryDirectory(prefix="curation-ft-bench-") as tmp:
        ws = fashion_workspace(Path(tmp), n)
        for enc in encoders:
            for amp in amps:
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                run_id = run_finetune(ws, {"encoder": enc, "epochs": epochs, "unfreeze_blocks": unfreeze,
                                           "amp": amp, "batch_size": batch_size, "patience": 0})
                run = ws.store.run(run_id)
                m = run["metrics"]
                peak = f"{torch.cuda.max_memory_allocated() / 2**20:.0f}" if cuda else "-"
                print(f"{enc:>28} {m['amp']:>9} {m['images_per_s']:>11.1f} {run['duration']:>7.1f} "
                      f"{m['accuracy']:>7.3f} {peak:>12}", flush=True)


def demo_workspace(path: str) -> str:
    """The 3,000-image demo embedded with EfficientNet-Lite0 at ``path``, built once and reused."""
    if not (Path(path) / "curation.db").exists():
        print(f"building the demo workspace at {path} (once; embeds 3,000 images)", flush=True)
        subprocess.run([sys.executable, "-m", "curation", "demo", path, "--n", "3000", "--pipeline", "--encoder",
                        "efficientnet-lite0"], check=True, cwd=ROOT)
    return path


def bench_loop(workspace: str | None, n_fix: int) -> None:
    if not workspace:
        print("\n(skipping the fix -> retrain -> re-evaluate loop: pass --workspace DIR of an embedded, "
              "labelled workspace, or --demo DIR)")
        return
    from curation.data.workspace import Workspace
    from curation.features.embed import load_embeddings
    from curation.models.runs import compare_runs, run_training

    ws = Workspace.open(workspace)
    if ws.store.task != "single":
        print("\n(skipping the loop: it relabels single-label samples; this workspace is multi-label)")
        return
    t = time.perf_counter()
    emb = load_embeddings(ws)
    if emb is None:
        print(f"\n(skipping the loop: embed first: `python -m curation embed {workspace}`)")
        return
    t_load = time.perf_counter() - t
    print(f"\n== fix {n_fix} labels -> retrain -> re-evaluate on {workspace} "
          f"({len(emb.ids):,} samples, {emb.vectors.shape[1]}-d, {len(ws.store.class_names())} classes) ==")
    print(f"load embeddings: {t_load:.2f} s")
    t = time.perf_counter()
    first = run_training(ws, {}, emb=emb)
    print(f"baseline run {first}: {time.perf_counter() - t:.2f} s")
    y = ws.store.single_labels(emb.ids)
    rng = np.random.default_rng(0)
    pick = rng.choice(np.flatnonzero(y >= 0), min(n_fix, int((y >= 0).sum())), replace=False)
    k = ws.store.classes().index.to_numpy()
    t0 = time.perf_counter()
    batches = []
    new = (y[pick] + 1) % len(k)
    for c in np.unique(new):     # one bulk edit per target class, as a lasso would do
        batches.append(ws.store.apply(emb.ids[pick[new == c]], [int(k[c])], 1, source="bulk"))
    t_fix = time.perf_counter() - t0
    t = time.perf_counter()
    second = run_training(ws, {}, emb=emb)
    t_train = time.perf_counter() - t
    t = time.perf_counter()
    cmp = compare_runs(ws, first, second)
    t_cmp = time.perf_counter() - t
    print(f"relabel {len(pick)} samples ({len(batches)} batches): {t_fix:.3f} s")
    print(f"retrain + evaluate + predict all (run {second}): {t_train:.2f} s "
          f"(of which training {ws.store.run(second)['metrics']['seconds_train']:.2f} s)")
    print(f"compare runs: {t_cmp:.3f} s ({len(cmp['relabelled_ids'])} relabelled, "
          f"{len(cmp['became_right'])} became right, {len(cmp['became_wrong'])} became wrong)")
    print(f"loop total: {t_fix + t_train + t_cmp:.2f} s")
    for b in reversed(batches):
        if b is not None:
            ws.store.undo(b, actor="benchmark")
    print("(labels restored with undo; the two runs stay in the run history)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,50000,100000")
    ap.add_argument("--kinds", default="linear,mlp")
    ap.add_argument("--embeddings", default=None, help="(70000, D) .npy of Fashion-MNIST features, IDX order")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--effnet", type=int, default=0, help="learning curve on N EfficientNet-Lite0-embedded images")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/curation-bench"), help="embedding cache folder")
    ap.add_argument("--ft-encoders", default="efficientnet-lite0,openclip:ViT-B-32:random")
    ap.add_argument("--ft-n", type=int, default=256, help="images of the fine-tune benchmark")
    ap.add_argument("--ft-epochs", type=int, default=1)
    ap.add_argument("--ft-unfreeze", type=int, default=2)
    ap.add_argument("--ft-batch", type=int, default=32)
    ap.add_argument("--workspace", default=None)
    ap.add_argument("--demo", default=None, help="build (once) the 3,000-image demo here and run the loop on it")
    ap.add_argument("--n-fix", type=int, default=100)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: sizes,curve,finetune,loop")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, cuda {torch.cuda.is_available()}")
    if "sizes" not in skip:
        bench_sizes([int(s) for s in a.sizes.split(",") if s], [k for k in a.kinds.split(",") if k])
    if "curve" not in skip:
        bench_learning_curve(a.embeddings, a.seeds, a.effnet, a.cache)
    if "finetune" not in skip:
        bench_finetune([e for e in a.ft_encoders.split(",") if e], a.ft_n, a.ft_epochs, a.ft_unfreeze, a.ft_batch)
    if "loop" not in skip:
        bench_loop(a.workspace or (demo_workspace(a.demo) if a.demo else None), a.n_fix)


if __name__ == "__main__":
    main()
