"""bench/route.py: a short in-process run reports every figure and routes for real."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "route.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_route", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_short_run_reports_the_route_table_and_server_times(capsys):
    result = _bench().main(["--groups", "3", "--accounts", "4", "--calls", "400", "--skip-http"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(json.dumps(result, default=str))
    assert result["route_table"]["n"] == 400 and result["route_table"]["median_us"] > 0
    process = result["asgi_in_process"]
    assert process["fleetml"]["n"] == process["bare"]["n"] == 400
    assert process["ratio_p50"] > 0 and isinstance(result["met"], bool)
    assert "http" not in result
