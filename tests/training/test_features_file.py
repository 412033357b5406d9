"""``--features FILE`` on ``fleetml train risk`` / ``train anomaly``: the settings round-trip
through the MLflow registry, scoring rebuilds the same features, a bad file stops everything."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fleetml.cli import cli
from fleetml.features.files import dump_feature_config, load_feature_config

RISK_FEATURES = """\
# windows for a fleet sampled every 15 minutes; no seasonal or peer context
mean_windows: [30min, 2h]
std_windows: [2h]
slope_windows: [2h]
roc_windows: [30min]
ratios: []
ratio_windows: []
seasonal: false
peers: false
"""


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def ramp_fleet(n_accounts=3, days=4, step="15min", seed=0):
    """Memory ramps up for 3 h before each crash, about two crashes per account-day."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2026-02-02", periods=days * 96, freq=step, tz="UTC").as_unit("ms")
    frames, events = [], []
    for k in range(n_accounts):
        mem = 300 + rng.normal(0, 10, len(ts))
        for start in rng.choice(np.arange(20, len(ts) - 20), size=2 * days, replace=False):
            mem[start - 12 : start] += np.linspace(0, 400, 12)
            events.append({"ts": ts[start], "account_id": f"acc-{k}", "kind": "crash"})
        cpu = 30 + rng.normal(0, 3, len(ts))
        frames.append(pd.DataFrame({"ts": ts, "account_id": f"acc-{k}", "mem_mb": mem, "cpu": cpu}))
    return pd.concat(frames, ignore_index=True), pd.DataFrame(events)


@pytest.fixture
def risk_home(sqlite_settings, monkeypatch):
    from fleetml.cli_support import open_engine
    from fleetml.ingest.files import import_events_frame, import_metrics_frame
    from fleetml.store.engine import dispose_engines
    from fleetml.training import registry, risk_cli

    registry.clear_cache()
    frame, events = ramp_fleet()
    with open_engine(sqlite_settings).begin() as conn:
        import_metrics_frame(conn, frame, actor="test")
        import_events_frame(conn, events, actor="test")
    # small trees keep the CLI fast; the feature settings stay what the command line gave
    original = risk_cli._config
    monkeypatch.setattr(
        risk_cli,
        "_config",
        lambda *a: dataclasses.replace(original(*a), max_iter=20, importance_rows=200),
    )
    yield sqlite_settings, frame
    registry.clear_cache()
    dispose_engines()


