"""The step-wise fleet simulator: routing, queueing, faults and the metrics a runtime exports.

One :class:`FleetSimulator` holds the whole fleet as arrays indexed by account; each
:meth:`FleetSimulator.step` advances every account by one step at once (vectorised numpy, a Python
loop only over time). Everything exogenous (demand, fault and enforcement schedules, noise) comes
from seeded streams drawn independently of the policy, so two policies run on the same seed face
the same world.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fleetml.simulate.config import (
    COUNTERS,
    DOWNTIMES,
    METRIC_NAMES,
    RESTART_KINDS,
    SILENT_KINDS,
    SimConfig,
)
from fleetml.simulate.fleet import FleetLayout, build_layout
from fleetml.simulate.load import Demand, generate_demand
from fleetml.simulate.policy import Actions, SimObservation
from fleetml.simulate.schedule import (
    ENFORCEMENT,
    FAULT_CODES,
    MECHANISMS,
    EpisodeStream,
    Schedule,
    generate_schedule,
)

_M = {name: i for i, name in enumerate(METRIC_NAMES)}
_COUNTER_IDX = np.asarray([_M[c] for c in COUNTERS])
_RESTART_CODES = np.asarray([FAULT_CODES.index(k) for k in RESTART_KINDS])
_SILENT_CODES = np.asarray([FAULT_CODES.index(k) for k in SILENT_KINDS])
_STORM = FAULT_CODES.index("disconnect")
_CHUNK = 1440
_KEY = np.int64(2**42)
_LN2, _LN20 = np.log(2.0), np.log(20.0)

_FAULT_DETAIL = {
    ("memory_leak", "crash"): "process exited: out of memory",
    ("session_decay", "logout"): "session logged out by the platform",
    ("network_degradation", "disconnect"): "connection lost; reconnect attempts failing",
    ("host_degradation", "unreachable"): "host did not answer health checks",
    ("sudden", "crash"): "process exited unexpectedly",
    ("sudden", "logout"): "session logged out by the platform",
    ("sudden", "disconnect"): "connection lost; reconnect attempts failing",
    ("sudden", "unreachable"): "host did not answer health checks",
}


@dataclass
class StepResult:
    """Outcome of one step: the new observation and the traffic that moved."""

    observation: SimObservation
    demand: float  # messages that arrived this step (all groups)
    delivered: float
    failed: float
    deferred: float  # backlog after the step: account queues + unroutable group demand
    done: bool


#: Where a failed message was lost, in the order an account's state is tested:
#: ``enforcement_hold``: on a restricted/banned number or one a policy holds for enforcement (its
#: share stays on it by rule, so no routing can save these); ``down``: on a number down for a
#: fault or maintenance; ``throttled``: on a number the platform throttles for overload;
#: ``queue_overflow``: expired in the queue of a number that was up (more traffic than it could
#: send within the TTL); ``send_error``: send attempts that failed (per-send errors, faults'
#: error bursts, rate-limit hits) on numbers not counted above; ``unroutable``: a group's demand
#: that no number could take, expired.
FAILURE_CAUSES = (
    "enforcement_hold",
    "down",
    "throttled",
    "queue_overflow",
    "send_error",
    "unroutable",
)


@dataclass
class _Totals:
    demand: float = 0.0
    delivered: float = 0.0
    failed: float = 0.0
    expired: float = 0.0
    misrouted: float = 0.0  # sent to an account that was down at the time
    enforced_held: float = 0.0  # routed to a restricted/banned account (pinned share)
    violations: int = 0
    #: ``failed`` split by where the message was lost (see :data:`FAILURE_CAUSES`)
    failed_by_cause: dict = field(default_factory=lambda: dict.fromkeys(FAILURE_CAUSES, 0.0))
    latency_hist: np.ndarray = field(default_factory=lambda: np.zeros(_N_BINS + 2))
    latency95_hist: np.ndarray = field(default_factory=lambda: np.zeros(_N_BINS + 2))


_N_BINS = 240
_LAT_EDGES = np.geomspace(10.0, 3.6e6, _N_BINS + 1)


class FleetSimulator:
    """A simulated fleet of bot accounts that a policy can drive step by step.

    Examples
    --------
    >>> sim = FleetSimulator(SimConfig(masters=2, days=0.1), seed=1)
    >>> obs = sim.reset()
    >>> while not sim.done:
    ...     obs = sim.step(Actions()).observation
    """

    def __init__(self, config: SimConfig | None = None, seed: int = 0, *, record: bool = True):
        self.config = config or SimConfig()
        self.seed = int(seed)
        self.record = record
        root = np.random.SeedSequence(self.seed)
        s_layout, s_demand, s_sched, s_params, s_noise, s_events, s_out = root.spawn(7)
        self._noise_seed, self._events_seed, self.output_seed = s_noise, s_events, s_out
        self.layout: FleetLayout = build_layout(self.config, np.random.default_rng(s_layout))
        self.demand: Demand = generate_demand(
            self.config, self.layout, np.random.default_rng(s_demand)
        )
        self.schedule: Schedule = generate_schedule(
            self.config, self.layout, np.random.default_rng(s_sched)
        )
        self._draw_params(np.random.default_rng(s_params))
        self._start_ms = int(self.config.start_ts.value // 1_000_000)
        self._step_ms = self.config.step_s * 1000
        self._group_capacity = np.bincount(self.layout.group_index, self.layout.capacity)
        self._restart_points = self._build_restart_points()
        self._scheduled_events = self._build_scheduled_events()
        self.reset()

    # ------------------------------------------------------------------ setup
    def _draw_params(self, rng: np.random.Generator) -> None:
        n = self.layout.n_accounts
        cap = self.layout.capacity
        self.base_fail = np.exp(rng.normal(np.log(0.003), 0.4, n))
        self.base_rtt = rng.uniform(60, 180, n)
        self.cpu_base = rng.uniform(3, 10, n)
        self.cpu_per_util = rng.uniform(40, 60, n)
        self.mem_base = rng.uniform(250, 500, n)
        self.mem_headroom = rng.uniform(900, 1600, n)  # memory limit - base
        self.base_disc_per_min = rng.uniform(0.1, 0.5, n) / 1440.0
        self.rec_base_ms = rng.uniform(400, 1200, n)
        self.block_p = np.exp(rng.normal(np.log(1.5e-4), 0.5, n))
        self.rate_limit = cap * rng.uniform(1.05, 1.25, n)
        self.platform_ms = rng.uniform(150, 400, n)

    def _build_restart_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(step, account) where the bot process restarts and its counters reset to zero."""
        S = self.schedule
        f, m, x = S.faults.rows(), S.maintenance.rows(), S.exporter.rows()
        restarts_f = np.isin(f["kind"], _RESTART_CODES)
        steps = np.concatenate([f["end"][restarts_f], m["end"], x["start"][x["code"] == 2]])
        accounts = np.concatenate(
            [f["account"][restarts_f], m["account"], x["account"][x["code"] == 2]]
        )
        order = np.argsort(steps, kind="stable")
        return steps[order].astype(np.int64), accounts[order].astype(np.int64)

    def _build_scheduled_events(self) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        """Exogenous events (fault onsets, maintenance, enforcement) sorted by step."""
        steps, accounts, kinds, details = [], [], [], []
        f = self.schedule.faults.rows()
        for a, on, mech, kind in zip(f["account"], f["onset"], f["code"], f["kind"], strict=True):
            k = FAULT_CODES[kind]
            steps.append(on), accounts.append(a), kinds.append(k)
            details.append(_FAULT_DETAIL.get((MECHANISMS[mech], k), k))
        m = self.schedule.maintenance.rows()
        for a, st, en in zip(m["account"], m["start"], m["end"], strict=True):
            steps += [st, en]
            accounts += [a, a]
            kinds += ["maintenance_start", "maintenance_end"]
            details += ["planned maintenance", "planned maintenance"]
        e = self.schedule.enforcement.rows()
        for a, st, on, code in zip(e["account"], e["start"], e["onset"], e["code"], strict=True):
            name = ENFORCEMENT[code]
            if name == "none":
                continue
            if name in ("restricted", "banned"):
                steps.append(st + int(round(0.7 * (on - st))))
                accounts.append(a), kinds.append("quality_drop")
                details.append("quality rating lowered by the platform")
            steps.append(on), accounts.append(a), kinds.append(name)
            details.append(
                {
                    "quality_drop": "quality rating lowered by the platform",
                    "restricted": "number restricted by the platform",
                    "banned": "number banned by the platform",
                }[name]
            )
        steps_a = np.asarray(steps, dtype=np.int64)
        keep = (steps_a >= 0) & (steps_a < self.config.n_steps)
        order = np.argsort(steps_a[keep], kind="stable")
        idx = np.flatnonzero(keep)[order]
        return (
            steps_a[idx],
            np.asarray(accounts, dtype=np.int64)[idx],
            [kinds[i] for i in idx],
            [details[i] for i in idx],
        )

    # ------------------------------------------------------------------ state
    def reset(self) -> SimObservation:
        """Restart the run from step 0 (same world, same seed) and return the first observation."""
        cfg, n = self.config, self.layout.n_accounts
        self.t = 0
        self._noise_rng = np.random.default_rng(self._noise_seed)
        self._event_rng = np.random.default_rng(self._events_seed)
        self.queue = np.zeros(n)
        self.held = np.zeros(self.layout.n_groups)
        self.cum = np.zeros((len(COUNTERS), n))
        self.last_reconnect = np.zeros(n)
        self.ewma_util = np.zeros(n)
        self.warn_since = np.full(n, -1, dtype=np.int64)
        self.throttle_end = np.full(n, -1, dtype=np.int64)
        self.in_rotation = np.ones(n, dtype=bool)
        self.paused = np.zeros(n, dtype=bool)
        self.draining = np.zeros(n, dtype=bool)
        self.known_enforced = np.zeros(n, dtype=bool)
        self.weights = self.layout.capacity.astype(float)
        self.hold = np.zeros(n, dtype=bool)  # enforcement hold: share pinned, never moved
        self.rate_cap = np.full(n, np.inf)  # msgs/min a throttle action allows
        self.restarts = 0
        self.last_share = (
            self.weights
            / np.bincount(self.layout.group_index, self.weights)[self.layout.group_index]
        )
        self.pin_share = np.zeros(n)
        self.prev_counters = np.full((len(COUNTERS), n), np.nan)
        self._keep = float(np.exp(-cfg.dt_min / cfg.queue_ttl_min))
        self._ttl_cap = self.layout.capacity * cfg.queue_ttl_min
        self._ewma_gain = float(1.0 - np.exp(-cfg.dt_min / 15.0))
        self._event_ptr = 0
        self.totals = _Totals()
        self._lat_buf = np.zeros((3, _CHUNK, n), dtype=np.float32)
        self._lat_rows = 0
        self._lat_from = 0  # rows before this one were already flushed (a mid-chunk flush)
        self.down_steps = np.zeros(n, dtype=np.int64)
        self.events: list[tuple[int, int, str, str]] = []
        self.overload_faults: list[dict] = []
        self.failover_log: list[dict] = []
        if self.record:
            self.rec = np.full((len(METRIC_NAMES), cfg.n_steps, n), np.nan, dtype=np.float32)
            self.rec_present = np.zeros((cfg.n_steps, n), dtype=bool)
        self._last_obs = self._observation(
            step=-1,
            metrics={m: np.full(n, np.nan) for m in METRIC_NAMES},
            deltas={c: np.full(n, np.nan) for c in COUNTERS},
            health=np.ones(n, dtype=bool),
            events=[],
            group_demand=np.zeros(self.layout.n_groups),
        )
        return self._last_obs

    @property
    def done(self) -> bool:
        return self.t >= self.config.n_steps

    def ts_ms(self, step: int) -> int:
        """Epoch milliseconds of a step."""
        return self._start_ms + int(step) * self._step_ms

    def _observation(
        self, *, step, metrics, deltas, health, events, group_demand
    ) -> SimObservation:
        return SimObservation(
            step=step,
            ts_ms=self.ts_ms(step),
            layout=self.layout,
            metrics=metrics,
            deltas=deltas,
            state={
                "in_rotation": self.in_rotation.copy(),
                "paused": self.paused.copy(),
                "draining": self.draining.copy(),
                "enforced": self.known_enforced.copy(),
                "health_ok": health,
                "weight": self.weights.copy(),
            },
            events=events,
            group_demand=group_demand,
            step_s=self.config.step_s,
        )

    # ------------------------------------------------------------------ actions
    def _indices(self, items) -> np.ndarray:
        out = [self.layout.index_of(i) if isinstance(i, str) else int(i) for i in items]
        return np.asarray(out, dtype=np.int64)

    def _apply(self, actions: Actions, t: int, enforced: np.ndarray, emit) -> None:
        if actions.weights is not None:
            w = actions.weights
            if isinstance(w, np.ndarray) or not hasattr(w, "items"):
                raise TypeError(
                    "Actions.weights maps account ids to weights "
                    f"(e.g. {{'{self.layout.account_ids[0]}': 1.0}}), got {type(w).__name__}"
                )
            if w:
                idx = self._indices(list(w))
                vals = np.asarray(list(w.values()), dtype=float)
                ok = np.isfinite(vals) & (vals >= 0)
                self.weights[idx[ok]] = vals[ok]
        if actions.throttle:
            idx = self._indices(list(actions.throttle))
            self.rate_cap[idx] = np.asarray(list(actions.throttle.values()), dtype=float)
        self.restarts += len(actions.restart)
        group = self.layout.group_index
        for i in self._indices(actions.failover):
            if enforced[i]:
                # Routing around platform enforcement is not allowed: refuse and count it.
                self.totals.violations += 1
                continue
            if not self.in_rotation[i]:
                continue
            self.in_rotation[i] = False
            peers = np.flatnonzero((group == group[i]) & self._routable(enforced))
            w = self.weights[peers]
            if len(peers) and w.sum() > 0:
                self.queue[peers] += self.queue[i] * w / w.sum()
                self.queue[i] = 0.0
            emit(
                i,
                "failover",
                "to=" + ",".join(self.layout.account_ids[peers]) if len(peers) else "to=none",
            )
            self.failover_log.append({"step": t, "account": int(i)})
        for i in self._indices(actions.failback):
            if not self.in_rotation[i]:
                self.in_rotation[i] = True
                emit(i, "failback", "traffic returned")
        hold = self._indices(actions.hold)
        self.hold[hold] = True
        self.paused[hold] = True
        self.draining[hold] = True
        self.paused[self._indices(actions.pause)] = True
        self.draining[self._indices(actions.drain)] = True
        res = self._indices(actions.resume)
        self.paused[res] = False
        self.draining[res] = False
        self.rate_cap[res] = np.inf
        self.hold[res] = False

    def _routable(self, enforced: np.ndarray) -> np.ndarray:
        return self.in_rotation & ~self.paused & ~self.draining & ~enforced

    # ------------------------------------------------------------------ exogenous chunk
    def _locate(self, stream: EpisodeStream, t0: int, length: int) -> np.ndarray:
        """Index of each account's current-or-next episode at steps t0..t0+length-1: (L, A)."""
        n = self.layout.n_accounts
        keys = stream.account * _KEY + stream.end
        query = np.arange(n, dtype=np.int64)[None, :] * _KEY + np.arange(t0, t0 + length)[:, None]
        return np.searchsorted(keys, query, side="right")

    def _point_mask(
        self, points: tuple[np.ndarray, np.ndarray], t0: int, length: int
    ) -> np.ndarray:
        steps, accounts = points
        mask = np.zeros((length, self.layout.n_accounts), dtype=bool)
        lo, hi = np.searchsorted(steps, [t0, t0 + length])
        mask[steps[lo:hi] - t0, accounts[lo:hi]] = True
        return mask

    def _exo_chunk(self, t0: int, length: int) -> dict[str, np.ndarray]:
        """Everything that does not depend on routing, for ``length`` steps from ``t0``.

        Episode effects are computed only on the (sparse) cells where an episode is running.
        """
        lay, S, dt = self.layout, self.schedule, self.config.dt_min
        n, cap = lay.n_accounts, lay.capacity
        rng = self._noise_rng
        shape = (length, n)
        z = rng.standard_normal((6, length, n), dtype=np.float32)
        t = np.arange(t0, t0 + length, dtype=np.int64)[:, None]
        cols = np.broadcast_to(np.arange(n), shape)

        cap_mult = np.ones(shape)
        rtt_mult = np.ones(shape)
        lat_mult = np.ones(shape)
        disc_mult = np.ones(shape)
        rec_mult = np.ones(shape)
        fail_add = np.zeros(shape)
        cpu_add = np.zeros(shape)
        mem_add = np.zeros(shape)
        block_mult = np.ones(shape)

        # --- technical faults: precursors, then the fault itself
        fi = self._locate(S.faults, t0, length)
        f_st, f_on, f_en = S.faults.start[fi], S.faults.onset[fi], S.faults.end[fi]
        f_act = (t >= f_on) & (t < f_en)
        kind = np.where(f_act, S.faults.kind[fi], 0)
        storm = kind == _STORM
        r, c = np.nonzero((t >= f_st) & (t < f_on))
        if len(r):
            e = fi[r, c]
            st, on = S.faults.start[e], S.faults.onset[e]
            p = (t0 + r - st) / np.maximum(on - st, 1)
            amp, mech = S.faults.amp[e], S.faults.code[e]
            leak, sess = (mech == 1) * amp, (mech == 2) * amp
            net, host = (mech == 3) * amp, (mech == 4) * amp
            p15, p2 = p**1.5, p * p
            p3 = p2 * p
            cap_mult[r, c] = np.clip(1.0 - 0.15 * leak * p3 - 0.5 * host * p, 0.2, 1.0)
            rtt_mult[r, c] = 1.0 + 2.5 * net * p15 + 0.8 * host * p
            lat_mult[r, c] = 1.0 + 0.3 * leak * p3 + 0.8 * net * p15 + 1.0 * host * p
            disc_mult[r, c] = 1.0 + 6.0 * sess * p2 + 15.0 * net * p2
            rec_mult[r, c] = 1.0 + 1.5 * sess * p + 5.0 * net * p
            fail_add[r, c] = 0.04 * sess * p2 + 0.02 * net * p2
            cpu_add[r, c] = 12.0 * leak * p3 + 35.0 * host * p
            mem_add[r, c] = (mech == 1) * self.mem_headroom[c] * p ** S.faults.aux[e]
        rtt_mult[storm] *= 3.0
        rec_mult[storm] *= 20.0

        # --- benign look-alikes
        li = self._locate(S.lookalikes, t0, length)
        r, c = np.nonzero((t >= S.lookalikes.start[li]) & (t < S.lookalikes.end[li]))
        if len(r):
            e = li[r, c]
            st, on, en = S.lookalikes.start[e], S.lookalikes.onset[e], S.lookalikes.end[e]
            code, amp = S.lookalikes.code[e], S.lookalikes.amp[e]
            q = (t0 + r - st) / np.maximum(en - st, 1)
            tri = (1.0 - np.abs(2.0 * q - 1.0)) * amp
            net, sess = (code == 2) * tri, (code == 4) * tri
            rtt_mult[r, c] += 1.5 * net
            lat_mult[r, c] += 0.5 * net
            disc_mult[r, c] += 5.0 * net + 3.0 * sess
            rec_mult[r, c] += 2.0 * net
            fail_add[r, c] += 0.02 * sess
            cpu_add[r, c] += 35.0 * (code == 3) * amp
            mem_add[r, c] += (
                (code == 1)
                * S.lookalikes.aux[e]
                * np.minimum(1.0, (t0 + r - st) / np.maximum(on - st, 1))
            )

        # --- complaint waves and platform enforcement
        ei = self._locate(S.enforcement, t0, length)
        e_on, e_en = S.enforcement.onset[ei], S.enforcement.end[ei]
        enforced = (t >= e_on) & (t < e_en) & (S.enforcement.code[ei] >= 2)
        r, c = np.nonzero((t >= S.enforcement.start[ei]) & (t < e_en))
        if len(r):
            e = ei[r, c]
            st, on, en = S.enforcement.start[e], S.enforcement.onset[e], S.enforcement.end[e]
            code, tt = S.enforcement.code[e], t0 + r
            pe = np.where(tt < on, (tt - st) / np.maximum(on - st, 1), 0.0)
            settle = np.where(
                (tt >= on) & (code <= 1), 1.0 - (tt - on) / np.maximum(en - on, 1), 0.0
            )
            block_mult[r, c] = 1.0 + S.enforcement.amp[e] * (pe * pe + settle)
            fail_add[r, c] += 0.03 * np.minimum(code, 2) * pe * pe

        mi = self._locate(S.maintenance, t0, length)
        maint = (t >= S.maintenance.start[mi]) & (t < S.maintenance.end[mi])
        xi = self._locate(S.exporter, t0, length)
        gap = (t >= S.exporter.start[xi]) & (t < S.exporter.end[xi]) & (S.exporter.code[xi] == 1)

        down = f_act | maint
        restart = self._point_mask(self._restart_points, t0, length)
        group_util = (self.demand.msgs[:, t0 : t0 + length].T / (self._group_capacity * dt))[
            :, lay.group_index
        ]
        noise = np.exp(z[:4] * np.asarray([0.4, 0.12, 0.1, 0.1], dtype=np.float32)[:, None, None])
        rtt = self.base_rtt * (1.0 + 0.1 * np.minimum(group_util, 2.0)) * rtt_mult * noise[1]
        net_ms = 2.0 * rtt + self.platform_ms
        a50 = lat_mult * noise[2]
        a95 = lat_mult * noise[3]

        disc = rng.poisson(self.base_disc_per_min * dt * disc_mult + storm * 0.5 * dt).astype(float)
        # reconnect_ms holds the last reconnect's duration; a restart clears it
        mark = disc > 0
        r, c = np.nonzero(mark)
        new_rec = np.zeros(shape)
        new_rec[r, c] = (
            self.rec_base_ms[c] * rec_mult[r, c] * np.exp(0.3 * rng.standard_normal(len(r)))
        )
        src = np.where(mark | restart, np.arange(length)[:, None], -1)
        last = np.maximum.accumulate(src, axis=0)
        val = new_rec[np.clip(last, 0, None), cols]
        reconnect = np.where(last >= 0, val, self.last_reconnect)
        self.last_reconnect = reconnect[-1].copy()

        return {
            "f_act": f_act,
            "down": down,
            "silent": np.isin(kind, _SILENT_CODES) | maint | gap,
            "restart": restart,
            "enforced": enforced,
            "cap": cap * dt * cap_mult * ~(down | enforced),
            "fail": self.base_fail * noise[0] * np.float32(np.exp(-0.08)) + fail_add,
            "b50": net_ms * a50,
            "a50": a50,
            "b95": 1.6 * net_ms * a95,
            "a95": a95,
            "rtt": rtt,
            "disc": disc,
            "reconnect": np.round(reconnect),
            "cpu": self.cpu_base + cpu_add + 1.5 * z[4],
            "mem": self.mem_base + mem_add + 6.0 * z[5],
            "block": self.block_p * block_mult,
            "u": rng.random(shape, dtype=np.float32),
        }

    # ------------------------------------------------------------------ the step
    def step(self, actions: Actions | None = None) -> StepResult:
        """Apply ``actions``, advance the fleet by one step and report what happened."""
        if self.done:
            raise RuntimeError("the run is over; call reset() to start again")
        cfg, lay, t, dt = self.config, self.layout, self.t, self.config.dt_min
        n, cap = lay.n_accounts, lay.capacity
        group = lay.group_index
        k = t % _CHUNK
        if k == 0:
            self._x = self._exo_chunk(t, min(_CHUNK, cfg.n_steps - t))
        x = {name: arr[k] for name, arr in self._x.items()}
        step_events: list[dict] = []
        ts_ms = self.ts_ms(t)

        def emit(i: int, kind: str, detail: str) -> None:
            self.events.append((t, int(i), kind, detail))
            step_events.append(
                {"ts_ms": ts_ms, "account_id": lay.account_ids[i], "kind": kind, "detail": detail}
            )

        # --- scheduled events, then the policy's actions --------------------------------------
        enforced = x["enforced"]
        se_steps, se_acc, se_kind, se_detail = self._scheduled_events
        while self._event_ptr < len(se_steps) and se_steps[self._event_ptr] <= t:
            j = self._event_ptr
            emit(se_acc[j], se_kind[j], se_detail[j])
            if se_kind[j] in ("restricted", "banned"):
                self.known_enforced[se_acc[j]] = True
            self._event_ptr += 1
        self.known_enforced &= enforced  # a lifted restriction shows as sends resuming
        if actions is not None:
            self._apply(actions, t, enforced, emit)
        # restricted numbers, and numbers a policy holds for enforcement, keep their share
        pin = enforced | self.hold
        self.pin_share = np.where(
            pin, np.where(self.pin_share > 0, self.pin_share, self.last_share), 0.0
        )

        # --- endogenous overload: the platform throttles a number pushed too hard --------------
        hazard = (
            cfg.overload_hazard_per_min
            * dt
            * np.maximum(0.0, self.ewma_util - cfg.overload_trip_utilisation)
            / 0.05
        )
        trip = (t >= self.throttle_end) & ~x["f_act"] & ~x["down"] & (x["u"] < hazard)
        if trip.any():
            spec = DOWNTIMES["degraded"]
            for i in np.flatnonzero(trip):
                minutes = float(
                    np.clip(
                        np.exp(self._event_rng.normal(np.log(spec.median), spec.sigma)),
                        spec.lo,
                        spec.hi,
                    )
                )
                self.throttle_end[i] = t + cfg.steps(minutes)
                precursor = int(self.warn_since[i]) if self.warn_since[i] >= 0 else t
                self.overload_faults.append(
                    {
                        "account": int(i),
                        "start": precursor,
                        "onset": t,
                        "end": int(self.throttle_end[i]),
                    }
                )
                emit(i, "degraded", "platform rate limiting: sends throttled")
        throttled = t < self.throttle_end

        # --- routing ------------------------------------------------------------------------
        w = np.where(self._routable(enforced), self.weights, 0.0)
        wsum = np.bincount(group, w, minlength=lay.n_groups)
        pinned = self.pin_share
        free = np.clip(1.0 - np.bincount(group, pinned, minlength=lay.n_groups), 0.0, 1.0)
        has = wsum > 0
        share = np.where(pin, pinned, w / np.where(has, wsum, 1.0)[group] * free[group])
        new_demand = self.demand.msgs[:, t]
        group_in = new_demand + self.held
        arrivals = group_in[group] * share
        held = group_in * free * ~has
        held_expired = held * (1.0 - self._keep)
        self.held = held - held_expired
        self.last_share = share

        # --- queueing and service -----------------------------------------------------------
        eff_cap = np.minimum(
            x["cap"] * np.where(throttled, 0.3, 1.0) * ~self.paused, self.rate_cap * dt
        )
        q_prev = self.queue
        qb = q_prev + arrivals
        attempts = np.minimum(qb, eff_cap)
        over = attempts / dt / self.rate_limit - 0.75
        rl_lam = 30.0 * dt * np.where(over > 0, over * over, 0.0) * np.where(throttled, 8.0, 1.0)
        rl_hits = self._event_rng.poisson(rl_lam).astype(float)
        fail_frac = np.minimum(x["fail"] + 0.05 * throttled, 1.0)
        failed_send = np.minimum(attempts, attempts * fail_frac + rl_hits)
        delivered = attempts - failed_send
        queue = qb - attempts
        # a queued message expires once it is older than the TTL, so a queue holds at most TTL
        # minutes of the account's *current* send rate: a throttled or degraded number sends
        # slower, and fewer of its queued messages can still go out in time (without this, a
        # throttled number delivered messages hours old). A number that cannot send at all
        # keeps the nominal bound; its queue decays at 1/TTL below.
        ttl_cap = np.where(eff_cap > 0, eff_cap / dt * cfg.queue_ttl_min, self._ttl_cap)
        expired = np.maximum(queue - ttl_cap, 0.0)
        queue -= expired
        stale = np.where(eff_cap <= 0, queue * (1.0 - self._keep), 0.0)
        queue -= stale
        expired += stale
        self.queue = queue
        failed = failed_send + expired

        # --- metrics ------------------------------------------------------------------------
        mu = np.maximum(eff_cap / dt, 1e-6)
        rho = np.minimum(arrivals / dt / mu, 0.97)
        sojourn_ms = 60000.0 / (mu * (1.0 - rho))  # M/M/1 time in system scale
        wait_ms = 60000.0 * q_prev / mu
        has_del = delivered > 0
        p50 = np.where(has_del, x["b50"] + (_LN2 * sojourn_ms + 0.5 * wait_ms) * x["a50"], np.nan)
        p95 = np.where(has_del, x["b95"] + (_LN20 * sojourn_ms + wait_ms) * x["a95"], np.nan)
        p95 = np.fmax(p95, 1.2 * p50)
        blocks = self._event_rng.poisson(delivered * x["block"]).astype(float)

        restart = x["restart"]
        if restart.any():
            self.cum[:, restart] = 0.0
        cum = self.cum
        cum[0] += attempts
        cum[1] += delivered
        cum[2] += failed
        cum[3] += x["disc"]
        cum[4] += rl_hits
        cum[5] += blocks

        silent = x["silent"]
        values = np.empty((len(METRIC_NAMES), n))
        values[_M["delivery_latency_p50_ms"]] = p50
        values[_M["delivery_latency_p95_ms"]] = p95
        values[_M["queue_depth"]] = np.round(queue)
        values[_M["reconnect_ms"]] = x["reconnect"]
        values[_M["cpu_pct"]] = np.clip(
            x["cpu"] + self.cpu_per_util * attempts / (cap * dt), 0.5, 100.0
        )
        values[_M["mem_mb"]] = x["mem"] + 0.05 * queue
        values[_M["ws_rtt_ms"]] = x["rtt"]
        values[_COUNTER_IDX] = np.floor(cum)
        values[:, silent] = np.nan
        if self.record:
            self.rec[:, t, :] = values
            self.rec_present[t] = ~silent

        # --- bookkeeping --------------------------------------------------------------------
        self.ewma_util += self._ewma_gain * (arrivals / (cap * dt) - self.ewma_util)
        warn = self.ewma_util >= cfg.overload_warn_utilisation
        self.warn_since = np.where(warn, np.where(self.warn_since < 0, t, self.warn_since), -1)

        down = x["down"]
        tot = self.totals
        n_demand = float(new_demand.sum())
        n_delivered = float(delivered.sum())
        n_held_expired = float(held_expired.sum())
        n_expired = float(expired.sum())
        n_failed = float(failed_send.sum()) + n_expired + n_held_expired
        by = tot.failed_by_cause
        lost = failed_send + expired
        rest = ~pin
        for cause, where in (
            ("enforcement_hold", pin),
            ("down", rest & down),
            ("throttled", rest & ~down & throttled),
        ):
            by[cause] += float(lost[where].sum())
            rest = rest & ~where
        by["queue_overflow"] += float(expired[rest].sum())
        by["send_error"] += float(failed_send[rest].sum())
        by["unroutable"] += n_held_expired
        tot.demand += n_demand
        tot.delivered += n_delivered
        tot.failed += n_failed
        tot.expired += n_expired + n_held_expired
        tot.misrouted += float(arrivals @ down)
        tot.enforced_held += float(arrivals @ enforced)
        buf = self._lat_buf
        buf[0, k] = p50
        buf[1, k] = p95
        buf[2, k] = delivered
        self._lat_rows = k + 1
        if k + 1 == len(self._x["u"]):
            self._flush_latency()
        self.down_steps += down | throttled

        obs_counters = values[_COUNTER_IDX]
        prev = self.prev_counters
        delta = np.where(obs_counters >= prev, obs_counters - prev, obs_counters)
        self.prev_counters = np.where(np.isnan(obs_counters), prev, obs_counters)
        obs = self._observation(
            step=t,
            metrics=dict(zip(METRIC_NAMES, values, strict=True)),
            deltas=dict(zip(COUNTERS, delta, strict=True)),
            health=~(down | throttled),
            events=step_events,
            group_demand=new_demand,
        )
        self._last_obs = obs
        self.t += 1
        return StepResult(
            observation=obs,
            demand=n_demand,
            delivered=n_delivered,
            failed=n_failed,
            deferred=self.backlog,
            done=self.done,
        )

    def _flush_latency(self) -> None:
        """Add the buffered per-step latencies to the message-weighted histograms.

        May be called mid-chunk (a caller reading the totals, e.g. at the end of a warm-up):
        only the rows not flushed yet are added, so no step is counted twice."""
        rows, start = self._lat_rows, self._lat_from
        if rows <= start:
            return
        buf = self._lat_buf[:, start:rows]
        weight = buf[2].ravel().astype(np.float64)
        # NaN latencies sort past the last edge and carry zero delivered weight
        for i, hist in ((0, self.totals.latency_hist), (1, self.totals.latency95_hist)):
            bins = np.searchsorted(_LAT_EDGES, buf[i].ravel())
            hist += np.bincount(bins, weight, minlength=_N_BINS + 2)
        self._lat_from = rows
        if rows == len(self._x["u"]):  # the chunk is complete: the next one starts at row 0
            self._lat_rows = self._lat_from = 0

    @property
    def backlog(self) -> float:
        return float(self.queue.sum() + self.held.sum())
