"""Drift of a champion's own input features: the PSI of every feature column it scores on.

The per-metric check (:func:`fleetml.services.recommend.family_drift`) compares raw metrics; a
model sees derived features (windows, rates of change, seasonal residuals, peer z-scores,
ratios), and those can move while the metrics they come from look stable, or the other way round.
:func:`feature_drift` rebuilds the champion's features with the bundle's own
:class:`~fleetml.features.FeatureConfig` on two windows and compares them with
:func:`fleetml.decisions.drift.psi_table` (10 quantile bins of the reference, empty bins at
:data:`~fleetml.decisions.drift.EPSILON`):

* *reference*: the champion's training window (``data_start`` to ``train_end``/``val_start`` of
  its MLflow run, as the per-metric check reads it); when the run does not say, the
  :data:`FALLBACK_REFERENCE_MS` before the current window;
* *current*: the last ``hours`` (24 by default) up to the tick's clock.

The work is bounded so a dashboard can ask for it: as many accounts as keep the samples read
under :data:`MAX_READ_ROWS` (a deterministic sample by a hash of their ids), features evaluated
on :data:`SLICES` one-hour slices spread evenly over each window, and only the samples those
slices need read from the store, once for both windows (each slice's look-back tail and the
short slices around its seasonal lags, the way the live loop keeps them:
:func:`fleetml.serving.window.tail_reach_ms`, :func:`~fleetml.serving.window.seasonal_lags_ms`).
Answers are kept :data:`CACHE_S` seconds per (store, family, version, hours, reference window).

Peer features are computed among the sampled accounts of a group only (fewer peers than the
fleet has when the sample is smaller than the fleet).
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from fleetml.config import Settings

log = logging.getLogger("fleetml.drift")

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: Default, smallest and largest current window (hours) the API accepts.
DEFAULT_HOURS = 24
MIN_HOURS = 1
MAX_HOURS = 7 * 24
#: Reference when the champion's run records no training window: this long before the current.
FALLBACK_REFERENCE_MS = 7 * DAY_MS
#: Most samples read from the store per answer: the accounts sampled (deterministically, by a
#: hash of their ids) are as many as fit, but never fewer than MIN_ACCOUNTS nor more than
#: MAX_ACCOUNTS. An account silent over the last hour is assumed to sample every minute.
MAX_READ_ROWS = 50_000
MIN_ACCOUNTS = 8
MAX_ACCOUNTS = 64
DEFAULT_SAMPLES_PER_HOUR = 60
#: Evaluation slices per window and their length: features are computed at the samples inside.
SLICES = 6
SLICE_MS = HOUR_MS
#: Most feature rows compared per side (evenly thinned beyond this).
MAX_ROWS = 20_000
#: Read before each slice and around each seasonal lag, so a counter's first rate and the sample
#: nearest a lag (the seasonal tolerance is half the sampling step by default) are there.
PAD_MS = 20 * 60_000
#: How long an answer is reused.
CACHE_S = 60.0

_cache: dict[tuple, tuple[float, dict[str, Any]]] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class Champion:
    """What the drift check needs of a family's champion bundle."""

    family: str
    version: int
    feature_columns: list[str]
    feature_config: Any
    metric_kinds: dict[str, str] = field(default_factory=dict)
    start_ms: int | None = None
    end_ms: int | None = None


def forget_cache() -> None:
    """Drop the cached answers (tests that change the store under one key call this)."""
    with _cache_lock:
        _cache.clear()


def load_champion(settings: Settings, family: str) -> Champion | None:
    """The champion of ``family`` (``anomaly`` or ``risk``) with its training window, or None.

    Raises whatever the registry raises when the bundle cannot be read.
    """
    from fleetml.features.config import FeatureConfig
    from fleetml.services.recommend import champion_window
    from fleetml.serving import registry
    from fleetml.serving.models import FAMILIES

    window = champion_window(settings, family)
    if window is None:
        return None
    bundle = registry.load_bundle(FAMILIES[family], version=window["version"], settings=settings)
    columns = getattr(bundle, "feature_columns", None)
    if columns is None:
        raise TypeError(f"{FAMILIES[family]} v{window['version']} is not a fleetml bundle")
    return Champion(
        family=family,
        version=int(window["version"]),
        feature_columns=[str(c) for c in columns],
        feature_config=getattr(bundle, "feature_config", None) or FeatureConfig(),
        metric_kinds=dict(getattr(bundle, "metric_kinds", None) or {}),
        start_ms=window.get("start_ms"),
        end_ms=window.get("end_ms"),
    )


