"""Settings: one object, read through :func:`get_settings`, never built at import.

Every piece of local state lives under one home folder (``FLEETML_HOME``, default ``./.fleetml``):
the SQLite database, the MLflow store and caches. ``FLEETML_DATABASE_URL`` points the store at
PostgreSQL instead, and ``MLFLOW_TRACKING_URI`` (when set) points MLflow at a remote server.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """All of fleetml's configuration. Environment variables use the ``FLEETML_`` prefix."""

    model_config = SettingsConfigDict(env_prefix="FLEETML_", extra="ignore")

    home: Path = Field(default=Path(".fleetml"), description="Folder holding all local state.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store; default is SQLite at <home>/fleetml.db.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI; default MLFLOW_TRACKING_URI, else SQLite under home.",
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="SQLite synchronous pragma. FULL makes every acknowledged write survive "
        "power loss; NORMAL (WAL) survives a process crash only.",
    )
    max_batch_samples: int = Field(default=100_000, ge=10_000)
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=64 * 1024,
        description="Largest request body accepted (413 past it, checked before parsing). A "
        "full batch of 100,000 samples of eight metrics is about 15 MB.",
    )
    max_inflight_body_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=64 * 1024,
        description="Request bodies held at once by one API process; past it requests get 503 "
        "with Retry-After instead of growing memory without bound.",
    )
    max_future_skew_s: float = Field(
        default=300.0, description="Samples stamped further ahead of the server clock are rejected."
    )
    api_key_cache_s: float = Field(
        default=10.0, description="How long a verified API key is trusted without a database read."
    )
    dask_scheduler: str | None = Field(
        default=None, description="Address of a Dask scheduler; None runs jobs in local processes."
    )
    n_jobs: int = Field(default=2, description="Local worker processes for per-series jobs.")

    # ---- the live loop: scheduler, serving, alerts
    score_every_s: float = Field(
        default=60.0,
        gt=0,
        validation_alias=AliasChoices(
            "score_every_s", "FLEETML_SCORE_EVERY", "FLEETML_SCORE_EVERY_S"
        ),
        description="Seconds between scoring ticks of the scheduler (FLEETML_SCORE_EVERY).",
    )
    forecast_every_s: float = Field(
        default=3600.0, gt=0, description="Seconds between forecast refreshes."
    )
    retrain_cron: str = Field(
        default="30 3 * * *",
        description="Crontab (minute hour day month weekday, UTC) of the nightly retrain.",
    )
    retention_every_s: float = Field(
        default=3600.0, gt=0, description="Seconds between retention sweeps."
    )
    prediction_retention_s: float = Field(
        default=7 * 86400.0, gt=0, description="How long prediction history and job runs are kept."
    )
    history_retention_s: float = Field(
        default=90 * 86400.0,
        gt=0,
        description="How long metric samples and events are kept (against the fleet's clock). "
        "Enforcement events (restricted, banned, quality_drop, restriction_lifted) are kept "
        "for good: a ban stays known however old it is. At least retrain_history_s.",
    )
    retrain_history_s: float = Field(
        default=30 * 86400.0,
        gt=0,
        description="The nightly retrain trains on this much recent history (its --from), so "
        "its time and memory stay bounded as the store grows.",
    )
    decision_retention_s: float = Field(
        default=180 * 86400.0,
        gt=0,
        description="How long decisions that published no action (weight changes, shadow "
        "decisions) and settled recommendations are kept. Decisions behind an action are "
        "kept with the action.",
    )
    stale_after_s: float = Field(
        default=600.0,
        gt=0,
        description="An account whose newest sample is older than this (against the tick's "
        "clock) is stale: its predictions are kept but flagged and no alert opens from them.",
    )
    tick_clock: Literal["wall", "data"] = Field(
        default="wall",
        description="What 'now' is for a scheduled tick: the wall clock, or the newest stored "
        "sample (simulations and replays whose clock is not the wall clock; the demo uses it).",
    )
    score_max_rows: int = Field(
        default=60,
        ge=1,
        description="Most new samples of one account the anomaly model scores in one tick (a "
        "longer backlog serves as feature history only).",
    )
    score_threads: int = Field(
        default=2,
        ge=1,
        description="Threads a tick computes features with on large fleets (numpy releases "
        "the GIL; 1 leaves the other core to an API in the same process).",
    )
    model_check_s: float = Field(
        default=30.0,
        ge=0,
        description="How often serving asks the registry whether @champion moved (0: every tick).",
    )
    forecast_metric: str = Field(
        default="msgs_sent", description="Metric the hourly job forecasts per group."
    )
    forecast_horizon: int = Field(default=24, ge=1, description="Steps the hourly job forecasts.")
    alert_webhooks: list[str] = Field(
        default_factory=list,
        description="URLs that receive alert notifications as generic JSON (JSON list in env).",
    )
    alertmanager_url: str | None = Field(
        default=None,
        description="Alertmanager base URL; alerts are POSTed to <url>/api/v2/alerts.",
    )
    alertmanager_resend_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between re-posts of every open, unsilenced alert to Alertmanager, "
        "which resolves an alert nobody re-posts within its resolve_timeout (default 5 min).",
    )
    alert_min_duration: int = Field(
        default=2, ge=1, description="Consecutive ticks a risk must stay over its threshold."
    )
    alert_suppression_s: float = Field(
        default=6 * 3600.0,
        ge=0,
        description="After an alert of a kind resolves, no new one of that kind for the same "
        "account opens for this long.",
    )
    notify_retries: int = Field(default=5, ge=0, description="Webhook delivery retries.")
    decision_mode: Literal["off", "shadow", "approve", "auto"] = Field(
        default="shadow",
        description="Automation mode of a group with no mode of its own: off, shadow (decide "
        "and record only), approve (actions wait for an operator) or auto.",
    )
    action_ttl_s: float = Field(
        default=900.0, gt=0, description="An action nobody acknowledged expires after this long."
    )
    envelope_max_failover_share: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="At most this share of the masters may be failed over pre-emptively "
        "within envelope_window_s; past it, failovers become recommendations.",
    )
    envelope_window_s: float = Field(default=3600.0, gt=0)
    decision_fail_after_ticks: int = Field(
        default=2,
        ge=1,
        le=100,
        description="A technical fault takes an account out of rotation once its health probe "
        "has failed this many ticks in a row (its weight is 0 from the first failing tick). "
        "1 fails over at once; 2 (the default) lets a one-tick blip pass without a failover.",
    )
    quality_hold_s: float = Field(
        default=6 * 3600.0,
        ge=0,
        description="How long a quality drop or a user-block surge holds an account unless "
        "ops resume it earlier.",
    )
    recommend_every_s: float = Field(
        default=3600.0, gt=0, description="Seconds between refreshes of the recommendations."
    )
    recommend_lookback_s: float = Field(
        default=14 * 86400.0,
        gt=0,
        description="How far back the recommendations read judged failover decisions and "
        "faults (threshold tuning, the autonomy ladder).",
    )
    route_refresh_s: float = Field(
        default=2.0,
        gt=0,
        description="Seconds between checks of POST /v1/route for new weights, group policies "
        "or registry changes (in the background; a route never waits for the database).",
    )
    action_webhooks: list[str] = Field(
        default_factory=list,
        description="URLs that receive every new pending action as JSON, once per URL "
        "(JSON list in env).",
    )

    @model_validator(mode="after")
    def _retrain_within_history(self) -> Settings:
        if self.retrain_history_s > self.history_retention_s:
            raise ValueError(
                f"retrain_history_s ({self.retrain_history_s:g} s) is longer than "
                f"history_retention_s ({self.history_retention_s:g} s): the nightly retrain "
                "would ask for history that retention deletes; raise "
                "FLEETML_HISTORY_RETENTION_S or lower FLEETML_RETRAIN_HISTORY_S"
            )
        return self

    @property
    def home_path(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home_path / 'fleetml.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env:
            return env
        return f"sqlite:///{self.home_path / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str:
        return (self.home_path / "mlartifacts").as_uri()

    @property
    def cache_dir(self) -> Path:
        return self.home_path / "cache"

    def ensure_home(self) -> Path:
        """Create the home folder (and its cache) if missing; return its path."""
        path = self.home_path
        path.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(exist_ok=True)
        return path


@lru_cache(maxsize=8)
def _cached(home: str | None) -> Settings:
    if home is None:
        return Settings()
    return Settings(home=Path(home))


def get_settings(home: str | Path | None = None) -> Settings:
    """Return the settings, reading the environment once per distinct ``home``.

    ``home`` overrides ``FLEETML_HOME`` (the CLI's ``--home``). Call
    :func:`reset_settings` after changing the environment (tests do).
    """
    return _cached(str(home) if home is not None else None)


def reset_settings() -> None:
    """Forget cached settings so the next :func:`get_settings` reads the environment again."""
    _cached.cache_clear()
