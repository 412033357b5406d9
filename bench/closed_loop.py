"""The closed-loop proof: does fleetml, acting on its models, beat the reactive balancer?

    python bench/closed_loop.py --seeds 1,2,3,4,5 [--days 2] [--warmup-days 1] [--masters 8]
        [--servants 2] [--step 5m] [--train-seed 101] [--train-days 7] [--keep DIR]

1. **Train** through the CLI, on a world no evaluated seed shares: ``fleetml simulate --seed
   TRAIN_SEED --into-home`` then ``fleetml train anomaly`` and ``fleetml train risk`` with their
   defaults (the product as shipped; nothing here looks at an evaluated seed).
2. **Run three arms per seed**, on the same simulated world (same seed, same demand, faults and
   enforcement):

   * ``reactive``: the runtime's reactive balancer alone (least load, failover after two failed
     health probes), :class:`fleetml.decisions.baseline.ReactiveBaselinePolicy`;
   * ``shadow``: the same balancer drives the fleet while fleetml runs beside it in shadow mode
     and records what it would have done; the runtime also applies whatever fleetml publishes,
     so the arm can only equal ``reactive`` if shadow mode truly publishes nothing;
   * ``auto``: fleetml drives: the runtime applies fleetml's weights and pending actions and
     acknowledges them.

   fleetml runs through the service's code path: every simulated step the runtime's samples and
   events are written to a fresh store (the ingest's store writers), and every ``--tick-every``
   the worker's tick (:class:`fleetml.services.tick.LiveLoop`: score, alert, then
   :class:`fleetml.services.decide.DecisionLoop` with :mod:`fleetml.decisions`) runs; the
   runtime reads ``weights`` and ``pending`` actions from the store as ``GET /v1/weights`` and
   ``GET /v1/actions`` serve them. The first ``--warmup-days`` run under the reactive balancer
   in every arm (the models need a day of history); outcomes count only after it. At the
   hand-over of the auto arm the balancer still closes what it opened in the warm-up (fails back
   the accounts it failed over, resumes what it drained or paused; :class:`Handover`), as any
   hand-over between balancers must; the shadow arm's balancer never hands over.
3. **Report** per arm: failed messages, p95 delivery latency (message-weighted 95th percentile
   of the per-interval p95), account-minutes down, failovers needed/unneeded (judged against
   the simulator's ground truth), enforcement violations; means with a 95 % confidence
   interval over seeds (t distribution), and the relative reductions of auto against reactive.

The last line printed is one JSON object: ``seeds``, ``failed_messages_reduction``,
``p95_latency_reduction``, ``unneeded_failover_share``, ``enforcement_violations``,
``shadow_equals_baseline`` and the per-arm details. Goal (issue): >= 0.70, >= 0.35, <= 0.10, 0.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from alerts import fleetml  # noqa: E402  (the CLI runner the alert benchmark uses)

ARMS = ("reactive", "shadow", "auto")
_MS = 1_000_000


# ---- 1. train --------------------------------------------------------------------------------


def prepare(work: Path, args) -> Path:
    home = work / "train"
    stamp = work / "trained.json"
    params = {
        k: getattr(args, k) for k in ("masters", "servants", "step", "train_seed", "train_days")
    }
    if stamp.exists() and json.loads(stamp.read_text()).get("params") == params:
        return home
    t0 = time.perf_counter()
    fleetml(
        home,
        "simulate",
        *("--masters", str(args.masters), "--servants", str(args.servants)),
        *("--days", str(args.train_days), "--step", args.step, "--seed", str(args.train_seed)),
        *("--out", str(work / "train-sim"), "--into-home"),
    )
    degraded = getattr(args, "allow_degraded", False)
    anomaly = fleetml(home, "train", "anomaly", may_fail=degraded)
    risk = fleetml(home, "train", "risk", may_fail=degraded)
    stamp.write_text(
        json.dumps(
            {
                "params": params,
                "anomaly": anomaly.get("version"),
                "risk": risk.get("version"),
                "risk_promotion": risk.get("promotion_reason"),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )
    return home


# ---- 2. the runtime, driving the simulator and talking to the store ---------------------------


class Runtime:
    """What a bot runtime does, in process: push samples and events, read weights and pending
    actions, apply them, acknowledge them."""

    def __init__(self, home: Path, sim, mode: str, tick_every: int):
        from fleetml.cli_support import open_engine
        from fleetml.config import get_settings, reset_settings
        from fleetml.ingest.files import import_accounts
        from fleetml.services.tick import LiveLoop
        from fleetml.simulate.config import COUNTERS, METRIC_NAMES
        from fleetml.store.accounts import account_pks
        from fleetml.store.metrics import ensure_metric_kinds

        reset_settings()
        self.settings = get_settings(str(home)).model_copy(
            update={
                "decision_mode": mode,
                "score_every_s": float(tick_every * sim.config.step_s),
            }
        )
        self.engine = open_engine(self.settings)
        accounts = home / "accounts.csv"
        sim.layout.accounts_frame().to_csv(accounts, index=False)
        import_accounts(self.engine, [accounts], actor="bench")
        with self.engine.begin() as conn:
            kinds = {m: ("counter" if m in COUNTERS else "gauge") for m in METRIC_NAMES}
            kinds["up"] = "gauge"
            ensure_metric_kinds(conn, list(kinds), kinds)
        self.pks = account_pks(self.engine)
        self.names = METRIC_NAMES
        self.loop = LiveLoop(self.engine, self.settings)
        self.sim = sim
        self.tick_every = tick_every
        self.was_enforced = np.zeros(sim.layout.n_accounts, dtype=bool)
        self.ticks = 0
        self.tick_s: list[float] = []

    def push(self, obs) -> None:
        from fleetml.store.events import write_events
        from fleetml.store.metrics import write_samples

        ids = self.sim.layout.account_ids
        values = np.stack([obs.raw_metrics[m] for m in self.names], axis=1)
        # the runtime probes every account every step, also while the bot's own exporter is
        # silent (a crash, an exporter gap): its ``up`` gauge is pushed either way
        up = obs.raw_state["health_ok"]
        rows = []
        for i in range(len(ids)):
            vals = {m: float(v) for m, v in zip(self.names, values[i], strict=True) if v == v}
            vals["up"] = 1.0 if up[i] else 0.0
            rows.append((self.pks[ids[i]], int(obs.ts_ms), json.dumps(vals)))
        events = [
            (self.pks[e["account_id"]], int(e["ts_ms"]), e["kind"], e["detail"], "runtime")
            for e in obs.raw_events
            if e["kind"] not in ("failover", "failback")  # the runtime's own operations
        ]
        # a lifted restriction shows as sends resuming: the runtime reports it
        enforced = obs.raw_state["enforced"]
        for i in np.flatnonzero(self.was_enforced & ~enforced):
            events.append((self.pks[ids[i]], int(obs.ts_ms), "restriction_lifted", None, "runtime"))
        self.was_enforced = enforced.copy()
        with self.engine.begin() as conn:
            write_samples(conn, rows)
            if events:
                write_events(conn, events)

    def tick(self, now_ms: int) -> None:
        t = time.perf_counter()
        self.loop.run(now_ms=now_ms)
        self.tick_s.append(time.perf_counter() - t)
        self.ticks += 1

    def published(self, now_ms: int):
        """Weights and pending actions as the API serves them, turned into simulator actions;
        every action is acknowledged."""
        from fleetml.decisions.contracts import Actions
        from fleetml.store.actions import ack_action, list_actions
        from fleetml.store.weights import read_weights

        out = Actions(failover=[], failback=[], hold=[], drain=[], resume=[], pause=[])
        if self.settings.decision_mode == "auto":
            w = read_weights(self.engine)
            if len(w):
                out.weights = dict(zip(w["account_id"], w["weight"].astype(float), strict=True))
        pending = list_actions(self.engine, state="pending", limit=1000)
        kinds = {
            "failover": out.failover,
            "failback": out.failback,
            "hold": out.hold,
            "drain": out.drain,
            "resume": out.resume,
            "pause": out.pause,
        }
        with self.engine.begin() as conn:
            for a in pending:
                target = kinds.get(a["kind"])
                if target is not None:
                    target.append(a["account_id"])
                elif a["kind"] == "restart_session":
                    out.restart = [*out.restart, a["account_id"]]
                elif a["kind"] == "throttle":
                    rate = (a["params"] or {}).get("rate_per_min")
                    out.throttle = {
                        **out.throttle,
                        a["account_id"]: float("inf") if rate is None else float(rate),
                    }
                ack_action(
                    conn,
                    action_id=a["id"],
                    outcome="ok",
                    detail="applied by the bench runtime",
                    actor="bench-runtime",
                    now_ms=now_ms,
                )
        return out


class Handover:
    """The runtime's own balancer finishing what it began before it handed routing to fleetml.

    Before the hand-over (the warm-up) the reactive balancer failed accounts over and drained or
    paused them (maintenance, restrictions). fleetml did not make those moves, so it would never
    undo them: a servant failed over an hour before the hand-over would stay out of rotation
    for the rest of the run. The runtime therefore keeps its balancer running on the side and
    applies only its *closing* moves for the accounts it had taken out (failback after its
    passing probes, resume after maintenance or a lifted restriction); its weights and any new
    failover, drain or pause are dropped. Nothing here is specific to fleetml: it is what any
    hand-over from one balancer to another needs."""

    def __init__(self, baseline, obs):
        ids = obs.fleet.ids
        state = obs.raw_state
        self.baseline = baseline
        self.failed_over = set(ids[~state["in_rotation"]].tolist())
        self.paused = set(ids[state["paused"] | state["draining"]].tolist())

    def closing(self, obs):
        """The balancer's closing moves this step, as simulator actions (maybe empty)."""
        from fleetml.decisions.contracts import Actions

        own = self.baseline.decide(obs)
        back = [a for a in own.failback if a in self.failed_over]
        resume = [a for a in own.resume if a in self.paused]
        self.failed_over -= set(back)
        self.paused -= set(resume)
        return Actions(failback=back, resume=resume)


