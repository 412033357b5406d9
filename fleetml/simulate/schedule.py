"""Exogenous episodes per account: faults with precursors, enforcement waves, maintenance,
benign look-alikes and exporter trouble.

Each kind of episode forms an :class:`EpisodeStream`: per account, non-overlapping episodes
sorted by time, each with a precursor start, an onset and an end (all in steps). The engine
walks every stream with one cursor per account, so the effect of the current episode is computed
for all accounts at once at each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleetml.simulate.config import (
    DOWNTIMES,
    LEAD_TIMES,
    ONSET_KIND,
    SUDDEN_KINDS,
    LogNormalMinutes,
    SimConfig,
)
from fleetml.simulate.fleet import FleetLayout

#: Fault kind codes used inside the engine (index into this tuple).
FAULT_CODES: tuple[str, ...] = ("none", "crash", "logout", "disconnect", "unreachable", "degraded")
#: Precursor mechanism codes of the fault stream.
MECHANISMS: tuple[str, ...] = (
    "none",
    "memory_leak",
    "session_decay",
    "network_degradation",
    "host_degradation",
    "sudden",
)
LOOKALIKES: tuple[str, ...] = ("none", "memory_growth", "network_blip", "cpu_spike", "session_blip")
ENFORCEMENT: tuple[str, ...] = ("none", "quality_drop", "restricted", "banned")

FAR = np.int64(2**40)  # "never" in steps


@dataclass
class EpisodeStream:
    """Flat, per-account sorted episodes with one sentinel (never starting) per account."""

    account: np.ndarray  # int
    start: np.ndarray  # int64, precursor start step (== onset when there is none)
    onset: np.ndarray  # int64
    end: np.ndarray  # int64, first step after the episode
    code: np.ndarray  # int, stream-specific meaning
    kind: np.ndarray  # int, stream-specific meaning (fault kind code for faults)
    amp: np.ndarray  # float, precursor strength
    aux: np.ndarray  # float, stream-specific parameter
    first: np.ndarray  # int, index of each account's first episode

    @property
    def real(self) -> np.ndarray:
        """Mask of non-sentinel episodes."""
        return self.start < FAR

    def rows(self) -> dict[str, np.ndarray]:
        keep = self.real
        return {
            name: getattr(self, name)[keep]
            for name in ("account", "start", "onset", "end", "code", "kind", "amp", "aux")
        }


def _stream(n_accounts: int, **cols: np.ndarray) -> EpisodeStream:
    """Sort episodes by (account, start) and append one sentinel per account."""
    account = np.asarray(cols.pop("account"), dtype=np.int64)
    sentinel = np.arange(n_accounts)
    defaults = {
        "start": FAR,
        "onset": FAR,
        "end": FAR + 1,
        "code": 0,
        "kind": 0,
        "amp": 0.0,
        "aux": 0.0,
    }
    merged = {}
    for name, default in defaults.items():
        values = np.asarray(cols.get(name, np.full(len(account), default)))
        merged[name] = np.concatenate([values, np.full(n_accounts, default, dtype=values.dtype)])
    account = np.concatenate([account, sentinel])
    order = np.lexsort((merged["start"], account))
    account = account[order]
    first = np.searchsorted(account, np.arange(n_accounts))
    return EpisodeStream(
        account=account,
        start=merged["start"][order].astype(np.int64),
        onset=merged["onset"][order].astype(np.int64),
        end=merged["end"][order].astype(np.int64),
        code=merged["code"][order].astype(np.int64),
        kind=merged["kind"][order].astype(np.int64),
        amp=merged["amp"][order].astype(np.float64),
        aux=merged["aux"][order].astype(np.float64),
        first=first,
    )


def _lognormal(rng: np.random.Generator, spec: LogNormalMinutes, size) -> np.ndarray:
    draw = np.exp(rng.normal(np.log(spec.median), spec.sigma, size=size))
    return np.clip(draw, spec.lo, spec.hi)


def _renewal(
    rng: np.random.Generator,
    n_accounts: int,
    n_steps: int,
    rate_per_step: float,
    durations: np.ndarray,
    lead: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Non-overlapping episodes per account: exponential gaps, then ``lead`` + ``duration``.

    ``durations`` and ``lead`` are (accounts, k) step arrays drawn beforehand; returns the flat
    (account, episode index, start, onset) of the episodes whose onset falls inside the run.
    """
    k = durations.shape[1]
    if rate_per_step <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    gaps = np.maximum(1, rng.exponential(1.0 / rate_per_step, size=(n_accounts, k))).astype(
        np.int64
    )
    # The first episode may have started its precursor before the run: offset by up to one lead.
    cycle = gaps + lead + durations
    ends = np.cumsum(cycle, axis=1) - rng.integers(0, np.maximum(lead[:, :1], 1) + 1)
    starts = ends - durations - lead
    onsets = starts + lead
    keep = (onsets >= 0) & (onsets < n_steps)
    acc, idx = np.nonzero(keep)
    return acc, idx, starts[keep], onsets[keep]


