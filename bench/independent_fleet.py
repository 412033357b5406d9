"""Failure risk on a fleet fleetml's simulator did not make, through the CLI, beside a plain
gradient-boosting baseline: a check on data the product was never tuned on.

    PYTHONPATH=. python bench/independent_fleet.py [--seed 1] [--masters 10] [--servants 2]
        [--days 42] [--train-days 28] [--keep DIR]

The generator below shares no code with :mod:`fleetml.simulate`: 10-minute samples stamped in
Europe/Berlin local time (the range spans the March daylight-saving change), other metric names
(``msgs``, ``sent_total``/``errors_total``/``reconnects_total`` counters that reset when the
bot restarts, ``latency_ms``, ``mem_mb``, ``cpu_pct``), 0.5 % of rows missing, no samples
while an account is down, and fault mechanisms of its own:

* memory leaks (about half the bots, 0-40 MB/h) that crash the process at 1,500 MB;
* session decay (reconnects rising over a day or more) ending in a ``logout``;
* random ``crash`` and ``disconnect`` faults without precursor;
* restrictions (enforcement, never a fault label) after six hours of extra send errors.

1. The files are imported with ``fleetml import accounts|metrics|events``.
2. ``fleetml train risk --to CUT`` (every option at its default) trains on the first
   ``--train-days``; ``fleetml score risk --from CUT`` scores the rest.
3. Baseline: scikit-learn's ``HistGradientBoostingClassifier`` (default settings) on rolling
   mean and standard deviation of every metric (counters as per-sample increases) over 1 h, 6 h
   and 24 h, trained per horizon on every row before the cut whose label window ends before it.

Labels: a technical fault (:data:`fleetml.vocab.FAULT_KINDS`) of the account within
``(t, t + horizon]``. Rows scored: ``CUT <= t <= END - horizon`` that both models scored. Prints
one JSON line with each horizon's PR-AUC for both and the positive rate. Nothing here was tuned:
the generator was written once, and no product setting was chosen on its results.
"""

from __future__ import annotations

import argparse
import json
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
from risk_sim import rolling_features  # noqa: E402  (the same baseline features as risk_sim)

STEP_MIN = 10
COUNTERS = ("sent_total", "errors_total", "reconnects_total")
HORIZONS = ("1h", "6h", "24h")


