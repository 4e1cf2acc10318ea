"""Generators of bad input for the image, ingest and reliability tests: a corpus of good, odd and broken
image files, and a set of broken manifests with what each must do."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from curation.data.images import MAX_BYTES

LONG_NAME = "long_" + "x" * 150 + "é" * 45 + ".png"  # 249 bytes: near the 255-byte limit of a file name
ODD_NAME = "ünï cødé #1 & 'quoted' (copy).png"
HTML_NAME = "<img src=x onerror=alert(1)>.png"
NOT_UTF8_NAME = os.fsdecode(b"latin1 caf\xe9.png")  # a name whose bytes are not UTF-8


@dataclass
class Corpus:
    """A generated folder of images.

    Attributes
    ----------
    folder : the image folder (flat).
    outside : a sibling folder holding the target of ``symlink_out``.
    expected : {file name in ``folder``: the reason prefix ingest gives when it skips the file, or None when
        the file is a usable image}. Names that are not UTF-8 are reported with ``\\xNN`` escapes
        (see :func:`shown`).
    sizes : {file name: (width, height)} expected for usable images (after EXIF orientation).
    symlink_out : name of the symlink in ``folder`` that points outside it (a valid image for check_image,
        refused by ingest).
    duplicates : names of files with identical content.
    """

    folder: Path
    outside: Path
    expected: dict[str, str | None] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    symlink_out: str = "link_outside.png"
    duplicates: tuple[str, str] = ("dup_a.png", "dup_b.png")

    @property
    def good(self) -> list[str]:
        return sorted(n for n, r in self.expected.items() if r is None)

    @property
    def bad(self) -> list[str]:
        return sorted(n for n, r in self.expected.items() if r is not None)


def _rgb(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb, small on disk)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def make_corpus(root: Path) -> Corpus:
    """Write the corpus under ``root/corpus`` (and ``root/outside``) and return what each file should do."""
    folder, outside = root / "corpus", root / "outside"
    folder.mkdir(parents=True)
    outside.mkdir()
    c = Corpus(folder, outside)

    def good(name: str, im: Image.Image, size: tuple[int, int] | None = None, **save) -> None:
        im.save(folder / name, **save)
        c.expected[name] = None
        c.sizes[name] = size or im.size

    good("plain.jpg", _rgb(64, 48, 1), format="JPEG", quality=90)
    good("plain.png", _rgb(30, 20, 2))
    good("cmyk.jpg", _rgb(40, 30, 3).convert("CMYK"), format="JPEG")
    arr16 = (np.arange(32 * 16, dtype=np.uint16).reshape(16, 32) * 120)
    good("grey16.png", Image.fromarray(arr16))
    pal = _rgb(24, 24, 4).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    good("palette_transparent.png", pal, transparency=0)
    la = Image.new("LA", (20, 10), (100, 0))
    good("grey_alpha.png", la)
    good("rgba.png", Image.new("RGBA", (10, 20), (255, 0, 0, 0)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: stored 40x20, shown 20x40
    good("exif_rotated.jpg", _rgb(40, 20, 5), size=(20, 40), format="JPEG", exif=exif.tobytes())
    frames = [Image.new("P", (16, 12), i * 40) for i in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    c.expected["animated.gif"] = None
    c.sizes["animated.gif"] = (16, 12)
    good("tiny28.png", Image.fromarray(np.eye(28, dtype=np.uint8) * 255, "L"))
    good(LONG_NAME, _rgb(8, 8, 6))
    good(ODD_NAME, _rgb(9, 7, 7))
    good(HTML_NAME, _rgb(7, 9, 12))
    good("new\nline.png", _rgb(6, 5, 13))
    dup = _rgb(12, 12, 8)
    good(c.duplicates[0], dup)
    good(c.duplicates[1], dup)

    buf = io.BytesIO()
    _rgb(200, 150, 9).save(buf, format="JPEG", quality=95)
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    c.expected["truncated.jpg"] = "truncated or corrupt"
    buf = io.BytesIO()
    _rgb(200, 150, 10).save(buf, format="PNG")
    (folder / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    c.expected["truncated.png"] = "truncated or corrupt"
    (folder / "empty.jpg").write_bytes(b"")
    c.expected["empty.jpg"] = "empty file"
    (folder / "text.jpg").write_text("this is not an image, just text renamed to .jpg\n")
    c.expected["text.jpg"] = "not an image"
    (folder / "bomb.png").write_bytes(bomb_png(20000, 20000))  # past PIL's own DecompressionBombError
    c.expected["bomb.png"] = "too large"
    (folder / "big.png").write_bytes(bomb_png(10000, 9000))  # past our 80 Mpx limit, under PIL's
    c.expected["big.png"] = "too large: 90000000 pixels"

    os.mkfifo(folder / "fifo.png")  # reading it would block forever
    c.expected["fifo.png"] = "not a regular file"
    with open(folder / "huge.jpg", "wb") as f:  # sparse: no disk space used
        f.truncate(MAX_BYTES + 1)
    c.expected["huge.jpg"] = "too large"
    _rgb(5, 5, 14).save(folder / NOT_UTF8_NAME)
    c.expected[NOT_UTF8_NAME] = "file name is not valid UTF-8"
    os.symlink("loop_b.png", folder / "loop_a.png")
    os.symlink("loop_a.png", folder / "loop_b.png")
    c.expected["loop_a.png"] = c.expected["loop_b.png"] = "symlink loop"

    _rgb(10, 10, 11).save(outside / "secret.png")
    os.symlink(outside / "secret.png", folder / c.symlink_out)
    c.expected[c.symlink_out] = "symlink resolves outside the image root"
    return c


def shown(name: str) -> str:
    """How ingest reports a file name (bytes that are not UTF-8 as escapes)."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


