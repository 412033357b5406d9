"""The quickstart's main job prepares a usable store and keys (serving is covered by API tests)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from fleetml.cli import cli
from fleetml.store.engine import get_engine
from fleetml.store.keys import lookup_key
from fleetml.store.metrics import count_samples, metric_kinds


def test_demo_prepares_fleet_and_keys(sqlite_settings):
    runner = CliRunner()
    args = ["demo", "--no-serve", "--no-train", "--masters", "2", "--servants", "1"]
    args += ["--history-days", "0.25"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    engine = get_engine(sqlite_settings)
    stored = count_samples(engine)
    assert stored > 500
    assert metric_kinds(engine)["msgs_sent"] == "counter"
    keys = json.loads((sqlite_settings.home_path / "demo-keys.json").read_text())
    assert lookup_key(engine, keys["admin"])["role"] == "admin"
    assert lookup_key(engine, keys["runtime"])["role"] == "runtime"
    assert keys["admin"] in result.output
    # A second run reuses the store and the keys instead of duplicating them.
    again = runner.invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert count_samples(engine) == stored
    assert json.loads((sqlite_settings.home_path / "demo-keys.json").read_text()) == keys


def test_command_results_are_standard_json(capsys):
    """The last line of a command is standard JSON: a NaN measurement is null (JavaScript's
    JSON.parse and other strict readers refuse NaN)."""
    import json

    import pytest

    from fleetml.cli_support import print_result

    print_result({"f1": float("nan"), "curve": [0.5, float("inf")], "note": "NaN in text stays"})
    line = capsys.readouterr().out.strip().splitlines()[-1]
    parsed = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard {c}"))
    assert parsed == {"f1": None, "curve": [0.5, None], "note": "NaN in text stays"}
