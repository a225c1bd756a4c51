"""Checkpoint tarballs unpack safely on every Python 3.11, with or without tarfile's extraction filters."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from worker import tarball


def _tar_with(path, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", link: str = "") -> None:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.size, info.linkname = kind, len(data) if kind == tarfile.REGTYPE else 0, link
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


@pytest.fixture(params=["filters", "no filters (Python < 3.11.4)"])
def python_filters(request, monkeypatch):
    if request.param != "filters":
        monkeypatch.delattr(tarfile, "data_filter")  # as on Debian bookworm's 3.11.2, the Docker image's Python
    return request.param


def test_pack_then_unpack_gives_the_same_files(tmp_path, python_filters):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"\x00\x01")
    (src / "sub" / "b.json").write_text("{}")
    out = tarball.unpack(tarball.pack(src, tmp_path / "c.tar"), tmp_path / "out")
    assert (out / "a.bin").read_bytes() == b"\x00\x01" and (out / "sub" / "b.json").read_text() == "{}"


@pytest.mark.parametrize("name,kind,link", [
    ("../escape.txt", tarfile.REGTYPE, ""),
    ("/abs.txt", tarfile.REGTYPE, ""),
    ("link", tarfile.SYMTYPE, "/etc/passwd"),
])
def test_nothing_is_written_outside_the_folder(tmp_path, python_filters, name, kind, link):
    """Refused, or (the filter's way with a leading "/") written inside the folder; never outside it."""
    _tar_with(tmp_path / "bad.tar", name, kind, link=link)
    folder = tmp_path / "out" / "in"
    try:
        tarball.unpack(tmp_path / "bad.tar", folder)
    except tarfile.TarError:
        assert not any(folder.iterdir())
    assert not (tmp_path / "out" / "escape.txt").exists() and not Path("/abs.txt").exists()
    assert not (folder / "link").is_symlink()
    if name == "../escape.txt" or kind == tarfile.SYMTYPE:
        assert not any(folder.iterdir())  # refused outright
