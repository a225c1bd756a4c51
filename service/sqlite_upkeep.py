"""SQLite housekeeping for the embedded default: the pragmas each connection gets, a bound on the WAL file, and
giving the space of deleted rows back to the file system.

Without it the database only grows: a deleted dataset or job leaves its pages on SQLite's free list (the file
keeps its size), and one large transaction (an upload, an artifact) leaves a WAL file that large for good.
Postgres needs none of this (its autovacuum does the work), so everything here is a no-op there.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

log = logging.getLogger("sparsetune.db")

# After a checkpoint has copied the WAL back into the database, the WAL file is cut back to this size the next
# time a writer starts over at its beginning (SQLite otherwise keeps it as large as its largest transaction).
WAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024
# Pages (4 KiB each) in the WAL that trigger an automatic checkpoint: SQLite's default, written down on purpose.
WAL_AUTOCHECKPOINT_PAGES = 1000
_RECLAIM = "sparsetune_reclaim_pages"  # Session.info flag: this transaction freed pages worth handing back


def apply_pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    """Several processes (api, worker, trainer child) share one SQLite file: wait instead of failing.

    ``auto_vacuum`` comes first: it only takes on a database that has no pages yet, and switching to WAL
    writes the first page. On an existing database it is a no-op until :func:`convert_to_incremental`."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
    cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cur.close()


def _run_script(engine: Engine, script: str) -> None:
    """Run pragmas to completion on a connection of their own. ``executescript`` steps each statement until
    it is done; ``execute`` would stop after its first step, and ``incremental_vacuum`` frees one page a step."""
    raw = engine.raw_connection()
    try:
        raw.driver_connection.executescript(script)
    finally:
        raw.close()


def reclaim_free_pages(engine: Engine) -> None:
    """Give the free pages back to the file system now, and checkpoint so the database file itself shrinks.

    A passive checkpoint never waits for readers; whatever it cannot copy yet, the next one does."""
    if engine.dialect.name == "sqlite":
        _run_script(engine, "PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(PASSIVE);")


def convert_to_incremental(engine: Engine) -> bool:
    """A database made before incremental auto-vacuum (``auto_vacuum`` 0) is rebuilt once with it: a
    ``VACUUM`` rewrites the whole file, so it runs at start-up (``sparsetune up``) before the worker starts,
    and it needs free disk space about the size of the database. Returns whether it converted."""
    if engine.dialect.name != "sqlite":
        return False
    with engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA auto_vacuum").scalar()
    if mode == 2:  # INCREMENTAL
        return False
    log.warning("rebuilding the database once for incremental auto-vacuum (VACUUM); this takes a while "
                "for a large database")
    _run_script(engine, "PRAGMA auto_vacuum=INCREMENTAL; VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
    return True


def upkeep_at_start(engine: Engine) -> None:
    """Start-up housekeeping: convert an old database once, then hand back any free pages it has."""
    if not convert_to_incremental(engine):
        reclaim_free_pages(engine)


def reclaim_after_commit(session: Session) -> None:
    """Ask for :func:`reclaim_free_pages` once ``session``'s transaction commits (deletes of blobs, whose
    chunks are nearly all of the file's size). Not for a delete whose space is about to be reused at once,
    such as a checkpoint replaced by the next one."""
    session.info[_RECLAIM] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if not session.info.pop(_RECLAIM, False):
        return
    engine = session.get_bind()
    if not isinstance(engine, Engine) or engine.dialect.name != "sqlite":
        return
    try:
        reclaim_free_pages(engine)
    except Exception:  # noqa: BLE001 - the delete is committed; the pages are handed back next time
        log.warning("could not hand free database pages back", exc_info=True)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, _previous: Any) -> None:
    session.info.pop(_RECLAIM, None)
