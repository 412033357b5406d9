"""What a policy sees and what it decides, keyed by the fleet's ids.

The same contracts serve the service (the tick builds an :class:`Observation` from the store and
the latest predictions) and the simulator's closed loop (the simulator builds one from its own
state), so the closed loop exercises the policies the service runs.

Everything here is pure data: no database, HTTP or simulator imports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd


class Mode(StrEnum):
    """How far a group's automation may go."""

    OFF = "off"  # decide nothing
    SHADOW = "shadow"  # decide and record, do nothing
    APPROVE = "approve"  # actions wait in a queue for an operator
    AUTO = "auto"  # actions are published to the runtime at once


class Algorithm(StrEnum):
    """The balancing algorithm a group's runtime (or ``POST /v1/route``) uses."""

    ROUND_ROBIN = "round_robin"
    WEIGHTED_ROUND_ROBIN = "weighted_round_robin"
    LEAST_LOAD = "least_load"
    P2C_EWMA = "p2c_ewma"  # power of two choices on EWMA latency x outstanding work


class ActionKind(StrEnum):
    """Self-healing actions published to the runtime."""

    RESTART_SESSION = "restart_session"
    THROTTLE = "throttle"  # params.rate_per_min
    DRAIN = "drain"
    PAUSE = "pause"
    RESUME = "resume"
    FAILOVER = "failover"  # params.to: the servant taking the traffic
    FAILBACK = "failback"
    HOLD = "hold"  # platform enforcement: drain and pause, the account keeps its traffic share


class RecommendationKind(StrEnum):
    ADD_SERVANTS = "add_servants"  # before a forecast peak the group cannot absorb
    LOWER_SEND_RATE = "lower_send_rate"  # the account sends past its error knee
    ADJUST_FAILOVER_THRESHOLD = "adjust_failover_threshold"  # from the precision-recall curve
    CHANGE_ALGORITHM = "change_algorithm"  # another balancing algorithm fits the group better
    RETRAIN_DRIFT = "retrain_drift"  # input drift (PSI) since the model was trained
    INVESTIGATE_ANOMALY = "investigate_anomaly"
    PROMOTE_MODE = "promote_mode"  # the autonomy ladder: shadow -> approve -> auto
    REVIEW_ENFORCEMENT = "review_enforcement"  # a platform-enforcement signal: a person decides


@dataclass(frozen=True)
class GroupPolicy:
    """A group's decision settings. ``fleetml.decisions`` reads them; ops change them through
    the API or by accepting a recommendation (each field is a setting a recommendation may set).
    """

    mode: Mode = Mode.SHADOW
    algorithm: Algorithm = Algorithm.P2C_EWMA
    #: pre-emptive failover: risk at or above ``risk_on`` for ``trigger_ticks`` consecutive ticks
    risk_on: float = 0.6
    #: failback once risk stays below ``risk_off`` (hysteresis) for ``clear_ticks`` ticks
    risk_off: float = 0.3
    trigger_ticks: int = 2
    clear_ticks: int = 5
    #: the risk horizon failover watches (a horizon the risk model serves, e.g. "1h")
    risk_horizon: str = "1h"
    #: after a failback, the next failover of the same master waits this long, doubled each time
    cooldown_s: int = 1800
    #: weights: floor and cap as shares of capacity, smoothing factor between ticks (0..1)
    weight_floor: float = 0.05
    weight_cap: float = 1.0
    smoothing: float = 0.2
    #: a recovered account ramps from the floor to its full weight over this long
    probation_s: int = 1800

    def replace(self, **changes: Any) -> GroupPolicy:
        from dataclasses import replace

        return replace(self, **changes)


#: Fields of :class:`GroupPolicy` a setting may change, with their types.
POLICY_FIELDS: dict[str, type] = {
    "mode": Mode,
    "algorithm": Algorithm,
    "risk_on": float,
    "risk_off": float,
    "trigger_ticks": int,
    "clear_ticks": int,
    "risk_horizon": str,
    "cooldown_s": int,
    "weight_floor": float,
    "weight_cap": float,
    "smoothing": float,
    "probation_s": int,
}


@dataclass(frozen=True)
class Envelope:
    """The fleet-wide safety envelope of automated failover.

    At most ``max_failover_share`` of all masters may be failed over by fleetml within
    ``window_s``; a failover that would pass it, or that the group's servants cannot absorb
    (forecast load of the master above the servants' spare capacity), becomes a recommendation.
    """

    max_failover_share: float = 0.2
    window_s: int = 3600
    min_failovers: int = 1  # a small fleet may still fail over this many masters per window