def generate(out: Path, *, seed: int, masters: int, servants: int, days: int) -> dict:
    """Write ``accounts.csv``, ``metrics.csv`` and ``events.csv`` into ``out``."""
    rng = np.random.default_rng(seed)
    n_steps = days * 24 * 60 // STEP_MIN
    start = pd.Timestamp("2026-03-01T00:00:00", tz="Europe/Berlin")
    stamps = pd.date_range(start.tz_convert("UTC"), periods=n_steps, freq=f"{STEP_MIN}min")
    local = stamps.tz_convert("Europe/Berlin")
    hour = (local.hour + local.minute / 60).to_numpy()
    weekend = local.day_of_week.to_numpy() >= 5
    iso = [t.isoformat() for t in local]

    accounts = []
    for g in range(masters):
        m = f"bot{g:02d}"
        accounts.append((m, "master", "", f"team{g}", 120))
        for s in range(servants):
            accounts.append((f"{m}b{s}", "servant", m, f"team{g}", 80))
    acc = pd.DataFrame(accounts, columns=["account_id", "role", "master_id", "group", "capacity"])
    acc.to_csv(out / "accounts.csv", index=False)

    rows, events = [], []
    day_shape = 0.5 + 0.5 * np.exp(-((hour - 14.0) ** 2) / 18.0)  # a peak at 14:00 local
    for a in acc.itertuples():
        base = (300.0 if a.role == "master" else 90.0) * rng.uniform(0.6, 1.4)
        load = base * day_shape * np.where(weekend, 0.6, 1.0) * rng.lognormal(0, 0.08, n_steps)
        leak = rng.uniform(0, 40) if rng.random() < 0.5 else 0.0  # MB per hour
        decay_rate = rng.uniform(0.0, 0.03) if rng.random() < 0.5 else 0.0
        mem, decay, sent, errs, reconn = 400.0, 0.0, 0.0, 0.0, 0.0
        down_until, run_up, restricted_until = -1, -1, -1
        for t in range(n_steps):
            if t < down_until:
                continue  # no samples while down
            msgs = 0.0 if t < restricted_until else float(load[t])
            mem += leak * STEP_MIN / 60 * rng.uniform(0.5, 1.5)
            decay += decay_rate * rng.uniform(0, 2)
            util = msgs / (a.capacity * STEP_MIN)
            latency = (
                800.0
                * (1 + 0.3 * (mem / 1500.0) ** 3)
                / max(0.05, 1 - min(util, 0.95))
                * rng.lognormal(0, 0.1)
            )
            err_p = 0.004 + 0.02 * max(0.0, util - 0.9) + (0.03 if run_up >= 0 else 0.0)
            sent += msgs
            errs += rng.binomial(int(msgs), min(err_p, 1.0)) if msgs > 0 else 0
            reconn += rng.poisson(0.05 + decay)
            cpu = 10 + 60 * min(util, 1.2) + rng.normal(0, 3)
            if rng.random() > 0.005:
                rows.append(
                    (iso[t], a.account_id, round(msgs, 1), sent, errs, reconn)
                    + (round(latency, 1), round(mem, 1), round(cpu, 1))
                )
            kind = None
            if mem > 1500:
                kind = "crash"
            elif decay > 1.5 and rng.random() < 0.2:
                kind = "logout"
            elif rng.random() < 0.0004:
                kind = "crash"
            elif rng.random() < 0.0003:
                kind = "disconnect"
            if run_up >= 0:
                run_up += 1
                if run_up > 36:
                    events.append((iso[t], a.account_id, "restricted"))
                    restricted_until = t + int(rng.integers(36, 144))
                    run_up = -1
            elif t > restricted_until and rng.random() < 0.0002:
                run_up = 0
            if t == restricted_until:
                events.append((iso[t], a.account_id, "restriction_lifted"))
            if kind:
                events.append((iso[t], a.account_id, kind))
                down_until = t + int(rng.integers(1, 7))
                mem, decay, sent, errs, reconn = 400.0, 0.0, 0.0, 0.0, 0.0
                if rng.random() < 0.7:
                    leak = rng.uniform(0, 40) if rng.random() < 0.5 else 0.0
                decay_rate = rng.uniform(0.0, 0.03) if rng.random() < 0.5 else 0.0
    columns = ["ts", "account_id", "msgs", *COUNTERS, "latency_ms", "mem_mb", "cpu_pct"]
    pd.DataFrame(rows, columns=columns).to_csv(out / "metrics.csv", index=False)
    ev = pd.DataFrame(events, columns=["ts", "account_id", "kind"])
    ev.to_csv(out / "events.csv", index=False)
    return {"rows": len(rows), "events": ev["kind"].value_counts().to_dict()}


def _ms(ts: pd.Series) -> np.ndarray:
    """Epoch milliseconds (pandas 3 may hold parsed times in micro- or nanoseconds)."""
    return pd.DatetimeIndex(ts).as_unit("ms").asi8


def labels(frame: pd.DataFrame, faults: pd.DataFrame, horizon: str) -> np.ndarray:
    """1 when a fault of the row's account starts within ``(t, t + horizon]``."""
    h = pd.Timedelta(horizon) // pd.Timedelta(milliseconds=1)
    t_all = _ms(frame["ts"])
    y = np.zeros(len(frame))
    acc = frame["account_id"].to_numpy()
    for a, part in faults.groupby("account_id"):
        rows = np.flatnonzero(acc == a)
        onsets = np.sort(_ms(part["ts"]))
        nxt = np.searchsorted(onsets, t_all[rows], side="right")
        has = nxt < len(onsets)
        gap = onsets[np.minimum(nxt, len(onsets) - 1)] - t_all[rows]
        y[rows] = has & (gap <= h)
    return y


