"""Routing weights for the runtime: each account's weight with its reasons, and each group's
balancing algorithm and automation mode."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fleetml.api.deps import ReaderKey, StateDep
from fleetml.decisions.contracts import GroupPolicy, Mode
from fleetml.errors import NotFound
from fleetml.schemas.alerts import iso
from fleetml.schemas.common import ErrorResponse
from fleetml.schemas.decisions import GROUP_PATTERN, GroupRoutingOut, WeightOut, WeightsOut
from fleetml.store.policies import read_group_policies
from fleetml.store.weights import group_known, read_weights, weights_version

router = APIRouter(prefix="/v1", tags=["weights"])


@router.get(
    "/weights",
    response_model=WeightsOut,
    responses={404: {"model": ErrorResponse, "description": "No account belongs to the group."}},
    summary="Routing weights in effect",
)
def get_weights(
    key: ReaderKey,
    state: StateDep,
    group: Annotated[str | None, Query(pattern=GROUP_PATTERN, description="One group.")] = None,
) -> WeightsOut:
    """Route a group's traffic in proportion to its accounts' weights, with the group's
    algorithm. In shadow mode the weights are advisory: fleetml records them but the runtime
    may keep its own. Poll cheaply: reload when ``version`` moves."""
    engine = state.engine
    if group is not None and not group_known(engine, group=group):
        raise NotFound(
            f"group {group!r} has no accounts; list groups with GET /v1/accounts, or leave "
            "out ?group= for every group"
        )
    frame = read_weights(engine, group=group)
    default_mode = state.settings.decision_mode
    policies = read_group_policies(engine, default_mode=default_mode)
    default = GroupPolicy(mode=Mode(default_mode))
    groups = sorted(set(frame["group"].tolist()) | ({group} if group is not None else set()))
    accounts = [
        WeightOut(
            account_id=a, group=g, weight=w, target=t, reasons=list(r or []), updated_at=iso(ts)
        )
        for a, g, w, t, r, ts in zip(
            frame["account_id"], frame["group"], frame["weight"], frame["target"],
            frame["reasons"], frame["ts_ms"], strict=True,
        )
    ]  # fmt: skip
    return WeightsOut(
        version=iso(weights_version(engine)),
        groups=[
            GroupRoutingOut(
                group=g,
                algorithm=policies.get(g, default).algorithm,
                mode=policies.get(g, default).mode,
            )
            for g in groups
        ],
        accounts=accounts,
    )
