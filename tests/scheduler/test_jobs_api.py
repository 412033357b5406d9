"""GET /v1/jobs: ops and admin read job runs, newest first, filtered and paged."""

from __future__ import annotations

import pytest

from fleetml.store.jobs import finish_run, start_run


@pytest.fixture
def runs(engine):
    """Seven runs: score ok x3, score error, forecast ok, retrain running, retention skipped."""
    t0 = 1_800_000_000_000
    plan = [
        ("score", "ok"),
        ("score", "error"),
        ("forecast", "ok"),
        ("score", "ok"),
        ("retrain", None),
        ("retention", "skipped"),
        ("score", "ok"),
    ]
    ids = []
    for i, (job, outcome) in enumerate(plan):
        run_id = start_run(engine, job=job, started_at=t0 + i * 1000)
        if outcome is not None:
            error = "boom" if outcome == "error" else None
            finish_run(
                engine,
                run_id=run_id,
                outcome=outcome,
                error=error,
                counts={"i": i},
                ended_at=t0 + i * 1000 + 250,
            )
        ids.append(run_id)
    return ids


def _get(client, keys, role, **params):
    headers = {"Authorization": f"Bearer {keys[role]}"} if role else {}
    return client.get("/v1/jobs", params=params, headers=headers)


@pytest.mark.parametrize(("role", "status"), [("ops", 200), ("admin", 200), ("runtime", 403)])
def test_roles(jobs_api, runs, role, status):
    client, keys = jobs_api
    assert _get(client, keys, role).status_code == status


def test_without_a_key_is_401(jobs_api):
    client, keys = jobs_api
    assert _get(client, keys, None).status_code == 401


def test_newest_first_with_times_duration_and_counts(jobs_api, runs):
    client, keys = jobs_api
    body = _get(client, keys, "ops").json()

    assert body["count"] == 7 and body["next_cursor"] is None
    assert [r["id"] for r in body["runs"]] == runs[::-1]
    newest = body["runs"][0]
    assert newest["job"] == "score" and newest["outcome"] == "ok"
    assert newest["started_at"] == "2027-01-15T08:00:06.000Z"
    assert newest["ended_at"] == "2027-01-15T08:00:06.250Z"
    assert newest["duration_s"] == 0.25
    assert newest["counts"] == {"i": 6}
    running = next(r for r in body["runs"] if r["job"] == "retrain")
    assert running["outcome"] == "running" and running["ended_at"] is None


def test_filters_by_job_and_outcome(jobs_api, runs):
    client, keys = jobs_api
    score = _get(client, keys, "ops", job="score").json()["runs"]
    assert [r["id"] for r in score] == [runs[6], runs[3], runs[1], runs[0]]

    errors = _get(client, keys, "ops", job="score", outcome="error").json()["runs"]
    assert [(r["id"], r["error"]) for r in errors] == [(runs[1], "boom")]

    assert _get(client, keys, "ops", outcome="running").json()["count"] == 1
    assert _get(client, keys, "ops", outcome="finished").status_code == 422


def test_pages_with_the_cursor(jobs_api, runs):
    client, keys = jobs_api
    seen, cursor = [], None
    for _ in range(10):
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = _get(client, keys, "ops", **params).json()
        seen += [r["id"] for r in body["runs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == runs[::-1]

    bad = _get(client, keys, "ops", cursor="abc")
    assert bad.status_code == 422 and "cursor" in bad.json()["detail"]
