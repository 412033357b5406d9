"""Recommendations for ops: read each generator's inputs from the store, raise, upsert.

:func:`refresh_recommendations` is what the scheduler's ``recommend`` job (every
``recommend_every_s``) and ``fleetml recommend`` run. It calls the pure generators of
:mod:`fleetml.decisions.recommendations` on inputs read here, then upserts every recommendation
in one transaction (an open one with the same dedup key is refreshed and counts an occurrence).
A generator whose inputs cannot be read or that raises is logged and reported under ``errors``;
the others still run. The tick raises ``review_enforcement`` and safety-envelope
recommendations itself (:mod:`fleetml.services.decide`): they are not repeated here.

What each generator is given (``now`` is the run's clock, ``lookback`` is
``recommend_lookback_s``, 14 days by default):

* ``adjust_failover_threshold``: every *pre-emptive* failover decision (kind ``failover``, any
  mode and status, shadow included) made in the lookback and already judged: its group, the risk
  it was taken on (``inputs["risk"]``) and whether a technical fault followed within its horizon
  (``outcome["needed"]``). Reactive failovers (rules :data:`REACTIVE_RULES`) are left out: they
  answer a fault that already happened, are "needed" by construction and say nothing about
  where the risk threshold should sit.
* ``promote_mode``: per group, over the pre-emptive failover decisions made in ``shadow`` or
  ``approve`` mode in the lookback:

  - ``precision`` = judged decisions whose fault followed (``needed``) / judged decisions;
  - ``recall`` = technical faults (:data:`fleetml.vocab.FAULT_KINDS` events) of the group's
    masters in the lookback that were *caught* / all those faults, where a fault is caught when
    the latest such failover decision of that master came at most its horizon
    (``inputs["horizon"]``, else the group's ``risk_horizon``) before the fault. NaN when the
    group's masters had no fault (the shadow -> approve rung then waits: recall is unproven);
  - ``decisions`` = the judged decisions.
* ``change_algorithm``: per group, ``capacity_cv`` (coefficient of variation of the known
  capacities in the registry, NaN below two) and ``latency_p95_spread``: each account's median
  :data:`LATENCY_METRIC` over the last hour, the group's slowest over its median (NaN when the
  metric is not stored: the capacity rule alone then applies).
* ``add_servants``: the cached group forecasts of ``forecast_metric`` (per-minute rates for a
  counter such as the default ``msgs_sent``): the highest ``yhat`` and its time among the points
  after ``now``; available capacity = the sum of the capacities of the group's accounts that are
  not retired.
* ``lower_send_rate``: the last 7 days of :data:`SENT_METRIC` and :data:`FAILED_METRIC`
  counters, as per-minute send rates and failed / sent ratios between consecutive samples (the
  data's own step). Skipped, with a note, when either is not stored as a counter.
* ``retrain_drift``: per model family with a champion, the PSI of every stored metric (gauges
  as they are, counters as per-minute rates: raw counters only ever grow) between a *reference*
  and the last 24 h. The reference is the champion's training window, from ``data_start`` to
  ``train_end`` (anomaly) or ``val_start`` (risk) in the tags of its MLflow run; when the run
  does not say, the oldest 7 days in the store (ending at least 24 h before ``now``). A window
  longer than a day is read as :data:`DRIFT_SLICES` one-hour slices spread evenly over it, so an
  hourly job never re-reads weeks of the fleet. A family without a champion is skipped.
* ``investigate_anomaly``: the latest anomaly predictions with the number of consecutive flagged
  checks from the prediction history.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from fleetml.config import Settings
from fleetml.decisions import recommendations as generators
from fleetml.decisions.contracts import Fleet, GroupPolicy, Mode, Recommendation
from fleetml.decisions.contracts import RecommendationKind as Kind
from fleetml.decisions.policy import REACTIVE_RULES
from fleetml.services import clock
from fleetml.serving.base import rule_score

log = logging.getLogger("fleetml.recommend")

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: Modes whose decisions the autonomy ladder measures.
LADDER_MODES = (Mode.SHADOW.value, Mode.APPROVE.value)
LATENCY_METRIC = "delivery_latency_p95_ms"
LATENCY_WINDOW_MS = HOUR_MS
SENT_METRIC = "msgs_sent"
FAILED_METRIC = "send_failures"
SEND_HISTORY_MS = 7 * DAY_MS
#: Long histories are read this much at a time; counter rates reach this far back for the
#: interval that crosses into a chunk.
READ_CHUNK_MS = DAY_MS
RATE_OVERLAP_MS = HOUR_MS
#: The drift check's current sample, and the fallback reference (the oldest data in the store).
DRIFT_CURRENT_MS = DAY_MS
DRIFT_FALLBACK_MS = 7 * DAY_MS
#: A reference window longer than this many slices is read as that many slices of one hour.
DRIFT_SLICES = 24
DRIFT_SLICE_MS = HOUR_MS
DRIFT_FAMILIES = ("anomaly", "risk")
#: The kinds this job raises, in the order it raises them.
KINDS: tuple[Kind, ...] = (
    Kind.ADJUST_FAILOVER_THRESHOLD,
    Kind.PROMOTE_MODE,
    Kind.CHANGE_ALGORITHM,
    Kind.ADD_SERVANTS,
    Kind.LOWER_SEND_RATE,
    Kind.RETRAIN_DRIFT,
    Kind.INVESTIGATE_ANOMALY,
)
_DECISION_PAGE = 5000


# ---- the run ---------------------------------------------------------------------------------


def refresh_recommendations(
    engine: Engine, settings: Settings, *, now_ms: int | None = None
) -> dict[str, Any]:
    """Raise every recommendation the store's data supports as of ``now_ms`` and upsert them.

    ``now_ms`` defaults to the clock the tick uses (``tick_clock``: the wall clock, or the
    newest stored sample). Returns ``now``, ``recommendations`` (count per kind), ``opened``,
    ``updated`` and ``suppressed`` (decided by a person and still quiet), ``errors`` (kind ->
    what failed), ``skipped`` (kind -> why an input was missing), ``drift`` (per family: the
    reference used and the largest PSI) and ``seconds``.
    """
    from fleetml.store.recommendations import upsert_recommendations

    started = time.perf_counter()
    now = clock.fleet_now(engine, settings) if now_ms is None else int(now_ms)
    inputs = Inputs(engine, settings, now)
    raised: dict[str, list[Recommendation]] = {}
    errors: dict[str, str] = {}
    for kind in KINDS:
        try:
            raised[kind.value] = _GENERATORS[kind](inputs)
        except Exception as exc:  # noqa: BLE001 - one broken input must not stop the others
            log.exception("recommend: %s failed; the other recommendations still run", kind.value)
            errors[kind.value] = f"{type(exc).__name__}: {exc}"
    recs = [r for batch in raised.values() for r in batch]
    with engine.begin() as conn:
        written = upsert_recommendations(conn, recs, now_ms=now)
    return {
        "now": now,
        "recommendations": {k.value: len(raised.get(k.value, [])) for k in KINDS},
        "opened": int(written.get("opened", 0)),
        "updated": int(written.get("updated", 0)),
        "suppressed": int(written.get("suppressed", 0)),
        "errors": errors,
        "skipped": inputs.skipped,
        "drift": inputs.drift,
        "seconds": round(time.perf_counter() - started, 3),
    }


def raise_for_errors(counts: dict[str, Any]) -> dict[str, Any]:
    """``counts`` as they are, or :class:`~fleetml.store.jobs.JobFailed` carrying them when a
    generator failed, so the recorded run shows the failure (the others' recommendations were
    still written)."""
    from fleetml.store.jobs import JobFailed

    errors = counts.get("errors") or {}
    if errors:
        listed = "; ".join(f"{kind}: {why}" for kind, why in errors.items())
        raise JobFailed(f"{len(errors)} recommendation generator(s) failed: {listed}", counts)
    return counts


# ---- shared inputs, read once per run ----------------------------------------------------------


class Inputs:
    """The store as of ``now_ms``, as the generators read it: what several of them share is read
    at most once. ``skipped`` and ``drift`` collect notes for the run's summary."""

    def __init__(self, engine: Engine, settings: Settings, now_ms: int) -> None:
        self.engine = engine
        self.settings = settings
        self.now = int(now_ms)
        self.skipped: dict[str, str] = {}
        self.drift: dict[str, dict[str, Any]] = {}

    def ts(self, ms: int) -> pd.Timestamp:
        return pd.Timestamp(int(ms), unit="ms", tz="UTC")

    @cached_property
    def registry(self) -> pd.DataFrame:
        """The registry without retired accounts (capacity NaN where unknown)."""
        from fleetml.store.accounts import accounts_frame

        frame = accounts_frame(self.engine)
        frame["account_id"] = frame["account_id"].astype(str)
        return frame

    @cached_property
    def fleet(self) -> Fleet:
        return Fleet.from_records(self.registry)

    @cached_property
    def groups(self) -> pd.Series:
        """account_id -> group of the registered accounts with a group."""
        reg = self.registry.dropna(subset=["group"])
        return pd.Series(reg["group"].astype(str).to_numpy(), index=reg["account_id"].to_numpy())

    @cached_property
    def policies(self) -> dict[str, GroupPolicy]:
        """Every known group's policy; groups with no settings of their own run the defaults
        with the deployment's mode (``decision_mode``), as the tick does."""
        from fleetml.store.policies import read_group_policies

        mode = self.settings.decision_mode
        stored = read_group_policies(self.engine, default_mode=mode)
        return {**{g: self.default_policy for g in sorted(set(self.groups))}, **stored}

    @cached_property
    def default_policy(self) -> GroupPolicy:
        return GroupPolicy(mode=Mode(self.settings.decision_mode))

    def policies_for(self, groups) -> dict[str, GroupPolicy]:
        """:attr:`policies`, plus the defaults for ``groups`` the registry no longer knows."""
        extra = {str(g): self.default_policy for g in groups if isinstance(g, str)}
        return {**extra, **self.policies}

    @cached_property
    def kinds(self) -> dict[str, str]:
        from fleetml.store.metrics import metric_kinds

        return dict(metric_kinds(self.engine))

    @cached_property
    def failovers(self) -> pd.DataFrame:
        """Pre-emptive failover decisions of the lookback: ``ts_ms``, ``account_id``, ``group``,
        ``mode``, ``risk``, ``horizon_ms`` (NaN when unknown), ``needed`` (NaN until judged)."""
        from fleetml.store.decisions import read_decisions

        since = self.now - int(self.settings.recommend_lookback_s * 1000)
        rows: list[dict] = []
        after = None
        while True:
            page = read_decisions(
                self.engine,
                kind="failover",
                since_ms=since,
                until_ms=self.now,
                limit=_DECISION_PAGE,
                after_id=after,
            )
            rows += page
            if len(page) < _DECISION_PAGE:
                break
            after = page[-1]["id"]
        return _failover_frame(rows, self.groups)