@pytest.mark.slow
def test_train_risk_features_round_trip_through_the_registry_and_scoring(
    risk_home, tmp_path, monkeypatch
):
    from fleetml.serving.models import ServedRisk
    from fleetml.serving.registry import run_json, version_info
    from fleetml.training import registry

    settings, frame = risk_home
    path = tmp_path / "features.yaml"
    path.write_text(RISK_FEATURES)
    wanted = load_feature_config(path)
    args = ["train", "risk", "--horizon", "3h", "--features", str(path)]
    args += ["--alert-budget", "5", "--max-alerts-per-account-day", "10", "--promote"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert last_json(res.stdout)["champion"] == 1

    champion = registry.load_bundle("fleetml-risk", settings=settings)
    assert champion.feature_config == wanted
    # the metrics' windows are the file's: none of the defaults (1h, 6h, 24h, seasonal)
    assert "mem_mb__mean_2h" in champion.feature_columns
    of_metrics = [c for c in champion.feature_columns if c.startswith(("mem_mb__", "cpu__"))]
    assert not [c for c in of_metrics if c.endswith(("_1h", "_6h", "_24h", "seasonal_resid"))]
    # the serving layer (API, scheduler, live loop) rebuilds features with the stored settings
    served = ServedRisk(champion, 1)
    assert served.feature_config == wanted
    assert served.lookback_ms() == wanted.lookback_ms()

    # data scientists see the settings in MLflow: an artifact (itself a --features file) and
    # one parameter per field
    run_id = version_info("fleetml-risk", 1, settings=settings)["run_id"]
    logged = run_json(run_id, "feature_config.json", settings=settings)
    assert logged == dump_feature_config(wanted)
    again = tmp_path / "again.json"
    again.write_text(json.dumps(logged))
    assert load_feature_config(again) == wanted
    from mlflow import MlflowClient

    params = MlflowClient().get_run(run_id).data.params
    assert params["feature.mean_windows"] == "30min,2h" and params["feature.seasonal"] == "false"

    # scoring builds its features with the stored settings: watch what the builder is given
    import fleetml.features as features

    seen = []
    for name in ("build_features", "build_feature_matrix"):
        original = getattr(features, name)

        def spy(*args, _original=original, **kwargs):
            seen.append(kwargs.get("config"))
            return _original(*args, **kwargs)

        monkeypatch.setattr(features, name, spy)
    out = tmp_path / "risk.parquet"
    res = CliRunner().invoke(cli, ["score", "risk", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert seen and all(config == wanted for config in seen)
    scored = pd.read_parquet(out)
    assert len(scored) == len(frame) and scored["risk"].between(0, 1).all()


@pytest.mark.slow
def test_train_anomaly_features_round_trip(stored_fleet, tmp_path):
    from fleetml.serving.registry import run_json
    from fleetml.training import registry

    settings, engine, frame, events = stored_fleet
    path = tmp_path / "features.json"
    path.write_text(
        json.dumps(
            {
                "mean_windows": ["30min", "3h"],
                "std_windows": ["3h"],
                "slope_windows": ["1h"],
                "roc_windows": [],
                "ratio_windows": ["30min"],
                "seasonal": False,
                "peers": False,
            }
        )
    )
    wanted = load_feature_config(path)
    args = ["train", "anomaly", "--features", str(path), "--max-alerts-per-account-day", "10"]
    res = CliRunner().invoke(cli, [*args, "--promote"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    result = last_json(res.stdout)
    champion = registry.load_bundle("fleetml-anomaly", settings=settings)
    assert champion.feature_config == wanted
    assert run_json(result["run_id"], "feature_config.json", settings=settings) == (
        dump_feature_config(wanted)
    )
    assert any(c.endswith("__mean_3h") for c in champion.feature_columns)
    assert not [c for c in champion.feature_columns if c.endswith(("__mean_6h", "__mean_24h"))]
    out = tmp_path / "scores.csv"
    res = CliRunner().invoke(cli, ["score", "anomaly", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(out)) == len(frame)


BAD_FILES = [
    ('{"mean_window": ["1h"]}', ["unknown key 'mean_window'", "valid keys:"]),
    ('{"mean_windows": ["15 minuets"]}', ["'mean_windows'", "not a positive duration"]),
    ('{"seasonal_days": -1}', ["'seasonal_days'", "must not be negative"]),
    ('{"std_windows": "1h"}', ["'std_windows'", "should be a list"]),
]


@pytest.mark.parametrize("family", ["risk", "anomaly"])
def test_a_bad_file_is_a_usage_error_and_nothing_is_trained(sqlite_settings, tmp_path, family):
    from mlflow import MlflowClient

    from fleetml.training import registry

    for i, (content, expected) in enumerate(BAD_FILES):
        path = tmp_path / f"bad{i}.json"
        path.write_text(content)
        res = CliRunner().invoke(cli, ["train", family, "--features", str(path)])
        assert res.exit_code == 2, res.output
        assert "--features" in res.output and f"bad{i}.json" in res.output
        for part in expected:
            assert part in res.output
    registry.configure_mlflow(sqlite_settings)
    assert MlflowClient().search_registered_models() == []
    assert (
        MlflowClient().search_runs([e.experiment_id for e in MlflowClient().search_experiments()])
        == []
    )


def test_a_missing_file_is_a_usage_error(tmp_path):
    res = CliRunner().invoke(cli, ["train", "risk", "--features", str(tmp_path / "none.json")])
    assert res.exit_code == 2 and "does not exist" in res.output
