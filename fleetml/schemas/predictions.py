"""Shapes of the prediction API (``/v1/predictions``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class AnomalyOut(BaseModel):
    """The anomaly verdict on the account's newest scored sample."""

    score: float | None = Field(
        description="Anomaly score in [0, 1], comparable across accounts and versions, for "
        "ranking: the calibrated score, halved on samples no more anomalous than the account "
        "has looked lately and kept at 0.55 on samples above that by less than 5 % "
        "(habituation; a lasting oddity or a slow ramp ranks below a new one).",
        examples=[0.12],
    )
    calibrated_score: float | None = Field(
        default=None,
        description="The calibrated score the alert rule compares with its threshold (equal to "
        "score for a model without habituation, and when scored on demand).",
        examples=[0.24],
    )
    is_anomaly: bool = Field(description="The alert rule fired (threshold, minimum duration).")
    top_metrics: list[str] = Field(
        default_factory=list,
        description="Metrics deviating most from the account's normal (when anomalous).",
        examples=[["reply_latency_ms", "send_failures"]],
    )
    model_version: int | None = Field(
        description="Registered version of fleetml-anomaly; null when the fallback answered."
    )


class RiskOut(BaseModel):
    """Calibrated probability of a technical fault within ``horizon``."""

    horizon: str = Field(examples=["6h"])
    risk: float | None = Field(examples=[0.07])
    at_risk: bool = Field(description="Risk at or above the horizon's stored threshold.")
    model_version: int | None = Field(
        description="Registered version of fleetml-risk; null when the fallback answered."
    )
    enforcement_risk: float | None = Field(
        default=None,
        description="Risk of a platform enforcement (restriction, ban) within the horizon: "
        "drain and pause the account, never route its traffic elsewhere.",
    )


class PredictionOut(BaseModel):
    """Everything fleetml predicts for one account."""

    account_id: str = Field(examples=["m001-s2"])
    group: str | None = Field(default=None, examples=["g001"])
    computed_at: str | None = Field(
        description="When the tick (or the on-demand call) computed it, ISO-8601 UTC.",
        examples=["2026-11-30T12:01:00Z"],
    )
    data_until: str | None = Field(
        description="Time of the newest sample used.", examples=["2026-11-30T12:00:30Z"]
    )
    stale: bool = Field(
        description="No fresh data: the newest sample is older than FLEETML_STALE_AFTER_S "
        "before the tick's clock."
    )
    anomaly: AnomalyOut | None = None
    risk: list[RiskOut] = Field(default_factory=list)
    fallback: bool = Field(
        description="A documented heuristic answered for at least one family (model missing, "
        "corrupt or failing); see GET /v1/models and /readyz."
    )
    on_demand: bool = Field(default=False, description="Scored by this call, not by the tick.")
    models: dict[str, int | None] = Field(
        default_factory=dict,
        description="Model version per family behind this answer (null: fallback).",
        examples=[{"anomaly": 3, "risk": 5}],
    )


class PredictionsOut(BaseModel):
    """A page of predictions."""

    predictions: list[PredictionOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as 'cursor' for the next page; null on the last page."
    )
    computed_at: str | None = Field(
        default=None, description="Clock of the newest tick behind these predictions."
    )
    models: dict[str, int | None] = Field(
        default_factory=dict, description="Model version per family used by the newest tick."
    )


class ScoreIn(BaseModel):
    """Optional samples to score with the account's stored history (they are not stored)."""

    samples: list[dict] = Field(
        default_factory=list,
        description="Samples in the ingest shape ({account_id, ts, values}); every sample must "
        "belong to the account in the path.",
        examples=[
            [{"account_id": "m001", "ts": "2026-11-30T12:00:00Z", "values": {"cpu_pct": 93}}]
        ],
    )


class HistoryPoint(BaseModel):
    family: Literal["anomaly", "risk"]
    horizon: str = Field(description="'now' for anomaly; 1h, 6h, 24h... for risk.")
    ts: str = Field(description="The newest sample the prediction was made on (ISO-8601 UTC).")
    score: float | None = Field(description="Anomaly score or failure risk (0-1).")
    flag: bool = Field(description="is_anomaly or at_risk.")
    model_version: int | None = None
    fallback: bool


class PredictionHistoryOut(BaseModel):
    """One account's predictions over time, with the thresholds that turn a score into a flag."""

    account_id: str
    points: list[HistoryPoint]
    thresholds: dict[str, float] = Field(
        description="Risk threshold per horizon of the served risk model (empty for a fallback)."
    )
