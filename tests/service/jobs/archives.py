"""Builders of tar and zip archives of crops for the bulk-indexing tests."""

from __future__ import annotations

import io
import tarfile
import zipfile

from tests.service.conftest import random_image


def market_name(i: int) -> str:
    """A Market-1501 style name: identity i // 2, camera 1 + i % 3, frame 100 * i."""
    return f"{i // 2:04d}_c{1 + i % 3}s1_{100 * i:06d}_00.png"


def crops(n: int, offset: int = 0) -> dict[str, bytes]:
    """``n`` distinct PNG crops under Market-style names."""
    return {market_name(i): random_image(1000 + offset + i) for i in range(offset, offset + n)}


def make_tar(
    members: dict[str, bytes], symlinks: dict[str, str] | None = None, mode: str = "w"
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()
