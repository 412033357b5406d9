"""The one feature builder used by training and scoring (no train/serve skew)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from fleetml.features.config import FeatureConfig, window_ms
from fleetml.features.counters import counter_rate
from fleetml.features.history import history_matrix
from fleetml.features.layout import Layout, ts_to_ms
from fleetml.features.peers import peer_z
from fleetml.features.seasonal import SeasonalLags
from fleetml.features.trends import (
    cusum_values,
    peak_values,
    stats_config,
    trend_names,
    trend_values,
)
from fleetml.features.windows import WindowStats, rate_of_change, window_ratios
from fleetml.vocab import RESERVED_COLUMNS, default_metric_kind

SEP = "__"
ID_COLUMNS = ("ts", "account_id")


def metric_of_feature(name: str) -> str:
    """The metric (or ratio) a feature column belongs to: the part before ``__``."""
    if SEP not in name:
        raise ValueError(f"{name!r} is not a feature column (expected '<metric>__<feature>')")
    return name.split(SEP, 1)[0]


def feature_columns(df: pd.DataFrame) -> list[str]:
    """The feature columns of a frame returned by :func:`build_features`, in order."""
    return [c for c in df.columns if c not in ID_COLUMNS and SEP in str(c)]


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Metric columns of a canonical wide metrics frame (everything but ts and account_id)."""
    return [c for c in frame.columns if c not in RESERVED_COLUMNS]


def _ratio_pairs(metrics: list[str], config: FeatureConfig) -> list[tuple[str, str, str, str]]:
    """(feature prefix, numerator column, denominator column) for ratios whose metrics exist."""
    present = set(metrics)

    def find(base: str) -> str | None:
        for cand in (base, f"{base}_total"):
            if cand in present:
                return cand
        return None

    pairs = []
    for num, den in config.ratios:
        num_col, den_col = find(num), find(den)
        if num_col and den_col:
            pairs.append((f"{num}_per_{den}", num_col, den_col))
    return pairs


def _metric_feature_names(config: FeatureConfig, *, peers: bool) -> list[str]:
    names = ["value"]
    names += [f"mean_{w}" for w in config.mean_windows]
    names += [f"std_{w}" for w in config.std_windows]
    names += [f"slope_{w}" for w in config.slope_windows]
    names += [f"z_{w}" for w in config.z_windows]
    names += [f"roc_{w}" for w in config.roc_windows]
    names += trend_names(config)
    if config.seasonal:
        names.append("seasonal_resid")
    if peers:
        names.append("peer_z")
    return names


def planned_columns(
    metrics: list[str], config: FeatureConfig | None = None, *, peers: bool = False
) -> list[str]:
    """Feature column names :func:`build_features` produces for these metrics, in order."""
    config = config or FeatureConfig()
    per_metric = _metric_feature_names(config, peers=peers and config.peers)
    cols = [f"{m}{SEP}{f}" for m in metrics for f in per_metric]
    for prefix, _, _ in _ratio_pairs(metrics, config):
        cols += [f"{prefix}{SEP}{w}" for w in config.ratio_windows]
    return cols


def _levels(
    frame: pd.DataFrame, metrics: list[str], kinds: Mapping[str, str], layout: Layout
) -> dict[str, np.ndarray]:
    """Each metric's level: gauges as they are, counters as per-minute rates."""
    out = {}
    for m in metrics:
        values = frame[m].to_numpy(dtype=np.float64, na_value=np.nan)
        kind = kinds.get(m) or default_metric_kind(m)
        out[m] = counter_rate(values, layout) if str(kind) == "counter" else values
    return out


