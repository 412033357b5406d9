"""bench/balancer.py: a short run of Linkerd's slow-instance test has the reported shape and
ranks round robin below peak EWMA."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "balancer.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_balancer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_short_run_reports_every_arm_and_round_robin_loses_to_peak_ewma(capsys):
    # 4 s at 1000 req/s; the slowdown runs from 1 s to 3 s, inside the run.
    result = _bench().main(["--seed", "1", "--seconds", "4"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == result

    assert result["seed"] == 1
    assert result["goal_p2c_ml_success"] == 0.999
    assert isinstance(result["met"], bool)
    assert set(result["arms"]) == {
        "round_robin",
        "weighted_round_robin",
        "least_load",
        "p2c_ewma",
        "p2c_ewma_ml",
    }
    for arm in result["arms"].values():
        assert 0.0 <= arm["success_rate"] <= 1.0
        assert 0.0 < arm["p50_ms"] <= arm["p99_ms"] <= 1000.0
        assert arm["requests"] > 3000
    arms = result["arms"]
    assert result["met"] == (arms["p2c_ewma_ml"]["success_rate"] >= 0.999)
    # about 1/11 of the requests in the 2 s window time out under round robin
    assert arms["round_robin"]["success_rate"] < 0.98
    assert arms["round_robin"]["success_rate"] < arms["p2c_ewma"]["success_rate"]
    assert arms["round_robin"]["p99_ms"] == 1000.0 > arms["p2c_ewma"]["p99_ms"]


def test_ml_arm_weights_follow_latency_through_the_product_weight_function():
    bench = _bench()
    fleet = bench.bench_fleet(["a", "b", "c", "d", "e"])
    window = {"a": [0.1] * 20, "b": [0.1] * 20, "c": [0.1] * 20, "d": [1.0] * 20, "e": [0.2]}
    weights, ratio = bench.ml_weights(fleet, window, None)
    assert weights["a"] == weights["b"] == weights["c"] == 1.0
    assert weights["e"] == pytest.approx(0.5)  # p95 twice the group median: half the weight
    assert weights["d"] == pytest.approx(0.1)
    # no response in the next tick: the last ratio stands
    window = {"a": [0.1], "b": [0.1], "c": [0.1], "d": [], "e": [0.1]}
    weights, _ = bench.ml_weights(fleet, window, ratio)
    assert weights["d"] == pytest.approx(0.1) and weights["e"] == 1.0
