"""Ingest of image folders and manifests: labels, splits, skips with reasons, re-ingest, bad manifests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from badfiles import ManifestCase, make_bad_manifests, make_corpus, shown
from PIL import Image

from curation.core.progress import Cancelled
from curation.core.vocab import POSITIVE
from curation.data.export import export
from curation.data.ingest import IngestError, IngestReport, ingest, parse_labels
from curation.data.workspace import Workspace

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

_counter = iter(range(1_000_000))


def img(path: Path, size: tuple[int, int] = (12, 10)) -> Path:
    """Write a small PNG with unique random content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(next(_counter))
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def labels_by_path(ws: Workspace) -> dict[str, set[str]]:
    samples = ws.store.samples()
    names = np.array(ws.store.class_names(), dtype=object)
    m = ws.store.label_matrix(samples.index.to_numpy())
    return {p: set(names[row == POSITIVE]) if len(names) else set() for p, row in zip(samples["path"], m)}


# ---------------------------------------------------------------------- folders
def test_imagefolder_layout(ws: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "pets"
    for i in range(3):
        img(root / "cat" / f"c{i}.png")
        img(root / "dog" / f"d{i}.jpg".replace(".jpg", ".png"))
    img(root / "dog" / "deeper" / "x.png")
    img(root / "loose.png")
    (root / "README.txt").write_text("hello")
    (root / ".hidden.png").write_bytes(b"")
    report = ingest(ws, root)
    assert isinstance(report, IngestReport)
    assert report.added == 8 and report.existing == 0
    assert sorted(report.classes_added) == ["cat", "dog"]
    assert report.labels_imported == 7
    lab = labels_by_path(ws)
    assert lab["cat/c0.png"] == {"cat"} and lab["dog/deeper/x.png"] == {"dog"} and lab["loose.png"] == set()
    assert list(report.skipped["path"]) == ["README.txt"]
    assert report.task == "single" and not report.task_changed
    assert "8 new images" in report.summary()
    assert set(ws.store.samples()["split"]) == {""}
    assert len(report.sample_ids) == 8


def test_split_folders_and_label_none(ws: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    img(root / "train" / "cat" / "a.png")
    img(root / "train" / "dog" / "b.png")
    img(root / "validation" / "cat" / "c.png")
    img(root / "test" / "d.png")
    report = ingest(ws, root)
    s = ws.store.samples().set_index("path")
    assert s.loc["train/cat/a.png", "split"] == "train"
    assert s.loc["validation/cat/c.png", "split"] == "val"
    assert s.loc["test/d.png", "split"] == "test"
    assert sorted(report.classes_added) == ["cat", "dog"]
    assert labels_by_path(ws)["test/d.png"] == set()

    ws2 = Workspace.create(tmp_path / "ws2")
    r2 = ingest(ws2, root, labels="none", split="train")
    assert r2.labels_imported == 0 and ws2.store.class_names() == []
    assert set(ws2.store.samples()["split"]) == {"train"}


def test_flat_folder_is_unlabelled(ws: Workspace, tmp_path: Path) -> None:
    for i in range(4):
        img(tmp_path / "flat" / f"{i}.png")
    report = ingest(ws, tmp_path / "flat")
    assert report.added == 4 and report.labels_imported == 0 and report.classes_added == []


def test_bad_corpus_never_stops(ws: Workspace, tmp_path: Path) -> None:
    c = make_corpus(tmp_path)
    seen: list[float] = []
    report = ingest(ws, c.folder, progress=lambda f, m: seen.append(f))
    reasons = dict(zip(report.skipped["path"], report.skipped["reason"]))
    for name in c.bad:
        assert reasons[shown(name)].startswith(c.expected[name]), (name, reasons[shown(name)])
    assert report.added == len(c.good) and len(report.skipped) == len(c.bad)
    assert any("duplicates" in n for n in report.notes)
    assert seen and seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen)
    assert sorted(ws.store.samples()["path"]) == sorted(c.good)


def test_missing_and_empty_folder(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="does not exist"):
        ingest(ws, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="no image files"):
        ingest(ws, tmp_path / "empty")
    with pytest.raises(IngestError, match="Unknown split"):
        ingest(ws, tmp_path / "empty", split="holdout")


def test_cancel_propagates(ws: Workspace, tmp_path: Path) -> None:
    for i in range(20):
        img(tmp_path / "f" / f"{i}.png")

    def cancel(f: float, m: str) -> None:
        if f > 0.1:
            raise Cancelled()

    with pytest.raises(Cancelled):
        ingest(ws, tmp_path / "f", progress=cancel)
    assert len(ws.store.sample_ids()) == 0


# ---------------------------------------------------------------------- re-ingest
def test_reingest_adds_flags_and_restores(ws: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "pets"
    a = img(root / "cat" / "a.png")
    img(root / "cat" / "b.png")
    img(root / "dog" / "c.png")
    ingest(ws, root)
    samples = ws.store.samples()
    sid = int(samples.index[samples["path"] == "cat/b.png"][0])
    ws.store.set_label([sid], ws.store.class_id("dog"))  # a human edit must survive re-ingest
    events = ws.store.last_event_id()

    moved = a.read_bytes()
    a.unlink()
    img(root / "dog" / "new.png")
    r = ingest(ws, root)
    assert (r.added, r.existing, r.vanished, r.restored) == (1, 2, 1, 0)
    assert "cat/a.png" not in set(ws.store.samples()["path"])
    assert "cat/a.png" in set(ws.store.samples(include_missing=True)["path"])
    assert labels_by_path(ws)["cat/b.png"] == {"dog"}
    assert ws.store.last_event_id() == events + 1  # only the new file's label

    a.write_bytes(moved)
    r = ingest(ws, root)
    assert (r.added, r.vanished, r.restored) == (0, 0, 1)
    assert labels_by_path(ws)["cat/a.png"] == {"cat"}
    r = ingest(ws, root)
    assert (r.added, r.vanished, r.restored) == (0, 0, 0)


def test_file_becoming_corrupt_is_flagged(ws: Workspace, tmp_path: Path) -> None:
    p = img(tmp_path / "f" / "x.png")
    img(tmp_path / "f" / "y.png")
    ingest(ws, tmp_path / "f")
    p.write_bytes(p.read_bytes()[:40])
    r = ingest(ws, tmp_path / "f")
    assert r.vanished == 1 and r.skipped["reason"].iloc[0].startswith("truncated")


def test_manifest_subset_does_not_flag_others(ws: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "m"
    for n in "abcd":
        img(root / f"{n}.png")
    pd.DataFrame({"path": ["a.png", "b.png"], "label": ["x", "y"]}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"path": ["c.png", "d.png"], "label": ["x", "y"]}).to_csv(root / "val.csv", index=False)
    ingest(ws, root / "train.csv")
    r = ingest(ws, root / "val.csv")
    assert r.vanished == 0 and len(ws.store.sample_ids()) == 4


# ---------------------------------------------------------------------- manifests
@pytest.fixture
def pics(tmp_path: Path) -> Path:
    root = tmp_path / "pics"
    for n in ("a", "b", "c", "d"):
        img(root / "img" / f"{n}.png")
    return root


def test_csv_manifest_variants(ws: Workspace, pics: Path) -> None:
    (pics / "m.csv").write_text("Path,Label,split\n"
                                "img/a.png,cat,train\n"
                                "img/b.png,cat|dog,val\n"
                                'img/c.png,"[""dog"", ""bird""]",test\n'
                                "img/d.png,,\n", encoding="utf-8")
    r = ingest(ws, pics / "m.csv")
    assert r.added == 4 and r.task == "multi" and r.task_changed
    lab = labels_by_path(ws)
    assert lab == {"img/a.png": {"cat"}, "img/b.png": {"cat", "dog"}, "img/c.png": {"dog", "bird"},
                   "img/d.png": set()}
    s = ws.store.samples().set_index("path")["split"]
    assert (s["img/a.png"], s["img/b.png"], s["img/c.png"], s["img/d.png"]) == ("train", "val", "test", "")
    assert "multi-label" in r.summary()


def test_jsonl_and_parquet_lists(tmp_path: Path, pics: Path) -> None:
    rows = [{"file": "img/a.png", "tags": ["cat", "dog"]}, {"file": "img/b.png", "tags": []},
            {"file": "img/c.png", "tags": None}, {"file": "img/d.png", "tags": "bird"}]
    (pics / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ws1 = Workspace.create(tmp_path / "w1")
    ingest(ws1, pics / "m.jsonl")
    want = {"img/a.png": {"cat", "dog"}, "img/b.png": set(), "img/c.png": set(), "img/d.png": {"bird"}}
    assert labels_by_path(ws1) == want

    df = pd.DataFrame({"image": [r["file"] for r in rows], "labels": [["cat", "dog"], [], None, ["bird"]]})
    df.to_parquet(pics / "m.parquet")
    ws2 = Workspace.create(tmp_path / "w2")
    ingest(ws2, pics / "m.parquet")
    assert labels_by_path(ws2) == want


def test_hf_metadata_folder_and_image_root(tmp_path: Path) -> None:
    root = tmp_path / "hf"
    img(root / "train" / "a.png")
    img(root / "test" / "b.png")
    (root / "metadata.jsonl").write_text('{"file_name": "train/a.png", "label": "cat"}\n'
                                         '{"file_name": "test/b.png", "label": 3}\n')
    ws = Workspace.create(tmp_path / "w")
    r = ingest(ws, root)
    assert r.added == 2
    assert labels_by_path(ws) == {"train/a.png": {"cat"}, "test/b.png": {"3"}}
    assert dict(zip(ws.store.samples()["path"], ws.store.samples()["split"])) == {"train/a.png": "train",
                                                                                  "test/b.png": "test"}
    # a manifest elsewhere, paths relative to image_root
    (tmp_path / "list.csv").write_text("filename,category\ntrain/a.png,dog\n")
    ws2 = Workspace.create(tmp_path / "w2")
    ingest(ws2, tmp_path / "list.csv", image_root=root)
    assert labels_by_path(ws2) == {"train/a.png": {"dog"}}


def test_explicit_label_column_and_none(tmp_path: Path, pics: Path) -> None:
    (pics / "m.csv").write_text("path,label,coarse\nimg/a.png,cat,animal\n")
    ws = Workspace.create(tmp_path / "w")
    ingest(ws, pics / "m.csv", labels="coarse")
    assert labels_by_path(ws) == {"img/a.png": {"animal"}}
    ws2 = Workspace.create(tmp_path / "w2")
    assert ingest(ws2, pics / "m.csv", labels="none").labels_imported == 0
    ws3 = Workspace.create(pics.parent / "w3")
    ingest(ws3, pics / "m.csv", labels="folders")
    assert labels_by_path(ws3) == {"img/a.png": {"img"}}
    with pytest.raises(IngestError, match="no column 'fine'"):
        ingest(ws2, pics / "m.csv", labels="fine")


def test_multi_label_keeps_single_task_when_labels_exist(ws: Workspace, pics: Path) -> None:
    (pics / "one.csv").write_text("path,label\nimg/a.png,cat\n")
    ingest(ws, pics / "one.csv")
    (pics / "two.csv").write_text("path,label\nimg/b.png,cat|dog\n")
    r = ingest(ws, pics / "two.csv")
    assert r.task == "single" and not r.task_changed
    assert any("single-label" in n for n in r.notes)
    assert labels_by_path(ws)["img/b.png"] == {"cat", "dog"}


def test_unsafe_paths_are_skipped_with_reasons(ws: Workspace, tmp_path: Path, pics: Path) -> None:
    outside = img(tmp_path / "outside.png")
    os.symlink(outside, pics / "img" / "link.png")
    (pics / "m.csv").write_text("path,label\n"
                                "img/a.png,cat\n"
                                "../outside.png,cat\n"
                                f"{outside},cat\n"
                                f"{pics / 'img' / 'b.png'},dog\n"
                                "img/link.png,cat\n"
                                "img/nope.png,cat\n"
                                ",cat\n", encoding="utf-8")
    r = ingest(ws, pics / "m.csv")
    reasons = dict(zip(r.skipped["path"], r.skipped["reason"]))
    assert reasons["../outside.png"] == "path escapes the image root with '..'"
    assert reasons[str(outside)].startswith("absolute path outside the image root")
    assert reasons["img/link.png"] == "symlink resolves outside the image root"
    assert reasons["img/nope.png"] == "file not found"
    assert any("no path" in x for x in reasons.values())
    assert sorted(ws.store.samples()["path"]) == ["img/a.png", "img/b.png"]


def test_duplicate_rows_and_blank_labels(ws: Workspace, pics: Path) -> None:
    (pics / "m.csv").write_text("path,label\n"
                                "img/a.png,cat\n"
                                "img/a.png,cat\n"
                                "img/b.png,cat\n"
                                "img/b.png,dog\n"
                                "img/c.png,  \n"
                                "img/d.png,cat| |dog|\n")
    r = ingest(ws, pics / "m.csv")
    assert r.added == 4
    lab = labels_by_path(ws)
    assert lab == {"img/a.png": {"cat"}, "img/b.png": {"cat", "dog"}, "img/c.png": set(), "img/d.png": {"cat", "dog"}}
    text = "\n".join(r.notes)
    assert "Dropped 1 duplicated rows" in text and "merged" in text and "Dropped 3 empty" in text


@pytest.fixture(scope="module")
def bad_manifests(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ManifestCase]]:
    return make_bad_manifests(tmp_path_factory.mktemp("manifests"))


@pytest.mark.parametrize("index", range(17))
def test_broken_manifests(bad_manifests: tuple[Path, list[ManifestCase]], tmp_path: Path, index: int) -> None:
    """Each broken manifest is refused with a message naming the file and the fix, or its bad rows are skipped
    with a reason naming the file and row; nothing else reaches the store."""
    folder, cases = bad_manifests
    assert len(cases) == 17
    case = cases[index]
    ws = Workspace.create(tmp_path / "w")
    if case.error is not None:
        with pytest.raises(IngestError, match=case.error) as exc:
            ingest(ws, folder / case.name)
        assert case.name in str(exc.value)
        assert len(ws.store.sample_ids()) == 0 and ws.store.last_event_id() == 0
        return
    r = ingest(ws, folder / case.name)
    assert (r.added, len(r.skipped)) == (case.added, case.skipped), r.skipped
    assert all(f"{case.name} row" in x for x in r.skipped["reason"]), r.skipped
    assert ws.store.check() == []


def test_wrong_label_types_skip_rows(ws: Workspace, bad_manifests: tuple[Path, list[ManifestCase]]) -> None:
    folder, _ = bad_manifests
    ingest(ws, folder / "types.jsonl")
    assert labels_by_path(ws) == {"img/d.png": {"2"}}
    ws2 = Workspace.create(ws.root.parent / "w2")
    r = ingest(ws2, folder / "control.jsonl")
    assert labels_by_path(ws2) == {"img/d.png": {"fine"}}
    assert any("control characters" in x for x in r.skipped["reason"])
    assert any("no visible characters" in x for x in r.skipped["reason"])


def test_missing_label_column_is_said(ws: Workspace, pics: Path) -> None:
    (pics / "paths.csv").write_text("path,comment\nimg/a.png,nice\n")
    r = ingest(ws, pics / "paths.csv")
    assert r.added == 1 and r.labels_imported == 0
    assert any("paths.csv has no label column" in n for n in r.notes)


WEIRD_LABELS = ["a, b", 'say "hi"', "it's", "<script>alert(1)</script>", "<b>bold</b>", "🐱 cat", "👩‍💻",
                "tab;semi", "x/y", "50%", "  padded  ", "ünïcødé"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "imagefolder"])
def test_odd_label_names_round_trip(tmp_path: Path, fmt: str) -> None:
    """Commas, quotes, HTML, emoji, slashes and percent signs survive ingest → store → export → ingest."""
    for i in range(len(WEIRD_LABELS)):
        img(tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps({"path": f"imgs/{i}.png", "label": n})
                                                for i, n in enumerate(WEIRD_LABELS)) + "\n")
    ws = Workspace.create(tmp_path / "w")
    ingest(ws, tmp_path / "m.jsonl")
    assert sorted(ws.store.class_names()) == sorted(n.strip() for n in WEIRD_LABELS)
    want = sorted(tuple(sorted(v)) for v in labels_by_path(ws).values())
    dest = tmp_path / ("out" if fmt == "imagefolder" else f"out.{fmt}")
    ws2 = Workspace.create(tmp_path / "w2")
    r = ingest(ws2, export(ws, fmt, dest))
    assert len(r.skipped) == 0
    assert sorted(tuple(sorted(v)) for v in labels_by_path(ws2).values()) == want