def merge(base, extra):
    """The reactive balancer's actions plus whatever fleetml published (shadow arm)."""
    if base is None:
        return extra
    for name in ("failover", "failback", "hold", "drain", "resume", "pause", "restart"):
        setattr(base, name, list(getattr(base, name)) + list(getattr(extra, name)))
    base.throttle = {**base.throttle, **extra.throttle}
    if extra.weights:
        base.weights = {**(base.weights or {}), **extra.weights}
    return base


def run_arm(arm: str, seed: int, config, train_home: Path, work: Path, args) -> dict:
    from fleetml.decisions.baseline import ReactiveBaselinePolicy
    from fleetml.simulate import FleetSimulator

    sim = FleetSimulator(config, seed)
    baseline = ReactiveBaselinePolicy()
    warm = config.steps(args.warmup_days * 1440)
    runtime = None
    if arm != "reactive":
        home = work / f"run-{seed}-{arm}"
        if home.exists():
            shutil.rmtree(home)
        home.mkdir(parents=True)
        for name in ("mlflow.db", "mlartifacts"):
            src = train_home / name
            if src.is_dir():
                shutil.copytree(src, home / name)
            elif src.exists():
                shutil.copyfile(src, home / name)
        runtime = Runtime(home, sim, "shadow" if arm == "shadow" else "auto", args.tick_every)
    obs = sim.reset()
    snap = None
    handover = None
    t0 = time.perf_counter()
    while not sim.done:
        step = sim.t
        if step == warm:
            snap = _snapshot(sim)
            if arm == "auto":
                handover = Handover(baseline, obs)
        use_baseline = arm != "auto" or step < warm
        actions = baseline.decide(obs) if use_baseline else None
        if handover is not None:
            actions = handover.closing(obs)
        if runtime is not None and step >= warm and (step - warm) % args.tick_every == 0:
            runtime.tick(int(obs.ts_ms))
            actions = merge(actions, runtime.published(int(obs.ts_ms)))
        obs = sim.step(actions).observation
        if runtime is not None:
            runtime.push(obs)
    result = _outcome(sim, snap, warm)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if runtime is not None:
        result["ticks"] = runtime.ticks
        result["tick_mean_s"] = round(float(np.mean(runtime.tick_s)), 3) if runtime.tick_s else None
        result["decisions"] = _decision_counts(runtime.engine)
        runtime.engine.dispose()
    return result


