"""The demo workspace: real Fashion-MNIST with known flips and unlabelled images, deterministic per seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import needs_fashion

from curation.core.vocab import POSITIVE
from curation.data import demo
from curation.data.demo import (
    FASHION_CLASSES,
    FASHION_CONFUSABLE,
    DemoUnavailable,
    build_demo,
    load_demo_truth,
    make_noise,
    read_idx,
    stratified_sample,
)
from curation.data.workspace import Workspace


@pytest.fixture(scope="module")
def fashion_demo(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    if not demo.fashion_available():
        pytest.skip("apt-get install dataset-fashion-mnist for real-image tests")
    return build_demo(tmp_path_factory.mktemp("demo") / "ws", n=200, seed=3)


@needs_fashion
def test_reads_real_fashion_mnist() -> None:
    x, y = demo.load_fashion()
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and set(np.unique(y)) == set(range(10))


@needs_fashion
def test_demo_workspace(fashion_demo: Workspace) -> None:
    ws = fashion_demo
    truth = load_demo_truth(ws)
    assert truth is not None and truth["source"] == "fashion-mnist"
    ids = np.array(truth["sample_ids"])
    assert len(ids) == 200 and sorted(ids.tolist()) == ws.store.sample_ids().tolist()
    assert ws.store.class_names() == list(FASHION_CLASSES)
    assert ws.store.classes()["prompt"].iloc[0] == "a photo of a T-shirt/top"
    assert pd.Series(truth["true_labels"]).value_counts().tolist() == [20] * 10  # stratified
    # flat folder of PNGs named after the true class + a manifest next to them
    folder = ws.images / "fashion-mnist"
    assert (folder / "manifest.csv").exists()
    assert len(list(folder.glob("*.png"))) == 200 and not [p for p in folder.iterdir() if p.is_dir()]
    # labels in the store are the given labels: flips where recorded, none for unlabelled
    names = np.array(ws.store.class_names(), dtype=object)
    m = ws.store.label_matrix(ids)
    given = [names[row == POSITIVE][0] if (row == POSITIVE).any() else None for row in m]
    assert given == truth["given_labels"]
    unl = set(truth["unlabelled_ids"])
    assert len(unl) == 60  # 30 %
    flipped = set(truth["flipped_ids"])
    assert len(flipped) == round(0.08 * 140) and not flipped & unl
    for sid, t, g in zip(ids, truth["true_labels"], truth["given_labels"]):
        assert (g is not None and g != t) == (sid in flipped)
    conf = set(truth["confusable_flip_ids"])
    assert conf <= flipped and len(conf) == (len(flipped) + 1) // 2
    for sid, t, g in zip(ids, truth["true_labels"], truth["given_labels"]):
        if sid in conf:
            assert g in FASHION_CONFUSABLE[t]
    splits = ws.store.samples()["split"].value_counts()
    assert splits["train"] == 160 and splits["val"] == 40
    assert "wrong label" in truth["noise"]


@needs_fashion
def test_demo_deterministic_and_idempotent(fashion_demo: Workspace, tmp_path: Path) -> None:
    again = build_demo(fashion_demo.root, n=200, seed=3)
    assert again.root == fashion_demo.root
    assert len(again.store.sample_ids()) == 200 and len(again.store.batches()) == 1
    other = build_demo(tmp_path / "w2", n=200, seed=3)
    a, b = load_demo_truth(fashion_demo), load_demo_truth(other)
    for k in ("dataset_index", "true_labels", "given_labels", "flipped_ids", "unlabelled_ids"):
        assert a[k] == b[k], k
    assert fashion_demo.fingerprint() == other.fingerprint()
    third = build_demo(tmp_path / "w3", n=200, seed=4)
    assert load_demo_truth(third)["dataset_index"] != a["dataset_index"]


def test_digits_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(demo, "FASHION_DIR", tmp_path / "absent")
    monkeypatch.setattr(demo, "fashion_available", lambda folder=None: False)
    with pytest.raises(DemoUnavailable, match="apt-get install dataset-fashion-mnist"):
        build_demo(tmp_path / "strict", n=50, source="fashion-mnist")
    with caplog.at_level("WARNING", logger="curation.data.demo"):
        ws = build_demo(tmp_path / "auto", n=100, seed=0)
    assert "apt-get install dataset-fashion-mnist" in caplog.text
    truth = load_demo_truth(ws)
    assert truth["source"] == "digits" and "apt-get install" in truth["notice"]
    assert len(ws.store.sample_ids()) == 100
    assert ws.store.samples()["width"].iloc[0] == 32


def test_not_a_demo_workspace(ws: Workspace, tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "imgs" / "a.png")
    from curation.data.ingest import ingest

    ingest(ws, tmp_path / "imgs")
    with pytest.raises(DemoUnavailable, match="not a demo"):
        build_demo(ws.root, n=20, source="digits")
    assert load_demo_truth(ws) is None


def test_noise_helpers() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 50)
    idx = stratified_sample(y, 95, rng)
    assert len(idx) == 95 and len(np.unique(idx)) == 95
    assert np.bincount(y[idx]).min() >= 9
    noise = make_noise(np.arange(100) % 10, FASHION_CLASSES, FASHION_CONFUSABLE, flip_rate=0.2,
                       unlabelled_rate=0.5, seed=1)
    assert noise["unlabelled"].sum() == 50 and noise["flipped"].sum() == 10
    assert (noise["given"][noise["unlabelled"]] == -1).all()


def test_read_idx_roundtrip(tmp_path: Path) -> None:
    import gzip

    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    head = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    with gzip.open(tmp_path / "x.gz", "wb") as f:
        f.write(head + arr.tobytes())
    assert (read_idx(tmp_path / "x.gz") == arr).all()
    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write(head + arr.tobytes()[:-1])
    with pytest.raises(DemoUnavailable, match="truncated"):
        read_idx(tmp_path / "bad.gz")


def test_interrupted_build_is_finished(tmp_path: Path) -> None:
    ws = build_demo(tmp_path / "d", n=30, source="digits", seed=1)
    ws.artifacts.delete("demo", "truth")  # as if the process died before saving the truth
    again = build_demo(tmp_path / "d", n=30, source="digits", seed=1)
    truth = load_demo_truth(again)
    assert truth is not None and len(again.store.sample_ids()) == 30 and len(again.store.batches()) == 1