@pytest.mark.slow
def test_ten_thousand_distinct_labels(tmp_path: Path) -> None:
    """500 images x 20 labels each: 10,000 classes created in one import batch, and they export and re-import."""
    rows = []
    for i in range(500):
        img(tmp_path / "imgs" / f"{i}.png", (4, 4))
        rows.append(f"imgs/{i}.png,{'|'.join(f'label {i * 20 + j:05d}' for j in range(20))}")
    (tmp_path / "m.csv").write_text("path,labels\n" + "\n".join(rows) + "\n")
    ws = Workspace.create(tmp_path / "w")
    r = ingest(ws, tmp_path / "m.csv")
    assert (r.added, r.labels_imported, len(r.classes_added), r.task) == (500, 10_000, 10_000, "multi")
    assert len(ws.store.class_names()) == 10_000 and len(ws.store.batches()) == 1 and ws.store.check() == []
    ws2 = Workspace.create(tmp_path / "w2")
    ingest(ws2, export(ws, "csv", tmp_path / "out.csv"))
    assert labels_by_path(ws2) == labels_by_path(ws)


@pytest.mark.parametrize("value,expected", [
    (None, ([], 0)), (float("nan"), ([], 0)), ("cat", (["cat"], 0)), (" cat | dog ", (["cat", "dog"], 0)),
    ("\t cat \u00a0", (["cat"], 0)), ("\u00a0", ([], 1)), ("<b>x</b>|🐱", (["<b>x</b>", "🐱"], 0)),
    ('["a", "b", ""]', (["a", "b"], 1)), (["a", "a", " "], (["a"], 1)), (np.array(["x"]), (["x"], 0)),
    (3, (["3"], 0)), (4.0, (["4"], 0)), ("  ", ([], 1)), ("[not json", (["[not json"], 0)),
])
def test_parse_labels(value: object, expected: tuple[list[str], int]) -> None:
    assert parse_labels(value) == expected