def _failover_frame(rows: list[dict], groups: pd.Series) -> pd.DataFrame:
    from fleetml.decisions.policy import horizon_ms

    rows = [r for r in rows if str(r.get("rule")) not in REACTIVE_RULES]
    inputs = [r.get("inputs") or {} for r in rows]
    outcomes = [r.get("outcome") or {} for r in rows]

    def horizon(value) -> float:
        try:
            return float(horizon_ms(str(value)))
        except (TypeError, ValueError):
            return float("nan")

    frame = pd.DataFrame(
        {
            "ts_ms": pd.array([int(r["ts_ms"]) for r in rows], dtype="int64"),
            "account_id": [
                None if r.get("account_id") is None else str(r["account_id"]) for r in rows
            ],
            "group": [r.get("group") for r in rows],
            "mode": [str(r.get("mode")) for r in rows],
            "risk": pd.to_numeric(pd.Series([i.get("risk") for i in inputs], dtype=object)),
            "horizon_ms": [horizon(i["horizon"]) if "horizon" in i else np.nan for i in inputs],
            "needed": pd.Series(
                [bool(o["needed"]) if "needed" in o else None for o in outcomes], dtype=object
            ),
        }
    )
    frame["risk"] = frame["risk"].astype("float64")
    frame["horizon_ms"] = frame["horizon_ms"].astype("float64")
    # a decision without a group is placed by the registry
    missing = frame["group"].isna()
    frame.loc[missing, "group"] = frame.loc[missing, "account_id"].map(groups)
    return frame


