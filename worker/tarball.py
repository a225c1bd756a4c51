"""Tar archives with sorted entries and zero mtimes, so the same files always give the same sha256."""

from __future__ import annotations

import tarfile
from pathlib import Path


def pack(folder: str | Path, dest: str | Path) -> Path:
    folder, dest = Path(folder), Path(dest)
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(str(path.relative_to(folder)))
            info.size, info.mtime, info.mode = path.stat().st_size, 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    return dest


def unpack(src: str | Path, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(src, "r") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(folder, filter="data")  # refuses absolute paths, links out of the folder
        else:  # Python < 3.11.4 has no extraction filters (Debian bookworm's 3.11.2, the Docker image's base)
            tar.extractall(folder, members=[_plain_member(m, folder) for m in tar.getmembers()])
    return folder


def _plain_member(member: tarfile.TarInfo, folder: Path) -> tarfile.TarInfo:
    """What ``filter="data"`` guarantees for the archives ``pack`` writes: plain files and folders inside ``folder``."""
    inside = not member.name.startswith("/") and (folder / member.name).resolve().is_relative_to(folder.resolve())
    if not inside:
        raise tarfile.TarError(f"{member.name!r} would be written outside {folder}")
    if not (member.isfile() or member.isdir()):
        raise tarfile.TarError(f"{member.name!r} is not a plain file or folder")
    member.mode &= 0o755
    return member
