"""Issue-19 features in the app (AppTest) and on the command line: contrast on Clusters, transferability on
Home, the Guidelines page, the subset form, and the ``contrast`` / ``guidelines`` / ``subset`` / ``transfer``
commands."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import open_page
from test_evaluate_page import single, templates  # noqa: F401 (fixtures)
from test_ui import CLASSES, embedded, workspace  # noqa: F401 (fixtures)

from curation.cli import main
from curation.data.workspace import Workspace
from curation.models import transfer
from curation.ui import clusterview


@pytest.fixture
def clustered(embedded: Workspace) -> Workspace:  # noqa: F811
    from curation.features.embed import load_embeddings
    from curation.structure.cluster import compute_clusters

    compute_clusters(embedded, load_embeddings(embedded), k=3)
    return embedded


@pytest.fixture
def cheap_encoders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the imported vectors and pixels (no model is loaded in the test)."""
    monkeypatch.setattr(transfer, "available_encoders", lambda ws: ["precomputed:user", transfer.PIXELS])


def test_cluster_card_says_what_sets_it_apart(clustered):
    at = open_page("pages/2_Clusters.py")
    at.session_state[clusterview.K_OPEN] = 0
    at.run()
    next(b for b in at.button if b.key == "cl0_apart_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    table = next(d.value for d in at.dataframe if "term" in getattr(d.value, "columns", []))
    assert {"brightness", "black level", "white level"} & set(table["term"].tolist()[:3])  # the planted classes differ in grey level
    assert any("AUROC" in t.value for t in at.text)


def test_home_compares_encoders(embedded, cheap_encoders):  # noqa: F811
    at = open_page()
    next(b for b in at.button if b.key == "transfer_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    table = next(d.value for d in at.dataframe if "encoder" in getattr(d.value, "columns", []))
    assert set(table["encoder"]) == {"precomputed:user", transfer.PIXELS}


def test_guidelines_page_saves_a_note_and_exports(embedded):  # noqa: F811
    at = open_page("pages/9_Guidelines.py")
    assert [s.value for s in at.subheader][:1] == [CLASSES[0]]
    cid = embedded.store.class_id(CLASSES[0])
    at.text_area(key=f"guide_note_{cid}").input("<b>only</b> round shapes").run()
    next(b for b in at.button if b.key == f"guide_save_{cid}").click().run()
    assert embedded.store.meta(f"guideline_note:{cid}") == "<b>only</b> round shapes"
    next(b for b in at.button if b.key == "guide_export").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    out = list((embedded.root / "exports").glob("guidelines-*.html"))
    assert len(out) == 1 and "&lt;b&gt;only&lt;/b&gt;" in out[0].read_text()


def test_history_page_writes_a_subset(embedded):  # noqa: F811
    at = open_page("pages/7_History.py")
    at.number_input(key="subset_budget").set_value(20)
    next(b for b in at.button if "subset" in str(b.label).lower() or b.key and "subset" in b.key).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    out = list((embedded.root / "exports").glob("subset-*.csv"))
    assert len(out) == 1 and len(pd.read_csv(out[0])) == 12


def test_cli_commands(clustered, tmp_path, capsys, cheap_encoders):
    ws = str(clustered.root)
    assert main(["contrast", ws, f"class:{CLASSES[2]}", "--sources", "attributes", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["terms"][0]["term"] in ("brightness", "black level", "white level") and got["n_a"] == 15
    assert main(["contrast", ws, "cluster:0", "cluster:1", "--top", "3"]) == 0
    assert "AUROC" in capsys.readouterr().out
    assert main(["guidelines", ws, "--class", CLASSES[1], "--note", "corners count"]) == 0
    assert main(["guidelines", ws, str(tmp_path / "g"), "--format", "markdown"]) == 0
    assert "corners count" in (tmp_path / "g" / "README.md").read_text()
    assert main(["subset", ws, "0.5", str(tmp_path / "s.txt")]) == 0
    assert len((tmp_path / "s.txt").read_text().split()) == 30
    capsys.readouterr()
    assert main(["transfer", ws, "--sample", "30", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["encoders"]
    assert {r["encoder"] for r in rows} == {"precomputed:user", transfer.PIXELS}
    assert main(["transfer", ws, "--sample", "30", "-q"]) == 0 and capsys.readouterr().out == ""
    assert main(["subset", ws, "10", str(tmp_path / "s.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 10
    assert main(["contrast", ws, "1,2", "--sources", "nope"]) == 1  # a failure, with the valid sources named
    assert "attributes" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_cell_says_what_sets_it_apart(single):  # noqa: F811
    from test_evaluate_page import _click_a_mistake

    ws, run_id, _ = single
    at, i, j = _click_a_mistake(ws, run_id)
    next(b for b in at.button if b.key == "eval_apart_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("AUROC" in t.value for t in at.text)
