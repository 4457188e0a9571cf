"""Bulk indexing under hostile archives: exact counts, any name bytes, bounded manifests."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.gallery import Gallery, GalleryManager, local_backend
from service.jobs import ArchiveLimits, IndexConfig, IndexProgress, index_source, open_source
from service.jobs.sources import ArchiveError, storable_name
from service.runtime import ModelRuntime
from tests.service.conftest import TINY_DIM
from tests.service.jobs.archives import crops, make_tar, make_zip, market_name


@pytest.fixture(scope="module")
def runtime(model_dir: Path) -> ModelRuntime:
    return ModelRuntime.load(model_dir)


@pytest.fixture
def gallery(runtime: ModelRuntime, tmp_path: Path) -> Iterator[Gallery]:
    manager = GalleryManager(local_backend(tmp_path / "data"), runtime.manifest.model_id, TINY_DIM)
    yield manager.get_or_create("g")
    manager.close()


def run(
    path: Path,
    gallery: Gallery,
    runtime: ModelRuntime,
    limits: ArchiveLimits | None = None,
    claims: object = None,
) -> IndexProgress:
    """Index ``path``; the sum of every report."""
    total = IndexProgress()

    def report(p: IndexProgress) -> None:
        total.added += p.added
        total.duplicates += p.duplicates
        total.failures += p.failures

    source = open_source(path, limits or ArchiveLimits())
    config = IndexConfig(batch_size=8, workers=1)
    assert index_source(source, gallery, runtime, config, report, claims=claims)  # type: ignore[arg-type]
    return total


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ counts (item 8)
def test_identical_undecodable_members_all_fail_none_is_a_duplicate(
    gallery: Gallery, runtime: ModelRuntime, tmp_path: Path
) -> None:
    n = 5000
    members = {market_name(i): b"\x89PNG\r\n\x1a\n not really" for i in range(n)}
    got = run(write(tmp_path, "a.tar", make_tar(members)), gallery, runtime)
    assert (got.added, got.duplicates, len(got.failures)) == (0, 0, n)
    assert {f.member for f in got.failures} == set(members)
    assert all("not a readable image" in f.reason for f in got.failures)


def test_identical_images_in_one_archive_are_one_added_and_duplicates(
    gallery: Gallery, runtime: ModelRuntime, tmp_path: Path
) -> None:
    image = next(iter(crops(1).values()))
    members = {market_name(i): image for i in range(20)}
    got = run(write(tmp_path, "a.tar", make_tar(members)), gallery, runtime)
    assert (got.added, got.duplicates, len(got.failures)) == (1, 19, 0)
    assert len(gallery) == 1


class Claims:
    """An in-memory claim log, as the job store keeps it across a crash."""

    def __init__(self, earlier: set[str] | None = None) -> None:
        self.ids: set[str] = set(earlier or ())

    def claimed(self) -> set[str]:
        return set(self.ids)

    def claim(self, external_ids: list[str]) -> None:
        self.ids.update(external_ids)


def test_resumed_job_counts_its_own_earlier_additions_as_added(
    gallery: Gallery, runtime: ModelRuntime, tmp_path: Path
) -> None:
    members = crops(20)
    first_half = dict(list(members.items())[:10])
    before = make_tar({**crops(3, offset=100)})  # already in the gallery, from another job
    run(write(tmp_path, "b.tar", before), gallery, runtime)
    claims = Claims()
    run(write(tmp_path, "half.tar", make_tar(first_half)), gallery, runtime, claims=claims)
    # the process died here, after storing 10 items and before reporting them; resumed:
    resumed = Claims(claims.ids)
    archive = {**members, **crops(3, offset=100)}
    got = run(write(tmp_path, "a.tar", make_tar(archive)), gallery, runtime, claims=resumed)
    assert (got.added, got.duplicates, len(got.failures)) == (20, 3, 0)
    assert len(gallery) == 23


def test_zip_with_repeated_names_indexes_every_entry(
    gallery: Gallery, runtime: ModelRuntime, tmp_path: Path
) -> None:
    a, b = crops(2).values()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr(market_name(0), a)
        zf.writestr(market_name(0), b)
    got = run(write(tmp_path, "a.zip", buf.getvalue()), gallery, runtime)
    assert (got.added, got.duplicates, len(got.failures)) == (2, 0, 0)
    assert len(gallery) == 2


# ------------------------------------------------------------------ names (item 5)
def _tar_with_raw_name(raw: bytes, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo(raw.decode("utf-8", "surrogateescape"))
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip_flagged_utf8(raw: bytes, data: bytes) -> bytes:
    """A zip whose one entry has the UTF-8 flag (bit 11) and the name bytes ``raw``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("X" * len(raw), data)
    out = bytearray(buf.getvalue())
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = out.index(sig)
        (flags,) = struct.unpack_from("<H", out, at + flag_at)
        struct.pack_into("<H", out, at + flag_at, flags | 0x800)
        name_at = at + (30 if sig == b"PK\x03\x04" else 46)
        out[name_at : name_at + len(raw)] = raw
    return bytes(out)


