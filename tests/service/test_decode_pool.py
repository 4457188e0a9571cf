"""The process-wide decode pool: concurrent decodes never hold more pixels than its capacity,
an image larger than the pool still decodes (alone), and the service sizes it from settings."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from service import images
from service.errors import ImageDecodeError
from service.images import PixelPool, decode_upload, set_decoding_pixels


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_holders_never_exceed_the_capacity() -> None:
    pool = PixelPool(100)
    inside, worst, lock = [0], [0], threading.Lock()

    def work(n: int) -> None:
        with pool.hold(n):
            with lock:
                inside[0] += n
                worst[0] = max(worst[0], inside[0])
            time.sleep(0.002)
            with lock:
                inside[0] -= n

    sizes = [30, 60, 90, 10, 100, 45] * 20
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(work, sizes))
    assert worst[0] <= 100
    assert pool.used == 0
    assert pool.peak == worst[0]
    assert pool.peak > 90  # the threads did overlap: the cap, not luck, bounded them


def test_an_image_larger_than_the_pool_runs_alone() -> None:
    pool = PixelPool(50)
    with pool.hold(10_000):
        assert pool.used == 50  # capped: it takes the whole pool and nothing else runs
    assert pool.used == 0


def test_pool_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PixelPool(0)


def test_decode_upload_holds_the_images_header_pixels() -> None:
    pool = set_decoding_pixels(10**9)
    try:
        img = decode_upload(_png(300, 200), max_pixels=10**6)
        assert img.size == (300, 200)
        assert pool.peak == 300 * 200 and pool.used == 0
        with pytest.raises(ImageDecodeError):
            decode_upload(b"\x89PNG\r\n\x1a\ngarbage", max_pixels=10**6)
        assert pool.used == 0  # released on failure too
    finally:
        set_decoding_pixels(2 * 4096 * 4096)


def test_concurrent_requests_share_one_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = set_decoding_pixels(1000 * 1000)
    try:
        data = _png(800, 800)
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda _: decode_upload(data, max_pixels=10**7), range(8)))
        assert pool.peak == 800 * 800  # one at a time: two would be 1.28M > 1M
        assert images._decoding is pool
    finally:
        set_decoding_pixels(2 * 4096 * 4096)


def test_the_service_sizes_the_pool_from_settings(model_dir: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(model_dir=model_dir, data_dir=tmp_path, max_decoding_pixels=123_456)
    try:
        with TestClient(create_app(settings)) as client:
            files = [("images", ("a.png", _png(64, 64), "image/png"))]
            assert client.post("/v1/embed", files=files).status_code == 200
            assert images._decoding.capacity == 123_456
            assert images._decoding.peak == 64 * 64
    finally:
        set_decoding_pixels(2 * 4096 * 4096)


def test_the_api_path_parses_each_header_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget check's header read is what the decode pool holds: each upload is opened
    twice in all (its header, then its decode), not three times, and the pool still holds
    the header's pixels."""
    from fastapi import UploadFile

    from service.api.uploads import read_images

    opened: list[int] = []
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(len(fp.getvalue()))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    blobs = [_png(300, 200), _png(40, 30)]
    files = [UploadFile(io.BytesIO(b), filename=f"{i}.png") for i, b in enumerate(blobs)]
    pool = set_decoding_pixels(10**9)
    try:
        got = read_images(files, 10**6, 8, budget=10**6)
        assert [im.size for im in got] == [(300, 200), (40, 30)]
        assert pool.peak == 300 * 200 and pool.used == 0
    finally:
        set_decoding_pixels(2 * 4096 * 4096)
    assert sorted(opened) == sorted([len(b) for b in blobs] * 2)
    opened.clear()
    assert decode_upload(blobs[1], max_pixels=10**6).size == (40, 30)
    assert opened == [len(blobs[1])] * 2  # without a count, decode_upload reads the header