def feature_drift(
    engine: Engine,
    settings: Settings,
    family: str,
    *,
    hours: int = DEFAULT_HOURS,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """PSI of each feature of the champion of ``family``: the last ``hours`` against its
    training window (see the module docstring).

    Returns
    -------
    dict
        ``features``: one row per feature column of the bundle (``feature``, ``metric``,
        ``psi``, ``level``, ``n_ref``, ``n_cur``), the most drifted first; and ``window``:
        ``skipped`` (why there is no table: no champion, too little history, an unreadable
        bundle), ``version``, ``hours``, ``reference`` (``training_window`` or
        ``before_current``), the four window bounds in epoch ms, and the accounts sampled of
        those registered.
    """
    if not MIN_HOURS <= int(hours) <= MAX_HOURS:
        raise ValueError(f"hours must be between {MIN_HOURS} and {MAX_HOURS}, got {hours}")
    hours = int(hours)
    window: dict[str, Any] = {"hours": hours, "version": None, "skipped": None}
    try:
        champion = load_champion(settings, family)
    except Exception as exc:  # noqa: BLE001 - a broken bundle is a reason on the page, not a 500
        log.warning("the %s champion could not be loaded for drift", family, exc_info=True)
        window["skipped"] = f"the champion could not be loaded ({type(exc).__name__}: {exc})"
        return {"features": [], "window": window}
    if champion is None:
        return {"features": [], "window": {**window, "skipped": "no champion"}}
    window["version"] = champion.version
    if now_ms is None:
        from fleetml.services import clock

        now_ms = clock.fleet_now(engine, settings)
    cur = (int(now_ms) - hours * HOUR_MS, int(now_ms))
    from fleetml.store.metrics import time_range

    stored = time_range(engine)
    ref, source = _reference(stored[0], champion, cur[0])
    window.update(
        reference=source,
        current_from_ms=cur[0],
        current_to_ms=cur[1],
        reference_from_ms=None if ref is None else ref[0],
        reference_to_ms=None if ref is None else ref[1],
    )
    if ref is None:
        window["skipped"] = f"no history before the last {hours} h for a reference"
        return {"features": [], "window": window}
    key = (str(engine.url), family, champion.version, hours, ref, cur[1] // int(CACHE_S * 1000))
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < CACHE_S:
        return hit[1]
    try:
        out = _compute(engine, champion, ref, cur, window, stored)
    except Exception as exc:  # noqa: BLE001 - reported on the page with the reason
        log.warning("the %s feature drift could not be computed", family, exc_info=True)
        window["skipped"] = f"the features could not be rebuilt ({type(exc).__name__}: {exc})"
        return {"features": [], "window": window}
    with _cache_lock:
        now = time.monotonic()
        for stale in [k for k, (t, _) in _cache.items() if now - t >= CACHE_S]:
            del _cache[stale]
        _cache[key] = (now, out)
    return out


def _reference(oldest, champion: Champion, cut_ms: int) -> tuple[tuple[int, int] | None, str]:
    """The training window, else the :data:`FALLBACK_REFERENCE_MS` before ``cut_ms``; None when
    the store holds nothing before ``cut_ms``.

    Either starts no earlier than the store's oldest sample plus the features' look-back tail
    when that leaves at least a slice: features there are built on truncated windows (a 24 h
    mean over two hours), which serving never sees once the fleet has history, and would show
    as drift of every long-window feature.
    """
    from fleetml.serving.window import tail_reach_ms

    first = None if oldest is None else int(oldest.value // 1_000_000)
    start, end = champion.start_ms, champion.end_ms
    if start is not None and end is not None and end > start:
        source = "training_window"
    elif first is None or first >= cut_ms:
        return None, "before_current"
    else:
        start, end, source = (
            max(first, cut_ms - FALLBACK_REFERENCE_MS),
            cut_ms - 1,
            "before_current",
        )
    if first is not None:
        warm = first + tail_reach_ms(champion.feature_config)
        if start < warm < end - SLICE_MS:
            start = warm
    return (int(start), int(end)), source


def _compute(engine, champion: Champion, ref, cur, window: dict, stored) -> dict[str, Any]:
    from fleetml.decisions.drift import psi_table
    from fleetml.features import metric_of_feature
    from fleetml.store.accounts import accounts_frame

    registered = accounts_frame(engine)
    ids = registered["account_id"].astype(str).tolist()
    config = champion.feature_config
    ranges = read_ranges([s for w in (ref, cur) for s in slices(*w)], config)
    accounts = sample_accounts(ids, account_budget(engine, ids, ranges, cur[1], stored))
    known = registered.dropna(subset=["group"])
    groups = {
        a: g
        for a, g in zip(known["account_id"].astype(str), known["group"].astype(str), strict=True)
        if a in set(accounts)
    }
    window = {**window, "accounts_sampled": len(accounts), "accounts_total": len(ids)}
    columns = champion.feature_columns
    reference, current = feature_samples(engine, champion, accounts, groups, [ref, cur])
    table = psi_table(reference, current, columns)
    table.insert(1, "metric", [_metric(c, metric_of_feature) for c in table["column"]])
    table = table.rename(columns={"column": "feature"})
    rows = table.astype(object).where(table.notna(), None).to_dict(orient="records")
    window.update(n_ref_rows=len(reference), n_cur_rows=len(current))
    if not len(reference) or not len(current):
        side = "training window" if not len(reference) else f"last {window['hours']} h"
        window["skipped"] = f"no samples of the sampled accounts in the {side}"
    return {"features": rows, "window": window}


def account_budget(
    engine, account_ids: list[str], ranges: list[tuple[int, int]], now_ms, stored
) -> int:
    """How many accounts' samples over ``ranges`` fit in :data:`MAX_READ_ROWS` (between
    :data:`MIN_ACCOUNTS` and :data:`MAX_ACCOUNTS`): the hours the ranges cover inside the store's
    time range (``stored``: its oldest and newest sample), times the samples a few accounts
    stored in the hour before ``now_ms``."""
    from fleetml.store.metrics import read_metrics

    lo, hi = stored
    if lo is None:
        return MIN_ACCOUNTS
    first, last = int(lo.value // 1_000_000), int(hi.value // 1_000_000)
    covered = sum(max(0, min(b, last) - max(a, first)) for a, b in ranges) / HOUR_MS
    probe = sample_accounts(account_ids, 3)
    recent = read_metrics(
        engine,
        accounts=probe,
        start=pd.Timestamp(int(now_ms) - HOUR_MS, unit="ms", tz="UTC"),
        end=pd.Timestamp(int(now_ms), unit="ms", tz="UTC"),
    )
    per_hour = len(recent) / max(len(probe), 1) or DEFAULT_SAMPLES_PER_HOUR
    fit = int(MAX_READ_ROWS // max(covered * per_hour, 1.0))
    return int(min(MAX_ACCOUNTS, max(MIN_ACCOUNTS, fit)))


def _metric(column: str, metric_of) -> str | None:
    try:
        return metric_of(column)
    except ValueError:
        return None


def sample_accounts(account_ids: list[str], cap: int) -> list[str]:
    """At most ``cap`` accounts, the same ones on every call: those with the smallest CRC-32 of
    their id (spread over groups and roles, unlike the first ids in sort order)."""
    unique = sorted(set(account_ids))
    if len(unique) <= cap:
        return unique
    return sorted(sorted(unique, key=lambda a: (zlib.crc32(a.encode()), a))[:cap])


def slices(start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """:data:`SLICES` evaluation slices of :data:`SLICE_MS` spread evenly over the window (the
    whole window when it is shorter than that)."""
    start_ms, end_ms = int(start_ms), int(end_ms)
    if end_ms - start_ms <= SLICES * SLICE_MS:
        return [(start_ms, end_ms)]
    ends = np.linspace(start_ms + SLICE_MS, end_ms, SLICES).astype("int64")
    return [(int(e) - SLICE_MS + 1, int(e)) for e in ends]


def read_ranges(evaluate: list[tuple[int, int]], config) -> list[tuple[int, int]]:
    """The store ranges the features at the ``evaluate`` slices read: each slice with its
    look-back tail, and the slice shifted by each seasonal lag; overlaps merged."""
    from fleetml.features.config import window_ms
    from fleetml.serving.window import seasonal_lags_ms, tail_reach_ms

    reach = tail_reach_ms(config) + PAD_MS
    tolerance = getattr(config, "seasonal_tolerance", None)
    pad = PAD_MS + (window_ms(tolerance) if tolerance else 0)
    wanted = []
    for lo, hi in evaluate:
        wanted.append((lo - reach, hi))
        wanted += [(lo - lag - pad, hi - lag + pad) for lag in seasonal_lags_ms(config)]
    wanted.sort()
    merged = [list(wanted[0])]
    for lo, hi in wanted[1:]:
        if lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(int(lo), int(hi)) for lo, hi in merged]


def feature_samples(
    engine,
    champion: Champion,
    accounts: list[str],
    groups: dict[str, str],
    windows: list[tuple[int, int]],
) -> list[pd.DataFrame]:
    """The champion's feature columns at the stored samples of ``accounts`` inside the
    evaluation slices of each window ``(start_ms, end_ms)``, at most :data:`MAX_ROWS` rows a
    window (evenly thinned). One read of the store and one feature build serve every window, so
    a training window that overlaps the current one costs nothing more."""
    from fleetml.features import build_features
    from fleetml.features.layout import ts_to_ms
    from fleetml.services.recommend import counter_rates
    from fleetml.serving.models import select_columns
    from fleetml.store.metrics import metric_kinds, read_metrics

    columns = champion.feature_columns
    empty = [pd.DataFrame(columns=columns, dtype="float64") for _ in windows]
    if not accounts or not windows:
        return empty
    config = champion.feature_config
    evaluate = [slices(lo, hi) for lo, hi in windows]
    ranges = read_ranges([s for side in evaluate for s in side], config)
    frame = read_metrics(engine, accounts=accounts, ranges=ranges)
    if frame.empty:
        return empty
    ts = ts_to_ms(frame["ts"])
    kinds = {**dict(metric_kinds(engine)), **champion.metric_kinds}
    counters = [c for c, k in kinds.items() if k == "counter" and c in frame.columns]
    if counters:
        # a rate never spans two ranges read (a seasonal slice lies a day or more away)
        starts = np.asarray([lo for lo, _ in ranges], dtype="int64")
        segment = np.searchsorted(starts, ts, side="right") - 1
        rates = counter_rates(frame, counters, segment=segment)
        frame = frame.assign(**{c: rates[c] for c in counters})
        kinds = {**kinds, **dict.fromkeys(counters, "gauge")}
    picked = []
    for side in evaluate:
        inside = np.zeros(len(frame), dtype=bool)
        for lo, hi in side:
            inside |= (ts >= lo) & (ts <= hi)
        rows = np.flatnonzero(inside)
        if len(rows) > MAX_ROWS:
            rows = rows[np.linspace(0, len(rows) - 1, MAX_ROWS).astype("int64")]
        picked.append(rows)
    wanted = np.unique(np.concatenate(picked))
    if not len(wanted):
        return empty
    feats = build_features(frame, kinds=kinds, groups=groups or None, config=config, rows=wanted)
    names = [c for c in feats.columns if c not in ("ts", "account_id")]
    X = select_columns(feats[names].to_numpy(dtype="float64"), names, columns)
    return [pd.DataFrame(X[np.searchsorted(wanted, rows)], columns=columns) for rows in picked]
