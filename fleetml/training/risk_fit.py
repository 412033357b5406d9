"""Fit one horizon (classifier, calibrator, threshold) and a whole risk bundle, with its
held-out evaluation (:func:`fit_risk`, no MLflow)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fleetml.evaluation.risk import (
    horizon_metrics,
    lead_time_summary,
    lead_times,
    pr_curve,
    reliability_table,
)
from fleetml.models.risk import HorizonModel, ProbabilityCalibrator, RiskModel
from fleetml.training.risk_config import RiskTrainConfig, _ms
from fleetml.training.risk_labels import make_labels, split_masks, split_times
from fleetml.training.risk_sampling import _subsample, training_rows
from fleetml.training.risk_threshold import ThresholdChoice, choose_threshold
from fleetml.training.sanity import alerts_per_account_day


def fit_horizon(
    X_train,
    y_train,
    X_val,
    y_val,
    config: RiskTrainConfig,
    horizon: str,
    *,
    val_ids: pd.DataFrame | None = None,
    floor: HorizonModel | None = None,
) -> tuple[HorizonModel | None, str, ThresholdChoice | None]:
    """Fit the classifier on training rows, the calibrator and threshold on validation rows
    (``val_ids``: their ``ts`` and ``account_id``, for the alert budget; see
    :func:`choose_threshold`). ``floor``: the next shorter horizon's model, below which this
    horizon's risk never goes (the threshold is chosen on the floored risk, as served).
    Returns the model (``None`` without enough positives), a note and the threshold choice."""
    if y_train.sum() < config.min_positives or (y_train == 0).sum() == 0:
        note = f"{int(y_train.sum())} positive training rows (< {config.min_positives})"
        return None, note, None
    clf = config.classifier().fit(X_train, y_train.astype(int))
    raw_val = clf.risk(X_val) if len(X_val) else np.zeros(0)
    if len(y_val) and y_val.sum() > 0:
        calibrator = ProbabilityCalibrator(method=config.calibration).fit(raw_val, y_val)
        val_risk = calibrator.predict(raw_val)
        if floor is not None:
            val_risk = np.maximum(val_risk, floor.risk(X_val))
        choice = choose_threshold(
            y_val,
            val_risk,
            val_ids,
            target_precision=config.target_precision,
            alert_budget=config.alert_budget,
        )
    else:
        # No validation positives: calibrate on training rows (class weights undone by Platt).
        calibrator = ProbabilityCalibrator(method="sigmoid").fit(clf.risk(X_train), y_train)
        reason = "no positive validation rows: alerts disabled until retrained"
        choice = ThresholdChoice(1.0, "disabled", reason)
    hm = HorizonModel(horizon, clf, calibrator, choice.threshold, choice.reason, floor=floor)
    return hm, choice.reason, choice


def refit_horizon(
    hm: HorizonModel, X, y: np.ndarray, pool: np.ndarray, config: RiskTrainConfig, rng
) -> None:
    """Refit ``hm``'s classifier on the rows of ``pool`` (its training and validation rows),
    keeping the calibrator and threshold chosen on validation. All positives are kept and
    negatives subsampled within the same budget as training (``max_negative_ratio`` per
    positive, ``max_train_rows`` in all). Done after every horizon's threshold is chosen, so a
    longer horizon's floor was scored on validation by the model that had not seen it."""
    positive = pool & (y == 1)
    n_pos = int(positive.sum())
    if n_pos < config.min_positives or not (pool & (y == 0)).any():
        return
    limit = config.max_train_rows
    if config.max_negative_ratio:
        limit = min(limit, int(n_pos * (1 + config.max_negative_ratio)))
    use = _subsample(pool, y == 1, limit, rng)
    hm.classifier = config.classifier().fit(X[use], y[use].astype(int))


