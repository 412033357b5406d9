"""Load forecasts per account or per group, served from the forecast cache."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from fleetml.api.deps import AnyKey, StateDep
from fleetml.errors import InvalidInput
from fleetml.schemas.common import ErrorResponse
from fleetml.schemas.forecasts import ForecastAccuracyOut, ForecastOut

router = APIRouter(prefix="/v1", tags=["forecasts"])

_ERRORS = {
    404: {"model": ErrorResponse, "description": "Unknown account or group, or no history."},
    422: {
        "model": ErrorResponse,
        "description": "Not exactly one of group and account_id, an unknown metric, or a bad "
        "horizon.",
    },
}
_NAME = dict(min_length=1, max_length=128)


@router.get(
    "/forecasts/accuracy",
    summary="A group's past forecasts against what happened",
    response_model=ForecastAccuracyOut,
    responses=_ERRORS,
)
def forecast_accuracy(
    key: AnyKey,
    state: StateDep,
    group: Annotated[str, Query(description="A group.", **_NAME)],
    metric: Annotated[
        str | None,
        Query(max_length=64, description="Stored metric; default the hourly job's metric."),
    ] = None,
    days: Annotated[float, Query(gt=0, le=90, description="Forecasts made in the last days.")] = 7,
) -> dict:
    """Every forecast the hourly job made for the group (kept ``FLEETML_PREDICTION_RETENTION_S``)
    compared point by point with the group's actual series: sMAPE, MAE and band coverage per
    forecast (forecast error over time), and the newest forecast that fully came true drawn
    against the actual values."""
    from fleetml.services.forecasting import forecast_accuracy as accuracy

    out = accuracy(state.engine, state.settings, group=group, metric=metric, days=days)
    for run in out["runs"]:
        run["computed_at"] = datetime.fromtimestamp(run["computed_at"] / 1000, tz=UTC)
    if out["overlay"] is not None:
        at = out["overlay"]["computed_at"]
        out["overlay"]["computed_at"] = datetime.fromtimestamp(at / 1000, tz=UTC)
    return out


@router.get(
    "/forecasts",
    summary="Forecast of one metric for an account or a group",
    response_model=ForecastOut,
    responses=_ERRORS,
)
def get_forecast(
    key: AnyKey,
    state: StateDep,
    metric: Annotated[
        str | None,
        Query(max_length=64, description="Stored metric; default the hourly job's metric."),
    ] = None,
    group: Annotated[str | None, Query(description="A group (its accounts' sum).", **_NAME)] = None,
    account_id: Annotated[str | None, Query(description="One account.", **_NAME)] = None,
    horizon: Annotated[
        int | None,
        Query(ge=1, le=1000, description="Steps ahead; default the hourly job's horizon."),
    ] = None,
) -> dict[str, Any]:
    """Points at the data's own sampling step with 80 % and 95 % intervals, and the peaks.

    Give exactly one of ``group`` and ``account_id``. The hourly job caches every group's
    forecast of its metric and horizon; anything else is computed on the first request and
    cached (``cached`` says which). Counters are forecast as per-minute rates.
    """
    from fleetml.services.forecasting import cached_forecast

    if (group is None) == (account_id is None):
        raise InvalidInput(
            "give exactly one of 'group' (forecast a group's sum) and 'account_id' "
            "(forecast one account)"
        )
    settings = state.settings
    scope, target = ("group", group) if group is not None else ("account", account_id)
    row = cached_forecast(
        state.engine,
        settings,
        scope=scope,
        target=target,
        metric=metric or settings.forecast_metric,
        horizon=horizon or settings.forecast_horizon,
        write=state.ingestor.writer.run,
    )
    payload = row["payload"]
    return {
        "metric": row["metric"],
        "scope": row["scope"],
        "target": row["target"],
        "horizon": row["horizon"],
        "computed_at": datetime.fromtimestamp(row["computed_at"] / 1000, tz=UTC),
        "model_version": row["model_version"],
        "cached": row["cached"],
        **{k: payload.get(k) for k in _PAYLOAD_FIELDS if k in payload},
    }


_PAYLOAD_FIELDS = (
    "step_seconds",
    "fallback",
    "fallback_reason",
    "method",
    "values",
    "data_until",
    "history_points",
    "history_cut",
    "points",
    "peaks",
)
