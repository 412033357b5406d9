"""The fleet registry on the wire."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleetml.schemas.common import AccountId, JsonObject, Name
from fleetml.vocab import AccountState, Role


class AccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: AccountId
    role: Role = Role.MASTER
    master_id: AccountId | None = Field(default=None, description="Required for a servant.")
    group: Name | None = None
    state: AccountState | None = Field(
        default=None, description="Default: active for a master, standby for a servant."
    )
    capacity: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Messages per minute."
    )
    attributes: JsonObject = Field(default_factory=dict)


class AccountUpdate(BaseModel):
    """Fields to change; omitted fields stay as they are. ``account_id`` cannot change."""

    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    master_id: AccountId | None = None
    group: Name | None = None
    state: AccountState | None = None
    capacity: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    attributes: JsonObject | None = None


class AccountOut(BaseModel):
    account_id: str
    role: Role
    master_id: str | None = None
    group: str | None = None
    state: AccountState
    capacity: float | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    created_at: str | None = None
    updated_at: str | None = None
    retired_at: str | None = None


class AccountsOut(BaseModel):
    accounts: list[AccountOut]
    count: int
