"""Alerts, their history and silences on the wire. Timestamps go out as ISO-8601 UTC strings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from fleetml.timestamps import parse_ts_ms
from fleetml.vocab import ACCOUNT_ID_RE

AlertState = Literal["firing", "acknowledged", "resolved"]
#: What ``GET /v1/alerts?state=`` accepts: a state, or ``open`` for firing and acknowledged.
AlertStateFilter = Literal["firing", "acknowledged", "resolved", "open"]


def _to_ms(value: Any) -> int:
    """An ISO-8601 string (naive means UTC) or epoch seconds, as epoch milliseconds."""
    if not isinstance(value, str | int | float):
        raise ValueError("must be an ISO-8601 string or epoch seconds")
    return parse_ts_ms(value)


#: A timestamp in a request body: ISO-8601 or epoch seconds, held as epoch milliseconds.
TimestampIn = Annotated[
    int,
    BeforeValidator(_to_ms),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
            "description": "ISO-8601 (naive means UTC) or epoch seconds.",
        }
    ),
]


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds and a Z."""
    if ms is None:
        return None
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"


class AlertHistoryOut(BaseModel):
    """One state change of an alert."""

    ts: str = Field(examples=["2026-01-31T12:05:00.000Z"])
    from_state: AlertState | None = Field(default=None, examples=["firing"])
    to_state: AlertState = Field(examples=["acknowledged"])
    actor: str = Field(description="The API key's name, or 'fleetml'.", examples=["oncall-alice"])
    note: str | None = Field(default=None, examples=["looking at the session logs"])


class AlertOut(BaseModel):
    """An alert: at most one is open (firing or acknowledged) per account and kind."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 42,
                    "account_id": "bot-017",
                    "group": "eu-sales",
                    "kind": "failure_risk",
                    "severity": "critical",
                    "state": "firing",
                    "summary": "bot-017: failure risk within 1h (72%)",
                    "detail": {
                        "horizons": ["1h", "6h"],
                        "risks": {"1h": 0.72, "6h": 0.55, "24h": 0.31},
                        "shortest_horizon": "1h",
                        "run": 3,
                        "data_until": 1769860800000,
                        "model_version": 4,
                        "fallback": False,
                    },
                    "opened_at": "2026-01-31T12:00:00.000Z",
                    "updated_at": "2026-01-31T12:03:00.000Z",
                    "last_seen_at": "2026-01-31T12:03:00.000Z",
                    "acknowledged_at": None,
                    "acknowledged_by": None,
                    "resolved_at": None,
                    "resolved_by": None,
                    "silenced": False,
                }
            ]
        }
    )

    id: int
    account_id: str = Field(description="The account, or 'fleet' for a degraded model family.")
    group: str | None = None
    kind: str = Field(description="anomaly, failure_risk or model_degraded:<family>.")
    severity: Literal["warning", "critical"]
    state: AlertState
    summary: str
    detail: dict[str, Any] | None = None
    opened_at: str
    updated_at: str
    last_seen_at: str = Field(description="The newest tick that still saw the condition.")
    acknowledged_at: str | None = None
    acknowledged_by: str | None = None
    resolved_at: str | None = None
    resolved_by: str | None = Field(default=None, description="A key's name, or 'fleetml'.")
    silenced: bool = Field(description="A silence matched it: recorded but not notified.")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AlertOut:
        stamps = ("opened_at", "updated_at", "last_seen_at", "acknowledged_at", "resolved_at")
        return cls(**{**row, **{k: iso(row[k]) for k in stamps}})


class AlertDetailOut(AlertOut):
    """An alert with every state change, oldest first."""

    history: list[AlertHistoryOut]


class AlertsOut(BaseModel):
    """A page of alerts, newest first."""

    alerts: list[AlertOut]
    next_cursor: str | None = Field(
        default=None,
        description="Pass as ?cursor= for the next page; null on the last page.",
        examples=["41"],
    )


class AlertNote(BaseModel):
    """Optional body of ack and resolve."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000, examples=["failing over by hand"])


class SilenceCreate(BaseModel):
    """Silence matching alerts: recorded but not notified. Matchers left out match anything."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "group": "eu-sales",
                    "kind": "anomaly",
                    "ends_at": "2026-01-31T18:00:00Z",
                    "comment": "load test until 18:00",
                }
            ]
        },
    )

    account_id: str | None = Field(default=None, pattern=ACCOUNT_ID_RE.pattern, max_length=128)
    group: str | None = Field(default=None, min_length=1, max_length=128)
    kind: str | None = Field(default=None, min_length=1, max_length=32, examples=["failure_risk"])
    starts_at: TimestampIn | None = Field(default=None, description="Default: now.")
    ends_at: TimestampIn
    comment: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _check(self) -> SilenceCreate:
        if self.account_id is None and self.group is None and self.kind is None:
            raise ValueError(
                "name at least one of account_id, group, kind; a silence of everything "
                "would mute every alert"
            )
        if self.starts_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class SilenceOut(BaseModel):
    """A silence; ``active`` says whether it mutes matching alerts right now."""

    id: int = Field(examples=[7])
    account_id: str | None = None
    group: str | None = Field(default=None, examples=["eu-sales"])
    kind: str | None = Field(default=None, examples=["anomaly"])
    starts_at: str = Field(examples=["2026-01-31T12:00:00.000Z"])
    ends_at: str = Field(examples=["2026-01-31T18:00:00.000Z"])
    comment: str | None = Field(default=None, examples=["load test until 18:00"])
    created_by: str = Field(examples=["oncall-alice"])
    created_at: str
    deleted_at: str | None = None
    active: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any], *, now_ms: int) -> SilenceOut:
        active = row["deleted_at"] is None and row["starts_at"] <= now_ms < row["ends_at"]
        stamps = ("starts_at", "ends_at", "created_at", "deleted_at")
        return cls(**{**row, **{k: iso(row[k]) for k in stamps}, "active": active})


class SilencesOut(BaseModel):
    silences: list[SilenceOut]
    count: int


class AlertFeedbackIn(BaseModel):
    """What ops say of an alert: a real problem, or a false alarm."""

    model_config = ConfigDict(extra="forbid")

    verdict: Literal["real", "false_alarm"]
    note: str | None = Field(default=None, max_length=2000, examples=["session crash, confirmed"])


class AlertFeedbackOut(BaseModel):
    alert_id: int
    verdict: Literal["real", "false_alarm"]
    actor: str
    ts: str
    note: str | None = None


class AlertKindPrecision(BaseModel):
    kind: str
    real: int = Field(description="Alerts ops judged a real problem (each alert's latest word).")
    false_alarm: int
    unjudged: int = Field(description="Alerts nobody judged.")
    precision: float | None = Field(description="real / (real + false_alarm); null if none judged.")


class AlertPrecisionOut(BaseModel):
    """Alert precision per kind from ops feedback, over alerts opened in the range."""

    kinds: list[AlertKindPrecision]
