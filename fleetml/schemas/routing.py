"""Shapes of ``POST /v1/route``: the runtime asks which account of a group sends next."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fleetml.decisions.contracts import Algorithm
from fleetml.schemas.decisions import GROUP_PATTERN
from fleetml.vocab import ACCOUNT_ID_RE

#: Most outcomes one request may report (a runtime reporting more often sends smaller reports).
MAX_REPORT = 1000
#: A send slower than a day is a clock bug, not a latency.
MAX_LATENCY_MS = 86_400_000.0


class SendReport(BaseModel):
    """How an earlier send on an account went: feeds the balancer's latency estimate and frees
    the send's slot in the account's outstanding count."""

    model_config = ConfigDict(extra="forbid")

    account_id: str = Field(pattern=ACCOUNT_ID_RE.pattern, max_length=128, examples=["bot-017"])
    latency_ms: float = Field(
        ge=0,
        le=MAX_LATENCY_MS,
        allow_inf_nan=False,
        description="How long the send took (a failed send: how long until it failed).",
        examples=[120.0],
    )
    ok: bool = Field(default=True, description="false: the send failed or timed out.")


class RouteIn(BaseModel):
    """Which account of ``group`` takes the next message, after learning from ``report``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "group": "eu-sales",
                    "report": [
                        {"account_id": "bot-017", "latency_ms": 120.0, "ok": True},
                        {"account_id": "bot-018", "latency_ms": 2400.0, "ok": False},
                    ],
                }
            ]
        },
    )

    group: str = Field(pattern=GROUP_PATTERN, examples=["eu-sales"])
    report: list[SendReport] = Field(
        default_factory=list,
        max_length=MAX_REPORT,
        description=f"Outcomes of earlier sends since the last call (at most {MAX_REPORT}). "
        "Report every send: least_load and p2c_ewma balance on outstanding sends and latency.",
    )


class RouteOut(BaseModel):
    """The account that takes the next message of the group.

    With ``hold`` true the account is held for platform enforcement: keep the message waiting
    for that number; never send it from another one (its share of the group's traffic stays on
    it until the hold ends).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "account_id": "bot-017",
                    "group": "eu-sales",
                    "algorithm": "p2c_ewma",
                    "weight": 42.5,
                    "hold": False,
                    "reason": None,
                    "reports_ignored": 0,
                }
            ]
        }
    )

    account_id: str
    group: str
    algorithm: Algorithm = Field(description="The group's balancing algorithm.")
    weight: float = Field(description="The account's routing weight in effect.")
    hold: bool = Field(description="true: hold the message for this account, do not send it.")
    reason: str | None = Field(default=None, description="Why the message is held.")
    reports_ignored: int = Field(
        default=0,
        description="Reported accounts that are not in the group (removed meanwhile, or a "
        "runtime bug); their outcomes were dropped.",
    )
