"""Confinement: the hosts the server answers for and the folders the app may open, read and export to."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

ROOTS_ENV = "CURATION_ALLOWED_ROOTS"
"""Folders the app may use, separated by ``os.pathsep`` (also ``-- --allow-root DIR``, repeatable)."""
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
"""Hosts always accepted; others only when listed in ``server.allowedHosts``."""


class PathRefused(ValueError):
    """A path outside the folders the app was started for; the message says which and how to allow it."""


def parse_roots(argv: Sequence[str], env: Mapping[str, str], workspace: Path | str) -> list[Path]:
    """The folders the app may use: ``--allow-root`` arguments and ``$CURATION_ALLOWED_ROOTS``, else the launch
    workspace's parent folder and the home folder. Unknown arguments are ignored."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--allow-root", action="append", default=[])
    args, _ = parser.parse_known_args(list(argv))
    raw = [*args.allow_root, *[p for p in env.get(ROOTS_ENV, "").split(os.pathsep) if p.strip()]]
    if not raw:
        raw = [str(Path(workspace).expanduser().resolve().parent), str(Path.home())]
    roots: list[Path] = []
    for r in raw:
        p = Path(r).expanduser().resolve()
        if p not in roots:
            roots.append(p)
    return roots


def confine(path: Path | str, roots: Sequence[Path], *, what: str) -> Path:
    """``path`` resolved (``~``, ``..`` and symbolic links followed) when it lies under one of ``roots``.

    Raises
    ------
    PathRefused naming the path, the allowed folders and how to allow another one.
    """
    p = Path(str(path).strip()).expanduser().resolve()
    if any(p == r or p.is_relative_to(r) for r in roots):
        return p
    raise PathRefused(f"Refusing to {what} {p}: it is outside the folders this app may use "
                      f"({', '.join(map(str, roots))}). Restart the app with `-- --allow-root FOLDER` (or "
                      f"${ROOTS_ENV}) to allow another folder.")


def host_allowed(host: str | None, listed: Sequence[str] = ()) -> bool:
    """Whether a request's ``Host`` header names this server: 127.0.0.1, localhost, ::1 or one of ``listed``
    (``server.allowedHosts``: exact names, ``*.domain`` wildcards, ``*`` for any). The port is ignored."""
    if not host:
        return False
    try:
        parts = urlsplit(f"//{host}")
        name = (parts.hostname or "").lower().rstrip(".")
        _ = parts.port  # a malformed port is refused
    except ValueError:
        return False
    if not name or parts.username is not None or parts.path:
        return False
    for pattern in (*LOCAL_HOSTS, *listed):
        pat = str(pattern).strip().lower().rstrip(".")
        if pat == "*" or name == pat or (pat.startswith("*.") and name.endswith(pat[1:])):
            return True
    return False
