"""Registered models per family and what this API process serves."""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from fleetml.api.deps import AnyKey, StateDep
from fleetml.errors import NotFound
from fleetml.schemas.common import ErrorResponse
from fleetml.schemas.models import ModelDriftOut, ModelEvaluationOut, ModelsOut
from fleetml.services.drift import DEFAULT_HOURS as DRIFT_DEFAULT_HOURS
from fleetml.services.drift import MAX_HOURS as DRIFT_MAX_HOURS
from fleetml.services.drift import MIN_HOURS as DRIFT_MIN_HOURS

router = APIRouter(prefix="/v1", tags=["models"])
log = logging.getLogger("fleetml.api")

#: How long a registry answer is reused: the page is polled, the registry changes rarely.
REGISTRY_CACHE_S = 5.0
#: Most metrics listed per version (runs log a bounded set; this keeps the answer small).
MAX_METRICS = 100
_cache: dict[str, tuple[float, dict]] = {}
#: Drift answers by (store, family, champion version, hours): the page polls, drift moves slowly.
_drift_cache: dict[tuple, tuple[float, dict]] = {}
_cache_lock = threading.Lock()


def _families() -> dict[str, str]:
    from fleetml.serving.anomaly import MODEL_NAME as ANOMALY
    from fleetml.serving.forecast import MODEL_NAME as FORECAST
    from fleetml.serving.risk import MODEL_NAME as RISK

    return {"anomaly": ANOMALY, "risk": RISK, "forecast": FORECAST}


def forget_registry_view() -> None:
    """Drop the cached registry answers (tests that register models call this)."""
    with _cache_lock:
        _cache.clear()
        _drift_cache.clear()


