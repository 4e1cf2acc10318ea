"""A demo workspace of real Fashion-MNIST images with known label noise (flips) and unlabelled images."""

from __future__ import annotations

import csv
import gzip
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curation.core.progress import ProgressFn, null_progress, sub_progress
from curation.core.validate import check_choice
from curation.data.ingest import ingest
from curation.data.store import StoreError
from curation.data.workspace import DB_NAME, Workspace

log = logging.getLogger(__name__)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
FASHION_CONFUSABLE: dict[str, tuple[str, ...]] = {
    "T-shirt/top": ("Shirt", "Pullover", "Dress"),
    "Trouser": ("Dress",),
    "Pullover": ("Coat", "Shirt", "T-shirt/top"),
    "Dress": ("Coat", "Shirt", "T-shirt/top"),
    "Coat": ("Pullover", "Shirt", "Dress"),
    "Sandal": ("Sneaker", "Ankle boot"),
    "Shirt": ("T-shirt/top", "Pullover", "Coat"),
    "Sneaker": ("Sandal", "Ankle boot"),
    "Bag": ("Shirt", "T-shirt/top"),
    "Ankle boot": ("Sneaker", "Sandal"),
}
DIGIT_CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_CONFUSABLE: dict[str, tuple[str, ...]] = {
    "zero": ("six", "eight"), "one": ("seven", "four"), "two": ("seven", "three"), "three": ("eight", "five"),
    "four": ("nine", "one"), "five": ("six", "three"), "six": ("five", "zero"), "seven": ("one", "two"),
    "eight": ("three", "nine"), "nine": ("four", "eight"),
}
INSTALL_HINT = "apt-get install dataset-fashion-mnist"
TRUTH_KIND, TRUTH_KEY = "demo", "truth"


class DemoUnavailable(StoreError):
    """The demo's data set is not installed; the message says which command installs it."""


# ---------------------------------------------------------------------- data sources
def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format).

    Returns
    -------
    (N,) uint8 labels for IDX1 files, (N, H, W) uint8 images for IDX3 files.
    """
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DemoUnavailable(f"{path} is not an unsigned-byte IDX file; reinstall it with `{INSTALL_HINT}`.")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DemoUnavailable(f"{path} is truncated; reinstall it with `{INSTALL_HINT}`.")
    return arr.reshape(dims)


def fashion_available(folder: Path = FASHION_DIR) -> bool:
    """Whether the Debian Fashion-MNIST training files are installed."""
    return all((folder / f).is_file() for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"))


def load_fashion(folder: Path = FASHION_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Real Fashion-MNIST training set: (60000, 28, 28) uint8 images and (60000,) uint8 labels in 0..9."""
    if not fashion_available(folder):
        raise DemoUnavailable(f"Fashion-MNIST is not installed in {folder}: run `{INSTALL_HINT}` "
                              "(or build the demo with source='digits').")
    return read_idx(folder / "train-images-idx3-ubyte.gz"), read_idx(folder / "train-labels-idx1-ubyte.gz")


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits, upscaled to (N, 32, 32) uint8, and (N,) labels in 0..9."""
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
    imgs = np.kron(imgs, np.ones((1, 4, 4), np.uint8))
    return imgs, d.target.astype(np.uint8)


def _example(confusable: dict[str, tuple[str, ...]]) -> str:
    pairs = [f"{a} -> {b[0]}" for a, b in list(confusable.items())[:3]]
    return "e.g. " + ", ".join(pairs)


# ---------------------------------------------------------------------- noise
def stratified_sample(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) indices into ``y``, as equal per class as the counts allow, sorted ascending."""
    classes = np.unique(y)
    n = min(n, len(y))
    base, extra = divmod(n, len(classes))
    picked = []
    for i, c in enumerate(classes):
        pool = np.flatnonzero(y == c)
        want = min(len(pool), base + (1 if i < extra else 0))
        picked.append(rng.choice(pool, size=want, replace=False))
    idx = np.concatenate(picked)
    if len(idx) < n:  # some class was short: fill from the rest
        rest = np.setdiff1d(np.arange(len(y)), idx)
        idx = np.concatenate([idx, rng.choice(rest, size=n - len(idx), replace=False)])
    return np.sort(idx)


