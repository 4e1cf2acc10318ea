"""Host confinement on the real server: a websocket handshake under a foreign Host (DNS rebinding) is refused."""

from __future__ import annotations

import base64
import os
import socket

import pytest
from appserver import AppServer

from curation.data.workspace import Workspace

pytestmark = pytest.mark.slow


def _handshake(port: int, host: str, origin: str) -> str:
    """The status line the server answers a websocket upgrade of ``/_stcore/stream`` with."""
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Protocol: streamlit\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(req.encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    ws = Workspace.create(tmp_path_factory.mktemp("hosts") / "ws")
    app = AppServer(ws.root, ws.root.parent / "server.log")
    app.start()
    yield app
    app.stop()


def test_foreign_host_gets_no_websocket(server: AppServer) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    ok = _handshake(port, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}")
    assert " 101 " in ok, ok  # the control: a local browser gets its websocket
    assert " 101 " in _handshake(port, f"localhost:{port}", f"http://localhost:{port}")
    for host in (f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", "evil.example"):
        line = _handshake(port, host, f"http://{host}")
        assert " 101 " not in line, (host, line)
