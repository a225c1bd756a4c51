"""API keys: random, stored as SHA-256 with a lookup prefix, compared in constant time, never logged."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from service.models import ApiKey, Owner
from service.revocations import NoMark, RevocationMark, mark_for
from service.settings import get_settings

KEY_SCHEME = "st"


def new_id(kind: str) -> str:
    return f"{kind}_{secrets.token_hex(12)}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> tuple[str, str]:
    """Return (key, prefix); the key is shown once, only its hash is stored."""
    prefix = secrets.token_hex(6)
    return f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}", prefix


def create_key(session: Session, name: str, owner_id: str | None = None) -> tuple[ApiKey, str]:
    """A new key; a new owner unless ``owner_id`` names an existing one (ValueError if it does not exist)."""
    if owner_id is None:
        owner = Owner(id=new_id("own"), name=name)
        session.add(owner)
        session.flush()
    else:
        owner = session.get(Owner, owner_id)
        if owner is None:
            raise ValueError(f"owner: no owner {owner_id!r}")
    key, prefix = generate_key()
    row = ApiKey(id=new_id("key"), owner_id=owner.id, name=name, prefix=prefix, key_hash=hash_key(key))
    session.add(row)
    session.flush()
    return row, key


def authenticate(session: Session, key: str) -> Owner | None:
    """The key's owner, or None for a malformed, unknown or revoked key (all look the same to a caller)."""
    parts = key.split("_", 2)  # the secret itself may contain "_"
    if len(parts) != 3 or parts[0] != KEY_SCHEME:
        return None
    # one round trip for key and owner: every authenticated request pays for this lookup
    found = session.execute(select(ApiKey.key_hash, ApiKey.revoked_at, Owner)
                            .join(Owner, Owner.id == ApiKey.owner_id).where(ApiKey.prefix == parts[1])).first()
    if found is None or found.revoked_at is not None:
        return None
    if not hmac.compare_digest(found.key_hash, hash_key(key)):
        return None
    return found.Owner


def revoke_key(session: Session, key_id: str) -> ApiKey | None:
    """Mark the key revoked; once the session commits, the revocation mark moves (service/revocations.py), so
    every API process looks the key up again on its next request instead of trusting what it remembers."""
    row = session.get(ApiKey, key_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = time.time()
        event.listen(session, "after_commit", _move_revocation_mark, once=True)
    return row


def _move_revocation_mark(_session: Session) -> None:
    mark_for(get_settings()).move()


@dataclass(frozen=True)
class KeyIdentity:
    """Who a verified key belongs to (what the door, the rate limiter and the streams need; no secret)."""

    owner_id: str
    prefix: str


def bearer_token(scope) -> str | None:
    """The bearer token of an ASGI request, or None (no Authorization header, or another scheme)."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def looks_like_key(token: str) -> bool:
    parts = token.split("_", 2)
    return len(parts) == 3 and parts[0] == KEY_SCHEME and parts[1].isalnum() and 0 < len(parts[1]) <= 32 \
        and 0 < len(parts[2]) <= 256


class KeyCache:
    """Verified keys, remembered for ``ttl`` seconds per process (by the key's SHA-256, never the key): the
    door checks every /v1 request with it before any body is read, and open event streams re-check their key
    with it, so a revoked key stops working within ``ttl`` everywhere at the cost of one lookup per key per
    ``ttl``. Unknown and revoked keys are remembered too (bounded: the cache is cleared when full).

    Each entry also keeps the revocation mark read before its lookup (service/revocations.py). An entry whose
    mark is the current one is *checked*: no key was revoked since it was read from the database, so a route
    may trust it without a lookup of its own. An entry whose mark moved is looked up again; with no mark
    (None) entries live by ``ttl`` alone and are never checked."""

    def __init__(self, ttl: float = 2.0, max_keys: int = 10_000, clock=time.monotonic,
                 mark: RevocationMark | None = None) -> None:
        self.ttl, self.max_keys, self._clock = ttl, max_keys, clock
        self.mark: RevocationMark = mark or NoMark()
        self._known: dict[str, tuple[float, KeyIdentity | None, str | None]] = {}
        self._pending: dict[tuple[str, str | None], asyncio.Future[KeyIdentity | None]] = {}
        self.lookups = 0  # database reads made (tests look)

    def cached(self, key: str, mark: str | None = None) -> tuple[bool, KeyIdentity | None]:
        """(found, identity) without a database read: an unexpired entry, unless the revocation mark it was
        read under is not ``mark`` (with ``mark`` None, any unexpired entry)."""
        hit = self._known.get(hash_key(key))
        if hit is None or hit[0] < self._clock() or (mark is not None and hit[2] != mark):
            return False, None
        return True, hit[1]

    async def recheck(self, key: str) -> KeyIdentity | None:
        """The key's identity, looked up again only once its entry expired (the mark is read then, not on
        every call): an open event stream's periodic check, which must end a revoked key's stream within
        ``ttl`` without adding a read of the mark per stream per ``ttl``."""
        found, identity = self.cached(key)
        if found:
            return identity
        return await self.verify(key, await self.mark.read())

    async def verify(self, key: str, mark: str | None = None) -> KeyIdentity | None:
        """The key's identity, from the cache or one lookup, remembered under ``mark`` (read before this call).
        Concurrent checks of one key under one mark share that lookup: when the entry of a key with 500 open
        streams expires, they would otherwise all read the database at once and take the pool from every other
        request; a check under a newer mark does not join a lookup that may have read before the revocation."""
        found, identity = self.cached(key, mark)
        if found:
            return identity
        digest = hash_key(key)
        pending = self._pending.get((digest, mark))
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if pending.cancelled():  # the request that was looking went away: look again
                    return await self.verify(key, mark)
                raise
        from anyio import to_thread

        future: asyncio.Future[KeyIdentity | None] = asyncio.get_running_loop().create_future()
        self._pending[(digest, mark)] = future
        try:
            self.lookups += 1
            identity = await to_thread.run_sync(_lookup, key)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._pending[(digest, mark)]
        if len(self._known) >= self.max_keys:
            self._known.clear()
        self._known[digest] = (self._clock() + self.ttl, identity, mark)
        future.set_result(identity)
        return identity


def _lookup(key: str) -> KeyIdentity | None:
    """One short session (its connection back in the pool at once)."""
    from service.db import session_factory

    with session_factory()() as session:
        owner = authenticate(session, key)
        return None if owner is None else KeyIdentity(owner.id, key.split("_", 2)[1])
