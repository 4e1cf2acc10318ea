"""Image files: full-decode checks with short reasons, normalised RGB loading, cached thumbnails."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from curation.core.progress import ProgressFn, null_progress
from curation.data import sources
from curation.data.atomic import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    from curation.data.workspace import Workspace

log = logging.getLogger(__name__)

MAX_PIXELS = 80_000_000
"""Images with more pixels than this are refused ("too large"), below PIL's own bomb threshold."""

MAX_BYTES = 512 * 1024 * 1024
"""Image files larger than this are refused ("too large") before they are read into memory."""

THUMB_SIZE = 160
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".webp", ".tif",
                              ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k"})
"""File extensions that folder ingest treats as images (case-insensitive)."""

# Our own pixel limit (MAX_PIXELS) is checked right after the header is read and is lower than PIL's
# warning threshold, so PIL's DecompressionBombWarning only duplicates it. (Images past twice PIL's limit
# still raise DecompressionBombError, which we turn into "too large".)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}


class ImageError(Exception):
    """An image file that cannot be used; ``reason`` is short and human-readable ("empty file", ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    """What a successful check learned about an image file.

    Attributes
    ----------
    sha1 : hex SHA-1 of the file bytes (content identity; duplicates share it).
    bytes : file size in bytes.
    width, height : pixel size after EXIF orientation is applied.
    """

    sha1: str
    bytes: int
    width: int
    height: int


# ---------------------------------------------------------------------- checking and loading
def _read_bytes(path: Path) -> bytes:
    """The bytes of a regular file (or of an image embedded in a Parquet / Arrow row, see ``curation.data.sources``);
    pipes, devices and oversized files are refused before reading."""
    if sources.split_ref(path) is not None:
        try:
            return sources.read_bytes(path)
        except FileNotFoundError:
            raise ImageError("file not found") from None
        except Exception as exc:  # noqa: BLE001 - a broken container is one unreadable image
            raise ImageError(f"unreadable: {_short(exc)}") from None
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ImageError("is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise ImageError("not a regular file (a pipe, socket or device)")
        if info.st_size > MAX_BYTES:
            raise ImageError(f"too large: {info.st_size} bytes, limit {MAX_BYTES}")
        data = path.read_bytes()
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except PermissionError:
        raise ImageError("unreadable: permission denied") from None
    except OSError as exc:
        raise ImageError(f"unreadable: {exc.strerror or exc}") from None
    if not data:
        raise ImageError("empty file")
    return data


def _open_decoded(data: bytes, *, max_pixels: int = MAX_PIXELS, draft: int | None = None) -> Image.Image:
    """Open image bytes and fully decode the first frame; errors become ImageError with a short reason."""
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError(f"too large: {_bomb_pixels(exc)} pixels, limit {max_pixels}") from None
    except UnidentifiedImageError:
        fmt = _sniff(data)
        if fmt:
            raise ImageError(f"truncated or corrupt: {fmt} header cannot be read") from None
        raise ImageError("not an image") from None
    except Exception as exc:  # noqa: BLE001 - any parser error means a corrupt header
        raise ImageError(f"truncated or corrupt: {_short(exc)}") from None
    n = int(im.width) * int(im.height)
    if n > max_pixels:
        raise ImageError(f"too large: {n} pixels, limit {max_pixels}")
    if n == 0:
        raise ImageError("truncated or corrupt: image has zero width or height")
    try:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        if draft and im.format == "JPEG":
            im.draft("RGB", (draft, draft))
        im.load()
    except Image.DecompressionBombError as exc:
        raise ImageError(f"too large: {_bomb_pixels(exc)} pixels, limit {max_pixels}") from None
    except Exception as exc:  # noqa: BLE001 - truncated data raises OSError, SyntaxError, EOFError, ValueError...
        raise ImageError(f"truncated or corrupt: {_short(exc)}") from None
    return im


_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
          (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _sniff(data: bytes) -> str | None:
    """The format a file's first bytes announce, so a cut-off header reads as "truncated", not "not an image"."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC if data.startswith(magic)), None)


def _bomb_pixels(exc: Exception) -> str:
    import re

    m = re.search(r"\((\d+) pixels\)", str(exc))
    return m.group(1) if m else "too many"


def _short(exc: Exception) -> str:
    msg = str(exc).strip() or type(exc).__name__
    return msg if len(msg) <= 120 else msg[:117] + "..."


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # noqa: BLE001 - broken EXIF is ignored, as viewers do
        return 1


