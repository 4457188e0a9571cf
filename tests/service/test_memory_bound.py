"""Peak memory of /v1/embed under small uploads that decode huge (issue: 32 PNGs of
4096x4096, 49 KB each, once peaked at 2.4 GB) is bounded by the settings.

The app runs in a child process (TestClient, tiny model) so that its peak RSS
(``ru_maxrss``) is its own: the high-water mark after a warm-up request is compared with the
one after the hostile request.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from reidcore.preprocess import REDUCE_GAP
from service.settings import Settings

CHILD = r"""
import io, json, resource, sys, warnings
from pathlib import Path
from service.app import create_app
from service.settings import Settings
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

model_dir, data_dir, png_path, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
overrides = json.loads(sys.argv[5])
settings = Settings(model_dir=model_dir, data_dir=data_dir, **overrides)
png = Path(png_path).read_bytes()
small = Path(png_path + ".small").read_bytes()
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with TestClient(create_app(settings)) as client:
    for _ in range(3):  # warm-up: model, batcher, allocator pools
        r = client.post("/v1/embed", files=[("images", ("s.png", small, "image/png"))] * count)
        assert r.status_code == 200, r.text
    before = peak()
    files = [("images", (f"{i}.png", png, "image/png")) for i in range(count)]
    r = client.post("/v1/embed", files=files)
    after = peak()
print(json.dumps({"status": r.status_code, "before": before, "after": after,
                  "body": r.text[:300]}))
"""

SIDE = 4096
COUNT = 32


def _png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 90)).save(buf, format="PNG")
    return buf.getvalue()


def _run_child(model_dir: Path, tmp_path: Path, overrides: dict[str, int]) -> dict[str, object]:
    png = tmp_path / "big.png"
    png.write_bytes(_png(SIDE))
    Path(str(png) + ".small").write_bytes(_png(64))
    args = [str(model_dir), str(tmp_path / "data"), str(png), str(COUNT), json.dumps(overrides)]
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _bound(settings: Settings, height: int, width: int) -> int:
    """Bytes the hostile request may add to the peak, from the settings alone: the request
    body twice (spooled + read), one full-size image at 4 bytes a pixel twice (decoded and
    converted), every shrunk image (under (2 x REDUCE_GAP)^2 times the model input, RGB) and
    the float32 batch, plus 64 MiB for the allocator and thread stacks."""
    shrunk = (2 * REDUCE_GAP) ** 2 * height * width * 3
    batch = settings.max_images_per_request * 3 * height * width * 4
    return (
        2 * settings.max_request_bytes
        + 2 * 4 * settings.max_image_pixels
        + settings.max_images_per_request * shrunk
        + batch
        + 64 * 2**20
    )


def test_peak_rss_of_huge_small_pngs_is_bounded_by_the_settings(
    model_dir: Path, tmp_path: Path
) -> None:
    budget = COUNT * SIDE * SIDE  # admit the request: the decoding itself is what is measured
    got = _run_child(model_dir, tmp_path, {"max_request_pixels": budget})
    assert got["status"] == 200, got["body"]
    settings = Settings(model_dir=model_dir, data_dir=tmp_path, max_request_pixels=budget)
    bound = _bound(settings, height=32, width=16)  # the tiny model's input
    grown = int(got["after"]) - int(got["before"])  # type: ignore[call-overload]
    assert grown <= bound, f"peak RSS grew by {grown / 2**20:.0f} MiB, bound {bound / 2**20:.0f}"
    assert bound < COUNT * SIDE * SIDE * 3  # the bound is below holding them all decoded


def test_over_the_pixel_budget_is_refused_before_decoding(model_dir: Path, tmp_path: Path) -> None:
    got = _run_child(model_dir, tmp_path, {})  # default budget: 2**27 pixels < 32 x 4096^2
    assert got["status"] == 413, got["body"]
    assert "max_request_pixels" in str(got["body"])
    assert int(got["after"]) - int(got["before"]) < SIDE * SIDE * 3  # type: ignore[call-overload]
