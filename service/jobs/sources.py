"""Where bulk-indexed crops come from: a tar or zip archive, or a folder.

Archives are never extracted to disk: members are read into memory one at a time, so a
member name cannot write anywhere. Names that would be unsafe to extract (absolute, with
``..``), links, devices and oversized members are still reported as failures, not read.
Zip bombs are bounded three ways: the member count, each member's size (a zip member is
read at most ``max_member_bytes + 1`` bytes whatever its header claims) and the archive's
total declared size, all checked before anything is indexed.
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from service.errors import InvalidInput
from service.jobs.naming import ItemInfo, ManifestFileError, is_manifest, parse_manifest

logger = logging.getLogger(__name__)


class ArchiveError(InvalidInput):
    """An archive or folder cannot be indexed at all (unreadable, too many members...)."""

    code = "invalid_archive"


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what one bulk-indexing source may contain."""

    max_members: int = 200_000
    """Most members (files) in one archive or folder."""
    max_member_bytes: int = 16 * 2**20
    """Largest single member; bigger ones are reported as failures, never read whole."""
    max_total_bytes: int = 8 * 2**30
    """Largest sum of member sizes (as the archive declares them) of one archive."""
    max_manifests: int = 64
    """Most manifest files in one source."""
    max_manifest_bytes: int = 16 * 2**20
    """Largest sum of the manifests' sizes: each is parsed as soon as it is read, and only
    this much manifest text is ever parsed for one source."""
    max_metadata_bytes: int | None = None
    """Largest JSON metadata of one manifest entry (None: no limit)."""


@dataclass(frozen=True)
class Member:
    """One file of a source: its bytes, or why they could not be read."""

    name: str
    """Path inside the archive or folder (POSIX separators), always valid UTF-8 text."""
    data: bytes | None
    """The bytes; None when ``error`` says why not."""
    error: str | None = None
    """Reason the member was not read (unsafe path, link, over the size limit...)."""
    raw_name_hex: str | None = None
    """Hex of the name's raw bytes when they are not UTF-8 (``name`` then shows U+FFFD)."""
    mtime: float | None = None
    """Modification time (epoch seconds) as the folder or archive records it, if it does."""

    @classmethod
    def of(
        cls, name: str, data: bytes | None, error: str | None = None, mtime: float | None = None
    ) -> Member:
        """A member under a name as read (possibly with surrogate escapes): stored safely."""
        text, raw_hex = storable_name(name)
        return cls(text, data, error, raw_hex, mtime)

    def failure_reason(self, reason: str) -> str:
        """``reason``, with the raw name bytes when the name had to be repaired."""
        return (
            reason
            if self.raw_name_hex is None
            else f"{reason} (raw name bytes: {self.raw_name_hex})"
        )


