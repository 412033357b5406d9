"""Shared analysis for the honesty tests: do precursor windows differ from healthy ones?"""

from __future__ import annotations

import numpy as np

from fleetml.simulate.config import COUNTERS, METRIC_NAMES
from fleetml.simulate.truth import fault_table


def step_matrix(sim) -> np.ndarray:
    """(metrics, steps, accounts) with counters turned into per-step increases (reset-aware)."""
    data = sim.rec[:, : sim.t].astype(np.float64)
    for name in COUNTERS:
        m = METRIC_NAMES.index(name)
        x = data[m]
        prev = np.vstack([np.full((1, x.shape[1]), np.nan), x[:-1]])
        data[m] = np.where(x >= prev, x - prev, x)
    return data


def window_scores(
    sim, window_steps: int, day_steps: int, n_controls: int = 100
) -> tuple[dict[str, list], list]:
    """Score = max over metrics of |mean(pre-onset window) - mean(same window a day earlier)|,
    scaled by the metric's spread on that account. Controls compare random healthy windows."""
    data = step_matrix(sim)
    faults = fault_table(sim)
    busy = np.zeros((sim.t, sim.layout.n_accounts), dtype=bool)
    for r in faults.itertuples():
        busy[max(r.start, 0) : min(r.end, sim.t), r.account] = True
    scale = np.nanstd(data, axis=1) + 1e-6  # (metrics, accounts)

    def score(a, lo1, lo2):
        w1 = data[:, lo1 : lo1 + window_steps, a]
        w2 = data[:, lo2 : lo2 + window_steps, a]
        with np.errstate(all="ignore"):
            diff = np.abs(np.nanmean(w1, axis=1) - np.nanmean(w2, axis=1)) / scale[:, a]
        return float(np.nanmax(diff)) if np.isfinite(diff).any() else np.nan

    by_kind: dict[str, list] = {}
    controls: list = []
    for r in faults.itertuples():
        lo = r.onset - window_steps
        ref = lo - day_steps
        if ref < 0 or busy[ref : ref + window_steps, r.account].any():
            continue
        if busy[lo : r.onset, r.account].any() and r.mechanism == "sudden":
            continue  # another fault's precursor overlaps this sudden fault's window
        s = score(r.account, lo, ref)
        if np.isfinite(s):
            by_kind.setdefault("foreseeable" if r.foreseeable else "sudden", []).append(s)
    # Controls: random healthy windows compared with the same window a day earlier.
    rng = np.random.default_rng(0)
    for _ in range(2000):
        if len(controls) >= n_controls:
            break
        a = int(rng.integers(sim.layout.n_accounts))
        lo = int(rng.integers(day_steps, sim.t - window_steps))
        if (
            busy[lo : lo + window_steps, a].any()
            or busy[lo - day_steps : lo - day_steps + window_steps, a].any()
        ):
            continue
        c = score(a, lo, lo - day_steps)
        if np.isfinite(c):
            controls.append(c)
    return by_kind, controls


def auc(pos, neg) -> float:
    pos, neg = np.asarray(pos), np.asarray(neg)
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)
