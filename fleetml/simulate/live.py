"""Stream a simulated fleet to a running fleetml server over HTTP, paced against the wall clock."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np
import pandas as pd

from fleetml.simulate.config import COUNTERS, METRIC_NAMES, SimConfig
from fleetml.simulate.engine import FleetSimulator
from fleetml.simulate.policy import Policy, ReactiveBaselinePolicy

_RETRYABLE_STATUS = frozenset({429, 502, 503, 504})


class LiveStreamError(RuntimeError):
    """The server refused a batch or stayed unreachable after the retries."""


@dataclass
class LiveStats:
    steps: int = 0
    samples_sent: int = 0
    events_sent: int = 0
    batches: int = 0
    retries: int = 0
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "steps": self.steps,
            "samples_sent": self.samples_sent,
            "events_sent": self.events_sent,
            "batches": self.batches,
            "retries": self.retries,
            "interrupted": self.interrupted,
        }


def live_start(days: float, speed: float, now: pd.Timestamp | None = None) -> pd.Timestamp:
    """Simulated start time so the simulated clock reaches the wall clock exactly at the end.

    At ``speed`` simulated seconds per wall second the simulated clock runs ahead of real time;
    starting ``days * (1 - 1/speed)`` in the past means no sample is ever stamped in the future
    (the server rejects those).
    """
    now = now or pd.Timestamp.now(tz="UTC")
    lag = pd.Timedelta(days=days) * max(0.0, 1.0 - 1.0 / max(speed, 1e-9))
    return (now - lag).floor("s")


def _iso(ts_ms: int) -> str:
    return pd.Timestamp(ts_ms, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class LiveStreamer:
    """Send each step's samples and events; ``speed`` = simulated seconds per wall second."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        api_key: str | None,
        speed: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.client = client
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.speed = speed
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.clock = clock
        self.stats = LiveStats()

    def _send(self, method: str, path: str, body: dict | None) -> httpx.Response:
        delay = self.backoff_s
        for attempt in range(self.max_retries + 1):
            try:
                response = self.client.request(method, path, json=body, headers=self.headers)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in _RETRYABLE_STATUS:
                    raise LiveStreamError(
                        f"{method} {path} was refused with HTTP {response.status_code}: "
                        f"{response.text[:500]}"
                    )
                problem = f"HTTP {response.status_code}"
            if attempt == self.max_retries:
                raise LiveStreamError(
                    f"{method} {self.client.base_url}{path} failed {self.max_retries + 1} times "
                    f"(last: {problem}); is `fleetml serve` running at that address?"
                )
            self.stats.retries += 1
            self.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def declare_counters(self) -> None:
        """Make sure the simulator's counters are declared as counters.

        Declaring kinds is an admin setting: a runtime key can only check. When they are not
        declared yet and the key may not declare them, the stream stops before sending anything,
        since counters read as gauges would skew every model trained on the stream.
        """
        try:
            kinds = self._send("GET", "/v1/metric-kinds", None).json().get("kinds") or {}
        except ValueError:  # not JSON: declare them all
            kinds = {}
        missing = sorted(c for c in COUNTERS if kinds.get(c) != "counter")
        if not missing:
            return
        try:
            self._send("PUT", "/v1/metric-kinds", {"kinds": dict.fromkeys(missing, "counter")})
        except LiveStreamError as exc:
            if "HTTP 403" not in str(exc):
                raise
            flags = " ".join(f"--counter {c}" for c in missing)
            raise LiveStreamError(
                f"the simulator's counters ({', '.join(missing)}) are not declared as counters "
                "and this key may not declare them (metric kinds are an admin setting); run "
                f"`fleetml metrics kinds {flags}` or stream once with an admin key"
            ) from None

    def send_step(self, sim: FleetSimulator, obs) -> None:
        values = np.stack([obs.raw_metrics[m] for m in METRIC_NAMES], axis=1)
        present = ~np.isnan(values).all(axis=1)
        ts = _iso(obs.ts_ms)
        samples = [
            {
                "account_id": sim.layout.account_ids[i],
                "ts": ts,
                "values": {
                    m: (None if math.isnan(v) else float(v))
                    for m, v in zip(METRIC_NAMES, values[i].tolist(), strict=True)
                },
            }
            for i in np.flatnonzero(present)
        ]
        if samples:
            self._send("POST", "/v1/metrics?register=true", {"samples": samples})
            self.stats.samples_sent += len(samples)
            self.stats.batches += 1
        if obs.raw_events:
            events = [
                {
                    "account_id": e["account_id"],
                    "ts": _iso(e["ts_ms"]),
                    "kind": e["kind"],
                    "detail": e["detail"],
                }
                for e in obs.raw_events
            ]
            self._send("POST", "/v1/events", {"events": events})
            self.stats.events_sent += len(events)
            self.stats.batches += 1

    def run(
        self, sim: FleetSimulator, policy: Policy, *, max_steps: int | None = None
    ) -> LiveStats:
        """Drive ``sim`` with ``policy`` to the end (or ``max_steps``), streaming every step."""
        self.declare_counters()
        obs = sim.reset()
        wall0 = self.clock()
        per_step = sim.config.step_s / self.speed
        try:
            while not sim.done and (max_steps is None or self.stats.steps < max_steps):
                obs = sim.step(policy.decide(obs)).observation
                self.stats.steps += 1
                wait = wall0 + self.stats.steps * per_step - self.clock()
                if wait > 0:
                    self.sleep(wait)
                self.send_step(sim, obs)
        except KeyboardInterrupt:
            self.stats.interrupted = True
        return self.stats


def stream_live(
    config: SimConfig,
    seed: int,
    *,
    url: str,
    api_key: str | None,
    speed: float,
    policy: Policy | None = None,
    transport: httpx.BaseTransport | None = None,
    **kwargs,
) -> LiveStats:
    """Simulate ``config`` and stream it to ``url`` in (scaled) real time."""
    sim = FleetSimulator(config, seed, record=False)
    with httpx.Client(base_url=url, timeout=30.0, transport=transport) as client:
        streamer = LiveStreamer(client, api_key=api_key, speed=speed, **kwargs)
        return streamer.run(sim, policy or ReactiveBaselinePolicy())