def _account_block(
    levels: dict[str, np.ndarray],
    layout: Layout,
    metrics: list[str],
    config: FeatureConfig,
    *,
    peers: bool,
    out: np.ndarray,
    rows: np.ndarray | None = None,
) -> None:
    """Fill ``out`` (target rows x planned columns) with every feature that needs only one
    account; target rows are all rows, or ``rows``."""
    per_metric = _metric_feature_names(config, peers=peers)
    width = len(per_metric)
    stats = WindowStats(layout, rows)
    roc_pos = {w: layout.at_or_before(window_ms(w), rows) for w in config.roc_windows}
    seasonal = SeasonalLags(layout, config, rows) if config.seasonal else None
    wanted = stats_config(config)  # plus the windows the trend pairs read
    for i, m in enumerate(metrics):
        level = levels[m]
        cols = {"value": stats.at(level)}
        cols.update(
            stats.compute(
                level,
                mean_windows=wanted.mean_windows,
                std_windows=wanted.std_windows,
                slope_windows=config.slope_windows,
                z_windows=config.z_windows,
            )
        )
        cols.update(trend_values(cols, config))
        cols.update(peak_values(level, stats, config, cols))
        cols.update(cusum_values(level, layout, config, rows))
        for w, pos in roc_pos.items():
            cols[f"roc_{w}"] = rate_of_change(level, layout, window_ms(w), pos, rows)
        if seasonal is not None:
            cols["seasonal_resid"] = seasonal.residual(level)
        for j, name in enumerate(per_metric):
            # peer_z is filled later across accounts; everything else is written here.
            out[:, i * width + j] = cols.get(name, np.nan)
    col = len(metrics) * width
    for _, num, den in _ratio_pairs(metrics, config):
        ratios = window_ratios(levels[num], levels[den], stats, config.ratio_windows)
        for w in config.ratio_windows:
            out[:, col] = ratios[w]
            col += 1


def _chunk_features(args) -> np.ndarray:
    """Worker for the parallel path: the per-account block of one chunk of whole accounts."""
    ts_ms, account_id, levels, metrics, config, peers, width = args
    layout = Layout.build(ts_ms, account_id, config.lookback_ms())
    out = np.empty((len(ts_ms), width), order="F")
    _account_block(levels, layout, metrics, config, peers=peers, out=out)
    return out


def _run_parallel(func, items, config: FeatureConfig):
    from fleetml.parallel import run_parallel

    return run_parallel(
        func, items, n_jobs=config.n_jobs, dask_address=config.dask_address, desc="features"
    )


def _want_parallel(n_rows: int, config: FeatureConfig) -> bool:
    if n_rows < config.parallel_min_rows:
        return False
    return not (config.n_jobs == 1 and not config.dask_address)