RAW = b"0001_c1s1_000100_00\xff\xfe.png"


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_member_names_of_any_bytes_are_stored_safely(
    kind: str, gallery: Gallery, runtime: ModelRuntime, tmp_path: Path
) -> None:
    image = next(iter(crops(1).values()))
    make = _tar_with_raw_name if kind == "tar" else _zip_flagged_utf8
    got = run(write(tmp_path, f"a.{kind}", make(RAW, image)), gallery, runtime)
    assert (got.added, len(got.failures)) == (1, 0)
    item = gallery.get(1)  # the only item
    assert item.metadata["file"] == RAW.decode("utf-8", "replace")
    assert item.metadata["file_bytes_hex"] == RAW.hex()
    json.dumps(item.metadata).encode("utf-8")  # storable and answerable as UTF-8


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_failed_member_with_raw_name_reports_its_bytes_in_hex(
    kind: str, gallery: Gallery, runtime: ModelRuntime, tmp_path: Path
) -> None:
    make = _tar_with_raw_name if kind == "tar" else _zip_flagged_utf8
    got = run(write(tmp_path, f"a.{kind}", make(RAW, b"not an image")), gallery, runtime)
    assert len(got.failures) == 1
    failure = got.failures[0]
    failure.member.encode("utf-8")
    assert RAW.hex() in failure.reason


@pytest.mark.parametrize(
    ("name", "shown", "raw_hex"),
    [
        ("plain.png", "plain.png", None),
        ("caf\udcc3\udca9.png", "café.png", "636166c3a92e706e67"),
        ("a\udcff.png", "a\ufffd.png", "61ff2e706e67"),
        ("a\ud800.png", "a\ufffd\ufffd\ufffd.png", "61eda0802e706e67"),
    ],
)
def test_storable_name(name: str, shown: str, raw_hex: str | None) -> None:
    assert storable_name(name) == (shown, raw_hex)


# ------------------------------------------------------------------ manifests (items 6, 7)
def test_manifests_over_their_total_size_refuse_the_archive(tmp_path: Path) -> None:
    manifest = b"file,camera,timestamp\n" + b"x.png,c1,1\n" * 1000
    members = {f"d{i}/manifest.csv": manifest for i in range(5)}
    limits = ArchiveLimits(max_manifest_bytes=3 * len(manifest))
    with pytest.raises(ArchiveError, match="archive_max_manifest_bytes"):
        open_source(write(tmp_path, "m.tar", make_tar(members)), limits)
    open_source(write(tmp_path, "ok.tar", make_tar(dict(list(members.items())[:3]))), limits)


def test_manifests_over_their_count_refuse_the_archive(tmp_path: Path) -> None:
    members = {f"d{i}/manifest.csv": b"file,camera,timestamp\n" for i in range(4)}
    with pytest.raises(ArchiveError, match="more than 3 manifests"):
        open_source(write(tmp_path, "m.zip", make_zip(members)), ArchiveLimits(max_manifests=3))


def test_manifest_metadata_obeys_the_metadata_limit(tmp_path: Path) -> None:
    entry = {"file": "a.png", "camera": "c", "timestamp": 1, "metadata": {"x": "y" * 500}}
    members = {"manifest.json": json.dumps([entry]).encode()}
    path = write(tmp_path, "m.tar", make_tar(members))
    with pytest.raises(ArchiveError, match="metadata is 509 bytes of JSON; the limit is 100"):
        open_source(path, ArchiveLimits(max_metadata_bytes=100))
    assert open_source(path, ArchiveLimits(max_metadata_bytes=509)).infos["a.png"].metadata


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (
            '{"a.png": {"camera": "c", "timestamp": 1, "metadata": '
            + '{"a":' * 40
            + "1"
            + "}" * 42,
            "nested deeper than 32",
        ),
        ('{"a.png": {"camera": "c", "timestamp": 1, "metadata": {"x": NaN}}}', "NaN"),
        ('{"a.png": {"camera": "c", "timestamp": 1e18}}', "outside 0001-01-01"),
        ('{"a.png": {"camera": "c", "timestamp": "0000-01-01"}}', "not epoch seconds or ISO"),
        ('{"a.png": {"camera": "c", "timestamp": "Infinity"}}', "not a finite number"),
    ],
)
def test_bad_manifest_is_an_archive_error_naming_it(text: str, reason: str, tmp_path: Path) -> None:
    path = write(tmp_path, "m.tar", make_tar({"sub/manifest.json": text.encode()}))
    with pytest.raises(ArchiveError, match=f"sub/manifest.json.*{reason}"):
        open_source(path, ArchiveLimits())


def test_csv_manifest_with_a_huge_field_is_an_archive_error(tmp_path: Path) -> None:
    text = 'file,camera,timestamp\na.png,c,1,"' + "x" * 200_000 + '"\n'
    path = write(tmp_path, "m.tar", make_tar({"manifest.csv": text.encode()}))
    with pytest.raises(ArchiveError, match="manifest.csv"):
        open_source(path, ArchiveLimits())
