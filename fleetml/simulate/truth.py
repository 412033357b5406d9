"""Ground truth of a run: faults, enforcement episodes, benign anomalies, maintenance windows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fleetml.simulate.config import ONSET_KIND
from fleetml.simulate.schedule import ENFORCEMENT, FAR, FAULT_CODES, LOOKALIKES, MECHANISMS


def _iso(sim, step) -> str | None:
    if step is None or step >= FAR // 2:
        return None
    return pd.Timestamp(sim.ts_ms(int(step)), unit="ms", tz="UTC").isoformat()


def fault_table(sim) -> pd.DataFrame:
    """One row per technical fault with an onset inside the run (exogenous and overload)."""
    f = sim.schedule.faults.rows()
    dt = sim.config.dt_min
    rows = {
        "account": f["account"],
        "mechanism": np.asarray(MECHANISMS, dtype=object)[f["code"]],
        "kind": np.asarray(FAULT_CODES, dtype=object)[f["kind"]],
        "start": f["start"],
        "onset": f["onset"],
        "end": f["end"],
    }
    table = pd.DataFrame(rows)
    if sim.overload_faults:
        over = pd.DataFrame(sim.overload_faults)
        over["mechanism"] = "overload"
        over["kind"] = ONSET_KIND["overload"]
        table = pd.concat([table, over[list(table.columns)]], ignore_index=True)
    table = table[(table["onset"] >= 0) & (table["onset"] < sim.t)]
    table["foreseeable"] = (table["mechanism"] != "sudden") & (table["onset"] > table["start"])
    table["lead_time_min"] = (table["onset"] - table["start"]) * dt
    table["downtime_min"] = (table["end"] - table["onset"]) * dt
    return table.sort_values(["onset", "account"]).reset_index(drop=True)


def failover_table(sim) -> pd.DataFrame:
    """Failovers done by the policy and whether each was needed.

    A failover is *needed* when the account was down (fault or maintenance) at the time or a
    fault began within ``failover_needed_horizon_min`` after it.
    """
    log = pd.DataFrame(sim.failover_log, columns=["step", "account"])
    if log.empty:
        return log.assign(needed=pd.Series(dtype=bool))
    horizon = sim.config.steps(sim.config.failover_needed_horizon_min)
    faults = fault_table(sim)
    m = sim.schedule.maintenance.rows()
    spans = pd.concat(
        [
            faults[["account", "onset", "end"]],
            pd.DataFrame({"account": m["account"], "onset": m["start"], "end": m["end"]}),
        ],
        ignore_index=True,
    )
    merged = log.reset_index().merge(spans, on="account", how="left")
    hit = (merged["onset"] <= merged["step"] + horizon) & (merged["end"] > merged["step"])
    needed = hit.groupby(merged["index"]).any()
    return log.assign(needed=needed.reindex(log.index, fill_value=False).to_numpy())


def ground_truth(sim) -> dict:
    """A JSON-ready description of everything the run injected (nothing a policy could see)."""
    ids = sim.layout.account_ids
    cfg = sim.config
    faults = fault_table(sim)
    fault_list = [
        {
            "account_id": ids[r.account],
            "kind": r.kind,
            "mechanism": r.mechanism,
            "foreseeable": bool(r.foreseeable),
            "precursor_start": _iso(sim, r.start),
            "onset": _iso(sim, r.onset),
            "recovery": _iso(sim, r.end),
            "lead_time_min": float(r.lead_time_min),
            "downtime_min": float(r.downtime_min),
        }
        for r in faults.itertuples()
    ]

    enforcement, anomalies = [], []
    e = sim.schedule.enforcement.rows()
    for a, st, on, en, code in zip(
        e["account"], e["start"], e["onset"], e["end"], e["code"], strict=True
    ):
        if on < 0 or on >= sim.t:
            continue
        name = ENFORCEMENT[code]
        if name == "none":
            anomalies.append(
                {
                    "kind": "complaint_wave",
                    "account_ids": [ids[a]],
                    "start": _iso(sim, st),
                    "end": _iso(sim, en),
                    "benign": True,
                }
            )
            continue
        enforcement.append(
            {
                "account_id": ids[a],
                "kind": name,
                "precursor_start": _iso(sim, st),
                "onset": _iso(sim, on),
                "end": None if name == "banned" else _iso(sim, en),
                "lead_time_min": float((on - st) * cfg.dt_min),
            }
        )

    look = sim.schedule.lookalikes.rows()
    for a, st, en, code in zip(
        look["account"], look["start"], look["end"], look["code"], strict=True
    ):
        if en <= 0 or st >= sim.t:
            continue
        anomalies.append(
            {
                "kind": LOOKALIKES[code],
                "account_ids": [ids[a]],
                "start": _iso(sim, max(st, 0)),
                "end": _iso(sim, en),
                "benign": True,
            }
        )
    members = {g: ids[sim.layout.group_index == g].tolist() for g in range(sim.layout.n_groups)}
    for item in sim.demand.anomalies:
        anomalies.append(
            {
                "kind": item["kind"],
                "group": sim.layout.group_names[item["group"]],
                "account_ids": members[item["group"]],
                "start": _iso(sim, item["start"]),
                "end": _iso(sim, item["end"]),
                "amplitude": round(item["amplitude"], 3),
                "benign": True,
            }
        )
    x = sim.schedule.exporter.rows()
    for a, st, en, code in zip(x["account"], x["start"], x["end"], x["code"], strict=True):
        if st < 0 or st >= sim.t:
            continue
        anomalies.append(
            {
                "kind": "exporter_gap" if code == 1 else "counter_reset",
                "account_ids": [ids[a]],
                "start": _iso(sim, st),
                "end": _iso(sim, en),
                "benign": True,
            }
        )

    m = sim.schedule.maintenance.rows()
    maintenance = [
        {"account_id": ids[a], "start": _iso(sim, st), "end": _iso(sim, en)}
        for a, st, en in zip(m["account"], m["start"], m["end"], strict=True)
        if st < sim.t
    ]
    failovers = failover_table(sim)
    return {
        "seed": sim.seed,
        "config": cfg.to_dict(),
        "start": _iso(sim, 0),
        "end": _iso(sim, sim.t),
        "step_s": cfg.step_s,
        "faults": fault_list,
        "enforcement": enforcement,
        "anomalies": sorted(anomalies, key=lambda a: (a["start"] or "", a["kind"])),
        "maintenance": maintenance,
        "failovers": [
            {"account_id": ids[r.account], "ts": _iso(sim, r.step), "needed": bool(r.needed)}
            for r in failovers.itertuples()
        ],
        "summary": {
            "faults": len(fault_list),
            "foreseeable_faults": int(faults["foreseeable"].sum()),
            "faults_by_kind": {str(k): int(v) for k, v in faults["kind"].value_counts().items()},
            "faults_by_mechanism": {
                str(k): int(v) for k, v in faults["mechanism"].value_counts().items()
            },
            "enforcement": len(enforcement),
            "anomalies": len(anomalies),
            "maintenance_windows": len(maintenance),
        },
    }