def build_features(
    frame: pd.DataFrame,
    *,
    kinds: Mapping[str, str] | None = None,
    groups: Mapping[str, str] | None = None,
    config: FeatureConfig | None = None,
    rows: np.ndarray | pd.Series | None = None,
    events: pd.DataFrame | None = None,
    masters: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Causal features for every row of a canonical wide metrics frame.

    Parameters
    ----------
    frame
        ``ts`` (datetime64, UTC), ``account_id`` and one float column per metric (NaN when the
        sample did not carry it), one row per (account, ts). Rows are expected sorted by
        (``account_id``, ``ts``); other orders are accepted and the output follows the input order.
    kinds
        Metric name -> ``"gauge"`` or ``"counter"``; missing names follow
        :func:`fleetml.vocab.default_metric_kind` (``*_total`` is a counter). Counters become
        per-minute rates (resets handled) before any other feature.
    groups
        Account id -> group name. Peer features (``<metric>__peer_z``) are built only when given.
    config
        :class:`FeatureConfig` (windows, ratios, seasonal and peer settings, parallelism).
    rows
        Optional boolean mask or integer positions (``iloc``) of the rows to evaluate; every row
        still serves as history, so the values equal those of a full build. Training uses it to
        compute features only for the rows it samples (memory grows with the rows returned).
    events
        Stored events (``ts``, ``account_id``, ``kind``). When given (and
        ``config.fault_history``), event-history columns are appended
        (:mod:`fleetml.features.history`); when ``None`` they are not built.
    masters
        Servant id -> its master's id (the registry's ``master_id``): with events and
        ``config.master_windows``, the master's-state columns are appended too.

    Returns
    -------
    DataFrame
        The same rows in the same order (or the selected ``rows``, in the order given):
        ``ts``, ``account_id``, then float64 columns
        ``<metric>__value`` (the level; a counter's per-minute rate), ``__mean_<w>``,
        ``__std_<w>``, ``__slope_<w>`` (per hour), ``__roc_<w>`` (per hour),
        ``__seasonal_resid``, ``__peer_z`` and ratios ``<num>_per_<den>__<w>``, then the
        event-history columns when ``events`` is given.
        A feature at time t uses only samples and events at or before t (peer features: at t).
    """
    if rows is not None:
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if len(rows) != len(frame):
                raise ValueError(f"rows mask has {len(rows)} entries for a frame of {len(frame)}")
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64)
    return _build(
        frame,
        kinds=kinds,
        groups=groups,
        config=config,
        rows=rows,
        events=events,
        masters=masters,
    )


def build_feature_matrix(
    frame: pd.DataFrame,
    *,
    kinds: Mapping[str, str] | None = None,
    groups: Mapping[str, str] | None = None,
    config: FeatureConfig | None = None,
    rows: np.ndarray | pd.Series | None = None,
    events: pd.DataFrame | None = None,
    masters: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, list[str], np.ndarray]:
    """:func:`build_features` as ``(ids, columns, X)`` without copying the values into a frame:
    ``ids`` holds ``ts`` and ``account_id``, ``X`` is the float64 matrix (training on large
    fleets uses it to keep one copy of the features in memory)."""
    if rows is not None:
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64)
    return _build(
        frame,
        kinds=kinds,
        groups=groups,
        config=config,
        rows=rows,
        as_matrix=True,
        events=events,
        masters=masters,
    )


def _build(
    frame,
    *,
    kinds,
    groups,
    config,
    last_rows_only: bool = False,
    rows=None,
    as_matrix=False,
    events=None,
    masters=None,
):
    """:func:`build_features`, optionally evaluated at some rows (``rows``: input positions) or
    at each account's last row only."""
    config = config or FeatureConfig()
    kinds = dict(kinds or {})
    for col in ID_COLUMNS:
        if col not in frame.columns:
            raise ValueError(f"metrics frame has no {col!r} column; columns: {list(frame.columns)}")
    metrics = metric_columns(frame)
    peers = bool(groups) and config.peers
    names = planned_columns(metrics, config, peers=peers)
    n = len(frame)

    ts_ms = ts_to_ms(frame["ts"])
    account_id = frame["account_id"].astype(str).to_numpy()
    # Only contiguity of each account and time order inside it matter, not the order of names.
    codes, _ = pd.factorize(account_id)
    step_ok = (np.diff(codes) == 0) & (np.diff(ts_ms) >= 0) | (np.diff(codes) == 1)
    unsorted = n > 1 and not bool(step_ok.all())
    if unsorted:
        order = np.lexsort((ts_ms, codes))
        ts_ms, account_id = ts_ms[order], account_id[order]
        frame = frame.iloc[order]

    layout = Layout.build(ts_ms, account_id, config.lookback_ms())
    levels = _levels(frame, metrics, kinds, layout)
    if rows is not None and unsorted:
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = np.arange(n)
        rows = inverse[rows]
    if last_rows_only:
        rows = np.r_[layout.starts[1:], n] - 1 if n else np.zeros(0, dtype=np.int64)
    n_out = n if rows is None else len(rows)
    out = np.empty((n_out, len(names)), order="F")  # every column is written below
    if n:
        if rows is None:
            _fill(out, levels, layout, ts_ms, account_id, metrics, config, peers=peers)
        else:
            _account_block(levels, layout, metrics, config, peers=peers, out=out, rows=rows)
        if peers:
            _fill_peers(out, levels, layout, account_id, metrics, config, groups, rows)

    if rows is not None:
        frame = frame.iloc[rows]  # frame is in sorted order here, rows are sorted positions
    elif unsorted:
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = np.arange(n)
        out = out[inverse]
        frame = frame.iloc[inverse]
    ts = pd.DatetimeIndex(frame["ts"]).as_unit("ms")
    ts = ts if ts.tz is not None else ts.tz_localize("UTC")
    if events is not None and config.fault_history:
        hist_cols, hist = history_matrix(
            ts.asi8,
            frame["account_id"].astype(str).to_numpy(),
            events,
            groups=groups,
            config=config,
            masters=masters,
        )
        names = names + hist_cols
        out = np.hstack([out, hist]) if len(hist_cols) else out
    if as_matrix:
        ids = pd.DataFrame({"ts": ts, "account_id": frame["account_id"].astype(str).to_numpy()})
        return ids, names, out
    result = pd.DataFrame(out, columns=names, copy=False)
    result.insert(0, "account_id", frame["account_id"].astype(str).to_numpy())
    result.insert(0, "ts", ts)
    return result


def _chunk_bounds(layout: Layout, target_rows: int) -> list[tuple[int, int]]:
    """Row ranges of consecutive whole accounts, each about ``target_rows`` long."""
    starts = layout.starts
    ends = np.r_[starts[1:], layout.n]
    bounds, lo = [], 0
    # Cut after the first account that brings the chunk to the target size.
    cuts = np.searchsorted(ends, np.arange(target_rows, layout.n, max(target_rows, 1)), side="left")
    for c in np.unique(cuts):
        hi = int(ends[c])
        if hi > lo:
            bounds.append((lo, hi))
            lo = hi
    if lo < layout.n:
        bounds.append((lo, layout.n))
    return bounds


def _fill(out, levels, layout, ts_ms, account_id, metrics, config, *, peers: bool) -> None:
    width = out.shape[1]
    if _want_parallel(layout.n, config):
        # A few large chunks of whole accounts, never per-row tasks.
        n_chunks = max(2, 2 * (config.n_jobs if config.n_jobs and config.n_jobs > 0 else 2))
        bounds = _chunk_bounds(layout, -(-layout.n // n_chunks))
        items = [
            (
                ts_ms[lo:hi],
                account_id[lo:hi],
                {m: v[lo:hi] for m, v in levels.items()},
                metrics,
                config,
                peers,
                width,
            )
            for lo, hi in bounds
        ]
        for (lo, hi), block in zip(
            bounds, _run_parallel(_chunk_features, items, config), strict=True
        ):
            out[lo:hi] = block
        return
    bounds = _chunk_bounds(layout, config.chunk_rows)
    if len(bounds) == 1:
        _account_block(levels, layout, metrics, config, peers=peers, out=out)
        return
    for lo, hi in bounds:
        part = Layout.build(ts_ms[lo:hi], account_id[lo:hi], config.lookback_ms())
        block = out[lo:hi]
        _account_block(
            {m: v[lo:hi] for m, v in levels.items()}, part, metrics, config, peers=peers, out=block
        )


def _fill_peers(out, levels, layout, account_id, metrics, config, groups, rows=None) -> None:
    per_metric = _metric_feature_names(config, peers=True)
    width = len(per_metric)
    j = per_metric.index("peer_z")
    group_names = pd.Series(account_id).map(dict(groups)).to_numpy(dtype=object)
    codes, _ = pd.factorize(group_names, use_na_sentinel=True)
    bucket = window_ms(config.peer_bucket) if config.peer_bucket else layout.sampling_step_ms()
    z = peer_z(levels, layout, codes.astype(np.int64), bucket, config.peer_min_accounts, rows)
    for i, m in enumerate(metrics):
        out[:, i * width + j] = z[m]


def latest_features(
    frame: pd.DataFrame,
    *,
    kinds: Mapping[str, str] | None = None,
    groups: Mapping[str, str] | None = None,
    config: FeatureConfig | None = None,
    events: pd.DataFrame | None = None,
    masters: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Features of each account's last row only: the fast path for scoring "now".

    Equal to the last row per account of :func:`build_features` on the same frame (same columns,
    same values up to floating-point rounding), computed by :func:`fleetml.features.latest.
    latest_rows` from each account's tail (its longest window), the samples at its seasonal lags
    and its peers' samples at the same time, with segment reductions across all accounts at once.
    Returns one row per account, ordered by account. Cost grows with the number of accounts and
    the rows in their windows, not with the history kept.
    """
    from fleetml.features.latest import latest_rows

    out = latest_rows(frame, kinds=kinds, groups=groups, config=config)
    config = config or FeatureConfig()
    if events is not None and config.fault_history:
        ts = pd.DatetimeIndex(out["ts"]).as_unit("ms").asi8
        cols, hist = history_matrix(
            ts,
            out["account_id"].astype(str).to_numpy(),
            events,
            groups=groups,
            config=config,
            masters=masters,
        )
        out = pd.concat([out, pd.DataFrame(hist, columns=cols, index=out.index)], axis=1)
    return out
