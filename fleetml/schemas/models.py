"""Registered models and what this process serves (``GET /v1/models``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class ModelVersionOut(BaseModel):
    """One registered version: when it was made, by which run, and that run's evaluation."""

    version: int = Field(examples=[3])
    run_id: str | None = None
    created_at: datetime | None = Field(default=None, description="When it was registered.")
    trained_at: datetime | None = Field(
        default=None, description="When its training run ended (started, if still running)."
    )
    metrics: dict[str, float | None] = Field(
        default_factory=dict,
        description="Evaluation metrics logged to the training run (non-finite values as null).",
        examples=[{"smape": 12.4, "mase": 0.81}],
    )


class ModelFamilyOut(BaseModel):
    """A model family: its @champion and @challenger, and what this API process has loaded."""

    family: Literal["anomaly", "risk", "forecast"]
    name: str = Field(examples=["fleetml-forecast"])
    champion: ModelVersionOut | None
    challenger: ModelVersionOut | None
    loaded: bool = Field(description="Whether this process's serving layer has a model loaded.")
    loaded_version: int | None = Field(
        default=None, description="The version it serves; null for a fallback or nothing."
    )
    fallback: bool | None = Field(
        default=None, description="True when a heuristic answers; null when nothing is loaded."
    )
    reason: str | None = Field(
        default=None, description="Why a fallback answers, or why not loaded."
    )


class ModelsOut(BaseModel):
    models: list[ModelFamilyOut]
    registry_available: bool = Field(description="False when no model registry could be read.")
    detail: str | None = Field(default=None, description="Why the registry could not be read.")


class ModelEvaluationOut(ModelVersionOut):
    """One registered version and what its training run logged about its evaluation."""

    family: Literal["anomaly", "risk", "forecast"]
    name: str
    alias: Literal["champion", "challenger"]
    artifacts: dict[str, Any] = Field(
        description="The run's JSON artifacts by name (evaluation, reliability, pr_curves, "
        "choices); null where the run logged none."
    )


class DriftRow(BaseModel):
    column: str = Field(description="A stored metric (counters compared as per-minute rates).")
    psi: float | None = Field(description="Population stability index; null: too few values.")
    n_ref: int
    n_cur: int
    level: str = Field(description="stable (< 0.1), moderate (< 0.25), major, insufficient_data.")


class FeatureDriftRow(BaseModel):
    """The PSI of one feature column the champion scores on."""

    feature: str = Field(examples=["cpu_pct__mean_1h"])
    metric: str | None = Field(
        default=None, description="The metric (or ratio) the feature is built from."
    )
    psi: float | None = Field(description="Population stability index; null: too few values.")
    n_ref: int = Field(description="Finite values of the feature in the reference sample.")
    n_cur: int = Field(description="Finite values of the feature in the current sample.")
    level: str = Field(description="stable (< 0.1), moderate (< 0.25), major, insufficient_data.")


class FeatureDriftWindow(BaseModel):
    """Which rows the per-feature PSI compares, or why there is no table."""

    version: int | None = None
    skipped: str | None = Field(default=None, description="Why there is no feature table.")
    hours: int = Field(description="Length of the current window (the `hours` parameter).")
    reference: str | None = Field(
        default=None,
        description="training_window, or before_current (the 7 days before the current window) "
        "when the champion's run does not record its training window.",
    )
    reference_from: datetime | None = None
    reference_to: datetime | None = None
    current_from: datetime | None = None
    current_to: datetime | None = None
    accounts_sampled: int | None = Field(
        default=None, description="Accounts whose features were rebuilt (a deterministic sample)."
    )
    accounts_total: int | None = Field(default=None, description="Accounts registered.")
    n_ref_rows: int | None = Field(default=None, description="Feature rows in the reference.")
    n_cur_rows: int | None = Field(default=None, description="Feature rows in the current window.")


class ModelDriftOut(BaseModel):
    """How far the champion's inputs moved from its training window: per feature column it
    scores on (``features``, over the last ``hours``), and per raw metric (``metrics``, the
    hourly recommendation job's check over the last 24 h)."""

    family: Literal["anomaly", "risk"]
    version: int | None = None
    skipped: str | None = Field(default=None, description="Why there is no table.")
    reference: str | None = Field(
        default=None, description="training_window, or oldest_7_days when the run does not say."
    )
    reference_from: datetime | None = None
    reference_to: datetime | None = None
    current_from: datetime | None = None
    current_to: datetime | None = None
    metrics: list[DriftRow]
    features: list[FeatureDriftRow] = Field(
        default_factory=list, description="PSI per feature column, the most drifted first."
    )
    feature_window: FeatureDriftWindow | None = None
