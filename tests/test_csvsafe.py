"""CSV formula guards (export), encoding sniffing and single-row reasons (ingest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curation.data.csvsafe import guard_cell, guard_frame, sniff_encoding, unguard_cell, unguard_frame
from curation.data.export import export
from curation.data.ingest import IngestError, ingest
from curation.data.workspace import Workspace

FORMULAS = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0",
            "@SUM(1+1)*cmd|' /C calc'!A0", "\t=1+1", "\r=1+1", "'=already quoted"]


@pytest.mark.parametrize("cell", FORMULAS)
def test_guard_round_trip(cell: str) -> None:
    g = guard_cell(cell)
    assert g.startswith("'") and unguard_cell(g) == cell


def test_numbers_and_plain_text_untouched() -> None:
    for v in ["-1", "+2.5", "1e-3", "cat", "", "a=b", 3, None]:
        assert guard_cell(v) == v and unguard_cell(v) == v
    df = pd.DataFrame({"a": FORMULAS + ["-1"], "n": np.arange(len(FORMULAS) + 1)})
    g = guard_frame(df)
    assert all(v.startswith("'") for v in g["a"][:-1]) and g["a"].iloc[-1] == "-1"
    pd.testing.assert_frame_equal(unguard_frame(g), df, check_dtype=False)


def _images(folder: Path, n: int = 3) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"i{i}.png" for i in range(n)]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / name)
    return names


def test_csv_export_has_no_live_formula_and_reingests(tmp_path: Path) -> None:
    names = _images(tmp_path / "imgs")
    labels = ["=HYPERLINK(\"http://evil.example\",\"x\")", "-1", "@cat"]
    (tmp_path / "labels.csv").write_text("path,label\n" + "".join(
        f'{n},"{lab.replace(chr(34), chr(34) * 2)}"\n' for n, lab in zip(names, labels)), encoding="utf-8")
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, tmp_path / "labels.csv", image_root=tmp_path / "imgs")
    assert sorted(ws.store.class_names()) == sorted(labels)
    out = export(ws, "csv", tmp_path / "out" / "labels.csv")
    raw = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert not raw.map(lambda v: isinstance(v, str) and v != "" and v[0] in "=+-@\t\r" and v != "-1").any().any()
    assert "'=HYPERLINK" in out.read_text()
    ws2 = Workspace.create(tmp_path / "ws2")
    ingest(ws2, out, image_root=tmp_path / "imgs")  # our own export reads back to the same classes
    assert sorted(ws2.store.class_names()) == sorted(labels)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig", "utf-32"])
def test_utf16_manifest_is_decoded(tmp_path: Path, encoding: str) -> None:
    names = _images(tmp_path / "imgs")
    text = "path,label\n" + "".join(f"{n},chat noir é\n" for n in names)
    (tmp_path / "labels.csv").write_bytes(text.encode(encoding))
    expected = {"utf-16": "utf-16", "utf-16-le": "utf-16-le", "utf-16-be": "utf-16-be", "utf-8-sig": "utf-8-sig",
                "utf-32": "utf-32"}[encoding]
    assert sniff_encoding(tmp_path / "labels.csv") == expected
    ws = Workspace.create(tmp_path / "ws")
    rep = ingest(ws, tmp_path / "labels.csv", image_root=tmp_path / "imgs")
    assert rep.added == 3 and ws.store.class_names() == ["chat noir é"]


def test_undecodable_manifest_does_not_advise_latin1(tmp_path: Path) -> None:
    _images(tmp_path / "imgs")
    (tmp_path / "labels.csv").write_bytes(b"path,label\ni0.png,caf\xe9\n")
    ws = Workspace.create(tmp_path / "ws")
    with pytest.raises(IngestError) as err:
        ingest(ws, tmp_path / "labels.csv", image_root=tmp_path / "imgs")
    assert "latin1" not in str(err.value) and "UTF-8" in str(err.value)


def test_single_row_error_shows_the_real_reason(tmp_path: Path) -> None:
    _images(tmp_path / "imgs", 1)
    (tmp_path / "labels.csv").write_text('path,label\ni0.png,"  "\n')  # only a blank label: fine, unlabelled
    (tmp_path / "bad.csv").write_text("path,label\ni0.png,\"a\nb\"\n")
    ws = Workspace.create(tmp_path / "ws")
    with pytest.raises(IngestError) as err:
        ingest(ws, tmp_path / "bad.csv", image_root=tmp_path / "imgs")
    msg = str(err.value)
    assert "i0.png" in msg and "Paths must be relative" not in msg and "row 2" not in msg.split("(")[1][:8]
