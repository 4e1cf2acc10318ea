"""The command line as a script sees it: --json everywhere, exit codes 0 / 1 / 2, `label` and `undo`, --overwrite,
no progress bars in pipes, `init` and `restore` oddities fixed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curation.cli import main
from curation.data.store import POSITIVE, REJECTED
from curation.data.workspace import Workspace


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def wsdir(tmp_path: Path) -> Path:
    for i in range(6):
        _png(tmp_path / "src" / ["cat", "dog"][i % 2] / f"{i}.png", i)
    assert main(["ingest", str(tmp_path / "ws"), str(tmp_path / "src"), "--create", "-q"]) == 0
    return tmp_path / "ws"


def _json(capsys: pytest.CaptureFixture) -> object:
    return json.loads(capsys.readouterr().out)


def _labels(ws: Path) -> dict[str, set[str]]:
    w = Workspace.open(ws)
    s = w.store.samples()
    names = np.array(w.store.class_names(), dtype=object)
    m = w.store.label_matrix(s.index.to_numpy())
    return {p: set(names[r == POSITIVE]) for p, r in zip(s["path"], m)}


def test_json_output_and_no_bars_in_pipes(wsdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _png(tmp_path / "src" / "cat" / "new.png", 99)
    assert main(["ingest", str(wsdir), str(tmp_path / "src"), "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["added"] == 1 and out["existing"] == 6 and out["skipped"] == []
    assert "%|" not in captured.err  # no progress bar when stderr is not a terminal
    assert main(["labels", str(wsdir), "--json"]) == 0
    rows = _json(capsys)
    assert len(rows) == 7 and {"sample_id", "path", "label", "labels", "rejected", "split"} <= set(rows[0])
    assert main(["list", "--json"]) == 0
    assert "encoders" in _json(capsys)


def test_exit_codes(wsdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["ingest"]) == 2  # usage
    assert main(["export", str(wsdir), "xml"]) == 2
    assert main(["export", str(tmp_path / "nope"), "csv", "--json"]) == 1  # a failure, not a usage error
    assert "error" in _json(capsys)
    assert main(["label", str(wsdir), "set", "cat"]) == 1  # no ids or query: says so
    assert "give ids, a query" in capsys.readouterr().err
    assert main(["label", str(wsdir), "--csv", str(tmp_path / "c.csv"), "--ids", "1"]) == 2


def test_label_by_ids_query_and_csv_each_one_undoable_batch(wsdir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    ws = Workspace.open(wsdir)
    s = ws.store.samples()
    cats = s.index[s["path"].str.startswith("cat/")].tolist()
    before = _labels(wsdir)
    n_batches = len(ws.store.batches())
    assert main(["label", str(wsdir), "set", "dog", "--ids", ",".join(map(str, cats)), "--json"]) == 0
    out = _json(capsys)
    assert out["rows"] == 3 and len(ws.store.batches()) == n_batches + 1
    assert all(_labels(wsdir)[p] == {"dog"} for p in s.loc[cats, "path"])
    assert main(["undo", str(wsdir), str(out["batch"])]) == 0
    assert _labels(wsdir) == before
    # a query; a class that does not exist needs --create
    assert main(["label", str(wsdir), "set", "bird", "--query", "path.str.endswith('4.png')"]) == 1
    assert main(["label", str(wsdir), "set", "bird", "--query", "path.str.endswith('4.png')", "--create"]) == 0
    assert _labels(wsdir)["cat/4.png"] == {"bird"}
    assert main(["label", str(wsdir), "reject", "cat", "--query", "label == 'bird'"]) == 0
    sid = int(s.index[s["path"] == "cat/4.png"][0])
    assert ws.store.label_matrix(np.array([sid]))[0, ws.store.class_names().index("cat")] == REJECTED
    # a corrections CSV: paths or ids, several classes, one batch; a bad row is listed and exits 1
    pd.DataFrame({"path": ["dog/1.png", "dog/3.png", "nope.png"], "label": ["cat", "", "cat"]}).to_csv(
        tmp_path / "fix.csv", index=False)
    n_batches = len(ws.store.batches())
    assert main(["label", str(wsdir), "--csv", str(tmp_path / "fix.csv")]) == 1
    assert "no present sample has this path" in capsys.readouterr().out
    assert len(ws.store.batches()) == n_batches + 1
    now = _labels(wsdir)
    assert now["dog/1.png"] == {"cat"} and now["dog/3.png"] == set()


def test_export_overwrite_and_message(wsdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "out.csv"
    assert main(["export", str(wsdir), "csv", str(dest)]) == 0
    assert main(["export", str(wsdir), "csv", str(dest)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(wsdir), "csv", str(dest), "--overwrite", "--json"]) == 0
    assert _json(capsys)["path"] == str(dest.resolve())


def test_init_refuses_a_task_switch_with_labels(wsdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["init", str(wsdir), "--task", "multi"]) == 1
    assert "single-label workspace with labels" in capsys.readouterr().err
    assert Workspace.open(wsdir).store.task == "single"
    assert main(["init", str(tmp_path / "empty")]) == 0
    capsys.readouterr()
    assert main(["init", str(tmp_path / "empty"), "--task", "multi", "--json"]) == 0
    assert _json(capsys)["task"] == "multi"


def test_restore_takes_workspace_first_and_accepts_the_old_order(wsdir: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    backup = tmp_path / "b.db"
    assert main(["backup", str(wsdir), str(backup)]) == 0
    assert main(["restore", str(wsdir), str(backup)]) == 0
    capsys.readouterr()
    assert main(["restore", str(backup), str(wsdir)]) == 0
    assert "deprecated" in capsys.readouterr().err


def test_pipeline_help_lists_issues(capsys: pytest.CaptureFixture) -> None:
    assert main(["pipeline", "--help"]) == 0
    assert "issues" in capsys.readouterr().out


def test_train_on_multi_label_prints_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    import curation.models.runs as runs

    ws = Workspace.create(tmp_path / "m", task="multi")

    def fake(w: Workspace, config: dict, progress: object = None) -> int:
        rid = w.store.add_run("head", config, last_event_id=0, device="cpu")
        w.store.update_run(rid, status="done", metrics={"mAP": 0.75, "micro_f1": 0.5, "accuracy": float("nan")})
        return rid

    monkeypatch.setattr(runs, "run_training", fake)
    assert main(["train", str(ws.root)]) == 0
    out = capsys.readouterr().out
    assert "mAP 0.7500, micro-F1 0.5000" in out and "nan" not in out
