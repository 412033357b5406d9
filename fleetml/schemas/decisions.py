"""Decisions on the wire: routing weights, actions, recommendations, the decision record and
group policies. Timestamps go out as ISO-8601 UTC strings, like the alerts API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleetml.decisions.contracts import Algorithm, GroupPolicy, Mode
from fleetml.schemas.alerts import iso

ActionState = Literal[
    "awaiting_approval", "pending", "acknowledged", "failed", "expired", "rejected", "superseded"
]
RecommendationState = Literal["open", "accepted", "dismissed", "applied", "expired"]
#: Group names are free text, but never control characters (PostgreSQL refuses NUL in text).
GROUP_PATTERN = r"^[^\x00-\x1f\x7f]{1,128}$"
#: Free text people write: anything but NUL.
_TEXT_PATTERN = r"^[^\x00]*$"
_NEXT_CURSOR = Field(
    default=None,
    description="Pass as ?cursor= for the next page; null on the last page.",
    examples=["41"],
)


def _stamped(row: Mapping[str, Any], *stamps: str) -> dict[str, Any]:
    return {**row, **{k: iso(row[k]) for k in stamps}}


# ---- weights -------------------------------------------------------------------------------


class WeightOut(BaseModel):
    """An account's routing weight: the share of its group's traffic it should carry, relative
    to the other accounts of the group."""

    account_id: str = Field(examples=["bot-017"])
    group: str = Field(examples=["eu-sales"])
    weight: float = Field(description="The weight in effect (smoothed).", examples=[42.5])
    target: float = Field(description="Where the weight is heading.", examples=[30.0])
    reasons: list[str] = Field(
        description="Why the weight is below the account's capacity; empty at full weight.",
        examples=[["failure risk 0.41", "latency 1.8x the group median"]],
    )
    updated_at: str = Field(description="The tick that set it.")


class GroupRoutingOut(BaseModel):
    """How a group's runtime should balance, and how far fleetml's automation goes in it."""

    group: str = Field(examples=["eu-sales"])
    algorithm: Algorithm
    mode: Mode = Field(
        description="off, shadow (weights are advisory), approve or auto (weights apply)."
    )


class WeightsOut(BaseModel):
    """Routing weights in effect, by account, with each group's algorithm and mode."""

    version: str | None = Field(
        description="When the newest weights were computed; poll and reload when it moves.",
        examples=["2026-01-31T12:05:00.000Z"],
    )
    groups: list[GroupRoutingOut]
    accounts: list[WeightOut]


# ---- actions -------------------------------------------------------------------------------


class ActionOut(BaseModel):
    """An action for the runtime. Carry out ``pending`` ones, then acknowledge them."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 12,
                    "decision_id": 301,
                    "account_id": "bot-017",
                    "group": "eu-sales",
                    "kind": "failover",
                    "params": {"to": "bot-017-s1"},
                    "state": "pending",
                    "created_at": "2026-01-31T12:05:00.000Z",
                    "expires_at": "2026-01-31T12:20:00.000Z",
                    "approved_by": "oncall-alice",
                    "approved_at": "2026-01-31T12:06:10.000Z",
                    "acked_at": None,
                    "acked_by": None,
                    "detail": None,
                }
            ]
        }
    )

    id: int
    decision_id: int | None = Field(description="The decision record behind it.")
    account_id: str
    group: str | None = None
    kind: str = Field(description="restart_session, throttle, drain, pause, resume, failover, ...")
    params: dict[str, Any]
    state: ActionState
    created_at: str
    expires_at: str = Field(description="Not acknowledged by then, it expires.")
    approved_by: str | None = Field(
        default=None, description="Who approved (or rejected) it; null in auto mode."
    )
    approved_at: str | None = None
    acked_at: str | None = None
    acked_by: str | None = None
    detail: str | None = Field(
        default=None,
        description="The runtime's report, a rejection's comment, or what replaced it.",
    )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ActionOut:
        return cls(**_stamped(row, "created_at", "expires_at", "approved_at", "acked_at"))


class ActionsOut(BaseModel):
    """A page of actions, newest first."""

    actions: list[ActionOut]
    next_cursor: str | None = _NEXT_CURSOR


class ActionAck(BaseModel):
    """The runtime's report on a pending action."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"outcome": "ok"}, {"outcome": "failed",
                                        "detail": "servant bot-017-s1 not paired"}]},
    )  # fmt: skip

    outcome: Literal["ok", "failed"] = Field(description="ok: carried out; failed: could not.")
    detail: str | None = Field(default=None, max_length=2000, pattern=_TEXT_PATTERN)


class Comment(BaseModel):
    """Optional body of approve, reject, accept and dismiss."""

    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(
        default=None, max_length=2000, pattern=_TEXT_PATTERN, examples=["checked the session"]
    )


# ---- recommendations -----------------------------------------------------------------------


