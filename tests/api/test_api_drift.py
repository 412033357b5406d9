"""GET /v1/models/{family}/drift: the PSI of every feature the champion scores on, rebuilt with
its own feature configuration, between its training window and the last ``hours``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fleetml.api.routers.models import forget_registry_view
from fleetml.features import FeatureConfig, planned_columns
from fleetml.services import clock, recommend
from fleetml.services import drift as drift_service

NOW = pd.Timestamp("2026-06-01T00:00:00Z")
NOW_MS = int(NOW.value // 1_000_000)
HOUR_MS = 3_600_000
ACCOUNTS = [f"acc-{i:02d}" for i in range(12)]
TRAIN = {"version": 4, "start_ms": NOW_MS - 4 * 24 * HOUR_MS, "end_ms": NOW_MS - 2 * 24 * HOUR_MS}


def store_fleet(api, *, cpu_shift: float) -> None:
    """Four days of twelve accounts every 5 minutes: cpu, memory and a message counter, each
    account at its own level and spread; the last day's cpu is ``cpu_shift`` higher."""
    from fleetml.ingest.files import import_metrics_frame
    from fleetml.store.engine import get_engine

    ts = pd.date_range(NOW - pd.Timedelta("4D"), NOW, freq="5min", inclusive="right")
    rng = np.random.default_rng(7)
    parts = []
    for i, account in enumerate(ACCOUNTS):
        n = len(ts)
        parts.append(
            pd.DataFrame(
                {
                    "ts": ts,
                    "account_id": account,
                    "cpu_pct": 10 + 5 * i + rng.normal(0, 0.5 + 0.3 * i, n),
                    "mem_mb": 200 + 40 * i + rng.normal(0, 2 + 1.5 * i, n),
                    "msgs_sent": np.cumsum(rng.poisson(20 + 5 * i, n)).astype(float),
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    recent = frame["ts"] > NOW - pd.Timedelta("1D")
    frame.loc[recent, "cpu_pct"] = frame.loc[recent, "cpu_pct"] + cpu_shift
    with get_engine(api.settings).begin() as conn:
        report = import_metrics_frame(
            conn, frame, counters=["msgs_sent"], register=True, actor="pytest"
        )
    assert not report.errors, report.errors[:3]


@pytest.fixture
def drift_api(sqlite_api, monkeypatch):
    """The API whose risk champion (v4) was trained on days 4 to 2 before NOW, with the default
    feature configuration; no anomaly champion. The clock reads NOW."""
    config = FeatureConfig()
    columns = planned_columns(["cpu_pct", "mem_mb", "msgs_sent"], config, peers=False)
    champion = drift_service.Champion(
        family="risk",
        version=TRAIN["version"],
        feature_columns=columns,
        feature_config=config,
        metric_kinds={"msgs_sent": "counter"},
        start_ms=TRAIN["start_ms"],
        end_ms=TRAIN["end_ms"],
    )
    monkeypatch.setattr(
        drift_service, "load_champion", lambda s, family: champion if family == "risk" else None
    )
    monkeypatch.setattr(
        recommend, "champion_window", lambda s, family: TRAIN if family == "risk" else None
    )
    monkeypatch.setattr(clock, "fleet_now", lambda engine, settings, wall_ms=None: NOW_MS)
    drift_service.forget_cache()
    forget_registry_view()
    yield sqlite_api
    drift_service.forget_cache()
    forget_registry_view()


def _features(api, **params) -> tuple[dict[str, dict], dict]:
    resp = api.get("/v1/models/risk/drift", params=params, as_="ops")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return {r["feature"]: r for r in body["features"]}, body


def test_same_distribution_gives_a_psi_near_zero_for_every_level(drift_api):
    store_fleet(drift_api, cpu_shift=0.0)
    rows, body = _features(drift_api)
    window = body["feature_window"]
    assert window["skipped"] is None and window["reference"] == "training_window"
    assert window["version"] == 4 and window["hours"] == 24
    assert window["accounts_sampled"] == window["accounts_total"] == len(ACCOUNTS)
    # the training window less the store's first day, whose 24 h features lack their history
    assert window["reference_from"].startswith("2026-05-29T00:05")
    assert window["reference_to"].startswith("2026-05-30T00:00")
    assert window["current_from"].startswith("2026-05-31")
    for name in ("cpu_pct__value", "mem_mb__value", "msgs_sent__value", "cpu_pct__mean_1h"):
        assert rows[name]["psi"] < 0.1 and rows[name]["level"] == "stable", rows[name]
        assert rows[name]["n_ref"] >= 500 and rows[name]["n_cur"] >= 500
    assert rows["cpu_pct__mean_1h"]["metric"] == "cpu_pct"
    psis = [r["psi"] for r in body["features"] if r["psi"] is not None]
    assert psis == sorted(psis, reverse=True)  # the most drifted first
    assert np.median(psis) < 0.1


def test_a_shifted_metric_drifts_in_its_features_only(drift_api):
    store_fleet(drift_api, cpu_shift=30.0)
    rows, body = _features(drift_api)
    assert rows["cpu_pct__value"]["psi"] > 0.25 and rows["cpu_pct__value"]["level"] == "major"
    assert rows["cpu_pct__mean_1h"]["level"] == "major"
    assert rows["mem_mb__value"]["level"] == "stable"
    assert body["features"][0]["metric"] == "cpu_pct"
    # the hourly per-metric check is still there
    assert body["metrics"][0]["column"] == "cpu_pct" and body["metrics"][0]["level"] == "major"


def test_hours_sets_the_current_window(drift_api):
    store_fleet(drift_api, cpu_shift=30.0)
    _, body = _features(drift_api, hours=6)
    window = body["feature_window"]
    assert window["hours"] == 6
    assert window["current_from"].startswith("2026-05-31T18:00")
    assert body["features"][0]["level"] == "major"


@pytest.mark.parametrize("hours", ["0", "169", "-3", "1.5", "nan", "x", "1e9"])
def test_bad_hours_are_refused(drift_api, hours):
    resp = drift_api.get(f"/v1/models/risk/drift?hours={hours}", as_="ops")
    assert resp.status_code == 422, resp.text


@pytest.mark.parametrize("family", ["forecast", "nope"])
def test_a_family_without_drift_is_refused(drift_api, family):
    assert drift_api.get(f"/v1/models/{family}/drift", as_="ops").status_code == 422


def test_no_champion_gives_an_empty_table_with_the_reason(drift_api):
    store_fleet(drift_api, cpu_shift=0.0)
    resp = drift_api.get("/v1/models/anomaly/drift", as_="runtime")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["features"] == [] and body["feature_window"]["skipped"] == "no champion"
    assert body["skipped"] == "no champion"


def test_an_unreadable_champion_is_a_reason_not_a_500(drift_api, monkeypatch):
    def broken(settings, family):
        raise OSError("artifact store unreachable")

    monkeypatch.setattr(drift_service, "load_champion", broken)
    resp = drift_api.get("/v1/models/risk/drift", as_="ops")
    assert resp.status_code == 200, resp.text
    assert "artifact store unreachable" in resp.json()["feature_window"]["skipped"]


def test_an_empty_store_says_there_is_no_history(drift_api):
    resp = drift_api.get("/v1/models/risk/drift", as_="ops")
    assert resp.status_code == 200, resp.text
    window = resp.json()["feature_window"]
    assert resp.json()["features"] == [] or window["skipped"]


def test_answers_are_reused_for_a_minute(drift_api, monkeypatch):
    store_fleet(drift_api, cpu_shift=0.0)
    calls = []
    real = drift_service.feature_samples
    monkeypatch.setattr(
        drift_service, "feature_samples", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    first = _features(drift_api)[1]
    again = _features(drift_api)[1]
    assert len(calls) == 1 and first == again
    drift_service.forget_cache()
    forget_registry_view()
    _features(drift_api)
    assert len(calls) == 2
    _features(drift_api, hours=12)
    assert len(calls) == 3  # another window is another answer


def test_the_account_sample_is_deterministic_and_capped():
    ids = [f"a{i}" for i in range(500)]
    picked = drift_service.sample_accounts(ids, 20)
    assert len(picked) == 20 and picked == drift_service.sample_accounts(list(reversed(ids)), 20)
    assert drift_service.sample_accounts(ids[:5], 20) == sorted(ids[:5])


def test_only_the_slices_and_what_their_features_reach_are_read():
    day = 24 * HOUR_MS
    window = drift_service.slices(NOW_MS - day, NOW_MS)
    assert len(window) == drift_service.SLICES and window[-1][1] == NOW_MS
    assert all(hi - lo == drift_service.SLICE_MS - 1 for lo, hi in window)
    assert drift_service.slices(NOW_MS - 2 * HOUR_MS, NOW_MS) == [(NOW_MS - 2 * HOUR_MS, NOW_MS)]
    config = FeatureConfig()
    ranges = drift_service.read_ranges(window, config)
    assert ranges == sorted(ranges)
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # merged
    # the tails of slices spread over a day overlap into one read of two days
    assert ranges[-1][1] == NOW_MS and ranges[-1][0] <= NOW_MS - 2 * day + HOUR_MS
    oldest = NOW_MS - 21 * day - HOUR_MS  # the third weekly lag of the first slice
    assert ranges[0][0] <= oldest and ranges[0][1] < NOW_MS - 20 * day
    read = sum(hi - lo for lo, hi in ranges)
    assert read < 6 * day  # not the 23 days a full look-back of every slice would read
    ((lo, hi),) = drift_service.read_ranges(window, FeatureConfig(seasonal=False))
    assert hi == NOW_MS and NOW_MS - 2 * day - HOUR_MS <= lo <= NOW_MS - 2 * day + HOUR_MS
