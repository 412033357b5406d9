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

import time
from collections.abc import Callable
from typing import Any

from fleetml.evaluation.risk import flatten
from fleetml.services.data import FleetData as RiskData  # noqa: F401
from fleetml.services.data import load_fleet_data as load_risk_data
from fleetml.serving.risk import MODEL_NAME, score_frame  # noqa: F401
from fleetml.training.risk_config import RiskTrainConfig, _ms, parse_horizons  # noqa: F401
from fleetml.training.risk_eval import (  # noqa: F401
    _champion_metrics,
    _prec_rec,
    backtest_risk,
    mean_pr_auc,
    promotion_decision,
)
from fleetml.training.risk_fit import (  # noqa: F401
    FitResult,
    _importances,
    _skip_reason,
    _sorted,
    _split_counts,
    fit_horizon,
    fit_risk,
    monotone_floor,
)
from fleetml.training.risk_labels import (  # noqa: F401
    make_labels,
    next_event_delay_ms,
    split_masks,
    split_times,
)
from fleetml.training.risk_sampling import _subsample, training_rows  # noqa: F401
from fleetml.training.risk_threshold import (  # noqa: F401
    ThresholdChoice,
    _precision_by_threshold,
    _threshold_choice,
    choose_threshold,
)
from fleetml.training.sanity import risk_sanity
from fleetml.training.summary import json_ready
from fleetml.vocab import ENFORCEMENT_LABELS  # noqa: F401

EXPERIMENT = "fleetml-risk"
#: Stages of :func:`train_risk`, in order (what its ``progress`` callback is called with).
STAGES = ("load data", "fit", "compare with champion", "log to MLflow", "promote")


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
        masters=data.masters,
    )
    fit_s = time.perf_counter() - t0

    step("compare with champion")
    registry.configure_mlflow(settings)
    champion_version = registry.get_champion_version(MODEL_NAME)
    champion = None
    if champion_version is not None:
        try:
            champ = registry.load_bundle(MODEL_NAME, version=champion_version)
            champion = _champion_metrics(
                champ, data.frame, data.faults, fit, config, enforcement=data.enforcement
            )
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
