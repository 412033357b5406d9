"""Group policies: a group's decision settings (automation mode, balancing algorithm, failover
thresholds, weight limits). Ops read them; admins change them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from fleetml.api.deps import AdminKey, OpsKey, StateDep
from fleetml.schemas.common import ErrorResponse
from fleetml.schemas.decisions import GROUP_PATTERN, GroupPolicyOut, GroupPolicyPatch
from fleetml.store import policies as store
from fleetml.store.audit import now_ms

router = APIRouter(prefix="/v1", tags=["policies"])

GroupName = Annotated[str, Path(pattern=GROUP_PATTERN, description="The group's name.")]


def _out(state, group: str) -> GroupPolicyOut:
    found = store.read_group_policy(
        state.engine, group=group, default_mode=state.settings.decision_mode
    )
    return GroupPolicyOut.from_policy(
        group,
        found["policy"],
        customized=found["customized"],
        updated_at=found["updated_at"],
        updated_by=found["updated_by"],
    )


@router.get(
    "/groups/{group}/policy",
    response_model=GroupPolicyOut,
    summary="A group's effective decision settings",
)
def get_policy(group: GroupName, key: OpsKey, state: StateDep) -> GroupPolicyOut:
    """A group that set nothing (or has no accounts yet) answers the defaults, so a policy can
    be prepared before its accounts are registered."""
    return _out(state, group)


@router.patch(
    "/groups/{group}/policy",
    response_model=GroupPolicyOut,
    responses={422: {"model": ErrorResponse, "description": "An unknown setting or bad value."}},
    summary="Change some of a group's decision settings",
)
def patch_policy(
    group: GroupName, body: GroupPolicyPatch, key: AdminKey, state: StateDep
) -> GroupPolicyOut:
    """Send only the settings to change; null puts one back to its default. The next tick
    decides with them. Audited with the values before and after."""
    with state.engine.begin() as conn:
        store.set_group_policy(
            conn,
            group=group,
            changes=body.model_dump(exclude_unset=True),
            actor=key.name,
            now_ms=now_ms(),
            default_mode=state.settings.decision_mode,
        )
    return _out(state, group)
