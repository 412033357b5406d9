"""Failure-risk family: labels, time splits, train / calibrate / threshold, evaluate, register,
score and walk-forward backtest.

Each step is a function from inputs to outputs; the CLI (:mod:`fleetml.training.risk_cli`) only
parses arguments and calls them.

* **Labels.** A row of account ``a`` at time ``t`` is positive for horizon ``h`` when ``a`` has a
  technical fault (:data:`fleetml.vocab.FAULT_KINDS`) in ``(t, t + h]``. A negative row whose
  window reaches past the end of the data is *censored* (unknown) and never used. Enforcement
  events (``restricted``, ``banned``) are never fault labels; they train a separate enforcement
  risk used for draining and recommendations only.
* **Time splits with a purge gap.** The time range is cut at ``t_val`` and ``t_test``; a training
  row needs ``t + h < t_val`` and a validation row ``t + h < t_test``, so no label window crosses
  a split (the purge gap is one horizon).
* **Imbalance.** Every positive training row is kept and negatives are subsampled to at most
  ``max_negative_ratio`` per positive (and ``max_train_rows`` in all); calibration on the (not
  subsampled) validation period restores true probabilities.
* **Threshold.** Chosen on validation only (:func:`choose_threshold`) and stored with the model:
  the ``target_precision`` threshold when it exists and keeps validation at-risk onsets within
  ``alert_budget`` per account-day; otherwise the lowest threshold above which every threshold
  stays within that budget (or alerts off, when even that flags rows no better than chance).
  Its rule and reason go to the model's ``threshold_reason`` and the training summary.
* **Horizons from the data.** A horizon is trained only when its training rows hold at least
  ``min_positives`` positives and its validation rows some positives (else no calibration and no
  threshold can be learned); otherwise it is dropped with a warning. Every split's positive and
  negative row counts are reported per horizon.
* **Promotion.** The gate (:func:`promotion_decision`) compares mean test PR-AUC with the
  champion's; the sanity check (:func:`fleetml.training.sanity.risk_sanity`) needs positive rows
  for every trained horizon and at most ``max_alerts_per_account_day`` at-risk onsets per
  account-day on the held-out period. :func:`fleetml.training.registry.apply_promotion_rule`
  combines them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fleetml.evaluation.risk import (
    flatten,
    horizon_metrics,
    lead_time_summary,
    lead_times,
    pr_curve,
    precision_recall_at,
    reliability_table,
    threshold_for_precision,
)
from fleetml.models.risk import HorizonModel, ProbabilityCalibrator, RiskClassifier, RiskModel
from fleetml.services.data import FleetData as RiskData  # noqa: F401
from fleetml.services.data import load_fleet_data as load_risk_data
from fleetml.serving.risk import MODEL_NAME, score_frame  # noqa: F401
from fleetml.training.sanity import (
    MAX_ALERTS_PER_ACCOUNT_DAY,
    account_days,
    alerts_per_account_day,
    budget_threshold,
    onsets_by_threshold,
    risk_sanity,
)
from fleetml.training.summary import json_ready
from fleetml.vocab import ENFORCEMENT_LABELS  # noqa: F401

EXPERIMENT = "fleetml-risk"
#: Stages of :func:`train_risk`, in order (what its ``progress`` callback is called with).
STAGES = ("load data", "fit", "compare with champion", "log to MLflow", "promote")


@dataclass
class RiskTrainConfig:
    """Knobs of risk training (logged as MLflow parameters)."""

    horizons: tuple[str, ...] = ("1h", "6h", "24h")
    target_precision: float = 0.8
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    max_train_rows: int = 100_000
    max_negative_ratio: float = 20.0
    max_eval_rows: int = 200_000
    calibration: str = "auto"
    learning_rate: float = 0.1
    max_iter: int = 150
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 40
    l2_regularization: float = 1.0
    max_features: float = 0.5
    random_state: int = 0
    n_threads: int | None = 1  # 2 shared cores: 1 OpenMP thread measured 3.6x faster than 2
    enforcement: bool = True
    min_positives: int = 3
    require_val_positives: bool = True
    max_alerts_per_account_day: float = MAX_ALERTS_PER_ACCOUNT_DAY
    #: At-risk onsets per account-day a threshold may raise on validation (None: unbounded).
    alert_budget: float | None = 0.5
    importance_rows: int = 2000
    gate_tolerance: float = 0.0
    feature_config: Any = None  # fleetml.features.FeatureConfig; None uses its defaults
    extra: dict = field(default_factory=dict)

    def classifier(self) -> RiskClassifier:
        return RiskClassifier(
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            max_features=self.max_features,
            n_threads=self.n_threads,
            random_state=self.random_state,
        )

    def params(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("feature_config", "extra")}
        out["horizons"] = ",".join(self.horizons)
        fc = self.feature_config
        out["feature_config"] = repr(fc) if fc is not None else "default"
        return out


def parse_horizons(text: str | None) -> tuple[str, ...]:
    """``"1h,6h,24h"`` -> ``("1h", "6h", "24h")``; each must be a positive duration."""
    if not text:
        return RiskTrainConfig.horizons
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            td = pd.Timedelta(part)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"horizon {part!r} is not a duration; use e.g. 1h,6h,24h") from exc
        if td <= pd.Timedelta(0):
            raise ValueError(f"horizon {part!r} must be positive")
        out.append(part)
    if not out:
        raise ValueError("no horizon given; use e.g. --horizon 1h,6h,24h")
    return tuple(dict.fromkeys(out))


def _ms(duration: str) -> int:
    return int(pd.Timedelta(duration) / pd.Timedelta(milliseconds=1))


# --------------------------------------------------------------------------- data


# --------------------------------------------------------------------------- labels and splits


def next_event_delay_ms(
    ts_ms: np.ndarray, account_id: np.ndarray, events: pd.DataFrame
) -> np.ndarray:
    """Milliseconds from each row to the next event of its account strictly after it (inf: none)."""
    n = len(ts_ms)
    out = np.full(n, np.inf)
    if events is None or not len(events) or not n:
        return out
    e_ts = pd.DatetimeIndex(events["ts"]).as_unit("ms").asi8
    e_acc = events["account_id"].astype(str).to_numpy()
    accounts = np.union1d(np.unique(account_id.astype(str)), e_acc)
    base = min(int(ts_ms.min()), int(e_ts.min()))
    stride = np.int64(1) << 43  # ~278 years of ms: accounts laid end to end never overlap
    e_key = np.sort(np.searchsorted(accounts, e_acc).astype(np.int64) * stride + (e_ts - base))
    r_code = np.searchsorted(accounts, account_id.astype(str)).astype(np.int64)
    r_key = r_code * stride + (ts_ms - base)
    nxt = np.searchsorted(e_key, r_key, side="right")
    safe = np.clip(nxt, 0, len(e_key) - 1)
    same = (nxt < len(e_key)) & (e_key[safe] // stride == r_code)
    out[same] = (e_key[safe] - r_key)[same]
    return out


def make_labels(
    ts_ms: np.ndarray,
    account_id: np.ndarray,
    events: pd.DataFrame,
    horizons: tuple[str, ...],
    data_end_ms: int,
) -> dict[str, np.ndarray]:
    """Per horizon: 1.0 when an event follows in ``(t, t + h]``, 0.0 when none does, NaN when
    the window reaches past the end of the data and no event was seen (censored)."""
    delay = next_event_delay_ms(ts_ms, account_id, events)
    out = {}
    for h in horizons:
        h_ms = _ms(h)
        y = (delay <= h_ms).astype(np.float64)
        y[(y == 0) & (ts_ms + h_ms > data_end_ms)] = np.nan
        out[h] = y
    return out


def split_times(ts_ms: np.ndarray, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Start of the validation and of the test period (epoch ms) along the time range."""
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction {val_fraction} and test_fraction {test_fraction} must be fractions "
            "leaving room for training"
        )
    lo, hi = int(ts_ms.min()), int(ts_ms.max())
    span = hi - lo
    return (
        lo + int(span * (1 - val_fraction - test_fraction)),
        lo + int(span * (1 - test_fraction)),
    )


