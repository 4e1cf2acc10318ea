"""Image checks on a generated bad-file corpus, normalised loading and thumbnails."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from badfiles import LONG_NAME, Corpus, make_corpus
from PIL import Image

from curation.data.images import ImageError, check_image, load_image, make_thumbnails, render_thumbnail, thumbnail_path
from curation.data.ingest import ingest
from curation.data.workspace import Workspace, WorkspaceError

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return make_corpus(tmp_path_factory.mktemp("images"))


def test_good_files_pass_with_oriented_size(corpus: Corpus) -> None:
    for name in corpus.good:
        info = check_image(corpus.folder / name)
        assert (info.width, info.height) == corpus.sizes[name], name
        assert info.bytes == (corpus.folder / name).stat().st_size
        assert len(info.sha1) == 40


@pytest.mark.parametrize("name", ["truncated.jpg", "truncated.png", "empty.jpg", "text.jpg", "bomb.png", "big.png",
                                  "fifo.png", "huge.jpg"])
def test_bad_files_fail_with_short_reason(corpus: Corpus, name: str) -> None:
    with pytest.raises(ImageError) as exc:
        check_image(corpus.folder / name)
    assert exc.value.reason.startswith(corpus.expected[name]), exc.value.reason
    assert len(exc.value.reason) < 160
    with pytest.raises(ImageError):
        load_image(corpus.folder / name)


def test_bomb_is_small_on_disk(corpus: Corpus) -> None:
    assert (corpus.folder / "bomb.png").stat().st_size < 1000
    with pytest.raises(ImageError, match="limit 80000000"):
        check_image(corpus.folder / "big.png")
    with pytest.raises(ImageError, match="too large: 2500 pixels, limit 100"):
        check_image(_square(corpus.folder, 50), max_pixels=100)


def _square(folder: Path, side: int) -> Path:
    p = folder.parent / f"square{side}.png"
    Image.new("RGB", (side, side)).save(p)
    return p


def test_folder_missing_and_directory(corpus: Corpus, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="file not found"):
        check_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="folder"):
        check_image(corpus.folder)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file(tmp_path: Path) -> None:
    p = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(p)
    p.chmod(0)
    try:
        with pytest.raises(ImageError, match="unreadable"):
            check_image(p)
    finally:
        p.chmod(0o644)


def test_load_normalises_modes(corpus: Corpus) -> None:
    for name in corpus.good:
        im = load_image(corpus.folder / name)
        assert im.mode == "RGB"
        assert im.size == corpus.sizes[name], name
    # alpha is composited on white
    assert load_image(corpus.folder / "rgba.png").getpixel((0, 0)) == (255, 255, 255)
    assert load_image(corpus.folder / "grey_alpha.png").getpixel((0, 0)) == (255, 255, 255)
    # 16-bit is scaled to 8 bits, not clipped
    grey = np.asarray(load_image(corpus.folder / "grey16.png"))[..., 0]
    assert grey.max() > 200 and grey.min() == 0 and len(np.unique(grey)) > 100
    # CMYK and palette come out as colour
    assert np.asarray(load_image(corpus.folder / "cmyk.jpg")).std() > 10
    # first frame of an animated GIF
    assert load_image(corpus.folder / "animated.gif").getpixel((0, 0)) == (0, 0, 0)


def test_exif_rotation_applied(corpus: Corpus) -> None:
    im = load_image(corpus.folder / "exif_rotated.jpg")
    assert im.size == (20, 40)


def test_render_thumbnail_upscales_tiny_and_keeps_aspect() -> None:
    tiny = Image.new("RGB", (28, 28))
    t, up = render_thumbnail(tiny, 160)
    assert up and t.size == (140, 140)
    wide = Image.new("RGB", (800, 200))
    t, up = render_thumbnail(wide, 160)
    assert not up and t.size == (160, 40)
    mid = Image.new("RGB", (100, 50))
    t, up = render_thumbnail(mid, 160)
    assert t.size == (100, 50)


def test_thumbnails_cached_in_workspace(corpus: Corpus, ws: Workspace) -> None:
    report = ingest(ws, corpus.folder)
    samples = ws.store.samples()
    ids = samples.index.to_numpy()
    done = make_thumbnails(ws, ids, size=64)
    assert set(done) == set(ids.tolist())
    for sid, p in done.items():
        assert p.is_relative_to(ws.thumbs) and p.exists()
        with Image.open(p) as im:
            assert max(im.size) <= 64
    tiny = int(samples.index[samples["path"] == "tiny28.png"][0])
    p = thumbnail_path(ws, tiny, 64)
    assert p.suffix == ".png"
    with Image.open(p) as im:
        assert im.size == (56, 56)
    mtime = p.stat().st_mtime_ns
    assert thumbnail_path(ws, tiny, 64).stat().st_mtime_ns == mtime  # cached
    long_id = int(samples.index[samples["path"] == LONG_NAME][0])
    assert thumbnail_path(ws, long_id, 64).exists()
    assert report.added == len(ids)


def test_thumbnail_refuses_paths_outside_roots(ws: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    ingest(ws, folder)
    sid = int(ws.store.sample_ids()[0])
    # tamper with the stored path so it escapes its root
    ws.store._con().execute("UPDATE samples SET path='../../../etc/hostname' WHERE id=?", (sid,))
    with pytest.raises(WorkspaceError):
        thumbnail_path(ws, sid)
    assert make_thumbnails(ws, [sid]) == {}
