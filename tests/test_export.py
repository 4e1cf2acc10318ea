"""Exports: every manifest and folder format round-trips through ingest; cleanlab arrays; clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curation.core.vocab import POSITIVE
from curation.data.export import ExportError, export, label_table
from curation.data.ingest import ingest
from curation.data.workspace import Workspace


def _img(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(path)


def label_sets(ws: Workspace) -> dict[str, frozenset[str]]:
    """{sha1: positive class names} of the present samples (content identity survives renaming)."""
    s = ws.store.samples()
    names = np.array(ws.store.class_names(), dtype=object)
    m = ws.store.label_matrix(s.index.to_numpy())
    return {h: frozenset(names[row == POSITIVE]) if len(names) else frozenset() for h, row in zip(s["sha1"], m)}


@pytest.fixture
def single(tmp_path: Path) -> Workspace:
    """A single-label workspace with splits, unlabelled images, an edit, a rejection and a '/' class name."""
    root = tmp_path / "src"
    k = 0
    for split in ("train", "val"):
        for cls in ("cat", "dog", "T-shirt%2Ftop"):
            for i in range(3):
                _img(root / split / cls / f"{i}.png", k)
                k += 1
    _img(root / "train" / "loose.png", 99)
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, root)
    assert "T-shirt/top" in ws.store.class_names()
    s = ws.store.samples()
    first = int(s.index[s["path"] == "train/cat/0.png"][0])
    ws.store.set_label([first], ws.store.class_id("dog"))
    ws.store.reject_label([first], ws.store.class_id("cat"))
    return ws


@pytest.fixture
def multi(tmp_path: Path) -> Workspace:
    root = tmp_path / "msrc"
    rows = []
    for i in range(8):
        _img(root / f"{i}.png", 200 + i)
        rows.append({"path": f"{i}.png", "labels": ["a", "b|c"][: 1 + i % 2] if i < 6 else []})
    pd.DataFrame(rows).to_parquet(root / "m.parquet")
    ws = Workspace.create(tmp_path / "mws")
    r = ingest(ws, root / "m.parquet")
    assert r.task == "multi"
    return ws


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "hf", "imagefolder"])
def test_round_trip_single(single: Workspace, tmp_path: Path, fmt: str) -> None:
    dest = tmp_path / "out" / (f"labels.{fmt}" if fmt in ("csv", "jsonl", "parquet") else fmt)
    out = export(single, fmt, dest)
    assert out == dest.resolve() and out.exists()
    image_root = single.store.roots()[1] if fmt in ("csv", "jsonl", "parquet") else None
    fresh = Workspace.create(tmp_path / f"fresh-{fmt}")
    report = ingest(fresh, out, image_root=image_root)
    before, after = label_sets(single), label_sets(fresh)
    if fmt == "imagefolder":  # unlabelled images have no place in an ImageFolder tree
        before = {h: v for h, v in before.items() if v}
    assert after == before
    assert len(report.skipped) == 0
    if fmt != "hf":
        splits_before = dict(zip(single.store.samples()["sha1"], single.store.samples()["split"]))
        splits_after = dict(zip(fresh.store.samples()["sha1"], fresh.store.samples()["split"]))
        assert all(splits_after[h] == splits_before[h] for h in splits_after)


def test_manifest_paths_relative_under_dest(single: Workspace) -> None:
    root = single.store.roots()[1]
    out = export(single, "csv", root / "labels.csv")
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert not any(os.path.isabs(p) for p in df["path"])
    assert set(df.columns) == {"path", "labels", "rejected", "split", "sample_id", "sha1"}
    assert "cat" in set(df["rejected"])
    fresh = Workspace.create(root.parent / "fresh")
    ingest(fresh, out)  # no image_root needed
    assert label_sets(fresh) == label_sets(single)
    with pytest.raises(ExportError, match="exists"):
        export(single, "csv", out)
    export(single, "csv", out, overwrite=True, include_unlabelled=False)
    assert len(pd.read_csv(out)) == len(single.store.sample_ids()) - 1


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "hf"])
def test_round_trip_multi(multi: Workspace, tmp_path: Path, fmt: str) -> None:
    dest = tmp_path / "mout" / (f"labels.{fmt}" if fmt != "hf" else "hf")
    out = export(multi, fmt, dest)
    fresh = Workspace.create(tmp_path / f"mfresh-{fmt}")
    report = ingest(fresh, out, image_root=multi.store.roots()[1] if fmt != "hf" else None)
    assert label_sets(fresh) == label_sets(multi)
    assert report.task == "multi"
    if fmt == "csv":  # a class name with '|' forces JSON lists in the CSV
        assert pd.read_csv(out)["labels"].iloc[1] == '["a", "b|c"]'
    if fmt == "hf":
        first = json.loads((out / "train" / "metadata.jsonl").read_text().splitlines()[0])
        assert isinstance(first["labels"], list)


def test_imagefolder_refuses_multi_label(multi: Workspace, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="several labels.*csv, jsonl, parquet, hf"):
        export(multi, "imagefolder", tmp_path / "tree")


def test_folder_exports_link_modes(single: Workspace, tmp_path: Path) -> None:
    out = export(single, "hf", tmp_path / "hl", link="hardlink")
    files = [p for p in out.rglob("*.png")]
    assert files and all(p.stat().st_nlink >= 2 for p in files)
    out = export(single, "imagefolder", tmp_path / "sl", link="symlink")
    files = [p for p in out.rglob("*.png")]
    assert files and all(p.is_symlink() for p in files)
    assert {p.parent.name for p in files} == {"cat", "dog", "T-shirt%2Ftop"}
    assert {p.parent.parent.name for p in files} == {"train", "val"}
    with pytest.raises(ExportError, match="not empty"):
        export(single, "hf", tmp_path / "sl")
    export(single, "hf", tmp_path / "sl", overwrite=True)
    assert (tmp_path / "sl" / "train" / "metadata.jsonl").exists()


def test_refuses_bad_arguments(single: Workspace, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="Unknown export format"):
        export(single, "xml", tmp_path / "x")
    with pytest.raises(ExportError, match="Unknown link mode"):
        export(single, "hf", tmp_path / "x", link="move")
    root = single.store.roots()[1]
    with pytest.raises(ExportError, match="holds the workspace or its image folders"):
        export(single, "imagefolder", root, overwrite=True)
    assert any(root.rglob("*.png"))
    with pytest.raises(ExportError, match="is a folder"):
        export(single, "csv", tmp_path)


def test_cleanlab_needs_out_of_fold_probabilities(single: Workspace, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="out-of-fold"):
        export(single, "cleanlab", tmp_path / "cl.npz")
    ids = single.store.sample_ids()
    k = len(single.store.class_names())
    probs = np.random.default_rng(0).dirichlet(np.ones(k), size=len(ids)).astype(np.float32)
    with pytest.raises(ExportError, match="do not match"):
        export(single, "cleanlab", tmp_path / "cl.npz", pred_probs=(ids, probs[:, :2]))
    out = export(single, "cleanlab", tmp_path / "cl.npz", pred_probs=(ids, probs))
    with np.load(out, allow_pickle=False) as z:
        assert set(z.files) == {"labels", "pred_probs", "sample_ids", "class_names", "rejected"}
        table = label_table(single, include_unlabelled=False)
        assert z["sample_ids"].tolist() == table.index.tolist()  # the unlabelled image is left out
        assert z["pred_probs"].shape == (len(table), k)
        names = list(z["class_names"])
        assert [names[i] for i in z["labels"]] == [ls[0] for ls in table["labels"]]
        row = {int(s): i for i, s in enumerate(ids)}
        assert np.allclose(z["pred_probs"], probs[[row[int(s)] for s in z["sample_ids"]]])
        assert z["rejected"].sum() == 1


def test_cleanlab_multi(multi: Workspace, tmp_path: Path) -> None:
    ids = multi.store.sample_ids()
    k = len(multi.store.class_names())
    out = export(multi, "cleanlab", tmp_path / "ml", pred_probs=(ids, np.full((len(ids), k), 0.5, np.float32)))
    assert out.suffix == ".npz"
    with np.load(out) as z:
        assert z["label_matrix"].shape == (6, k) and z["label_matrix"].sum() == 9


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "hf"])
def test_round_trip_class_names_that_look_like_lists(tmp_path: Path, fmt: str) -> None:
    """Names with ``|`` or shaped like a JSON list come back as the same single labels."""
    root = tmp_path / "src"
    names = ["a|b", "[1]", "plain"]
    for i in range(6):
        _img(root / f"{i}.png", 300 + i)
    pd.DataFrame({"path": [f"{i}.png" for i in range(6)],
                  "label": [json.dumps([names[i % 3]]) for i in range(6)]}).to_csv(root / "m.csv", index=False)
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, root / "m.csv")
    assert sorted(ws.store.class_names()) == sorted(names) and ws.store.task == "single"
    dest = tmp_path / "out" / (f"labels.{fmt}" if fmt != "hf" else "hf")
    out = export(ws, fmt, dest)
    fresh = Workspace.create(tmp_path / "fresh")
    ingest(fresh, out, image_root=ws.store.roots()[1] if fmt != "hf" else None)
    assert label_sets(fresh) == label_sets(ws) and fresh.store.task == "single"


def test_drop_same_images_and_dated_default_destination(single: Workspace) -> None:
    """Images reviewed as "Same image" can be left out (their partner stays); an undo of the verdict brings them
    back; without a destination the export lands under WS/exports with a dated name and the format's suffix."""
    ids = single.store.sample_ids()
    single.store.add_reviews(ids[:2], queue="duplicates", verdict="duplicate")
    single.store.add_reviews(ids[1:2], queue="duplicates", verdict="undone")
    single.store.add_reviews(ids[2:3], queue="errors", verdict="duplicate")  # another queue: not a pair verdict
    out = export(single, "csv", drop_same_images=True)
    assert out.parent == (single.root / "exports").resolve() and out.name.startswith("csv-") and out.suffix == ".csv"
    written = set(pd.read_csv(out)["sample_id"])
    assert written == set(ids.tolist()) - {int(ids[0])}
    assert set(pd.read_csv(export(single, "csv", out.with_name("all.csv")))["sample_id"]) == set(ids.tolist())
    assert export(single, "csv") != export(single, "csv")  # two exports in one second get two names
    folder = export(single, "hf", drop_same_images=True)
    assert folder.is_dir() and folder.name.startswith("hf-") and (folder / "train" / "metadata.jsonl").exists()
