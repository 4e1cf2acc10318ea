"""Every export read by the real client (``datasets``, ``torchvision``, FiftyOne's and COCO's schemas), inputs
written by the real libraries ingested, and round trips: export -> fresh workspace -> same labels, splits, rejections."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="hf-cache-"))
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

from curation.data import sources  # noqa: E402
from curation.data.export import export  # noqa: E402
from curation.data.images import load_image, thumbnail_path  # noqa: E402
from curation.data.ingest import IngestError, ingest  # noqa: E402
from curation.data.store import POSITIVE, REJECTED  # noqa: E402
from curation.data.workspace import Workspace  # noqa: E402

datasets = pytest.importorskip("datasets")
CLASSES = ["Café crème", 'Jacket, "lined"', "T-shirt/top", "dog"]


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)).save(path, format="PNG")
    return path


def _pil(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 10, 3), dtype=np.uint8))


def state(ws: Workspace) -> dict[str, tuple[frozenset[str], frozenset[str], str]]:
    """{sha1: (positive names, rejected names, split)} of the present samples."""
    s = ws.store.samples()
    names = np.array(ws.store.class_names(), dtype=object)
    m = ws.store.label_matrix(s.index.to_numpy())
    if not len(names):
        return {h: (frozenset(), frozenset(), sp) for h, sp in zip(s["sha1"], s["split"])}
    return {h: (frozenset(names[r == POSITIVE]), frozenset(names[r == REJECTED]), sp)
            for h, r, sp in zip(s["sha1"], m, s["split"])}


@pytest.fixture
def single(tmp_path: Path) -> Workspace:
    """Single-label: odd class names, train/val/test and unsplit images, a class absent from val, an unlabelled
    image, a relabel and a rejection."""
    ws = Workspace.create(tmp_path / "ws")
    rows, k = [], 0
    for split, classes in (("train", CLASSES), ("val", CLASSES[:2]), ("test", CLASSES[1:3]), ("", CLASSES[:1])):
        for c in classes:
            for i in range(2):
                _png(tmp_path / "src" / f"{k}.png", k)
                rows.append({"path": f"{k}.png", "label": c, "split": split})
                k += 1
    _png(tmp_path / "src" / "free.png", 999)
    rows.append({"path": "free.png", "label": None, "split": "train"})
    pd.DataFrame(rows).to_parquet(tmp_path / "src" / "m.parquet")
    ingest(ws, tmp_path / "src" / "m.parquet")
    s = ws.store.samples()
    first = int(s.index[s["path"] == "0.png"][0])
    ws.store.set_label([first], ws.store.class_id("dog"))
    ws.store.reject_label([first], ws.store.class_id(CLASSES[0]))
    return ws


@pytest.fixture
def multi(tmp_path: Path) -> Workspace:
    ws = Workspace.create(tmp_path / "mws", task="multi")
    rows = []
    for i in range(9):
        _png(tmp_path / "msrc" / f"{i}.png", 500 + i)
        rows.append({"path": f"{i}.png", "labels": [["cat"], ["cat", "dog"], []][i % 3],
                     "rejected": [["bird"], [], []][i % 3], "split": ["train", "val", "test"][i // 3]})
    pd.DataFrame(rows).to_parquet(tmp_path / "msrc" / "m.parquet")
    ingest(ws, tmp_path / "msrc" / "m.parquet")
    return ws


# ---------------------------------------------------------------------- the real clients read the exports
def test_hf_imagefolder_export_loads_labels_and_splits(single: Workspace, tmp_path: Path) -> None:
    out = export(single, "hf", tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == ["test", "train", "validation"]
    dd = datasets.load_dataset("imagefolder", data_dir=str(out))
    assert set(dd) == {"train", "validation", "test"}
    table = state(single)
    n = {sp: sum(1 for v in table.values() if (v[2] or "train") == sp) for sp in ("train", "val", "test")}
    assert (len(dd["train"]), len(dd["validation"]), len(dd["test"])) == (n["train"], n["val"], n["test"])
    got = sorted(x for x in dd["validation"]["label"])
    want = sorted(next(iter(p)) for p, _, sp in table.values() if sp == "val")
    assert got == want and "T-shirt/top" in set(dd["train"]["label"])
    assert None in set(dd["train"]["label"])  # the unlabelled image
    assert dd["train"][0]["image"].size == (10, 8)


def test_hf_imagefolder_multi_label(multi: Workspace, tmp_path: Path) -> None:
    out = export(multi, "hf", tmp_path / "hfm")
    dd = datasets.load_dataset("imagefolder", data_dir=str(out))
    assert sorted(map(sorted, dd["validation"]["labels"])) == [[], ["cat"], ["cat", "dog"]]
    assert "bird" in dd["train"]["rejected"]


@pytest.mark.parametrize("ws_name", ["single", "multi"])
def test_hf_parquet_export_has_classlabel_features(ws_name: str, request: pytest.FixtureRequest,
                                                   tmp_path: Path) -> None:
    ws = request.getfixturevalue(ws_name)
    out = export(ws, "hf-parquet", tmp_path / "hfp")
    dd = datasets.load_dataset(str(out))
    names = ws.store.class_names()
    if ws_name == "single":
        feat = dd["train"].features["label"]
        assert isinstance(feat, datasets.ClassLabel) and feat.names == names
        labels = [feat.int2str(i) if i >= 0 else None for i in dd["validation"]["label"]]
        assert sorted(labels) == sorted(next(iter(p)) for p, _, sp in state(ws).values() if sp == "val")
        assert -1 in dd["train"]["label"]
    else:
        feat = dd["train"].features["labels"]
        assert feat.feature.names == names
        assert sorted(map(sorted, dd["validation"]["labels"])) == sorted(
            sorted(names.index(n) for n in p) for p, _, sp in state(ws).values() if sp == "val")
    assert set(dd) == {"train", "validation", "test"}
    assert isinstance(dd["test"][0]["image"], Image.Image)


@pytest.mark.slow  # importing torchvision takes seconds on a busy machine
def test_imagefolder_export_reads_the_same_classes_in_every_split(single: Workspace, tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    out = export(single, "imagefolder", tmp_path / "tv")
    readable = {"Café crème", 'Jacket, "lined"', "T-shirt%2Ftop", "dog"}
    assert {p.name for p in (out / "train").iterdir()} == readable
    trees = {s: ImageFolder(str(out / s), allow_empty=True) for s in ("train", "val", "test", "all")}
    maps = {s: t.class_to_idx for s, t in trees.items()}
    assert all(m == maps["train"] for m in maps.values())
    classes = (out / "classes.txt").read_text(encoding="utf-8").splitlines()
    assert [c.replace("/", "%2F") for c in classes] == trees["train"].classes
    assert len(trees["val"]) == 4 and all(classes[y] in CLASSES[:2] + ["dog"] for _, y in trees["val"].samples)
    fresh = Workspace.create(tmp_path / "fresh")
    report = ingest(fresh, out)
    assert len(report.skipped) == 0 and "T-shirt/top" in fresh.store.class_names()
    want = {h: v[:1] for h, v in state(single).items() if v[0]}
    assert {h: v[:1] for h, v in state(fresh).items()} == want


def test_fiftyone_export_follows_the_documented_schema(single: Workspace, tmp_path: Path) -> None:
    out = export(single, "fiftyone", tmp_path / "fo")
    for split in ("train", "validation", "test", "all"):
        doc = json.loads((out / split / "labels.json").read_text())
        assert set(doc) == {"classes", "labels"} and doc["classes"] == single.store.class_names()
        stems = {p.stem for p in (out / split / "data").iterdir()}
        assert set(doc["labels"]) == stems
        assert all(t is None or (isinstance(t, int) and 0 <= t < len(doc["classes"])) for t in doc["labels"].values())


def test_coco_export_and_boxes_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "coco"
    for i in range(4):
        _png(src / "images" / f"{i}.png", 700 + i)
    doc = {"images": [{"id": 10 + i, "file_name": f"{i}.png", "width": 10, "height": 8} for i in range(4)],
           "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
           "annotations": [{"id": 1, "image_id": 10, "category_id": 1, "bbox": [1, 1, 3, 3], "area": 9},
                           {"id": 2, "image_id": 10, "category_id": 2, "bbox": [2, 2, 4, 4], "area": 16},
                           {"id": 3, "image_id": 11, "category_id": 2, "bbox": [0, 0, 5, 5], "area": 25}]}
    (src / "annotations.json").write_text(json.dumps(doc))
    ws = Workspace.create(tmp_path / "ws")
    report = ingest(ws, src)  # the folder: recognised as COCO, never "images" as a class
    assert "images" not in ws.store.class_names() and report.task == "multi"
    assert any("3 boxes kept" in n for n in report.notes)
    labels = {p: v[0] for p, v in zip(ws.store.samples()["path"], state(ws).values())}
    assert labels == {"0.png": {"cat", "dog"}, "1.png": {"dog"}, "2.png": set(), "3.png": set()}
    out = export(ws, "coco", tmp_path / "cout")
    back = json.loads((out / "labels.json").read_text())
    assert {c["name"] for c in back["categories"]} == {"cat", "dog"}
    assert sorted(a["bbox"] for a in back["annotations"] if "bbox" in a) == [[0, 0, 5, 5], [1, 1, 3, 3], [2, 2, 4, 4]]
    fresh = Workspace.create(tmp_path / "fresh")
    ingest(fresh, out / "labels.json")
    assert state(fresh) == state(ws)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "hf", "hf-parquet", "fiftyone", "coco"])
def test_round_trip_keeps_labels_splits_and_rejections(single: Workspace, multi: Workspace, tmp_path: Path,
                                                      fmt: str) -> None:
    for ws in (single, multi):
        dest = tmp_path / f"{ws.root.name}-{fmt}" / ("labels." + fmt if fmt in ("csv", "jsonl", "parquet") else "")
        out = export(ws, fmt, dest)  # the default image root: no --image-root needed
        fresh = Workspace.create(tmp_path / f"fresh-{ws.root.name}-{fmt}")
        report = ingest(fresh, out)
        assert len(report.skipped) == 0, report.skipped
        assert state(fresh) == state(ws), fmt
        assert fresh.store.task == ws.store.task


def test_default_export_location_round_trips_without_image_root(single: Workspace, tmp_path: Path) -> None:
    out = export(single, "csv")  # WS/exports/..., images elsewhere: relative paths with '..'
    assert not any(os.path.isabs(p) for p in pd.read_csv(out)["path"])
    fresh = Workspace.create(tmp_path / "fresh")
    ingest(fresh, out)
    assert state(fresh) == state(single)


# ---------------------------------------------------------------------- inputs written by the real libraries
def _hf_dataset(n: int, *, multi: bool = False):
    feats = {"image": datasets.Image(),
             "label": datasets.ClassLabel(names=["ant", "bee", "cow"])}
    if multi:
        feats = {"image": datasets.Image(), "tags": datasets.Sequence(datasets.ClassLabel(names=["x", "y", "z"]))}
        data = {"image": [_pil(i) for i in range(n)], "tags": [[i % 3] if i % 2 else [0, 2] for i in range(n)]}
    else:
        data = {"image": [_pil(i) for i in range(n)], "label": [i % 3 for i in range(n)]}
    return datasets.Dataset.from_dict(data, features=datasets.Features(feats))


def test_hf_parquet_with_embedded_images_is_read_in_place(tmp_path: Path) -> None:
    ds = _hf_dataset(7)
    ds.to_parquet(str(tmp_path / "hub" / "train-00000-of-00001.parquet"))
    ws = Workspace.create(tmp_path / "ws")
    report = ingest(ws, tmp_path / "hub" / "train-00000-of-00001.parquet")
    assert report.added == 7 and sorted(ws.store.class_names()) == ["ant", "bee", "cow"]
    s = ws.store.samples()
    assert s["path"].str.endswith(".parquet#0").sum() == 1 and set(s["split"]) == {"train"}
    assert list(tmp_path.glob("ws/images/*")) == []  # no copy
    sid = int(s.index[s["path"].str.endswith("#4")][0])
    assert [state(ws)[s.loc[sid, "sha1"]][0]] == [{"bee"}]
    im = load_image(ws.resolve_image(sid))
    assert np.array_equal(np.asarray(im), np.asarray(_pil(4)))
    assert thumbnail_path(ws, sid).is_file()
    from curation.features.imageset import ImageDataset

    allowed = [os.path.realpath(p) for p in map(str, ws.allowed_roots())]
    x, reason = ImageDataset(np.array([str(ws.resolve_image(sid))]), lambda im: __import__("torch").zeros(3),
                             4, allowed)[0]
    assert reason == ""


def test_hf_sequence_classlabel_is_multi_label(tmp_path: Path) -> None:
    _hf_dataset(6, multi=True).to_parquet(str(tmp_path / "d" / "test.parquet"))
    ws = Workspace.create(tmp_path / "ws")
    report = ingest(ws, tmp_path / "d")
    assert report.task == "multi" and set(ws.store.samples()["split"]) == {"test"}
    assert sorted(map(sorted, (v[0] for v in state(ws).values()))) == sorted(
        [["x", "z"], ["y"], ["x", "z"], ["x"], ["x", "z"], ["z"]])


def test_save_to_disk_dataset_dict(tmp_path: Path) -> None:
    ds = _hf_dataset(6)
    datasets.DatasetDict({"train": ds.select(range(4)), "validation": ds.select([4, 5])}).save_to_disk(
        str(tmp_path / "disk"))
    ws = Workspace.create(tmp_path / "ws")
    report = ingest(ws, tmp_path / "disk")
    assert report.added == 6
    assert sorted(ws.store.samples()["split"]) == ["train"] * 4 + ["val"] * 2
    sid = int(ws.store.sample_ids()[-1])
    assert np.array_equal(np.asarray(load_image(ws.resolve_image(sid))), np.asarray(_pil(5)))


def test_hf_per_split_metadata_layout(tmp_path: Path) -> None:
    """HF's own imagefolder layout (checked by ``load_dataset``), ingested with its labels and splits."""
    root = tmp_path / "hfdir"
    for split, n in (("train", 3), ("test", 2)):
        lines = []
        for i in range(n):
            _png(root / split / f"{i}.png", 100 * len(split) + i)
            lines.append(json.dumps({"file_name": f"{i}.png", "label": ["ant", "bee"][i % 2]}))
        (root / split / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    dd = datasets.load_dataset("imagefolder", data_dir=str(root))
    assert dd["train"]["label"] == ["ant", "bee", "ant"]
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, root)
    got = {p: (v[0], v[2]) for p, v in zip(ws.store.samples()["path"], state(ws).values())}
    assert got["train/1.png"] == ({"bee"}, "train") and got["test/0.png"] == ({"ant"}, "test")


