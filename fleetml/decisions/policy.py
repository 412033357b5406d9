"""fleetml's policy: weights, failover, failback, enforcement holds, each with its reasons.

:class:`FleetmlPolicy` is what the tick runs after scoring and what the closed loop drives the
simulated fleet with. Per tick, in this order:

1. **Enforcement** (``restricted``, ``banned``, ``quality_drop`` events, or a user-block ratio
   past ``block_ratio_hold``): the account is *held*: drained and paused with its share of the
   group's traffic kept on it (never moved to other numbers), and a ``review_enforcement``
   recommendation asks a person to decide. A quality hold ends after ``quality_hold_s``; a
   restriction when the runtime reports it lifted (``state.enforced`` clears).
2. **Reactive failover**: a master in rotation whose health probe fails, or that reported a
   technical fault (:data:`fleetml.vocab.FAULT_KINDS`), is failed over at once.
3. **Pre-emptive failover**: a master whose failure risk stayed at or above its group's
   ``risk_on`` for ``trigger_ticks`` ticks, outside its cooldown, is failed over to the servant
   with the best readiness, inside the fleet-wide :class:`Envelope` and only when the servants'
   spare capacity can absorb the master's load; otherwise a recommendation is raised instead.
   Not when the risk model's platform-enforcement part flags the number
   (:meth:`Observation.enforcement_suspected`): the raised risk may be the run-up of a
   restriction, and moving its traffic ahead of it would route around a platform limit. That
   risk lowers no weight either; a ``review_enforcement`` recommendation asks a person.
4. **Failback** once the master is healthy and its risk stayed below ``risk_off`` for
   ``clear_ticks`` ticks; the next pre-emptive failover of that master waits ``cooldown_s``,
   doubled after each failback that came within a cooldown (flapping).
5. **Weights** (:mod:`fleetml.decisions.weights`), pre-balanced ahead of forecast peaks.

Modes per group (:class:`Mode`): ``off`` decides nothing; ``shadow`` records every decision
with status ``shadow`` and publishes nothing (the runtime keeps its own balancing); ``approve``
records actions as ``awaiting_approval``; ``auto`` publishes them. Every failover is judged
later (did a technical fault follow within the horizon?): :meth:`FleetmlPolicy.outcomes`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fleetml.decisions.contracts import (
    ActionKind,
    Actions,
    Decision,
    Envelope,
    GroupPolicy,
    Mode,
    Observation,
    Recommendation,
    RecommendationKind,
)
from fleetml.decisions.weights import WeightSmoother, spread_below, target_weights
from fleetml.vocab import ENFORCEMENT_KINDS, ENFORCEMENT_LABELS, FAULT_KINDS

_H = 3_600_000
#: Technical faults a session restart can heal (the runtime re-pairs or reconnects).
SESSION_FAULTS = frozenset({"logout", "disconnect"})
#: The rule of a pre-emptive failover (on sustained risk): the ones the safety envelope counts.
PREEMPTIVE_RULE = "risk_sustained"
#: Failover rules that react to a fault that already happened: always needed.
REACTIVE_RULES = frozenset({"fault_reported", "health_failed"})
#: The failover rules whose decisions are judged later (:func:`failover_outcome`).
TRACKED_RULES = REACTIVE_RULES | {PREEMPTIVE_RULE}


def failover_outcome(
    rule: str, *, until_ms: int, fault_ms: int | None, now_ms: int
) -> dict[str, Any] | None:
    """The verdict on a failover decision, or None while it is still open. A failover answering
    a fault (:data:`REACTIVE_RULES`) was needed; a pre-emptive one was needed when a technical
    fault of its account followed before its horizon ended (``fault_ms``: the first one from the
    decision to ``until_ms``) and unneeded once the horizon ended without one. The live policy
    judges the failovers it made as events arrive; the tick judges, from the store, those that
    no running policy tracks (made before a restart, or by a one-shot ``fleetml tick``)."""
    needed = rule in REACTIVE_RULES or fault_ms is not None
    if not needed and now_ms <= until_ms:
        return None
    return {
        "needed": bool(needed),
        "fault_at_ms": None if fault_ms is None else int(fault_ms),
        "judged_at_ms": int(now_ms),
        "horizon_end_ms": int(until_ms),
    }


def _fresh_state() -> dict:
    """An account's controller state before anything happened to it."""
    return {
        "risk_run": 0,
        "clear_run": 0,
        "failed_over": False,
        "preemptive": False,
        "since": -1,
        "cooldown_until": -1,
        "backoff": 0,
        "held": None,  # (kind, since_ms) of an enforcement hold
    }


def _is_initial(state: dict) -> bool:
    """Whether an account's state is as good as fresh: nothing counted but calm ticks, which
    matter only once it is failed over (its failover resets them)."""
    rest = {k: v for k, v in state.items() if k != "clear_run" and not (k == "fail_run" and v == 0)}
    return rest == _INITIAL  # failed_over included: a failed-over account is never initial


#: A fresh state without its calm-tick count (what :func:`_is_initial` compares with).
_INITIAL = {k: v for k, v in _fresh_state().items() if k != "clear_run"}


def _finite_or_none(values) -> list:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float)]