@dataclass(frozen=True)
class Fleet:
    """The registry as decisions see it: one row per account, in a fixed order.

    ``accounts`` is indexed by ``account_id`` with columns ``group``, ``role`` ("master" or
    "servant"), ``master_id`` (a master names itself) and ``capacity`` (messages per minute).
    Every per-account frame of an :class:`Observation` has the same index in the same order.
    """

    accounts: pd.DataFrame

    @classmethod
    def from_records(cls, frame: pd.DataFrame) -> Fleet:
        """From registry rows: ``account_id``, ``role``, ``master_id``, ``group``, ``capacity``."""
        f = frame.copy()
        f["account_id"] = f["account_id"].astype(str)
        f = f.set_index("account_id")
        is_master = f["role"].astype(str).to_numpy() == "master"
        master = f["master_id"].astype(object).to_numpy()
        f["master_id"] = np.where(is_master | pd.isna(master), f.index.to_numpy(), master)
        group = f["group"].astype(object).to_numpy() if "group" in f else f["master_id"]
        f["group"] = np.where(pd.isna(group), f["master_id"].to_numpy(), group).astype(str)
        cap = pd.to_numeric(f.get("capacity"), errors="coerce")
        f["capacity"] = cap.fillna(1.0).to_numpy(dtype=float) if cap is not None else 1.0
        return cls(accounts=f[["group", "role", "master_id", "capacity"]])

    @property
    def account_ids(self) -> pd.Index:
        return self.accounts.index

    @property
    def ids(self) -> np.ndarray:
        """The account ids as a NumPy object array (fast boolean selection), fleet order."""
        cached = self.__dict__.get("_ids")
        if cached is None:
            cached = np.asarray(self.accounts.index.tolist(), dtype=object)
            object.__setattr__(self, "_ids", cached)
        return cached

    def position(self, account_id: str) -> int:
        """The account's row in every per-account frame and array."""
        cached = self.__dict__.get("_pos")
        if cached is None:
            cached = {a: i for i, a in enumerate(self.ids.tolist())}
            object.__setattr__(self, "_pos", cached)
        return cached[account_id]

    @property
    def is_master(self) -> np.ndarray:
        return self.accounts["role"].to_numpy() == "master"

    def group_of(self, account_id: str) -> str:
        return str(self.accounts.at[account_id, "group"])

    def members(self, group: str) -> pd.Index:
        return self.accounts.index[self.accounts["group"].to_numpy() == group]

    def servants_of(self, master_id: str) -> pd.Index:
        a = self.accounts
        return a.index[(a["master_id"].to_numpy() == master_id) & (a["role"] != "master")]


#: Columns of :attr:`Observation.state`.
STATE_COLUMNS = ("in_rotation", "paused", "draining", "enforced", "health_ok", "weight")


@dataclass
class Observation:
    """The fleet as the runtime and the models see it at ``ts_ms``.

    Frames are indexed by ``account_id`` in :attr:`Fleet.accounts` order.

    * ``metrics``: the newest exported value of each metric (NaN: no fresh sample);
    * ``rates``: per-minute increase of each counter (reset-aware; NaN if unknown);
    * ``state``: :data:`STATE_COLUMNS`; the routing and controller state in effect;
    * ``events``: events reported since the previous observation (``ts_ms``, ``account_id``,
      ``kind``, ``detail``);
    * ``demand``: messages per minute that arrived per group (indexed by group);
    * ``predictions``: the live loop's latest predictions (``account_id``, ``family``,
      ``horizon``, ``score``, ``flag``, ``model_version``, and for risk models with a
      platform-enforcement part ``enforcement_risk`` and ``enforcement_flag``; empty when no
      model serves);
    * ``forecasts``: per group, the forecast peak of demand (msgs/min) over the coming hours and
      when it comes: columns ``group``, ``peak``, ``peak_ts_ms`` (empty when none);
    * ``models``: the model versions in effect per family (for the decision record).
    """

    ts_ms: int
    fleet: Fleet
    metrics: pd.DataFrame
    rates: pd.DataFrame
    state: pd.DataFrame
    events: pd.DataFrame
    demand: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)
    forecasts: pd.DataFrame = field(default_factory=pd.DataFrame)
    models: dict[str, Any] = field(default_factory=dict)
    step_s: int = 60

    @property
    def ts(self) -> pd.Timestamp:
        return pd.Timestamp(self.ts_ms, unit="ms", tz="UTC")

    def column(self, frame: str, name: str) -> np.ndarray:
        """One column of ``metrics``, ``rates`` or ``state`` as an array in fleet order (NaN or
        absent: a metric nobody exported). Implementations may answer without building the
        frame; policies on a hot path use this."""
        data = getattr(self, frame)
        if name not in data:
            return np.full(len(self.fleet.account_ids), np.nan)
        return data[name].to_numpy()

    def risk(self, horizon: str) -> pd.Series:
        """Calibrated failure risk per account for ``horizon`` (NaN where not scored)."""
        p = self.predictions
        if p is None or p.empty:
            return pd.Series(np.nan, index=self.fleet.account_ids)
        rows = p[(p["family"] == "risk") & (p["horizon"].astype(str) == horizon)]
        return rows.groupby("account_id")["score"].last().reindex(self.fleet.account_ids)

    def enforcement_suspected(self) -> np.ndarray:
        """Per account (fleet order), whether the risk model's platform-enforcement part flags
        it at any horizon (``enforcement_flag``: its enforcement risk at or above the threshold
        stored with the model). Absent (no enforcement part, no prediction): False."""
        p = self.predictions
        n = len(self.fleet.account_ids)
        if p is None or p.empty or "enforcement_flag" not in p:
            return np.zeros(n, dtype=bool)
        rows = p[(p["family"] == "risk") & p["enforcement_flag"].fillna(False).astype(bool)]
        return self.fleet.account_ids.isin(rows["account_id"].astype(str).unique())


