"""API keys: random secrets shown once, stored as SHA-256 hashes, each with one role.

Keys carry 256 bits of randomness, so a fast hash is the right tool (slow password hashes exist
for low-entropy secrets); lookups are by hash, never by comparing plaintexts.
"""

from __future__ import annotations

import hashlib
import secrets

import pandas as pd
import sqlalchemy as sa

from fleetml.errors import Conflict, InvalidInput, NotFound
from fleetml.store import audit
from fleetml.store.audit import connect, now_ms
from fleetml.store.tables import api_keys
from fleetml.vocab import NAME_MAX, ApiRole, text_problem

KEY_PREFIX = "fml_"


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def _public(row) -> dict:
    return {
        "id": row["id"],
        "name": row["name"],
        "role": row["role"],
        "prefix": row["prefix"],
        "created_at": pd.Timestamp(row["created_at"], unit="ms", tz="UTC").isoformat(),
        "created_by": row["created_by"],
        "revoked_at": None
        if row["revoked_at"] is None
        else pd.Timestamp(row["revoked_at"], unit="ms", tz="UTC").isoformat(),
    }


def create_key(conn: sa.Connection, *, role: str, name: str, actor: str) -> tuple[str, dict]:
    """Create a key; returns ``(plaintext, record)``. The plaintext is never stored."""
    if role not in {r.value for r in ApiRole}:
        raise InvalidInput(f"role must be one of runtime, ops, admin (got {role!r})")
    if not name or text_problem(name, max_length=NAME_MAX) is not None:
        raise InvalidInput(
            "a key needs a name of 1-128 characters, without NUL (who or what uses it)",
            field="name",
        )
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    result = conn.execute(
        api_keys.insert().values(
            name=name,
            role=role,
            prefix=plaintext[:12],
            key_hash=hash_key(plaintext),
            created_at=now_ms(),
            created_by=actor,
            revoked_at=None,
        )
    )
    key_id = result.inserted_primary_key[0]
    row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).mappings().one()
    record = _public(row)
    audit.record(
        conn,
        actor=actor,
        action="key.create",
        entity_type="api_key",
        entity_id=str(key_id),
        after=record,
    )
    return plaintext, record


def lookup_key(bind, plaintext: str) -> dict | None:
    """The active key record for a plaintext key, or None (unknown or revoked)."""
    if not plaintext or not plaintext.startswith(KEY_PREFIX):
        return None
    with connect(bind) as conn:
        row = (
            conn.execute(
                sa.select(api_keys).where(
                    api_keys.c.key_hash == hash_key(plaintext), api_keys.c.revoked_at.is_(None)
                )
            )
            .mappings()
            .first()
        )
    return None if row is None else _public(row)


def list_keys(bind, *, include_revoked: bool = False) -> list[dict]:
    query = sa.select(api_keys).order_by(api_keys.c.id)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    with connect(bind) as conn:
        return [_public(r) for r in conn.execute(query).mappings()]


def revoke_key(conn: sa.Connection, key_id: int, *, actor: str) -> dict:
    row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
    if row is None:
        raise NotFound(f"no API key with id {key_id}")
    before = _public(row)
    if row["revoked_at"] is None and row["role"] == "admin":
        # Locked (PostgreSQL), so two revocations at once cannot each leave the other one last.
        admins = conn.execute(
            sa.select(api_keys.c.id)
            .where(api_keys.c.role == "admin", api_keys.c.revoked_at.is_(None))
            .with_for_update()
        ).all()
        if len(admins) <= 1:
            raise Conflict(
                f"API key {key_id} is the last admin key; revoking it would lock every admin "
                "out: create another admin key first (POST /v1/keys or fleetml keys create)"
            )
    if row["revoked_at"] is None:
        conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(revoked_at=now_ms()))
    row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).mappings().one()
    after = _public(row)
    if before != after:
        audit.record(
            conn,
            actor=actor,
            action="key.revoke",
            entity_type="api_key",
            entity_id=str(key_id),
            before=before,
            after=after,
        )
    return after
