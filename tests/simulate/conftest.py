"""Small seeded fleets shared by the simulator tests."""

from __future__ import annotations

import pytest

from fleetml.simulate import SimConfig, simulate_fleet

#: A tiny fleet with plenty happening: frequent faults, enforcement and look-alikes.
BUSY = SimConfig(
    masters=3,
    servants=2,
    days=1.0,
    fault_rate_per_day=1.5,
    enforcement_rate_per_day=0.6,
    lookalike_rate_per_day=1.0,
    maintenance_every_days=1.0,
)


@pytest.fixture(scope="session")
def busy_run():
    return simulate_fleet(BUSY, seed=11)