def evaluate(work: Path, scores: pd.DataFrame, cut: pd.Timestamp) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import average_precision_score

    from fleetml.vocab import FAULT_KINDS

    m = pd.read_csv(work / "metrics.csv")
    m["ts"] = pd.to_datetime(m["ts"], utc=True, format="ISO8601")
    m = m.sort_values(["account_id", "ts"], kind="stable").reset_index(drop=True)
    for c in COUNTERS:  # per-sample increases; a reset starts again from the new value
        d = m.groupby("account_id")[c].diff()
        m[c] = d.where(d >= 0, m[c])
    metrics = [c for c in m.columns if c not in ("ts", "account_id")]
    X = rolling_features(m, metrics)
    ev = pd.read_csv(work / "events.csv")
    ev["ts"] = pd.to_datetime(ev["ts"], utc=True, format="ISO8601")
    faults = ev[ev["kind"].isin(sorted(FAULT_KINDS))]
    scores = scores.assign(ts=pd.to_datetime(scores["ts"], utc=True))
    end = m["ts"].max()
    out = {}
    for h in HORIZONS:
        y = labels(m, faults, h)
        span = pd.Timedelta(h)
        train = (m["ts"] + span < cut).to_numpy()
        test = ((m["ts"] >= cut) & (m["ts"] + span <= end)).to_numpy()
        base = HistGradientBoostingClassifier(random_state=0).fit(X[train], y[train])
        rows = m.loc[test, ["ts", "account_id"]].assign(
            y=y[test], baseline=base.predict_proba(X[test])[:, 1]
        )
        ours = scores.loc[scores["horizon"] == h, ["ts", "account_id", "risk"]]
        both = rows.merge(ours, on=["ts", "account_id"], how="inner")
        out[h] = {
            "rows": len(both),
            "positive_rate": round(float(both["y"].mean()), 4),
            "fleetml_pr_auc": round(float(average_precision_score(both["y"], both["risk"])), 4),
            "baseline_pr_auc": round(
                float(average_precision_score(both["y"], both["baseline"])), 4
            ),
        }
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--masters", type=int, default=10)
    p.add_argument("--servants", type=int, default=2)
    p.add_argument("--days", type=int, default=42)
    p.add_argument("--train-days", type=int, default=28)
    p.add_argument("--keep", type=Path, default=None, help="work folder to keep")
    args = p.parse_args(argv)
    if not 0 < args.train_days < args.days:
        p.error("--train-days must be between 0 and --days")
    work = args.keep or Path(tempfile.mkdtemp(prefix="fleetml-independent-"))
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    t0 = time.perf_counter()
    made = generate(
        work, seed=args.seed, masters=args.masters, servants=args.servants, days=args.days
    )
    fleetml(home, "import", "accounts", str(work / "accounts.csv"))
    fleetml(home, "import", "metrics", str(work / "metrics.csv"), "--counters", ",".join(COUNTERS))
    fleetml(home, "import", "events", str(work / "events.csv"))
    start = pd.Timestamp("2026-03-01T00:00:00", tz="Europe/Berlin").tz_convert("UTC")
    cut = start + pd.Timedelta(days=args.train_days)
    trained = fleetml(home, "train", "risk", "--to", cut.isoformat())
    scored_file = work / "scores.parquet"
    fleetml(
        home,
        "score",
        "risk",
        "--from",
        cut.isoformat(),
        "--version",
        str(trained["version"]),
        "--out",
        str(scored_file),
    )
    result = {
        "seed": args.seed,
        "accounts": args.masters * (1 + args.servants),
        "days": args.days,
        "train_days": args.train_days,
        "generated": made,
        "risk_version": trained["version"],
        "horizons": evaluate(work, pd.read_parquet(scored_file), cut),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