def _snapshot(sim) -> dict:
    sim._flush_latency()
    t = sim.totals
    return {
        "failed": t.failed,
        "delivered": t.delivered,
        "demand": t.demand,
        "hist95": t.latency95_hist.copy(),
        "down": sim.down_steps.copy(),
        "violations": t.violations,
        "by_cause": dict(t.failed_by_cause),
    }


def _p95(hist: np.ndarray) -> float | None:
    from fleetml.simulate.engine import _LAT_EDGES

    total = hist.sum()
    if total <= 0:
        return None
    b = int(np.searchsorted(np.cumsum(hist) / total, 0.95))
    edges = np.concatenate([[0.0], _LAT_EDGES, [np.inf]])
    return float(edges[min(b, len(edges) - 1)])


def _outcome(sim, snap, warm) -> dict:
    from fleetml.simulate.truth import failover_table

    sim._flush_latency()
    t = sim.totals
    snap = snap or _snapshot(sim)
    fo = failover_table(sim)
    fo = fo[fo["step"] >= warm] if len(fo) else fo
    return {
        "demand": round(t.demand - snap["demand"], 1),
        "failed": round(t.failed - snap["failed"], 1),
        "failed_by_cause": {
            k: round(v - snap["by_cause"][k], 1) for k, v in t.failed_by_cause.items()
        },
        # what routing can change: enforcement-held traffic stays on its number by rule
        "failed_technical": round(
            t.failed
            - snap["failed"]
            - (t.failed_by_cause["enforcement_hold"] - snap["by_cause"]["enforcement_hold"]),
            1,
        ),
        "delivered": round(t.delivered - snap["delivered"], 1),
        "p95_latency_ms": _p95(t.latency95_hist - snap["hist95"]),
        "downtime_min": float((sim.down_steps - snap["down"]).sum() * sim.config.dt_min),
        "failovers": int(len(fo)),
        "failovers_needed": int(fo["needed"].sum()) if len(fo) else 0,
        "failovers_unneeded": int((~fo["needed"]).sum()) if len(fo) else 0,
        "enforcement_violations": int(t.violations - snap["violations"]),
        # per failover: step, account, needed, and the fault of that account it answered (the
        # latest that began before it, or within the needed-horizon after): kind, onset, end
        "failover_log": [
            [int(r.step), str(sim.layout.account_ids[r.account]), bool(r.needed), *fault]
            for r, fault in zip(fo.itertuples(), _answered(sim, fo), strict=True)
        ],
    }


