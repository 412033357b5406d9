"""Event-history features: how recently and how often an account (and its group) had faults.

Faults cluster on the simulator and in fleets alike: an account that was just throttled for
overload, or keeps losing its session, is likelier to fail again within a day than one that has
been quiet for a week. Metrics alone do not show it (a fault often leaves a gap, not a value), so
these features read the stored events.

Columns (prefix ``fault_history`` / ``enforcement_history``, so
:func:`fleetml.features.metric_of_feature` groups them like a metric):

* ``fault_history__hours_since``: hours since the account's last technical fault at or before
  ``t``; NaN when none lies within the longest history window (so serving needs events only that
  far back);
* ``fault_history__count_<w>``: the account's faults in ``(t - w, t]`` for each history window;
* ``fault_history__group_count_<w>``: faults of any account of the same group in ``(t - w, t]``
  (shortest history window; built only when groups are given);
* ``fault_history__group_others_<w>``: faults of the *other* accounts of the group in
  ``(t - w, t]`` for each of ``FeatureConfig.group_windows`` (on in ``RISK_FEATURES``; built
  only when groups are given): a master's fault moves its traffic onto its servants within
  minutes, so a short window tells a servant its group has just lost capacity;
* the master's state, for each of ``FeatureConfig.master_windows`` (built only when
  ``masters``, account -> its master from the registry, is given): hours since the master's
  last fault (``fault_history__master_hours_since``) and restriction or ban
  (``enforcement_history__master_hours_since``), the master's faults
  (``fault_history__master_count_<w>``; these three are NaN for an account without a master)
  and the faults of the *other* servants of the account's master, or of a master's own
  servants (``fault_history__servants_count_<w>``). A master that fails or is restricted moves
  its traffic onto its servants, and a servant sees its master's state in no metric of its own;
* ``enforcement_history__hours_since``: hours since the account's last restriction or ban
  (:data:`fleetml.vocab.ENFORCEMENT_LABELS`, the enforcement events training reads; a quality
  drop passed in is ignored, so serving may pass every enforcement kind), NaN when none within
  the longest window.

Every value at ``t`` uses only events at or before ``t``: appending later events or rows never
changes it. An event stamped exactly ``t`` counts (it has happened when the row at ``t`` is
scored); the label of that row looks at ``(t, t + h]`` only, so the two never overlap.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from fleetml.features.config import FeatureConfig, window_ms
from fleetml.vocab import ENFORCEMENT_LABELS, FAULT_KINDS

FAULT_PREFIX = "fault_history"
ENFORCEMENT_PREFIX = "enforcement_history"
_SEP = "__"
_HOUR_MS = 3_600_000
#: Accounts (or groups) laid end to end on one time axis: ~278 years of ms each, never overlapping.
_STRIDE = np.int64(1) << 43


def history_columns(config: FeatureConfig, *, groups: bool, masters: bool = False) -> list[str]:
    """Column names :func:`history_matrix` returns for this config, in order."""
    if not config.fault_history:
        return []
    cols = [f"{FAULT_PREFIX}{_SEP}hours_since"]
    cols += [f"{FAULT_PREFIX}{_SEP}count_{w}" for w in config.history_windows]
    if groups and config.history_windows:
        cols.append(f"{FAULT_PREFIX}{_SEP}group_count_{config.history_windows[0]}")
    if groups:
        cols += [f"{FAULT_PREFIX}{_SEP}group_others_{w}" for w in config.group_windows]
    cols.append(f"{ENFORCEMENT_PREFIX}{_SEP}hours_since")
    if masters and config.master_windows:
        cols.append(f"{FAULT_PREFIX}{_SEP}master_hours_since")
        cols += [f"{FAULT_PREFIX}{_SEP}master_count_{w}" for w in config.master_windows]
        cols += [f"{FAULT_PREFIX}{_SEP}servants_count_{w}" for w in config.master_windows]
        cols.append(f"{ENFORCEMENT_PREFIX}{_SEP}master_hours_since")
    return cols


def history_lookback_ms(config: FeatureConfig) -> int:
    """How far back the events must reach for these features (the longest history window)."""
    if not config.fault_history:
        return 0
    windows = config.history_windows + config.group_windows + config.master_windows
    return max([window_ms(w) for w in windows] or [0])


def _events_ms(events: pd.DataFrame | None, kinds: frozenset[str]) -> tuple[np.ndarray, np.ndarray]:
    if events is None or not len(events):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
    ev = events
    if "kind" in ev.columns:
        ev = ev[ev["kind"].astype(str).isin(kinds)]
    ts = pd.DatetimeIndex(pd.to_datetime(ev["ts"], utc=True)).as_unit("ms").asi8
    return ts, ev["account_id"].astype(str).to_numpy(dtype=object)


def _group_of(account_id: np.ndarray, groups: Mapping[str, str]) -> np.ndarray:
    """Each account's group (an account without one is its own group)."""
    acc = pd.Series(account_id, dtype=object)
    return acc.map(dict(groups)).fillna(acc).astype(str).to_numpy(dtype=str)