# ---------------------------------------------------------------------- broken manifests
@dataclass(frozen=True)
class ManifestCase:
    """A broken manifest and what ingest must do with it.

    Attributes
    ----------
    name : file name under the manifests folder.
    error : regex the IngestError message must match when the manifest as a whole is refused (the file's
        name is always required too); None when it must be ingested with its bad rows skipped.
    skipped : rows that must be skipped, each with a reason naming the file and row (when ``error`` is None).
    added : images that must be added (when ``error`` is None).
    """

    name: str
    error: str | None = None
    skipped: int = 0
    added: int = 0


def make_bad_manifests(root: Path) -> tuple[Path, list[ManifestCase]]:
    """Write four images (``img/a.png`` ... ``img/d.png``) and broken manifests next to them under ``root``.

    Returns
    -------
    (folder, cases): the folder holding the manifests and images, and one ManifestCase per manifest.
    """
    folder = root / "manifests"
    (folder / "img").mkdir(parents=True)
    for i, n in enumerate("abcd"):
        _rgb(6, 6, 20 + i).save(folder / "img" / f"{n}.png")
    cases: list[ManifestCase] = []

    def write(name: str, text: str | bytes, case: ManifestCase) -> None:
        path = folder / name
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text, encoding="utf-8")
        cases.append(case)

    write("nocol.csv", "name,label\nimg/a.png,cat\n",
          ManifestCase("nocol.csv", error=r"has no path column.*name the column"))
    write("latin.csv", "path,label\nimg/a.png,caf\xe9\n".encode("latin-1"),
          ManifestCase("latin.csv", error=r"is not UTF-8.*re-save"))
    write("bad.jsonl", '{"path": "img/a.png"}\n{"path": broken\n',
          ManifestCase("bad.jsonl", error=r"line 2 is not valid JSON"))
    write("arr.jsonl", '["img/a.png", "cat"]\n', ManifestCase("arr.jsonl", error="not an object"))
    write("empty.csv", "", ManifestCase("empty.csv", error="is empty.*header line"))
    write("header.csv", "path,label\n", ManifestCase("header.csv", error="No usable rows.*has no rows"))
    write("ragged.csv", "path,label\nimg/a.png,cat\nimg/b.png,dog,extra,cells\n",
          ManifestCase("ragged.csv", error="not valid CSV.*quote cells"))
    write("unknown.csv", "path,label\nzz/a.png,cat\nzz/b.png,dog\n",
          ManifestCase("unknown.csv", error=r"No usable rows.*2 file not found.*image_root"))
    write("escape.csv", "path,label\n../../etc/passwd,x\n/etc/passwd,x\n",
          ManifestCase("escape.csv", error=r"No usable rows.*escapes the image root"))
    write("blank.csv", "path,label\n   ,cat\n,dog\n", ManifestCase("blank.csv", error="No usable rows.*no path"))
    write("x.txt", "path\nimg/a.png\n", ManifestCase("x.txt", error="unknown manifest type"))
    write("trunc.parquet", b"PAR1garbage", ManifestCase("trunc.parquet", error="could not be read"))
    pd.DataFrame({"path": [1, 2], "label": ["a", "b"]}).to_parquet(folder / "ints.parquet")
    cases.append(ManifestCase("ints.parquet", error="holds int64 values, not file paths"))
    pd.DataFrame({"path": ["img/a.png"], "label": [0.5]}).to_parquet(folder / "frac.parquet")
    cases.append(ManifestCase("frac.parquet", error="fractional"))
    # partly broken: the good rows go in, each bad row is skipped with a reason naming the file and row
    write("types.jsonl", "\n".join(json.dumps(r) for r in [
        {"path": "img/a.png", "label": {"x": 1}}, {"path": "img/b.png", "label": [["nested"]]},
        {"path": "img/c.png", "label": True}, {"path": "img/d.png", "label": 2.0}]) + "\n",
        ManifestCase("types.jsonl", skipped=3, added=1))
    write("control.jsonl", json.dumps({"path": "img/a.png", "label": "two\nlines"}) + "\n"
          + json.dumps({"path": "img/b.png", "label": "tab\there"}) + "\n"
          + json.dumps({"path": "img/c.png", "label": "\u200b"}) + "\n"
          + json.dumps({"path": "img/d.png", "label": "fine"}) + "\n",
          ManifestCase("control.jsonl", skipped=3, added=1))
    write("surrogate.jsonl", '{"path": "img/\\udcff.png", "label": "x"}\n{"path": "img/a.png", "label": "y"}\n',
          ManifestCase("surrogate.jsonl", error=r"line 1 holds an escaped lone surrogate"))
    return folder, cases
