"""A mark that changes whenever an API key is revoked, cheap enough to read on every request.

The door remembers verified keys for a couple of seconds (service/security.py ``KeyCache``). A key revoked from
another process (``sparsetune keys revoke``) must still be refused on the very next request, which used to cost
every route a second key lookup in the database. Instead, every revocation moves this mark after its commit,
each request reads the mark, and a remembered key counts as checked only if the mark has not moved since it was
verified; when it has, the key is looked up again (once, for every request that shares the lookup).

Where the mark lives follows the broker: a Redis counter when the broker is Redis (every API process on every
machine reads the same one: a GET a request), a file under the service's home in the embedded default (one
machine: an ``os.stat`` a request), else none. When there is no mark or it cannot be read (Redis away), the
reader says so (None) and the routes look the key up themselves, as before.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from service.loop_redis import LoopRedis

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger("sparsetune.api")
MARK_FILE = "key_revocations"  # under SPARSETUNE_HOME in the embedded default


class RevocationMark(Protocol):
    async def read(self) -> str | None:
        """The mark now; None when it cannot be read (then no remembered key counts as checked)."""

    def move(self) -> None:
        """Move the mark (after a revocation committed); a failure is logged, not raised: the revocation stands
        and the key caches' expiry still ends remembered keys."""


class NoMark:
    """No mark (a KeyCache built without one): remembered keys are never counted as checked."""

    async def read(self) -> str | None:
        return None

    def move(self) -> None:
        return None


class FileMark:
    """The file's identity (inode, modification time, size): replacing it atomically moves the mark."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def read(self) -> str | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "none"
        except OSError:
            return None
        return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"

    def move(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(secrets.token_hex(8))  # new inode and content: the identity changes even within one tick
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("key revocation mark not moved (%s): remembered keys end within their expiry", exc)
            tmp.unlink(missing_ok=True)


class RedisMark:
    """A counter in Redis, INCR'd by each revocation. After a failed read the mark is unknown for
    ``retry_seconds`` without asking again (service/loop_redis.py)."""

    def __init__(self, url: str, key: str, retry_seconds: float = 5.0, clock=time.monotonic) -> None:
        self.url, self.key = url, key
        self.redis = LoopRedis(url, 8, retry_seconds, clock)

    async def read(self) -> str | None:
        if self.redis.down:
            return None
        try:
            value = await self.redis.client().get(self.key)
        except Exception as exc:  # noqa: BLE001 - Redis away: the routes check keys themselves
            self.redis.failed("key revocation mark", exc, "routes look keys up")
            return None
        return "0" if value is None else value.decode()

    def move(self) -> None:
        import redis

        try:
            with redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2) as client:
                client.incr(self.key)
        except Exception as exc:  # noqa: BLE001
            log.warning("key revocation mark not moved (%s): remembered keys end within their expiry",
                        exc.__class__.__name__)


def mark_for(settings: Settings) -> RevocationMark:
    """The mark every process of this installation shares: Redis's when the broker is Redis, a file in the
    embedded default (one machine), else none (processes on several machines with another broker share no
    file: their routes look keys up themselves)."""
    broker = settings.broker_url or ""
    if broker.startswith(("redis://", "rediss://")):
        return RedisMark(broker, f"sparsetune:key-revocations:{settings.queue_name}")
    if settings.embedded:
        return FileMark(settings.home / MARK_FILE)
    return NoMark()