def test_many_images_batched(ws: Workspace, tmp_path: Path) -> None:
    for c in range(3):
        for i in range(100):
            img(tmp_path / "big" / f"class{c}" / f"{i}.png", (6, 6))
    r = ingest(ws, tmp_path / "big")
    assert r.added == 300 and r.labels_imported == 300
    assert len(ws.store.batches()) == 1  # one import batch for all labels


def test_cli_ingest_lists_each_skipped_file_then_a_fixed_file_is_added(tmp_path, capsys):
    """The terminal names every skipped file with its reason and what to do; after the fix, ingest adds it."""
    from curation.cli import main

    root = tmp_path / "photos"
    img(root / "cat" / "a.png")
    (root / "cat" / "broken.png").write_bytes(b"not an image at all")
    assert main(["ingest", str(tmp_path / "ws"), str(root), "--create"]) == 0
    out = capsys.readouterr().out
    assert "Skipped 1 (1 not an image)" in out and "ingest again" in out
    assert "cat/broken.png" in out.split("skipped:")[1] and "not an image" in out.split("skipped:")[1]
    img(root / "cat" / "broken.png")
    assert main(["ingest", str(tmp_path / "ws"), str(root)]) == 0
    assert "1 new images, 1 already known" in capsys.readouterr().out


def test_rejected_column_is_imported_in_the_same_batch(ws: Workspace, pics: Path) -> None:
    """A manifest's ``rejected`` column (as export writes it) becomes rejected labels, in the import batch."""
    from curation.data.store import REJECTED

    files = sorted(p.relative_to(pics).as_posix() for p in pics.rglob("*.png"))[:2]
    pd.DataFrame({"path": files, "label": ["cat", "dog"], "rejected": ["dog", ""]}).to_csv(pics / "r.csv", index=False)
    ingest(ws, pics / "r.csv")
    sid = int(ws.store.samples().index[ws.store.samples()["path"] == files[0]][0])
    m = ws.store.label_matrix(np.array([sid]))
    assert m[0, ws.store.class_names().index("dog")] == REJECTED
    assert len(ws.store.batches()) == 1


def test_escaping_rows_need_a_matching_sha1(ws: Workspace, tmp_path: Path) -> None:
    """Rows of an exported manifest may point outside its folder only when their sha1 matches the file: a forged
    manifest cannot widen the image root to reach other files."""
    import hashlib

    good = img(tmp_path / "data" / "imgs" / "a.png")
    other = img(tmp_path / "data" / "imgs" / "b.png")
    sha = hashlib.sha1(good.read_bytes()).hexdigest()
    (tmp_path / "data" / "exp").mkdir()
    pd.DataFrame({"path": ["../imgs/a.png", "../imgs/b.png"], "label": ["x", "y"],
                  "sha1": [sha, "0" * 40]}).to_csv(tmp_path / "data" / "exp" / "m.csv", index=False)
    r = ingest(ws, tmp_path / "data" / "exp" / "m.csv")
    assert r.added == 1 and list(r.skipped["path"]) == ["../imgs/b.png"]
    assert ws.store.samples()["path"].tolist() == ["imgs/a.png"]
    assert other.exists()