class _Timeline:
    """Events of many keys (accounts or groups) on one sorted axis, for vectorised lookups."""

    def __init__(self, ev_ts: np.ndarray, ev_key: np.ndarray, keys: np.ndarray, base: int):
        self.keys = keys
        code = np.searchsorted(keys, ev_key)
        self.sorted = np.sort(code.astype(np.int64) * _STRIDE + (ev_ts - base))
        self.base = base

    def row_keys(self, ts_ms: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        code = np.searchsorted(self.keys, key).astype(np.int64)
        return code, code * _STRIDE + (ts_ms - self.base)

    def count(self, code, rkey, width_ms: int) -> np.ndarray:
        """Events of the row's key in ``(t - width, t]``."""
        hi = np.searchsorted(self.sorted, rkey, side="right")
        lo_key = np.maximum(rkey - width_ms, code * _STRIDE - 1)
        lo = np.searchsorted(self.sorted, lo_key, side="right")
        return (hi - lo).astype(np.float64)

    def since_ms(self, code, rkey, cap_ms: int) -> np.ndarray:
        """Milliseconds since the key's last event at or before ``t``; NaN beyond ``cap_ms``."""
        out = np.full(len(rkey), np.nan)
        if not len(self.sorted):
            return out
        idx = np.searchsorted(self.sorted, rkey, side="right") - 1
        safe = np.clip(idx, 0, None)
        ok = (idx >= 0) & (self.sorted[safe] // _STRIDE == code)
        delay = (rkey - self.sorted[safe]).astype(np.float64)
        ok &= delay <= cap_ms
        out[ok] = delay[ok]
        return out


def history_matrix(
    ts_ms: np.ndarray,
    account_id: np.ndarray,
    events: pd.DataFrame | None,
    *,
    groups: Mapping[str, str] | None = None,
    config: FeatureConfig | None = None,
    masters: Mapping[str, str] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Event-history features at the given rows (any order), as ``(columns, values)``.

    Parameters
    ----------
    ts_ms, account_id
        The rows' times (epoch milliseconds) and accounts.
    events
        ``ts``, ``account_id`` and ``kind`` of stored events (faults and enforcement; other kinds
        are ignored). ``None`` or empty: no event seen (every ``hours_since`` NaN, counts 0).
    groups
        Account id -> group; the group count is built only when given.
    config
        :class:`FeatureConfig` (``fault_history``, ``history_windows``, ``group_windows``,
        ``master_windows``).
    masters
        Servant id -> its master's id (the registry's ``master_id``); the master's-state
        columns are built only when given and ``config.master_windows`` is set.

    Serving scores "now" with the same function: pass the events of the last
    :func:`history_lookback_ms` before the newest row.
    """
    config = config or FeatureConfig()
    cols = history_columns(config, groups=bool(groups), masters=bool(masters))
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    account_id = np.asarray(account_id).astype(str)
    out = np.empty((len(ts_ms), len(cols)))
    if not cols or not len(ts_ms):
        return cols, out
    cap = history_lookback_ms(config)
    f_ts, f_acc = _events_ms(events, FAULT_KINDS)
    e_ts, e_acc = _events_ms(events, frozenset(ENFORCEMENT_LABELS))
    base = int(min([ts_ms.min(), *(a.min() for a in (f_ts, e_ts) if len(a))]))
    master_of = _master_of(account_id, masters) if masters and config.master_windows else None
    known = [account_id, f_acc.astype(str), e_acc.astype(str)]
    if master_of is not None:
        known.append(master_of)
    keys = np.unique(np.concatenate(known))
    faults = _Timeline(f_ts, f_acc.astype(str), keys, base)
    code, rkey = faults.row_keys(ts_ms, account_id)
    j = 0
    out[:, j] = faults.since_ms(code, rkey, cap) / _HOUR_MS
    j += 1
    for w in config.history_windows:
        out[:, j] = faults.count(code, rkey, window_ms(w))
        j += 1
    if groups and (config.history_windows or config.group_windows):
        row_group = _group_of(account_id, groups)
        ev_group = _group_of(f_acc.astype(str), groups)
        g_keys = np.unique(np.concatenate([row_group, ev_group]))
        g_line = _Timeline(f_ts, ev_group, g_keys, base)
        g_code, g_rkey = g_line.row_keys(ts_ms, row_group)
        if config.history_windows:
            out[:, j] = g_line.count(g_code, g_rkey, window_ms(config.history_windows[0]))
            j += 1
        for w in config.group_windows:
            # the group's faults less the account's own: what its peers went through
            w_ms = window_ms(w)
            out[:, j] = g_line.count(g_code, g_rkey, w_ms) - faults.count(code, rkey, w_ms)
            j += 1
    enforcement = _Timeline(e_ts, e_acc.astype(str), keys, base)
    out[:, j] = enforcement.since_ms(code, rkey, cap) / _HOUR_MS
    j += 1
    if master_of is not None:
        _master_state(
            out[:, j:],
            ts_ms=ts_ms,
            account_id=account_id,
            master_of=master_of,
            faults=faults,
            enforcement=enforcement,
            fault_events=(f_ts, _master_of(f_acc.astype(str), masters), f_acc.astype(str)),
            base=base,
            cap=cap,
            config=config,
        )
    return cols, out


def _master_of(account_id: np.ndarray, masters: Mapping[str, str]) -> np.ndarray:
    """Each row's master id, or ``""`` for an account without one (a master itself)."""
    acc = pd.Series(account_id, dtype=object)
    master = acc.map(dict(masters)).fillna("").astype(str).to_numpy(dtype=str)
    return np.where(master == account_id, "", master)


def _master_state(
    out, *, ts_ms, account_id, master_of, faults, enforcement, fault_events, base, cap, config
) -> None:
    """Fill the master's-state columns (see the module docstring) into ``out``;
    ``fault_events`` is ``(ts, master of the event's account, account)`` of every fault."""
    has = master_of != ""
    m_code, m_rkey = faults.row_keys(ts_ms, master_of)
    out[:, 0] = np.where(has, faults.since_ms(m_code, m_rkey, cap) / _HOUR_MS, np.nan)
    # a master's family is itself and its servants: the faults of the family less the
    # account's own (and, for a servant, its master's) are those of the other servants
    family = np.where(has, master_of, account_id)
    f_ts, ev_master, f_acc = fault_events
    ev_family = np.where(ev_master != "", ev_master, f_acc)
    fam_keys = np.unique(np.concatenate([family, ev_family]))
    fam_line = _Timeline(f_ts, ev_family, fam_keys, base)
    fam_code, fam_rkey = fam_line.row_keys(ts_ms, family)
    code, rkey = faults.row_keys(ts_ms, account_id)
    n = len(config.master_windows)
    for i, w in enumerate(config.master_windows):
        w_ms = window_ms(w)
        master_count = faults.count(m_code, m_rkey, w_ms)
        out[:, 1 + i] = np.where(has, master_count, np.nan)
        others = fam_line.count(fam_code, fam_rkey, w_ms) - faults.count(code, rkey, w_ms)
        out[:, 1 + n + i] = others - np.where(has, master_count, 0.0)
    out[:, 1 + 2 * n] = np.where(has, enforcement.since_ms(m_code, m_rkey, cap) / _HOUR_MS, np.nan)
