"""API key administration. Secrets are shown once, at creation; the store keeps only hashes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fleetml.api.deps import AdminKey, AnyKey, OpsKey, StateDep
from fleetml.api.routers._params import row_id
from fleetml.schemas.common import ErrorResponse
from fleetml.schemas.keys import KeyCreate, KeyCreated, KeyOut, KeysOut, WhoAmI

router = APIRouter(prefix="/v1", tags=["keys"])
KeyId = row_id("API key")


@router.get("/whoami", response_model=WhoAmI, summary="The calling key's id, name and role")
def whoami(key: AnyKey) -> dict:
    """What the dashboard asks at login: runtime keys may not log in, ops review, admin also
    changes settings."""
    return {"id": key.id, "name": key.name, "role": key.role.value}


@router.post("/keys", status_code=201, response_model=KeyCreated, summary="Create an API key")
def create_key(body: KeyCreate, key: AdminKey, state: StateDep) -> dict:
    """The answer carries the plaintext ``key`` once; store it now."""
    from fleetml.store.keys import create_key as store_create

    with state.engine.begin() as conn:
        plaintext, record = store_create(conn, role=body.role.value, name=body.name, actor=key.name)
    return {**record, "key": plaintext}


@router.get("/keys", response_model=KeysOut, summary="List API keys (never their secrets)")
def list_keys(
    key: OpsKey,
    state: StateDep,
    include_revoked: Annotated[bool, Query()] = False,
) -> dict:
    from fleetml.store.keys import list_keys as store_list

    return {"keys": store_list(state.engine, include_revoked=include_revoked)}


@router.delete(
    "/keys/{key_id}",
    response_model=KeyOut,
    responses={404: {"model": ErrorResponse}},
    summary="Revoke an API key",
)
def revoke_key(key_id: KeyId, key: AdminKey, state: StateDep) -> dict:
    """Effective at once in this process (other workers: within ``api_key_cache_s``)."""
    from fleetml.store.keys import revoke_key as store_revoke

    with state.engine.begin() as conn:
        record = store_revoke(conn, key_id, actor=key.name)
    state.keys.clear()
    return record