# ---- one function per generator -------------------------------------------------------------


def _adjust_failover_threshold(inputs: Inputs) -> list[Recommendation]:
    judged = inputs.failovers[inputs.failovers["needed"].notna()]
    outcomes = pd.DataFrame(
        {
            "group": judged["group"].to_numpy(dtype=object),
            "score": judged["risk"].to_numpy(),
            "fault_followed": judged["needed"].to_numpy(dtype=object),
        }
    )
    return generators.adjust_failover_threshold(
        outcomes, inputs.policies_for(outcomes["group"].unique())
    )


def _promote_mode(inputs: Inputs) -> list[Recommendation]:
    stats = ladder_stats(inputs)
    return generators.promote_mode(inputs.policies_for(stats["group"].unique()), stats)


def ladder_stats(inputs: Inputs) -> pd.DataFrame:
    """``group``, ``decisions``, ``precision``, ``recall`` of the shadow and approve failover
    decisions of the lookback (definitions in the module docstring)."""
    d = inputs.failovers
    d = d[d["mode"].isin(LADDER_MODES) & d["group"].notna()]
    judged = d[d["needed"].notna()]
    if judged.empty:
        return pd.DataFrame(columns=["group", "decisions", "precision", "recall"])
    judged = judged.assign(hit=judged["needed"].astype(bool))
    stats = judged.groupby("group").agg(decisions=("hit", "size"), needed=("hit", "sum"))
    stats["precision"] = stats["needed"] / stats["decisions"]
    faults, caught = _caught_faults(inputs, d)
    per_group = faults.groupby("group").size()
    caught_per_group = faults[caught].groupby("group").size()
    stats["faults"] = per_group.reindex(stats.index).fillna(0).astype(int)
    stats["caught"] = caught_per_group.reindex(stats.index).fillna(0).astype(int)
    stats["recall"] = (stats["caught"] / stats["faults"]).where(stats["faults"] > 0)
    return stats.reset_index()