def test_fiftyone_classification_import(tmp_path: Path) -> None:
    root = tmp_path / "fo"
    for i in range(4):
        _png(root / "data" / f"img{i}.png", 300 + i)
    (root / "labels.json").write_text(json.dumps(
        {"classes": ["ant", "bee"], "labels": {"img0": 0, "img1": 1, "img2": None, "img3": [0, {"label": "bee"}]}}))
    ws = Workspace.create(tmp_path / "ws")
    report = ingest(ws, root)
    assert "data" not in ws.store.class_names() and report.task == "multi"
    got = {p: v[0] for p, v in zip(ws.store.samples()["path"], state(ws).values())}
    assert got == {"data/img0.png": {"ant"}, "data/img1.png": {"bee"}, "data/img2.png": set(),
                   "data/img3.png": {"ant", "bee"}}


@pytest.mark.parametrize("layout", [["images/a.png", "images/b.png"], ["data/a.png"],
                                    ["train/a.png", "cat/b.png"], ["mnist/train/0/a.png"],
                                    ["train/images/a.png", "val/images/b.png"]])
def test_layouts_that_would_mislabel_are_refused(tmp_path: Path, layout: list[str]) -> None:
    for i, rel in enumerate(layout):
        _png(tmp_path / "src" / rel, 900 + i)
    ws = Workspace.create(tmp_path / "ws")
    with pytest.raises(IngestError, match="would become a class|inside class folders"):
        ingest(ws, tmp_path / "src")
    assert len(ws.store.sample_ids()) == 0
    if layout[0].startswith(("images", "data")):
        assert ingest(ws, tmp_path / "src", labels="none").added == len(layout)


