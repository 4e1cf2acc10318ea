"""Shared fixtures: temporary workspaces and seeded synthetic data, computed once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CURATION_OFFLINE", "1")
os.environ.setdefault("CURATION_WORKER_IDLE", "30")  # warm workers started by tests do not linger for minutes

from curation.data.workspace import Workspace  # noqa: E402

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
APP = Path(__file__).resolve().parent.parent / "app.py"


def open_page(page: str | None = None, *, timeout: float = 60, no_errors: bool = False):
    """The app through ``AppTest``, entered at ``app.py`` (as a browser would) and switched to ``page``
    (``"pages/…py"``), after checking that no exception (and, with ``no_errors``, no ``st.error``) shows."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=timeout)
    at.run()
    if page is not None:
        at.switch_page(page).run()
    assert_ok(at, no_errors=no_errors)
    return at


def assert_ok(at, *, no_errors: bool = True) -> None:
    """No exception on the page and, with ``no_errors``, no ``st.error`` either."""
    assert not at.exception, [e.message for e in at.exception]
    if no_errors:
        assert not at.error, [e.value for e in at.error]


@pytest.fixture(autouse=True)
def isolate_apptest():
    """What AppTest leaves behind in this process, undone around every test: Streamlit's caches (they outlive
    AppTest instances) are cleared, and the real ``__main__`` is put back (AppTest runs pages as
    ``__main__``; a later multiprocessing spawn would re-run the page script)."""
    main = sys.modules.get("__main__")
    _clear_streamlit_caches()
    yield
    _clear_streamlit_caches()
    if main is not None:
        sys.modules["__main__"] = main


def _clear_streamlit_caches() -> None:
    st = sys.modules.get("streamlit")
    if st is not None:
        st.cache_resource.clear()
        st.cache_data.clear()


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """An empty single-label workspace."""
    return Workspace.create(tmp_path / "ws")


@pytest.fixture(scope="session")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """Seeded separable blobs: (600, 32) float32 L2-normalised vectors and (600,) int labels in 0..5."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(6, 32)) * 3
    y = np.repeat(np.arange(6), 100)
    x = centers[y] + rng.normal(size=(600, 32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), y


needs_fashion = pytest.mark.skipif(not FASHION_DIR.exists(),
                                   reason="apt-get install dataset-fashion-mnist for real-image tests")


def pytest_collection_modifyitems(items):
    """Browser tests are slow tests too: the fast tier (``-m "not slow"``) skips them."""
    for item in items:
        if item.get_closest_marker("browser") is not None:
            item.add_marker(pytest.mark.slow)