def fault_stream(config: SimConfig, layout: FleetLayout, rng: np.random.Generator) -> EpisodeStream:
    """Technical faults with precursors (and sudden ones without)."""
    n_acc, n_steps = layout.n_accounts, config.n_steps
    rate = config.fault_rate_per_day / (1440.0 / config.dt_min)
    k = int(np.ceil(config.days * config.fault_rate_per_day * 3)) + 4
    names = [m for m, _ in config.fault_mix]
    probs = np.asarray([p for _, p in config.fault_mix], dtype=float)
    mech = rng.choice(len(names), size=(n_acc, k), p=probs / probs.sum())
    mech_codes = np.asarray([MECHANISMS.index(n) for n in names])[mech]

    lead_min = np.zeros((n_acc, k))
    kind = np.zeros((n_acc, k), dtype=np.int64)
    sudden_names = list(SUDDEN_KINDS)
    sudden_p = np.asarray(list(SUDDEN_KINDS.values()))
    sudden_kind = rng.choice(len(sudden_names), size=(n_acc, k), p=sudden_p / sudden_p.sum())
    for code, name in enumerate(MECHANISMS):
        hit = mech_codes == code
        if name in LEAD_TIMES:
            lead_min[hit] = _lognormal(rng, LEAD_TIMES[name], hit.sum())
            kind[hit] = FAULT_CODES.index(ONSET_KIND[name])
        elif name == "sudden":
            kind[hit] = np.asarray([FAULT_CODES.index(s) for s in sudden_names])[sudden_kind[hit]]
    down_min = np.zeros((n_acc, k))
    for code, name in enumerate(FAULT_CODES):
        hit = kind == code
        if name in DOWNTIMES:
            down_min[hit] = _lognormal(rng, DOWNTIMES[name], hit.sum())
    lead = np.where(lead_min > 0, np.maximum(1, np.round(lead_min / config.dt_min)), 0).astype(
        np.int64
    )
    down = np.maximum(1, np.round(down_min / config.dt_min)).astype(np.int64)
    # Precursor strength: some leaks are loud, some barely visible.
    amp = np.clip(np.exp(rng.normal(0.0, 0.5, size=(n_acc, k))), 0.25, 2.5)
    # Memory-leak curvature and the account's memory headroom are drawn per episode.
    curve = rng.uniform(1.0, 1.6, size=(n_acc, k))

    acc, idx, start, onset = _renewal(rng, n_acc, n_steps, rate, down, lead)
    return _stream(
        n_acc,
        account=acc,
        start=start,
        onset=onset,
        end=onset + down[acc, idx],
        code=mech_codes[acc, idx],
        kind=kind[acc, idx],
        amp=amp[acc, idx],
        aux=curve[acc, idx],
    )


def lookalike_stream(
    config: SimConfig, layout: FleetLayout, rng: np.random.Generator
) -> EpisodeStream:
    """Benign episodes that resemble precursors but end without any fault."""
    n_acc = layout.n_accounts
    rate = config.lookalike_rate_per_day / (1440.0 / config.dt_min)
    k = int(np.ceil(config.days * config.lookalike_rate_per_day * 3)) + 4
    code = rng.integers(1, len(LOOKALIKES), size=(n_acc, k))
    dur_min = np.select(
        [code == 1, code == 2, code == 3, code == 4],
        [
            rng.uniform(60, 600, (n_acc, k)),
            rng.uniform(10, 180, (n_acc, k)),
            rng.uniform(5, 30, (n_acc, k)),
            rng.uniform(60, 720, (n_acc, k)),
        ],
    )
    dur = np.maximum(1, np.round(dur_min / config.dt_min)).astype(np.int64)
    zero = np.zeros_like(dur)
    acc, idx, start, _ = _renewal(rng, n_acc, config.n_steps, rate, dur, zero)
    amp = np.clip(np.exp(rng.normal(0.0, 0.5, size=(n_acc, k))), 0.25, 2.5)
    # memory_growth ramps for the first part of the window, then plateaus
    ramp = np.maximum(1, (dur * rng.uniform(0.3, 0.8, (n_acc, k))).astype(np.int64))
    return _stream(
        n_acc,
        account=acc,
        start=start,
        onset=start + ramp[acc, idx],
        end=start + dur[acc, idx],
        code=code[acc, idx],
        amp=amp[acc, idx],
        aux=rng.uniform(150, 600, len(acc)),  # memory_growth plateau, MiB
    )


