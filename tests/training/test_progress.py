"""Progress bars of `fleetml forecast`: on stderr when asked, never mixed into stdout's JSON."""

from __future__ import annotations

import json

from click.testing import CliRunner

from fleetml.cli import cli


def test_forecast_progress_flag_shows_a_bar_and_keeps_json_last(stored_fleet, tmp_path):
    args = ["forecast", "--metric", "reply_latency_ms", "--horizon", "6", "--no-champion"]
    args += ["--n-jobs", "1", "--out", str(tmp_path / "f.csv")]
    runner = CliRunner()  # stderr is not a terminal: only --progress shows the bar
    shown = runner.invoke(cli, [*args, "--progress"], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert "forecast" in shown.stderr and "100%|" in shown.stderr and "3/3" in shown.stderr
    out = json.loads(shown.stdout.strip().splitlines()[-1])
    assert out["series"] == 3 and out["failed"] == 0
    for flags in ([], ["--no-progress"]):
        quiet = runner.invoke(cli, [*args, *flags], catch_exceptions=False)
        assert quiet.exit_code == 0 and "%|" not in quiet.stderr
