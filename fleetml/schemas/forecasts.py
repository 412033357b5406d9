"""Forecasts on the wire (``GET /v1/forecasts``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class ForecastPoint(BaseModel):
    """One forecast step: the expected value and its 80 % and 95 % prediction intervals."""

    ts: datetime = Field(description="Target time (UTC).")
    yhat: float | None
    lo80: float | None
    hi80: float | None
    lo95: float | None
    hi95: float | None


class ForecastPeak(BaseModel):
    """A predicted peak (a local maximum of ``yhat``), largest first."""

    ts: datetime
    yhat: float | None


class ForecastOut(BaseModel):
    """The forecast of one metric for one account or one group's sum."""

    metric: str = Field(examples=["msgs_sent"])
    scope: Literal["account", "group"]
    target: str = Field(description="The account id or the group name.", examples=["eu-1"])
    step_seconds: float = Field(
        description="Time between forecast points: the data's own sampling step.",
        examples=[3600.0],
    )
    horizon: int = Field(description="Number of forecast steps.", examples=[24])
    computed_at: datetime
    model_version: int | None = Field(
        description="Registered fleetml-forecast version; null when the fallback answered."
    )
    fallback: bool = Field(description="True when seasonal naive answered (no usable champion).")
    fallback_reason: str | None = None
    method: str | None = Field(default=None, description="Forecasting method of this series.")
    values: Literal["value", "rate_per_minute"] = Field(
        default="value", description="Counters are forecast as their per-minute rate."
    )
    data_until: datetime | None = Field(
        default=None, description="Time of the last history point the forecast starts from."
    )
    history_points: int | None = Field(
        default=None, description="History points the forecast was fitted on."
    )
    history_cut: bool = Field(
        default=False,
        description="True when older history was dropped to keep the step (never aggregated).",
    )
    points: list[ForecastPoint]
    peaks: list[ForecastPeak]
    cached: bool = Field(description="True when served from the forecast cache.")


class ForecastRunAccuracy(BaseModel):
    computed_at: datetime
    model_version: int | None = None
    horizon: int
    n: int = Field(description="Points of the forecast that came true so far.")
    smape: float = Field(description="Symmetric MAPE in percent over those points.")
    mae: float
    coverage80: float = Field(description="Share of actual points inside the 80 % band.")
    coverage95: float


class ForecastOverlayPoint(BaseModel):
    ts: datetime
    yhat: float | None
    lo80: float | None
    hi80: float | None
    lo95: float | None
    hi95: float | None
    actual: float | None


class ForecastOverlay(BaseModel):
    computed_at: datetime
    points: list[ForecastOverlayPoint]


class ForecastAccuracyOut(BaseModel):
    """A group's past forecasts against what happened (the hourly job's history)."""

    group: str
    metric: str
    step_seconds: float | None = None
    runs: list[ForecastRunAccuracy] = Field(description="Oldest first.")
    overlay: ForecastOverlay | None = Field(
        description="The newest forecast whose every point came true, with the actual values."
    )
