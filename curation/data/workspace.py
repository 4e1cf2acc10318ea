"""A workspace folder: ``curation.db`` + ``artifacts/`` + ``thumbs/``, and its dataset fingerprint."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from curation.data.artifacts import Artifacts
from curation.data.store import Store, StoreError

log = logging.getLogger(__name__)

DB_NAME = "curation.db"


class WorkspaceError(StoreError):
    """A workspace that cannot be opened or created; the message says what to do."""


class Workspace:
    """An opened workspace.

    Attributes
    ----------
    root : Path, the folder.
    store : Store, the label store.
    artifacts : Artifacts, keyed arrays and tables under ``artifacts/``.
    thumbs : Path, the thumbnail cache folder.
    images : Path, the folder where the workspace keeps images it owns (the demo writes here).
    """

    def __init__(self, root: Path, store: Store) -> None:
        self.root = root
        self.store = store
        self.artifacts = Artifacts(root / "artifacts")
        self.thumbs = root / "thumbs"
        self.images = root / "images"
        if self.read_only:  # thumbnails of a read-only workspace are cached outside it
            tag = hashlib.sha1(str(root).encode()).hexdigest()[:12]
            self.thumbs = Path(tempfile.gettempdir()) / f"curation-thumbs-{os.getuid() if hasattr(os, 'getuid') else 0}" / tag

    @property
    def read_only(self) -> bool:
        """True when the workspace cannot be written: browse, search and export elsewhere work; label changes,
        ingest and computations raise :class:`~curation.data.store.ReadOnlyStore`."""
        return self.store.read_only

    @property
    def read_only_reason(self) -> str:
        return self.store.read_only_reason

    @classmethod
    def create(cls, root: Path | str, *, task: str = "single", exist_ok: bool = True) -> Workspace:
        """Create (or open, when ``exist_ok``) a workspace folder."""
        root = Path(root).expanduser().resolve()
        if root.exists() and not root.is_dir():
            raise WorkspaceError(f"{root} is a file, not a folder; choose another workspace path.")
        if (root / DB_NAME).exists():
            if not exist_ok:
                raise WorkspaceError(f"{root} already holds a workspace; open it instead.")
            return cls.open(root)
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("artifacts", "thumbs", "images"):
            (root / sub).mkdir(exist_ok=True)
        store = Store(root / DB_NAME, create=True)
        store.set_task(task)
        log.info("created workspace %s (%s-label)", root, task)
        return cls(root, store)

    @classmethod
    def open(cls, root: Path | str, *, read_only: bool = False) -> Workspace:
        """Open an existing workspace, migrating an older schema; errors say what to do.

        A workspace that cannot be written (read-only folder, file or mount) opens read-only (see
        :attr:`read_only`), writing nothing; so does any workspace when ``read_only``."""
        root = Path(root).expanduser().resolve()
        if not root.exists():
            raise WorkspaceError(f"No folder {root}: create a workspace with `python -m curation init {root}`.")
        if not (root / DB_NAME).exists():
            raise WorkspaceError(f"{root} is not a workspace (no {DB_NAME}): run `python -m curation init {root}`.")
        store = Store(root / DB_NAME, read_only=read_only)
        if not store.read_only:
            for sub in ("artifacts", "thumbs", "images"):
                if not (root / sub).is_dir():
                    (root / sub).mkdir(exist_ok=True)
        return cls(root, store)

    def fingerprint(self, sample_ids: np.ndarray | None = None) -> str:
        """Short hash of the present sample set (ids and content hashes): keys every derived artifact."""
        df = self.store.samples()
        if sample_ids is not None:
            df = df.loc[np.asarray(sample_ids)]
        h = hashlib.sha1()
        h.update(df.index.to_numpy(np.int64).tobytes())
        h.update("\n".join(df["sha1"].tolist()).encode())
        return h.hexdigest()[:16]

    def allowed_roots(self) -> list[Path]:
        """Folders whose files may be read and served: the workspace and every ingested image root."""
        return [self.root, *self.store.roots().values()]

    def resolve_image(self, sample_id: int) -> Path:
        """The image file of a sample, refusing any path that escapes the allowed roots."""
        path = self.store.sample_path(sample_id).resolve()
        if not any(path.is_relative_to(r.resolve()) for r in self.allowed_roots()):
            raise WorkspaceError(f"Refusing to read {path}: it lies outside the workspace and its image folders.")
        return path