def _plain(value):
    """A controller-state value as plain JSON (numpy scalars, tuples)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def horizon_ms(horizon: str) -> int:
    """``"1h"`` -> 3,600,000; ``"30min"``/``"90s"``/``"1d"`` likewise."""
    return int(pd.Timedelta(horizon).total_seconds() * 1000)


@dataclass
class PolicySettings:
    """Fleet-wide settings of :class:`FleetmlPolicy` (per-group ones are :class:`GroupPolicy`)."""

    envelope: Envelope = field(default_factory=Envelope)
    #: how long a quality-drop or user-block hold lasts unless a person resumes earlier
    quality_hold_s: int = 6 * 3600
    #: user blocks per delivered message that hold the account (normal is about 0.0002)
    block_ratio_hold: float = 0.003
    min_blocks: float = 5.0
    #: pre-balance when a group's forecast peak within ``prebalance_s`` needs this share of
    #: its capacity
    prebalance_utilisation: float = 0.8
    prebalance_s: int = 3600
    #: after a "degraded" event, a failing health probe lowers the weight to this share of
    #: capacity instead of failing the account over, until the probe passes (at most this long)
    degraded_window_s: int = 6 * 3600
    degraded_health: float = 0.3
    #: a degraded master is failed over after all when its healthy peers' spare capacity (below
    #: ``target_utilisation``) can take its offered load
    degraded_failover: bool = True
    #: a technical fault takes an account out of rotation once its health probe has failed this
    #: many ticks in a row; from the first failing tick its weight is 0 (no new traffic), so a
    #: blip of one tick moves nothing and costs no failover
    fail_after_ticks: int = 1
    #: share of capacity an account should carry at most while its group has room: the
    #: platform throttles numbers pushed past their capacity (peers absorbing a failover are
    #: judged against it too); None: weights are not re-spread
    target_utilisation: float | None = 0.9
    #: throttle an account when this share of its sends hit the platform's rate limit, to this
    #: share of its current send rate; lift the cap after ``throttle_s`` without limiting
    throttle_hit_share: float = 0.05
    throttle_factor: float = 0.8
    throttle_s: int = 1800
    #: a weight change is recorded when it moves by at least this share
    record_weight_change: float = 0.25


class FleetmlPolicy:
    """See the module docstring. Keeps per-account state between ticks, keyed by account id."""

    def __init__(
        self,
        policies: Mapping[str, GroupPolicy] | None = None,
        *,
        default: GroupPolicy | None = None,
        settings: PolicySettings | None = None,
    ):
        self.policies: dict[str, GroupPolicy] = dict(policies or {})
        self.default = default or GroupPolicy()
        self.settings = settings or PolicySettings()
        self.smoother = WeightSmoother()
        self._acc: dict[str, dict] = {}  # per-account controller state
        self._fleet_failovers: list[int] = []  # ts of pre-emptive failovers (envelope)
        self._pending: list[dict] = []  # failover decisions awaiting their outcome
        self._judged: list[dict] = []  # outcomes ready for the decision record
        self.stats: dict[str, dict] = {}  # per group: tp, fp, fn of failover decisions
        self._recorded_weights: dict[str, float] = {}
        self._tick_ms: int | None = None  # the tick being decided
        self.last_weights: pd.DataFrame | None = None
        # (ts_ms, queue depth per account) of the latest tick and of the one before it
        self._queue_seen: tuple[int, pd.Series] | None = None
        self._queue_before: tuple[int, pd.Series] | None = None

    # ------------------------------------------------------------------ settings
    def set_policies(self, policies: Mapping[str, GroupPolicy]) -> None:
        self.policies = dict(policies)

    def policy(self, group: str) -> GroupPolicy:
        return self.policies.get(group, self.default)

    def _state(self, account_id: str) -> dict:
        s = self._acc.get(account_id)
        if s is None:
            s = _fresh_state()
            self._acc[account_id] = s
        return s

    def apply_published(
        self,
        account_id: str,
        kind: str,
        ts_ms: int,
        params=None,
        rule: str | None = None,
        group: str | None = None,
    ) -> None:
        """Record that an action was published to the runtime outside :meth:`decide`: an
        operator approved it (approve mode), or a restarted worker restores what its
        predecessor published. Failover, failback, hold and resume change the controller state;
        other kinds need no state. ``rule`` is the rule of the decision behind the action: a
        pre-emptive failover (``risk_sustained``) counts against the safety envelope's window
        from ``ts_ms``, so a restart, or a storm of approvals, cannot reset the envelope. A
        failback starts the account's cooldown (with its backoff against flapping) under its
        ``group``'s policy, as one decided here does."""
        s = self._state(str(account_id))
        if kind == ActionKind.FAILOVER.value:
            preemptive = rule == PREEMPTIVE_RULE
            s.update(failed_over=True, since=int(ts_ms), risk_run=0, preemptive=preemptive)
            if preemptive:
                self._fleet_failovers.append(int(ts_ms))
        elif kind == ActionKind.FAILBACK.value:
            if s["failed_over"] and s["since"] >= 0:
                self._start_cooldown(s, self.policy(str(group)) if group else self.default, ts_ms)
            s.update(failed_over=False, preemptive=False, since=-1)
        elif kind == ActionKind.HOLD.value:
            signal = (params or {}).get("signal") or "restricted"
            s["held"] = (str(signal), int(ts_ms))
        elif kind == ActionKind.RESUME.value:
            s["held"] = None

    # ------------------------------------------------------------------ persistence
    #: Bumped when the snapshot's layout changes; a snapshot of another version is not restored.
    SNAPSHOT_VERSION = 1

    def snapshot(self) -> dict:
        """The controller state a restarted worker needs to continue where this one stopped,
        as plain JSON: per account the run counters (failing probe, sustained risk, calm ticks),
        failover, cooldown and backoff, holds and throttles; the safety envelope's window; the
        smoothed weights and probation clocks; the last recorded weights; the latest tick's queue
        depths (for the next tick's queue growth). Failovers still
        awaiting their outcome are not kept: they are in the decision record, and the tick
        judges the ones no running policy tracks from the store (:func:`failover_outcome`)."""
        sm = self.smoother
        weights = self._recorded_weights
        return {
            "version": self.SNAPSHOT_VERSION,
            "tick_ms": self._tick_ms,
            # accounts in their initial state are left out (most of a quiet fleet)
            "accounts": {
                a: {k: _plain(v) for k, v in st.items()}
                for a, st in self._acc.items()
                if not _is_initial(st)
            },
            "fleet_failovers": [int(t) for t in self._fleet_failovers],
            "recorded_weights": dict(
                zip(weights, _finite_or_none(list(weights.values())), strict=True)
            ),
            # the latest tick's queues: the next tick's offered load counts their growth
            "queue": None
            if self._queue_seen is None
            else {
                "ts_ms": int(self._queue_seen[0]),
                "depth": {
                    str(a): float(v) for a, v in self._queue_seen[1].items() if np.isfinite(v)
                },
            },
            "smoother": None
            if sm.ids is None
            else {
                "ids": [str(a) for a in sm.ids],
                "weights": _finite_or_none(sm.weights),
                "probation_since": [int(t) for t in sm.probation_since],
            },
        }

    def restore(self, snap: dict) -> bool:
        """Continue from :meth:`snapshot`'s output; False (nothing changed) when it is of
        another layout version or malformed (it is all read before anything is replaced)."""
        if not isinstance(snap, dict) or snap.get("version") != self.SNAPSHOT_VERSION:
            return False
        try:
            acc = {}
            for a, st in (snap.get("accounts") or {}).items():
                st = dict(st)
                if isinstance(st.get("held"), list):
                    st["held"] = (str(st["held"][0]), int(st["held"][1]))
                acc[str(a)] = st
            tick = snap.get("tick_ms")
            failovers = [int(t) for t in snap.get("fleet_failovers") or []]
            recorded = {
                str(a): np.nan if w is None else float(w)
                for a, w in (snap.get("recorded_weights") or {}).items()
            }
            queue = snap.get("queue")
            seen = (int(queue["ts_ms"]), pd.Series(queue["depth"], dtype=float)) if queue else None
            sm = snap.get("smoother")
            smoother = (
                (
                    np.asarray(sm["ids"], dtype=object),
                    np.asarray([np.nan if w is None else w for w in sm["weights"]], dtype=float),
                    np.asarray(sm["probation_since"], dtype=np.int64),
                )
                if sm
                else None
            )
            tick = int(tick) if tick is not None else None
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            return False
        self._acc = acc
        self._tick_ms = tick
        self._fleet_failovers = failovers
        self._recorded_weights = recorded
        if seen is not None:
            self._queue_before, self._queue_seen = None, seen
        if smoother is not None:
            self.smoother.ids, self.smoother.weights, self.smoother.probation_since = smoother
        return True

    @staticmethod
    def _start_cooldown(s: dict, pol: GroupPolicy, now: int) -> None:
        """At a failback: no pre-emptive failover of the account before its cooldown ends; a
        failback sooner than the cooldown after its failover doubles the next one (flapping)."""
        flapped = now - s["since"] < pol.cooldown_s * 1000 * 2 ** s["backoff"]
        s["backoff"] = min(s["backoff"] + 1, 6) if flapped else 0
        s["cooldown_until"] = int(now + pol.cooldown_s * 1000 * 2 ** s["backoff"])

    def controller_state(self, fleet) -> pd.DataFrame:
        """The routing state this policy set, as :data:`STATE_COLUMNS` minus ``health_ok``:
        what the service observes when no runtime reports it (failed over = out of rotation,
        held = paused and draining, held for a restriction = enforced)."""
        ids = fleet.ids.tolist()
        failed, held, restricted = [], [], []
        for a in ids:
            s = self._acc.get(a)
            h = s["held"] if s else None
            failed.append(bool(s and s["failed_over"]))
            held.append(h is not None)
            restricted.append(h is not None and h[0] in ENFORCEMENT_LABELS)
        cap = fleet.accounts["capacity"].to_numpy(dtype=float)
        prev = self.last_weights
        if (
            prev is not None
            and len(prev) == len(ids)
            and (prev["account_id"].to_numpy() == fleet.ids).all()
        ):
            weight = prev["weight"].to_numpy(dtype=float)
        else:
            weight = cap
        held_a = np.asarray(held, dtype=bool)
        return pd.DataFrame(
            {
                "in_rotation": ~np.asarray(failed, dtype=bool),
                "paused": held_a,
                "draining": held_a,
                "enforced": np.asarray(restricted, dtype=bool),
                "health_ok": True,
                "weight": weight,
            },
            index=fleet.account_ids,
        )

    # ------------------------------------------------------------------ the tick
    def decide(self, obs: Observation) -> Actions:
        fleet = obs.fleet
        ids = fleet.ids
        n = len(ids)
        now = int(obs.ts_ms)
        self._tick_ms = now
        groups = fleet.accounts["group"].to_numpy()
        is_master = fleet.is_master
        cap = fleet.accounts["capacity"].to_numpy(dtype=float)
        col = obs.column
        in_rotation = col("state", "in_rotation").astype(bool)
        enforced = col("state", "enforced").astype(bool)
        health_ok = col("state", "health_ok").astype(bool)
        modes = {g: self.policy(g).mode for g in set(groups.tolist())}

        out = Actions()
        published: dict[str, list] = {
            k: [] for k in ("failover", "failback", "hold", "resume", "drain", "restart")
        }
        throttles: dict[str, float] = {}

        def record(decision: Decision, group: str, publish: str | None = None) -> None:
            mode = modes.get(group, self.default.mode)
            decision.group = group
            decision.mode = mode.value
            decision.models = dict(obs.models)
            if mode == Mode.OFF:
                return
            if decision.status == "executed":
                decision.status = {
                    Mode.SHADOW: "shadow",
                    Mode.APPROVE: "awaiting_approval",
                    Mode.AUTO: "executed",
                }[mode]
            out.decisions.append(decision)
            if publish == "throttle" and mode == Mode.AUTO:
                rate = decision.params.get("rate_per_min")
                throttles[decision.account_id] = float("inf") if rate is None else float(rate)
            elif publish and mode == Mode.AUTO:
                published[publish].append(decision.account_id)

        events = obs.events
        faults: set[str] = set()
        lifted: set[str] = set()
        if len(events):
            kinds = events["kind"].astype(str).to_numpy()
            accs = events["account_id"].astype(str).to_numpy()
            # "degraded" (the number still sends, throttled or slow) is met with weights, not
            # failover: moving a throttled master's load onto its servants overloads them too
            hard = np.isin(kinds, list(FAULT_KINDS - {"degraded"}))
            faults = set(accs[hard].tolist())
            for a, t in zip(
                accs[kinds == "degraded"],
                events["ts_ms"].to_numpy()[kinds == "degraded"],
                strict=True,
            ):
                self._state(str(a))["degraded_at"] = int(t)
            self._judge_faults(accs, kinds, events["ts_ms"].to_numpy(dtype="int64"))
            for a, k, ts in zip(accs, kinds, events["ts_ms"].tolist(), strict=True):
                if a not in fleet.accounts.index:
                    continue
                if k in ENFORCEMENT_KINDS:
                    self._hold(a, k, int(ts), fleet.group_of(a), record, out)
                elif k == "restriction_lifted":
                    lifted.add(a)
                elif k in ("maintenance_start", "maintenance_end"):
                    start = k == "maintenance_start"
                    # planned: drained, never failed over, until a tick after it ends
                    self._state(a)["maintenance"] = True if start else int(ts)
                    record(
                        Decision(
                            kind=(ActionKind.DRAIN if start else ActionKind.RESUME).value,
                            rule="maintenance",
                            account_id=a,
                            inputs={"event": k, "at_ms": int(ts)},
                            reason="planned maintenance " + ("began" if start else "ended"),
                        ),
                        fleet.group_of(a),
                        "drain" if start else "resume",
                    )

        # user blocks past the hold ratio: a platform signal like a quality drop
        blocks = col("rates", "user_blocks").astype(float)
        delivered = col("rates", "msgs_delivered").astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = blocks / delivered
        st = self.settings
        hot = (ratio >= st.block_ratio_hold) & (blocks * obs.step_s / 60.0 >= st.min_blocks)
        for i in np.flatnonzero(np.nan_to_num(hot, nan=0.0).astype(bool)):
            a = str(ids[i])
            if self._state(a)["held"] is None:
                self._hold(
                    a,
                    "user_blocks",
                    now,
                    str(groups[i]),
                    record,
                    out,
                    inputs={"block_ratio": float(ratio[i]), "blocks_per_min": float(blocks[i])},
                )

        # holds that end: a lifted restriction, or a quality hold that ran its course
        held = np.zeros(n, dtype=bool)
        for i, a in enumerate(ids.tolist()):
            h = self._acc.get(a, {}).get("held")
            if h is None:
                continue
            kind, since = h
            restriction = kind in ENFORCEMENT_LABELS
            if restriction:
                # lifted: reported by the runtime, or the observed state cleared (a step later,
                # so the restriction that opened the hold has shown up in the state)
                # (timed from the tick that opened the hold: the restriction may be older, e.g.
                # one that stood before the worker's first tick)
                seen = self._acc[a].get("held_seen", since)
                over = a in lifted or (not enforced[i] and now - seen >= obs.step_s * 1000)
            else:
                over = now - since >= st.quality_hold_s * 1000
            if over:
                self._acc[a]["held"] = None
                self._acc[a].pop("held_seen", None)
                record(
                    Decision(
                        kind=ActionKind.RESUME.value,
                        rule="restriction_lifted" if restriction else "hold_expired",
                        account_id=a,
                        inputs={"held_since_ms": since, "signal": kind},
                        reason=(
                            "the platform lifted the restriction"
                            if restriction
                            else f"{kind} hold of {st.quality_hold_s // 3600} h ended"
                        ),
                    ),
                    str(groups[i]),
                    "resume",
                )
            else:
                held[i] = True
        held |= enforced

        # ---- failure risk per account, on each group's watched horizon
        risk = np.full(n, np.nan)
        for h in {self.policy(g).risk_horizon for g in set(groups.tolist())}:
            r = obs.risk(h).to_numpy(dtype=float)
            use = np.asarray(
                [self.policy(g).risk_horizon == h for g in groups.tolist()], dtype=bool
            )
            risk = np.where(use, r, risk)
        # the risk model's enforcement part expects a restriction or ban: raised failure risk may
        # be that run-up, and moving traffic off the number ahead of it would route around a
        # platform limit; such risk moves no traffic, a person is asked instead
        suspect = obs.enforcement_suspected() & ~held

        # accounts that reported "degraded" and no harder fault since: partial health, until
        # the health probe passes again (or degraded_window_s at most)
        st_deg = self.settings.degraded_window_s * 1000
        degraded = np.zeros(n, dtype=bool)
        for i, a in enumerate(ids.tolist()):
            at = self._acc.get(a, {}).get("degraded_at")
            if at is None:
                continue
            recovered = health_ok[i] and now - at >= obs.step_s * 1000
            if recovered or now - at > st_deg or a in faults:
                self._acc[a].pop("degraded_at")
            else:
                degraded[i] = True

        # a probe that passes at the fault's own tick is only trusted from a runtime that
        # reports its probe (``probe`` in state); the service's freshness check cannot tell
        probe_ok = health_ok & self._has_probe(obs)

        # ---- failover and failback of masters
        load = self._load(obs)
        # accounts that can take traffic over from a peer
        takers = (
            in_rotation
            & health_ok
            & ~held
            & ~np.asarray([self._state(a)["failed_over"] for a in ids.tolist()], dtype=bool)
        )
        returned = np.zeros(n, dtype=bool)
        # every account with a technical fault leaves rotation (its backlog goes to its peers);
        # pre-emptive failover on risk is for masters
        for i in range(n):
            a, g = str(ids[i]), str(groups[i])
            pol = self.policy(g)
            s = self._state(a)
            r = risk[i]
            s["risk_run"] = s["risk_run"] + 1 if (r >= pol.risk_on) else 0
            calm = (not (r >= pol.risk_off)) and health_ok[i] and a not in faults
            s["clear_run"] = s["clear_run"] + 1 if calm else 0
            if held[i]:
                continue  # enforcement: never failed over, never routed around
            if not s["failed_over"]:
                maint = s.get("maintenance")
                if maint is True or (maint is not None and now - maint <= 2 * obs.step_s * 1000):
                    continue  # planned maintenance: drained, not failed over
                s.pop("maintenance", None)
                # a reported fault whose probe already passes again was a blip: no failover
                # when the runtime reports health (it does for every account it probes); a
                # failing probe must fail ``fail_after_ticks`` ticks in a row
                failing = (not health_ok[i]) or (a in faults and not probe_ok[i])
                s["fail_run"] = s.get("fail_run", 0) + 1 if failing else 0
                reactive = (
                    failing and not degraded[i] and s["fail_run"] >= max(st.fail_after_ticks, 1)
                )
                if degraded[i] and not health_ok[i] and st.degraded_failover:
                    # throttled: fail over only where healthy peers can take the load routed
                    # to it (its queue then drains on them); otherwise it keeps a reduced weight
                    spare = self._spare(fleet, i, load, takers, st.target_utilisation or 1.0)
                    reactive = spare >= _need(load[i], cap[i])
                sustained = (
                    is_master[i]
                    and s["risk_run"] >= pol.trigger_ticks
                    and now >= s["cooldown_until"]
                )
                if not (reactive or sustained) or not in_rotation[i]:
                    s.pop("suspect_noted", None)
                    continue
                if suspect[i] and not reactive:
                    if not s.get("suspect_noted"):
                        s["suspect_noted"] = True
                        self._suspected(a, g, r, pol, s["risk_run"], record, out)
                    continue
                s.pop("suspect_noted", None)
                target, readiness = self._target(fleet, a, risk, health_ok, held, load)
                inputs = {
                    "risk": _num(r),
                    "risk_on": pol.risk_on,
                    "risk_run": s["risk_run"],
                    "horizon": pol.risk_horizon,
                    "health_ok": bool(health_ok[i]),
                    "fault_reported": a in faults,
                    "target_readiness": readiness,
                    "master_load": _num(load[i]),
                }
                if reactive:
                    rule = "fault_reported" if a in faults else "health_failed"
                    reason = (
                        "the runtime reported a technical fault"
                        if a in faults
                        else "the health probe failed"
                    )
                else:
                    rule = PREEMPTIVE_RULE
                    reason = (
                        f"failure risk {r:.2f} >= {pol.risk_on:.2f} for {s['risk_run']} ticks "
                        f"({pol.risk_horizon} horizon)"
                    )
                    blocked = self._envelope_blocks(fleet, now, i, load, target)
                    if blocked:
                        out.recommendations.append(
                            Recommendation(
                                kind=RecommendationKind.ADJUST_FAILOVER_THRESHOLD,
                                title=f"Fail over {a}? Held back by the safety envelope",
                                dedup_key=f"envelope:{a}",
                                group=g,
                                account_id=a,
                                evidence={**inputs, "blocked_by": blocked},
                                expected_impact={
                                    "summary": "a person decides whether to fail over; "
                                    "automation stopped at the safety envelope"
                                },
                                confidence=float(min(max(r, 0.0), 1.0)),
                            )
                        )
                        record(
                            Decision(
                                kind=ActionKind.FAILOVER.value,
                                rule="envelope",
                                account_id=a,
                                params={"to": target},
                                inputs={**inputs, "blocked_by": blocked},
                                reason=f"{reason}; held back: {blocked}",
                                status="recommended",
                            ),
                            g,
                        )
                        continue
                decision = Decision(
                    kind=ActionKind.FAILOVER.value,
                    rule=rule,
                    account_id=a,
                    params={"to": target},
                    inputs=inputs,
                    reason=reason,
                )
                record(decision, g, "failover")
                if modes[g] == Mode.OFF:
                    continue
                if target is not None:
                    out.targets = {**out.targets, a: target}
                self._track(decision, now, pol, r, g)
                if modes[g] == Mode.AUTO:
                    s.update(failed_over=True, preemptive=not reactive, since=now)
                    if not reactive:
                        self._fleet_failovers.append(now)
            elif s["clear_run"] >= pol.clear_ticks:
                record(
                    Decision(
                        kind=ActionKind.FAILBACK.value,
                        rule="risk_receded",
                        account_id=a,
                        inputs={
                            "risk": _num(r),
                            "risk_off": pol.risk_off,
                            "clear_run": s["clear_run"],
                        },
                        reason=f"healthy and risk below {pol.risk_off:.2f} for "
                        f"{s['clear_run']} ticks",
                    ),
                    g,
                    "failback",
                )
                self._start_cooldown(s, pol, now)
                s.update(failed_over=False, preemptive=False, since=-1, risk_run=0)
                returned[i] = True

        self._self_heal(obs, ids, groups, cap, held, faults, events, record)

        # ---- weights
        failed = np.asarray([self._state(a)["failed_over"] for a in ids.tolist()], dtype=bool)
        out_now = failed | (~health_ok & ~degraded) | np.isin(ids, list(faults))
        health = np.where(out_now, 0.0, np.where(degraded, st.degraded_health, 1.0))
        # queued work measured against what the account can send now: a throttled number
        # (degraded: health < 1) drains its queue slower, so the same queue leaves it less room
        headroom = 1.0 / (
            1.0
            + np.nan_to_num(col("metrics", "queue_depth").astype(float), nan=0.0)
            / np.maximum(cap * np.where(health > 0, health, 1.0) * obs.step_s / 60.0, 1e-9)
        )
        target, reasons = target_weights(
            fleet,
            health=health,
            risk=np.where(suspect, np.nan, risk),
            headroom=headroom,
            policies=self.policies,
            default=self.default,
        )
        fast = self._prebalance(obs, groups)
        weights, probation = self.smoother.update(
            fleet,
            target,
            now_ms=now,
            returned=returned,
            fast=fast,
            policies=self.policies,
            default=self.default,
        )
        if st.target_utilisation is not None:
            # while a group has room, keep every account below the level where the platform
            # starts throttling; the excess goes to peers with room (never off a held account)
            weights, capped = spread_below(
                groups,
                weights,
                load=load,
                limit=st.target_utilisation * cap * health,
                free=~held,
            )
            for i in np.flatnonzero(capped):
                reasons[i].append(f"capped at {st.target_utilisation:.0%} of its capacity")
        # a held account keeps its share: its weight is frozen, its traffic waits on it
        prev = col("state", "weight").astype(float)
        weights = np.where(held, np.nan_to_num(prev, nan=cap), weights)
        for i in np.flatnonzero(probation):
            reasons[i].append("probation after recovery")
        for i in np.flatnonzero(fast):
            reasons[i].append("pre-balanced ahead of a forecast peak")
        for i in np.flatnonzero(suspect & (risk > 0)):
            reasons[i].append(
                f"failure risk {risk[i]:.2f} not acted on: platform enforcement suspected"
            )
        for i in np.flatnonzero(held):
            reasons[i] = ["held: platform enforcement (traffic kept on the number, not moved)"]
        self.last_weights = pd.DataFrame(
            {
                "account_id": ids,
                "group": groups,
                "weight": weights,
                "target": target,
                "held": held,
                "reasons": reasons,
            }
        )
        auto = np.asarray([modes[g] == Mode.AUTO for g in groups.tolist()], dtype=bool)
        if auto.any():
            out.weights = dict(zip(ids[auto].tolist(), weights[auto].tolist(), strict=True))
        self._record_weights(ids, groups, weights, reasons, record)

        out.failover = published["failover"]
        out.failback = published["failback"]
        out.hold = published["hold"]
        out.drain = published["drain"]
        out.resume = published["resume"]
        out.restart = published["restart"]
        out.throttle = throttles
        self._expire_tracking(now)
        return out

    # ------------------------------------------------------------------ pieces
    def _self_heal(self, obs, ids, groups, cap, held, faults, events, record) -> None:
        """Restart a session that logged out or lost its connection; throttle an account the
        platform rate-limits hard, and lift the throttle once the limiting has stopped."""
        st = self.settings
        now = int(obs.ts_ms)
        if len(events):
            kinds = events["kind"].astype(str).to_numpy()
            accs = events["account_id"].astype(str).to_numpy()
            for a in sorted(set(accs[np.isin(kinds, list(SESSION_FAULTS))].tolist())):
                if a not in obs.fleet.accounts.index or self._state(a)["held"] is not None:
                    continue
                mine = (accs == a) & np.isin(kinds, list(SESSION_FAULTS))
                kind = kinds[mine][-1]
                record(
                    Decision(
                        kind=ActionKind.RESTART_SESSION.value,
                        rule="session_fault",
                        account_id=a,
                        # the event's time: a worker that restarts reads recent events again,
                        # and the record keys this decision by it so the restart is not repeated
                        inputs={
                            "event": str(kind),
                            "event_ts_ms": int(events["ts_ms"].to_numpy()[mine][-1]),
                        },
                        reason=f"the runtime reported {kind}: restart the session",
                    ),
                    obs.fleet.group_of(a),
                    "restart",
                )
        hits = obs.column("rates", "rate_limit_hits").astype(float)
        sent = obs.column("rates", "msgs_sent").astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = hits / sent
        limited = np.nan_to_num(share, nan=0.0) >= st.throttle_hit_share
        for i, a in enumerate(ids.tolist()):
            s = self._state(a)
            if limited[i] and not held[i] and s.get("throttled_at") is None:
                rate = max(float(sent[i]) * st.throttle_factor, 0.1 * float(cap[i]))
                s["throttled_at"] = now
                record(
                    Decision(
                        kind=ActionKind.THROTTLE.value,
                        rule="rate_limited",
                        account_id=a,
                        params={"rate_per_min": round(rate, 2)},
                        inputs={
                            "rate_limit_hits_per_min": _num(hits[i]),
                            "msgs_sent_per_min": _num(sent[i]),
                            "hit_share": _num(share[i]),
                        },
                        reason=f"{share[i]:.0%} of sends hit the platform's rate limit: "
                        f"cap the send rate at {rate:.0f}/min",
                    ),
                    str(groups[i]),
                    "throttle",
                )
            elif limited[i] and s.get("throttled_at") is not None:
                s["throttled_at"] = now  # still limited: the throttle stays
            elif (
                s.get("throttled_at") is not None
                and now - s["throttled_at"] >= st.throttle_s * 1000
            ):
                s.pop("throttled_at")
                record(
                    Decision(
                        kind=ActionKind.THROTTLE.value,
                        rule="rate_limit_cleared",
                        account_id=a,
                        params={"rate_per_min": None},
                        inputs={"hit_share": _num(share[i])},
                        reason=f"no rate limiting for {st.throttle_s // 60} min: lift the cap",
                    ),
                    str(groups[i]),
                    "throttle",
                )

    @staticmethod
    def _has_probe(obs: Observation) -> np.ndarray:
        """Accounts whose ``health_ok`` is a runtime's health probe. An observation may say so
        per account in an optional ``probe`` state column (the service: where the runtime pushes
        an ``up`` gauge); without it, health is taken to be a probe (the simulator's runtime).
        Where it is only sample freshness, a probe that passes cannot clear a reported fault."""
        probe = np.asarray(obs.column("state", "probe"), dtype=float)
        return np.where(np.isnan(probe), True, probe > 0)

    @staticmethod
    def _suspected(a, group, r, pol, run, record, out) -> None:
        """Sustained failure risk on a number the enforcement model flags: no pre-emptive
        failover (it would move the traffic off the number ahead of a likely platform limit);
        the decision is recorded as a recommendation and a person reviews the number."""
        inputs = {
            "risk": _num(r),
            "risk_on": pol.risk_on,
            "risk_run": run,
            "horizon": pol.risk_horizon,
            "enforcement_suspected": True,
        }
        record(
            Decision(
                kind=ActionKind.FAILOVER.value,
                rule="enforcement_suspected",
                account_id=a,
                inputs=inputs,
                reason=f"failure risk {r:.2f} >= {pol.risk_on:.2f} for {run} ticks, but the "
                "risk model expects a platform restriction or ban: traffic is not moved to "
                "other numbers ahead of a platform limit; a person reviews",
                status="recommended",
            ),
            group,
        )
        out.recommendations.append(
            Recommendation(
                kind=RecommendationKind.REVIEW_ENFORCEMENT,
                title=f"Review {a}: platform enforcement suspected",
                dedup_key=f"enforcement_suspected:{a}",
                group=group,
                account_id=a,
                evidence=inputs,
                expected_impact={
                    "summary": "fleetml did not fail this number over although its failure "
                    "risk is high: the risk model also expects a restriction or ban. Check "
                    "the number's quality and blocks; fail over by hand only for a technical "
                    "fault."
                },
                confidence=float(min(max(r, 0.0), 1.0)),
            )
        )

    def _hold(self, a, kind, ts, group, record, out, inputs=None) -> None:
        s = self._state(a)
        already = s["held"] is not None
        s["held"] = (kind if not already or kind in ENFORCEMENT_LABELS else s["held"][0], ts)
        if not already or kind in ENFORCEMENT_LABELS:
            # a restriction (also one that turns a quality hold into a restriction hold) is
            # judged lifted from the tick it was seen on
            s["held_seen"] = ts if self._tick_ms is None else self._tick_ms
            record(
                Decision(
                    kind=ActionKind.HOLD.value,
                    rule="enforcement",
                    account_id=a,
                    params={"signal": kind},
                    inputs={"signal": kind, "event_ts_ms": int(ts), **(inputs or {})},
                    reason=f"platform signal {kind}: drained and paused, its traffic kept on "
                    "the number (never moved to other numbers); a person reviews",
                ),
                group,
                "hold",
            )
        out.recommendations.append(
            Recommendation(
                kind=RecommendationKind.REVIEW_ENFORCEMENT,
                title=f"Review {a}: platform signal {kind}",
                dedup_key=f"review_enforcement:{a}",
                group=group,
                account_id=a,
                evidence={"signal": kind, "at_ms": int(ts), **(inputs or {})},
                expected_impact={
                    "summary": "the account is drained and paused; fleetml will not move its "
                    "traffic to other numbers. Decide whether to resume, retire or appeal."
                },
                confidence=1.0 if kind in ENFORCEMENT_LABELS else 0.7,
            )
        )

    def _load(self, obs: Observation) -> np.ndarray:
        """Messages per minute routed to each account (its offered load): what it attempted to
        send plus how fast its queue grew since the previous tick (NaN unknown). A throttled
        account sends little but keeps receiving its share; its sends alone would understate
        what its peers must take over."""
        sent = obs.column("rates", "msgs_sent").astype(float)
        queue = pd.Series(obs.column("metrics", "queue_depth").astype(float), index=obs.fleet.ids)
        now = int(obs.ts_ms)
        last = self._queue_seen
        if last is None or now > last[0]:
            # keep the previous tick's queue; a rerun of the same tick compares with the same
            self._queue_before, self._queue_seen = last, (now, queue)
        before = self._queue_before
        if before is None or before[0] >= now:
            return sent
        prev = before[1].reindex(queue.index).to_numpy(dtype=float)
        growth = (queue.to_numpy() - prev) / ((now - before[0]) / 60_000.0)
        return sent + np.where(np.isfinite(growth), np.maximum(growth, 0.0), 0.0)

    def _target(self, fleet, master, risk, health_ok, held, load):
        """The account best placed to take an account's traffic (a master's servants; a
        servant's group peers), and its readiness in [0, 1]."""
        servants = fleet.servants_of(master)
        if not len(servants):
            group = fleet.group_of(master)
            servants = fleet.members(group).drop(master)
            servants = servants[
                [not self._acc.get(x, {}).get("failed_over", False) for x in servants]
            ]
        if not len(servants):
            return None, 0.0
        pos = np.asarray([fleet.position(s) for s in servants])
        cap = fleet.accounts["capacity"].to_numpy(dtype=float)[pos]
        spare = np.clip(1.0 - np.nan_to_num(load[pos], nan=0.0) / np.maximum(cap, 1e-9), 0, 1)
        ready = (
            health_ok[pos]
            * ~held[pos]
            * (1.0 - np.clip(np.nan_to_num(risk[pos], nan=0.0), 0, 1))
            * (0.5 + 0.5 * spare)
        )
        best = int(np.argmax(ready))
        if ready[best] <= 0:
            return None, 0.0
        return str(servants[best]), round(float(ready[best]), 3)

    @staticmethod
    def _spare(fleet, i, load, takers, utilisation: float = 1.0) -> float:
        """Messages per minute the peers of account ``i`` that can take traffic (``takers``: in
        rotation, healthy, not held) could still take while staying at or below ``utilisation``
        of their capacity."""
        a = str(fleet.ids[i])
        pos = [fleet.position(x) for x in fleet.members(fleet.group_of(a)).drop(a)]
        pos = [p for p in pos if takers[p]]
        if not pos:
            return 0.0
        cap = fleet.accounts["capacity"].to_numpy(dtype=float)[pos] * utilisation
        # a peer whose load is unknown is not counted on for room
        return float(np.clip(cap - np.nan_to_num(load[pos], nan=np.inf), 0, None).sum())

    def _envelope_blocks(self, fleet, now, i, load, target) -> str | None:
        env = self.settings.envelope
        self._fleet_failovers = [t for t in self._fleet_failovers if now - t < env.window_s * 1000]
        masters = int(fleet.is_master.sum())
        allowed = max(env.min_failovers, math.floor(env.max_failover_share * masters))
        if len(self._fleet_failovers) >= allowed:
            return (
                f"{len(self._fleet_failovers)} pre-emptive failovers in the last "
                f"{env.window_s // 60} min (envelope: {allowed} of {masters} masters)"
            )
        if target is None:
            return "no ready servant"
        master = str(fleet.ids[i])
        pos = [fleet.position(s) for s in fleet.servants_of(master)]
        cap = fleet.accounts["capacity"].to_numpy(dtype=float)[pos]
        spare = float(np.clip(cap - np.nan_to_num(load[pos], nan=np.inf), 0, None).sum())
        need = _need(load[i], fleet.accounts["capacity"].iloc[i])
        if need > spare:
            return f"the servants' spare capacity {spare:.0f}/min cannot absorb {need:.0f}/min"
        return None

    def _prebalance(self, obs: Observation, groups: np.ndarray) -> np.ndarray:
        f = obs.forecasts
        fast = np.zeros(len(groups), dtype=bool)
        if f is None or f.empty or "peak" not in f:
            return fast
        st = self.settings
        cap = obs.fleet.accounts.groupby("group")["capacity"].sum()
        ahead = obs.ts_ms + st.prebalance_s * 1000
        soon = f[(f["peak_ts_ms"] >= obs.ts_ms) & (f["peak_ts_ms"] <= ahead)]
        if soon.empty:
            return fast
        util = soon.groupby("group")["peak"].max() / cap.reindex(
            soon.groupby("group")["peak"].max().index
        )
        busy = set(util[util >= st.prebalance_utilisation].index.astype(str).tolist())
        return np.isin(groups, list(busy))

    def _record_weights(self, ids, groups, weights, reasons, record) -> None:
        last = self._recorded_weights
        share = self.settings.record_weight_change
        for i, a in enumerate(ids.tolist()):
            old = last.get(a)
            w = float(weights[i])
            if old is None:
                last[a] = w
                continue
            if abs(w - old) > share * max(old, 1e-9) or (old > 0) != (w > 0):
                record(
                    Decision(
                        kind="weight",
                        rule="weights",
                        account_id=a,
                        params={"from": round(old, 4), "to": round(w, 4)},
                        inputs={"reasons": list(reasons[i])},
                        reason="; ".join(reasons[i]) or "recovered",
                    ),
                    str(groups[i]),
                )
                last[a] = w

    # ------------------------------------------------------------------ outcomes
    def _track(self, decision: Decision, now: int, pol: GroupPolicy, risk, group) -> None:
        self._pending.append(
            {
                "decision": decision,
                "account_id": decision.account_id,
                "group": group,
                "at": now,
                "until": now + horizon_ms(pol.risk_horizon),
                "score": _num(risk),
                "rule": decision.rule,
                "mode": decision.mode,
            }
        )

    def _judge_faults(self, accs, kinds, ts) -> None:
        is_fault = np.isin(kinds, list(FAULT_KINDS))
        if not is_fault.any():
            return
        for a, t in zip(accs[is_fault].tolist(), ts[is_fault].tolist(), strict=True):
            for p in self._pending:
                if p["account_id"] == a and p["at"] <= t <= p["until"]:
                    p["fault_at"] = min(int(t), p.get("fault_at", int(t)))

    def _expire_tracking(self, now: int) -> None:
        keep = []
        for p in self._pending:
            outcome = failover_outcome(
                p["rule"], until_ms=p["until"], fault_ms=p.get("fault_at"), now_ms=now
            )
            if outcome is None:
                keep.append(p)
                continue
            needed = outcome["needed"]
            self._judged.append({"decision": p["decision"], "outcome": outcome, **p})
            g = self.stats.setdefault(p["group"], {"needed": 0, "unneeded": 0})
            g["needed" if needed else "unneeded"] += 1
        self._pending = keep

    def outcomes(self) -> list[dict]:
        """Failover decisions judged since the last call: ``decision`` (the object recorded),
        ``outcome`` (``needed``, ``fault_at_ms``, ...), ``account_id``, ``group``, ``score``."""
        done, self._judged = self._judged, []
        return done


def _need(load: float, capacity: float) -> float:
    """Messages per minute peers must absorb to take an account's traffic over; where its load
    is unknown (no samples this tick), its capacity: moving an unknown load is not free."""
    return float(load) if np.isfinite(load) else float(capacity)


def _num(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else round(v, 4)
