"""The notebook API: ``curation.open`` / ``curation.show`` stay lazy, label edits are undoable batches, a DataFrame or
an HF Dataset becomes a workspace, exports go through the same engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import curation

ROOT = Path(__file__).resolve().parent.parent


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def frame(tmp_path: Path) -> pd.DataFrame:
    files = [_png(tmp_path / "pics" / f"{i}.png", i) for i in range(6)]
    return pd.DataFrame({"path": [str(f) for f in files], "label": ["ant", "bee", "ant", "bee", None, "ant"],
                         "split": ["train"] * 4 + ["val"] * 2})


def test_import_curation_stays_light() -> None:
    out = subprocess.run([sys.executable, "-c", "import sys, curation; print([k for k in ('pandas', 'numpy', "
                          "'torch', 'streamlit', 'curation.api') if k in sys.modules])"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    with pytest.raises(AttributeError):
        curation.nothing  # noqa: B018


def test_show_builds_a_workspace_from_a_dataframe(frame: pd.DataFrame, tmp_path: Path) -> None:
    proj = curation.show(frame, workspace=tmp_path / "ws", launch=False)
    labels = proj.labels()
    assert len(labels) == 6 and sorted(proj.classes()) == ["ant", "bee"]
    assert labels["label"].tolist().count("ant") == 3 and set(labels["split"]) == {"train", "val"}
    assert "6 images" in repr(proj)
    again = curation.show(frame, workspace=tmp_path / "ws", launch=False)  # updating is idempotent
    assert len(again.labels()) == 6


def test_set_label_is_one_undoable_batch(frame: pd.DataFrame, tmp_path: Path) -> None:
    proj = curation.show(frame, workspace=tmp_path / "ws", launch=False)
    before = proj.labels()["labels"].tolist()
    ids = proj.labels().index[:3].tolist()
    n = len(proj.ws.store.batches())
    batch = proj.set_label(ids, "bee")
    assert len(proj.ws.store.batches()) == n + 1
    assert proj.labels().loc[ids, "label"].tolist() == ["bee"] * 3
    batch2 = proj.set_label(label="ant", action="reject", query="split == 'val'")
    assert all("ant" in r for r in proj.labels().query("split == 'val'")["rejected"])
    proj.undo(batch2)
    proj.undo(batch)
    assert proj.labels()["labels"].tolist() == before
    with pytest.raises(Exception, match="single-label"):
        proj.set_label(ids, "ant", action="add")
    with pytest.raises(Exception, match="Unknown classes"):
        proj.set_label(ids, "wasp")


def test_open_and_export(frame: pd.DataFrame, tmp_path: Path) -> None:
    curation.show(frame, workspace=tmp_path / "ws", launch=False)
    proj = curation.open(tmp_path / "ws")
    out = proj.export("jsonl", tmp_path / "l.jsonl")
    assert len(pd.read_json(out, lines=True)) == 6
    fixes = pd.DataFrame({"sample_id": proj.labels().index[:2], "label": ["bee", "bee"]})
    batch, n, skipped = proj.correct(fixes)
    assert n == 2 and skipped.empty and batch is not None
    with pytest.raises(Exception, match="embed"):
        proj.export("cleanlab", tmp_path / "cl.npz")  # out-of-fold probabilities need embeddings first


def test_show_reads_an_hf_dataset(tmp_path: Path) -> None:
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    datasets = pytest.importorskip("datasets")
    ims = [Image.fromarray(np.full((6, 6, 3), 30 * i, np.uint8)) for i in range(4)]
    ds = datasets.Dataset.from_dict({"image": ims, "label": [0, 1, 1, 0]}, features=datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["no", "yes"])}))
    proj = curation.show(datasets.DatasetDict({"train": ds, "test": ds.select([0])}), workspace=tmp_path / "hfws",
                         launch=False)
    labels = proj.labels()
    assert len(labels) == 5 and sorted(proj.classes()) == ["no", "yes"]
    assert sorted(labels["split"]) == ["test", "train", "train", "train", "train"]
    assert labels["path"].str.contains(r"\.parquet#\d+$").all()


@pytest.mark.slow
def test_show_starts_the_app_on_localhost(frame: pd.DataFrame, tmp_path: Path) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proj = curation.show(frame, workspace=tmp_path / "ws", port=port, launch=False).show(port=port, wait=90)
    try:
        assert proj.url == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{proj.url}/_stcore/health", timeout=30) as r:
            assert r.read().decode().strip() == "ok"
    finally:
        proj.close()
    assert proj.app is None


def test_remove_rejects_where_the_label_was_and_clear_forgets(frame: pd.DataFrame, tmp_path: Path) -> None:
    proj = curation.show(frame, workspace=tmp_path / "ws", launch=False)
    lab = proj.labels()
    ants, others = lab.index[lab["label"] == "ant"].tolist(), lab.index[lab["label"] != "ant"].tolist()
    proj.set_label(ants + others, "ant", action="remove")
    after = proj.labels()
    assert all(after.loc[i, "rejected"] == ["ant"] and after.loc[i, "labels"] == [] for i in ants)
    assert all("ant" not in after.loc[i, "rejected"] for i in others)  # only images that carried it
    proj.set_label(ants, "ant", action="clear")
    assert all(proj.labels().loc[i, "rejected"] == [] for i in ants)
    proj.set_label(others[:1], action="clear")
    assert proj.labels().loc[others[0], "labels"] == []
