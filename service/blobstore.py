"""Bytes in the database, in ~4 MiB chunks, behind one small interface (a filesystem or object store can
take large merged models later without touching callers).

A write computes the sha256 on the way and marks the blob complete in the caller's transaction, so a failed
write leaves nothing. A read fetches one chunk at a time, so streaming a large artifact keeps memory flat.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from service import sqlite_upkeep
from service.models import Blob, BlobChunk
from service.settings import get_settings


def _rechunk(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    buf = bytearray()
    for piece in pieces:
        if not buf and len(piece) == size:  # a file read a chunk at a time: no copy
            yield piece
            continue
        buf += piece
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


def _file_pieces(fh: BinaryIO, size: int) -> Iterator[bytes]:
    while piece := fh.read(size):
        yield piece


class DbBlobStore:
    """Blobs as rows of ``blob_chunks``; Postgres keeps them uncompressed out of line (storage EXTERNAL)."""

    def __init__(self, chunk_bytes: int | None = None) -> None:
        self.chunk_bytes = chunk_bytes or get_settings().chunk_bytes

    def write(self, session: Session, pieces: Iterable[bytes]) -> Blob:
        """Store ``pieces`` as one blob inside the caller's transaction; it is complete when that commits."""
        blob = Blob(id="blob_" + secrets.token_hex(12), complete=False)
        session.add(blob)
        session.flush()
        digest, total, seq = hashlib.sha256(), 0, 0
        for seq, chunk in enumerate(_rechunk(pieces, self.chunk_bytes)):  # noqa: B007
            digest.update(chunk)
            total += len(chunk)
            session.add(BlobChunk(blob_id=blob.id, seq=seq, data=chunk))
            session.flush()  # one chunk in memory at a time
        blob.bytes, blob.sha256, blob.chunks, blob.complete = total, digest.hexdigest(), (seq + 1 if total else 0), True
        session.flush()
        return blob

    def write_bytes(self, session: Session, data: bytes) -> Blob:
        return self.write(session, [data])

    def write_file(self, session: Session, path: str | Path) -> Blob:
        with open(path, "rb") as fh:
            return self.write(session, _file_pieces(fh, self.chunk_bytes))

    def read_chunks(self, factory: sessionmaker[Session], blob_id: str) -> Iterator[bytes]:
        """Yield the blob's chunks, each fetched in its own short session (safe to stream over HTTP)."""
        with factory() as session:
            blob = session.get(Blob, blob_id)
            count = blob.chunks if blob is not None and blob.complete else 0
        for seq in range(count):
            with factory() as session:
                data = session.scalar(select(BlobChunk.data).where(BlobChunk.blob_id == blob_id, BlobChunk.seq == seq))
            if data is None:
                raise RuntimeError(f"blob {blob_id}: chunk {seq} is missing")
            yield bytes(data)

    def read_range(self, factory: sessionmaker[Session], blob_id: str, start: int, stop: int) -> Iterator[bytes]:
        """Yield bytes [start, stop) of a complete blob: only the chunks that overlap, and of the edge chunks only
        the overlapping slice (``substr`` in the database; Postgres reads just that part of an EXTERNAL value)."""
        with factory() as session:  # chunk lengths from each value's header, not its bytes
            sizes = session.execute(select(BlobChunk.seq, func.length(BlobChunk.data))
                                    .join(Blob, Blob.id == BlobChunk.blob_id)
                                    .where(BlobChunk.blob_id == blob_id, Blob.complete.is_(True))
                                    .order_by(BlobChunk.seq)).all()
        offset = 0
        for seq, size in sizes:
            lo, hi = max(start, offset), min(stop, offset + size)
            if lo < hi:
                with factory() as session:
                    data = session.scalar(select(func.substr(BlobChunk.data, lo - offset + 1, hi - lo))
                                          .where(BlobChunk.blob_id == blob_id, BlobChunk.seq == seq))
                if data is None:
                    raise RuntimeError(f"blob {blob_id}: chunk {seq} is missing")
                yield bytes(data)
            offset += size
            if offset >= stop:
                break

    def read_to_file(self, session: Session, blob_id: str, path: str | Path) -> str:
        """Copy a blob into ``path`` and return the sha256 of what was written (checked against the row)."""
        blob = session.get(Blob, blob_id)
        if blob is None or not blob.complete:
            raise RuntimeError(f"blob {blob_id} is missing or incomplete")
        digest = hashlib.sha256()
        with open(path, "wb") as fh:
            for seq in range(blob.chunks):
                data = session.scalar(select(BlobChunk.data).where(BlobChunk.blob_id == blob_id, BlobChunk.seq == seq))
                assert data is not None, f"blob {blob_id}: chunk {seq} is missing"
                digest.update(data)
                fh.write(data)
        if digest.hexdigest() != blob.sha256:
            raise RuntimeError(f"blob {blob_id}: sha256 mismatch on read")
        return blob.sha256

    def delete(self, session: Session, blob_id: str, reclaim: bool = True) -> None:
        """Delete the blob in the caller's transaction. ``reclaim``: once it commits, an SQLite database gives
        the space back to the file system (service/sqlite_upkeep.py); pass False when the space is reused at once."""
        session.execute(delete(BlobChunk).where(BlobChunk.blob_id == blob_id))
        session.execute(delete(Blob).where(Blob.id == blob_id))
        if reclaim:
            sqlite_upkeep.reclaim_after_commit(session)


def get_store() -> DbBlobStore:
    return DbBlobStore()
