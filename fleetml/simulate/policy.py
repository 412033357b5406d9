"""The simulator's side of the decision contract.

The contract itself (:class:`Observation`, :class:`Actions`, :class:`Policy`) and the reference
policies live in :mod:`fleetml.decisions`, keyed by account id; the simulator adapts to them.
:class:`SimObservation` is an :class:`Observation` whose frames are built from the simulator's
arrays only when a policy reads them (a step costs microseconds, a frame a tenth of a
millisecond). A policy only sees what a runtime could see: exported metrics (with gaps), the
events the runtime reports, its own health probe and the controller state it set itself. It
never sees the ground truth (precursors, scheduled faults, enforcement waves).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fleetml.decisions.baseline import ReactiveBaselinePolicy, StaticPolicy
from fleetml.decisions.contracts import (
    EVENT_COLUMNS,
    STATE_COLUMNS,
    Actions,
    Fleet,
    Observation,
    Policy,
    empty_events,
)
from fleetml.simulate.fleet import FleetLayout

__all__ = [
    "Actions",
    "Observation",
    "Policy",
    "ReactiveBaselinePolicy",
    "SimObservation",
    "StaticPolicy",
    "fleet_of",
]

_EMPTY_EVENTS = empty_events()
_EMPTY = pd.DataFrame()


def fleet_of(layout: FleetLayout) -> Fleet:
    """The decision contract's view of a simulated fleet's registry (cached on the layout)."""
    cached = layout.__dict__.get("_fleet_cache")
    if cached is None:
        cached = Fleet.from_records(layout.accounts_frame())
        object.__setattr__(layout, "_fleet_cache", cached)
    return cached


class SimObservation(Observation):
    """An :class:`Observation` of the simulated fleet after one step.

    Besides the contract's frames it keeps the raw arrays (indexed by account position, the
    fleet's order) as ``raw_metrics``, ``raw_deltas`` and ``raw_state`` for the simulator's own
    tools (the live streamer, tests); policies use the frames.
    """

    def __init__(
        self,
        *,
        step: int,
        ts_ms: int,
        layout: FleetLayout,
        metrics: dict[str, np.ndarray],
        deltas: dict[str, np.ndarray],
        state: dict[str, np.ndarray],
        events: list[dict],
        group_demand: np.ndarray,
        step_s: int,
    ):
        self.step = step
        self.ts_ms = ts_ms
        self.layout = layout
        self.fleet = fleet_of(layout)
        self.raw_metrics = metrics
        self.raw_deltas = deltas
        self.raw_state = state
        self.raw_events = events
        self.group_demand = group_demand
        self.step_s = step_s
        self.predictions = _EMPTY
        self.forecasts = _EMPTY
        self.models = {}
        self._frames: dict[str, pd.DataFrame | pd.Series] = {}

    def _frame(self, name: str, values: dict[str, np.ndarray], scale: float = 1.0):
        frame = self._frames.get(name)
        if frame is None:
            cols = list(values)
            block = np.column_stack([values[c] for c in cols]) if cols else None
            frame = pd.DataFrame(
                block * scale if block is not None else None,
                columns=cols,
                index=self.fleet.account_ids,
            )
            self._frames[name] = frame
        return frame

    @property
    def metrics(self) -> pd.DataFrame:  # type: ignore[override]
        return self._frame("metrics", self.raw_metrics)

    @property
    def rates(self) -> pd.DataFrame:  # type: ignore[override]
        return self._frame("rates", self.raw_deltas, 60.0 / self.step_s)

    @property
    def state(self) -> pd.DataFrame:  # type: ignore[override]
        frame = self._frames.get("state")
        if frame is None:
            frame = pd.DataFrame(
                {c: self.raw_state[c] for c in STATE_COLUMNS}, index=self.fleet.account_ids
            )
            self._frames["state"] = frame
        return frame

    @property
    def events(self) -> pd.DataFrame:  # type: ignore[override]
        if not self.raw_events:
            return _EMPTY_EVENTS
        frame = self._frames.get("events")
        if frame is None:
            frame = pd.DataFrame.from_records(self.raw_events, columns=list(EVENT_COLUMNS))
            self._frames["events"] = frame
        return frame

    @property
    def demand(self) -> pd.Series:  # type: ignore[override]
        return pd.Series(
            self.group_demand * (60.0 / self.step_s), index=self.layout.group_names.astype(str)
        )

    def column(self, frame: str, name: str) -> np.ndarray:
        raw = {"metrics": self.raw_metrics, "state": self.raw_state}.get(frame)
        if raw is None:
            return super().column(frame, name)
        got = raw.get(name)
        return got if got is not None else np.full(self.layout.n_accounts, np.nan)

    # array views the simulator's own tools and older tests read
    @property
    def in_rotation(self) -> np.ndarray:
        return self.raw_state["in_rotation"]

    @property
    def enforced(self) -> np.ndarray:
        return self.raw_state["enforced"]

    @property
    def paused(self) -> np.ndarray:
        return self.raw_state["paused"]

    @property
    def draining(self) -> np.ndarray:
        return self.raw_state["draining"]

    @property
    def health_ok(self) -> np.ndarray:
        return self.raw_state["health_ok"]