def split_masks(ts_ms, horizon: str, t_val: int, t_test: int) -> dict[str, np.ndarray]:
    """Train / validation / test rows for one horizon, purged by one horizon at each cut."""
    h = _ms(horizon)
    return {
        "train": ts_ms + h < t_val,
        "val": (ts_ms >= t_val) & (ts_ms + h < t_test),
        "test": ts_ms >= t_test,
    }


def _subsample(mask: np.ndarray, keep_always: np.ndarray, limit: int, rng) -> np.ndarray:
    """Rows of ``mask``: all of ``keep_always``, plus a uniform sample of the rest up to
    ``limit`` rows in all."""
    must = mask & keep_always
    rest = mask & ~keep_always
    if must.sum() > limit // 2:  # even the rare rows are too many: thin them too
        must = must & (rng.random(len(mask)) < (limit // 2) / must.sum())
    room = max(limit - int(must.sum()), 0)
    n_rest = int(rest.sum())
    if n_rest > room:
        rest = rest & (rng.random(len(mask)) < room / max(n_rest, 1))
    return must | rest


# --------------------------------------------------------------------------- fitting


@dataclass
class ThresholdChoice:
    """A horizon's decision threshold, the rule that set it and what it gave on validation."""

    threshold: float
    #: ``target precision``, ``alert budget`` or ``disabled`` (alerts off: no positive
    #: validation rows, no threshold within the budget, or alerts no better than chance).
    rule: str
    reason: str
    val_alerts_per_account_day: float = math.nan
    val_precision: float = math.nan
    val_recall: float = math.nan

    def metrics(self) -> dict[str, float]:
        """The numeric part, for the horizon's metrics (``val_`` prefixed)."""
        return {
            "val_alerts_per_account_day": self.val_alerts_per_account_day,
            "val_precision": self.val_precision,
            "val_recall": self.val_recall,
        }


def choose_threshold(
    y_val: np.ndarray,
    val_risk: np.ndarray,
    val_ids: pd.DataFrame | None,
    *,
    target_precision: float,
    alert_budget: float | None,
) -> ThresholdChoice:
    """The decision threshold of one horizon, from validation rows only.

    The threshold reaching ``target_precision`` on validation, when there is one and it raises
    at most ``alert_budget`` at-risk onsets per account-day there. Otherwise the *budget
    threshold*: the lowest threshold at which, and at every threshold above which, validation
    onsets stay within the budget. Onsets are not monotone in the threshold (a lower one can
    merge episodes), and the run above guards against a dip where flickering alerts happen to
    merge, and against flagging every row (one long episode per account) on a long validation
    period. The budget threshold then moves up to the lowest one whose validation precision
    beats the validation positive rate (alerts better than rows picked at random), or alerts
    are off when none does. Onsets and account-days are counted as the sanity check counts
    them on the held-out period (:func:`fleetml.training.sanity.budget_threshold`). When
    ``val_ids`` (``ts`` and ``account_id`` of the validation rows) or ``alert_budget`` is
    ``None``: target precision only.
    """
    y = np.asarray(y_val, dtype=np.float64)
    p = np.asarray(val_risk, dtype=np.float64)
    prec_thr, prec_reason = threshold_for_precision(y, p, target_precision)
    at = precision_recall_at(y, p, prec_thr)
    reachable = math.isfinite(at["precision"]) and at["precision"] >= target_precision
    if val_ids is None or alert_budget is None or len(val_ids) != len(p):
        return _threshold_choice(
            prec_thr, "target precision", prec_reason + "; alert volume not bounded", y, p, None
        )
    scored = pd.DataFrame(
        {"ts": val_ids["ts"].to_numpy(), "account_id": val_ids["account_id"].to_numpy()}
    ).assign(risk=p)
    days = account_days(scored)
    if days <= 0:
        return _threshold_choice(
            prec_thr, "target precision", prec_reason + "; alert volume not measurable", y, p, None
        )
    within = f"within {alert_budget:g} at-risk onsets per account-day"
    prec_rate = float(onsets_by_threshold(scored, np.array([prec_thr]))[0]) / days
    if reachable and prec_rate <= alert_budget:
        return _threshold_choice(prec_thr, "target precision", prec_reason, y, p, scored)
    budget_thr, _ = budget_threshold(scored, budget=alert_budget)
    if reachable:
        reason = (
            f"precision {target_precision} reached on validation at {prec_thr:.4g} but with "
            f"{prec_rate:.2f} at-risk onsets per account-day; raised to the lowest threshold "
            f"keeping validation {within}"
        )
    else:
        reason = (
            f"target precision {target_precision} unreachable on validation; lowest threshold "
            f"keeping validation {within}"
        )
    if budget_thr > p.max():
        reason += ", which is above every validation risk: alerts off until retrained"
        return _threshold_choice(budget_thr, "disabled", reason, y, p, scored)
    # A threshold whose alerts are no more precise than rows picked at random (flagging every
    # row, one long episode per account, is the extreme) carries no warning: move up to the
    # lowest one that beats the positive rate, still within the budget, or turn alerts off.
    base_rate = float(np.nanmean(y))
    values = np.unique(p[np.isfinite(p) & (p >= budget_thr)])
    better = np.flatnonzero(_precision_by_threshold(y, p, values) > base_rate)
    if not len(better):
        off = float(np.nextafter(p.max(), np.inf))
        reason += (
            f" ({budget_thr:.4g}) and every threshold above it flag rows no more precisely than "
            f"chance (validation positive rate {base_rate:.3f}): alerts off until retrained"
        )
        return _threshold_choice(off, "disabled", reason, y, p, scored)
    if values[better[0]] > budget_thr:
        reason += (
            f", moved up from {budget_thr:.4g} to the lowest one flagging rows more precisely "
            f"than chance (validation positive rate {base_rate:.3f})"
        )
    return _threshold_choice(float(values[better[0]]), "alert budget", reason, y, p, scored)


def _precision_by_threshold(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Precision of ``p >= t`` for every ``t`` (NaN when nothing is flagged); NaN rows ignored."""
    ok = ~np.isnan(y) & ~np.isnan(p)
    order = np.argsort(p[ok], kind="stable")
    ps, ys = p[ok][order], y[ok][order]
    tp_above = np.r_[np.cumsum(ys[::-1])[::-1], 0.0]  # positives among rows i.. of ps
    first = np.searchsorted(ps, thresholds, side="left")
    flagged = len(ps) - first
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(flagged > 0, tp_above[first] / np.maximum(flagged, 1), np.nan)


def _threshold_choice(threshold, rule, reason, y, p, scored) -> ThresholdChoice:
    at = precision_recall_at(y, p, threshold)
    rate = math.nan
    if scored is not None:
        days = account_days(scored)
        if days > 0:
            rate = float(onsets_by_threshold(scored, np.array([threshold]))[0]) / days
    measured = f"{rate:.2f} at-risk onsets per account-day" if math.isfinite(rate) else ""
    pr = f"precision {at['precision']:.3f}, recall {at['recall']:.3f}"
    reason = f"{reason} (validation: {', '.join(x for x in (measured, pr) if x)})"
    return ThresholdChoice(float(threshold), rule, reason, rate, at["precision"], at["recall"])


def fit_horizon(
    X_train,
    y_train,
    X_val,
    y_val,
    config: RiskTrainConfig,
    horizon: str,
    *,
    val_ids: pd.DataFrame | None = None,
) -> tuple[HorizonModel | None, str, ThresholdChoice | None]:
    """Fit the classifier on training rows, the calibrator and threshold on validation rows
    (``val_ids``: their ``ts`` and ``account_id``, for the alert budget; see
    :func:`choose_threshold`). Returns the model (``None`` without enough positives), a note
    and the threshold choice."""
    if y_train.sum() < config.min_positives or (y_train == 0).sum() == 0:
        note = f"{int(y_train.sum())} positive training rows (< {config.min_positives})"
        return None, note, None
    clf = config.classifier().fit(X_train, y_train.astype(int))
    raw_val = clf.risk(X_val) if len(X_val) else np.zeros(0)
    if len(y_val) and y_val.sum() > 0:
        calibrator = ProbabilityCalibrator(method=config.calibration).fit(raw_val, y_val)
        choice = choose_threshold(
            y_val,
            calibrator.predict(raw_val),
            val_ids,
            target_precision=config.target_precision,
            alert_budget=config.alert_budget,
        )
    else:
        # No validation positives: calibrate on training rows (class weights undone by Platt).
        calibrator = ProbabilityCalibrator(method="sigmoid").fit(clf.risk(X_train), y_train)
        reason = "no positive validation rows: alerts disabled until retrained"
        choice = ThresholdChoice(1.0, "disabled", reason)
    hm = HorizonModel(horizon, clf, calibrator, choice.threshold, choice.reason)
    return hm, choice.reason, choice


def _importances(model: HorizonModel, X, y, columns, config: RiskTrainConfig) -> list[dict]:
    """Permutation importance per metric: the drop in average precision on a validation sample
    when all of a metric's columns are shuffled together (one prediction per metric, not per
    column: 13 metrics cost 13 predictions instead of 160)."""
    from fleetml.evaluation.risk import pr_auc
    from fleetml.features import metric_of_feature

    if len(y) == 0 or y.sum() == 0 or y.sum() == len(y):
        return []
    rng = np.random.default_rng(config.random_state)
    idx = np.arange(len(y))
    if len(idx) > config.importance_rows:
        pos = idx[y == 1][: config.importance_rows // 2]
        neg = rng.choice(idx[y == 0], size=max(config.importance_rows - len(pos), 1), replace=False)
        idx = np.sort(np.r_[pos, neg])
    Xs, ys = X[idx], y[idx]
    base = pr_auc(ys, model.classifier.risk(Xs))
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(columns):
        groups.setdefault(metric_of_feature(c), []).append(i)
    out = []
    for metric, cols in groups.items():
        shuffled = Xs.copy()
        shuffled[:, cols] = Xs[rng.permutation(len(idx))][:, cols]
        drop = base - pr_auc(ys, model.classifier.risk(shuffled))
        out.append({"metric": metric, "importance": float(drop), "columns": len(cols)})
    return sorted(out, key=lambda d: -d["importance"])


@dataclass
class FitResult:
    """A trained bundle plus everything measured while training it."""

    model: RiskModel
    metrics: dict[str, dict[str, float]]
    enforcement_metrics: dict[str, dict[str, float]]
    reliability: dict[str, pd.DataFrame]
    importances: dict[str, list[dict]]
    notes: dict[str, str]
    test_scores: pd.DataFrame
    data_range: dict[str, Any]
    #: Per horizon: positive and negative rows of each split (``train`` counts the rows used).
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: Per trained horizon: how its threshold was chosen on validation.
    threshold_choices: dict[str, ThresholdChoice] = field(default_factory=dict)
    #: Per horizon: the test split's precision-recall curve (the dashboard charts it).
    pr_curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    @property
    def threshold_rules(self) -> dict[str, dict[str, str]]:
        """Per trained horizon: the threshold's rule and reason (JSON-ready)."""
        return {h: {"rule": c.rule, "reason": c.reason} for h, c in self.threshold_choices.items()}

    @property
    def positives(self) -> dict[str, dict[str, int]]:
        """Per horizon: positive rows in ``train``, ``val`` and ``test``."""
        return {
            h: {k: c[f"{k}_positives"] for k in ("train", "val", "test")}
            for h, c in self.counts.items()
        }


def fit_risk(
    frame: pd.DataFrame,
    *,
    faults: pd.DataFrame,
    enforcement: pd.DataFrame | None = None,
    kinds: dict[str, str] | None = None,
    groups: dict[str, str] | None = None,
    config: RiskTrainConfig | None = None,
    data_end=None,
) -> FitResult:
    """Train and evaluate a :class:`RiskModel` on a wide metrics frame and its events.

    Library entry point behind ``fleetml train risk`` and the benchmarks (no MLflow here).
    """
    from fleetml.features import FeatureConfig, build_feature_matrix

    config = config or RiskTrainConfig()
    if len(frame) == 0:
        raise ValueError("no stored samples in the selected range/accounts; import metrics first")
    fconfig = config.feature_config or FeatureConfig()
    frame = _sorted(frame)
    ts_ms = pd.DatetimeIndex(frame["ts"]).as_unit("ms").asi8
    account_id = frame["account_id"].astype(str).to_numpy()
    end_ms = int(ts_ms.max()) if data_end is None else int(pd.Timestamp(data_end).value // 10**6)
    horizons = tuple(config.horizons)
    labels = make_labels(ts_ms, account_id, faults, horizons, end_ms)
    enf_labels = {}
    if config.enforcement and enforcement is not None and len(enforcement):
        # Enforcement is rare and only drives draining: one model, at the longest horizon.
        longest = (max(horizons, key=_ms),)
        enf_labels = make_labels(ts_ms, account_id, enforcement, longest, end_ms)
    t_val, t_test = split_times(ts_ms, config.val_fraction, config.test_fraction)
    masks = {h: split_masks(ts_ms, h, t_val, t_test) for h in horizons}

    # Rows whose features are built: sampled train rows, validation and test rows.
    rng = np.random.default_rng(config.random_state)
    known = np.zeros(len(frame), dtype=bool)
    for y in labels.values():
        known |= ~np.isnan(y)
    train_any = np.zeros(len(frame), dtype=bool)
    val_any = np.zeros(len(frame), dtype=bool)
    for m in masks.values():
        train_any |= m["train"]
        val_any |= m["val"]
    test_any = ts_ms >= t_test
    # The shortest horizon's positives are the rarest: keep them all; longer-horizon positives
    # are common enough to survive the uniform sampling of the rest.
    rare_pos = labels[min(horizons, key=_ms)] == 1
    for y in enf_labels.values():  # enforcement is rarer still
        rare_pos |= y == 1
    n_pos = int((train_any & known & rare_pos).sum())
    limit = config.max_train_rows
    if config.max_negative_ratio and n_pos:
        limit = min(limit, int(n_pos * (1 + config.max_negative_ratio)))
    use_train = _subsample(train_any & known, rare_pos, limit, rng)
    use_val = _subsample(val_any & known, np.zeros_like(rare_pos), config.max_eval_rows, rng)
    use_test = _subsample(test_any, np.zeros_like(rare_pos), config.max_eval_rows, rng)
    rows = np.flatnonzero(use_train | use_val | use_test)
    if not use_train.any():
        raise ValueError(
            "no training rows before the validation cut; store a longer history than the longest "
            f"horizon ({max(horizons, key=_ms)}) or use shorter horizons"
        )
    feats, columns, X = build_feature_matrix(
        frame, kinds=kinds, groups=groups or None, config=fconfig, rows=rows
    )
    sel = {
        name: mask[rows]
        for name, mask in (("train", use_train), ("val", use_val), ("test", use_test))
    }

    model = RiskModel(
        horizons={},
        feature_columns=columns,
        feature_config=fconfig,
        metric_kinds=dict(kinds or {}),
        account_groups=dict(groups or {}),
        target_precision=config.target_precision,
    )
    notes, importances, counts, warnings = {}, {}, {}, []
    choices: dict[str, ThresholdChoice] = {}
    ids = pd.DataFrame({"ts": feats["ts"].to_numpy(), "account_id": feats["account_id"].to_numpy()})
    val_hours = (t_test - t_val) / 3_600_000
    for h in horizons:
        y = labels[h][rows]
        tr = sel["train"] & masks[h]["train"][rows] & ~np.isnan(y)
        va = sel["val"] & masks[h]["val"][rows] & ~np.isnan(y)
        te = sel["test"] & ~np.isnan(y)
        counts[h] = _split_counts(y, {"train": tr, "val": va, "test": te})
        skip = _skip_reason(h, counts[h], config, val_hours)
        if skip:
            notes[h] = f"dropped: {skip}"
            warnings.append(f"risk horizon {h} dropped: {skip}")
            continue
        if counts[h]["test_positives"] == 0:
            warnings.append(
                f"risk horizon {h}: no positive rows in the held-out period, so its test "
                "metrics are undefined"
            )
        hm, note, choice = fit_horizon(
            X[tr], y[tr], X[va], y[va], config, h, val_ids=ids[va].reset_index(drop=True)
        )
        notes[h] = note
        if hm is not None:
            model.horizons[h] = hm
            choices[h] = choice
            importances[h] = _importances(hm, X[va], y[va], columns, config)
    if enf_labels and model.horizons:
        # Enforcement rides on the longest horizon actually trained (a dropped one has no rows).
        longest = max(model.horizons, key=_ms)
        if longest not in enf_labels:
            enf_labels = make_labels(ts_ms, account_id, enforcement, (longest,), end_ms)
    for h in enf_labels if model.horizons else ():
        ye = enf_labels[h][rows]
        tr_e = sel["train"] & masks[h]["train"][rows] & ~np.isnan(ye)
        va_e = sel["val"] & masks[h]["val"][rows] & ~np.isnan(ye)
        em, enote, _ = fit_horizon(
            X[tr_e],
            ye[tr_e],
            X[va_e],
            ye[va_e],
            config,
            h,
            val_ids=ids[va_e].reset_index(drop=True),
        )
        notes[f"enforcement_{h}"] = enote
        if em is not None:
            model.enforcement[h] = em
    if not model.horizons:
        raise ValueError(
            "no horizon could be trained: too few technical-fault events in the training or "
            f"validation period ({notes}). Import fault events (`fleetml import events`), widen "
            "the range or use shorter horizons."
        )

    test_rows = sel["test"]
    wide = model.risk_matrix(feats[test_rows].reset_index(drop=True), X[test_rows])
    metrics, enf_metrics, reliability, curves = {}, {}, {}, {}
    t_faults = (
        faults[pd.DatetimeIndex(faults["ts"]).as_unit("ms").asi8 >= t_test]
        if len(faults)
        else faults
    )
    for h, hm in model.horizons.items():
        y = labels[h][rows][test_rows]
        metrics[h] = horizon_metrics(
            y, wide[h].to_numpy(), threshold=hm.threshold, target_precision=config.target_precision
        )
        alerts = wide.loc[wide[h].to_numpy() >= hm.threshold, ["ts", "account_id"]]
        metrics[h].update(lead_time_summary(lead_times(alerts, t_faults, h)))
        metrics[h]["threshold"] = hm.threshold
        metrics[h].update(choices[h].metrics())
        # Test rows are all kept up to max_eval_rows; beyond, sampling gaps inflate the onsets.
        at_risk = wide[["ts", "account_id"]].assign(at_risk=wide[h].to_numpy() >= hm.threshold)
        metrics[h]["alerts_per_account_day"] = alerts_per_account_day(at_risk, flag="at_risk")
        metrics[h]["alert_rate"] = float(at_risk["at_risk"].mean()) if len(at_risk) else math.nan
        reliability[h] = reliability_table(y, wide[h].to_numpy())
        curves[h] = pr_curve(y, wide[h].to_numpy())
    for h, em in model.enforcement.items():
        y = enf_labels[h][rows][test_rows]
        enf_metrics[h] = horizon_metrics(
            y,
            wide[f"enforcement_{h}"].to_numpy(),
            threshold=em.threshold,
            target_precision=config.target_precision,
        )
    data_range = {
        "data_start": frame["ts"].min(),
        "data_end": frame["ts"].max(),
        "val_start": pd.Timestamp(t_val, unit="ms", tz="UTC"),
        "test_start": pd.Timestamp(t_test, unit="ms", tz="UTC"),
        "n_accounts": int(frame["account_id"].nunique()),
        "n_rows": len(frame),
        "n_train_rows": int(sel["train"].sum()),
        "n_val_rows": int(sel["val"].sum()),
        "n_test_rows": int(test_rows.sum()),
        "n_faults": len(faults),
        "n_features": len(columns),
    }
    model.info = {**{k: str(v) for k, v in data_range.items()}, "notes": notes}
    scores = model.to_long(wide)
    return FitResult(
        model,
        metrics,
        enf_metrics,
        reliability,
        importances,
        notes,
        scores,
        data_range,
        counts=counts,
        warnings=warnings,
        threshold_choices=choices,
        pr_curves=curves,
    )


def _split_counts(y: np.ndarray, splits: dict[str, np.ndarray]) -> dict[str, int]:
    out = {}
    for name, mask in splits.items():
        out[f"{name}_positives"] = int((y[mask] == 1).sum())
        out[f"{name}_negatives"] = int((y[mask] == 0).sum())
    return out


def _skip_reason(h: str, counts: dict[str, int], config: RiskTrainConfig, val_hours: float) -> str:
    """Why horizon ``h`` cannot be trained meaningfully on these rows ('' when it can)."""
    if counts["train_positives"] < config.min_positives:
        return (
            f"{counts['train_positives']} positive training rows (fewer than "
            f"{config.min_positives}): too few faults within {h} before the validation period"
        )
    if not config.require_val_positives:
        return ""
    if counts["val_positives"] + counts["val_negatives"] == 0:
        return (
            f"no validation rows: the validation period ({val_hours:.1f} h) is not longer than "
            "the horizon; store more history or use shorter horizons"
        )
    if counts["val_positives"] == 0:
        return (
            f"no positive validation rows (no fault within {h} of any of them), so no "
            "calibration or threshold can be learned"
        )
    return ""


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame sorted by (account_id, ts) with a fresh index; no copy when it already is."""
    acc = frame["account_id"].astype(str).to_numpy()
    ts = pd.DatetimeIndex(frame["ts"]).asi8
    ok = len(frame) < 2 or bool(
        ((acc[1:] > acc[:-1]) | ((acc[1:] == acc[:-1]) & (ts[1:] >= ts[:-1]))).all()
    )
    if ok and isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0:
        return frame
    return frame.sort_values(["account_id", "ts"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- promotion


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


def _champion_metrics(champ: RiskModel, frame, faults, fit: FitResult, config) -> dict:
    """The champion's metrics on the challenger's held-out period (all test rows)."""
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
    wide = champ.risk_wide(champ.build_features(frame, rows=rows))
    out = {}
    for h, hm in champ.horizons.items():
        y = make_labels(ts_ms[rows], account_id[rows], faults, (h,), end_ms)[h]
        out[h] = horizon_metrics(
            y, wide[h].to_numpy(), threshold=hm.threshold, target_precision=config.target_precision
        )
    return out


# --------------------------------------------------------------------------- train command


def train_risk(
    engine,
    settings,
    *,
    start=None,
    end=None,
    accounts=None,
    promote: bool = False,
    config: RiskTrainConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train, evaluate, log, register and (maybe) promote a risk model; return a summary.

    Besides the metrics the summary holds ``positives`` (per horizon: positive rows in train,
    validation and test), ``row_counts`` (positives and negatives), the gate and sanity outcomes
    and ``warnings`` (dropped horizons, horizons without held-out positives, a promotion despite
    a failed gate). ``progress`` is called with each of :data:`STAGES` as it starts.
    """
    from fleetml.training import registry

    step = progress or (lambda stage: None)
    config = config or RiskTrainConfig()
    t0 = time.perf_counter()
    step("load data")
    data = load_risk_data(engine, start=start, end=end, accounts=accounts)
    step("fit")
    fit = fit_risk(
        data.frame,
        faults=data.faults,
        enforcement=data.enforcement,
        kinds=data.kinds,
        groups=data.groups,
        config=config,
    )
    fit_s = time.perf_counter() - t0

    step("compare with champion")
    registry.configure_mlflow(settings)
    champion_version = registry.get_champion_version(MODEL_NAME)
    champion = None
    if champion_version is not None:
        try:
            champ = registry.load_bundle(MODEL_NAME, version=champion_version)
            champion = _champion_metrics(champ, data.frame, data.faults, fit, config)
        except Exception as exc:  # a broken champion must not block training; report it
            champion = {"error": f"{type(exc).__name__}: {exc}"}
    comparable = champion if champion and "error" not in champion else None
    gate_ok, gate_reason = promotion_decision(
        fit.metrics, comparable, tolerance=config.gate_tolerance
    )
    sane, sanity_reason = risk_sanity(
        fit.metrics,
        fit.positives,
        min_positives=config.min_positives,
        max_alerts_per_account_day=config.max_alerts_per_account_day,
    )

    step("log to MLflow")
    with registry.start_run(EXPERIMENT, settings=settings, run_name="train-risk") as run:
        registry.log_params(config.params())
        registry.set_tags({"family": "risk", **fit.data_range})
        registry.log_metrics(flatten(fit.metrics), prefix="test_")
        registry.log_metrics(flatten(fit.enforcement_metrics), prefix="enforcement_test_")
        registry.log_metrics(flatten(fit.counts), prefix="rows_")
        if comparable:
            registry.log_metrics(flatten(comparable), prefix="champion_")
        registry.log_metrics({"fit_seconds": fit_s})
        registry.log_dict({"features": fit.model.feature_columns}, "features.json")
        registry.log_dict(fit.importances, "feature_importance.json")
        registry.log_dict(
            {h: t.to_dict(orient="records") for h, t in fit.reliability.items()}, "reliability.json"
        )
        registry.log_dict(fit.pr_curves, "pr_curves.json")
        registry.log_dict(
            {
                "challenger": fit.metrics,
                "enforcement": fit.enforcement_metrics,
                "champion": champion,
                "thresholds": fit.model.thresholds,
                "threshold_rules": fit.threshold_rules,
                "row_counts": fit.counts,
                "notes": fit.notes,
                "warnings": fit.warnings,
                "gate": {"passed": gate_ok, "reason": gate_reason},
                "sanity": {"passed": sane, "reason": sanity_reason},
            },
            "evaluation.json",
        )
        info = registry.log_bundle(fit.model)
        version = registry.register_version(
            MODEL_NAME,
            info.model_uri,
            run_id=run.info.run_id,
            tags={
                "data_start": fit.data_range["data_start"],
                "data_end": fit.data_range["data_end"],
                "horizons": ",".join(fit.model.horizons),
                "thresholds": fit.model.thresholds,
                "gate_passed": gate_ok,
                "sanity_passed": sane,
                "test_mean_pr_auc": mean_pr_auc(fit.metrics),
            },
            description=f"gradient-boosted trees on {len(fit.model.feature_columns)} features; "
            f"gate: {gate_reason}; sanity: {sanity_reason}",
        )
        run_id = run.info.run_id

    step("promote")
    outcome = registry.decide_promotion(
        MODEL_NAME,
        version,
        champion_version=champion_version,
        force=promote,
        gate_passed=gate_ok,
        gate_reason=gate_reason,
        sanity_passed=sane,
        sanity_reason=sanity_reason,
        warnings=fit.warnings,
    )
    return json_ready(
        {
            "run_id": run_id,
            **outcome,
            "requested_horizons": list(config.horizons),
            "horizons": list(fit.model.horizons),
            "positives": fit.positives,
            "row_counts": fit.counts,
            "thresholds": fit.model.thresholds,
            "threshold_rules": fit.threshold_rules,
            "metrics": fit.metrics,
            "enforcement_metrics": fit.enforcement_metrics,
            "top_metrics": {h: [d["metric"] for d in v[:5]] for h, v in fit.importances.items()},
            "notes": fit.notes,
            **fit.data_range,
            "seconds": round(time.perf_counter() - t0, 2),
        }
    )


# --------------------------------------------------------------------------- scoring


# --------------------------------------------------------------------------- backtest


def backtest_risk(
    frame: pd.DataFrame,
    *,
    faults: pd.DataFrame,
    enforcement: pd.DataFrame | None = None,
    kinds=None,
    groups=None,
    config: RiskTrainConfig | None = None,
    folds: int = 3,
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
        f_past = (
            faults[pd.DatetimeIndex(faults["ts"]).as_unit("ms").asi8 < start]
            if len(faults)
            else faults
        )
        e_past = None
        if enforcement is not None and len(enforcement):
            e_past = enforcement[pd.DatetimeIndex(enforcement["ts"]).as_unit("ms").asi8 < start]
        try:
            fit = fit_risk(
                frame[past],
                faults=f_past,
                enforcement=e_past,
                kinds=kinds,
                groups=groups,
                config=cfg,
                data_end=pd.Timestamp(start - 1, unit="ms", tz="UTC"),
            )
        except ValueError:
            continue  # too little history for this fold; it stays unscored
        # History before the fold feeds the features; only the fold's rows are scored.
        upto = np.flatnonzero(ts_ms < stop)
        rows = np.flatnonzero(ts_ms[upto] >= start)
        scores = fit.model.predict(frame.iloc[upto].reset_index(drop=True), rows=rows)
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
        p, r = _prec_rec(g["label"].to_numpy(), g["at_risk"].to_numpy())
        m["precision"], m["recall"] = p, r
        m["f1"] = 2 * p * r / (p + r) if p and r and math.isfinite(p + r) else 0.0
        m.update(
            lead_time_summary(
                lead_times(g.loc[g["at_risk"], ["ts", "account_id"]], scored_faults, h)
            )
        )
        per_h[h] = m
    summary["metrics"] = per_h
    return scores, summary


def _prec_rec(y: np.ndarray, flag: np.ndarray) -> tuple[float, float]:
    ok = ~np.isnan(y)
    y, flag = y[ok] == 1, flag[ok]
    tp = int((y & flag).sum())
    precision = tp / int(flag.sum()) if flag.sum() else float("nan")
    recall = tp / int(y.sum()) if y.sum() else float("nan")
    return precision, recall
