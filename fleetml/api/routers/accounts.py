"""The fleet registry. Every change is audited with the caller's key name."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fleetml.api.deps import AdminKey, OpsKey, StateDep
from fleetml.errors import NotFound
from fleetml.schemas.accounts import AccountCreate, AccountOut, AccountsOut, AccountUpdate
from fleetml.schemas.common import ErrorResponse
from fleetml.vocab import AccountState, Role

router = APIRouter(prefix="/v1", tags=["accounts"])

_ERRORS = {
    404: {"model": ErrorResponse, "description": "No such account."},
    409: {
        "model": ErrorResponse,
        "description": "Contradicts the registry (exists, has servants).",
    },
    422: {"model": ErrorResponse, "description": "Invalid field (e.g. servant without master)."},
}


@router.post(
    "/accounts",
    status_code=201,
    response_model=AccountOut,
    responses=_ERRORS,
    summary="Register an account",
)
def create_account(body: AccountCreate, key: AdminKey, state: StateDep) -> dict:
    """A servant needs ``master_id`` naming a registered master."""
    from fleetml.store.accounts import create_account as store_create

    with state.engine.begin() as conn:
        return store_create(conn, **body.model_dump(mode="json"), actor=key.name)


@router.get("/accounts", response_model=AccountsOut, summary="List accounts")
def list_accounts(
    key: OpsKey,
    state: StateDep,
    group: str | None = None,
    role: Role | None = None,
    state_: Annotated[AccountState | None, Query(alias="state")] = None,
    master_id: str | None = None,
    include_retired: Annotated[bool, Query(description="Include retired accounts.")] = False,
) -> dict:
    from fleetml.store.accounts import list_accounts as store_list

    rows = store_list(
        state.engine,
        group=group,
        role=None if role is None else role.value,
        state=None if state_ is None else state_.value,
        master_id=master_id,
        include_retired=include_retired,
    )
    return {"accounts": rows, "count": len(rows)}


@router.get(
    "/accounts/{account_id}", response_model=AccountOut, responses=_ERRORS, summary="One account"
)
def get_account(account_id: str, key: OpsKey, state: StateDep) -> dict:
    from fleetml.store.accounts import get_account as store_get

    account = store_get(state.engine, account_id)
    if account is None:
        raise NotFound(f"account {account_id!r} is not registered")
    return account


@router.patch(
    "/accounts/{account_id}",
    response_model=AccountOut,
    responses=_ERRORS,
    summary="Change fields of an account",
)
def update_account(account_id: str, body: AccountUpdate, key: AdminKey, state: StateDep) -> dict:
    """Only the fields sent change (send ``"master_id": null`` to clear it)."""
    from fleetml.store.accounts import update_account as store_update

    changes = body.model_dump(mode="json", exclude_unset=True)
    with state.engine.begin() as conn:
        return store_update(conn, account_id, changes=changes, actor=key.name)


@router.delete(
    "/accounts/{account_id}",
    response_model=AccountOut,
    responses=_ERRORS,
    summary="Retire an account (state disabled, history kept)",
)
def retire_account(account_id: str, key: AdminKey, state: StateDep) -> dict:
    """The account leaves listings (see ``include_retired``) but its samples and events stay."""
    from fleetml.store.accounts import retire_account as store_retire

    with state.engine.begin() as conn:
        return store_retire(conn, account_id, actor=key.name)
