"""The fleet simulator: a generative model of a WhatsApp bot fleet with ground truth.

Offline: :func:`simulate_fleet` returns the import-format frames and the ground truth;
:func:`write_run` writes them. Closed loop: :class:`FleetSimulator` (``reset``/``step``) or
:func:`run_closed_loop` with a :class:`Policy` such as :class:`ReactiveBaselinePolicy`.
See docs/simulator.md for the mechanisms and their parameters.
"""

from fleetml.simulate.config import COUNTERS, GAUGES, METRICS, SimConfig, parse_step
from fleetml.simulate.engine import FleetSimulator, StepResult
from fleetml.simulate.loop import LoopReport, drive, loop_report, run_closed_loop
from fleetml.simulate.output import SimulationRun, simulate_fleet, write_run
from fleetml.simulate.policy import (
    Actions,
    Observation,
    Policy,
    ReactiveBaselinePolicy,
    StaticPolicy,
)

__all__ = [
    "COUNTERS",
    "GAUGES",
    "METRICS",
    "Actions",
    "FleetSimulator",
    "LoopReport",
    "Observation",
    "Policy",
    "ReactiveBaselinePolicy",
    "SimConfig",
    "SimulationRun",
    "StaticPolicy",
    "StepResult",
    "drive",
    "loop_report",
    "parse_step",
    "run_closed_loop",
    "simulate_fleet",
    "write_run",
]
