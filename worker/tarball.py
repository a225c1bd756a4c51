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
        tar.extractall(folder, filter="data")  # refuses absolute paths, links out of the folder
    return folder