def enforcement_stream(
    config: SimConfig, layout: FleetLayout, rng: np.random.Generator
) -> EpisodeStream:
    """Complaint waves: user blocks ramp up; some end in quality_drop, restricted or banned."""
    n_acc = layout.n_accounts
    rate = config.enforcement_rate_per_day / (1440.0 / config.dt_min)
    k = int(np.ceil(config.days * config.enforcement_rate_per_day * 3)) + 2
    names = [n for n, _ in config.enforcement_outcomes]
    probs = np.asarray([p for _, p in config.enforcement_outcomes], dtype=float)
    outcome = np.asarray([ENFORCEMENT.index(n) for n in names])[
        rng.choice(len(names), size=(n_acc, k), p=probs / probs.sum())
    ]
    lead = np.maximum(
        1,
        np.round(
            _lognormal(rng, LogNormalMinutes(720, 0.7, 120, 2880), (n_acc, k)) / config.dt_min
        ),
    ).astype(np.int64)
    restrict = np.round(rng.uniform(*config.restriction_h, (n_acc, k)) * 60 / config.dt_min)
    settle = np.round(rng.uniform(120, 720, (n_acc, k)) / config.dt_min)
    after = np.where(outcome == 2, restrict, np.where(outcome == 3, 10 * config.n_steps, settle))
    after = np.maximum(1, after).astype(np.int64)
    acc, idx, start, onset = _renewal(rng, n_acc, config.n_steps, rate, after, lead)
    oc = outcome[acc, idx]
    # A wave that ends in enforcement has a stronger complaint ramp than a benign one.
    peak = np.where(oc == 0, rng.uniform(3, 8, len(acc)), rng.uniform(10, 40, len(acc)))
    stream = _stream(
        n_acc, account=acc, start=start, onset=onset, end=onset + after[acc, idx], code=oc, amp=peak
    )
    # A banned account stays banned: no later waves.
    real = stream.real
    banned_at = np.full(n_acc, FAR)
    np.minimum.at(
        banned_at,
        stream.account[real & (stream.code == 3)],
        stream.onset[real & (stream.code == 3)],
    )
    drop = real & (stream.start > banned_at[stream.account])
    if drop.any():
        rows = stream.rows()
        keep = ~drop[real]
        return _stream(n_acc, **{k_: v[keep] for k_, v in rows.items()})
    return stream


def maintenance_stream(
    config: SimConfig, layout: FleetLayout, rng: np.random.Generator
) -> EpisodeStream:
    """Planned maintenance: about once per ``maintenance_every_days`` per account, local night."""
    n_acc, n_steps = layout.n_accounts, config.n_steps
    period = config.maintenance_every_days
    if period <= 0:
        return _stream(n_acc, account=np.zeros(0, dtype=np.int64))
    n_periods = int(np.ceil(config.days / period)) + 1
    start0 = config.start_ts
    minute0 = start0.hour * 60 + start0.minute
    offset = layout.utc_offset_h[layout.group_index]
    acc = np.repeat(np.arange(n_acc), n_periods)
    per = np.tile(np.arange(n_periods), n_acc)
    day = per * period + rng.integers(0, max(1, int(period)), size=len(acc))
    local_min = rng.uniform(120, 240, len(acc))  # 02:00-04:00 local
    start_min = day * 1440 + local_min - offset[acc] * 60 - minute0
    start = np.floor(start_min / config.dt_min).astype(np.int64)
    dur = np.maximum(1, np.round(rng.uniform(*config.maintenance_min, len(acc)) / config.dt_min))
    keep = (start >= 0) & (start < n_steps)
    return _stream(
        n_acc,
        account=acc[keep],
        start=start[keep],
        onset=start[keep],
        end=start[keep] + dur[keep].astype(np.int64),
    )


def exporter_stream(
    config: SimConfig, layout: FleetLayout, rng: np.random.Generator
) -> EpisodeStream:
    """Exporter trouble, no fault: gaps (code 1, no samples), restarts (code 2, counter reset)."""
    n_acc = layout.n_accounts
    rate = (config.gap_rate_per_day + config.exporter_restart_rate_per_day) / (
        1440.0 / config.dt_min
    )
    if not config.nuisance or rate <= 0:
        return _stream(n_acc, account=np.zeros(0, dtype=np.int64))
    k = int(np.ceil(config.days * rate * 1440 / config.dt_min * 3)) + 3
    p_gap = config.gap_rate_per_day / (
        config.gap_rate_per_day + config.exporter_restart_rate_per_day
    )
    code = np.where(rng.random((n_acc, k)) < p_gap, 1, 2)
    dur = np.where(code == 1, np.round(rng.uniform(2, 20, (n_acc, k)) / config.dt_min), 1)
    dur = np.maximum(1, dur).astype(np.int64)
    acc, idx, start, _ = _renewal(rng, n_acc, config.n_steps, rate, dur, np.zeros_like(dur))
    return _stream(
        n_acc, account=acc, start=start, onset=start, end=start + dur[acc, idx], code=code[acc, idx]
    )


@dataclass
class Schedule:
    faults: EpisodeStream
    lookalikes: EpisodeStream
    enforcement: EpisodeStream
    maintenance: EpisodeStream
    exporter: EpisodeStream


def generate_schedule(config: SimConfig, layout: FleetLayout, rng: np.random.Generator) -> Schedule:
    streams = rng.spawn(5)
    return Schedule(
        faults=fault_stream(config, layout, streams[0]),
        lookalikes=lookalike_stream(config, layout, streams[1]),
        enforcement=enforcement_stream(config, layout, streams[2]),
        maintenance=maintenance_stream(config, layout, streams[3]),
        exporter=exporter_stream(config, layout, streams[4]),
    )
