"""Generator of a small corpus of good, odd and broken image files for the image and ingest tests."""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

LONG_NAME = "long_" + "x" * 200 + ".png"
ODD_NAME = "ünï cødé #1 & 'quoted' (copy).png"


@dataclass
class Corpus:
    """A generated folder of images.

    Attributes
    ----------
    folder : the image folder (flat).
    outside : a sibling folder holding the target of ``symlink_out``.
    expected : {file name in ``folder``: expected reason prefix, or None when the file is a usable image}.
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

    _rgb(10, 10, 11).save(outside / "secret.png")
    os.symlink(outside / "secret.png", folder / c.symlink_out)
    return c
