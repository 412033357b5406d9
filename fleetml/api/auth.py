"""API keys: bearer-token verification with a short cache, and role checks.

Verified keys are trusted for ``settings.api_key_cache_s`` without a database read (ingest runs
many requests a second). Revoking a key through this process forgets the cache at once; a key
revoked elsewhere (CLI, another worker) stops working within that many seconds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from fastapi import HTTPException, status

from fleetml.store.keys import hash_key
from fleetml.vocab import ApiRole

_BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="fleetml"'}


@dataclass(frozen=True, slots=True)
class ApiKey:
    """The caller: the key's id, name (the audit log's "who") and role."""

    id: int
    name: str
    role: ApiRole


class KeyCache:
    """Verified keys by the SHA-256 of their plaintext, each trusted until its expiry."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._keys: dict[str, tuple[ApiKey, float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _digest(plaintext: str) -> str:
        return hash_key(plaintext)

    def get(self, plaintext: str) -> ApiKey | None:
        entry = self._keys.get(self._digest(plaintext))
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, plaintext: str, key: ApiKey) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._keys) > 10_000:
                self._keys.clear()
            self._keys[self._digest(plaintext)] = (key, time.monotonic() + self.ttl_s)

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers=_BEARER_CHALLENGE)


def verify_key(engine, cache: KeyCache, plaintext: str) -> ApiKey:
    """The key behind ``plaintext`` from the store (callers check ``cache`` first); 401 when
    unknown or revoked. A verified key is put in ``cache``."""
    from fleetml.store.keys import lookup_key

    record = lookup_key(engine, plaintext)
    if record is None:
        raise unauthorized(
            "API key is not valid (unknown or revoked); ask an admin for a key "
            "(fleetml keys create) and send it as 'Authorization: Bearer KEY'"
        )
    key = ApiKey(id=int(record["id"]), name=record["name"], role=ApiRole(record["role"]))
    cache.put(plaintext, key)
    return key


def check_role(key: ApiKey, allowed: frozenset[ApiRole], action: str) -> ApiKey:
    """Refuse (403) a key whose role is not in ``allowed``; admin may do everything."""
    if key.role is ApiRole.ADMIN or key.role in allowed:
        return key
    needed = " or ".join(r.value for r in ApiRole if r in allowed or r is ApiRole.ADMIN)
    raise HTTPException(
        status.HTTP_403_FORBIDDEN,
        detail=f"{action} needs an API key with role {needed}; "
        f"key {key.name!r} has role {key.role.value}",
    )