def _answered(sim, fo) -> list[list]:
    """For each failover of ``fo``: ``[kind, onset step, end step]`` of the fault (or
    maintenance) of its account that began last before it or within the needed-horizon after
    it; ``[None, None, None]`` when there is none."""
    from fleetml.simulate.truth import fault_table

    if not len(fo):
        return []
    faults = fault_table(sim)
    m = sim.schedule.maintenance.rows()
    spans = pd.concat(
        [
            faults[["account", "kind", "onset", "end"]],
            pd.DataFrame(
                {
                    "account": m["account"],
                    "kind": "maintenance",
                    "onset": m["start"],
                    "end": m["end"],
                }
            ),
        ],
        ignore_index=True,
    )
    horizon = sim.config.steps(sim.config.failover_needed_horizon_min)
    out = []
    for r in fo.itertuples():
        mine = spans[(spans["account"] == r.account) & (spans["onset"] <= r.step + horizon)]
        if not len(mine):
            out.append([None, None, None])
            continue
        last = mine.sort_values("onset").iloc[-1]
        out.append([str(last["kind"]), int(last["onset"]), int(last["end"])])
    return out


def _decision_counts(engine) -> dict:
    import sqlalchemy as sa

    from fleetml.store.tables import decisions

    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(decisions.c.kind, decisions.c.status, sa.func.count()).group_by(
                decisions.c.kind, decisions.c.status
            )
        ).all()
    return {f"{k}:{s}": int(n) for k, s, n in rows}


# ---- 3. report -------------------------------------------------------------------------------