def test_torchvision_split_tree(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for c in ("ant", "bee"):
            _png(tmp_path / "tv" / split / c / "0.png", hash((split, c)) % 1000)
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, tmp_path / "tv")
    assert sorted(ws.store.class_names()) == ["ant", "bee"]
    assert sorted(ws.store.samples()["split"]) == ["train", "train", "val", "val"]


def test_embedded_reference_parsing(tmp_path: Path) -> None:
    assert sources.split_ref("/a/b.parquet#12") == (Path("/a/b.parquet"), 12)
    assert sources.split_ref("/a/b.png") is None and sources.split_ref("/a/b.parquet#x") is None
    real = _png(tmp_path / "odd.parquet#3", 1)  # a real file with that name stays a file
    assert sources.split_ref(real) is None and sources.exists(real)


@pytest.mark.slow  # fits the out-of-fold heads (torch)
def test_cleanlab_export_is_out_of_fold(tmp_path: Path) -> None:
    """A flipped label is judged by a head that never saw it: its given class gets a low probability."""
    from curation.features.imported import import_embeddings
    from curation.labels.heldout import export_cleanlab

    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        _png(tmp_path / "src" / f"{i}.png", 2000 + i)
        rows.append({"path": f"{i}.png", "label": ["ant", "bee"][i % 2], "split": "train"})
    rows[0]["label"] = "bee"  # flipped: sample 0 sits in the ant cluster
    pd.DataFrame(rows).to_parquet(tmp_path / "src" / "m.parquet")
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, tmp_path / "src" / "m.parquet")
    centres = np.eye(8, dtype=np.float32)[:2] * 4
    vecs = centres[np.arange(60) % 2] + rng.normal(0, 0.3, (60, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", vecs)
    import_embeddings(ws, tmp_path / "v.npy")
    out = export_cleanlab(ws, tmp_path / "cl.npz")
    with np.load(out) as z:
        names = list(z["class_names"])
        first = int(np.flatnonzero(z["sample_ids"] == ws.store.sample_ids()[0])[0])
        assert names[z["labels"][first]] == "bee"
        assert z["pred_probs"][first, names.index("bee")] < 0.5  # out-of-fold: the head did not learn the flip
        assert z["pred_probs"].shape == (60, 2)
    import curation

    issues = curation.open(ws.root).issues()  # the same fit judges the labels in the notebook API
    worst = issues.iloc[0]
    assert worst.name == ws.store.sample_ids()[0] and worst["given_name"] == "bee" and worst["path"] == "0.png"


def test_embedded_images_round_trip_through_a_manifest(tmp_path: Path) -> None:
    """A workspace of images embedded in Parquet exports manifests of ``file.parquet#row`` paths that ingest back."""
    _hf_dataset(5).to_parquet(str(tmp_path / "hub" / "train.parquet"))
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, tmp_path / "hub")
    for fmt in ("csv", "hf"):
        out = export(ws, fmt, tmp_path / f"out-{fmt}" / ("m.csv" if fmt == "csv" else ""))
        fresh = Workspace.create(tmp_path / f"fresh-{fmt}")
        report = ingest(fresh, out)
        assert len(report.skipped) == 0 and state(fresh) == state(ws)


@pytest.mark.slow  # loads torch and the tiny OpenCLIP
def test_embedding_reads_embedded_images_by_row(tmp_path: Path) -> None:
    """The embedding DataLoader decodes images where they are (a Parquet row), with workers too."""
    from curation.features.embed import embed_workspace

    _hf_dataset(12).to_parquet(str(tmp_path / "hub" / "train.parquet"))
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, tmp_path / "hub")
    emb = embed_workspace(ws, "openclip:tiny-test:random", device="cpu", num_workers=1, batch_size=4)
    assert len(emb.ids) == 12 and np.isfinite(emb.vectors).all()
    assert len(np.unique(np.round(emb.vectors, 5), axis=0)) == 12  # twelve different images, not blanks


