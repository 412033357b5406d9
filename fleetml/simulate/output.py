"""Turn a finished run into the import formats: accounts, wide metrics, events, ground truth.

The metrics file carries the nuisance real exports have: missing rows, NaN cells, clock jitter,
duplicated rows and late (out-of-order) rows, on top of the structural gaps (crashed processes,
unreachable hosts, maintenance, exporter gaps) and counter resets made by the engine itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from fleetml.simulate.config import COUNTERS, METRIC_NAMES, SimConfig
from fleetml.simulate.engine import FleetSimulator
from fleetml.simulate.loop import LoopReport, drive, loop_report
from fleetml.simulate.policy import Policy, ReactiveBaselinePolicy
from fleetml.simulate.truth import ground_truth


@dataclass
class SimulationRun:
    """A finished offline run: the frames to write and the truth to judge models against."""

    accounts: pd.DataFrame
    metrics: pd.DataFrame
    events: pd.DataFrame
    ground_truth: dict
    report: LoopReport
    nuisance: dict


_DECIMALS = {
    "delivery_latency_p50_ms": 0,
    "delivery_latency_p95_ms": 0,
    "cpu_pct": 1,
    "mem_mb": 1,
    "ws_rtt_ms": 1,
}


def _ts_column(ms: np.ndarray) -> pd.Series:
    return pd.Series(pd.DatetimeIndex(ms.astype("datetime64[ms]")).tz_localize("UTC"))


def _account_column(codes: np.ndarray, ids) -> pd.Series:
    """A ``str`` column from account codes, decoded by Arrow (much faster than object strings)."""
    labels = pa.DictionaryArray.from_arrays(
        pa.array(codes.astype(np.int32)), pa.array(list(ids))
    ).cast(pa.string())
    return pd.Series(labels, dtype="str")


def metrics_frame(
    sim: FleetSimulator, *, nuisance: bool | None = None
) -> tuple[pd.DataFrame, dict]:
    """The wide metrics frame of a recorded run, with export nuisance applied.

    Rows are sorted by (account_id, ts) except for the late and duplicated rows, which are
    appended at the end in random order (as a late exporter would deliver them). Returns the
    frame and a summary of the nuisance (rows dropped, duplicated, late, NaN cells).
    """
    if not sim.record:
        raise ValueError("this simulator ran with record=False; nothing to export")
    cfg: SimConfig = sim.config
    nuisance = cfg.nuisance if nuisance is None else nuisance
    rng = np.random.default_rng(sim.output_seed)
    n_steps, n_acc = sim.t, sim.layout.n_accounts
    present = sim.rec_present[:n_steps].T.copy()  # (accounts, steps), account-major like the file
    n_dropped = n_dup = n_late = n_nan = 0
    if nuisance and cfg.missing_rate > 0:
        dropped = present & (rng.random(present.shape, dtype=np.float32) < cfg.missing_rate)
        present &= ~dropped
        n_dropped = int(dropped.sum())
    flat = np.flatnonzero(present.ravel())
    del present
    jitter = None
    if nuisance and cfg.clock_jitter_s > 0:
        # per sample, so a duplicated row carries exactly the timestamp of its original
        bound = min(5.0, cfg.step_s / 4.0)
        skew = rng.uniform(-0.5, 0.5, n_acc) * min(1.0, bound)
        jitter = rng.normal(0.0, cfg.clock_jitter_s, len(flat)).astype(np.float32)
        jitter = np.round(np.clip(jitter + skew[flat // n_steps], -bound, bound) * 1000)
    order = np.arange(len(flat))
    if nuisance and len(flat):
        dup = np.flatnonzero(rng.random(len(flat), dtype=np.float32) < cfg.duplicate_rate)
        late = rng.random(len(flat), dtype=np.float32) < cfg.late_rate
        n_dup, n_late = len(dup), int(late.sum())
        tail = np.concatenate([dup, np.flatnonzero(late)])
        rng.shuffle(tail)
        order = np.concatenate([order[~late], tail])
    acc = flat[order] // n_steps
    step = flat[order] % n_steps
    ts = sim.ts_ms(0) + step * (cfg.step_s * 1000)
    if jitter is not None:
        ts = ts + jitter[order].astype(np.int64)
    del flat, order, jitter
    columns: dict[str, object] = {
        "ts": _ts_column(ts),
        "account_id": _account_column(acc, sim.layout.account_ids),
    }
    for m, name in enumerate(METRIC_NAMES):
        col = sim.rec[m][step, acc].astype(np.float64)
        if name in _DECIMALS:
            col = np.round(col, _DECIMALS[name])  # exporters print a sensible precision
        if nuisance and cfg.nan_cell_rate > 0:
            hole = rng.random(len(col), dtype=np.float32) < cfg.nan_cell_rate
            col[hole] = np.nan
            n_nan += int(hole.sum())
        columns[name] = col
    frame = pd.DataFrame(columns, copy=False)
    summary = {
        "rows": len(frame),
        "missing_rows": n_dropped,
        "nan_cells": n_nan,
        "duplicated_rows": n_dup,
        "late_rows": n_late,
        "clock_jitter_s": cfg.clock_jitter_s if nuisance else 0.0,
    }
    return frame, summary


def events_frame(sim: FleetSimulator) -> pd.DataFrame:
    """Events the runtime reported (faults at onset, enforcement, maintenance, failovers)."""
    if not sim.events:
        return pd.DataFrame(
            {
                "ts": _ts_column(np.zeros(0, dtype=np.int64)),
                "account_id": pd.Series([], dtype="str"),
                "kind": pd.Series([], dtype="str"),
                "detail": pd.Series([], dtype="str"),
            }
        )
    steps, accounts, kinds, details = zip(*sim.events, strict=True)
    ts = sim.ts_ms(0) + np.asarray(steps, dtype=np.int64) * (sim.config.step_s * 1000)
    frame = pd.DataFrame(
        {
            "ts": _ts_column(ts),
            "account_id": pd.Series(sim.layout.account_ids[np.asarray(accounts)], dtype="str"),
            "kind": pd.Series(kinds, dtype="str"),
            "detail": pd.Series(details, dtype="str"),
        }
    )
    return frame.sort_values(["ts", "account_id"], kind="stable").reset_index(drop=True)


def simulate_fleet(
    config: SimConfig | None = None, seed: int = 0, *, policy: Policy | None = None
) -> SimulationRun:
    """Simulate a fleet offline (driven by the reactive baseline unless ``policy`` is given)."""
    sim = FleetSimulator(config, seed, record=True)
    drive(sim, policy or ReactiveBaselinePolicy())
    metrics, nuisance = metrics_frame(sim)
    truth = ground_truth(sim)
    truth["nuisance"] = nuisance
    return SimulationRun(
        accounts=sim.layout.accounts_frame(),
        metrics=metrics,
        events=events_frame(sim),
        ground_truth=truth,
        report=loop_report(sim),
        nuisance=nuisance,
    )


def _iso_ms(ts: pd.Series) -> np.ndarray:
    values = ts.to_numpy(dtype="datetime64[ms]") if len(ts) else np.zeros(0, "datetime64[ms]")
    return np.char.add(np.datetime_as_string(values, unit="ms"), "Z")


def write_run(run: SimulationRun, out_dir: str | Path, *, fmt: str = "parquet") -> dict[str, Path]:
    """Write accounts.csv, metrics.parquet (or metrics.csv), events.csv and ground_truth.json."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"format must be 'parquet' or 'csv', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "accounts": out / "accounts.csv",
        "metrics": out / f"metrics.{fmt}",
        "events": out / "events.csv",
        "ground_truth": out / "ground_truth.json",
    }
    run.accounts.to_csv(paths["accounts"], index=False)
    if fmt == "parquet":
        run.metrics.to_parquet(paths["metrics"], index=False)
    else:
        frame = run.metrics.assign(ts=_iso_ms(run.metrics["ts"]))
        frame.to_csv(paths["metrics"], index=False, float_format="%.6g")
    events = run.events.assign(ts=_iso_ms(run.events["ts"]))
    events.to_csv(paths["events"], index=False)
    truth = dict(run.ground_truth)
    truth["counters"] = list(COUNTERS)
    truth["report"] = run.report.to_dict()
    paths["ground_truth"].write_text(json.dumps(truth, indent=1, default=str))
    return paths


def load_run(engine, paths: dict[str, Path], *, actor: str) -> dict:
    """Import a run's files (accounts, metrics with counters declared, events) into the store.

    Returns the :class:`~fleetml.ingest.files.ImportReport` of each, keyed like ``paths``.
    """
    from fleetml.ingest.files import import_accounts, import_events, import_metrics

    return {
        "accounts": import_accounts(engine, [paths["accounts"]], actor=actor),
        "metrics": import_metrics(
            engine, [paths["metrics"]], counters=COUNTERS, actor=actor, progress=False
        ),
        "events": import_events(engine, [paths["events"]], actor=actor),
    }
