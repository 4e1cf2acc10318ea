"""The real Streamlit app in a subprocess and headless Chromium sessions on it (browser tests, benchmarks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class AppServer:
    """``streamlit run app.py`` on a free 127.0.0.1 port, in its own process group (so it can be killed whole).

    Parameters
    ----------
    workspace : the workspace folder the app opens.
    log : file that receives the server's output (appended, so restarts keep one log).
    """

    def __init__(self, workspace: Path, log: Path) -> None:
        self.workspace, self.log = Path(workspace), Path(log)
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, *, timeout: float = 90.0) -> str:
        """Start the server and wait for ``/_stcore/health``; returns its base URL."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
                 "--server.address", "127.0.0.1", "--server.port", str(port), "--", "--workspace",
                 str(self.workspace)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "CURATION_WARM_UMAP": "0"})
        self.url = f"http://127.0.0.1:{port}"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1) as r:
                    if r.read() == b"ok":
                        return self.url
            except OSError:
                time.sleep(0.3)
        self.kill()
        raise RuntimeError(f"streamlit did not answer {self.url}/_stcore/health within {timeout:.0f} s; see {self.log}")

    def kill(self) -> None:
        """SIGKILL the server's whole process group (the server and anything it started in its group)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def stop(self) -> None:
        """Ask the server to exit (SIGTERM), killing it when it does not within 20 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``) on Debian's binary."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def wait_idle(page: Any, timeout: float = 60_000) -> None:
    """Wait until Streamlit has finished the current script run of ``page``."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


def pick_batch(page: Any, store: Any, batch: int, *, timeout: float = 60_000) -> None:
    """On the History page, choose ``batch`` in the batch picker by typing its text; wait for its Undo button.

    The picker lists the batches that existed at the page's last script run.
    """
    rec = store.batches(limit=1_000_000).loc[batch]
    page.locator(".st-key-history_batch").click()
    page.keyboard.type(f"Batch {batch} · {rec['source']} · {rec['n_events']} events · {rec['note']}")
    page.keyboard.press("Enter")
    page.get_by_role("button", name=f"Undo batch {batch}", exact=True).wait_for(timeout=timeout)


def click_undo(page: Any, batch: int, *, timeout: float = 60_000) -> None:
    """Click "Undo batch N", ticking the confirmation a big batch asks for first (curation.ui.widgets.BIG_UNDO)."""
    sure = page.get_by_text("Yes, undo", exact=False)
    if sure.count():
        sure.first.click()
        wait_idle(page)
    page.get_by_role("button", name=f"Undo batch {batch}", exact=True).click(timeout=timeout)


def errors_shown(page: Any) -> list[str]:
    """Texts of the exceptions and error boxes on a page (empty when there are none)."""
    boxes = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
    return [boxes.nth(i).inner_text() for i in range(boxes.count())]
