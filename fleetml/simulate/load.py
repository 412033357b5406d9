"""Demand per master group: daily and weekly seasonality, trend, holidays, campaigns, bursts, noise.

Demand is exogenous: the same seed gives the same demand whatever routing policy runs, so two
policies can be compared on identical traffic (common random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from fleetml.simulate.config import SimConfig
from fleetml.simulate.fleet import FleetLayout


@dataclass
class Demand:
    msgs: np.ndarray  # (groups, steps) messages arriving per step
    anomalies: list[dict]  # benign load anomalies (campaigns, bursts, holidays) in steps


def _circular_bump(hours: np.ndarray, centre: float, width: float) -> np.ndarray:
    d = np.abs(hours - centre)
    d = np.minimum(d, 24.0 - d)
    return np.exp(-0.5 * (d / width) ** 2)


def daily_profile(local_hours: np.ndarray) -> np.ndarray:
    """Relative demand by local hour: quiet nights, a late-morning and an evening peak; max 1."""
    raw = 0.8 * _circular_bump(local_hours, 11.0, 2.5) + _circular_bump(local_hours, 19.5, 2.0)
    grid = np.linspace(0, 24, 481)
    peak = (0.8 * _circular_bump(grid, 11.0, 2.5) + _circular_bump(grid, 19.5, 2.0)).max()
    return 0.22 + 0.78 * raw / peak


def _envelope(n: int, ramp: int) -> np.ndarray:
    """Ramp up over ``ramp`` steps, hold, decay over the last fifth."""
    x = np.ones(n)
    ramp = min(ramp, n)
    x[:ramp] = np.linspace(1.0 / ramp, 1.0, ramp)
    tail = max(1, n // 5)
    x[n - tail :] *= np.linspace(1.0, 0.2, tail)
    return x


def generate_demand(config: SimConfig, layout: FleetLayout, rng: np.random.Generator) -> Demand:
    """Messages arriving per step for every group over the whole run."""
    n_groups, n_steps, dt = layout.n_groups, config.n_steps, config.dt_min
    start = config.start_ts
    minute0 = start.hour * 60 + start.minute + start.second / 60
    t_min = np.arange(n_steps) * dt  # minutes since start
    utc_minutes = minute0 + t_min + (start.day_of_week * 1440)
    local_min = utc_minutes[None, :] + layout.utc_offset_h[:, None] * 60.0
    phase = rng.uniform(-0.75, 0.75, size=(n_groups, 1))
    local_hours = (local_min / 60.0 + phase) % 24.0
    shape = daily_profile(local_hours)

    weekday = (local_min // 1440).astype(np.int64) % 7  # 0 = Monday (start is a Monday offset)
    sat = rng.uniform(0.7, 0.9, n_groups)[:, None]
    sun = rng.uniform(0.55, 0.75, n_groups)[:, None]
    weekly = np.where(weekday == 5, sat, np.where(weekday == 6, sun, 1.0))

    slope = rng.normal(*config.trend_per_day, size=(n_groups, 1))
    trend = np.exp(slope * t_min[None, :] / 1440.0)

    group_capacity = np.bincount(layout.group_index, layout.capacity, minlength=n_groups)
    level = rng.uniform(*config.peak_utilisation, size=n_groups) * group_capacity

    mult = np.ones((n_groups, n_steps))
    anomalies: list[dict] = []
    local_day = (local_min // 1440).astype(np.int64)

    # Holidays: a fleet-wide local day at about half the usual demand.
    n_days = int(np.ceil(config.days))
    for day in np.flatnonzero(rng.random(n_days) < config.holiday_rate_per_day):
        day_abs = int(local_day[0].min()) + int(day)
        hit = local_day == day_abs
        mult[hit] *= 0.5
        for g in np.flatnonzero(hit.any(axis=1)):
            steps = np.flatnonzero(hit[g])
            anomalies.append(
                {
                    "kind": "holiday",
                    "group": int(g),
                    "start": int(steps[0]),
                    "end": int(steps[-1]) + 1,
                    "amplitude": 0.5,
                }
            )

    def add_episodes(
        kind: str,
        rate: float,
        dur_lo: float,
        dur_hi: float,
        amp_lo: float,
        amp_hi: float,
        ramp_min: float,
        lognormal: bool,
    ) -> None:
        counts = rng.poisson(rate * config.days, size=n_groups)
        for g in range(n_groups):
            for _ in range(counts[g]):
                if lognormal:
                    dur = float(np.clip(np.exp(rng.normal(np.log(90), 0.6)), dur_lo, dur_hi))
                else:
                    dur = rng.uniform(dur_lo, dur_hi)
                # campaigns start in local business hours; bursts any time
                day = rng.integers(0, n_days)
                hour = rng.uniform(8, 20) if lognormal else rng.uniform(0, 24)
                start_min = (day * 24 + hour - layout.utc_offset_h[g]) * 60 - minute0
                s = int(np.floor(start_min / dt))
                n = config.steps(dur)
                lo_, hi_ = max(s, 0), min(s + n, n_steps)
                if hi_ <= lo_:
                    continue
                amp = rng.uniform(amp_lo, amp_hi)
                env = _envelope(n, config.steps(ramp_min))[lo_ - s : hi_ - s]
                mult[g, lo_:hi_] *= 1.0 + (amp - 1.0) * env
                anomalies.append(
                    {"kind": kind, "group": g, "start": lo_, "end": hi_, "amplitude": float(amp)}
                )

    add_episodes("campaign", config.campaign_rate_per_day, 20, 360, 1.4, 3.0, 10, True)
    add_episodes("burst", config.burst_rate_per_day, 2, 12, 1.5, 3.0, 1, False)

    phi = float(np.exp(-dt / config.noise_corr_min))
    innov = rng.standard_normal((n_groups, n_steps)) * config.noise_sigma * np.sqrt(1 - phi**2)
    innov[:, 0] = rng.standard_normal(n_groups) * config.noise_sigma
    noise = lfilter([1.0], [1.0, -phi], innov, axis=1)

    rate = (
        level[:, None] * shape * weekly * trend * mult * np.exp(noise - config.noise_sigma**2 / 2)
    )
    msgs = rng.poisson(rate * dt).astype(np.float64)
    return Demand(msgs=msgs, anomalies=anomalies)
