"""Promotion gate, the champion on the challenger's held-out rows, and the walk-forward
backtest."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from fleetml.evaluation.pointwise import precision_recall_f1
from fleetml.evaluation.risk import horizon_metrics, lead_time_summary, lead_times
from fleetml.models.risk import RiskModel
from fleetml.training.risk_config import RiskTrainConfig
from fleetml.training.risk_fit import FitResult, _events, _sorted, fit_risk
from fleetml.training.risk_labels import make_labels


def mean_pr_auc(metrics: dict[str, dict[str, float]]) -> float:
    vals = [m.get("pr_auc", float("nan")) for m in metrics.values()]
    vals = [v for v in vals if math.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def promotion_decision(
    challenger: dict[str, dict[str, float]],
    champion: dict[str, dict[str, float]] | None,
    *,
    tolerance: float = 0.0,
) -> tuple[bool, str]:
    """Promote when the challenger's mean test PR-AUC over horizons is at least the champion's
    (minus ``tolerance``) on the same held-out rows (pure function)."""
    ours = mean_pr_auc(challenger)
    if not math.isfinite(ours):
        return False, "no fault in the held-out period: no evidence for promotion"
    if not champion:
        return True, f"mean PR-AUC {ours:.3f}; no comparable champion"
    theirs = mean_pr_auc({h: champion[h] for h in challenger if h in champion})
    if math.isfinite(theirs) and ours < theirs - tolerance:
        return False, f"mean PR-AUC {ours:.3f} below the champion's {theirs:.3f}"
    return True, f"mean PR-AUC {ours:.3f} vs champion {theirs:.3f}"


def _champion_metrics(
    champ: RiskModel, frame, faults, fit: FitResult, config, enforcement=None
) -> dict:
    """The champion's metrics on the challenger's held-out period (all test rows), its features
    built with the same events as the challenger's."""
    t_test = int(fit.data_range["test_start"].value // 10**6)
    frame = _sorted(frame)
    ts_ms = pd.DatetimeIndex(frame["ts"]).as_unit("ms").asi8
    rows = np.flatnonzero(ts_ms >= t_test)
    if len(rows) > config.max_eval_rows:
        rows = np.sort(
            np.random.default_rng(config.random_state).choice(
                rows, config.max_eval_rows, replace=False
            )
        )
    account_id = frame["account_id"].astype(str).to_numpy()
    end_ms = int(ts_ms.max())
    feats = champ.build_features(frame, rows=rows, events=_events(faults, enforcement))
    wide = champ.risk_wide(feats)
    out = {}
    for h, hm in champ.horizons.items():
        y = make_labels(ts_ms[rows], account_id[rows], faults, (h,), end_ms)[h]
        out[h] = horizon_metrics(
            y, wide[h].to_numpy(), threshold=hm.threshold, target_precision=config.target_precision
        )
    return out


def backtest_risk(
    frame: pd.DataFrame,
    *,
    faults: pd.DataFrame,
    enforcement: pd.DataFrame | None = None,
    kinds=None,
    groups=None,
    config: RiskTrainConfig | None = None,
    folds: int = 3,
    masters=None,
    initial: float = 0.5,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Walk-forward, strictly causal replay: the time after the first ``initial`` fraction is cut
    into ``folds`` periods; each is scored by a model trained (and calibrated, thresholded) only
    on rows whose label windows end before the period starts. Returns the long-format scores
    (with ``label``) and a per-horizon summary."""
    config = config or RiskTrainConfig()
    frame = frame.sort_values(["account_id", "ts"], kind="stable").reset_index(drop=True)
    ts_ms = pd.DatetimeIndex(frame["ts"]).as_unit("ms").asi8
    account_id = frame["account_id"].astype(str).to_numpy()
    lo, hi = int(ts_ms.min()), int(ts_ms.max())
    cuts = [lo + int((hi - lo) * (initial + (1 - initial) * k / folds)) for k in range(folds + 1)]
    cuts[-1] = hi + 1
    labels = make_labels(ts_ms, account_id, faults, tuple(config.horizons), hi)
    parts = []
    for k in range(folds):
        start, stop = cuts[k], cuts[k + 1]
        past = ts_ms < start
        cfg = RiskTrainConfig(
            **{**asdict(config), "test_fraction": 0.0, "feature_config": config.feature_config}
        )
        f_past, e_past = _before(faults, start), _before(enforcement, start)
        try:
            fit = fit_risk(
                frame[past],
                faults=f_past,
                enforcement=e_past,
                kinds=kinds,
                groups=groups,
                config=cfg,
                masters=masters,
                data_end=pd.Timestamp(start - 1, unit="ms", tz="UTC"),
            )
        except ValueError:
            continue  # too little history for this fold; it stays unscored
        # History before the fold feeds the features; only the fold's rows are scored.
        upto = np.flatnonzero(ts_ms < stop)
        rows = np.flatnonzero(ts_ms[upto] >= start)
        # Events before the fold's end feed the event history (each row sees those at or
        # before its own time only).
        f_upto, e_upto = _before(faults, stop), _before(enforcement, stop)
        scores = fit.model.predict(
            frame.iloc[upto].reset_index(drop=True), rows=rows, events=_events(f_upto, e_upto)
        )
        lab = pd.DataFrame({h: labels[h][upto[rows]] for h in fit.model.horizons})
        scores["label"] = np.concatenate([lab[h].to_numpy() for h in fit.model.horizons])
        scores["fold"] = k
        parts.append(scores)
    if not parts:
        raise ValueError("no fold could be trained: store more history or lower --initial")
    scores = pd.concat(parts, ignore_index=True)
    summary: dict[str, Any] = {
        "folds": folds,
        "scored_rows": int(len(scores) // max(scores["horizon"].nunique(), 1)),
    }
    f_ms = pd.DatetimeIndex(faults["ts"]).as_unit("ms").asi8 if len(faults) else np.zeros(0)
    scored_faults = faults[f_ms >= cuts[0]] if len(faults) else faults
    per_h = {}
    for h, g in scores.groupby("horizon", sort=False):
        thr = float(g.loc[g["at_risk"], "risk"].min()) if g["at_risk"].any() else 1.0
        m = horizon_metrics(
            g["label"], g["risk"], threshold=thr, target_precision=config.target_precision
        )
        m["precision"], m["recall"], m["f1"] = _prec_rec(
            g["label"].to_numpy(), g["at_risk"].to_numpy()
        )
        m.update(
            lead_time_summary(
                lead_times(g.loc[g["at_risk"], ["ts", "account_id"]], scored_faults, h)
            )
        )
        per_h[h] = m
    summary["metrics"] = per_h
    return scores, summary


def _prec_rec(y: np.ndarray, flag: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of the stored flags on labelled rows (one implementation:
    :func:`fleetml.evaluation.pointwise.precision_recall_f1`)."""
    ok = ~np.isnan(y)
    y, flag = y[ok] == 1, flag[ok]
    tp = int((y & flag).sum())
    return precision_recall_f1(tp, int(flag.sum()), tp, int(y.sum()))


def _before(events: pd.DataFrame | None, t_ms: int) -> pd.DataFrame | None:
    """The events stamped before ``t_ms`` (epoch ms); None and empty frames pass through."""
    if events is None or not len(events):
        return events
    return events[pd.DatetimeIndex(events["ts"]).as_unit("ms").asi8 < t_ms]