def check_image(path: Path | str, *, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Open and fully decode an image file, or say in a few words why it cannot be used.

    Parameters
    ----------
    path : the image file.
    max_pixels : refuse images with more pixels than this.

    Returns
    -------
    ImageInfo with the SHA-1 of the file bytes, the size in bytes and the (EXIF-oriented) pixel size.

    Raises
    ------
    ImageError
        ``reason`` is one of "empty file", "not an image", "truncated or corrupt: ...",
        "too large: N pixels, limit M", "too large: N bytes, limit M", "file not found",
        "is a folder, not a file", "not a regular file (...)", "unreadable: ...".
    """
    return check_image_data(_read_bytes(Path(path)), max_pixels=max_pixels)


def check_image_data(data: bytes, *, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """:func:`check_image` on encoded image bytes already in memory (an embedded image)."""
    if not data:
        raise ImageError("empty file")
    im = _open_decoded(data, max_pixels=max_pixels)
    w, h = im.size
    if _orientation(im) in _SWAPS_AXES:
        w, h = h, w
    return ImageInfo(sha1=hashlib.sha1(data).hexdigest(), bytes=len(data), width=int(w), height=int(h))


def to_rgb(im: Image.Image) -> Image.Image:
    """Normalise a decoded image to 8-bit RGB: EXIF orientation applied, alpha composited on white.

    Handles palette (with transparency), LA/RGBA/PA, CMYK, 16- and 32-bit greyscale (scaled to 8 bits),
    float images (scaled by their range), 1-bit and other modes.
    """
    try:
        im = ImageOps.exif_transpose(im) or im
    except Exception:  # noqa: BLE001 - broken EXIF: keep the pixels as stored
        pass
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        else:
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            if mode == "F" and lo >= 0 and hi <= 1:
                arr = arr * 255.0
            elif lo < 0 or hi > 255:
                arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        grey = Image.fromarray(np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8), "L")
        return grey.convert("RGB")
    if mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode in ("L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_image(path: Path | str, *, max_pixels: int = MAX_PIXELS, draft: int | None = None) -> Image.Image:
    """Load an image file as 8-bit RGB (first frame, EXIF-oriented, alpha on white).

    Parameters
    ----------
    path : the image file.
    draft : when set, a JPEG may be decoded at a reduced scale no smaller than ``draft`` pixels
        (fast thumbnails).

    Raises
    ------
    ImageError with a short reason, as :func:`check_image`.
    """
    im = _open_decoded(_read_bytes(Path(path)), max_pixels=max_pixels, draft=draft)
    return to_rgb(im)


# ---------------------------------------------------------------------- thumbnails
def _thumb_candidates(ws: Workspace, sample_id: int, size: int) -> tuple[Path, Path]:
    d = ws.thumbs / str(int(size))
    return d / f"{int(sample_id)}.jpg", d / f"{int(sample_id)}.png"


def render_thumbnail(im: Image.Image, size: int = THUMB_SIZE) -> tuple[Image.Image, bool]:
    """Fit an RGB image into a ``size`` box keeping its aspect ratio.

    Small images (like 28x28) are enlarged by a whole factor with NEAREST, so their pixels stay crisp.

    Returns
    -------
    (thumbnail, upscaled) where ``upscaled`` tells that pixel art was enlarged (best saved as PNG).
    """
    w, h = im.size
    longest = max(w, h)
    if longest * 2 <= size:
        f = size // longest
        return im.resize((w * f, h * f), Image.Resampling.NEAREST), True
    if longest > size:
        im = im.copy()
        im.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return im, False


def thumbnail_path(ws: Workspace, sample_id: int, size: int = THUMB_SIZE) -> Path:
    """The cached thumbnail of a sample, created on demand under ``ws.thumbs/<size>/``.

    Parameters
    ----------
    ws : the workspace (the image is read through ``ws.resolve_image``, which refuses outside paths).
    sample_id : the sample.
    size : longest side in pixels.

    Returns
    -------
    Path of a JPEG (photos) or PNG (enlarged small images) no larger than ``size`` x ``size``.
    A thumbnail older than its image is rebuilt.

    Raises
    ------
    ImageError when the image cannot be read; WorkspaceError when its path is refused.
    """
    src = ws.resolve_image(int(sample_id))
    jpg, png = _thumb_candidates(ws, sample_id, size)
    try:
        src_mtime = sources.mtime(src)
    except OSError:
        raise ImageError("file not found") from None
    for cand in (png, jpg):
        try:
            if cand.stat().st_mtime >= src_mtime:
                return cand
        except OSError:
            continue
    im = load_image(src, draft=size)
    thumb, upscaled = render_thumbnail(im, size)
    dest = png if upscaled or thumb.size[0] * thumb.size[1] <= 64 * 64 else jpg
    dest.parent.mkdir(parents=True, exist_ok=True)
    fmt = {"format": "PNG", "optimize": False} if dest.suffix == ".png" else {"format": "JPEG", "quality": 85}
    atomic_write(dest, lambda tmp: thumb.save(tmp, **fmt), durable=False)  # a cache: rebuilt when lost
    other = jpg if dest == png else png
    other.unlink(missing_ok=True)
    return dest


def make_thumbnails(ws: Workspace, sample_ids: Iterable[int], *, size: int = THUMB_SIZE,
                    progress: ProgressFn | None = None, workers: int | None = None) -> dict[int, Path]:
    """Create (or reuse) the thumbnails of many samples in parallel threads.

    Parameters
    ----------
    sample_ids : (N,) ints.
    size : longest side in pixels.
    progress : ``progress(fraction, message)``; may raise ``Cancelled``.
    workers : threads (default: a few per CPU core; decoding releases the GIL).

    Returns
    -------
    {sample_id: thumbnail path} for the samples that worked; failures are logged and left out.
    """
    progress = progress or null_progress
    ids = [int(i) for i in sample_ids]
    out: dict[int, Path] = {}
    if not ids:
        progress(1.0, "no thumbnails to make")
        return out
    failed = 0
    workers = workers or min(32, (os.cpu_count() or 2) * 2)
    step = max(1, len(ids) // 100)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(thumbnail_path, ws, i, size): i for i in ids}
        try:
            for done, fut in enumerate(as_completed(futures), 1):
                sid = futures[fut]
                try:
                    out[sid] = fut.result()
                except Exception as exc:  # noqa: BLE001 - one bad image never stops the batch
                    failed += 1
                    log.debug("thumbnail of sample %s failed: %s", sid, exc)
                if done % step == 0 or done == len(ids):
                    progress(done / len(ids), f"thumbnails {done}/{len(ids)}")
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    if failed:
        log.warning("%d of %d thumbnails could not be made (unreadable images)", failed, len(ids))
    return out
