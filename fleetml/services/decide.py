"""The tick's decision step: observation from the store, :class:`FleetmlPolicy`, record.

:class:`DecisionLoop` lives beside the tick's :class:`~fleetml.services.tick.LiveLoop` (one per
worker process) and keeps the policy's per-account state between ticks. After scoring, a tick

1. builds an :class:`~fleetml.decisions.contracts.Observation`: the registry, each account's
   newest metrics and counter rates from the scorer's window, the events reported since the
   previous tick, the latest predictions of every account, the group forecasts, and the
   controller state the policy set itself (health = a sample within ``stale_after_s`` and,
   when the runtime pushes it, an ``up`` gauge that is not 0);
2. runs the policy with each group's settings (``group_policies``, default mode
   ``FLEETML_DECISION_MODE``);
3. writes, in one transaction, the decision record, the actions (``pending`` in auto mode,
   ``awaiting_approval`` in approve mode), the routing weights, the recommendations and the
   outcomes of earlier failovers that are now judged; it expires unacknowledged actions.

A rerun of the same tick writes nothing twice: decisions and actions carry dedup keys built
from the tick time, the kind and the account.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import orjson
import pandas as pd

from fleetml.decisions.contracts import (
    STATE_COLUMNS,
    ActionKind,
    Envelope,
    Fleet,
    GroupPolicy,
    Mode,
    Observation,
    empty_events,
)
from fleetml.decisions.policy import FleetmlPolicy, PolicySettings
from fleetml.vocab import ENFORCEMENT_KINDS, ENFORCEMENT_LABELS

log = logging.getLogger("fleetml.decide")

_ACTION_KINDS = frozenset(k.value for k in ActionKind)
#: How far back a tick looks for failovers still awaiting their outcome that no running policy
#: tracks (a worker down for longer leaves the ones before unjudged).
OUTCOME_LOOKBACK_MS = 7 * 24 * 3_600_000
#: A gauge the runtime may push with its samples: 1 while its health probe of the account passes,
#: 0 while it fails (Prometheus' ``up`` convention).
UP_METRIC = "up"
#: The prediction families and columns the policy reads.
_FAMILIES = ["anomaly", "risk"]
_PRED_COLUMNS = ("account_id", "family", "horizon", "score", "flag", "model_version")


def _dedup_key(now_ms: int, decision) -> str:
    """What makes a decision "the same" in the record: its tick, kind, account and rule; for a
    decision answering one event (a session restart, a hold), the event's time instead of the
    tick's, so a restarted worker (or a one-shot ``fleetml tick``) that reads recent events
    again records and publishes nothing twice."""
    at = (decision.inputs or {}).get("event_ts_ms")
    when = int(at) if isinstance(at, int | float) and not isinstance(at, bool) else int(now_ms)
    return f"{when}:{decision.kind}:{decision.account_id or decision.group}:{decision.rule}"


def _enforcement_risk(detail) -> np.ndarray:
    """The ``enforcement_risk`` in each prediction's ``detail`` (a dict from this tick's scorer,
    JSON text from the store), NaN where there is none."""
    out = np.full(len(detail), np.nan)
    for i, d in enumerate(detail):
        if isinstance(d, str) and "enforcement_risk" in d:
            try:
                d = orjson.loads(d)
            except orjson.JSONDecodeError:
                continue
        if isinstance(d, dict):
            v = d.get("enforcement_risk")
            if isinstance(v, int | float):
                out[i] = float(v)
    return out


def _enforcement_thresholds(scorer) -> dict[str, float]:
    """Per horizon, the alert threshold of the served risk model's platform-enforcement part
    (chosen on validation with the model; empty when it has none or no risk model serves)."""
    try:
        bundle = getattr(scorer.models.get("risk"), "bundle", None)
    except Exception:  # no model set on this scorer (a bare window in tests and replays)
        return {}
    parts = getattr(bundle, "enforcement", None) or {}
    return {str(h): float(m.threshold) for h, m in parts.items()}


#: Events are read with this overlap (late arrivals); the seen-set drops repeats.
_EVENT_OVERLAP_MS = 10 * 60_000


def policy_settings(settings) -> PolicySettings:
    return PolicySettings(
        envelope=Envelope(
            max_failover_share=float(settings.envelope_max_failover_share),
            window_s=int(settings.envelope_window_s),
        ),
        quality_hold_s=int(settings.quality_hold_s),
        fail_after_ticks=int(settings.decision_fail_after_ticks),
    )


#: A saved controller state is restored only when its tick is at most this many ticks old...
RESTORE_MAX_TICKS = 3
#: ... or at most this old (a short tick interval must not make a restart's gap too long).
RESTORE_MIN_AGE_MS = 10 * 60_000


class DecisionLoop:
    """See the module docstring."""

    def __init__(self, engine, settings, *, policy: FleetmlPolicy | None = None):
        self.engine = engine
        self.settings = settings
        self.policy = policy or FleetmlPolicy(
            default=GroupPolicy(mode=Mode(settings.decision_mode)),
            settings=policy_settings(settings),
        )
        self._fleet: tuple | None = None
        self._events_until: int | None = None
        self._seen: set[tuple] = set()
        self._ids: dict[int, int] = {}  # id(Decision) -> decisions.id, for outcomes
        self._synced_ms: int | None = None  # approvals seen up to here
        self._saved_tick: int | None = None  # the tick of the controller state in the store
        self._forecast_cache: tuple[int, pd.DataFrame] | None = None
        self._preds: pd.DataFrame | None = None  # every account's latest prediction
        self.last_observation: Observation | None = None

    # ------------------------------------------------------------------ inputs
    def fleet(self) -> Fleet:
        from fleetml.services.data import registry_version
        from fleetml.store.accounts import accounts_frame

        version = registry_version(self.engine)
        if self._fleet is None or self._fleet[0] != version:
            frame = accounts_frame(self.engine)
            self._fleet = (version, Fleet.from_records(frame))
            # who serves without fleetml: masters, and servants the registry marks active
            serving = (frame["role"].astype(str) == "master") | (
                frame["state"].astype(str) == "active"
            )
            self._serving = pd.Series(serving.to_numpy(), index=frame["account_id"].astype(str))
        return self._fleet[1]

    def _events(self, now_ms: int) -> pd.DataFrame:
        from fleetml.store.events import read_events

        first = self._events_until is None
        start = (self._events_until or now_ms - _EVENT_OVERLAP_MS) - _EVENT_OVERLAP_MS
        ev = read_events(
            self.engine,
            start=pd.Timestamp(start + 1, unit="ms", tz="UTC"),
            end=pd.Timestamp(now_ms, unit="ms", tz="UTC"),
        )
        if first:
            ev = pd.concat([self._standing_enforcement(start), ev], ignore_index=True)
        self._events_until = now_ms
        if not len(ev):
            return empty_events()
        ts = pd.to_datetime(ev["ts"], utc=True).dt.as_unit("ms").astype("int64").to_numpy()
        accs, kinds = ev["account_id"].astype(str), ev["kind"].astype(str)
        keys = list(zip(ts.tolist(), accs, kinds, strict=True))
        fresh = np.asarray([k not in self._seen for k in keys])
        self._seen.update(keys)
        if len(self._seen) > 100_000:  # only the overlap can repeat
            self._seen = {k for k in self._seen if k[0] > now_ms - 2 * _EVENT_OVERLAP_MS}
        out = pd.DataFrame(
            {
                "ts_ms": ts,
                "account_id": ev["account_id"].astype(str).to_numpy(),
                "kind": ev["kind"].astype(str).to_numpy(),
                "detail": ev["detail"].astype(object).to_numpy(),
            }
        )
        return out[fresh].reset_index(drop=True)

    def _standing_enforcement(self, before_ms: int) -> pd.DataFrame:
        """Enforcement still in force at ``before_ms`` (the first tick's event window starts
        there): per account its newest restriction or ban with no ``restriction_lifted`` after
        it, and a quality drop younger than the quality hold. A worker starting on a store whose
        numbers were restricted before it ran (a first start, a long outage) would otherwise
        see them as healthy and could fail one over: routing around the platform's limit."""
        from fleetml.store.events import read_events

        kinds = [*ENFORCEMENT_KINDS, "restriction_lifted"]
        ev = read_events(self.engine, kinds=kinds, end=pd.Timestamp(before_ms, unit="ms", tz="UTC"))
        if not len(ev):
            return ev
        ts = pd.to_datetime(ev["ts"], utc=True).dt.as_unit("ms").astype("int64")
        kind = ev["kind"].astype(str)
        lasting = ev[kind.isin(ENFORCEMENT_LABELS) | (kind == "restriction_lifted")]
        newest = lasting.groupby(lasting["account_id"].astype(str), sort=False).tail(1)
        standing = newest[newest["kind"].astype(str).isin(ENFORCEMENT_LABELS)]
        quality_from = before_ms - int(self.settings.quality_hold_s * 1000)
        quality = ev[(kind == "quality_drop") & (ts >= quality_from)]
        quality = quality.groupby(quality["account_id"].astype(str), sort=False).tail(1)
        return pd.concat([standing, quality]).sort_values("ts", kind="stable")

    def _latest(self, scorer, fleet: Fleet) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
        """Newest gauge values and counter rates per account from the scorer's window, and the
        time of each account's newest sample (-1: none)."""
        ids = fleet.ids
        window = scorer.window
        empty = pd.DataFrame(index=fleet.account_ids)
        if not len(window):
            return empty, empty, np.full(len(ids), -1, dtype=np.int64)
        codes = np.asarray([window.code(a) if window.code(a) is not None else -1 for a in ids])
        have = codes >= 0
        newest = np.full(len(ids), -1, dtype=np.int64)
        newest[have] = window.newest[codes[have]]
        rows = window.newest_rows(codes[have], np.ones(int(have.sum()), dtype=np.int64))
        frame = window.frame(rows, levels=True)
        frame["account_id"] = frame["account_id"].astype(str)
        frame = frame.drop_duplicates("account_id", keep="last").set_index("account_id")
        frame = frame.drop(columns=["ts"]).reindex(fleet.account_ids)
        counters = [c for c in frame.columns if c in window.levels]
        return frame.drop(columns=counters), frame[counters], newest

    def _forecasts(self, now_ms: int) -> pd.DataFrame:
        """Per group, the forecast peak of ``forecast_metric`` ahead of ``now_ms`` and when it
        comes (re-read at most every 5 minutes: the forecast job refreshes far less often)."""
        from fleetml.store.forecasts import list_forecasts, read_forecast

        cached = self._forecast_cache
        if cached is not None and now_ms - cached[0] < 300_000 and now_ms >= cached[0]:
            return cached[1]
        metric = self.settings.forecast_metric
        out = []
        for row in list_forecasts(self.engine, scope="group", metric=metric):
            got = read_forecast(
                self.engine,
                scope="group",
                target=row["target"],
                metric=metric,
                horizon=row["horizon"],
            )
            points = pd.DataFrame(((got or {}).get("payload") or {}).get("points") or [])
            if points.empty or not {"ts", "yhat"} <= set(points.columns):
                continue
            ts = pd.to_datetime(points["ts"], utc=True).dt.as_unit("ms").astype("int64")
            yhat = pd.to_numeric(points["yhat"], errors="coerce")
            ahead = (ts > now_ms).to_numpy() & yhat.notna().to_numpy()
            if not ahead.any():
                continue
            best = int(np.argmax(np.where(ahead, yhat.to_numpy(dtype=float), -np.inf)))
            out.append(
                {
                    "group": str(row["target"]),
                    "peak": float(yhat.iloc[best]),
                    "peak_ts_ms": int(ts.iloc[best]),
                }
            )
        frame = pd.DataFrame(out, columns=["group", "peak", "peak_ts_ms"])
        self._forecast_cache = (now_ms, frame)
        return frame

    def _predictions(self, fresh: pd.DataFrame | None) -> pd.DataFrame:
        """Every account's latest anomaly and risk prediction: read from the store once, then
        kept up to date with what each tick scored (the tick just wrote the same rows)."""
        if self._preds is None:
            from fleetml.store.predictions import read_latest

            stored = read_latest(self.engine, families=_FAMILIES)
            self._preds = stored[list(_PRED_COLUMNS)].assign(
                enforcement_risk=_enforcement_risk(stored["detail"].to_numpy(dtype=object))
            )
        if fresh is not None and len(fresh):
            new = fresh.loc[fresh["family"].isin(_FAMILIES)]
            detail = (
                new["detail"].to_numpy(dtype=object)
                if "detail" in new
                else np.full(len(new), None, dtype=object)
            )
            new = new[list(_PRED_COLUMNS)].assign(enforcement_risk=_enforcement_risk(detail))
            both = pd.concat([self._preds, new], ignore_index=True) if len(self._preds) else new
            self._preds = both.drop_duplicates(
                ["account_id", "family", "horizon"], keep="last"
            ).reset_index(drop=True)
        return self._preds

    def observe(
        self, now_ms: int, *, scorer, models: dict[str, Any], predictions=None
    ) -> Observation:
        fleet = self.fleet()
        metrics, rates, newest = self._latest(scorer, fleet)
        stale_ms = int(self.settings.stale_after_s * 1000)
        health = (newest < 0) | (newest >= now_ms - stale_ms)
        probe = np.zeros(len(health), dtype=bool)
        if UP_METRIC in metrics:
            # the runtime's own health probe, pushed as a gauge: 0 = failing
            up = metrics[UP_METRIC].to_numpy(dtype=float)
            health &= ~(up == 0)
            probe = ~np.isnan(up) & (newest >= now_ms - stale_ms)
        state = self.policy.controller_state(fleet)
        state["health_ok"] = health
        state["probe"] = probe
        preds = self._predictions(predictions)
        thresholds = _enforcement_thresholds(scorer)
        if len(preds):
            cut = preds["horizon"].astype(str).map(thresholds).to_numpy(dtype=float)
            preds = preds.assign(enforcement_flag=preds["enforcement_risk"].to_numpy() >= cut)
        try:
            forecasts = self._forecasts(now_ms)
        except Exception:  # a forecast store in an unexpected shape must not stop decisions
            log.exception("could not read group forecasts; deciding without them")
            forecasts = pd.DataFrame()
        return Observation(
            ts_ms=int(now_ms),
            fleet=fleet,
            metrics=metrics,
            rates=rates,
            state=state[[*STATE_COLUMNS, "probe"]],
            events=self._events(now_ms),
            predictions=preds,
            forecasts=forecasts,
            models={k: v for k, v in (models or {}).items()},
            step_s=int(max(self.settings.score_every_s, 1)),
        )

    def sync(self, now_ms: int) -> int:
        """Bring the policy's controller state in line with what was published to the runtime:
        on the first tick, every account's latest published failover/failback/hold/resume (a
        restarted worker must not forget a failed-over master); later, the actions operators
        approved since the previous tick. Returns how many were applied."""
        import sqlalchemy as sa

        from fleetml.store.tables import actions as t
        from fleetml.store.tables import decisions as d

        kinds = [
            ActionKind.FAILOVER.value,
            ActionKind.FAILBACK.value,
            ActionKind.HOLD.value,
            ActionKind.RESUME.value,
        ]
        published = t.c.state.in_(["pending", "acknowledged"])
        query = (
            sa.select(
                t.c.id,
                t.c.account_id,
                t.c.kind,
                t.c.params,
                t.c.created_at,
                t.c.approved_at,
                t.c.group,
                d.c.rule,
            )
            .select_from(t.outerjoin(d, d.c.id == t.c.decision_id))
            .where(published, t.c.kind.in_(kinds))
        )
        if self._synced_ms is not None:
            query = query.where(
                t.c.approved_at.is_not(None),
                t.c.approved_at > self._synced_ms,
                t.c.approved_at <= now_ms,
            )
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.c.id)).all()
        for r in rows:
            params = r.params if isinstance(r.params, dict) else {}
            self.policy.apply_published(
                r.account_id,
                r.kind,
                r.approved_at or r.created_at,
                params,
                rule=r.rule,
                group=r.group,
            )
        self._synced_ms = int(now_ms)
        return len(rows)

    # ------------------------------------------------------------------ a tick
    def run(
        self, now_ms: int, *, scorer, models: dict[str, Any], predictions=None
    ) -> dict[str, Any]:
        """Decide and record as of ``now_ms`` (``predictions``: what this tick scored); returns
        counts for the tick's summary."""
        from fleetml.store.policies import read_group_policies

        self.policy.default = GroupPolicy(mode=Mode(self.settings.decision_mode))
        self.policy.set_policies(
            read_group_policies(self.engine, default_mode=self.settings.decision_mode)
        )
        restored = self._synced_ms is None and self.restore(now_ms)
        synced = self.sync(now_ms)
        obs = self.observe(now_ms, scorer=scorer, models=models, predictions=predictions)
        self.last_observation = obs
        actions = self.policy.decide(obs)
        return {
            **self.record(now_ms, actions, models=models),
            "actions_synced": synced,
            "state_restored": bool(restored),
        }

    def restore(self, now_ms: int) -> bool:
        """Continue from the controller state the previous tick saved, when it is recent (at most
        :data:`RESTORE_MAX_TICKS` ticks, at least :data:`RESTORE_MIN_AGE_MS`, before ``now_ms``,
        and strictly before it: a rerun of that tick starts afresh and saves nothing):
        run counters, cooldowns, the envelope's window, smoothed weights. The actions published
        since (operators' approvals) are then synced on top. An older state is not restored:
        "ticks in a row" do not span an outage; the published actions alone are (the failed-over
        masters, the holds, the envelope's pre-emptive failovers)."""
        from fleetml.store.controller import load_controller_state

        saved = load_controller_state(self.engine)
        if saved is None:
            return False
        tick_ms, state = saved
        self._saved_tick = int(tick_ms)
        max_age = max(RESTORE_MAX_TICKS * self.settings.score_every_s * 1000, RESTORE_MIN_AGE_MS)
        # a rerun of the saved tick (or a replay of an earlier one) must not count it again
        if not (0 < now_ms - tick_ms <= max_age) or not self.policy.restore(state):
            return False
        self._synced_ms = int(tick_ms)
        return True

    def _published_weights(self) -> pd.DataFrame | None:
        """The weights to serve: fleetml's own in auto mode; elsewhere what the runtime would use
        without fleetml (each serving account's capacity; a standby servant 0, so a route call
        never picks a backup), with fleetml's weight kept as ``target``."""
        w = self.policy.last_weights
        if w is None or not len(w):
            return w
        fleet = self.fleet()
        modes = w["group"].map(lambda g: self.policy.policy(str(g)).mode).to_numpy()
        auto = modes == Mode.AUTO
        if auto.all():
            return w
        w = w.copy()
        cap = fleet.accounts["capacity"].reindex(w["account_id"]).to_numpy(dtype=float)
        serving = self._serving.reindex(w["account_id"].astype(str), fill_value=False)
        cap = np.where(serving.to_numpy(dtype=bool), cap, 0.0)
        w["target"] = w["weight"]
        w["weight"] = np.where(auto, w["weight"].to_numpy(dtype=float), cap)
        w["reasons"] = [
            r if a else [f"{Mode(m).value} mode: not published", *r]
            for r, a, m in zip(w["reasons"], auto, modes, strict=True)
        ]
        return w

    def _settle_untracked(self, conn, now_ms: int) -> int:
        """Judge, from the store, the failovers no policy in this process tracks: those made
        before a restart, or by an earlier one-shot ``fleetml tick``, within the last
        :data:`OUTCOME_LOOKBACK_MS`. Their verdict is the live policy's
        (:func:`~fleetml.decisions.policy.failover_outcome`), on the stored fault events."""
        from fleetml.decisions.policy import TRACKED_RULES, failover_outcome
        from fleetml.store.decisions import open_failovers, set_outcome
        from fleetml.store.events import first_events
        from fleetml.vocab import FAULT_KINDS

        tracked = set(self._ids.values())
        rows = [
            r
            for r in open_failovers(
                conn,
                since_ms=now_ms - OUTCOME_LOOKBACK_MS,
                until_ms=now_ms,
                rules=TRACKED_RULES,
            )
            if int(r["id"]) not in tracked
        ]
        if not rows:
            return 0
        ends = [int(r["ts_ms"]) + self._horizon_ms(r) for r in rows]
        # as the live policy, see only the faults up to this tick (a replay with --now must not
        # judge by what happened after it)
        faults = first_events(
            conn,
            [
                (str(r["account_id"]), int(r["ts_ms"]), min(e, now_ms))
                for r, e in zip(rows, ends, strict=True)
            ],
            FAULT_KINDS,
        )
        judged = 0
        for r, end, fault in zip(rows, ends, faults, strict=True):
            outcome = failover_outcome(str(r["rule"]), until_ms=end, fault_ms=fault, now_ms=now_ms)
            if outcome is not None and set_outcome(
                conn, decision_id=int(r["id"]), outcome=outcome, at_ms=now_ms, only_open=True
            ):
                judged += 1
        return judged

    def _horizon_ms(self, row: dict) -> int:
        """The horizon a stored failover decision was made on (its ``inputs.horizon``), else its
        group's current one."""
        from fleetml.decisions.policy import horizon_ms

        horizon = (row.get("inputs") or {}).get("horizon")
        try:
            return horizon_ms(str(horizon))
        except (TypeError, ValueError):
            return horizon_ms(self.policy.policy(str(row.get("group"))).risk_horizon)

    def record(self, now_ms: int, actions, *, models: dict[str, Any]) -> dict[str, Any]:
        from fleetml.store.actions import create_actions, expire_actions
        from fleetml.store.controller import save_controller_state
        from fleetml.store.decisions import set_outcome, write_decisions
        from fleetml.store.recommendations import expire_recommendations, upsert_recommendations
        from fleetml.store.weights import write_weights

        decisions = actions.decisions
        keys = [_dedup_key(now_ms, d) for d in decisions]
        with self.engine.begin() as conn:
            ids = write_decisions(conn, decisions, ts_ms=now_ms, dedup_keys=keys)
            rows = []
            for d, i, k in zip(decisions, ids, keys, strict=True):
                self._ids[id(d)] = i
                if d.kind in _ACTION_KINDS and d.status in ("executed", "awaiting_approval"):
                    rows.append(
                        {
                            "decision_id": i,
                            "account_id": d.account_id,
                            "group": d.group,
                            "kind": d.kind,
                            "params": d.params,
                            "state": "pending" if d.status == "executed" else "awaiting_approval",
                            "dedup_key": k,
                        }
                    )
            created = (
                create_actions(
                    conn, rows, now_ms=now_ms, ttl_ms=int(self.settings.action_ttl_s * 1000)
                )
                if rows
                else []
            )
            weights = self._published_weights()
            if weights is not None and len(weights):
                write_weights(conn, weights, ts_ms=now_ms, models=models or {})
            recs = (
                upsert_recommendations(conn, actions.recommendations, now_ms=now_ms)
                if actions.recommendations
                else {"opened": 0, "updated": 0}
            )
            judged = 0
            for o in self.policy.outcomes():
                db_id = self._ids.pop(id(o["decision"]), None)
                # only_open: another process (a one-shot tick beside this worker) may have
                # judged it from the store already; the first verdict stands
                if db_id is not None and set_outcome(
                    conn, decision_id=db_id, outcome=o["outcome"], at_ms=now_ms, only_open=True
                ):
                    judged += 1
            judged += self._settle_untracked(conn, now_ms)
            expired = expire_actions(conn, now_ms=now_ms)
            expire_recommendations(conn, now_ms=now_ms)
            if self._saved_tick is None or now_ms > self._saved_tick:
                # a replay of an earlier tick never overwrites the state of a later one
                save_controller_state(conn, self.policy.snapshot(), tick_ms=now_ms, now_ms=now_ms)
                self._saved_tick = int(now_ms)
        # decisions nobody will judge need not be remembered
        pending = {id(p["decision"]) for p in self.policy._pending}
        self._ids = {k: v for k, v in self._ids.items() if k in pending}
        return {
            "decisions": len(decisions),
            "actions": len(created),
            "recommendations_opened": int(recs.get("opened", 0)),
            "outcomes": judged,
            "actions_expired": int(expired or 0),
        }
