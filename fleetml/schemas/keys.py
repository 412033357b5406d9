"""API keys and the audit log on the wire."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleetml.schemas.common import Name
from fleetml.vocab import ApiRole


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="Who or what uses the key.")
    role: ApiRole


class KeyOut(BaseModel):
    id: int
    name: str
    role: ApiRole
    prefix: str = Field(description="First characters of the key, to recognise it.")
    created_at: str
    created_by: str
    revoked_at: str | None = None


class KeyCreated(KeyOut):
    key: str = Field(description="The secret. Shown once: store it now, it cannot be read again.")


class KeysOut(BaseModel):
    keys: list[KeyOut]


class AuditEntry(BaseModel):
    id: int
    ts: str
    actor: str
    action: str
    entity_type: str
    entity_id: str | None = None
    before: Any = None
    after: Any = None
    detail: Any = None


class AuditOut(BaseModel):
    entries: list[AuditEntry]
    count: int


class WhoAmI(BaseModel):
    id: int
    name: str
    role: ApiRole
