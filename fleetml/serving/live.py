"""Scoring the fleet tick after tick, with per-account state carried between ticks.

:class:`LiveScorer` owns the :class:`~fleetml.serving.window.RawWindow` of raw samples and, per
account, what makes a tick's answer equal to scoring the whole history at once:

* the anomaly calibration's context: the account's last ``short_window - 1`` raw scores, so the
  likelihood's short average spans ticks (reset when the anomaly champion changes, since raw
  scores of two forests are not comparable); it is stored with each anomaly prediction
  (``detail.context_raw``, with the row's own raw score) and restored after a restart, so the
  first tick of a new process calibrates as the old one would have;
* the alert rule's state: the run of consecutive scores over the threshold (minimum duration),
  whether the current episode was kept, and the samples since the last kept onset (suppression);
  stored with each anomaly prediction (``detail.rule_before`` and ``detail.rule_after``) and
  restored after a restart, so a cron of one-shot ticks pages as a worker does;
* per risk horizon, the run of consecutive at-risk data points (the alerts' minimum duration);
* the habituation's decaying maximum of the account's calibrated scores (one float), when the
  anomaly champion habituates its reported score; it is stored with each anomaly prediction
  (``detail.habituation_max``) and restored after a restart.

A tick scores every account with samples newer than its previous newest one: up to
``max_rows`` of its newest samples for anomaly (older ones of a long backlog only serve as
feature history), its newest sample for risk.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fleetml.features.config import FeatureConfig
from fleetml.serving.base import PREDICTION_COLUMNS
from fleetml.serving.models import ModelSet, select_columns
from fleetml.serving.window import RawWindow, sampling_step_ms, seasonal_lags_ms, tail_reach_ms

_BIG = np.int64(1) << 60


def _for_config(feats: list, config):
    for cfg, data in feats:  # FeatureConfig holds a dict: compared, not hashed
        if cfg == config:
            return data
    raise KeyError("no features built for this feature config")


def _grow(arr: np.ndarray, n: int, fill) -> np.ndarray:
    if arr.shape[0] >= n:
        return arr
    pad_shape = (n - arr.shape[0],) + arr.shape[1:]
    return np.concatenate([arr, np.full(pad_shape, fill, dtype=arr.dtype)])


def _trailing_valid(values: np.ndarray) -> np.ndarray:
    """Per row, how many of its last entries in a row are not NaN (a context is
    right-aligned: its valid scores are the newest ones)."""
    if not values.shape[1]:
        return np.zeros(values.shape[0], dtype=np.int64)
    missing = np.isnan(values[:, ::-1])
    return np.where(missing.any(axis=1), missing.argmax(axis=1), values.shape[1]).astype(np.int64)


class LiveScorer:
    """Per-account serving state plus the scoring of one tick (see the module docstring)."""

    def __init__(self, models: ModelSet, *, max_rows: int = 10, threads: int = 1):
        self.models = models
        self.threads = int(threads)
        self.window = RawWindow()
        self.max_rows = int(max_rows)
        self._anomaly_version: object = "unset"
        self.ctx_raw = np.zeros((0, 0))
        self.ctx_n = np.zeros(0, dtype=np.int64)
        self.run = np.zeros(0, dtype=np.int64)
        self.since = np.zeros(0, dtype=np.int64)
        self.kept = np.zeros(0, dtype=bool)
        self.hab_max = np.zeros(0)  # M after the account's last scored row
        self.hab_prev = np.zeros(0)  # M before that row
        self.hab_until = np.zeros(0, dtype=np.int64)  # that row's time (-1: none)
        # a calibration context read back from the store (restore_context): the raw scores
        # before the stored row (used when that row itself is scored again) and that row's
        # time (-1: the context in ctx_raw is this process's own)
        self.ctx_before = np.zeros((0, 0))
        self.ctx_until = np.zeros(0, dtype=np.int64)
        # the alert rule's state read back from the store (restore_rule): before the stored row
        # (run, since, kept; used when that row itself is scored again) and that row's time
        self.rule_before = np.zeros((0, 3), dtype=np.int64)
        self.rule_until = np.zeros(0, dtype=np.int64)
        #: the rule's state before each scored account's newest row, kept by _rule for storing
        self._rule_prev = np.zeros((0, 3), dtype=np.int64)
        self.risk_run: dict[str, np.ndarray] = {}
        self.step_ms: int | None = None
        self._trimmed_at = 0

    # ------------------------------------------------------------------ what to keep
    def feature_configs(self) -> list[FeatureConfig]:
        configs = []
        for family in ("anomaly", "risk"):
            cfg = getattr(self.models.get(family), "feature_config", None)
            if cfg is not None and cfg not in configs:
                configs.append(cfg)
        return configs or [FeatureConfig()]

    def reach_ms(self) -> int:
        """How far back from each account's newest sample the window must reach."""
        reach = max(tail_reach_ms(c) for c in self.feature_configs())
        return max(reach, 86_400_000)  # the fallback heuristic's day of history

    def lags_ms(self) -> list[int]:
        return sorted({lag for c in self.feature_configs() for lag in seasonal_lags_ms(c)})

    def pad_ms(self) -> int:
        """Half-width of the slice kept around each seasonal lag: one sampling step (features
        take the sample nearest the lag within half a step), at least a minute."""
        tol = [
            pd.Timedelta(c.seasonal_tolerance) / pd.Timedelta(milliseconds=1)
            for c in self.feature_configs()
            if c.seasonal_tolerance
        ]
        step = self.step_ms or sampling_step_ms(self.window)
        return int(max([step, 60_000] + tol))

    def trim(self, *, every: float = 0.0) -> int:
        """Drop what no feature reaches; with ``every`` only once the window grew by that share
        since the last trim (a trim copies every row: amortised, it costs little)."""
        if every and len(self.window) <= (1.0 + every) * self._trimmed_at:
            return 0
        dropped = self.window.trim(
            reach_ms=self.reach_ms(), lags_ms=self.lags_ms(), pad_ms=self.pad_ms()
        )
        self._trimmed_at = len(self.window)
        return dropped

    # ------------------------------------------------------------------ state arrays
    def _ensure(self, n: int, context: int) -> None:
        if self.ctx_raw.shape[1] != context:
            self.ctx_raw = np.full((self.ctx_raw.shape[0], context), np.nan)
            self.ctx_n = np.zeros_like(self.ctx_n)
            self.ctx_before = np.full((self.ctx_before.shape[0], context), np.nan)
            self.ctx_until = np.full_like(self.ctx_until, -1)
        self.ctx_raw = _grow(self.ctx_raw, n, np.nan)
        self.ctx_n = _grow(self.ctx_n, n, 0)
        self.ctx_before = _grow(self.ctx_before, n, np.nan)
        self.ctx_until = _grow(self.ctx_until, n, -1)
        self.rule_before = _grow(self.rule_before, n, 0)
        self.rule_until = _grow(self.rule_until, n, -1)
        self.run = _grow(self.run, n, 0)
        self.since = _grow(self.since, n, _BIG)
        self.kept = _grow(self.kept, n, False)
        self.hab_max = _grow(self.hab_max, n, 0.0)
        self.hab_prev = _grow(self.hab_prev, n, 0.0)
        self.hab_until = _grow(self.hab_until, n, -1)
        for h in self.risk_run:
            self.risk_run[h] = _grow(self.risk_run[h], n, 0)

    def restore_runs(self, runs: pd.DataFrame) -> None:
        """Seed the run counters after a restart from stored history (``account_id``, ``family``,
        ``horizon``, ``run``, ``flag``): the rule and the alerts' minimum duration continue."""
        if not len(runs):
            return
        codes = self.window.codes_of(runs["account_id"])
        self._ensure(len(self.window.ids), self.ctx_raw.shape[1])
        fam = runs["family"].to_numpy()
        run = runs["run"].to_numpy(dtype=np.int64)
        anomaly = fam == "anomaly"
        self.run[codes[anomaly]] = run[anomaly]
        self.kept[codes[anomaly]] = runs["flag"].to_numpy(dtype=bool)[anomaly]
        for h in pd.unique(runs.loc[fam == "risk", "horizon"]):
            sel = (fam == "risk") & (runs["horizon"].to_numpy() == h)
            arr = _grow(self.risk_run.get(h, np.zeros(0, np.int64)), len(self.window.ids), 0)
            arr[codes[sel]] = run[sel]
            self.risk_run[h] = arr

    def restore_habituation(self, maxima: pd.DataFrame) -> None:
        """Seed each account's habituation state after a restart from its latest stored anomaly
        prediction (``account_id``, ``max``: M after that row, ``prev``: M before it,
        ``until``: its time in epoch ms), so re-scoring that row does not count it twice."""
        if maxima is None or not len(maxima):
            return
        codes = self.window.codes_of(maxima["account_id"])
        self._ensure(len(self.window.ids), self.ctx_raw.shape[1])
        self.hab_max[codes] = np.nan_to_num(maxima["max"].to_numpy(dtype=float))
        self.hab_prev[codes] = np.nan_to_num(maxima["prev"].to_numpy(dtype=float))
        self.hab_until[codes] = maxima["until"].to_numpy(dtype=np.int64)

    def restore_context(self, contexts: pd.DataFrame) -> None:
        """Seed each account's calibration context after a restart from its latest stored
        anomaly prediction (``account_id``, ``version``: the anomaly model that scored it,
        ``until``: the row's time in epoch ms, ``raw``: the ``context_rows`` raw scores before
        that row, then the row's own), so the first row this process scores is calibrated over
        the same earlier rows as in the process that stored it. A context of another model
        version is ignored (raw scores of two forests are not comparable)."""
        model = self.models.get("anomaly")
        C = int(getattr(model, "context_rows", 0) or 0)
        if model.fallback or not C or contexts is None or not len(contexts):
            return
        keep = [
            i
            for i, (version, raw) in enumerate(
                zip(contexts["version"].tolist(), contexts["raw"].tolist(), strict=True)
            )
            if version == model.version and raw is not None and len(raw) == C + 1
        ]
        if not keep:
            return
        part = contexts.iloc[keep]
        codes = self.window.codes_of(part["account_id"])
        self._ensure(len(self.window.ids), C)
        if self._anomaly_version != model.version:  # what this process held is of another model
            self.ctx_n[:] = 0
            self._anomaly_version = model.version
        raw = np.array([[np.nan if v is None else float(v) for v in r] for r in part["raw"]])
        self.ctx_raw[codes] = raw[:, 1:]
        self.ctx_n[codes] = _trailing_valid(raw[:, 1:])
        self.ctx_before[codes] = raw[:, :C]
        self.ctx_until[codes] = part["until"].to_numpy(dtype=np.int64)

    def restore_rule(self, states: pd.DataFrame) -> None:
        """Seed the anomaly alert rule's state after a restart from each account's latest
        stored anomaly prediction (``account_id``, ``until``: the row's time, ``before`` and
        ``after``: ``[run, since, kept]`` before and after that row): the run of rows above the
        threshold (also one shorter than the minimum duration), the rows since the last episode
        (suppression) and whether the episode was kept, so a new process pages as the old one
        would have. Overrides what :meth:`restore_runs` read for the anomaly family."""
        if states is None or not len(states):
            return
        codes = self.window.codes_of(states["account_id"])
        self._ensure(len(self.window.ids), self.ctx_raw.shape[1])
        after = np.array(states["after"].tolist(), dtype=np.int64).reshape(-1, 3)
        self.run[codes], self.since[codes] = after[:, 0], after[:, 1]
        self.kept[codes] = after[:, 2].astype(bool)
        self.rule_before[codes] = np.array(states["before"].tolist(), dtype=np.int64).reshape(-1, 3)
        self.rule_until[codes] = states["until"].to_numpy(dtype=np.int64)

    # ------------------------------------------------------------------ a tick
    def score(
        self,
        counts: np.ndarray,
        *,
        kinds: dict[str, str],
        groups: dict[str, str],
        faults: pd.DataFrame | None = None,
        events: pd.DataFrame | None = None,
        masters: dict[str, str] | None = None,
        families: tuple[str, ...] = ("anomaly", "risk"),
        latest: list | None = None,
    ) -> pd.DataFrame:
        """Score the accounts with ``counts[code] > 0`` new samples; one row per (account,
        family, horizon) in :data:`PREDICTION_COLUMNS` (``ts`` of the newest sample scored as
        ``data_until``, epoch ms), for the model ``families`` asked for. ``latest``:
        ``[(config, LatestMatrix)]`` the caller already built over the same window frame,
        kinds and groups (used instead of building them again).

        ``events``: stored fault and enforcement events reaching back
        :meth:`history_lookback_ms` before the newest sample, for the models whose features
        include event history (training built them from the same events); ``masters``:
        servant -> master from the registry, for the master's-state columns."""
        codes = np.flatnonzero(counts > 0)
        if not codes.size:
            return pd.DataFrame(columns=list(PREDICTION_COLUMNS))
        if self.step_ms is None:
            self.step_ms = sampling_step_ms(self.window)
        counts = np.minimum(counts[codes], self.max_rows)
        anomaly = self.models.get("anomaly")
        risk = self.models.get("risk")
        self._ensure(len(self.window.ids), getattr(anomaly, "context_rows", 0))
        feats = self._features(
            codes,
            counts,
            kinds,
            groups,
            anomaly if "anomaly" in families else None,
            risk if "risk" in families else None,
            events,
            masters,
            latest,
        )
        parts = []
        for family, model in (("anomaly", anomaly), ("risk", risk)):
            if family not in families:
                continue
            try:
                parts.append(self._score_family(family, model, codes, counts, feats, faults))
            except Exception as exc:  # noqa: BLE001 - a broken model degrades, never fails
                fallback = self.models.mark_failed(family, exc)
                parts.append(self._score_family(family, fallback, codes, counts, feats, faults))
        return pd.concat(parts, ignore_index=True)

    def _score_family(self, family, model, codes, counts, feats, faults) -> pd.DataFrame:
        if family == "anomaly":
            if model.fallback:
                return self._anomaly_fallback(model, codes)
            return self._anomaly(model, codes, counts, feats)
        if model.fallback:
            return self._risk_fallback(model, codes, faults)
        return self._risk(model, codes, feats)

    # ------------------------------------------------------------------ features
    def history_lookback_ms(self) -> int:
        """How far back :meth:`score` needs events (0: no served model uses event history)."""
        from fleetml.features.history import history_lookback_ms

        return max([history_lookback_ms(c) for c in self.feature_configs()] or [0])

    def _features(
        self, codes, counts, kinds, groups, anomaly, risk, events=None, masters=None, given=None
    ) -> dict:
        """Feature rows per distinct feature config: ``[(config, (columns, values, row_code,
        row_ts, newest_mask))]`` with the scored rows of each account in time order."""
        from fleetml.features.builder import feature_columns
        from fleetml.features.history import history_matrix
        from fleetml.features.latest import latest_matrix

        out: list = []
        models = [m for m in (anomaly, risk) if m is not None and not m.fallback]
        configs = []
        for m in models:
            if m.feature_config not in configs:
                configs.append(m.feature_config)
        if not configs:
            return out
        kinds = {**kinds, **{k: v for m in models for k, v in m.metric_kinds.items()}}
        kinds = self.window.gauge_kinds(kinds)  # counters are held as their rates
        frame = self._scoring_frame(codes, groups)
        multi = codes[counts > 1]
        for cfg in configs:
            built = [m for c, m in (given or []) if c == cfg]
            latest = built[0] if built else None
            if latest is None:
                latest = latest_matrix(
                    frame, kinds=kinds, groups=groups or None, config=cfg, threads=self.threads
                )
            where = {a: i for i, a in enumerate(latest.account_id)}
            ids = np.asarray(self.window.ids, dtype=object)
            take = np.array([where[ids[c]] for c in codes], dtype=np.int64)
            cols = latest.columns
            values = latest.values[take]
            row_code = codes.copy()
            row_ts = latest.ts_ms[take]
            newest = np.ones(codes.size, dtype=bool)
            if multi.size:
                earlier = self._earlier_rows(frame, multi, counts[counts > 1], kinds, groups, cfg)
                if earlier is not None:
                    e_codes, e_ts, e_feats = earlier
                    e_vals = select_columns(
                        e_feats[feature_columns(e_feats)].to_numpy(dtype=float),
                        feature_columns(e_feats),
                        cols,
                    )
                    values = np.concatenate([e_vals, values])
                    row_code = np.concatenate([e_codes, row_code])
                    row_ts = np.concatenate([e_ts, row_ts])
                    newest = np.concatenate([np.zeros(e_codes.size, bool), newest])
                    order = np.lexsort((row_ts, row_code))
                    values, row_code, row_ts, newest = (
                        values[order],
                        row_code[order],
                        row_ts[order],
                        newest[order],
                    )
            if events is not None and cfg.fault_history:
                # the same event-history columns training built, at each scored row's time
                hist_cols, hist = history_matrix(
                    row_ts,
                    ids[row_code].astype(str),
                    events,
                    groups=groups or None,
                    config=cfg,
                    masters=masters or None,
                )
                cols = list(cols) + hist_cols
                values = np.hstack([values, hist]) if hist_cols else values
            out.append((cfg, (cols, values, row_code, row_ts, newest)))
        return out

    def _scoring_frame(self, codes: np.ndarray, groups: dict[str, str]) -> pd.DataFrame:
        """The window's rows of the scored accounts and of their group peers (peer features
        compare an account with its group at the same instant); all rows when most are scored."""
        held = int(np.count_nonzero(self.window.newest >= 0))
        if codes.size >= 0.6 * held:
            return self.window.frame(levels=True)
        ids = np.asarray(self.window.ids, dtype=object)
        wanted = set(codes.tolist())
        if groups:
            their = {groups.get(a) for a in ids[codes]} - {None}
            for acc, grp in groups.items():
                if grp in their:
                    code = self.window.code(acc)
                    if code is not None:
                        wanted.add(code)
        return self.window.frame(self.window.rows_of(sorted(wanted)), levels=True)

    def _earlier_rows(self, frame, multi, counts, kinds, groups, cfg):
        """Features of the new samples before each account's newest one (accounts with a
        backlog), built over those accounts and their group peers."""
        from fleetml.features.builder import build_features

        ids = np.asarray(self.window.ids, dtype=object)
        wanted = set(ids[multi])
        if groups:
            their = {groups.get(a) for a in wanted} - {None}
            wanted |= {a for a, g in groups.items() if g in their}
        sub_codes = [self.window.code(a) for a in wanted if self.window.code(a) is not None]
        rows = self.window.rows_of(sub_codes)
        pick = self.window.newest_rows(multi, counts)
        # positions of the picked rows inside the sub-frame, minus each account's newest
        pos_in_sub = np.searchsorted(rows, pick)
        last = np.r_[np.diff(self.window.account_codes[pick]) != 0, True]
        pos = pos_in_sub[~last]
        if not pos.size:
            return None
        sub = self.window.frame(rows, levels=True)
        sub["account_id"] = sub["account_id"].astype(str)
        feats = build_features(sub, kinds=kinds, groups=groups or None, config=cfg, rows=pos)
        e_codes = self.window.account_codes[rows[pos]].astype(np.int64)
        e_ts = self.window.ts_ms[rows[pos]].astype(np.int64)
        return e_codes, e_ts, feats

    # ------------------------------------------------------------------ anomaly
    def _anomaly(self, model, codes, counts, feats) -> pd.DataFrame:
        if self._anomaly_version != model.version:
            self.ctx_n[:] = 0  # raw scores of another forest are not comparable
            self.ctx_until[:] = -1
            self._anomaly_version = model.version
        cols, values, row_code, row_ts, newest = _for_config(feats, model.feature_config)
        X = select_columns(values, cols, model.feature_columns)
        ids = np.asarray(self.window.ids, dtype=object)
        raw = model.raw_scores(X, ids[row_code])
        C = model.context_rows
        # one block per account: its context raw scores, then its new rows, in time order
        n_new = np.bincount(np.searchsorted(codes, row_code), minlength=codes.size)
        ctx_n = np.minimum(self.ctx_n[codes], C)
        ctx_vals = self.ctx_raw[codes] if C else np.zeros((codes.size, 0))
        if C:
            ctx_n, ctx_vals = self._restored_context(codes, row_ts, n_new, ctx_n, ctx_vals)
        width = C + int(n_new.max())
        block = np.full((codes.size, width), np.nan)
        valid = np.zeros((codes.size, width), dtype=bool)
        if C:
            block[:, :C] = ctx_vals
            valid[:, :C] = np.arange(C)[None, :] >= (C - ctx_n)[:, None]
        start = np.r_[0, np.cumsum(n_new)[:-1]]
        j = np.arange(raw.size) - np.repeat(start, n_new)
        acc_i = np.repeat(np.arange(codes.size), n_new)
        block[acc_i, C + j] = raw
        valid[acc_i, C + j] = True
        flat_raw = block[valid]
        flat_acc = np.repeat(ids[codes], valid.sum(axis=1))
        is_new = np.zeros(block.shape, dtype=bool)
        is_new[acc_i, C + j] = True
        X_block = np.full((flat_raw.size, X.shape[1]), np.nan)
        X_block[is_new[valid]] = X
        calibrated = model.calibrate(flat_raw, flat_acc, X_block)[is_new[valid]]
        # keep the last C raw scores of each account as the next tick's context
        if C:
            lengths = valid.sum(axis=1)
            # valid entries first (stable), then the last C of them, right-aligned
            order = np.argsort(~valid, axis=1, kind="stable")
            packed = np.take_along_axis(np.where(valid, block, np.nan), order, axis=1)
            idx = lengths[:, None] - C + np.arange(C)[None, :]
            tail = np.take_along_axis(packed, np.clip(idx, 0, width - 1), axis=1)
            self.ctx_raw[codes] = np.where(idx >= 0, tail, np.nan)
            self.ctx_n[codes] = np.minimum(lengths, C)
            # stored with the prediction (restore_context): the newest row's context, then its
            # own raw score, so a restart can score that row again or the next one
            idx = lengths[:, None] - (C + 1) + np.arange(C + 1)[None, :]
            held = np.take_along_axis(packed, np.clip(idx, 0, width - 1), axis=1)
            stored_ctx = np.where(idx >= 0, held, np.nan).tolist()
        self._restored_rule(codes, row_ts, n_new)
        flags, onset_any = self._rule(model.rule, codes, n_new, acc_i, j, calibrated)
        last = newest
        end = np.flatnonzero(last)
        top = model.top_metrics(X[last], ids[row_code[last]], flags[last])
        reported = calibrated
        # stored with the prediction (restore_rule): the rule's state before and after the row
        after = np.stack([self.run[codes], self.since[codes], self.kept[codes]], axis=1)
        detail = [
            {
                "calibrated_score": float(c),
                "rule_before": [int(v) for v in b],
                "rule_after": [int(v) for v in a],
            }
            for c, b, a in zip(
                calibrated[end].tolist(), self._rule_prev.tolist(), after.tolist(), strict=True
            )
        ]
        if C:
            for d, ctx in zip(detail, stored_ctx, strict=True):
                d["context_raw"] = [None if v != v else float(v) for v in ctx]
        if model.habituation is not None:  # the rule above ran on the calibrated score
            first = np.r_[True, acc_i[1:] != acc_i[:-1]]
            # an account's first row here may be the row its maximum already holds (re-scored
            # after a restart): start from the maximum before that row, so it is not counted
            # twice
            until = self.hab_until[codes]
            again = row_ts[first] <= until
            start = np.where(again, self.hab_prev[codes], self.hab_max[codes])
            # samples held between the maximum's row and this first one were never scored here
            # (a backlog after a restart only serves as feature history): they still fade it,
            # as they do in a batch score, which counts rows (a gap without samples does not)
            skipped = self.window.count_between(codes, until, row_ts[first])
            skipped = np.where((until >= 0) & ~again, skipped, 0)
            start = start * 2.0 ** (-skipped / model.habituation.half_life)
            reported, m = model.habituation.apply(calibrated, first, start_max=start[acc_i])
            before = np.where(first[end], start, m[np.maximum(end - 1, 0)])
            self.hab_prev[codes], self.hab_max[codes] = before, m[end]
            self.hab_until[codes] = row_ts[end]
            habituation = [
                {
                    "calibrated_score": float(c),
                    "habituation_max": float(x),
                    "habituation_prev": float(p),
                    "habituation_until": int(t),
                }
                for c, x, p, t in zip(
                    calibrated[end].tolist(),
                    m[end].tolist(),
                    before.tolist(),
                    row_ts[end].tolist(),
                    strict=True,
                )
            ]
            detail = [{**d, **h} for d, h in zip(detail, habituation, strict=True)]
        return pd.DataFrame(
            {
                "account_id": ids[codes].astype(str),
                "family": "anomaly",
                "horizon": "",
                "score": reported[last],
                "flag": flags[last] | onset_any,
                "run": self.run[codes],
                "data_until": row_ts[last],
                "model_version": model.version,
                "fallback": False,
                "top_metrics": top,
                "detail": detail,
            }
        )

    def _restored_context(self, codes, row_ts, n_new, ctx_n, ctx_vals):
        """The context of accounts whose context was read back from the store: the stored
        row's own context when that row is scored again, the one after it when the first row
        scored is the next held sample, and none when samples between were never scored here
        (their raw scores are unknown). Used once: later ticks carry their own context."""
        until = self.ctx_until[codes]
        restored = until >= 0
        if not restored.any():
            return ctx_n, ctx_vals
        first_ts = row_ts[np.r_[0, np.cumsum(n_new)[:-1]]]
        again = restored & (first_ts == until)
        gap = self.window.count_between(codes, until, first_ts)
        lost = restored & ((first_ts < until) | ((first_ts > until) & (gap > 0)))
        ctx_vals = ctx_vals.copy()
        ctx_vals[again] = self.ctx_before[codes[again]]
        ctx_n = np.where(again, _trailing_valid(ctx_vals), np.where(lost, 0, ctx_n))
        self.ctx_until[codes] = -1
        return ctx_n, ctx_vals

    def _rule(self, rule, codes, n_new, acc_i, j, scores):
        """The alert rule over each account's new scores, continuing its state."""
        md = max(int(rule.min_duration), 1)
        supp = int(rule.suppression)
        flags = np.zeros(scores.size, dtype=bool)
        onset_any = np.zeros(codes.size, dtype=bool)
        run, since, kept = self.run[codes], self.since[codes], self.kept[codes]
        prev = np.zeros((codes.size, 3), dtype=np.int64)
        for step in range(int(n_new.max())):
            rows = np.flatnonzero(j == step)
            a = acc_i[rows]
            s = scores[rows]
            last = a[n_new[a] - 1 == step]  # accounts whose newest row this step scores
            prev[last] = np.stack([run[last], since[last], kept[last]], axis=1)
            above = np.nan_to_num(s, nan=-np.inf) >= rule.threshold
            prev_cand = run[a] >= md
            run[a] = np.where(above, run[a] + 1, 0)
            cand = run[a] >= md
            onset = cand & ~prev_cand
            # rows since the account's last episode row (kept or not), as AlertRule counts
            # them: an onset sooner than ``suppression`` quiet rows continues that incident
            since[a] = np.minimum(since[a] + 1, _BIG)
            keep = onset & ((since[a] > supp) | (supp <= 0))
            since[a] = np.where(cand, 0, since[a])
            kept[a] = np.where(onset, keep, kept[a])
            flags[rows] = cand & kept[a]
            onset_any[a] |= keep
        self.run[codes], self.since[codes], self.kept[codes] = run, since, kept
        self._rule_prev = prev
        return flags, onset_any

    def _restored_rule(self, codes, row_ts, n_new) -> None:
        """Accounts whose rule state was read back from the store and whose stored row is
        scored again start from the state before that row (used once, as the context is)."""
        until = self.rule_until[codes]
        restored = until >= 0
        if not restored.any():
            return
        first_ts = row_ts[np.r_[0, np.cumsum(n_new)[:-1]]]
        again = codes[restored & (first_ts == until)]
        before = self.rule_before[again]
        self.run[again], self.since[again] = before[:, 0], before[:, 1]
        self.kept[again] = before[:, 2].astype(bool)
        self.rule_until[codes] = -1

    def _anomaly_fallback(self, model, codes) -> pd.DataFrame:
        frame = self.window.frame(self.window.rows_of(codes), levels=True)
        frame["account_id"] = frame["account_id"].astype(str)
        out = model.predict_latest(frame)
        ids = np.asarray(self.window.ids, dtype=object)
        out = out.set_index("account_id").reindex(ids[codes].astype(str)).reset_index()
        flag = out["flag"].fillna(False).to_numpy(dtype=bool)
        self.run[codes] = np.where(flag, self.run[codes] + 1, 0)
        return pd.DataFrame(
            {
                "account_id": out["account_id"].to_numpy(),
                "family": "anomaly",
                "horizon": "",
                "score": out["score"].to_numpy(dtype=float),
                "flag": flag,
                "run": self.run[codes],
                "data_until": self.window.newest[codes],
                "model_version": None,
                "fallback": True,
                "top_metrics": out["top_metrics"].fillna("").to_numpy(),
                # the heuristic does not habituate: the model's state is kept as it was, so a
                # restart while the model is degraded does not lose it
                "detail": self._habituation_detail(codes),
            }
        )

    def _habituation_detail(self, codes) -> list:
        """Each account's habituation state as stored detail (None where it has none)."""
        return [
            None
            if until < 0
            else {
                "habituation_max": float(m),
                "habituation_prev": float(p),
                "habituation_until": int(until),
            }
            for m, p, until in zip(
                self.hab_max[codes].tolist(),
                self.hab_prev[codes].tolist(),
                self.hab_until[codes].tolist(),
                strict=True,
            )
        ]

    # ------------------------------------------------------------------ risk
    def _risk(self, model, codes, feats) -> pd.DataFrame:
        cols, values, row_code, row_ts, newest = _for_config(feats, model.feature_config)
        X = select_columns(values[newest], cols, model.feature_columns)
        ids = np.asarray(self.window.ids, dtype=object)[codes]
        wide = model.risk_of(ids, row_ts[newest], X)
        parts = []
        for h in model.horizons:
            risk = np.asarray(wide[h], dtype=float)
            at_risk = risk >= model.thresholds[h]
            run = self._risk_run(h, codes, at_risk)
            detail = None
            if f"enforcement_{h}" in wide:
                enf = np.asarray(wide[f"enforcement_{h}"], dtype=float)
                detail = [{"enforcement_risk": round(float(v), 6)} for v in enf]
            parts.append(
                pd.DataFrame(
                    {
                        "account_id": ids.astype(str),
                        "family": "risk",
                        "horizon": h,
                        "score": risk,
                        "flag": at_risk,
                        "run": run,
                        "data_until": row_ts[newest],
                        "model_version": model.version,
                        "fallback": False,
                        "top_metrics": "",
                        "detail": detail,
                    }
                )
            )
        return pd.concat(parts, ignore_index=True)

    def _risk_run(self, h, codes, at_risk) -> np.ndarray:
        arr = _grow(self.risk_run.get(h, np.zeros(0, np.int64)), len(self.window.ids), 0)
        arr[codes] = np.where(at_risk, arr[codes] + 1, 0)
        self.risk_run[h] = arr
        return arr[codes]

    def _risk_fallback(self, model, codes, faults) -> pd.DataFrame:
        rows = self.window.newest_rows(codes, np.ones(codes.size, dtype=np.int64))
        frame = self.window.frame(rows, levels=True)
        frame["account_id"] = frame["account_id"].astype(str)
        out = model.predict_latest(frame, faults)
        parts = []
        ids = np.asarray(self.window.ids, dtype=object)[codes].astype(str)
        for h in model.horizons:
            part = out[out["horizon"] == h].set_index("account_id").reindex(ids)
            flag = part["flag"].fillna(False).to_numpy(dtype=bool)
            parts.append(
                pd.DataFrame(
                    {
                        "account_id": ids,
                        "family": "risk",
                        "horizon": h,
                        "score": part["score"].to_numpy(dtype=float),
                        "flag": flag,
                        "run": self._risk_run(h, codes, flag),
                        "data_until": self.window.newest[codes],
                        "model_version": None,
                        "fallback": True,
                        "top_metrics": "",
                        "detail": None,
                    }
                )
            )
        return pd.concat(parts, ignore_index=True)
