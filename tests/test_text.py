"""The one rendering rule for user text (curation.ui.text) and the confinement checks (curation.ui.confine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation.ui.confine import PathRefused, confine, host_allowed, parse_roots
from curation.ui.text import clean, plain

HOSTILE = ["![x](http://127.0.0.1:8765/beacon.png)", "[click](https://evil.example)", "https://evil%2Eexample/login",
           "www.evil.example", "mail@evil.example", "<img src=x onerror=alert(1)>", "&#58;&lt;b&gt;",
           ":material/home: :red[alarm] $x^2$", "**bold** _it_ `code`", "# heading", "javascript:alert(1)",
           "abc\u202egpj.exe", "line\nbreak\rmore"]


@pytest.mark.parametrize("text", HOSTILE)
def test_plain_leaves_no_markup_character_unescaped(text: str) -> None:
    out = plain(text)
    bare = out.replace("\\\\", "").replace("\u2060", "")  # drop escaped backslashes, then every punctuation must follow a backslash
    for i, ch in enumerate(bare):
        if ch in "!\"#$%&'()*+,-./:;<=>?@[]^_`{|}~":
            assert i > 0 and bare[i - 1] == "\\", (text, out, i)
    assert "\u202e" not in out and "\n" not in out and "\r" not in out


def test_plain_escapes_every_scheme_and_escape_character() -> None:
    for ch in "%&/<>[]()!*_`#$~|\\":
        assert plain(ch) == "\\" + ch
    for ch in ":@":  # also a word joiner after : and @, before .: no autolink finds http://, www. or a@b.c
        assert plain(ch) == "\\" + ch + "\u2060"
    assert plain(".") == "\u2060\\."
    assert "https\\:\u2060\\/\\/evil\\%2Eexample" in plain("https://evil%2Eexample")
    assert plain("abc\u202egpj") == "abc⟨U\\+202E⟩gpj" and clean("a\u2066b") == "a⟨U+2066⟩b"
    assert "\n" not in plain("a\nb") and clean("a\x00b") == "a b"
    assert plain("tabby cat") == "tabby cat"  # ordinary text is untouched


def test_confine_paths(tmp_path: Path) -> None:
    ws = tmp_path / "projects" / "ws"
    roots = parse_roots([], {}, ws)
    assert roots == [(tmp_path / "projects").resolve(), Path.home().resolve()]
    assert confine(tmp_path / "projects" / "other", roots, what="open") == (tmp_path / "projects" / "other").resolve()
    escape = tmp_path / "projects" / ".." / "secret"
    with pytest.raises(PathRefused, match="outside the folders this app may use"):
        confine(escape, [(tmp_path / "projects").resolve()], what="open")
    link = tmp_path / "projects" / "link"
    link.parent.mkdir(parents=True)
    link.symlink_to("/etc")
    with pytest.raises(PathRefused, match="Refusing to export to /etc"):
        confine(link, [(tmp_path / "projects").resolve()], what="export to")
    listed = parse_roots(["--allow-root", "/data", "--other"], {"CURATION_ALLOWED_ROOTS": "/srv:/mnt"}, ws)
    assert listed == [Path("/data"), Path("/srv"), Path("/mnt")]


def test_hosts() -> None:
    for ok in ("localhost:8501", "127.0.0.1:8501", "[::1]:8501", "LOCALHOST", "localhost."):
        assert host_allowed(ok), ok
    for bad in ("evil.example:8621", "127.0.0.1.evil.example", "localhost@evil.example", "", None, "evil:port"):
        assert not host_allowed(bad), bad
    assert host_allowed("studio.lab:80", ["studio.lab"]) and host_allowed("a.lab", ["*.lab"])
    assert host_allowed("anything", ["*"]) and not host_allowed("lab", ["*.lab"])


def test_app_refuses_paths_outside_its_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sidebar's "open another workspace" and the Home ingest form refuse folders outside the launch roots."""
    from conftest import open_page

    from curation.data.workspace import Workspace

    ws = Workspace.create(tmp_path / "projects" / "ws")
    ws.store.close()
    monkeypatch.setenv("CURATION_WORKSPACE", str(ws.root))
    monkeypatch.setenv("CURATION_ALLOWED_ROOTS", str(tmp_path / "projects"))
    at = open_page(no_errors=True)
    at.sidebar.text_input[0].set_value("/etc")
    at.sidebar.button[0].click().run()
    assert any("Refusing to open the workspace /etc" in e.value.replace("\\", "").replace("\u2060", "")
               for e in at.error), [e.value for e in at.error]
    at = open_page(no_errors=True)
    ingest_box = next(t for t in at.text_input if t.label == "Image folder or manifest file")
    ingest_box.set_value("/etc")
    next(b for b in at.button if b.label == "Ingest").click().run()
    assert any("Refusing to read images from /etc" in e.value.replace("\\", "").replace("\u2060", "")
               for e in at.error), [e.value for e in at.error]
    assert len(ws.store.sample_ids()) == 0


def test_every_page_run_stops_for_a_foreign_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app-level check behind ``server.allowedHosts``: a page run under an unknown Host stops with a message."""
    from types import SimpleNamespace

    from curation.ui import state

    class Stopped(Exception):
        pass

    def stop() -> None:
        raise Stopped

    shown: list[str] = []
    fake = SimpleNamespace(context=SimpleNamespace(headers={"Host": "evil.example:8501"}), error=shown.append,
                           stop=stop)
    monkeypatch.setattr(state, "st", fake)
    with pytest.raises(Stopped):
        state.check_host()
    assert shown and "does not answer for that host name" in shown[0]
    for host in ("localhost:8501", "127.0.0.1:8501"):
        fake.context.headers = {"Host": host}
        state.check_host()  # no stop
