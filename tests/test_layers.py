"""Layering rules: the loop in the package names, imports pointing one way, no cycles, a light engine."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "curation"
HEAVY = ("torch", "open_clip", "umap", "faiss", "streamlit")
# The loop, bottom to top: a module may import its own package and the ones before it, never after.
LAYERS = ("core", "data", "features", "structure", "models", "labels", "runtime", "ui", "cli")
MAX_LINES = 600  # an engine file over this says at its top why it is one cohesive thing


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in PKG.rglob("*.py")}
ENGINE = [p for m, p in MODULES.items() if not m.startswith("curation.ui")]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return "cli" if parts[1] in ("cli", "__main__", "api") or parts[1].startswith("cli_") else parts[1]


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Every curation module (or package) this file imports, lazy imports inside functions included."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    return out


def _graph() -> dict[str, set[str]]:
    return {m: {d for d in _imports(p) if d in MODULES and d != m and not m.startswith(d + ".")}
            for m, p in MODULES.items()}


def test_engine_never_imports_streamlit() -> None:
    offenders = [str(p) for p in ENGINE if any(d.split(".")[0] == "streamlit" for d in _imports(p))]
    assert offenders == []


def test_heavy_libraries_are_imported_inside_functions() -> None:
    offenders = {str(p.relative_to(ROOT)): sorted({d.split(".")[0] for d in _imports(p, top_level_only=True)}
                                                  & set(HEAVY)) for p in ENGINE}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_every_module_lives_in_a_layer() -> None:
    loose = [m for m in MODULES if m != "curation" and _layer(m) not in LAYERS]
    assert loose == [], f"put these in one of {LAYERS}"


def test_imports_point_down_the_loop() -> None:
    """Lazy imports count too: a function-level import upward is still an upward import."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = sorted(f"{m} -> {d}" for m, deps in _graph().items() for d in deps
                    if _layer(m) in rank and _layer(d) in rank and rank[_layer(d)] > rank[_layer(m)])
    assert upward == []


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_engine_files_stay_small_or_say_why() -> None:
    big = [str(p.relative_to(ROOT)) for p in ENGINE
           if len(p.read_text().splitlines()) > MAX_LINES and "one cohesive" not in p.read_text()[:600].lower()]
    assert big == []


def test_import_curation_stays_light() -> None:
    mods = [m for m in MODULES if not m.startswith("curation.ui") and not m.endswith("__main__")]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in mods) +
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
