"""API keys: random, stored as SHA-256 with a lookup prefix, compared in constant time, never logged."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.models import ApiKey, Owner

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
    row = session.get(ApiKey, key_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = time.time()
    return row
