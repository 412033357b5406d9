"""One scoring cycle of the live loop: read what arrived, score, store, alert.

:class:`LiveLoop` is created once per worker process and keeps its
:class:`~fleetml.serving.live.LiveScorer` (raw window and per-account state) between ticks. A tick

1. asks the registry whether a champion moved (hot reload, degraded mode on failure);
2. reads only the samples stamped since the previous tick (with an overlap for late samples),
   and the thin slices its seasonal features need around each lag; the first tick fills the
   window from the store instead;
3. scores every account with new samples (anomaly plus every risk horizon);
4. writes the predictions (latest and history) in one transaction;
5. opens and resolves alerts from them (:func:`fleetml.services.alerts.evaluate_alerts`), which
   writes the notification outbox in its own single transaction;
6. decides (:class:`fleetml.services.decide.DecisionLoop`): weights, failovers, holds and
   recommendations, recorded with the model versions and inputs behind them.

Re-running a tick over the same samples (after a crash, or ``fleetml tick --now`` twice) writes
the same rows again instead of adding any: predictions are keyed by the data they scored, and
alerts and notifications by their own unique keys.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from fleetml.serving.live import LiveScorer
from fleetml.serving.models import ModelSet

log = logging.getLogger("fleetml.tick")

#: The first tick reads the window in slices of this length (bounded memory on large fleets).
_FILL_SLICE_MS = 4 * 3_600_000
#: Trim the window when it grew by this share since the last trim (a trim copies every row).
_TRIM_GROWTH = 0.05


class LiveLoop:
    """The worker's scoring loop over one store (see the module docstring).

    Parameters
    ----------
    engine, settings
        The store and the settings (``stale_after_s``, ``model_check_s``, ...).
    models
        A :class:`ModelSet` to share (the embedded API shares its own); default: a new one.
    notifier
        Optional object with ``wake()``, called after alerts wrote notifications.
    """

    def __init__(self, engine, settings, *, models: ModelSet | None = None, notifier=None):
        self.engine = engine
        self.settings = settings
        self.models = models or ModelSet(settings)
        self.scorer = LiveScorer(
            self.models, max_rows=settings.score_max_rows, threads=settings.score_threads
        )
        self.notifier = notifier
        self.read_until: int | None = None  # upper bound (ms) of the last tail read
        self._configs = None
        self._group_cache: tuple | None = None
        self._registry_cache: dict[str, tuple] = {}
        from fleetml.services.decide import DecisionLoop

        self.decisions = DecisionLoop(engine, settings)

    # ------------------------------------------------------------------ reading
    def _read(self, ranges: list[tuple[int, int]]) -> pd.DataFrame:
        """Samples of every account in the inclusive epoch-ms ``ranges``, in one query."""
        from fleetml.store.metrics import read_metrics

        ranges = [(int(lo), int(hi)) for lo, hi in ranges if hi >= lo]
        if not ranges:
            return pd.DataFrame(columns=["ts", "account_id"])
        return read_metrics(self.engine, ranges=ranges)

    def _fill(self, now_ms: int) -> np.ndarray:
        """First tick (or after the feature configs or the clock changed): the window from the
        store, read in slices so a large fleet's first read never holds every row twice."""
        from fleetml.store.predictions import anomaly_states, flagged_runs

        scorer = self.scorer
        # an hour before the window, so a counter's first sample in it has its previous one
        start = now_ms - scorer.reach_ms() - 3_600_000
        counts = np.zeros(0, dtype=np.int64)
        for lo in range(start, now_ms + 1, _FILL_SLICE_MS):
            hi = min(lo + _FILL_SLICE_MS - 1, now_ms)
            got = scorer.window.merge(self._read([(lo, hi)]))
            counts = np.r_[counts, np.zeros(got.size - counts.size, dtype=np.int64)] + got
        scorer.step_ms = None
        pad = scorer.pad_ms()
        margin = pad + (scorer.step_ms or pad)  # one sample before each slice (counter rates)
        scorer.window.merge(
            self._read([(now_ms - lag - margin, now_ms - lag + pad) for lag in scorer.lags_ms()]),
            contiguous=False,
        )
        scorer.restore_runs(flagged_runs(self.engine))
        stored = anomaly_states(self.engine)
        scorer.restore_rule(stored.rules)
        scorer.restore_habituation(stored.maxima)
        scorer.restore_context(stored.contexts)
        # The history before this process was scored by an earlier one (or never needs to be):
        # an account scored before gets the samples since its last scored one, as the earlier
        # process's next tick would have scored them (the rule, the habituation and the
        # calibration context continue from what was restored above), so a cron of one-shot
        # ticks scores what a worker would; any other account its newest sample.
        first = np.minimum(counts, 1)
        until = stored.until()
        if len(until):
            codes = scorer.window.codes_of(until.index.to_series())
            inside = codes < counts.size
            codes, until = codes[inside], until.to_numpy(dtype=np.int64)[inside]
            newer = scorer.window.count_between(codes, until, scorer.window.newest[codes] + 1)
            first[codes] = np.maximum(np.minimum(newer, counts[codes]), first[codes])
        return first

    def _tail(self, now_ms: int) -> np.ndarray:
        """Later ticks, in one query and one merge: samples since the last read (with an
        overlap for late samples) and the new part of every seasonal slice."""
        scorer = self.scorer
        overlap = int(max(2 * self.settings.score_every_s * 1000, 300_000))
        last = int(self.read_until)
        pad = scorer.pad_ms()
        ranges = [(last - overlap + 1, now_ms)]
        for lag in scorer.lags_ms():
            ranges.append((max(last - lag + pad + 1, now_ms - lag - pad), now_ms - lag + pad))
        frame = self._read(ranges)
        if not len(frame):
            return np.zeros(len(scorer.window.ids), dtype=np.int64)
        # only samples of the tail count as new; seasonal-slice samples are history
        ts_ms = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("ms").astype("int64")
        recent = ts_ms.to_numpy() > last - overlap
        counts = scorer.window.merge(frame[recent])
        if (~recent).any():
            scorer.window.merge(frame[~recent])
        return counts

    # ------------------------------------------------------------------ a tick
    def run(self, now_ms: int | None = None) -> dict[str, Any]:
        """One scoring cycle as of ``now_ms`` (default: the wall clock); returns its summary:
        ``accounts``, ``scored``, ``stale``, ``alerts_opened``, ``alerts_resolved``,
        ``seconds`` and the model ``models`` versions used."""
        from fleetml.services.data import account_groups, account_masters
        from fleetml.store.audit import now_ms as wall_ms
        from fleetml.store.metrics import metric_kinds
        from fleetml.store.predictions import write_predictions

        t0 = time.perf_counter()
        now = int(now_ms) if now_ms is not None else self._clock(wall_ms)
        self.models.refresh()
        kinds = dict(metric_kinds(self.engine))
        configs = self.scorer.feature_configs()
        refill = (
            self.read_until is None
            or configs != self._configs
            or len(self.scorer.window) == 0  # nothing held yet (an empty store at start)
            or now < self.read_until  # the clock went back (a replay): start over
        )
        if refill:
            if len(self.scorer.window):  # held samples and state belong to another clock/config
                self.scorer = LiveScorer(
                    self.models,
                    max_rows=self.settings.score_max_rows,
                    threads=self.settings.score_threads,
                )
                configs = self.scorer.feature_configs()
            self.scorer.window.counters = self._counters(kinds)
            counts = self._fill(now)
        else:
            self.scorer.window.counters = self._counters(kinds)
            counts = self._tail(now)
        self._configs = configs
        self.read_until = now
        self.scorer.trim(every=_TRIM_GROWTH)
        groups = self._groups(account_groups)
        masters = self._registry("masters", account_masters)
        faults = self._faults(now) if self.models.get("risk").fallback else None
        events = self._history_events(now)
        preds = self.scorer.score(
            counts, kinds=kinds, groups=groups, faults=faults, events=events, masters=masters
        )
        stale_ms = int(self.settings.stale_after_s * 1000)
        known = self.scorer.window.newest >= 0
        n_stale = int(np.count_nonzero(known & (self.scorer.window.newest < now - stale_ms)))
        if len(preds):
            preds["stale"] = preds["data_until"].to_numpy(dtype="int64") < now - stale_ms
        with self.engine.begin() as conn:
            written = write_predictions(conn, preds, computed_at=now)
        opened = resolved = notified = 0
        try:
            from fleetml.services.alerts import evaluate_alerts
        except ImportError:  # pragma: no cover - alerts arrive with their own module
            evaluate_alerts = None
        if evaluate_alerts is not None:
            counts_alerts = evaluate_alerts(
                self.engine,
                self.settings,
                preds if len(preds) else _empty_predictions(),
                now_ms=now,
                groups=groups,
                degraded=self.models.degraded(),
            )
            opened, resolved = counts_alerts.opened, counts_alerts.resolved
            notified = counts_alerts.notified
            if notified and self.notifier is not None:
                self.notifier.wake()
        decided = self.decisions.run(
            now, scorer=self.scorer, models=self.models.versions(), predictions=preds
        )
        if decided.get("actions") and self.notifier is not None:
            self.notifier.wake()  # action webhooks (fleetml.services.action_hooks)
        scored = int(preds["account_id"].nunique()) if len(preds) else 0
        return {
            **decided,
            "now": now,
            "accounts": int(np.count_nonzero(known)),
            "scored": scored,
            "stale": n_stale,
            "predictions": written,
            "alerts_opened": opened,
            "alerts_resolved": resolved,
            "notifications": notified,
            "window_rows": len(self.scorer.window),
            "seconds": round(time.perf_counter() - t0, 3),
            "models": self.models.versions(),
            "degraded": self.models.degraded(),
        }

    def _registry(self, name: str, read) -> dict[str, str]:
        """A mapping read from the registry (``read(engine)``), re-read only when it changed."""
        from fleetml.services.data import registry_version

        version = registry_version(self.engine)
        cached = self._registry_cache.get(name)
        if cached is None or cached[0] != version:
            cached = self._registry_cache[name] = (version, read(self.engine))
        return cached[1]

    def _groups(self, read) -> dict[str, str]:
        """account -> group, re-read only when the registry changed."""
        from fleetml.services.data import registry_version

        version = registry_version(self.engine)
        if self._group_cache is None or self._group_cache[0] != version:
            self._group_cache = (version, read(self.engine))
        return self._group_cache[1]

    def _counters(self, kinds: dict[str, str]) -> set[str]:
        """Metrics the store or a served model knows as cumulative counters."""
        from fleetml.vocab import default_metric_kind

        known = dict(kinds)
        for family in ("anomaly", "risk"):
            known.update(getattr(self.models.get(family), "metric_kinds", {}) or {})
        return {m for m, k in known.items() if str(k or default_metric_kind(m)) == "counter"}

    def _clock(self, wall_ms) -> int:
        from fleetml.services import clock

        return clock.fleet_now(self.engine, self.settings, wall_ms)

    def _history_events(self, now_ms: int) -> pd.DataFrame | None:
        """Fault and enforcement events for the served models' event-history features (None
        when no served model uses them)."""
        from fleetml.serving.risk import read_history_events

        reach = self.scorer.history_lookback_ms()
        if reach <= 0:
            return None
        return read_history_events(
            self.engine,
            pd.Timestamp(now_ms - reach - self.scorer.pad_ms(), unit="ms", tz="UTC"),
            pd.Timestamp(now_ms, unit="ms", tz="UTC"),
        )

    def _faults(self, now_ms: int) -> pd.DataFrame:
        from fleetml.serving.fallback import RISK_HISTORY_MS
        from fleetml.store.events import read_events
        from fleetml.vocab import FAULT_KINDS

        return read_events(
            self.engine,
            kinds=sorted(FAULT_KINDS),
            start=pd.Timestamp(now_ms - RISK_HISTORY_MS, unit="ms", tz="UTC"),
            end=pd.Timestamp(now_ms, unit="ms", tz="UTC"),
        )


def _empty_predictions() -> pd.DataFrame:
    from fleetml.serving.base import PREDICTION_COLUMNS

    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in PREDICTION_COLUMNS})
    frame["stale"] = pd.Series(dtype=bool)
    return frame