EVENT_COLUMNS = ("ts_ms", "account_id", "kind", "detail")


def empty_events() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in EVENT_COLUMNS})


@dataclass
class Decision:
    """One thing a policy decided, with why: what the decision record stores.

    ``kind``: ``weight``, an :class:`ActionKind` value, or ``recommendation``. ``rule`` names
    the rule that fired (``risk_sustained``, ``fault_reported``, ``enforcement``, ...),
    ``inputs`` the values that mattered, ``models`` the model versions behind them.
    ``status`` is what became of it in the group's mode: ``executed`` (auto), ``shadow``,
    ``awaiting_approval``, ``recommended`` (outside the envelope), ``recorded``.
    """

    kind: str
    rule: str
    account_id: str | None = None
    group: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    mode: str = Mode.AUTO.value
    status: str = "executed"


@dataclass(frozen=True)
class Recommendation:
    """A suggestion for a person, with its evidence.

    ``setting`` (or None): what accepting it applies, ``{"group": g, "field": f, "value": v}``
    with ``f`` in :data:`POLICY_FIELDS`. ``dedup_key`` identifies "the same suggestion": while one
    with that key is open, raising it again updates it instead of adding another.
    """

    kind: RecommendationKind
    title: str
    dedup_key: str
    group: str | None = None
    account_id: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    expected_impact: dict[str, Any] = field(default_factory=dict)
    confidence: float = 0.5
    setting: dict[str, Any] | None = None
    expires_after_s: int = 86_400


@dataclass
class Actions:
    """What a policy asks the runtime (or the simulator) to do, by account id.

    ``weights``: routing weight per account (missing accounts keep theirs); a group's demand is
    split among its routable accounts in proportion. ``failover`` takes an account out of
    rotation (its queue goes to the group's routable peers; ``targets`` names the servant that
    takes it, when one was chosen); ``failback`` returns it. ``pause`` stops sending (queue
    held), ``drain`` stops new traffic but lets the queue empty, ``resume`` clears both.
    ``hold`` is what platform enforcement gets: drained and paused *with its share of the
    group's traffic kept on it* (waiting, never moved to other numbers); ``resume`` ends it.
    ``throttle`` caps an account's send rate (msgs/min); ``restart`` restarts its session.
    ``decisions`` and ``recommendations`` are the record of why.
    """

    weights: Mapping[str, float] | None = None
    failover: Sequence[str] = ()
    failback: Sequence[str] = ()
    pause: Sequence[str] = ()
    drain: Sequence[str] = ()
    resume: Sequence[str] = ()
    hold: Sequence[str] = ()
    throttle: Mapping[str, float] = field(default_factory=dict)
    restart: Sequence[str] = ()
    targets: Mapping[str, str] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)


@runtime_checkable
class Policy(Protocol):
    def decide(self, observation: Observation) -> Actions: ...


def json_safe(value: Any) -> Any:
    """A copy PostgreSQL's JSONB accepts: numpy scalars and arrays to Python, NaN and infinity
    to None, enum members to their values, timestamps to ISO strings, other objects to text."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset | np.ndarray | pd.Index | pd.Series):
        return [json_safe(v) for v in list(value)]
    if value is None or isinstance(value, bool | np.bool_):
        return None if value is None else bool(value)
    if isinstance(value, Enum):
        return json_safe(value.value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, str):
        return str(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return None
    return str(value)