def monotone_floor(models: dict[str, HorizonModel], horizon: str) -> HorizonModel | None:
    """The longest already-fitted horizon shorter than ``horizon`` (its risk is a lower bound)."""
    shorter = [h for h in models if _ms(h) < _ms(horizon)]
    return models[max(shorter, key=_ms)] if shorter else None


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
    masters: dict[str, str] | None = None,
) -> FitResult:
    """Train and evaluate a :class:`RiskModel` on a wide metrics frame and its events.

    Library entry point behind ``fleetml train risk`` and the benchmarks (no MLflow here).
    Fault and enforcement events also feed the event-history features when the feature config
    asks for them (the model then wants them at scoring too); ``masters`` (servant -> master,
    from the registry) feeds the master's-state columns and is stored with the model.
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
    masks = {h: split_masks(ts_ms, h, t_val, t_test, end_ms) for h in horizons}
    for h in enf_labels:
        masks.setdefault(h, split_masks(ts_ms, h, t_val, t_test, end_ms))

    # Rows whose features are built: each horizon's sampled training rows (its own negative
    # budget), validation and test rows.
    rng = np.random.default_rng(config.random_state)
    sets = {**labels, **{f"enforcement_{h}": y for h, y in enf_labels.items()}}
    train_sets = training_rows(
        sets,
        {k: masks[k.removeprefix("enforcement_")]["train"] for k in sets},
        max_negative_ratio=config.max_negative_ratio,
        max_rows=config.max_train_rows,
        rng=rng,
    )
    known = np.zeros(len(frame), dtype=bool)
    val_any = np.zeros(len(frame), dtype=bool)
    test_any = np.zeros(len(frame), dtype=bool)
    for h, y in labels.items():
        known |= ~np.isnan(y)
        val_any |= masks[h]["val"]
        test_any |= masks[h]["test"]
    use_train = np.zeros(len(frame), dtype=bool)
    for m in train_sets.values():
        use_train |= m
    nothing = np.zeros(len(frame), dtype=bool)
    use_val = _subsample(val_any & known, nothing, config.max_eval_rows, rng)
    use_test = _subsample(test_any & known, nothing, config.max_eval_rows, rng)
    rows = np.flatnonzero(use_train | use_val | use_test)
    if not use_train.any():
        raise ValueError(
            "no training rows before the validation cut; store a longer history than the longest "
            f"horizon ({max(horizons, key=_ms)}) or use shorter horizons"
        )
    events = _events(faults, enforcement) if fconfig.fault_history else None
    feats, columns, X = build_feature_matrix(
        frame,
        kinds=kinds,
        groups=groups or None,
        config=fconfig,
        rows=rows,
        events=events,
        masters=masters or None,
    )
    sel = {name: mask[rows] for name, mask in (("val", use_val), ("test", use_test))}

    model = RiskModel(
        horizons={},
        feature_columns=columns,
        feature_config=fconfig,
        metric_kinds=dict(kinds or {}),
        account_groups=dict(groups or {}),
        account_masters=dict(masters or {}),
        target_precision=config.target_precision,
    )
    notes, importances, counts, warnings = {}, {}, {}, []
    choices: dict[str, ThresholdChoice] = {}
    ids = pd.DataFrame({"ts": feats["ts"].to_numpy(), "account_id": feats["account_id"].to_numpy()})
    val_hours = (t_test - t_val) / 3_600_000
    for h in horizons:
        y = labels[h][rows]
        tr = train_sets[h][rows]
        va = sel["val"] & masks[h]["val"][rows] & ~np.isnan(y)
        te = sel["test"] & masks[h]["test"][rows] & ~np.isnan(y)
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
            X[tr],
            y[tr],
            X[va],
            y[va],
            config,
            h,
            val_ids=ids[va].reset_index(drop=True),
            floor=monotone_floor(model.horizons, h),
        )
        notes[h] = note
        if hm is not None:
            model.horizons[h] = hm
            choices[h] = choice
            importances[h] = _importances(hm, X[va], y[va], columns, config)
    if config.refit:
        for h, hm in model.horizons.items():
            y = labels[h][rows]
            pool = (train_sets[h][rows] | (sel["val"] & masks[h]["val"][rows])) & ~np.isnan(y)
            refit_horizon(hm, X, y, pool, config, rng)
    if enf_labels and model.horizons:
        # Enforcement rides on the longest horizon actually trained (a dropped one has no rows).
        longest = max(model.horizons, key=_ms)
        if longest not in enf_labels:
            enf_labels = make_labels(ts_ms, account_id, enforcement, (longest,), end_ms)
    for h in enf_labels if model.horizons else ():
        ye = enf_labels[h][rows]
        if h not in masks:
            masks[h] = split_masks(ts_ms, h, t_val, t_test, end_ms)
        pool = train_sets.get(f"enforcement_{h}", use_train)
        tr_e = pool[rows] & masks[h]["train"][rows] & ~np.isnan(ye)
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
        "n_train_rows": int(use_train.sum()),
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


def _events(faults: pd.DataFrame | None, enforcement: pd.DataFrame | None) -> pd.DataFrame:
    """Fault and enforcement events in one frame (``ts``, ``account_id``, ``kind``). Every row of
    ``faults`` is a fault for the labels, so one without a ``kind`` counts as a crash (and an
    enforcement row without one as a restriction) for the event history too."""
    parts = [
        e[["ts", "account_id"]].assign(
            kind=e["kind"].astype(str) if "kind" in e.columns else default
        )
        for e, default in ((faults, "crash"), (enforcement, "restricted"))
        if e is not None and len(e)
    ]
    if not parts:
        return pd.DataFrame({"ts": pd.DatetimeIndex([], tz="UTC"), "account_id": [], "kind": []})
    return pd.concat(parts, ignore_index=True)