def storable_name(name: str) -> tuple[str, str | None]:
    """``name`` as UTF-8-encodable text, and the hex of its raw bytes when it was not.

    Archive and file-system names that are not UTF-8 arrive surrogate-escaped; their bytes
    are recovered, invalid sequences shown as U+FFFD, and the bytes kept in hex.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = name.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "replace"), raw.hex()
    return name, None


class Source(Protocol):
    """A scanned archive or folder: member names, manifest entries, then the members."""

    label: str
    names: list[str]
    """Members to index, in order (manifests and folders excluded)."""
    infos: dict[str, ItemInfo]
    """Per-member camera/time from manifests inside the source."""

    def members(self) -> Iterator[Member]:
        """Every member of ``names``, read one at a time, in order."""
        ...


def unsafe_reason(name: str) -> str | None:
    """Why ``name`` would be unsafe to extract, or None."""
    if "\x00" in name:
        return "unsafe path: NUL byte in the name"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "unsafe path: absolute"
    if ".." in name.replace("\\", "/").split("/"):
        return "unsafe path: contains '..'"
    return None


def open_source(
    path: str | os.PathLike[str], limits: ArchiveLimits, label: str | None = None
) -> Source:
    """Scan a folder, tar (optionally compressed) or zip archive; raises :class:`ArchiveError`
    whose message starts with ``label`` (default: the file's name; jobs give the uploaded one)."""
    p = Path(path)
    if p.is_dir():
        return DirectorySource(p, limits)
    if not p.is_file():
        raise ArchiveError(f"{label or p}: no such file or folder")
    if zipfile.is_zipfile(p):
        return ZipSource(p, limits, label)
    try:
        is_tar = tarfile.is_tarfile(p)
    except OSError:
        is_tar = False
    if is_tar:
        return TarSource(p, limits, label)
    raise ArchiveError(f"{label or p.name}: not a tar or zip archive")


def _check_counts(label: str, count: int, total: int, limits: ArchiveLimits) -> None:
    if count > limits.max_members:
        raise ArchiveError(f"{label}: {count} members, over the limit of {limits.max_members}")
    if total > limits.max_total_bytes:
        raise ArchiveError(
            f"{label}: members add up to {total} bytes, over the limit of {limits.max_total_bytes}"
        )


class _Manifests:
    """Manifests of one source, each parsed as soon as it is read, within the limits."""

    def __init__(self, label: str, limits: ArchiveLimits) -> None:
        self.label, self.limits = label, limits
        self.infos: dict[str, ItemInfo] = {}
        self.count = self.bytes = 0

    def add(self, name: str, size: int, read: Callable[[], bytes | None]) -> None:
        """Account for a manifest of ``size`` declared bytes, then read and parse it."""
        shown = storable_name(name)[0]
        self.count += 1
        if self.count > self.limits.max_manifests:
            raise ArchiveError(
                f"{self.label}: more than {self.limits.max_manifests} manifests "
                "(setting archive_max_manifests)"
            )
        self._account(shown, size)
        data = read() if size <= self.limits.max_member_bytes else None
        if data is None:
            raise ArchiveError(
                f"{self.label}: manifest {shown} is unreadable or over the size limit"
            )
        self._account(shown, max(0, len(data) - size))  # a zip header may understate it
        try:
            self.infos.update(parse_manifest(shown, data, self.limits.max_metadata_bytes))
        except ManifestFileError as exc:
            raise ArchiveError(f"{self.label}: {exc}") from None

    def _account(self, shown: str, size: int) -> None:
        self.bytes += size
        if self.bytes > self.limits.max_manifest_bytes:
            raise ArchiveError(
                f"{self.label}: manifest {shown} brings the manifests to {self.bytes} bytes or "
                f"more, over the limit of {self.limits.max_manifest_bytes} "
                "(setting archive_max_manifest_bytes)"
            )


def _is_manifest_entry(name: str) -> bool:
    return is_manifest(name) and not unsafe_reason(name)


def _read_capped(f: IO[bytes], limit: int) -> bytes | None:
    data = f.read(limit + 1)
    return None if len(data) > limit else data


def _too_big(size: int, limits: ArchiveLimits) -> str:
    return f"member of {size} bytes is over the limit of {limits.max_member_bytes}"


class DirectorySource:
    """Every regular file under a folder, recursively, in sorted order."""

    def __init__(self, root: Path, limits: ArchiveLimits) -> None:
        self.label = str(root)
        self.root = root
        self.limits = limits
        files = sorted(p for p in root.rglob("*") if p.is_file())
        rel = [p.relative_to(root).as_posix() for p in files]
        _check_counts(self.label, len(rel), 0, limits)
        manifests = _Manifests(self.label, limits)
        for n in rel:
            if is_manifest(n):
                manifests.add(n, (root / n).stat().st_size, functools.partial(self._read, n))
        self.infos = manifests.infos
        self.names = [n for n in rel if not is_manifest(n)]

    def _read(self, name: str) -> bytes | None:
        with open(self.root / name, "rb") as f:
            return _read_capped(f, self.limits.max_member_bytes)

    def members(self) -> Iterator[Member]:
        for name in self.names:
            path = self.root / name
            stat = path.stat()
            if stat.st_size > self.limits.max_member_bytes:
                yield Member.of(name, None, _too_big(stat.st_size, self.limits), stat.st_mtime)
                continue
            yield Member.of(name, path.read_bytes(), None, stat.st_mtime)


class TarSource:
    """A tar archive (plain, gz, bz2 or xz), read sequentially in two passes.

    Names are decoded as UTF-8 with surrogate escapes, so any byte sequence is accepted
    (and repaired for storage by :meth:`Member.of`).
    """

    def __init__(self, path: Path, limits: ArchiveLimits, label: str | None = None) -> None:
        self.label = label or path.name
        self.path = path
        self.limits = limits
        self.names: list[str] = []
        manifests = _Manifests(self.label, limits)
        count = total = 0
        try:
            with self._open() as tf:
                for m in tf:
                    if m.isdir():
                        continue
                    count += 1
                    total += m.size if m.isfile() else 0
                    _check_counts(self.label, count, total, limits)
                    if _is_manifest_entry(m.name) and m.isfile():
                        manifests.add(m.name, m.size, functools.partial(self._read, tf, m))
                    else:
                        self.names.append(m.name)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ArchiveError(f"{self.label}: unreadable tar archive ({exc})") from None
        self.infos = manifests.infos

    def _open(self) -> tarfile.TarFile:
        return tarfile.open(self.path, "r:*", encoding="utf-8", errors="surrogateescape")

    def _read(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> bytes | None:
        if m.size > self.limits.max_member_bytes:
            return None
        f = tf.extractfile(m)
        return None if f is None else _read_capped(f, self.limits.max_member_bytes)

    def members(self) -> Iterator[Member]:
        try:
            with self._open() as tf:
                for m in tf:
                    if m.isdir() or (_is_manifest_entry(m.name) and m.isfile()):
                        continue
                    yield self._member(tf, m)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ArchiveError(f"{self.label}: unreadable tar archive ({exc})") from None

    def _member(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> Member:
        mtime = float(m.mtime)
        if reason := unsafe_reason(m.name):
            return Member.of(m.name, None, reason, mtime)
        if not m.isfile():
            kind = "symlink" if m.issym() else "hard link" if m.islnk() else "special file"
            return Member.of(m.name, None, f"not a regular file ({kind})", mtime)
        if m.size > self.limits.max_member_bytes:
            return Member.of(m.name, None, _too_big(m.size, self.limits), mtime)
        data = self._read(tf, m)
        return Member.of(m.name, data, None if data is not None else "unreadable member", mtime)


class ZipSource:
    """A zip archive; members are read with a hard cap whatever their headers claim.

    Every entry counts, also several under one name. Names flagged UTF-8 that are not
    (which :mod:`zipfile` refuses) are read as bytes and repaired like tar names.
    """

    def __init__(self, path: Path, limits: ArchiveLimits, label: str | None = None) -> None:
        self.label = label or path.name
        self.path = path
        self.limits = limits
        self.raw_names = False
        """Whether names are read as raw bytes (some entry's UTF-8 flag lies)."""
        manifests = _Manifests(self.label, limits)
        try:
            with self._open() as zf:
                infos = self._entries(zf)
                _check_counts(self.label, len(infos), sum(i.file_size for i in infos), limits)
                for i in infos:
                    if _is_manifest_entry(self._name(i)):
                        manifests.add(
                            self._name(i), i.file_size, functools.partial(self._read, zf, i)
                        )
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ArchiveError(f"{self.label}: unreadable zip archive ({exc})") from None
        self.infos = manifests.infos
        self.names = [self._name(i) for i in infos if not _is_manifest_entry(self._name(i))]

    def _open(self) -> zipfile.ZipFile:
        if not self.raw_names:
            try:
                return zipfile.ZipFile(self.path)
            except UnicodeDecodeError:
                self.raw_names = True
        return zipfile.ZipFile(_NoUtf8Flag(open(self.path, "rb")))  # noqa: SIM115 (ZipFile closes it)

    @staticmethod
    def _entries(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
        return [i for i in zf.infolist() if not i.is_dir()]

    def _name(self, info: zipfile.ZipInfo) -> str:
        """The entry's name; under ``raw_names`` its bytes as UTF-8 with surrogate escapes."""
        if not self.raw_names:
            return info.filename
        return info.filename.encode("cp437").decode("utf-8", "surrogateescape")

    def _read(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes | None:
        if info.file_size > self.limits.max_member_bytes:
            return None
        with zf.open(info) as f:
            return _read_capped(f, self.limits.max_member_bytes)

    def members(self) -> Iterator[Member]:
        try:
            with self._open() as zf:
                for info in self._entries(zf):
                    if not _is_manifest_entry(self._name(info)):
                        yield self._member(zf, info)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ArchiveError(f"{self.label}: unreadable zip archive ({exc})") from None

    def _member(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Member:
        name = self._name(info)
        member = functools.partial(Member.of, name, mtime=_zip_mtime(info))
        if reason := unsafe_reason(name):
            return member(None, reason)
        if info.flag_bits & 0x1:
            return member(None, "encrypted member")
        if info.file_size > self.limits.max_member_bytes:
            return member(None, _too_big(info.file_size, self.limits))
        try:
            data = self._read(zf, info)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            return member(None, f"unreadable member ({exc})")
        if data is None:
            return member(
                None, f"member expands past the limit of {self.limits.max_member_bytes} bytes"
            )
        return member(data)


def _zip_mtime(info: zipfile.ZipInfo) -> float | None:
    """A zip entry's modification time (zip stores local time without a zone: taken as UTC)."""
    try:
        return datetime.datetime(*info.date_time, tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:  # an impossible date in the header
        return None


class _NoUtf8Flag:
    """A zip file as :mod:`zipfile` reads it, with every header's UTF-8 name flag cleared.

    zipfile decodes flagged names strictly; without the flag it decodes them as cp437, which
    maps every byte, so :meth:`ZipSource._name` gets the raw bytes back. Only the central
    directory (read whole by zipfile) and local headers (read as 30 bytes) are changed.
    """

    CENTRAL, LOCAL, UTF8 = b"PK\x01\x02", b"PK\x03\x04", 1 << 11

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self._f.close()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if data[:4] == self.CENTRAL:
            return self._clear_central(bytearray(data))
        if data[:4] == self.LOCAL and len(data) == 30:
            return self._clear(bytearray(data), 6)
        return data

    def _clear(self, data: bytearray, at: int) -> bytes:
        flags = int.from_bytes(data[at : at + 2], "little") & ~self.UTF8
        data[at : at + 2] = flags.to_bytes(2, "little")
        return bytes(data)

    def _clear_central(self, data: bytearray) -> bytes:
        pos = 0
        while data[pos : pos + 4] == self.CENTRAL and pos + 46 <= len(data):
            flags = int.from_bytes(data[pos + 8 : pos + 10], "little") & ~self.UTF8
            data[pos + 8 : pos + 10] = flags.to_bytes(2, "little")
            lengths = [int.from_bytes(data[pos + k : pos + k + 2], "little") for k in (28, 30, 32)]
            pos += 46 + sum(lengths)
        return bytes(data)