def _caught_faults(inputs: Inputs, decisions: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Technical faults of the groups' masters in the lookback, and which were caught: the
    latest failover decision of that master at or before the fault lies within its horizon."""
    from fleetml.store.events import read_events
    from fleetml.vocab import FAULT_KINDS

    since = inputs.now - int(inputs.settings.recommend_lookback_s * 1000)
    events = read_events(
        inputs.engine, kinds=sorted(FAULT_KINDS), start=inputs.ts(since), end=inputs.ts(inputs.now)
    )
    reg = inputs.registry
    masters = reg[reg["role"].astype(str) == "master"].dropna(subset=["group"])
    master_group = pd.Series(
        masters["group"].astype(str).to_numpy(), index=masters["account_id"].to_numpy()
    )
    faults = pd.DataFrame(
        {
            "account_id": events["account_id"].astype(str).to_numpy(dtype=object),
            "ts_ms": pd.DatetimeIndex(events["ts"]).as_unit("ms").asi8,
        }
    )
    faults["group"] = faults["account_id"].map(master_group)
    faults = faults.dropna(subset=["group"]).sort_values("ts_ms", kind="stable")
    faults = faults.reset_index(drop=True)
    if faults.empty or decisions.empty:
        return faults, np.zeros(len(faults), dtype=bool)
    horizons = decisions["horizon_ms"].to_numpy()
    fallback = np.asarray(
        [
            _horizon_of(inputs.policies.get(str(g), inputs.default_policy))
            for g in decisions["group"].tolist()
        ],
        dtype="float64",
    )
    d = pd.DataFrame(
        {
            "account_id": decisions["account_id"].to_numpy(dtype=object),
            "decided_ms": decisions["ts_ms"].to_numpy(dtype="int64"),
            "horizon_ms": np.where(np.isfinite(horizons), horizons, fallback),
        }
    ).dropna(subset=["account_id"])
    d = d.sort_values("decided_ms", kind="stable")
    nearest = pd.merge_asof(
        faults,
        d,
        left_on="ts_ms",
        right_on="decided_ms",
        by="account_id",
        direction="backward",
    )
    gap = (nearest["ts_ms"] - nearest["decided_ms"]).to_numpy(dtype="float64")
    caught = np.isfinite(gap) & (gap <= nearest["horizon_ms"].to_numpy(dtype="float64"))
    return faults, caught


def _horizon_of(policy: GroupPolicy) -> float:
    from fleetml.decisions.policy import horizon_ms

    return float(horizon_ms(policy.risk_horizon))


def _change_algorithm(inputs: Inputs) -> list[Recommendation]:
    reg = inputs.registry.dropna(subset=["group"])
    if reg.empty:
        return []
    group = reg["group"].astype(str)
    cap = pd.to_numeric(reg["capacity"], errors="coerce").where(lambda c: c > 0)
    by_group = cap.groupby(group)
    cv = (by_group.std(ddof=0) / by_group.mean()).where(by_group.count() >= 2)
    spread = pd.Series(np.nan, index=cv.index)
    if LATENCY_METRIC in inputs.kinds:
        spread = _latency_spread(inputs).reindex(cv.index)
    else:
        inputs.skipped[Kind.CHANGE_ALGORITHM.value] = (
            f"{LATENCY_METRIC} is not stored: judged on capacities only"
        )
    stats = pd.DataFrame(
        {
            "group": cv.index.to_numpy(dtype=object),
            "latency_p95_spread": spread.to_numpy(dtype="float64"),
            "capacity_cv": cv.to_numpy(dtype="float64"),
        }
    )
    return generators.change_algorithm(inputs.fleet, inputs.policies, stats)


def _latency_spread(inputs: Inputs) -> pd.Series:
    """Per group: the slowest account's median p95 latency of the last hour over the group's
    median of those medians (NaN below two accounts with samples)."""
    from fleetml.store.metrics import read_metrics

    frame = read_metrics(
        inputs.engine,
        metrics=[LATENCY_METRIC],
        start=inputs.ts(inputs.now - LATENCY_WINDOW_MS),
        end=inputs.ts(inputs.now),
    )
    per_account = frame.groupby("account_id")[LATENCY_METRIC].median().dropna()
    group = per_account.index.to_series().map(inputs.groups)
    per_account = per_account[group.notna().to_numpy()]
    by_group = per_account.groupby(group.dropna().to_numpy())
    median = by_group.median()
    spread = by_group.max() / median.where(median > 0)
    return spread.where(by_group.count() >= 2)


def _add_servants(inputs: Inputs) -> list[Recommendation]:
    forecasts = group_peaks(inputs)
    if forecasts.empty:
        inputs.skipped[Kind.ADD_SERVANTS.value] = (
            f"no group forecast of {inputs.settings.forecast_metric} reaches past now"
        )
        return []
    reg = inputs.registry.dropna(subset=["group"])
    capacity = pd.to_numeric(reg["capacity"], errors="coerce")
    available = capacity.groupby(reg["group"].astype(str)).sum(min_count=1)
    return generators.add_servants(inputs.fleet, forecasts, available_capacity=available)


def group_peaks(inputs: Inputs) -> pd.DataFrame:
    """``group``, ``peak``, ``peak_ts_ms``: each cached group forecast's highest point after now."""
    from fleetml.store.forecasts import list_forecasts, read_forecast

    metric = inputs.settings.forecast_metric
    out = []
    for row in list_forecasts(inputs.engine, scope="group", metric=metric):
        cached = read_forecast(
            inputs.engine,
            scope="group",
            target=row["target"],
            metric=metric,
            horizon=row["horizon"],
        )
        points = pd.DataFrame(((cached or {}).get("payload") or {}).get("points") or [])
        if points.empty or not {"ts", "yhat"} <= set(points.columns):
            continue
        ts = pd.to_datetime(points["ts"], utc=True).dt.as_unit("ms").astype("int64")
        yhat = pd.to_numeric(points["yhat"], errors="coerce")
        ahead = (ts > inputs.now).to_numpy() & yhat.notna().to_numpy()
        if not ahead.any():
            continue
        best = int(np.argmax(np.where(ahead, yhat.to_numpy(dtype="float64"), -np.inf)))
        out.append(
            {
                "group": str(row["target"]),
                "peak": float(yhat.iloc[best]),
                "peak_ts_ms": int(ts.iloc[best]),
            }
        )
    return pd.DataFrame(out, columns=["group", "peak", "peak_ts_ms"])


def _lower_send_rate(inputs: Inputs) -> list[Recommendation]:
    kinds = inputs.kinds
    missing = [m for m in (SENT_METRIC, FAILED_METRIC) if kinds.get(m) != "counter"]
    if missing:
        why = [f"{m} is a {kinds[m]}" if m in kinds else f"{m} is not stored" for m in missing]
        inputs.skipped[Kind.LOWER_SEND_RATE.value] = (
            f"send and error rates need the counters {SENT_METRIC} and {FAILED_METRIC}: "
            + "; ".join(why)
        )
        return []
    return generators.lower_send_rate(send_history(inputs))


def send_history(inputs: Inputs) -> pd.DataFrame:
    """``account_id``, ``group``, ``send_rate`` (msgs/min) and ``error_rate`` (failed / sent)
    between consecutive samples of the last 7 days.

    Read a day at a time (with an hour of overlap, so no interval is lost at a day's edge): the
    samples hold every metric as text, and a week of a large fleet at once would not fit.
    """
    from fleetml.features.layout import ts_to_ms
    from fleetml.store.metrics import read_metrics

    parts = []
    for lo in range(inputs.now - SEND_HISTORY_MS, inputs.now, READ_CHUNK_MS):
        hi = min(lo + READ_CHUNK_MS - 1, inputs.now)
        frame = read_metrics(
            inputs.engine,
            metrics=[SENT_METRIC, FAILED_METRIC],
            start=inputs.ts(lo - RATE_OVERLAP_MS),
            end=inputs.ts(hi),
        )
        if frame.empty:
            continue
        rates = counter_rates(frame, [SENT_METRIC, FAILED_METRIC])
        sent = rates[SENT_METRIC].to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            error_rate = np.where(sent > 0, rates[FAILED_METRIC].to_numpy() / sent, np.nan)
        part = pd.DataFrame(
            {
                "account_id": frame["account_id"].to_numpy(dtype=object),
                "send_rate": sent,
                "error_rate": error_rate,
            }
        )
        parts.append(part[ts_to_ms(frame["ts"]) >= lo])
    if not parts:
        return pd.DataFrame(columns=["account_id", "group", "send_rate", "error_rate"])
    history = pd.concat(parts, ignore_index=True)
    history["group"] = history["account_id"].map(inputs.groups)
    return history


def counter_rates(
    frame: pd.DataFrame, counters: list[str], *, segment: np.ndarray | None = None
) -> pd.DataFrame:
    """The counters of a wide frame (sorted by account, then time) as per-minute rates between
    consecutive samples of the same account and ``segment`` (a slice of a sampled window: no
    rate spans two slices). The first sample of each run has no rate (NaN)."""
    from fleetml.features.counters import counter_rate
    from fleetml.features.layout import Layout, ts_to_ms

    codes = pd.factorize(frame["account_id"])[0].astype("int64")
    if segment is not None:
        codes = codes * (int(segment.max(initial=0)) + 1) + segment.astype("int64")
    layout = Layout.build(ts_to_ms(frame["ts"]), codes, 0)
    return pd.DataFrame(
        {c: counter_rate(frame[c].to_numpy(dtype="float64"), layout) for c in counters},
        index=frame.index,
    )


def _retrain_drift(inputs: Inputs) -> list[Recommendation]:
    out: list[Recommendation] = []
    psi_by_reference: dict[tuple[int, int], pd.DataFrame] = {}
    for family in DRIFT_FAMILIES:
        champion = champion_window(inputs.settings, family)
        if champion is None:
            inputs.drift[family] = {"skipped": "no champion"}
            continue
        start, end, source = _reference(inputs, champion)
        if start is None:
            inputs.drift[family] = {
                "version": champion["version"],
                "skipped": "too little history before the last 24 h for a reference",
            }
            continue
        if (start, end) not in psi_by_reference:
            psi_by_reference[(start, end)] = drift_table(inputs, start, end)
        psi = psi_by_reference[(start, end)]
        top = psi.dropna(subset=["psi"]).head(1)
        inputs.drift[family] = {
            "version": champion["version"],
            "reference": source,
            "reference_from_ms": start,
            "reference_to_ms": end,
            "max_psi": None if top.empty else round(float(top["psi"].iloc[0]), 4),
            "max_psi_column": None if top.empty else str(top["column"].iloc[0]),
        }
        out += generators.retrain_drift(psi, family=family, model_version=champion["version"])
    return out


def family_drift(
    engine: Engine, settings: Settings, family: str, *, now_ms: int | None = None
) -> dict[str, Any]:
    """The drift check of ``retrain_drift`` for one family, whole: the PSI of every metric
    between the champion's reference window and the last 24 h (the dashboard shows it).

    ``skipped`` says why there is no table (no champion, too little history).
    """
    now = clock.fleet_now(engine, settings) if now_ms is None else now_ms
    inputs = Inputs(engine, settings, now)
    champion = champion_window(settings, family)
    if champion is None:
        return {"family": family, "skipped": "no champion", "metrics": []}
    start, end, source = _reference(inputs, champion)
    out: dict[str, Any] = {"family": family, "version": champion["version"], "metrics": []}
    if start is None:
        return {**out, "skipped": "too little history before the last 24 h for a reference"}
    psi = drift_table(inputs, start, end)
    rows = psi.astype(object).where(psi.notna(), None).to_dict(orient="records")
    return {
        **out,
        "skipped": None,
        "reference": source,
        "reference_from_ms": int(start),
        "reference_to_ms": int(end),
        "current_from_ms": inputs.now - DRIFT_CURRENT_MS,
        "current_to_ms": inputs.now,
        "metrics": rows,
    }


def champion_window(settings: Settings, family: str) -> dict[str, Any] | None:
    """The champion of ``family``: ``version`` and its training window ``start_ms``/``end_ms``
    from its MLflow run's tags (None each when the run does not say); None without a champion.
    """
    from fleetml.serving import registry

    if registry.registry_missing(settings):
        return None
    if family == "anomaly":
        from fleetml.serving.anomaly import MODEL_NAME
    else:
        from fleetml.serving.risk import MODEL_NAME
    version = registry.get_champion_version(MODEL_NAME, settings=settings)
    if version is None:
        return None
    run_id = registry.version_info(MODEL_NAME, version, settings=settings)["run_id"]
    tags: dict[str, str] = {}
    if run_id:
        from mlflow import MlflowClient

        uri = registry.configure_mlflow(settings)
        run = MlflowClient(tracking_uri=uri, registry_uri=uri).get_run(run_id)
        tags = {**run.data.params, **run.data.tags}
    # training rows end where the held-out part starts: anomaly logs train_end, risk val_start
    end = tags.get("train_end") or tags.get("val_start") or tags.get("data_end")
    return {
        "version": int(version),
        "start_ms": _tag_ms(tags.get("data_start")),
        "end_ms": _tag_ms(end),
    }


def _tag_ms(value: str | None) -> int | None:
    if not value:
        return None
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    if pd.isna(ts):
        return None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
    return int(ts.value // 1_000_000)


def _reference(inputs: Inputs, champion: dict) -> tuple[int | None, int | None, str]:
    """The reference window: the training window, else the oldest 7 days before the current."""
    start, end = champion.get("start_ms"), champion.get("end_ms")
    if start is not None and end is not None and end > start:
        return int(start), int(end), "training_window"
    from fleetml.store.metrics import time_range

    oldest = time_range(inputs.engine)[0]
    cut = inputs.now - DRIFT_CURRENT_MS
    if oldest is None or int(oldest.value // 1_000_000) >= cut:
        return None, None, "oldest_7_days"
    first = int(oldest.value // 1_000_000)
    return first, min(first + DRIFT_FALLBACK_MS, cut), "oldest_7_days"


def drift_table(inputs: Inputs, start_ms: int, end_ms: int) -> pd.DataFrame:
    """:func:`~fleetml.decisions.drift.psi_table` of the metrics: ``[start_ms, end_ms]`` (sampled
    in slices when long) against the last 24 h."""
    from fleetml.decisions.drift import psi_table

    reference = _metric_sample(inputs, _slices(start_ms, end_ms))
    current = _metric_sample(inputs, [(inputs.now - DRIFT_CURRENT_MS, inputs.now)])
    columns = [c for c in inputs.kinds if c in reference.columns and c in current.columns]
    return psi_table(reference, current, columns)


def _slices(start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    if end_ms - start_ms <= DRIFT_SLICES * DRIFT_SLICE_MS:
        return [(int(start_ms), int(end_ms))]
    starts = np.linspace(start_ms, end_ms - DRIFT_SLICE_MS, DRIFT_SLICES).astype("int64")
    return [(int(s), int(s) + DRIFT_SLICE_MS - 1) for s in starts]


def _metric_sample(inputs: Inputs, ranges: list[tuple[int, int]]) -> pd.DataFrame:
    """Every metric in ``ranges``: gauges as stored, counters as per-minute rates."""
    from fleetml.features.layout import ts_to_ms
    from fleetml.store.metrics import read_metrics

    frame = read_metrics(inputs.engine, ranges=ranges)
    counters = [c for c, k in inputs.kinds.items() if k == "counter" and c in frame.columns]
    if frame.empty or not counters:
        return frame
    starts = np.asarray([lo for lo, _ in ranges], dtype="int64")
    segment = np.searchsorted(starts, ts_to_ms(frame["ts"]), side="right") - 1
    rates = counter_rates(frame, counters, segment=segment)
    return frame.assign(**{c: rates[c] for c in counters})


def _investigate_anomaly(inputs: Inputs) -> list[Recommendation]:
    from fleetml.store.predictions import flagged_runs, read_latest

    latest = read_latest(inputs.engine, families=["anomaly"])
    if latest.empty:
        return []
    runs = flagged_runs(inputs.engine)
    runs = runs[runs["family"] == "anomaly"][["account_id", "horizon", "run"]]
    p = latest.merge(runs, on=["account_id", "horizon"], how="left")
    p["run"] = pd.to_numeric(p["run"], errors="coerce").fillna(0)
    p["top_metrics"] = [
        list(d.get("top_metrics") or []) if isinstance(d, dict) else [] for d in p["detail"]
    ]
    # the score the alert rule flagged on, not the lower one a habituating model reports
    p["score"] = [rule_score(s, d) for s, d in zip(p["score"], p["detail"], strict=True)]
    p["group"] = p["account_id"].astype(str).map(inputs.groups)
    return generators.investigate_anomaly(p)


_GENERATORS: dict[Kind, Callable[[Inputs], list[Recommendation]]] = {
    Kind.ADJUST_FAILOVER_THRESHOLD: _adjust_failover_threshold,
    Kind.PROMOTE_MODE: _promote_mode,
    Kind.CHANGE_ALGORITHM: _change_algorithm,
    Kind.ADD_SERVANTS: _add_servants,
    Kind.LOWER_SEND_RATE: _lower_send_rate,
    Kind.RETRAIN_DRIFT: _retrain_drift,
    Kind.INVESTIGATE_ANOMALY: _investigate_anomaly,
}
