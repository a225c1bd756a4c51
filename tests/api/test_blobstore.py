"""The chunked blob store: sha256 computed on the way, chunked reads, and a failed write leaves nothing."""

from __future__ import annotations

import hashlib
import os

import pytest

from service.blobstore import DbBlobStore
from service.db import session_factory, session_scope
from service.models import Blob
from tests.api.fixtures import count_rows


def test_write_then_read_chunks_round_trip(service_env):
    store = DbBlobStore(chunk_bytes=1000)
    data = os.urandom(3500)
    with session_scope() as s:
        blob = store.write(s, [data[:10], data[10:2500], data[2500:]])  # pieces need not align with chunks
        blob_id = blob.id
    with session_scope() as s:
        row = s.get(Blob, blob_id)
        assert row.complete and row.chunks == 4 and row.bytes == 3500
        assert row.sha256 == hashlib.sha256(data).hexdigest()
    chunks = list(store.read_chunks(session_factory(), blob_id))
    assert [len(c) for c in chunks] == [1000, 1000, 1000, 500] and b"".join(chunks) == data


def test_failed_write_leaves_no_blob_or_chunk(service_env):
    store = DbBlobStore(chunk_bytes=100)
    before = count_rows("blobs"), count_rows("blob_chunks")

    def pieces():
        yield b"x" * 250
        raise OSError("disk went away mid-upload")

    with pytest.raises(OSError), session_scope() as s:
        store.write(s, pieces())
    assert (count_rows("blobs"), count_rows("blob_chunks")) == before


def test_read_to_file_checks_sha256(service_env, tmp_path):
    store = DbBlobStore(chunk_bytes=64)
    with session_scope() as s:
        blob_id = store.write_bytes(s, b"abc" * 100).id
    with session_scope() as s:
        assert store.read_to_file(s, blob_id, tmp_path / "out") == hashlib.sha256(b"abc" * 100).hexdigest()
        s.get(Blob, blob_id).sha256 = "0" * 64  # corrupt the record: the read must notice
        with pytest.raises(RuntimeError, match="sha256 mismatch"):
            store.read_to_file(s, blob_id, tmp_path / "out2")
