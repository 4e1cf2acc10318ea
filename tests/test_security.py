"""Safe by default: localhost only, XSRF on, no raw HTML, no unpickling, no files served from outside the roots."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curation.data.artifacts import Artifacts
from curation.data.ingest import ingest
from curation.data.workspace import Workspace, WorkspaceError

ROOT = Path(__file__).resolve().parent.parent
UI_CODE = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py")), *sorted((ROOT / "curation" / "ui").glob("*.py"))]
ENGINE_CODE = sorted((ROOT / "curation").rglob("*.py"))
LAUNCHERS = [*sorted((ROOT / "scripts").glob("*")), ROOT / "README.md", ROOT / ".streamlit" / "config.toml",
             *sorted((ROOT / "benchmarks").glob("*.py")),
             *[f for f in sorted((ROOT / "tests").glob("*.py")) if f.name != Path(__file__).name]]


def _hits(files: list[Path], pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [f"{f.relative_to(ROOT)}:{n}: {line.strip()}" for f in files if f.is_file()
            for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1) if rx.search(line)]


def test_server_binds_localhost_with_xsrf() -> None:
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    server = config["server"]
    assert server["address"] in ("127.0.0.1", "localhost")
    assert server.get("enableXsrfProtection", True) is True
    assert server.get("enableStaticServing", False) is False
    assert server.get("enableCORS", True) is True


def test_nothing_starts_a_server_on_all_interfaces() -> None:
    """No launcher, doc command or code passes a wildcard address (0.0.0.0 or ::) to the server."""
    assert _hits(LAUNCHERS + UI_CODE + ENGINE_CODE, r"0\.0\.0\.0|server\.address[= ]+[\"']?::") == []


def test_no_raw_html_rendering() -> None:
    """User text (labels, prompts, file names, notes) is never rendered as HTML: no page or UI helper uses
    ``unsafe_allow_html``, ``st.html`` or HTML components at all."""
    assert _hits(UI_CODE, r"unsafe_allow_html|\bst\.html\(|components\.v1|components\.html") == []


def test_nothing_unpickles() -> None:
    """Artifacts and checkpoints load without pickle: no pickle, no ``allow_pickle=True``, torch.load only with
    ``weights_only=True``."""
    assert _hits(ENGINE_CODE, r"^\s*(import|from) (pickle|cPickle|dill|cloudpickle|joblib)\b") == []
    assert _hits(ENGINE_CODE, r"allow_pickle\s*=\s*True|read_pickle|pickle\.loads?\(") == []
    loads = _hits(ENGINE_CODE, r"torch\.load\(")
    assert loads and all("weights_only=True" in h for h in loads), loads


def test_pickled_array_artifact_is_refused(tmp_path: Path) -> None:
    arts = Artifacts(tmp_path)
    arts.save_array("x", "k", np.arange(3), config={})
    np.save(arts.path("x", "k", "npy"), np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        arts.load_array("x", "k", mmap=False)


def test_manifest_paths_outside_the_root_are_refused(ws: Workspace, tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    Image.new("RGB", (4, 4)).save(root / "ok.png")
    (root / "m.csv").write_text("path,label\nok.png,a\n../../etc/passwd,a\n/etc/passwd,a\n"
                                "../../../../../../../../etc/hostname,a\n")
    r = ingest(ws, root / "m.csv")
    assert r.added == 1 and len(r.skipped) == 3
    assert set(ws.store.samples()["path"]) == {"ok.png"}
    assert {str(p) for p in ws.allowed_roots()} == {str(ws.root), str(root)}


def test_image_swapped_for_a_symlink_out_is_not_served(ws: Workspace, tmp_path: Path) -> None:
    """A file replaced after ingest by a link to a secret outside the roots is refused, not read."""
    root = tmp_path / "data"
    root.mkdir()
    Image.new("RGB", (4, 4)).save(root / "a.png")
    ingest(ws, root)
    sid = int(ws.store.sample_ids()[0])
    secret = tmp_path / "secret.png"
    Image.new("RGB", (4, 4), (9, 9, 9)).save(secret)
    (root / "a.png").unlink()
    os.symlink(secret, root / "a.png")
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        ws.resolve_image(sid)
