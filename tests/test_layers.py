"""Layering rules: only curation.ui imports streamlit; importing the engine stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE = [p for p in (ROOT / "curation").rglob("*.py") if "ui" not in p.relative_to(ROOT / "curation").parts[:1]]
HEAVY = ("torch", "open_clip", "umap", "faiss", "streamlit")


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_engine_never_imports_streamlit() -> None:
    offenders = [str(p) for p in ENGINE if "streamlit" in p.read_text() and
                 any(isinstance(n, (ast.Import, ast.ImportFrom)) and "streamlit" in ast.unparse(n)
                     for n in ast.walk(ast.parse(p.read_text())))]
    assert offenders == []


def test_heavy_libraries_are_imported_inside_functions() -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(_top_level_imports(p) & set(HEAVY)) for p in ENGINE}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_import_curation_stays_light() -> None:
    mods = [f"curation.{p.stem}" for p in ENGINE if p.stem not in ("__init__", "__main__")]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in mods) +
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
