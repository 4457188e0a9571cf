"""Where bulk-indexed crops come from: a tar or zip archive, or a folder.

Archives are never extracted to disk: members are read into memory one at a time, so a
member name cannot write anywhere. Names that would be unsafe to extract (absolute, with
``..``), links, devices and oversized members are still reported as failures, not read.
Zip bombs are bounded three ways: the member count, each member's size (a zip member is
read at most ``max_member_bytes + 1`` bytes whatever its header claims) and the archive's
total declared size, all checked before anything is indexed.
"""

from __future__ import annotations

import logging
import os
import tarfile
import zipfile
from collections.abc import Iterator
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


@dataclass(frozen=True)
class Member:
    """One file of a source: its bytes, or why they could not be read."""

    name: str
    """Path inside the archive or folder (POSIX separators)."""
    data: bytes | None
    """The bytes; None when ``error`` says why not."""
    error: str | None = None
    """Reason the member was not read (unsafe path, link, over the size limit...)."""


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


def open_source(path: str | os.PathLike[str], limits: ArchiveLimits) -> Source:
    """Scan a folder, tar (optionally compressed) or zip archive; raises :class:`ArchiveError`."""
    p = Path(path)
    if p.is_dir():
        return DirectorySource(p, limits)
    if not p.is_file():
        raise ArchiveError(f"{p}: no such file or folder")
    if zipfile.is_zipfile(p):
        return ZipSource(p, limits)
    try:
        is_tar = tarfile.is_tarfile(p)
    except OSError:
        is_tar = False
    if is_tar:
        return TarSource(p, limits)
    raise ArchiveError(f"{p.name}: not a tar or zip archive")


def _check_counts(label: str, count: int, total: int, limits: ArchiveLimits) -> None:
    if count > limits.max_members:
        raise ArchiveError(f"{label}: {count} members, over the limit of {limits.max_members}")
    if total > limits.max_total_bytes:
        raise ArchiveError(
            f"{label}: members add up to {total} bytes, over the limit of {limits.max_total_bytes}"
        )


def _read_manifests(
    label: str, manifests: dict[str, bytes | None], limits: ArchiveLimits
) -> dict[str, ItemInfo]:
    infos: dict[str, ItemInfo] = {}
    for name, data in sorted(manifests.items()):
        if data is None:
            raise ArchiveError(f"{label}: manifest {name} is unreadable or over the size limit")
        try:
            infos.update(parse_manifest(name, data))
        except ManifestFileError as exc:
            raise ArchiveError(f"{label}: {exc}") from None
    return infos


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
        manifests = {
            n: _read_capped(open(root / n, "rb"), limits.max_member_bytes)  # noqa: SIM115
            for n in rel
            if is_manifest(n)
        }
        self.infos = _read_manifests(self.label, manifests, limits)
        self.names = [n for n in rel if not is_manifest(n)]

    def members(self) -> Iterator[Member]:
        for name in self.names:
            path = self.root / name
            size = path.stat().st_size
            if size > self.limits.max_member_bytes:
                yield Member(name, None, _too_big(size, self.limits))
                continue
            yield Member(name, path.read_bytes())


class TarSource:
    """A tar archive (plain, gz, bz2 or xz), read sequentially in two passes."""

    def __init__(self, path: Path, limits: ArchiveLimits) -> None:
        self.label = path.name
        self.path = path
        self.limits = limits
        self.names: list[str] = []
        manifests: dict[str, bytes | None] = {}
        count = total = 0
        try:
            with tarfile.open(path, "r:*") as tf:
                for m in tf:
                    if m.isdir():
                        continue
                    count += 1
                    total += m.size if m.isfile() else 0
                    _check_counts(self.label, count, total, limits)
                    if is_manifest(m.name) and m.isfile() and not unsafe_reason(m.name):
                        manifests[m.name] = self._read(tf, m)
                    else:
                        self.names.append(m.name)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ArchiveError(f"{self.label}: unreadable tar archive ({exc})") from None
        self.infos = _read_manifests(self.label, manifests, limits)

    def _read(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> bytes | None:
        if m.size > self.limits.max_member_bytes:
            return None
        f = tf.extractfile(m)
        return None if f is None else _read_capped(f, self.limits.max_member_bytes)

    def members(self) -> Iterator[Member]:
        wanted = set(self.names)
        try:
            with tarfile.open(self.path, "r:*") as tf:
                for m in tf:
                    if m.isdir() or m.name not in wanted:
                        continue
                    yield self._member(tf, m)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ArchiveError(f"{self.label}: unreadable tar archive ({exc})") from None

    def _member(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> Member:
        if reason := unsafe_reason(m.name):
            return Member(m.name, None, reason)
        if not m.isfile():
            kind = "symlink" if m.issym() else "hard link" if m.islnk() else "special file"
            return Member(m.name, None, f"not a regular file ({kind})")
        if m.size > self.limits.max_member_bytes:
            return Member(m.name, None, _too_big(m.size, self.limits))
        data = self._read(tf, m)
        return Member(m.name, data, None if data is not None else "unreadable member")


class ZipSource:
    """A zip archive; members are read with a hard cap whatever their headers claim."""

    def __init__(self, path: Path, limits: ArchiveLimits) -> None:
        self.label = path.name
        self.path = path
        self.limits = limits
        try:
            with zipfile.ZipFile(path) as zf:
                infos = [i for i in zf.infolist() if not i.is_dir()]
                _check_counts(self.label, len(infos), sum(i.file_size for i in infos), limits)
                manifests = {
                    i.filename: self._read(zf, i)
                    for i in infos
                    if is_manifest(i.filename) and not unsafe_reason(i.filename)
                }
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ArchiveError(f"{self.label}: unreadable zip archive ({exc})") from None
        self.infos = _read_manifests(self.label, manifests, limits)
        self.names = [i.filename for i in infos if i.filename not in manifests]

    def _read(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes | None:
        if info.file_size > self.limits.max_member_bytes:
            return None
        with zf.open(info) as f:
            return _read_capped(f, self.limits.max_member_bytes)

    def members(self) -> Iterator[Member]:
        try:
            with zipfile.ZipFile(self.path) as zf:
                for name in self.names:
                    yield self._member(zf, zf.getinfo(name))
        except (zipfile.BadZipFile, OSError) as exc:
            raise ArchiveError(f"{self.label}: unreadable zip archive ({exc})") from None

    def _member(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Member:
        name = info.filename
        if reason := unsafe_reason(name):
            return Member(name, None, reason)
        if info.flag_bits & 0x1:
            return Member(name, None, "encrypted member")
        if info.file_size > self.limits.max_member_bytes:
            return Member(name, None, _too_big(info.file_size, self.limits))
        try:
            data = self._read(zf, info)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            return Member(name, None, f"unreadable member ({exc})")
        if data is None:
            return Member(
                name, None, f"member expands past the limit of {self.limits.max_member_bytes} bytes"
            )
        return Member(name, data)
