"""Two real browser sessions and a CLI process labelling one workspace at once: every action lands once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from appserver import CHROMIUM, ROOT, AppServer, chromium, errors_shown, pick_batch, wait_idle
from PIL import Image

from curation.data.ingest import ingest
from curation.data.store import Store
from curation.data.workspace import Workspace

SHOTS = ROOT / "test-artifacts" / "screenshots"
CLI_ACTIONS = 1000
MIN_ROUNDS = 4

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install chromium for browser tests")]

# The CLI writer: CLI_ACTIONS label changes through the store API, each one a batch that changes something
# (its samples alternate between two classes), paced so that it overlaps the browser sessions.
_CLI = r"""
import json, sys, time
from curation.data.store import Store
store = Store(sys.argv[1]); n = int(sys.argv[2]); ids = json.loads(sys.argv[3]); a, b = json.loads(sys.argv[4])
for i in range(n):
    sample, visit = ids[i % len(ids)], i // len(ids)
    batch = store.set_label([sample], a if visit % 2 == 0 else b, source="human", actor="cli", note=f"cli-{i}")
    print(json.dumps(batch), flush=True)
    time.sleep(0.04)
"""


def _workspace(root: Path) -> Workspace:
    """120 small images in three class folders, ingested (one import batch)."""
    rng = np.random.default_rng(0)
    for k in range(3):
        (root / "imgs" / f"class{k}").mkdir(parents=True)
        for i in range(40):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                root / "imgs" / f"class{k}" / f"{i}.png")
    ws = Workspace.create(root / "ws")
    ingest(ws, root / "imgs")
    return ws


def _undone_by(store: Store, batch: int) -> list[int]:
    hist = store.batches(limit=100_000)
    return hist.index[(hist["undoes"] == batch) & (hist["source"] == "undo")].tolist()


def _clean(page) -> None:
    assert errors_shown(page) == []
    assert "locked" not in page.locator("body").inner_text().lower()


def test_two_browsers_and_cli_label_at_once(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    store = ws.store
    samples = store.samples()
    by_class = {k: samples.index[samples["path"].str.startswith(f"class{k}/")].to_numpy() for k in range(3)}
    cls = store.classes().index.tolist()
    server = AppServer(ws.root, tmp_path / "server.log")
    url = server.start()
    cli = subprocess.Popen([sys.executable, "-c", _CLI, str(store.path), str(CLI_ACTIONS),
                            json.dumps(by_class[2].tolist()), json.dumps(cls[:2])], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clicked: dict[str, list[int]] = {"A": [], "B": []}
    try:
        with chromium() as browser:
            pages = {}
            for name in ("A", "B"):  # two contexts: two independent Streamlit sessions
                pages[name] = browser.new_context(viewport={"width": 1300, "height": 1000}).new_page()
                pages[name].goto(f"{url}/History")
            try:
                rounds = _drive(pages, store, by_class, cls, cli, clicked)
            finally:
                SHOTS.mkdir(parents=True, exist_ok=True)
                for name, page in pages.items():
                    page.screenshot(path=str(SHOTS / f"concurrency_session_{name}.png"), full_page=True)
        out, err = cli.communicate(timeout=300)
    finally:
        if cli.poll() is None:
            cli.kill()
        server.stop()
    assert cli.returncode == 0 and "locked" not in err and "Traceback" not in err, err[-2000:]
    acks = [json.loads(line) for line in out.splitlines()]
    hist = store.batches(limit=100_000)
    # the CLI: every action acknowledged and present exactly once
    cli_rows = hist[hist["actor"] == "cli"]
    assert len(acks) == CLI_ACTIONS and None not in acks
    assert sorted(cli_rows.index.tolist()) == sorted(acks)
    assert sorted(cli_rows["note"]) == sorted(f"cli-{i}" for i in range(CLI_ACTIONS))
    # the browsers: every click wrote exactly one undo batch of its target
    assert rounds >= MIN_ROUNDS
    for name in ("A", "B"):
        assert len(clicked[name]) == rounds
        for target in clicked[name]:
            assert len(_undone_by(store, target)) == 1, (name, target)
    assert (hist["source"] == "undo").sum() == 2 * rounds
    assert store.check() == []
    assert "Traceback" not in server.log_text() and "locked" not in server.log_text()


def _drive(pages: dict, store: Store, by_class: dict, cls: list[int], cli: subprocess.Popen,
           clicked: dict[str, list[int]]) -> int:
    """Rounds of simultaneous undos in both sessions, until the CLI is done; returns the number of rounds.

    A page lists the batches that existed at its last script run, so every batch picked here was written
    before the session's previous interaction: the targets of round r are made during round r - 1.
    """

    def targets(r: int) -> dict[str, int]:
        return {name: store.set_label([int(by_class[k][r % 40])], cls[2], actor="seed", note=f"target-{name}-{r}")
                for name, k in (("A", 0), ("B", 1))}

    rounds, pending = 0, targets(0)
    for page in pages.values():
        page.reload()
        page.get_by_role("button", name="Undo batch").first.wait_for(timeout=90_000)
        wait_idle(page)
    while (cli.poll() is None or rounds < MIN_ROUNDS) and rounds < 40:
        mine, pending = pending, targets(rounds + 1)
        for name, page in pages.items():
            pick_batch(page, store, mine[name])
        for name, page in pages.items():  # the two clicks reach the server together
            page.get_by_role("button", name=f"Undo batch {mine[name]}", exact=True).click()
            clicked[name].append(mine[name])
        for page in pages.values():
            page.get_by_text("Already undone by batch").wait_for(timeout=60_000)
            wait_idle(page)
            _clean(page)
        # on its next interaction, each session sees the other's undo, then the CLI's newest batch
        for name, other in (("A", "B"), ("B", "A")):
            page = pages[name]
            newest = store.batches(limit=50)
            newest_cli = int(newest.index[newest["actor"] == "cli"][0])
            pick_batch(page, store, mine[other])
            (undo,) = _undone_by(store, mine[other])
            page.get_by_text(f"Already undone by batch {undo}.").wait_for(timeout=60_000)
            pick_batch(page, store, newest_cli)
            assert page.get_by_role("button", name=f"Undo batch {newest_cli}", exact=True).is_enabled()
            _clean(page)
        rounds += 1
    return rounds
