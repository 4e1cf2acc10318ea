"""kill -9 of the Streamlit server in the middle of a 100,000-sample undo started from the History page."""

from __future__ import annotations

from pathlib import Path

import pytest
from appserver import CHROMIUM, ROOT, AppServer, chromium, click_undo, errors_shown, pick_batch, wait_idle

from benchmarks.reliability import make_workspace, server_kill_trial

SHOTS = ROOT / "test-artifacts" / "screenshots"
N = 100_000

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install chromium for browser tests")]


def test_server_killed_mid_bulk_undo(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", N)
    store = ws.store
    ids = store.sample_ids()
    big = store.set_label(ids[2:], 2, source="bulk", note=f"relabel {N - 2:,}")
    small = store.set_label(ids[:2], 4, note="small edit")  # other samples: each batch can be undone whole
    assert store.batches().loc[big, "n_events"] > N  # positives set and old ones cleared, one batch
    server = AppServer(ws.root, tmp_path / "server.log")
    server.start()
    try:
        with chromium() as browser:
            # an acknowledged action first: the page shows the small edit undone
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(f"{server.url}/History")
            page.get_by_role("button", name=f"Undo batch {small}", exact=True).click(timeout=120_000)
            page.get_by_text("Already undone by batch").wait_for(timeout=60_000)
            acked = int(store.batches().loc[small, "undone_by"])
            page.close()

            res = server_kill_trial(server, browser, store.path, delay=0.0, batch=big)
            assert res["locked"], "the server never opened the undo's write transaction"
            assert res["ok"], res
            assert store.check() == [] and store.batches().loc[small, "undone_by"] == acked

            # the restarted app shows the acknowledged undo, and the interrupted one can be done again
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(f"{server.url}/History")
            page.get_by_role("button", name="Undo batch").first.wait_for(timeout=120_000)
            pick_batch(page, store, small)
            page.get_by_text(f"Already undone by batch {acked}.").wait_for(timeout=60_000)
            pick_batch(page, store, big)
            if not res["committed"]:
                click_undo(page, big)
            page.get_by_text("Already undone by batch").wait_for(timeout=120_000)
            wait_idle(page)
            assert errors_shown(page) == []
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "server_kill_after_restart.png"), full_page=True)
    finally:
        server.stop()
    undo = int(store.batches().loc[big, "undone_by"])
    assert store.batches().loc[undo, "n_events"] == store.batches().loc[big, "n_events"]
    assert store.check() == []
    assert "Traceback" not in server.log_text()
