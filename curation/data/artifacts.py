"""Keyed artifacts on disk: arrays (.npy, memory-mapped), tables (.parquet), JSON, each with a meta record."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curation.data.atomic import atomic_write

log = logging.getLogger(__name__)


class ArtifactError(RuntimeError):
    """An artifact that is missing, tampered with or unreadable; the message says what to do."""


def make_key(config: dict[str, Any]) -> str:
    """Stable 16-hex key of a JSON-able config (the config that produced an artifact)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


class Artifacts:
    """Artifacts under ``root/<kind>/<key>.<ext>``, each with ``<key>.meta.json`` holding config and sha256.

    Writes go to a temporary file and are renamed into place, so a kill never leaves a half artifact
    under its final name. Loading never unpickles (``allow_pickle=False``).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, kind: str, key: str, ext: str) -> Path:
        d = self.root / kind
        if not d.is_dir():
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError:  # a read-only workspace: reading finds nothing there, writing says why
                pass
        return d / f"{key}.{ext}"

    def _meta_path(self, kind: str, key: str) -> Path:
        return self.path(kind, key, "meta.json")

    def meta(self, kind: str, key: str) -> dict[str, Any] | None:
        p = self._meta_path(kind, key)
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def exists(self, kind: str, key: str) -> bool:
        m = self.meta(kind, key)
        return m is not None and all(self.path(kind, key, e).exists() for e in m.get("files", []))

    def _finish(self, kind: str, key: str, files: dict[str, Path], config: dict[str, Any],
                extra: dict[str, Any] | None) -> None:
        meta = {"kind": kind, "key": key, "config": config, "created": time.time(),
                "files": list(files), "sha256": {e: file_sha256(p) for e, p in files.items()}, **(extra or {})}
        atomic_write(self._meta_path(kind, key), json.dumps(meta, indent=1, default=str))

    def save_array(self, kind: str, key: str, arr: np.ndarray, *, config: dict[str, Any],
                   extra: dict[str, Any] | None = None, name: str = "npy") -> Path:
        """Save one array (``name`` distinguishes several arrays of one artifact, e.g. ``ids.npy``)."""
        return self.save_arrays(kind, key, {name: arr}, config=config, extra=extra)[name]

    def save_arrays(self, kind: str, key: str, arrays: dict[str, np.ndarray], *, config: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> dict[str, Path]:
        files = {}
        for name, arr in arrays.items():
            ext = name if name.endswith("npy") else f"{name}.npy"
            final = self.path(kind, key, ext)
            atomic_write(final, partial(_save_npy, arr))
            files[ext] = final
        self._finish(kind, key, files, config, extra)
        return {n: files[n if n.endswith("npy") else f"{n}.npy"] for n in arrays}

    def load_array(self, kind: str, key: str, *, name: str = "npy", mmap: bool = True,
                   verify: bool = False) -> np.ndarray | None:
        """Load a saved array read-only (memory-mapped), or None when absent."""
        ext = name if name.endswith("npy") else f"{name}.npy"
        if not self.exists(kind, key):
            return None
        p = self.path(kind, key, ext)
        if verify:
            self.verify(kind, key)
        arr = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
        if not mmap:
            arr.setflags(write=False)
        return arr

    def save_frame(self, kind: str, key: str, df: pd.DataFrame, *, config: dict[str, Any],
                   extra: dict[str, Any] | None = None) -> Path:
        final = self.path(kind, key, "parquet")
        atomic_write(final, df.to_parquet)
        self._finish(kind, key, {"parquet": final}, config, extra)
        return final

    def load_frame(self, kind: str, key: str) -> pd.DataFrame | None:
        if not self.exists(kind, key):
            return None
        return pd.read_parquet(self.path(kind, key, "parquet"))

    def save_json(self, kind: str, key: str, obj: Any, *, config: dict[str, Any]) -> Path:
        final = self.path(kind, key, "json")
        atomic_write(final, json.dumps(obj, default=str))
        self._finish(kind, key, {"json": final}, config, None)
        return final

    def load_json(self, kind: str, key: str) -> Any | None:
        if not self.exists(kind, key):
            return None
        return json.loads(self.path(kind, key, "json").read_text())

    def register_file(self, kind: str, key: str, ext: str, *, config: dict[str, Any],
                      extra: dict[str, Any] | None = None) -> Path:
        """Record meta (and hash) for a file written elsewhere under ``path(kind, key, ext)``."""
        p = self.path(kind, key, ext)
        self._finish(kind, key, {ext: p}, config, extra)
        return p

    def verify(self, kind: str, key: str) -> None:
        """Raise ArtifactError when a file of the artifact no longer matches its recorded sha256, or the meta
        record names another artifact (one copied from another key)."""
        m = self.meta(kind, key)
        if m is None:
            raise ArtifactError(f"Artifact {kind}/{key} has no meta record; recompute it.")
        for ext, digest in m.get("sha256", {}).items():
            p = self.path(kind, key, ext)
            if not p.exists() or file_sha256(p) != digest:
                raise ArtifactError(f"Artifact {p} was modified or truncated after it was written; delete it "
                                    "(or run `python -m curation doctor --repair`) and recompute.")
        if m.get("key", key) != key or m.get("kind", kind) != kind:
            raise ArtifactError(f"Artifact {self._meta_path(kind, key)} records the key "
                                f"{m.get('kind')}/{m.get('key')}, not its own; delete it and recompute.")

    def list(self) -> pd.DataFrame:
        """Every artifact: kind, key, created, files, config."""
        rows = []
        for meta_path in sorted(self.root.glob("*/*.meta.json")):
            try:
                m = json.loads(meta_path.read_text())
            except (OSError, json.JSONDecodeError):
                rows.append({"kind": meta_path.parent.name, "key": meta_path.name.split(".")[0],
                             "created": None, "files": [], "config": None})
                continue
            rows.append({k: m.get(k) for k in ("kind", "key", "created", "files", "config")})
        return pd.DataFrame(rows, columns=["kind", "key", "created", "files", "config"])

    def delete(self, kind: str, key: str) -> None:
        for p in (self.root / kind).glob(f"{key}.*"):
            p.unlink(missing_ok=True)


def _save_npy(arr: np.ndarray, path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