def test_hf_images_stored_by_reference_are_read_beside_the_table(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for i in range(3):
        _png(tmp_path / "hub" / "img" / f"{i}.png", 40 + i)
    image_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"image": pa.array([{"bytes": None, "path": f"img/{i}.png"} for i in range(3)]
                                        + [{"bytes": None, "path": "../outside.png"}], image_t),
                      "label": ["a", "b", "a", "b"]})
    _png(tmp_path / "outside.png", 50)
    pq.write_table(table, tmp_path / "hub" / "train.parquet")
    ws = Workspace.create(tmp_path / "ws")
    report = ingest(ws, tmp_path / "hub" / "train.parquet")
    assert report.added == 3 and list(report.skipped["reason"]) == ["no image bytes in this row"]
    sid = int(ws.store.sample_ids()[1])
    assert load_image(ws.resolve_image(sid)).size == (10, 8)


def test_coco_annotation_files_per_split(tmp_path: Path) -> None:
    """The 2017 layout: annotations/instances_{train,val}2017.json beside train2017/ and val2017/."""
    src = tmp_path / "coco2017"
    for split in ("train", "val"):
        docs = {"images": [], "categories": [{"id": 3, "name": "car"}], "annotations": []}
        for i in range(2):
            _png(src / f"{split}2017" / f"{i}.png", 800 + 10 * len(split) + i)
            docs["images"].append({"id": i, "file_name": f"{i}.png"})
            docs["annotations"].append({"id": i, "image_id": i, "category_id": 3, "bbox": [0, 0, 2, 2]})
        (src / "annotations").mkdir(parents=True, exist_ok=True)
        (src / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(docs))
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, src)
    s = ws.store.samples()
    assert sorted(s["path"]) == ["train2017/0.png", "train2017/1.png", "val2017/0.png", "val2017/1.png"]
    assert sorted(s["split"]) == ["train", "train", "val", "val"] and ws.store.class_names() == ["car"]
