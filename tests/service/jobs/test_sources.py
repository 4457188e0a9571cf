"""Archive and folder sources: safety checks, limits and manifests."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from service.jobs.sources import ArchiveError, ArchiveLimits, open_source, unsafe_reason
from tests.service.jobs.archives import crops, make_tar, make_zip


@pytest.mark.parametrize(
    ("name", "unsafe"),
    [
        ("a/b.jpg", False),
        ("a..b.jpg", False),
        ("../b.jpg", True),
        ("a/../../b.jpg", True),
        ("/etc/passwd", True),
        ("C:/x.jpg", True),
        ("a\\..\\b.jpg", True),
        ("a\x00b.jpg", True),
    ],
)
def test_unsafe_names(name: str, unsafe: bool) -> None:
    assert (unsafe_reason(name) is not None) is unsafe


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_members_come_back_in_order(tmp_path: Path, kind: str) -> None:
    members = crops(5)
    data = (
        make_zip(members)
        if kind == "zip"
        else make_tar(members, mode="w:gz" if kind == "tar.gz" else "w")
    )
    src = open_source(_write(tmp_path, f"a.{kind}", data), ArchiveLimits())
    got = list(src.members())
    assert [m.name for m in got] == list(members)
    assert [m.data for m in got] == list(members.values())


def test_tar_links_and_traversal_are_failures(tmp_path: Path) -> None:
    members = {"../up.png": b"x", "ok.png": b"y"}
    data = make_tar(members, symlinks={"ln.png": "/etc/passwd"})
    got = {
        m.name: m for m in open_source(_write(tmp_path, "a.tar", data), ArchiveLimits()).members()
    }
    assert got["ok.png"].data == b"y"
    assert got["../up.png"].data is None and "unsafe path" in (got["../up.png"].error or "")
    assert got["ln.png"].data is None and "symlink" in (got["ln.png"].error or "")


def test_member_count_limit(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.zip", make_zip(crops(4)))
    with pytest.raises(ArchiveError, match="4 members, over the limit of 3"):
        open_source(path, ArchiveLimits(max_members=3))


def test_zip_bomb_total_is_refused_before_reading(tmp_path: Path) -> None:
    bomb = make_zip({f"z{i}.png": bytes(200_000) for i in range(3)})  # 600 kB of zeros
    assert len(bomb) < 10_000  # compresses ~100x
    with pytest.raises(ArchiveError, match="over the limit"):
        open_source(_write(tmp_path, "b.zip", bomb), ArchiveLimits(max_total_bytes=500_000))


def test_oversized_member_is_a_failure_not_read(tmp_path: Path) -> None:
    data = make_zip({"big.png": bytes(50_000), "small.png": b"abc"})
    src = open_source(_write(tmp_path, "c.zip", data), ArchiveLimits(max_member_bytes=1000))
    got = {m.name: m for m in src.members()}
    assert got["big.png"].data is None and "over the limit of 1000" in (got["big.png"].error or "")
    assert got["small.png"].data == b"abc"


def test_zip_lying_about_its_size_is_capped(tmp_path: Path) -> None:
    """A header claiming a small size cannot make the reader take more than the cap."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("liar.png", bytes(5000))
    raw = bytearray(buf.getvalue())
    # patch the declared uncompressed size (central directory entry) down to 10 bytes
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24 : cd + 28] = (10).to_bytes(4, "little")
    src = open_source(_write(tmp_path, "l.zip", bytes(raw)), ArchiveLimits(max_member_bytes=100))
    (m,) = list(src.members())
    assert m.data is None or len(m.data) <= 100


def test_manifest_is_read_and_not_indexed(tmp_path: Path) -> None:
    members = {"x/a.png": b"1", "x/manifest.csv": b"file,camera,timestamp\na.png,cam9,5\n"}
    src = open_source(_write(tmp_path, "m.zip", make_zip(members)), ArchiveLimits())
    assert src.names == ["x/a.png"]
    assert src.infos["x/a.png"].camera == "cam9"


def test_broken_manifest_refuses_the_archive(tmp_path: Path) -> None:
    members = {"a.png": b"1", "manifest.json": b"[{"}
    with pytest.raises(ArchiveError, match="manifest.json: invalid JSON"):
        open_source(_write(tmp_path, "m.tar", make_tar(members)), ArchiveLimits())


def test_folder_source(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "b.png").write_bytes(b"b")
    (tmp_path / "d" / "a.png").write_bytes(b"a")
    src = open_source(tmp_path / "d", ArchiveLimits())
    assert [(m.name, m.data) for m in src.members()] == [("a.png", b"a"), ("sub/b.png", b"b")]


def test_not_an_archive(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="not a tar or zip"):
        open_source(_write(tmp_path, "x.bin", b"hello world" * 100), ArchiveLimits())
