"""Scoring one account now, on demand (``POST /v1/predictions/{account_id}/score``).

The account's raw window comes from the store once, then only its new samples are read (at most
every ``refresh_s``); samples posted with the request are scored with it but never stored. Each
API process keeps the windows of the accounts asked about most recently (LRU).

The anomaly answer continues what the tick stored for the account (its calibration context of
earlier raw scores, the habituation's maximum, the alert rule's run of flagged rows) over the
samples the tick has not scored yet, through the tick's own :class:`~fleetml.serving.live.
LiveScorer`: with nothing new it is the tick's answer, and over a new sample it is what the next
tick will store. An account no tick has scored is scored over its last ``context_rows + 1``
samples, so its newest row is calibrated over the rows before it, as a batch score does.

What differs from the tick, by design: features that compare an account with its group's peers
at the same instant are not available for a lone account (they count as missing, as for an
account without peers).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

import numpy as np
import pandas as pd

from fleetml.serving.cache import iso
from fleetml.serving.models import ModelSet, heuristic_model, select_columns
from fleetml.serving.window import RawWindow, seasonal_lags_ms, tail_reach_ms
from fleetml.timestamps import now_ms

log = logging.getLogger(__name__)


class OnDemandScorer:
    """Per-account windows (LRU) plus the models of this process."""

    def __init__(
        self,
        engine,
        models: ModelSet,
        *,
        max_accounts: int = 2000,
        refresh_s=1.0,
        max_rows: int = 60,
    ):
        self.engine = engine
        self.models = models
        self.max_accounts = int(max_accounts)
        self.refresh_s = float(refresh_s)
        #: at most this many samples the tick has not scored are scored (the tick's own
        #: FLEETML_SCORE_MAX_ROWS, so the answer is what the next tick stores)
        self.max_rows = int(max_rows)
        self._windows: OrderedDict[str, tuple[RawWindow, float, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._kinds: tuple[float, dict] | None = None
        self._features: dict[str, tuple] = {}
        self._answers: dict[str, tuple] = {}

    def _configs(self) -> list:
        """The feature configs of the served models (each family scores with its own)."""
        from fleetml.features.config import FeatureConfig

        configs = []
        for family in ("anomaly", "risk"):
            cfg = getattr(self.models.get(family), "feature_config", None)
            if cfg is not None and cfg not in configs:
                configs.append(cfg)
        return configs or [FeatureConfig()]

    def _read(self, account_id: str, start_ms: int, end_ms: int | None) -> pd.DataFrame:
        from fleetml.store.metrics import read_metrics

        return read_metrics(
            self.engine,
            accounts=[account_id],
            start=pd.Timestamp(int(start_ms), unit="ms", tz="UTC"),
            end=None if end_ms is None else pd.Timestamp(int(end_ms), unit="ms", tz="UTC"),
        )

    def _counters(self) -> set[str]:
        """Metrics the store or a served model knows as cumulative counters (cached briefly)."""
        from fleetml.store.metrics import metric_kinds
        from fleetml.vocab import default_metric_kind

        now = time.monotonic()
        if self._kinds is None or now - self._kinds[0] > 30.0:
            self._kinds = (now, dict(metric_kinds(self.engine)))
        known = dict(self._kinds[1])
        for family in ("anomaly", "risk"):
            known.update(getattr(self.models.get(family), "metric_kinds", {}) or {})
        return {m for m, k in known.items() if str(k or default_metric_kind(m)) == "counter"}

    def _newest(self, account_id: str) -> int | None:
        """Where the account's window ends: its newest scored sample (the tick's table, a key
        lookup), else the newest sample of the whole store (samples are indexed by time)."""
        from fleetml.store.metrics import time_range
        from fleetml.store.predictions import read_latest

        known = read_latest(self.engine, accounts=[account_id])
        if len(known) and known["data_until"].notna().any():
            return int(known["data_until"].max())
        hi = time_range(self.engine)[1]
        return None if hi is None else int(hi.value // 1_000_000)

    def window(self, account_id: str, *, until_ms: int | None = None) -> RawWindow:
        """The account's window, filled or brought up to date from the store (at most every
        ``refresh_s``, or at once when it does not reach ``until_ms``: a sample the tick
        already scored)."""
        with self._lock:
            entry = self._windows.get(account_id)
            if entry is not None:
                self._windows.move_to_end(account_id)
        configs = self._configs()
        reach = max([tail_reach_ms(c) for c in configs] + [86_400_000])
        lags = sorted({lag for c in configs for lag in seasonal_lags_ms(c)})
        if entry is None:
            newest = self._newest(account_id)
            window = RawWindow()
            window.counters = self._counters()
            if newest is not None:
                # an hour more, so a counter's first sample in the window has a rate; and up
                # to the newest stored sample (the tick may not have scored the latest ones)
                window.merge(self._read(account_id, newest - reach - 3_600_000, None))
                for lag in lags:
                    window.merge(
                        self._read(account_id, newest - lag - 3_600_000, newest - lag + 3_600_000)
                    )
            entry = (window, time.monotonic(), newest or 0)
        else:
            window, checked, _ = entry
            code = window.code(account_id)
            behind = (
                until_ms is not None and code is not None and int(window.newest[code]) < until_ms
            )
            if behind or time.monotonic() - checked >= self.refresh_s:
                since = int(window.newest[code]) - 300_000 if code is not None else 0
                fresh = self._read(account_id, max(since, 0), None)
                if len(fresh):
                    # copy on write: other requests may be scoring the cached window now
                    window = window.copy()
                    window.merge(fresh)
                entry = (window, time.monotonic(), entry[2])
        with self._lock:
            self._windows[account_id] = entry
            self._windows.move_to_end(account_id)
            while len(self._windows) > self.max_accounts:
                gone, _ = self._windows.popitem(last=False)
                self._features.pop(gone, None)
                self._answers.pop(gone, None)
        return entry[0]

    def score(self, account_id: str, posted: pd.DataFrame | None = None, *, group=None) -> dict:
        """The account's prediction now (the API's prediction shape, ``on_demand: true``)."""
        from fleetml.features.latest import latest_matrix
        from fleetml.store.predictions import anomaly_states

        # the models of this request, pinned: a champion swapped meanwhile does not mix in
        anomaly, risk = self.models.get("anomaly"), self.models.get("risk")
        # risk's own feature config (it may differ from anomaly's: a --features file)
        config = getattr(risk, "feature_config", None) or self._configs()[-1]
        # what the tick stored for the account, which the anomaly answer continues; the window
        # must hold the row it stored (the window refreshes only every refresh_s otherwise)
        stored = None if anomaly.fallback else anomaly_states(self.engine, accounts=[account_id])
        window = self.window(account_id, until_ms=_stored_until(stored))
        if posted is not None and len(posted):
            window = window.copy()  # posted samples are scored, never kept
            window.merge(posted)
        key = None
        if posted is None:
            # the same window, models and stored state give the same answer: it is kept for
            # refresh_s (the event history risk reads may change without the window changing)
            key = (
                len(window),
                int(window.newest.max(initial=-1)),
                id(config),
                anomaly.version,
                risk.version,
                _stored_key(stored),
                group,
            )
            hit = self._answers.get(account_id)
            if hit is not None and hit[0] == key and time.monotonic() - hit[1] < self.refresh_s:
                return hit[2]
        frame = window.frame(levels=True)
        if not len(frame):
            raise LookupError(f"account {account_id!r} has no stored or posted samples to score")
        frame["account_id"] = frame["account_id"].astype(str)
        kinds = {}
        for m in (anomaly, risk):
            kinds.update(getattr(m, "metric_kinds", {}) or {})
        kinds = window.gauge_kinds(kinds)  # counters are held as their rates
        latest = None
        if not risk.fallback or (not anomaly.fallback and anomaly.feature_config == config):
            # The account's features as of its window (its FeatureState), for risk and for
            # the newest row anomaly scores: computed again only when the window changed or
            # samples were posted. (Anomaly scoring continues the tick's state over the rows
            # it has not scored: see _continued.)
            state = (len(window), int(window.newest.max(initial=-1)), id(config))
            cached = self._features.get(account_id)
            if posted is None and cached is not None and cached[0] == state:
                latest = cached[1]
            else:
                latest = latest_matrix(frame, kinds=kinds, config=config)
                if posted is None:
                    self._features[account_id] = (state, latest)
        data_until = int(frame["ts"].max().value // 1_000_000)
        result = {
            "account_id": account_id,
            "group": group,
            "computed_at": iso(now_ms()),
            "data_until": iso(data_until),
            "stale": False,
            "anomaly": self._anomaly(
                anomaly, risk, frame, window, account_id, kinds, stored, [(config, latest)]
            ),
            "risk": self._risk(
                risk,
                frame,
                # the heuristic reads no features: no event history to read for it
                None if risk.fallback else self._with_history(latest, config, account_id),
                account_id,
            ),
            "fallback": False,
            "on_demand": True,
            "models": {"anomaly": anomaly.version, "risk": risk.version},
        }
        # what answered: a model that raised on this request answers with its heuristic
        answered = result["anomaly"]["model_version"]
        result["models"]["anomaly"] = answered
        result["fallback"] = bool(answered is None or risk.fallback)
        if key is not None:
            self._answers[account_id] = (key, time.monotonic(), result)
        return result

    def _anomaly(
        self, model, risk, frame, window: RawWindow, account_id: str, kinds, stored, built
    ) -> dict:
        if not model.fallback:
            try:
                return self._continued_anomaly(
                    model, risk, window, account_id, kinds, stored, built
                )
            except Exception as exc:  # noqa: BLE001 - this request answers with the heuristic
                # (the tick marks a model failed for the process; one request does not)
                reason = f"on-demand scoring with version {model.version} failed: {exc!r}"
                log.warning("%s: %s", account_id, reason[:500])
                model = heuristic_model("anomaly", reason[:500])
        if model.fallback:
            out = model.predict_latest(frame)
            row = out.iloc[-1]
            top = [m for m in str(row["top_metrics"]).split(";") if m]
            return {
                "score": float(row["score"]),
                "calibrated_score": float(row["score"]),
                "is_anomaly": bool(row["flag"]),
                "top_metrics": top,
                "model_version": None,
            }

    def _continued_anomaly(self, model, risk, window, account_id, kinds, stored, built) -> dict:
        scorer, counts = self._continued(model, risk, window, account_id, stored)
        built = [(c, m) for c, m in built if m is not None]
        out = scorer.score(counts, kinds=kinds, groups={}, families=("anomaly",), latest=built)
        row = out.iloc[0]
        detail = row["detail"] if isinstance(row["detail"], dict) else {}
        score = float(row["score"])
        return {
            "score": score,
            "calibrated_score": float(detail.get("calibrated_score", score)),
            "is_anomaly": bool(row["flag"]),
            "top_metrics": [m for m in str(row["top_metrics"]).split(";") if m],
            "model_version": model.version,
        }

    def _continued(self, model, risk, window: RawWindow, account_id: str, stored):
        """A live scorer over the account's window that continues the tick's stored state for
        it (the rule's run, the habituation's maximum, the calibration context), and the rows
        to score: the samples the tick has not scored yet, else its newest sample again; an
        account the tick never scored is scored over its last ``context_rows + 1`` samples,
        so its newest row still has its calibration context."""
        from fleetml.serving.live import LiveScorer
        from fleetml.store.predictions import flagged_runs

        context = int(model.context_rows) + 1
        scorer = LiveScorer(_Pinned(model, risk), max_rows=max(self.max_rows, context))
        scorer.window = window
        code = window.code(account_id)
        held = len(window.rows_of([code]))
        if stored.flagged and not len(stored.rules):
            # a prediction stored before the rule's state was: its run of flagged rows
            runs = flagged_runs(self.engine, accounts=[account_id])
            scorer.restore_runs(runs[runs["family"] == "anomaly"])
        scorer.restore_rule(stored.rules)
        scorer.restore_habituation(stored.maxima)
        scorer.restore_context(stored.contexts)
        until = _stored_until(stored)
        counts = np.zeros(len(window.ids), dtype=np.int64)
        if until is not None:
            newer = window.count_between([code], [until], [int(window.newest[code]) + 1])
            counts[code] = max(int(newer[0]), 1)
        else:
            counts[code] = min(held, context)
        return scorer, counts

    def _with_history(self, latest, config, account_id: str):
        """``latest`` plus the event-history columns (the account's stored fault and
        enforcement events, and its master's family's when the config asks for the master's
        state), when the feature config asks for them. The group's count needs the whole
        group and is left out (NaN), as peer features are here."""
        from types import SimpleNamespace

        from fleetml.features.history import history_lookback_ms, history_matrix
        from fleetml.serving.risk import read_history_events

        reach = history_lookback_ms(config) if latest is not None else 0
        if reach <= 0:
            return latest
        until = int(np.max(latest.ts_ms))
        masters, family = None, [account_id]
        if config.master_windows:
            from fleetml.services.data import account_masters

            masters = account_masters(self.engine)
            head = masters.get(account_id, account_id)
            family = [head, *(a for a, m in masters.items() if m == head)]
        events = read_history_events(
            self.engine,
            pd.Timestamp(until - reach, unit="ms", tz="UTC"),
            pd.Timestamp(until, unit="ms", tz="UTC"),
            accounts=sorted(set(family)),
        )
        ids = np.full(len(latest.ts_ms), account_id, dtype=object)
        cols, hist = history_matrix(
            latest.ts_ms, ids, events, config=config, masters=masters or None
        )
        return SimpleNamespace(
            columns=list(latest.columns) + cols,
            values=np.hstack([latest.values, hist]) if cols else latest.values,
            ts_ms=latest.ts_ms,
        )

    @staticmethod
    def _risk(model, frame, latest, account_id) -> list[dict]:
        if model.fallback:
            out = model.predict_latest(frame)
            return [
                {
                    "horizon": r.horizon,
                    "risk": float(r.score),
                    "at_risk": bool(r.flag),
                    "model_version": None,
                }
                for r in out.itertuples(index=False)
            ]
        X = select_columns(latest.values, latest.columns, model.feature_columns)
        wide = model.risk_of([account_id], latest.ts_ms, X)
        items = []
        for h in model.horizons:
            value = float(wide[h][0])
            item = {
                "horizon": h,
                "risk": value,
                "at_risk": bool(value >= model.thresholds[h]),
                "model_version": model.version,
            }
            if f"enforcement_{h}" in wide:
                item["enforcement_risk"] = float(wide[f"enforcement_{h}"][0])
            items.append(item)
        return items


def _stored_key(stored) -> tuple | None:
    """A comparable form of an :class:`~fleetml.store.predictions.AnomalyState`."""
    if stored is None:
        return None
    return tuple(
        tuple(
            tuple(tuple(v) if isinstance(v, list) else v for v in row)
            for row in frame.itertuples(index=False, name=None)
        )
        for frame in (stored.maxima, stored.contexts, stored.rules)
    ) + (stored.flagged,)


def _stored_until(stored) -> int | None:
    """The time of the newest row the tick stored anomaly state for (None: none)."""
    until = None if stored is None else stored.until()
    return int(until.max()) if until is not None and len(until) else None


class _Pinned:
    """The models one on-demand request captured, as a :class:`ModelSet` to the live scorer:
    a champion swapped meanwhile does not mix in, and a model that raises is not marked failed
    for the whole process (it raises here, and the request answers with the heuristic)."""

    def __init__(self, anomaly, risk):
        self._models = {"anomaly": anomaly, "risk": risk}

    def get(self, family: str):
        return self._models[family]

    def mark_failed(self, family: str, exc: BaseException):
        raise exc