class RecommendationOut(BaseModel):
    """A suggestion for a person, with its evidence. Accepting one with a ``setting`` changes
    that group's policy."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 5,
                    "kind": "change_algorithm",
                    "group": "eu-sales",
                    "account_id": None,
                    "state": "open",
                    "title": "eu-sales: least_load would cut p95 latency by 18%",
                    "evidence": {"p95_ms": {"p2c_ewma": 840, "least_load": 690}},
                    "expected_impact": {"p95_latency_change": -0.18},
                    "confidence": 0.7,
                    "setting": {"group": "eu-sales", "field": "algorithm", "value": "least_load"},
                    "occurrences": 3,
                    "created_at": "2026-01-31T09:00:00.000Z",
                    "updated_at": "2026-01-31T12:00:00.000Z",
                    "expires_at": "2026-02-01T12:00:00.000Z",
                    "decided_by": None,
                    "decided_at": None,
                    "comment": None,
                }
            ]
        }
    )

    id: int
    kind: str = Field(description="A RecommendationKind value.")
    group: str | None = None
    account_id: str | None = None
    state: RecommendationState
    title: str
    evidence: dict[str, Any]
    expected_impact: dict[str, Any]
    confidence: float
    setting: dict[str, Any] | None = Field(
        default=None, description="What accepting applies: {group, field, value}; or null."
    )
    occurrences: int = Field(description="How many times it was raised while open.")
    created_at: str
    updated_at: str
    expires_at: str
    decided_by: str | None = None
    decided_at: str | None = None
    comment: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RecommendationOut:
        stamps = ("created_at", "updated_at", "expires_at", "decided_at")
        return cls(**_stamped(row, *stamps))


class RecommendationsOut(BaseModel):
    """A page of recommendations, newest first."""

    recommendations: list[RecommendationOut]
    next_cursor: str | None = _NEXT_CURSOR


# ---- the decision record -------------------------------------------------------------------


class DecisionOut(BaseModel):
    """One decision and why: the rule that fired, the inputs that mattered, the model versions
    behind them and, for failovers, whether it turned out to be needed."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 301,
                    "ts": "2026-01-31T12:05:00.000Z",
                    "kind": "failover",
                    "rule": "risk_sustained",
                    "reason": "failure risk 0.72 >= 0.60 for 2 ticks (1h horizon)",
                    "account_id": "bot-017",
                    "group": "eu-sales",
                    "mode": "auto",
                    "status": "executed",
                    "params": {"to": "bot-017-s1"},
                    "inputs": {"risk": 0.72, "risk_on": 0.6, "risk_run": 2},
                    "models": {"risk": 4},
                    "outcome": None,
                    "outcome_at": None,
                    "action_id": 12,
                }
            ]
        }
    )

    id: int
    ts: str
    kind: str = Field(description="weight, an action kind, or recommendation.")
    rule: str
    reason: str
    account_id: str | None = None
    group: str | None = None
    mode: str
    status: str = Field(
        description="executed, shadow, awaiting_approval, recommended, recorded, rejected, "
        "expired, failed or superseded."
    )
    params: dict[str, Any]
    inputs: dict[str, Any]
    models: dict[str, Any]
    outcome: dict[str, Any] | None = None
    outcome_at: str | None = None
    action_id: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DecisionOut:
        return cls(**{**row, "ts": iso(row["ts_ms"]), "outcome_at": iso(row["outcome_at"])})


class DecisionsOut(BaseModel):
    """A page of decisions, newest first."""

    decisions: list[DecisionOut]
    next_cursor: str | None = _NEXT_CURSOR


# ---- group policies ------------------------------------------------------------------------


class GroupPolicyOut(BaseModel):
    """A group's effective decision settings: its own where it set them, the defaults
    elsewhere."""

    group: str = Field(examples=["eu-sales"])
    mode: Mode
    algorithm: Algorithm
    risk_on: float
    risk_off: float
    trigger_ticks: int
    clear_ticks: int
    risk_horizon: str
    cooldown_s: int
    weight_floor: float
    weight_cap: float
    smoothing: float
    probation_s: int
    customized: list[str] = Field(
        description="The settings this group set; the others follow the defaults.",
        examples=[["mode", "risk_on"]],
    )
    updated_at: str | None = None
    updated_by: str | None = None

    @classmethod
    def from_policy(
        cls,
        group: str,
        policy: GroupPolicy,
        *,
        customized: list[str],
        updated_at: int | None,
        updated_by: str | None,
    ) -> GroupPolicyOut:
        from dataclasses import asdict

        return cls(
            group=group,
            **asdict(policy),
            customized=customized,
            updated_at=iso(updated_at),
            updated_by=updated_by,
        )


class GroupPolicyPatch(BaseModel):
    """Any subset of a group's settings; null puts a setting back to its default."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"mode": "approve", "risk_on": 0.7}]},
    )

    mode: Mode | None = Field(default=None, description="off, shadow, approve or auto.")
    algorithm: Algorithm | None = None
    risk_on: float | None = Field(default=None, description="Failover risk level, in (0, 1).")
    risk_off: float | None = Field(
        default=None, description="Failback risk level, in (0, 1) and below risk_on."
    )
    trigger_ticks: int | None = Field(default=None, description="1 to 10000 ticks.")
    clear_ticks: int | None = Field(default=None, description="1 to 10000 ticks.")
    risk_horizon: str | None = Field(
        default=None, max_length=16, description="A horizon the risk model serves, e.g. 1h."
    )
    cooldown_s: int | None = Field(default=None, description="0 to 30 days, in seconds.")
    weight_floor: float | None = Field(default=None, description="In [0, 1], up to weight_cap.")
    weight_cap: float | None = Field(default=None, description="In (0, 10].")
    smoothing: float | None = Field(default=None, description="In [0, 1].")
    probation_s: int | None = Field(default=None, description="0 to 30 days, in seconds.")
