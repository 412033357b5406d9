"""Parameters of the fleet simulator and the metrics it exports.

Every number that shapes a run lives in :class:`SimConfig` (a frozen dataclass) or in the
mechanism tables below, so a run is fully described by ``(config, seed)`` and can be written
into its ground truth. Durations are in minutes unless a name says otherwise.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import pandas as pd


class MetricSpec(NamedTuple):
    unit: str
    kind: str  # "gauge" or "counter", as a real runtime exports it
    description: str


#: The metrics every simulated account exports, in file column order.
METRICS: dict[str, MetricSpec] = {
    "msgs_sent": MetricSpec(
        "messages", "counter", "Send attempts handed to the platform since process start."
    ),
    "msgs_delivered": MetricSpec(
        "messages",
        "counter",
        "Messages the platform acknowledged as delivered since process start.",
    ),
    "send_failures": MetricSpec(
        "messages",
        "counter",
        "Send attempts that failed plus queued messages that expired, since process start.",
    ),
    "delivery_latency_p50_ms": MetricSpec(
        "ms", "gauge", "Median enqueue-to-delivery time over the last interval (NaN if none)."
    ),
    "delivery_latency_p95_ms": MetricSpec(
        "ms", "gauge", "95th percentile enqueue-to-delivery time over the last interval."
    ),
    "queue_depth": MetricSpec(
        "messages", "gauge", "Messages waiting in the account's outbound queue."
    ),
    "disconnects": MetricSpec(
        "events", "counter", "Websocket disconnects from the platform since process start."
    ),
    "reconnect_ms": MetricSpec(
        "ms", "gauge", "Duration of the most recent reconnect (0 before the first one)."
    ),
    "rate_limit_hits": MetricSpec(
        "responses", "counter", "Rate-limit responses from the platform since process start."
    ),
    "cpu_pct": MetricSpec(
        "percent", "gauge", "CPU use of the bot process over the last interval, 0-100."
    ),
    "mem_mb": MetricSpec("MiB", "gauge", "Resident memory of the bot process."),
    "ws_rtt_ms": MetricSpec("ms", "gauge", "Websocket ping round-trip time to the platform."),
    "user_blocks": MetricSpec(
        "users", "counter", "Recipients who blocked or reported the number since process start."
    ),
}
METRIC_NAMES: tuple[str, ...] = tuple(METRICS)
COUNTERS: tuple[str, ...] = tuple(n for n, s in METRICS.items() if s.kind == "counter")
GAUGES: tuple[str, ...] = tuple(n for n, s in METRICS.items() if s.kind == "gauge")


class LogNormalMinutes(NamedTuple):
    """A log-normal duration: ``median`` minutes, log-space ``sigma``, clipped to [lo, hi]."""

    median: float
    sigma: float
    lo: float
    hi: float


#: Precursor mechanisms: lead time (precursor start -> onset) and the fault kind at onset.
LEAD_TIMES: dict[str, LogNormalMinutes] = {
    "memory_leak": LogNormalMinutes(360, 0.9, 30, 2880),
    "session_decay": LogNormalMinutes(720, 0.8, 60, 4320),
    "network_degradation": LogNormalMinutes(45, 0.8, 5, 480),
    "host_degradation": LogNormalMinutes(120, 0.7, 10, 720),
}
ONSET_KIND: dict[str, str] = {
    "memory_leak": "crash",
    "session_decay": "logout",
    "network_degradation": "disconnect",
    "host_degradation": "unreachable",
    "overload": "degraded",
}
#: Kinds of the sudden faults (no precursor at all) and their probabilities.
SUDDEN_KINDS: dict[str, float] = {
    "crash": 0.4,
    "disconnect": 0.3,
    "unreachable": 0.2,
    "logout": 0.1,
}
#: Time from onset to recovery per fault kind.
DOWNTIMES: dict[str, LogNormalMinutes] = {
    "crash": LogNormalMinutes(3, 0.6, 1, 20),
    "logout": LogNormalMinutes(45, 0.8, 10, 480),
    "disconnect": LogNormalMinutes(10, 0.7, 2, 60),
    "unreachable": LogNormalMinutes(30, 0.8, 5, 240),
    "degraded": LogNormalMinutes(30, 0.6, 10, 120),
}
#: Fault kinds after which the bot process restarts (counters reset to zero).
RESTART_KINDS: frozenset[str] = frozenset({"crash", "logout", "unreachable"})
#: Fault kinds during which no samples are exported (the exporter is down with the process/host).
SILENT_KINDS: frozenset[str] = frozenset({"crash", "unreachable"})


@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes a simulated fleet. ``SimConfig()`` is the sample-data fleet."""

    masters: int = 10
    servants: int = 3
    days: float = 7.0
    step_s: int = 60
    start: str = "2026-01-05T00:00:00Z"  # a Monday, UTC

    # --- load -----------------------------------------------------------------------------
    capacity_range: tuple[float, float] = (40.0, 100.0)  # master msgs/min
    servant_capacity_ratio: tuple[float, float] = (0.6, 1.0)
    peak_utilisation: tuple[float, float] = (0.45, 0.7)  # group demand at daily peak / capacity
    trend_per_day: tuple[float, float] = (0.003, 0.005)  # mean, sd of the log-demand daily drift
    noise_sigma: float = 0.15  # stationary sd of log-demand noise
    noise_corr_min: float = 20.0  # AR(1) correlation time of demand noise
    campaign_rate_per_day: float = 0.3  # per group
    burst_rate_per_day: float = 1.0  # per group
    holiday_rate_per_day: float = 1 / 30  # fleet-wide
    utc_offsets_h: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.5, -3.0, -5.0)

    # --- faults and enforcement -----------------------------------------------------------
    fault_rate_per_day: float = 0.15  # exogenous technical faults per account-day
    fault_mix: tuple[tuple[str, float], ...] = (
        ("memory_leak", 0.22),
        ("session_decay", 0.18),
        ("network_degradation", 0.20),
        ("host_degradation", 0.15),
        ("sudden", 0.25),
    )
    overload_warn_utilisation: float = 0.85  # precursor start of an overload episode
    overload_trip_utilisation: float = 1.05  # the platform throttles above this (EWMA)
    overload_hazard_per_min: float = 0.003  # throttle hazard per 0.05 of EWMA above the trip level
    enforcement_rate_per_day: float = 0.02  # complaint waves per account-day
    enforcement_outcomes: tuple[tuple[str, float], ...] = (
        ("none", 0.3),
        ("quality_drop", 0.3),
        ("restricted", 0.3),
        ("banned", 0.1),
    )
    restriction_h: tuple[float, float] = (12.0, 48.0)

    # --- operations and benign anomalies --------------------------------------------------
    maintenance_every_days: float = 7.0
    maintenance_min: tuple[float, float] = (10.0, 40.0)
    lookalike_rate_per_day: float = 0.3  # benign precursor look-alikes per account-day
    queue_ttl_min: float = 60.0  # queued messages older than this expire (count as failures)

    # --- nuisance in exported data --------------------------------------------------------
    nuisance: bool = True
    missing_rate: float = 0.003
    gap_rate_per_day: float = 0.2
    nan_cell_rate: float = 0.001
    duplicate_rate: float = 0.002
    late_rate: float = 0.001
    clock_jitter_s: float = 1.0
    exporter_restart_rate_per_day: float = 0.05

    # --- closed loop ----------------------------------------------------------------------
    failover_needed_horizon_min: float = 60.0

    def __post_init__(self) -> None:
        if self.masters < 1 or self.servants < 0:
            raise ValueError(
                f"need masters >= 1 and servants >= 0, got {self.masters}, {self.servants}"
            )
        if self.days <= 0:
            raise ValueError(f"days must be positive, got {self.days}")
        if not 1 <= self.step_s <= 3600:
            raise ValueError(f"step_s must be within 1..3600 seconds, got {self.step_s}")

    @property
    def n_accounts(self) -> int:
        return self.masters * (1 + self.servants)

    @property
    def n_steps(self) -> int:
        return max(1, int(round(self.days * 86400 / self.step_s)))

    @property
    def dt_min(self) -> float:
        return self.step_s / 60.0

    @property
    def start_ts(self) -> pd.Timestamp:
        ts = pd.Timestamp(self.start)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

    def steps(self, minutes: float) -> int:
        """Minutes to a whole number of steps (at least one)."""
        return max(1, int(round(minutes / self.dt_min)))

    def with_(self, **changes) -> SimConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


_STEP_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$")


def parse_step(text: str | int) -> int:
    """Parse ``30s``, ``1m``, ``5min``, ``1h`` (or plain seconds) into whole seconds."""
    if isinstance(text, int):
        return text
    match = _STEP_RE.match(str(text))
    if not match:
        raise ValueError(f"step {text!r} is not a duration; use e.g. 30s, 1m, 5m or 1h")
    value = float(match.group(1))
    unit = match.group(2) or "s"
    seconds = value * {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[unit]
    if seconds != int(seconds) or not 1 <= seconds <= 3600:
        raise ValueError(f"step {text!r} must be a whole number of seconds within 1s..1h")
    return int(seconds)