def _when(ms) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def _version(client, name: str, alias: str) -> dict | None:
    """Version behind ``name@alias`` with its run's time and metrics, or None."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    out: dict[str, Any] = {
        "version": int(mv.version),
        "run_id": mv.run_id,
        "created_at": _when(mv.creation_timestamp),
        "trained_at": None,
        "metrics": {},
    }
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
        except MlflowException as exc:  # a deleted run leaves the version without metrics
            log.warning("run %s of %s v%s is unreadable: %s", mv.run_id, name, mv.version, exc)
            return out
        out["trained_at"] = _when(run.info.end_time or run.info.start_time)
        metrics = sorted(run.data.metrics.items())[:MAX_METRICS]
        out["metrics"] = {k: (v if math.isfinite(v) else None) for k, v in metrics}
    return out


def _read_registry(settings) -> dict:
    """Champion and challenger per family, or why the registry could not be read."""
    from fleetml.serving.registry import registry_missing

    families = _families()
    empty = {f: {"champion": None, "challenger": None} for f in families}
    missing = registry_missing(settings)
    if missing is not None:
        return {"families": empty, "available": False, "detail": missing}
    try:
        from mlflow import MlflowClient

        from fleetml.serving.registry import CHALLENGER, CHAMPION, configure_mlflow

        uri = configure_mlflow(settings)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        found = {
            family: {
                "champion": _version(client, name, CHAMPION),
                "challenger": _version(client, name, CHALLENGER),
            }
            for family, name in families.items()
        }
    except Exception as exc:  # noqa: BLE001 - a broken registry is reported, not a 500
        log.warning("the model registry could not be read", exc_info=True)
        detail = f"the model registry could not be read ({type(exc).__name__}: {exc})"
        return {"families": empty, "available": False, "detail": detail}
    return {"families": found, "available": True, "detail": None}


def _registry_view(settings) -> dict:
    key = settings.tracking_uri
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and now - hit[0] < REGISTRY_CACHE_S:
            return hit[1]
    view = _read_registry(settings)
    with _cache_lock:
        _cache[key] = (time.monotonic(), view)
    return view


def _serving_status(request: Request) -> dict[str, dict] | None:
    models = getattr(request.app.state.fleetml, "models", None)
    if models is None:
        return None
    try:
        return models.status()
    except Exception:  # noqa: BLE001 - the registry part of the answer is still worth giving
        log.warning("the serving layer's status could not be read", exc_info=True)
        return {}


@router.get(
    "/models",
    summary="Registered champion and challenger per model family, and what is loaded",
    response_model=ModelsOut,
)
def list_models(request: Request, key: AnyKey, state: StateDep) -> dict:
    """Per family (anomaly, risk, forecast): @champion and @challenger with their registration
    and training times and the evaluation metrics of their training runs, plus whether this
    process's serving layer has the family loaded (and which version, or a fallback and why).

    Without a model registry the versions are null. Registry answers are reused for a few
    seconds.
    """
    view = _registry_view(state.settings)
    status = _serving_status(request)
    out = []
    for family, name in _families().items():
        versions = view["families"][family]
        entry = {"family": family, "name": name, **versions}
        if status is None:
            entry.update(
                loaded=False,
                loaded_version=None,
                fallback=None,
                reason="this process has no serving layer running",
            )
        else:
            served = status.get(family) or {}
            entry.update(
                loaded=bool(served.get("loaded", False)),
                loaded_version=served.get("version"),
                fallback=served.get("fallback"),
                reason=served.get("reason")
                if served
                else "the serving layer does not hold this family in memory",
            )
        out.append(entry)
    return {"models": out, "registry_available": view["available"], "detail": view["detail"]}


#: The training run's JSON artifacts the evaluation view shows, per family.
_EVALUATION_ARTIFACTS = {
    "anomaly": ("evaluation.json", "pr_curve.json"),
    "risk": ("evaluation.json", "reliability.json", "pr_curves.json"),
    "forecast": ("choices.json",),
}


@router.get(
    "/models/{family}/evaluation",
    summary="How a registered model was evaluated: metrics, thresholds, calibration, PR curves",
    response_model=ModelEvaluationOut,
    responses={404: {"model": ErrorResponse, "description": "No version under that alias."}},
)
def model_evaluation(
    family: Literal["anomaly", "risk", "forecast"],
    key: AnyKey,
    state: StateDep,
    alias: Literal["champion", "challenger"] = "champion",
) -> dict:
    """What the version's training run measured on its held-out test split, as logged: the
    metrics, and per family the evaluation summary (thresholds and how they were chosen, the
    promotion gate), the reliability table per horizon (calibration curve) and the
    precision-recall curve per horizon (risk; runs before this field have none)."""
    from fleetml.serving.registry import run_json

    name = _families()[family]
    view = _registry_view(state.settings)
    version = (view["families"].get(family) or {}).get(alias)
    if version is None:
        raise NotFound(
            f"{name} has no @{alias}" + ("" if view["available"] else f": {view['detail']}")
        )
    artifacts = {}
    if version.get("run_id"):
        for artifact in _EVALUATION_ARTIFACTS[family]:
            artifacts[artifact.removesuffix(".json")] = run_json(
                version["run_id"], artifact, settings=state.settings
            )
    return {"family": family, "name": name, "alias": alias, **version, "artifacts": artifacts}


@router.get(
    "/models/{family}/drift",
    summary="Drift (PSI) of each feature and each metric since the champion's training window",
    response_model=ModelDriftOut,
)
def model_drift(
    family: Literal["anomaly", "risk"],
    key: AnyKey,
    state: StateDep,
    hours: Annotated[
        int,
        Query(
            ge=DRIFT_MIN_HOURS,
            le=DRIFT_MAX_HOURS,
            description="The current window of the per-feature PSI: the last this many hours.",
        ),
    ] = DRIFT_DEFAULT_HOURS,
) -> dict:
    """How far the champion's inputs moved since its training window (PSI, ``level`` stable
    < 0.1 <= moderate < 0.25 <= major), most drifted first:

    * ``features``: per feature column the champion scores on, rebuilt with its own feature
      configuration over a deterministic sample of accounts and hours of the last ``hours``
      against its training window (or the week before, when its run does not say), with the
      rows compared on each side; ``feature_window`` says which rows, or why there is no table.
    * ``metrics``: the hourly recommendation job's drift check, whole: per stored metric (gauges
      as they are, counters as per-minute rates) the last 24 h against the champion's training
      window (or the oldest week in the store when its run does not say).

    Answers are reused for a minute per champion version and ``hours``.
    """
    from fleetml.services.drift import CACHE_S, feature_drift
    from fleetml.services.recommend import family_drift

    champion = (_registry_view(state.settings)["families"].get(family) or {}).get("champion")
    cache_key = (str(state.engine.url), family, champion and champion["version"], hours)
    with _cache_lock:
        hit = _drift_cache.get(cache_key)
    if hit is not None and time.monotonic() - hit[0] < CACHE_S:
        return hit[1]
    try:
        out = family_drift(state.engine, state.settings, family)
    except Exception as exc:  # noqa: BLE001 - a broken registry is reported, not a 500
        log.warning("the %s metric drift could not be computed", family, exc_info=True)
        out = {"family": family, "skipped": f"{type(exc).__name__}: {exc}", "metrics": []}
    for name in ("reference_from", "reference_to", "current_from", "current_to"):
        ms = out.pop(f"{name}_ms", None)
        out[name] = _when(ms)
    features = feature_drift(state.engine, state.settings, family, hours=hours)
    window = dict(features["window"])
    for name in ("reference_from", "reference_to", "current_from", "current_to"):
        window[name] = _when(window.pop(f"{name}_ms", None))
    answer = {**out, "features": features["features"], "feature_window": window}
    with _cache_lock:
        now = time.monotonic()
        for stale in [k for k, (t, _) in _drift_cache.items() if now - t >= CACHE_S]:
            del _drift_cache[stale]
        _drift_cache[cache_key] = (now, answer)
    return answer