def make_noise(y: np.ndarray, class_names: tuple[str, ...], confusable: dict[str, tuple[str, ...]], *,
               flip_rate: float, unlabelled_rate: float, seed: int) -> dict[str, np.ndarray]:
    """Choose unlabelled rows, flipped rows and the wrong labels given to them.

    Parameters
    ----------
    y : (N,) int true class indices.

    Returns
    -------
    dict with ``given`` (N,) int (-1 = unlabelled), ``unlabelled`` (N,) bool, ``flipped`` (N,) bool,
    ``confusable_flip`` (N,) bool (flip to a look-alike class rather than a uniform one), ``split`` (N,) str.
    """
    rng = np.random.default_rng(seed + 1)
    n = len(y)
    k = len(class_names)
    unl = np.zeros(n, bool)
    unl[rng.permutation(n)[: int(round(unlabelled_rate * n))]] = True
    labelled = np.flatnonzero(~unl)
    n_flip = int(round(flip_rate * len(labelled)))
    flip_rows = rng.permutation(labelled)[:n_flip]
    n_conf = n_flip // 2 + (n_flip % 2)
    given = y.astype(np.int64).copy()
    given[unl] = -1
    flipped = np.zeros(n, bool)
    conf = np.zeros(n, bool)
    index = {name: i for i, name in enumerate(class_names)}
    for j, r in enumerate(flip_rows):
        true = int(y[r])
        if j < n_conf:
            options = [index[c] for c in confusable[class_names[true]]]
            conf[r] = True
        else:
            options = [c for c in range(k) if c != true]
        given[r] = int(rng.choice(options))
        flipped[r] = True
    split = np.full(n, "val", dtype=object)
    split[rng.permutation(n)[: int(round(0.8 * n))]] = "train"
    split = split.astype(str)
    return {"given": given, "unlabelled": unl, "flipped": flipped, "confusable_flip": conf, "split": split}