def ci95(values) -> dict:
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if not len(x):
        return {"mean": None, "lo": None, "hi": None}
    mean = float(x.mean())
    if len(x) < 2:
        return {"mean": mean, "lo": None, "hi": None}
    from scipy import stats

    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return {"mean": round(mean, 4), "lo": round(mean - half, 4), "hi": round(mean + half, 4)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument("--days", type=float, default=2.0, help="evaluated days after the warm-up")
    p.add_argument("--warmup-days", type=float, default=1.0)
    p.add_argument("--masters", type=int, default=8)
    p.add_argument("--servants", type=int, default=2)
    p.add_argument("--step", default="5m")
    p.add_argument("--tick-every", type=int, default=1, help="simulated steps between ticks")
    p.add_argument("--train-seed", type=int, default=101)
    p.add_argument("--train-days", type=float, default=7.0)
    p.add_argument("--keep", default=None, help="work folder to keep (and reuse the training)")
    p.add_argument(
        "--no-shadow",
        action="store_true",
        help="skip the shadow arm (quicker development runs; shadow_equals_baseline is then false)",
    )
    p.add_argument(
        "--allow-degraded",
        action="store_true",
        help="go on when training fails (tiny fleets): fleetml then serves its heuristics",
    )
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    arms = [a for a in ARMS if not (args.no_shadow and a == "shadow")]
    if args.train_seed in seeds:
        raise SystemExit("--train-seed must differ from every evaluated seed")

    from fleetml.simulate import SimConfig, parse_step

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fleetml-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    train_home = prepare(work, args)
    config = SimConfig(
        masters=args.masters,
        servants=args.servants,
        days=args.warmup_days + args.days,
        step_s=parse_step(args.step),
    )
    per: dict[str, dict[int, dict]] = {a: {} for a in arms}
    for seed in seeds:
        for arm in arms:
            res = run_arm(arm, seed, config, train_home, work, args)
            per[arm][seed] = res
            print(
                f"seed {seed} {arm:8s} failed {res['failed']:10.1f}  p95 {res['p95_latency_ms']}"
                f"  down {res['downtime_min']:7.0f} min  failovers {res['failovers']}"
                f" ({res['failovers_unneeded']} unneeded)  violations"
                f" {res['enforcement_violations']}  {res['seconds']} s",
                file=sys.stderr,
                flush=True,
            )

    def reduction(key):
        out = []
        for s in seeds:
            base, auto = per["reactive"][s][key], per["auto"][s][key]
            out.append(None if not base else 1.0 - auto / base)
        return ci95(out)

    fields = (
        "failed",
        "failed_technical",
        "p95_latency_ms",
        "downtime_min",
        "failovers_needed",
        "failovers_unneeded",
    )
    table = {arm: {f: ci95([per[arm][s][f] for s in seeds]) for f in fields} for arm in arms}
    for arm in arms:
        row = "  ".join(f"{f} {table[arm][f]['mean']}" for f in fields)
        print(f"{arm:8s} {row}")
    auto_fo = sum(per["auto"][s]["failovers"] for s in seeds)
    auto_un = sum(per["auto"][s]["failovers_unneeded"] for s in seeds)
    shadow_eq = "shadow" in per and all(
        per["shadow"][s][k] == per["reactive"][s][k]
        for s in seeds
        for k in ("failed", "delivered", "p95_latency_ms", "downtime_min", "failovers")
    )
    result = {
        "seeds": seeds,
        "days": args.days,
        "failed_messages_reduction": reduction("failed")["mean"],
        "failed_messages_reduction_ci95": reduction("failed"),
        # failed messages minus those held on restricted/held numbers, which no arm may reroute
        "failed_technical_reduction_ci95": reduction("failed_technical"),
        "failed_by_cause": {
            a: {
                k: ci95([per[a][s]["failed_by_cause"][k] for s in seeds])["mean"]
                for k in per[a][seeds[0]]["failed_by_cause"]
            }
            for a in arms
        },
        "p95_latency_reduction": reduction("p95_latency_ms")["mean"],
        "p95_latency_reduction_ci95": reduction("p95_latency_ms"),
        "downtime_reduction_ci95": reduction("downtime_min"),
        "unneeded_failover_share": round(auto_un / auto_fo, 4) if auto_fo else 0.0,
        "enforcement_violations": int(
            sum(per[a][s]["enforcement_violations"] for a in arms for s in seeds)
        ),
        "shadow_equals_baseline": bool(shadow_eq),
        "arms": table,
        "per_seed": {a: {str(s): per[a][s] for s in seeds} for a in arms},
        "goal": {
            "failed_messages_reduction": 0.7,
            "p95_latency_reduction": 0.35,
            "unneeded_failover_share": 0.1,
        },
    }
    print(json.dumps(result, default=str))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
