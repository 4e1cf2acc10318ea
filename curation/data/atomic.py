"""One way to write a file: a unique temporary name beside it, fsync, rename, fsync of the folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

Writer = Callable[[Path], None]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()
"""What ``open(path, "w")`` would give a new file (mkstemp's own 0600 would hide exports from other accounts)."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform without directory fds: the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], content: bytes | str | Writer, *, durable: bool = True) -> Path:
    """Write ``path`` so that a reader sees the old file or the new one, never half of either.

    Parameters
    ----------
    path : the destination; its folder is created when missing.
    content : bytes or text (UTF-8), or a function that writes the file at the temporary path it is given
        (``np.save``, ``df.to_parquet``, ``safetensors.torch.save_file``, ...).
    durable : fsync the file and its folder (the default). False only for caches that are rebuilt when lost
        (thumbnails): the write is still all-or-nothing, just not forced to disk before returning.

    The temporary name is unique per call (two processes writing one key never share it), the file is
    fsynced before the rename and the folder after it, so a crash leaves either version, never a mix.
    A failed write leaves no temporary file behind. Returns the path.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        if callable(content):
            os.close(fd)
            fd = -1
            content(tmp)
        else:
            data = content.encode() if isinstance(content, str) else bytes(content)
            with os.fdopen(fd, "wb") as f:
                fd = -1
                f.write(data)
        os.chmod(tmp, _MODE)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(dest.parent)
    return dest