# ---------------------------------------------------------------------- the demo
def build_demo(dest: Path | str, *, n: int = 3000, flip_rate: float = 0.08, unlabelled_rate: float = 0.3,
               seed: int = 0, source: str = "auto", progress: ProgressFn | None = None) -> Workspace:
    """Create (or open) a demo workspace of real images with known label noise.

    Parameters
    ----------
    dest : workspace folder. An existing demo workspace there is opened as is; a demo build that was
        interrupted is finished (the steps are deterministic and ingest is idempotent).
    n : images, stratified over the 10 classes.
    flip_rate : fraction of labelled images given a wrong label (half to a look-alike class, half uniform).
    unlabelled_rate : fraction of images without a label.
    seed : the same seed gives the same images, labels, flips and splits.
    source : "fashion-mnist" (Debian's dataset-fashion-mnist), "digits" (scikit-learn, always there) or
        "auto" (Fashion-MNIST when installed, else digits with a logged notice).
    progress : ``progress(fraction, message)``.

    Returns
    -------
    The workspace; the truth is saved as artifact kind "demo", key "truth" (see :func:`load_demo_truth`).

    Raises
    ------
    DemoUnavailable when ``source="fashion-mnist"`` and it is not installed (the message says how to).
    """
    progress = progress or null_progress
    if not (0 <= flip_rate <= 1 and 0 <= unlabelled_rate <= 1):
        raise ValueError("flip_rate and unlabelled_rate must lie in [0, 1].")
    if n < 10:
        raise ValueError("A demo needs at least 10 images (one per class).")
    dest = Path(dest).expanduser().resolve()
    if (dest / DB_NAME).exists():
        ws = Workspace.open(dest)
        truth = load_demo_truth(ws)
        if truth is not None:
            log.info("opening the existing demo workspace %s (%s, n=%s)", dest, truth.get("source"), truth.get("n"))
            progress(1.0, "demo workspace already built")
            return ws
        own = all(r.resolve().is_relative_to(ws.images.resolve()) for r in ws.store.roots().values())
        if len(ws.store.sample_ids(include_missing=True)) and not own:
            raise DemoUnavailable(f"{dest} is a workspace with images that is not a demo: choose an empty folder "
                                  "for the demo.")
    notice = None
    check_choice("demo source", source, ("auto", "fashion-mnist", "digits"))
    if source == "auto":
        source = "fashion-mnist" if fashion_available() else "digits"
        if source == "digits":
            notice = (f"Fashion-MNIST is not installed, so the demo uses scikit-learn's 8x8 digits; run "
                      f"`{INSTALL_HINT}` for the real-photo demo.")
            log.warning(notice)
    if source == "fashion-mnist":
        images, targets = load_fashion()
        class_names, confusable, dataset = FASHION_CLASSES, FASHION_CONFUSABLE, "fashion-mnist"
    else:
        images, targets = load_digits_images()
        class_names, confusable, dataset = DIGIT_CLASSES, DIGIT_CONFUSABLE, "digits"
    progress(0.02, f"sampling {n} {dataset} images")
    rng = np.random.default_rng(seed)
    idx = stratified_sample(targets, n, rng)
    y = targets[idx].astype(np.int64)
    noise = make_noise(y, class_names, confusable, flip_rate=flip_rate, unlabelled_rate=unlabelled_rate, seed=seed)

    ws = Workspace.create(dest, task="single")
    folder = ws.images / dataset
    folder.mkdir(parents=True, exist_ok=True)
    files = [f"{dataset}_{i:05d}.png" for i in idx]  # no class in the name: it would give the flips away
    write = sub_progress(progress, 0.05, 0.4)
    step = max(1, len(idx) // 50)
    for j, (i, name) in enumerate(zip(idx, files)):
        target = folder / name
        if not target.exists():
            Image.fromarray(images[i], "L").save(target, format="PNG", optimize=False)
        if j % step == 0:
            write(j / len(idx), f"writing images {j}/{len(idx)}")
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for name, g, s in zip(files, noise["given"], noise["split"]):
            w.writerow([name, class_names[g] if g >= 0 else "", s])
    ws.store.add_classes(list(class_names), [f"a photo of a {c}" for c in class_names])
    report = ingest(ws, manifest, progress=sub_progress(progress, 0.4, 0.95))
    if len(report.skipped):
        log.warning("demo ingest skipped %d files: %s", len(report.skipped), report.skipped.head())
    samples = ws.store.samples(include_missing=True)
    root_id = ws.store.root_id(folder)
    by_path = dict(zip(samples.loc[samples["root_id"] == root_id, "path"],
                       samples.index[samples["root_id"] == root_id]))
    ids = np.array([by_path[f] for f in files], np.int64)
    truth: dict[str, Any] = {
        "source": dataset,
        "n": int(len(ids)),
        "class_names": list(class_names),
        "sample_ids": ids.tolist(),
        "dataset_index": idx.astype(int).tolist(),
        "true_labels": [class_names[c] for c in y],
        "given_labels": [class_names[g] if g >= 0 else None for g in noise["given"]],
        "flipped_ids": ids[noise["flipped"]].tolist(),
        "confusable_flip_ids": ids[noise["confusable_flip"]].tolist(),
        "unlabelled_ids": ids[noise["unlabelled"]].tolist(),
        "noise": (f"{int(noise['flipped'].sum())} of {int((~noise['unlabelled']).sum())} labelled images "
                  f"({flip_rate:.0%}) carry a wrong label: half moved to a look-alike class "
                  f"({_example(confusable)}), half to a uniformly random other class; "
                  f"{int(noise['unlabelled'].sum())} images ({unlabelled_rate:.0%}) are unlabelled."),
        "notice": notice,
    }
    config = {"source": dataset, "n": n, "flip_rate": flip_rate, "unlabelled_rate": unlabelled_rate, "seed": seed}
    ws.artifacts.save_json(TRUTH_KIND, TRUTH_KEY, truth, config=config)
    ws.store.set_meta("demo", dataset)
    progress(1.0, f"demo ready: {len(ids)} {dataset} images")
    log.info("built demo workspace %s: %s", dest, truth["noise"])
    return ws


def load_demo_truth(ws: Workspace) -> dict[str, Any] | None:
    """The demo's ground truth, or None when the workspace is not a demo.

    Returns
    -------
    dict with ``source``, ``class_names``, ``sample_ids`` (N,), aligned ``true_labels`` / ``given_labels``
    (None = unlabelled) / ``dataset_index``, and id lists ``flipped_ids``, ``confusable_flip_ids``,
    ``unlabelled_ids``, plus a ``noise`` description and a ``notice`` (fallback data set) or None.
    """
    return ws.artifacts.load_json(TRUTH_KIND, TRUTH_KEY)
